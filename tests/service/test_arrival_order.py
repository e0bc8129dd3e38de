"""The final state never depends on arrival order (README, "Order-tolerant"; issue 16).

The issue-16 scenario (tests/support/scale_scenario.py: receipts, transfers, sales, returns,
resales, stolen reports single and over a range, recoveries, a recall with an amendment that
narrows it and remedies, policies, claims, return requests, duplicates, late events) is applied to
the four services' stores in process: once in publishing order, then in other orders, in batches of
random sizes, with every event a service publishes (anomalies, quarantines, owner notices, alerts)
handed on at a random later point, as outbox relays of several processes would. Every service's
final state, per unit, must be the same. Several processes per service only change the order
events are applied in, so this is what lets tests/integration/test_replicas.py pass; it runs in
seconds, and tells which service depends on order when it does not.
"""

from __future__ import annotations

import pytest

from tests.support.scale_scenario import apply_in_order


@pytest.fixture(scope="module")
def in_publishing_order(tmp_path_factory):
    return apply_in_order(tmp_path_factory.mktemp("publishing-order"), None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_service_ends_the_same_whatever_the_arrival_order(in_publishing_order, tmp_path, seed):
    reference = in_publishing_order
    assert reference["inventory open anomalies"] and reference["theft open alerts"]  # the scenario has conflicts
    assert reference["warranty recall notices"] and reference["recalls progress"]
    got = apply_in_order(tmp_path, seed)
    for part, expected in reference.items():
        differing = sorted(set(got[part]) ^ set(expected), key=repr)
        assert got[part] == expected, f"{part}: {len(differing)} rows differ in arrival order {seed}, e.g. {differing[:4]}"

"""Recalls' reconcile logic at the service layer: progress counts kept batch by batch equal a full
count whatever the arrival order; reports that arrive before their recall count when it does; an
amendment narrows or widens the scope, an older amendment arriving late does not win. Moved here
from tests/integration/test_recalls_flow.py, where each step waited on Redis delivery."""

from __future__ import annotations

import random

import pytest

from tests.integration.test_recalls_flow import (
    _scenario,
    amended,
    notified,
    owner_unknown,
    quarantined,
    remedied,
    span,
)
from tests.support import factories as f
from tests.support.recalls import counts_match_rows


@pytest.fixture
def recalls(make_store):
    return make_store("recalls")


def progress(store, rid):
    return store.get(f"/recalls/{rid}")["progress"]


def test_shuffled_and_repeated_delivery_equals_in_order(recalls):
    """Each recall gets the same facts: one in time order, one shuffled with every event delivered
    three times, in batches of 5. Same counts, same statuses per unit."""
    in_order, shuffled = (f.serial("O"), f"RC-{f.serial()}"), (f.serial("S"), f"RC-{f.serial()}")
    ordered_events, expected = _scenario(*in_order)
    shuffled_events, _ = _scenario(*shuffled)
    chaos = shuffled_events * 3
    random.Random(5).shuffle(chaos)
    recalls.apply_each(sorted(ordered_events, key=lambda e: e.time))
    for start in range(0, len(chaos), 5):
        recalls.apply(chaos[start:start + 5])
    first, second = progress(recalls, in_order[1]), progress(recalls, shuffled[1])
    assert first == second and {k: first[k] for k in expected} == expected
    statuses = []
    for prefix, rid in (in_order, shuffled):
        units = recalls.get(f"/recalls/{rid}/units")["items"]
        statuses.append([(u["serial"].removeprefix(prefix), u["status"], u["stock"], u["location"]) for u in units])
    assert statuses[0] == statuses[1]
    assert statuses[0][0] == ("001", "quarantined", "in_stock", "store-1")
    assert ("005", "in_stock_not_quarantined", "in_stock", "store-2") in statuses[0]
    counts = counts_match_rows(recalls.engine, in_order[1], shuffled[1])
    assert counts[in_order[1]] == counts[shuffled[1]]


def test_a_narrowing_amendment_takes_units_out_of_the_counts(recalls):
    prefix, rid = f.serial("N"), f"RC-{f.serial()}"
    recalls.apply(f.received("acme", selection={"serial_range": span(prefix, 1, 20)}, minutes=0),
                  f.recall_issued("acme", minutes=5, recall_id=rid, serial_ranges=[span(prefix, 1, 20)]))
    assert progress(recalls, rid)["affected"] == 20
    recalls.apply(amended(rid, minutes=10, serials=[f"{prefix}003", f"{prefix}017"]))
    assert progress(recalls, rid)["affected"] == 2
    gone = recalls.get(f"/units/acme/{prefix}004/recalls")
    assert gone["recalls"] == [] and gone["known"] is True
    # an older amendment arriving late does not replace the newer scope
    recalls.apply(amended(rid, minutes=7, serial_ranges=[span(prefix, 1, 20)]))
    detail = recalls.get(f"/recalls/{rid}")
    assert detail["amendments"] == 2 and detail["progress"]["affected"] == 2
    assert detail["scope"]["serials"] == [f"{prefix}003", f"{prefix}017"]
    # the manufacturer broadcasts the recall again (new envelope, later): its scope is the newest
    recalls.apply(f.recall_issued("acme", minutes=12, recall_id=rid, serial_ranges=[span(prefix, 1, 20)]))
    again = progress(recalls, rid)
    assert again["affected"] == 20 and again["in_stock_not_quarantined"] == 20
    assert counts_match_rows(recalls.engine, rid)[rid] == {"in_stock_not_quarantined": 20}
    assert recalls.get(f"/recalls/{rid}")["issued_at"].startswith(f.at(5).isoformat()[:16])


def test_reports_that_arrive_before_the_recall_are_counted_when_it_does(recalls):
    prefix, rid = f.serial("P"), f"RC-{f.serial()}"
    sn = [f"{prefix}{n:03d}" for n in range(5)]
    recalls.apply(
        f.received("acme", selection={"serial_range": span(prefix, 1, 4)}, minutes=0, sku="TV-55"),
        f.sold("acme", sn[3], minutes=1), f.sold("acme", sn[4], minutes=2),
        quarantined(rid, sn[1], minutes=6), quarantined(rid, sn[1], minutes=7),  # a repeat, later: no change
        notified(rid, sn[3], minutes=6), remedied(rid, sn[2], minutes=8),
        owner_unknown(rid, f"{prefix}777", minutes=6),  # the recall will not cover it
    )
    recalls.get(f"/recalls/{rid}", expect=404)
    recalls.apply(f.recall_issued("acme", minutes=5, recall_id=rid, skus=["TV-55"],
                                  serial_ranges=[span(prefix, 1, 4)]))
    final = progress(recalls, rid)
    assert final["affected"] == 4
    assert (final["quarantined"], final["remedied"], final["sold_owner_notified"], final["sold_awaiting_owner"],
            final["sold_owner_unknown"]) == (1, 1, 1, 1, 0)
    unit = recalls.get(f"/recalls/{rid}/units", status="quarantined")["items"][0]
    assert unit["serial"] == sn[1] and unit["quarantined_at"].startswith(f.at(6).isoformat()[:16])
    counts_match_rows(recalls.engine, rid)

"""Theft-watch rules without I/O: open and cleared reports, several agencies, retailer reports,
retroactive matches, order tolerance, ranges."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from services.theft.domain import (
    Alert,
    RegistryFact,
    Sighting,
    case_statuses,
    derive_alerts,
    is_stolen,
    range_candidates,
    reconcile,
    retailer_case_number,
    retroactive_alert_id,
    sighting_alert_id,
    split_range,
)
from shared.identity import SerialRange

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
UNIT = ("acme", "SN1")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def report(minutes, agency="metro-pd", case="C-1", *, event_id=None, origin="agency") -> RegistryFact:
    return RegistryFact("reported", origin, agency, case, at(minutes), "police", event_id or f"r-{agency}-{case}-{minutes}")


def recovery(minutes, agency="metro-pd", case="C-1") -> RegistryFact:
    return RegistryFact("recovered", "agency", agency, case, at(minutes), "police", f"v-{agency}-{case}-{minutes}")


def retailer(minutes, *, event_id=None) -> RegistryFact:
    event_id = event_id or f"adj-{minutes}"
    return RegistryFact("reported", "retailer", "retailer", retailer_case_number("wms", event_id), at(minutes), "wms",
                        event_id)


def found(minutes) -> RegistryFact:
    return RegistryFact("found", "retailer", "retailer", "*", at(minutes), "wms", f"found-{minutes}")


def seen(minutes, kind="unit.sold", *, event_id=None, location="store-1") -> Sighting:
    return Sighting(at(minutes), "pos", event_id or f"s-{minutes}", kind, location=location,
                    terminal_id=f"{location}/till-1")


def alerts(registry, sightings) -> dict[str, Alert]:
    return derive_alerts(*UNIT, registry, sightings)


def test_a_sighting_while_a_report_is_open_raises_one_alert_per_case():
    s = seen(10)
    found_alerts = alerts([report(0)], [s])
    assert list(found_alerts) == [sighting_alert_id(*UNIT, s, ("agency", "metro-pd", "C-1"))]
    alert = next(iter(found_alerts.values()))
    assert (alert.kind, alert.agency, alert.case_number, alert.seen_at, alert.sightings) == (
        "sighting", "metro-pd", "C-1", at(10), (s,))


def test_no_report_or_a_report_of_another_case_closed_gives_no_sighting_alert():
    assert alerts([], [seen(10)]) == {}
    assert alerts([report(0), recovery(5)], [seen(10)]) == {}
    # A recovery without its report opens nothing.
    assert alerts([recovery(0)], [seen(10)]) == {}


def test_only_sightings_between_report_and_recovery_are_hits():
    sightings = [seen(5), seen(20), seen(40)]
    result = alerts([report(10), recovery(30)], sightings)
    live = [a for a in result.values() if a.kind == "sighting"]
    assert [a.seen_at for a in live] == [at(20)]


def test_a_case_reported_again_after_recovery_is_open_again():
    result = alerts([report(0), recovery(10), report(20, event_id="again")], [seen(5), seen(15), seen(25)])
    assert sorted(a.seen_at for a in result.values() if a.kind == "sighting") == [at(5), at(25)]


def test_several_agencies_each_get_their_alert_for_the_same_sighting():
    s = seen(30)
    result = alerts([report(0, "metro-pd", "C-1"), report(10, "state-police", "SP-9"), recovery(20, "metro-pd")],
                    [s])
    assert {(a.agency, a.case_number) for a in result.values()} == {("state-police", "SP-9")}
    result = alerts([report(0, "metro-pd", "C-1"), report(10, "state-police", "SP-9")], [s])
    assert {(a.agency, a.case_number) for a in result.values()} == {("metro-pd", "C-1"), ("state-police", "SP-9")}
    assert len(set(result)) == 2


def test_unit_is_stolen_while_any_report_is_open():
    assert not is_stolen([])
    assert is_stolen([report(0)])
    assert not is_stolen([report(0), recovery(5)])
    assert is_stolen([report(0), recovery(5), report(1, "state-police", "SP-9")])
    statuses = {s.case: s for s in case_statuses([report(0), recovery(5), report(1, "state-police", "SP-9")])}
    assert statuses[("agency", "metro-pd", "C-1")].open is False
    assert statuses[("agency", "metro-pd", "C-1")].closed_at == at(5)
    assert statuses[("agency", "state-police", "SP-9")].open is True
    assert statuses[("agency", "state-police", "SP-9")].reported_at == at(1)


def test_recovery_timed_before_the_report_does_not_close_it():
    """Facts are compared by their time, not their arrival: an older recovery precedes the report."""
    assert is_stolen([recovery(0), report(5)])
    assert len(alerts([recovery(0), report(5)], [seen(10)])) == 1


def test_retroactive_alert_names_the_last_sightings_before_the_report_newest_first():
    sightings = [seen(m, event_id=f"s{m}") for m in range(0, 70, 10)]  # 0..60
    result = alerts([report(65)], sightings)
    assert len(result) == 1
    alert = result[retroactive_alert_id(*UNIT, ("agency", "metro-pd", "C-1"))]
    assert alert.kind == "retroactive"
    assert [s.time for s in alert.sightings] == [at(60), at(50), at(40), at(30), at(20)]
    assert alert.seen_at == at(60)


def test_a_report_between_sightings_gives_a_retroactive_alert_and_live_alerts():
    result = alerts([report(15)], [seen(10), seen(20)])
    assert sorted(a.kind for a in result.values()) == ["retroactive", "sighting"]


def test_retailer_report_alerts_on_later_sightings_until_found_but_never_retroactively():
    sightings = [seen(0, "unit.received"), seen(20), seen(40)]
    result = alerts([retailer(10), found(30)], sightings)
    assert [(a.kind, a.agency, a.seen_at) for a in result.values()] == [("sighting", "retailer", at(20))]
    assert is_stolen([retailer(10)]) and not is_stolen([retailer(10), found(30)])
    # A "found" before the report closes nothing; a new report after a "found" is open.
    assert is_stolen([found(5), retailer(10)])
    assert is_stolen([retailer(0, event_id="a"), found(5), retailer(10, event_id="b")])
    statuses = case_statuses([retailer(10), found(30)])
    assert statuses[0].closed_at == at(30)


def test_same_facts_in_any_order_derive_the_same_alerts():
    registry = [report(5), recovery(25), report(35, event_id="again"), report(12, "state-police", "SP-9"),
                retailer(50), found(60)]
    sightings = [seen(m, event_id=f"s{m}") for m in (0, 10, 20, 30, 40, 55, 70)]
    expected = alerts(registry, sightings)
    assert {a.kind for a in expected.values()} == {"sighting", "retroactive"}
    rng = random.Random(7)
    for _ in range(25):
        r, s = registry[:], sightings[:]
        rng.shuffle(r)
        rng.shuffle(s)
        assert alerts(r, s) == expected


def test_alert_ids_are_deterministic_and_distinct_per_unit_sighting_and_case():
    s = seen(10)
    case = ("agency", "metro-pd", "C-1")
    assert sighting_alert_id("acme", "SN1", s, case) == sighting_alert_id("acme", "SN1", s, case)
    ids = {sighting_alert_id(m, n, x, c) for m, n, x, c in itertools.product(
        ("acme", "bolt"), ("SN1", "SN2"), (s, seen(10, event_id="other")), (case, ("agency", "sp", "C-1")))}
    assert len(ids) == 16
    assert retroactive_alert_id("acme", "SN1", case) != retroactive_alert_id("acme", "SN2", case)


def test_reconcile_raises_new_withdraws_disproved_reopens_and_updates():
    a, b, c = (Alert(f"id-{n}", "sighting", "agency", "metro-pd", "C-1", at(n), (seen(n),)) for n in (1, 2, 3))
    c_more = Alert("id-3", "sighting", "agency", "metro-pd", "C-1", at(3), (seen(3), seen(1)))
    stored = {"id-2": ("open", b), "id-3": ("open", c), "id-4": ("withdrawn", a)}
    result = reconcile({"id-1": a, "id-3": c_more, "id-4": a}, stored)
    assert result.raised == [a]
    assert result.withdrawn == ["id-2"]
    assert result.reopened == [a]
    assert result.changed == [c_more]
    unchanged = reconcile({"id-2": b}, {"id-2": ("open", b)})
    assert (unchanged.raised, unchanged.withdrawn, unchanged.reopened, unchanged.changed) == ([], [], [], [])


def test_range_candidates_cover_every_padded_and_unpadded_reading():
    assert range_candidates("AB0012") == [("AB001", 2, 1), ("AB00", 12, 2), ("AB0", 12, 3), ("AB", 12, 4)]
    assert range_candidates("ABC") == []
    for rng, serial in [(SerialRange(prefix="SN", first=1, last=500, width=6), "SN000042"),
                        (SerialRange(prefix="SN", first=1, last=500), "SN42"),
                        (SerialRange(prefix="X-7", first=10, last=20), "X-715")]:
        assert serial in rng
        assert any(p == rng.prefix for p, _, _ in range_candidates(serial))


@pytest.mark.parametrize(("first", "last", "expected"), [
    ("SN000001", "SN000500", ("SN", 1, 500, 6)),
    ("SN1", "SN500", ("SN", 1, 500, None)),
    ("SN100", "SN500", ("SN", 100, 500, 3)),
    ("A1B-07", "A1B-12", ("A1B-", 7, 12, 2)),
])
def test_split_range(first, last, expected):
    assert split_range(first, last) == expected
    prefix, lo, hi, width = expected
    rng = SerialRange(prefix=prefix, first=lo, last=hi, width=width)
    assert first in rng and last in rng


@pytest.mark.parametrize(("first", "last", "message"), [
    ("SN1", "XY5", "prefix"),
    ("SN9", "SN1", "backwards"),
    ("SNA", "SN5", "digits"),
    ("SN01", "SN500", "prefix"),
])
def test_split_range_rejects_what_is_not_a_range(first, last, message):
    with pytest.raises(ValueError, match=message):
        split_range(first, last)

"""Theft watch's reconcile logic at the service layer: a unit's alerts are re-derived from the set of
facts whenever one arrives, so arrival order does not matter; a late recovery withdraws an alert, a
late report raises a retroactive one. Moved here from tests/integration/test_theft_flow.py, where each
event waited on Redis delivery."""

from __future__ import annotations

import pytest

from tests.integration.test_theft_flow import claim_submitted, return_requested
from tests.support import factories as f


@pytest.fixture
def theft(make_store):
    return make_store("theft")


def story(sn):
    return [f.theft_reported("acme", sn, minutes=5), f.sold("acme", sn, minutes=20),
            f.theft_recovered("acme", sn, minutes=30), return_requested(sn, minutes=40)]


def alert_set(store, sn):
    return {(a["kind"], a["status"], a["case_number"], a["event_type"], a["seen_at"])
            for a in store.get(f"/stolen/acme/{sn}")["alerts"]}


def test_sighting_and_report_in_either_order_end_with_the_same_alerts(theft):
    """Report (t=5), sale (t=20), recovery (t=30), return request (t=40): one live alert, for the sale.
    Applied in time order and in another order (each event its own batch), the open alerts are the
    same; in the other order the request's alert is first raised (the recovery was not known yet),
    then withdrawn, and the withdrawal is published."""
    first, second = f.serial(), f.serial()
    theft.apply_each(story(first))
    in_order = alert_set(theft, first)
    assert in_order == {("sighting", "open", "C-1", "unit.sold", "2026-11-01T09:20:00Z")}
    assert [e.type for e in theft.publish_outbox()] == ["theft.alert"]

    events = story(second)
    theft.apply_each([events[3], events[1], events[0]])  # request, sale, report: both sightings alert
    assert {a[1] for a in alert_set(theft, second)} == {"open"} and len(alert_set(theft, second)) == 2
    theft.apply(events[2])  # the recovery, at t=30: the request at t=40 saw a recovered unit
    reversed_set = alert_set(theft, second)
    assert {a for a in reversed_set if a[1] == "open"} == in_order
    assert {a for a in reversed_set if a[1] == "withdrawn"} == {
        ("sighting", "withdrawn", "C-1", "return.requested", "2026-11-01T09:40:00Z")}
    published = theft.publish_outbox()
    assert sorted(e.type for e in published) == ["theft.alert", "theft.alert", "theft.alert.withdrawn"]
    [withdrawal] = [e for e in published if e.type == "theft.alert.withdrawn"]
    assert withdrawal.data.serial == second


def test_retroactive_report_names_the_last_sightings(theft):
    sn = f.serial()
    theft.apply(
        f.received("acme", sn, minutes=0, location="warehouse"),
        f.transferred("acme", sn, minutes=10, from_location="warehouse", to_location="store-3"),
        f.sold("acme", sn, minutes=20, location="store-3"),
        claim_submitted(sn, minutes=60),
        f.returned("acme", sn, minutes=45, location="store-3"),
    )
    unit = theft.get(f"/stolen/acme/{sn}")
    assert len(unit["last_sightings"]) == 5 and unit["alerts"] == []

    theft.apply(f.theft_reported("acme", sn, minutes=90, agency="state-police", case_number="SP-4"))
    [alert] = theft.get(f"/stolen/acme/{sn}")["alerts"]
    assert alert["kind"] == "retroactive" and alert["agency"] == "state-police"
    assert [s["event_type"] for s in alert["sightings"]] == [
        "warranty.claim.submitted", "unit.returned", "unit.sold", "unit.transferred", "unit.received"]
    assert alert["location"] == "service-desk-2" and alert["seen_at"].startswith("2026-11-01T10:00:00")
    [event] = theft.outbox()
    assert event.type == "theft.alert" and event.data.kind == "retroactive" and len(event.data.sightings) == 5


def test_a_sale_delivered_twice_and_a_second_report_of_the_same_case_alert_once(theft):
    sn = f.serial()
    sale = f.sold("acme", sn, minutes=30, location="store-12")
    theft.apply(f.theft_reported("acme", sn, minutes=5, case_number="C-17"))
    theft.apply(sale, sale)
    theft.apply(sale)
    theft.apply(f.theft_reported("acme", sn, minutes=6, case_number="C-17"))  # the same case reported again
    [alert] = theft.get(f"/stolen/acme/{sn}")["alerts"]
    assert (alert["status"], alert["case_number"], alert["location"]) == ("open", "C-17", "store-12")
    assert [e.type for e in theft.outbox()] == ["theft.alert"]

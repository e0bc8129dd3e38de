"""Manifests and stock counts at the service layer (issue 14, parts 1 and 2): batches applied straight
to inventory's store, read through its API. Every rule is judged by event time, so each story is
also told in the other arrival orders and with duplicates; over Redis and PostgreSQL in
tests/integration/test_inventory_reconciliation.py."""

from __future__ import annotations

import random
import secrets
from datetime import date, timedelta

import pytest

from services.inventory import handlers
from shared.contracts import ShipmentDispatched, StockCounted
from shared.envelope import make_event
from shared.store import utcnow
from tests.support import factories as f


@pytest.fixture
def inventory(make_store):
    return make_store("inventory")


def shipment(shipment_id, *, minutes, to_location="store-1", arrival=date(2026, 11, 3), maker="acme", **selection):
    return make_event(ShipmentDispatched(shipment_id=shipment_id, manufacturer=maker, from_location="acme-plant",
                                         to_location=to_location, expected_arrival=arrival, **selection),
                      source="test/shipper", time=f.at(minutes))


def counted(count_id, units, *, minutes, location="store-1", part=1, final=True, maker="acme"):
    return make_event(StockCounted(count_id=count_id, location=location, counted_at=f.at(minutes), part=part,
                                   final=final, units=[{"manufacturer": maker, "serial": s} for s in units]),
                      source="test/store", time=f.at(minutes))


def tick(store) -> int:
    """What the service's writer does every SERIALTRACK_HOUSEKEEPING_S: deadlines, one per transaction."""
    checked = 0
    while store.processor.housekeeping is not None and store.processor.housekeep():
        checked += 1
    return checked


def anomalies(store, kind=None):
    found = store.get("/anomalies", **({"kind": kind} if kind else {}), limit=1000)["items"]
    return sorted((a["serial"], a["kind"], a["status"]) for a in found)


def test_a_receipt_against_its_manifest_finds_received_unexpected_and_diverted(inventory):
    p = f.serial("M")
    due = (utcnow() + timedelta(days=20)).date()  # not due yet when the receipt comes
    ship_a = shipment(f"S-{p}-A", minutes=0, arrival=due,
                      serial_ranges=[{"prefix": p, "first": 1, "last": 5, "width": 3}])
    ship_b = shipment(f"S-{p}-B", minutes=0, arrival=due, to_location="store-9", serials=[f"{p}900"])
    inventory.apply(ship_a, ship_b)
    # store-1 gets 001..004 (005 never comes), a unit on no manifest, and the unit shipped to store-9
    inventory.apply(f.received("acme", minutes=60, location="store-1",
                               selection={"serials": [f"{p}001", f"{p}002", f"{p}003", f"{p}004", f"{p}777",
                                                      f"{p}900"]}))
    view = inventory.get(f"/shipments/S-{p}-A")
    assert view["counts"] == {"expected": 5, "received": 4, "received_late": 0, "missing": 0, "unexpected": 1,
                              "diverted": 0, "outstanding": 1}
    with inventory.session() as session, session.begin():  # what the idle tick does, 25 days later
        outgoing: list = []
        assert handlers.check_deadlines(session, outgoing, utcnow() + timedelta(days=25), limit=10) == 2
    view = inventory.get(f"/shipments/S-{p}-A")
    assert view["counts"]["missing"] == 1 and view["counts"]["outstanding"] == 0
    assert [u["serial"] for u in view["missing"]] == [f"{p}005"]
    assert [u["serial"] for u in view["unexpected"]] == [f"{p}777"]
    other = inventory.get(f"/shipments/S-{p}-B")
    assert [(u["serial"], u["location"]) for u in other["diverted"]] == [(f"{p}900", "store-1")]
    assert other["counts"]["diverted"] == 1 and other["counts"]["missing"] == 0
    assert anomalies(inventory) == [(f"{p}005", "missing_in_transit", "open"), (f"{p}777", "unexpected", "open"),
                                    (f"{p}900", "diverted", "open")]
    kinds = sorted(e.data.kind for e in inventory.publish_outbox() if e.type == "inventory.anomaly.detected")
    assert kinds == ["diverted", "unexpected"]  # missing_in_transit went to ``outgoing`` above


def test_a_receipt_before_its_manifest_is_reconciled_when_the_manifest_comes(inventory):
    p = f.serial("M")
    inventory.apply(shipment(f"S-{p}-0", minutes=0, serials=[f"{p}X"]))  # store-1 takes manifests
    inventory.apply(f.received("acme", f"{p}1", minutes=60, location="store-1"))  # its manifest is late
    assert tick(inventory) == 1  # S-0's deadline is long past
    assert anomalies(inventory) == [(f"{p}1", "unexpected", "open"), (f"{p}X", "missing_in_transit", "open")]
    inventory.publish_outbox()
    inventory.apply(shipment(f"S-{p}-1", minutes=30, serials=[f"{p}1"]))  # dispatched before the receipt
    assert anomalies(inventory) == [(f"{p}1", "unexpected", "withdrawn"), (f"{p}X", "missing_in_transit", "open")]
    view = inventory.get(f"/shipments/S-{p}-1")
    assert view["counts"]["received"] == 1 and view["counts"]["unexpected"] == 0
    assert [e.type for e in inventory.publish_outbox()] == ["inventory.anomaly.withdrawn"]
    # redelivered, and the manifest re-sent under another event id: nothing changes, the first stands
    inventory.apply(shipment(f"S-{p}-1", minutes=30, serials=[f"{p}1"]))
    assert anomalies(inventory) == [(f"{p}1", "unexpected", "withdrawn"), (f"{p}X", "missing_in_transit", "open")]
    assert inventory.publish_outbox() == []


def test_a_late_receipt_withdraws_missing_in_transit_and_a_receipt_after_the_deadline_keeps_it(inventory):
    p = f.serial("M")
    inventory.apply(shipment(f"S-{p}", minutes=0, serials=[f"{p}1", f"{p}2"]))
    assert anomalies(inventory) == [] and tick(inventory) == 1
    assert anomalies(inventory) == [(f"{p}1", "missing_in_transit", "open"), (f"{p}2", "missing_in_transit", "open")]
    inventory.apply(f.received("acme", f"{p}1", minutes=24 * 60, location="store-1"))  # on time, arrived late
    late = f.at(0) + timedelta(days=10)  # after 3 Nov + 2 days
    inventory.apply(make_event(f.received("acme", f"{p}2", location="store-1").data, source="test/wms", time=late))
    assert anomalies(inventory) == [(f"{p}1", "missing_in_transit", "withdrawn"),
                                    (f"{p}2", "missing_in_transit", "open")]
    view = inventory.get(f"/shipments/S-{p}")
    assert view["counts"] == {"expected": 2, "received": 2, "received_late": 1, "missing": 0, "unexpected": 0,
                                   "diverted": 0, "outstanding": 0}


def test_the_deadline_is_checked_when_it_passes_not_before(inventory):
    p = f.serial("M")
    soon = (utcnow() + timedelta(days=20)).date()
    inventory.apply(shipment(f"S-{p}", minutes=0, arrival=soon, serials=[f"{p}1"]))
    view = inventory.get(f"/shipments/S-{p}")
    assert view["deadline_checked"] is False and view["counts"]["outstanding"] == 1 and anomalies(inventory) == []
    with inventory.session() as session, session.begin():
        outgoing: list = []
        assert handlers.check_deadlines(session, outgoing, utcnow()) == 0
        assert handlers.check_deadlines(session, outgoing, utcnow() + timedelta(days=25)) == 1
    assert anomalies(inventory) == [(f"{p}1", "missing_in_transit", "open")]


def test_counts_judge_by_event_time_in_any_order_of_parts_and_sales(inventory):
    p = f.serial("C")
    a, b, c, d, e, elsewhere = (f"{p}{n}" for n in "ABCDEF")
    inventory.apply(f.received("acme", minutes=0, location="store-1", selection={"serials": [a, b, c, d]}),
                    f.received("acme", elsewhere, minutes=0, location="store-2"))
    inventory.apply(f.sold("acme", d, minutes=5, location="store-1"))  # sold before the count: not expected
    inventory.apply(f.sold("acme", a, minutes=70, location="store-1"))  # sold during the count, applied first
    count_id = f"CNT-{p}"
    part2 = counted(count_id, [c, elsewhere, e], minutes=60, part=2, final=True)
    part1 = counted(count_id, [a], minutes=60, part=1, final=False)
    inventory.apply(part2)
    assert inventory.get(f"/counts/{count_id}")["status"] == "open"
    inventory.apply(part1, part1)  # the first part last, twice
    view = inventory.get(f"/counts/{count_id}")
    assert view["status"] == "complete" and view["totals"] == {"matched": 2, "missing": 1, "unexpected": 2}
    results = {u["serial"]: (u["result"], u["detail"]) for u in view["units"]["items"]}
    assert results == {a: ("matched", ""), c: ("matched", ""),
                       b: ("missing", "expected at store-1 (in_stock), not seen"),
                       elsewhere: ("unexpected", "recorded at store-2 (in_stock)"),
                       e: ("unexpected", "never received")}
    # nothing changed about the missing unit: the count is a report, unit.adjusted the decision
    assert inventory.get(f"/units/acme/{b}")["status"] == "in_stock"
    # a transfer before the count, applied after it, explains the unit seen "elsewhere"
    inventory.apply(f.transferred("acme", elsewhere, minutes=30, from_location="store-2", to_location="store-1"))
    view = inventory.get(f"/counts/{count_id}", result="unexpected")
    assert [u["serial"] for u in view["units"]["items"]] == [e]
    assert inventory.get(f"/counts/{count_id}")["totals"] == {"matched": 3, "missing": 1, "unexpected": 1}
    csv_text = inventory.api.get(f"/counts/{count_id}/report.csv").text.splitlines()
    assert csv_text[0].startswith("count_id,location,counted_at,manufacturer,serial,result")
    assert len(csv_text) == 1 + 5


def test_a_count_out_of_order_against_a_sale_during_it(inventory):
    """The count arrives before the sale made while counting: the unit was there at counted_at."""
    p = f.serial("C")
    inventory.apply(f.received("acme", f"{p}1", minutes=0, location="store-1"))
    inventory.apply(counted(f"CNT-{p}", [f"{p}1"], minutes=60))
    inventory.apply(f.sold("acme", f"{p}1", minutes=65, location="store-1"))
    assert inventory.get(f"/counts/CNT-{p}")["totals"] == {"matched": 1, "missing": 0, "unexpected": 0}


def test_a_part_that_contradicts_its_count_is_not_applied(inventory):
    count_id = f"CNT-{secrets.token_hex(3)}"
    inventory.apply(counted(count_id, [], minutes=60, part=1, final=False))
    inventory.apply(counted(count_id, ["X1"], minutes=60, part=2, final=True, location="store-2"))
    view = inventory.get(f"/counts/{count_id}")
    assert view["status"] == "open" and [p["part"] for p in view["parts"]] == [1]
    inventory.get("/counts/nope", expect=404)
    inventory.get("/shipments/nope", expect=404)


@pytest.mark.parametrize("seed", range(6))
def test_every_arrival_order_and_deadline_timing_ends_the_same(inventory, seed):
    """The manifests' story delivered one event per batch in a shuffled order, the deadline checked
    at random moments between batches: the same shipments and open anomalies every time."""
    rng = random.Random(seed)
    p = f.serial("O")
    u1, u2, u3, u4, u5 = (f"{p}{n}" for n in range(1, 6))
    events = [
        shipment(f"A-{p}", minutes=0, serials=[u1, u2, u3]),
        shipment(f"B-{p}", minutes=0, to_location="store-9", serials=[u4]),
        shipment(f"C-{p}", minutes=65, serials=[u5]),
        f.received("acme", minutes=60, location="store-1", selection={"serials": [u1, u2, u4]}),
        f.received("acme", u5, minutes=70, location="store-1"),
        f.sold("acme", u1, minutes=90, location="store-1"),
    ]
    rng.shuffle(events)
    for event in events:
        inventory.apply(event, event)  # and each one twice
        if rng.random() < 0.5:
            tick(inventory)
    tick(inventory)
    opened = [a for a in anomalies(inventory) if a[2] == "open"]
    assert opened == [(u3, "missing_in_transit", "open"), (u4, "diverted", "open")]
    counts = {s: inventory.get(f"/shipments/{s}-{p}")["counts"] for s in "ABC"}
    assert counts["A"] == {"expected": 3, "received": 2, "received_late": 0, "missing": 1, "unexpected": 0,
                                "diverted": 0, "outstanding": 0}
    assert (counts["B"]["diverted"], counts["B"]["missing"]) == (1, 0)
    assert (counts["C"]["received"], counts["C"]["unexpected"]) == (1, 0)
    assert inventory.get(f"/units/acme/{u1}")["status"] == "sold"  # the fold is untouched by all this


@pytest.mark.parametrize("seed", range(6))
def test_a_count_ends_the_same_in_every_arrival_order(inventory, seed):
    rng = random.Random(seed)
    p = f.serial("Q")
    a, b, c, d = (f"{p}{n}" for n in "ABCD")
    count_id = f"CNT-{p}"
    events = [
        f.received("acme", minutes=0, location="store-1", selection={"serials": [a, b]}),
        f.received("acme", c, minutes=0, location="store-2"),
        f.transferred("acme", c, minutes=30, from_location="store-2", to_location="store-1"),
        f.sold("acme", a, minutes=65, location="store-1"),  # during the count
        f.sold("acme", b, minutes=50, location="store-1"),  # before it: b is not expected
        f.received("acme", d, minutes=40, location="store-1"),
        counted(count_id, [a, b], minutes=60, part=1, final=False),
        counted(count_id, [c], minutes=60, part=2, final=True),
    ]
    rng.shuffle(events)
    for event in events:
        inventory.apply(event)
    view = inventory.get(f"/counts/{count_id}")
    assert view["status"] == "complete"
    assert {u["serial"]: u["result"] for u in view["units"]["items"]} == {
        a: "matched", b: "unexpected", c: "matched", d: "missing"}


def test_a_manifest_whose_ranges_overlap_its_list_judges_each_unit_once(inventory):
    p = f.serial("V")
    inventory.apply(shipment(f"S-{p}", minutes=0, serials=[f"{p}02"],
                             serial_ranges=[{"prefix": p, "first": 1, "last": 3, "width": 2},
                                            {"prefix": p, "first": 2, "last": 4, "width": 2}]))
    inventory.apply(f.received("acme", f"{p}02", minutes=60, location="store-1"))
    assert tick(inventory) == 1
    view = inventory.get(f"/shipments/S-{p}")
    assert (view["counts"]["received"], view["counts"]["missing"]) == (1, 3)
    assert sorted(a[0] for a in anomalies(inventory)) == [f"{p}01", f"{p}03", f"{p}04"]


def test_a_long_list_comes_in_parts_in_any_order(inventory):
    p = f.serial("P")
    first = shipment(f"S-{p}", minutes=0, serials=[f"{p}1", f"{p}2"])
    second = make_event(ShipmentDispatched(shipment_id=f"S-{p}", part=2, manufacturer="acme", from_location="acme-plant",
                                           to_location="store-1", expected_arrival=date(2026, 11, 3),
                                           serials=[f"{p}3"]), source="test/shipper", time=f.at(1))
    elsewhere = make_event(ShipmentDispatched(shipment_id=f"S-{p}", part=3, manufacturer="acme",
                                              from_location="acme-plant", to_location="store-7",
                                              expected_arrival=date(2026, 11, 3), serials=[f"{p}4"]),
                           source="test/shipper", time=f.at(1))
    inventory.apply(f.received("acme", minutes=60, location="store-1", selection={"serials": [f"{p}1", f"{p}3"]}))
    inventory.apply(second)
    inventory.apply(first, elsewhere)  # part 3 names another destination: not applied
    assert tick(inventory) == 2  # one deadline check per part
    view = inventory.get(f"/shipments/S-{p}")
    assert [part["part"] for part in view["parts"]] == [1, 2] and view["deadline_checked"]
    assert view["counts"] == {"expected": 3, "received": 2, "received_late": 0, "missing": 1, "unexpected": 0,
                              "diverted": 0, "outstanding": 0}
    assert [u["serial"] for u in view["missing"]] == [f"{p}2"]


def test_a_late_reroute_manifest_withdraws_a_diversion(inventory):
    """Shipped to store-9, received at store-1: diverted; then the manifest that re-routed it to
    store-1 (dispatched before the receipt) arrives late: the diversion is withdrawn, and the unit is
    what store-9's shipment misses."""
    p = f.serial("W")
    inventory.apply(shipment(f"B-{p}", minutes=0, to_location="store-9", serials=[f"{p}1"]))
    inventory.apply(f.received("acme", f"{p}1", minutes=60, location="store-1"))
    assert anomalies(inventory) == [(f"{p}1", "diverted", "open")]
    inventory.apply(shipment(f"R-{p}", minutes=30, serials=[f"{p}1"]))
    assert anomalies(inventory) == [(f"{p}1", "diverted", "withdrawn")]
    assert inventory.get(f"/shipments/R-{p}")["counts"]["received"] == 1
    assert inventory.get(f"/shipments/B-{p}")["counts"]["outstanding"] == 1
    tick(inventory)
    assert anomalies(inventory) == [(f"{p}1", "diverted", "withdrawn"), (f"{p}1", "missing_in_transit", "open")]

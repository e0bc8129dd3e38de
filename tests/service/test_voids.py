"""Voids (``event.voided``, shared/voids.py) at the service layer: each service's handler on its own
SQLite store, the outbox relayed by hand. The rules in milliseconds; delivery, trust and PostgreSQL
are in tests/integration/test_voids.py."""

from __future__ import annotations

import itertools
import random

from services.recalls import store as recalls_store
from shared.contracts import CustomerErasureRequested
from shared.envelope import make_event
from tests.support import factories as f
from tests.support.service_layer import Services

ALL = ("inventory", "warranty", "theft", "recalls")


def test_the_end_state_does_not_depend_on_the_order_a_void_and_its_sale_arrive_in(make_store):
    serial = f.serial("VO")
    receipt = f.received("acme", serial, minutes=0)
    report = f.theft_reported("acme", serial, minutes=1)
    mistaken = f.sold("acme", serial, minutes=2)
    void = f.voided(mistaken, minutes=3)
    real = f.sold("acme", serial, minutes=4, receipt_id="R-REAL", customer_id="C-1")
    events = [receipt, report, mistaken, void, real]
    orders = list(itertools.permutations(events))
    outcomes = set()
    for order in random.Random(14).sample(orders, 8):
        inventory, theft, warranty = make_store("inventory"), make_store("theft"), make_store("warranty")
        for event in order:
            for store in (inventory, theft, warranty):
                if event.type in store.definition.event_types:
                    store.apply(event)
        unit = inventory.get(f"/units/acme/{serial}")
        alerts = theft.get(f"/stolen/acme/{serial}")["alerts"]
        coverage = warranty.get(f"/warranties/acme/{serial}")
        outcomes.add((
            unit["status"],
            tuple(sorted((a["kind"], a["event_id"], a["status"]) for a in unit["anomalies"])),
            tuple(sorted((h["id"], bool(h["voided"])) for h in unit["history"])),
            tuple(sorted((a["kind"], a["sightings"][0]["event_id"], a["status"]) for a in alerts
                         if a["status"] == "open")),
            coverage["sale"]["receipt_id"], coverage["owner"]["customer_id"],
        ))
    [(status, anomalies, history, open_alerts, receipt_id, owner)] = outcomes  # every order: the same
    assert status == "sold" and receipt_id == "R-REAL" and owner == "C-1"
    assert {(kind, event_id) for kind, event_id, state in anomalies if state == "open"} == {
        ("sold_while_stolen", real.id)}
    assert dict(history)[mistaken.id] is True and dict(history)[real.id] is False
    assert {event_id for kind, event_id, _ in open_alerts if kind == "sighting"} == {real.id}


def test_a_void_naming_another_type_or_manufacturer_withdraws_nothing(make_store):
    services = Services([make_store(name) for name in ALL])
    serial = f.serial("VT")
    sale = f.sold("acme", serial, minutes=2)
    services.deliver(f.received("acme", serial, minutes=0), sale)
    wrong_type = f.voided(sale, minutes=3)
    wrong_type = type(wrong_type)(wrong_type.envelope, wrong_type.data.model_copy(update={"voided_type": "unit.returned"}))
    wrong_maker = f.voided(sale, minutes=4)
    wrong_maker = type(wrong_maker)(wrong_maker.envelope, wrong_maker.data.model_copy(update={"manufacturer": "globex"}))
    services.deliver(wrong_type, wrong_maker)
    unit = services["inventory"].get(f"/units/acme/{serial}")
    assert unit["status"] == "sold" and all(h["voided"] is None for h in unit["history"])
    assert services["warranty"].get(f"/warranties/acme/{serial}")["status"] == "covered"


def test_a_voided_listed_receipt_leaves_its_units_unknown_and_their_history_marked(make_store):
    services = Services([make_store(name) for name in ALL])
    serials = [f.serial("VL") for _ in range(3)]
    receipt = f.received("acme", minutes=0, selection={"serials": serials})
    services.deliver(receipt, f.sold("acme", serials[0], minutes=5))
    published = services.deliver(f.voided(receipt, minutes=6, reason="booked at the wrong store"))
    for serial in serials:
        unit = services["inventory"].get(f"/units/acme/{serial}")
        voided = [h["voided"]["reason"] for h in unit["history"] if h["voided"]]
        assert voided == ["booked at the wrong store"]
    assert services["inventory"].get(f"/units/acme/{serials[1]}")["status"] == "unknown"
    sold = services["inventory"].get(f"/units/acme/{serials[0]}")
    # Sold, and now never received: the anomaly the void brings is recorded and published.
    assert sold["status"] == "sold" and [a["kind"] for a in sold["anomalies"]] == ["sold_never_received"]
    assert [e.data.kind for e in published if e.type == "inventory.anomaly.detected"] == ["sold_never_received"]
    assert services["warranty"].get(f"/warranties/acme/{serials[1]}")["status"] == "not_sold_here"


def test_a_voided_retailer_report_is_no_case_and_its_alert_is_withdrawn(make_store):
    services = Services([make_store(name) for name in ALL])
    serial = f.serial("VA")
    missing = f.adjusted("acme", serial, "stolen", minutes=1)  # booked stolen: the wrong unit
    services.deliver(f.received("acme", serial, minutes=0), missing, f.sold("acme", serial, minutes=2))
    theft = services["theft"]
    assert [a["status"] for a in theft.get(f"/stolen/acme/{serial}")["alerts"]] == ["open"]
    published = services.deliver(f.voided(missing, minutes=3, reason="booked the wrong unit"))
    view = theft.get(f"/stolen/acme/{serial}")
    assert view["stolen"] is False and [a["status"] for a in view["alerts"]] == ["withdrawn"]
    [withdrawn] = [e for e in published if e.type == "theft.alert.withdrawn"]
    assert "voided" in withdrawn.data.reason
    checked = theft.api.post("/checks", json={"items": [{"manufacturer": "acme", "serial": serial}]}).json()
    assert checked["results"][0]["stolen"] is False
    unit = services["inventory"].get(f"/units/acme/{serial}")
    assert unit["status"] == "sold" and [a["status"] for a in unit["anomalies"]] == ["withdrawn"]


def test_recalls_folds_a_unit_again_from_its_other_facts_also_after_a_voided_large_range_receipt(make_store):
    recalls = make_store("recalls")
    first, second = "RB00000001", "RB00000002"
    receipt = f.received("acme", minutes=0, selection={  # above LARGE_RECEIPT: kept as one range row
        "serial_range": {"prefix": "RB", "first": 1, "last": 10_001, "width": 8}})
    sale = f.sold("acme", first, minutes=5)
    recall = f.recall_issued("acme", minutes=1, recall_id="RC-V", serials=[first, second])
    recalls.apply(receipt, recall)
    recalls.apply(sale)
    progress = recalls.get("/recalls/RC-V")["progress"]
    assert (progress["affected"], progress["sold_awaiting_owner"], progress["in_stock_not_quarantined"]) == (2, 1, 1)
    recalls.apply(f.voided(sale, minutes=6))
    progress = recalls.get("/recalls/RC-V")["progress"]
    assert (progress["affected"], progress["sold"], progress["in_stock_not_quarantined"]) == (2, 0, 2)
    recalls.apply(f.voided(receipt, minutes=7, reason="booked at the wrong store"))
    progress = recalls.get("/recalls/RC-V")["progress"]
    assert progress["affected"] == 0  # known from the voided receipt alone: out of the campaign
    with recalls.session() as session:
        assert recalls_store.load_units(session, [("acme", first), ("acme", "RB00010001")]) == {}


def test_a_corrected_event_naming_an_erased_customer_is_erased_on_arrival(make_store):
    inventory = make_store("inventory")
    wrong, right = f.serial("VE"), f.serial("VE")
    inventory.apply(make_event(CustomerErasureRequested(erasure_id="erasure-v", customer_id="C-GONE"),
                               source="test/operator", time=f.at(0)))
    mistaken = f.sold("acme", wrong, minutes=5)
    correction = f.sold("acme", right, minutes=5, customer_id="C-GONE")
    inventory.apply(mistaken)
    inventory.apply(f.voided(mistaken, minutes=6, corrected=correction))
    [sale] = inventory.get(f"/units/acme/{right}")["history"]
    assert sale["id"] == correction.id and sale["customer_id"].startswith("anon-")

"""Inventory's reconcile logic at the service layer: batches applied straight to its store, read
through its read API. Late events refold a unit; anomalies that only came from arrival order are
withdrawn (and announced); recalls reach units received before and after them."""

from __future__ import annotations

import random

import pytest

from services.inventory import handlers
from services.inventory.store import get_unit as get_unit_row
from services.inventory.store import unit_history
from shared.contracts import RecallAmended, RecallClosed, RecallRemedyCompleted
from shared.envelope import make_event
from tests.integration.test_delivery_guarantees import unit_story
from tests.support import factories as f
from tests.support.service_layer import Services


@pytest.fixture
def inventory(make_store):
    return make_store("inventory")


def unit(store, serial, maker="acme"):
    return store.get(f"/units/{maker}/{serial}")


def open_anomalies(view) -> list[str]:
    return [a["kind"] for a in view["anomalies"] if a["status"] == "open"]


def test_a_late_receipt_refolds_the_unit_and_withdraws_the_anomaly_arrival_order_made(inventory):
    sn = f.serial()
    inventory.apply(f.sold("acme", sn, minutes=10))  # the sale's stream was read first
    assert open_anomalies(unit(inventory, sn)) == ["sold_never_received"]
    [detected] = inventory.publish_outbox()
    assert detected.type == "inventory.anomaly.detected" and detected.data.kind == "sold_never_received"

    inventory.apply(f.received("acme", sn, minutes=0, location="warehouse"))  # earlier in time, later to arrive
    view = unit(inventory, sn)
    assert view["status"] == "sold" and [h["type"] for h in view["history"]] == ["unit.received", "unit.sold"]
    assert [(a["kind"], a["status"]) for a in view["anomalies"]] == [("sold_never_received", "withdrawn")]
    [withdrawn] = inventory.publish_outbox()
    assert withdrawn.type == "inventory.anomaly.withdrawn"
    assert (withdrawn.data.kind, withdrawn.data.event_id) == ("sold_never_received", detected.data.event_id)


def test_a_late_sale_between_two_known_facts_is_folded_in_time_order(inventory):
    sn = f.serial()
    inventory.apply(f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=20, location="store-2"))
    inventory.apply(f.sold("acme", sn, minutes=10))  # a second sale, earlier: the one at 20 is now "sold twice"
    view = unit(inventory, sn)
    assert [(h["type"], h["time"][11:16]) for h in view["history"]] == [
        ("unit.received", "09:00"), ("unit.sold", "09:10"), ("unit.sold", "09:20")]
    assert open_anomalies(view) == ["sold_twice"] and view["location"] == "store-2"
    inventory.apply(f.returned("acme", sn, minutes=15))  # the return between them explains the second sale
    view = unit(inventory, sn)
    assert open_anomalies(view) == [] and [a["status"] for a in view["anomalies"]] == ["withdrawn"]
    assert [e.type for e in inventory.publish_outbox()] == ["inventory.anomaly.detected",
                                                            "inventory.anomaly.withdrawn"]


def test_anomalies_are_recorded_and_queryable(inventory):
    """Moved from tests/integration/test_inventory_flow.py: no delivery in it, only the rules."""
    sold_twice, never_received, stolen = f.serial(), f.serial(), f.serial()
    inventory.apply(
        f.received("acme", sold_twice, minutes=0), f.received("acme", stolen, minutes=0),
        f.sold("acme", sold_twice, minutes=5), f.sold("acme", sold_twice, minutes=6),
        f.sold("acme", never_received, minutes=5),
        f.theft_reported("acme", stolen, minutes=3, case_number="C-99"),
        f.sold("acme", stolen, minutes=9),
    )
    page = inventory.get("/anomalies", status="open", manufacturer="acme")
    assert {(a["serial"], a["kind"]) for a in page["items"]} == {
        (sold_twice, "sold_twice"), (never_received, "sold_never_received"), (stolen, "sold_while_stolen")}
    view = unit(inventory, stolen)
    assert view["stolen"] is True and view["theft_cases"] == ["metro-pd:C-99"]
    assert view["status"] == "sold"  # the sale happened; it is flagged, not dropped


def test_shuffled_batches_end_in_the_in_order_state(make_store):
    """R11 without Redis: the same stories applied in time order, one event per batch, and shuffled
    in batches of 7, end in the same units and the same open anomalies."""
    rng = random.Random(11)
    events = [e for n in range(40) for e in unit_story(f.serial(f"U{n}"), rng)]
    events.append(f.recall_issued("acme", minutes=25, recall_id="RC-R11", skus=["TV-55"]))
    in_order, shuffled = make_store("inventory"), make_store("inventory")
    Services([in_order]).deliver(sorted(events, key=lambda e: (e.time, e.source, e.id)))
    mixed = events[:]
    rng.shuffle(mixed)
    for start in range(0, len(mixed), 7):
        Services([shuffled]).deliver(mixed[start:start + 7])

    def state(store):
        units = store.get("/units", limit=500)["items"]
        anomalies = store.get("/anomalies", status="open", limit=500)["items"]
        return ({(u["serial"], u["status"], u["location"], u["stolen"]) for u in units},
                {(a["serial"], a["kind"], a["event_id"]) for a in anomalies})

    assert state(in_order) == state(shuffled)
    assert state(in_order)[1], "the stories contain contradictions; both stores must show them"


def test_recall_quarantines_stock_and_later_arrivals(inventory):
    """Moved from tests/integration/test_inventory_flow.py."""
    prefix = f.serial("R")
    in_stock, sold_before, arrives_later, other_sku = (f"{prefix}{n:03d}" for n in (1, 2, 3, 4))
    services = Services([inventory])
    services.deliver(f.received("acme", in_stock, minutes=0), f.received("acme", sold_before, minutes=0),
                     f.received("acme", other_sku, minutes=0, sku="RADIO"), f.sold("acme", sold_before, minutes=10))
    services.deliver(f.recall_issued("acme", minutes=20, recall_id="RC-1", skus=["TV-55"],
                                     serial_ranges=[{"prefix": prefix, "first": 1, "last": 10, "width": 3}]))
    held = unit(inventory, in_stock)
    assert held["status"] == "quarantined" and held["recalls"] == ["RC-1"]
    services.deliver(f.received("acme", arrives_later, minutes=30))
    assert unit(inventory, arrives_later)["status"] == "quarantined"
    assert unit(inventory, sold_before)["status"] == "sold"
    assert unit(inventory, other_sku)["status"] == "in_stock"


def test_recall_amendment_remedy_and_closure(inventory):
    """Moved from tests/integration/test_inventory_flow.py."""
    prefix = f.serial("A")
    first, widened_in, remedied, after_close = (f"{prefix}{n:03d}" for n in (1, 20, 2, 3))
    services = Services([inventory])
    services.deliver([f.received("acme", s, minutes=0) for s in (first, widened_in, remedied)])
    services.deliver(f.recall_issued("acme", minutes=10, recall_id="RC-A", serial_ranges=[
        {"prefix": prefix, "first": 1, "last": 10, "width": 3}]))
    assert unit(inventory, first)["status"] == "quarantined"
    amended = make_event(RecallAmended(recall_id="RC-A", manufacturer="acme", serial_ranges=[
        {"prefix": prefix, "first": 2, "last": 30, "width": 3}]), source="test/maker", time=f.at(20))
    remedy = make_event(RecallRemedyCompleted(recall_id="RC-A", manufacturer="acme", serial=remedied,
                                              remedy="repair"), source="test/desk", time=f.at(30))
    closed = make_event(RecallClosed(recall_id="RC-A", manufacturer="acme", reason="all units fixed"),
                        source="test/maker", time=f.at(40))
    services.deliver(amended, remedy, closed, f.received("acme", after_close, minutes=50))
    assert unit(inventory, widened_in)["status"] == "quarantined"  # the widened scope holds it
    assert unit(inventory, first)["status"] == "in_stock"  # the narrowed scope releases it
    assert unit(inventory, remedied)["status"] == "in_stock"
    assert unit(inventory, after_close)["status"] == "in_stock"  # arrived after the closure
    # Closed: the recall no longer holds it (a return would not quarantine it), but it stays held.
    held = unit(inventory, widened_in)
    assert held["recalls"] == [] and held["status"] == "quarantined"


def test_a_remedy_applied_before_its_recall_and_receipt_still_ends_right(inventory):
    """Streams race: the recall is applied before the unit is known, then the receipt and the
    remedy arrive together. The receipt must still bring the recall into the unit's history
    (a demo run found this). Moved from tests/integration/test_inventory_flow.py."""
    sn = f.serial("RM")
    recall = f.recall_issued("acme", minutes=20, recall_id="RC-RM", skus=["TV-55"], serials=[sn])
    remedy = make_event(RecallRemedyCompleted(recall_id="RC-RM", manufacturer="acme", serial=sn, remedy="repair"),
                        source="test/desk", time=f.at(30))
    inventory.apply(recall)
    inventory.apply(f.received("acme", sn, minutes=0), remedy)
    with inventory.session() as session:
        row = get_unit_row(session, ("acme", sn))
        history = [h.event_type for h in unit_history(session, ("acme", sn))]
    assert history == ["unit.received", "recall.issued", "recall.remedy.completed"]
    assert row.status == "in_stock"


def test_a_broadcast_in_steps_gives_units_sold_or_received_between_steps_the_recall_once(inventory, monkeypatch):
    """RECALL_STEP units per transaction, a bookmark event (inventory.recall.continues) between steps.
    Here the interleaving is exact, not left to delivery timing: a sale and a receipt are applied
    after the first step and before the bookmark is delivered."""
    monkeypatch.setattr(handlers, "RECALL_STEP", 4)
    prefix, rid = f.serial("T"), f"RC-{f.serial()}"
    sn = [f"{prefix}{n:03d}" for n in range(30)]
    scope = {"prefix": prefix, "first": 1, "last": 29, "width": 3}
    services = Services([inventory])
    services.deliver(f.received("acme", selection={"serial_range": {**scope, "last": 20}}, minutes=0),
                     f.received("acme", sn[21], minutes=0, sku="RADIO"))  # not covered: other sku
    inventory.apply(f.recall_issued("acme", minutes=5, recall_id=rid, skus=["TV-55"], serial_ranges=[scope]))
    bookmarks = [e for e in inventory.outbox() if e.type == "inventory.recall.continues"]
    assert len(bookmarks) == 1, "the first step stops after RECALL_STEP units"
    # Between the first step and the next: then the bookmarks are relayed, step after step, to the end.
    published = services.deliver(f.sold("acme", sn[19], minutes=6), f.received("acme", sn[25], minutes=7))
    assert sum(e.type == "inventory.recall.continues" for e in published) >= 4  # 21 covered units, 4 per step
    for serial in sn[1:19] + [sn[20], sn[25]]:
        assert unit(inventory, serial)["status"] == "quarantined", serial
    sold = unit(inventory, sn[19])
    assert sold["status"] == "sold"
    assert [h["type"] for h in sold["history"]] == ["unit.received", "recall.issued", "unit.sold"]
    assert unit(inventory, sn[21])["status"] == "in_stock"
    for serial in sn[1:21] + [sn[25]]:
        assert [h["type"] for h in unit(inventory, serial)["history"]].count("recall.issued") == 1, serial

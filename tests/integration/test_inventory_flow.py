"""Inventory over a real Redis and a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from sqlalchemy.orm import Session

from services.inventory.app import definition as inventory
from services.inventory.store import get_unit as get_unit_row
from services.inventory.store import unit_history
from shared.consumer import EventProcessor
from shared.contracts import RecallAmended, RecallClosed, RecallRemedyCompleted, UnitQuarantined
from shared.envelope import make_event
from shared.schema import migrate
from shared.store import for_writing, make_engine
from tests.support import factories as f
from tests.support.running import http, publish_events, running, wait_for
from tests.support.streams import raw_entries


async def get_unit(client, manufacturer, serial):
    response = await client.get(f"/units/{manufacturer}/{serial}")
    return response.json() if response.status_code == 200 else None


async def test_receive_transfer_sell_return_shows_in_the_read_api(settings):
    sn = f.serial()
    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.received("acme", sn, minutes=0, location="warehouse"),
            f.transferred("acme", sn, minutes=10, from_location="warehouse", to_location="store-12"),
            f.sold("acme", sn, minutes=20, location="store-12", customer_id="C-7"),
            f.returned("acme", sn, minutes=30, location="store-12", condition="open_box"),
        ])
        unit = await wait_for(lambda: _with_history(client, "acme", sn, 4), message="4 facts applied")
        assert unit["status"] == "returned"
        assert unit["epcis_disposition"] == "returned"
        assert unit["location"] == "store-12"
        assert unit["condition"] == "open_box"
        assert [h["type"] for h in unit["history"]] == ["unit.received", "unit.transferred", "unit.sold",
                                                          "unit.returned"]
        assert unit["history"][2]["customer_id"] == "C-7"
        assert [a for a in unit["anomalies"] if a["status"] == "open"] == []

        listed = (await client.get("/units", params={"location": "store-12", "status": "returned"})).json()
        assert any(u["serial"] == sn for u in listed["items"])


async def _with_history(client, manufacturer, serial, count):
    unit = await get_unit(client, manufacturer, serial)
    return unit if unit and len(unit["history"]) >= count else None


async def test_a_pos_terminal_can_publish_with_a_plain_xadd(settings):
    """The documented wire format: one field 'event' with the JSON envelope, no FastStream framing."""
    sn = f.serial()
    raw = aioredis.from_url(settings.redis_url)
    envelope = {
        "specversion": "1.0", "id": "till-3-000123", "source": "pos/store-12/till-3", "type": "unit.received",
        "time": "2026-11-01T09:00:00+01:00", "subject": f"acme/{sn}", "datacontenttype": "application/json",
        "data": {"manufacturer": " ACME ", "serial": sn.lower(), "sku": "TV-55", "location": "store-12"},
    }
    async with running(inventory, settings) as app, http(app) as client:
        await raw.xadd(settings.streams.for_type("unit.received"), {"event": json.dumps(envelope)})
        unit = await wait_for(lambda: get_unit(client, "acme", sn), message="raw XADD applied")
        assert unit["status"] == "in_stock"
        assert unit["history"][0]["source"] == "pos/store-12/till-3"
        assert unit["history"][0]["time"].startswith("2026-11-01T08:00:00")  # normalized to UTC
    await raw.aclose()


async def test_bulk_receipt_by_range_and_list(settings):
    prefix = f.serial("B")
    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.received("acme", selection={"serial_range": {"prefix": prefix, "first": 1, "last": 1500, "width": 5}},
                       minutes=0, sku="LAPTOP-13"),
            f.received("acme", selection={"serials": [f"{prefix}L1", f"{prefix}L2", f"{prefix}L1"]}, minutes=1,
                       sku="LAPTOP-13"),
        ])
        await wait_for(lambda: get_unit(client, "acme", f"{prefix}L2"), message="list receipt")
        await wait_for(lambda: get_unit(client, "acme", f"{prefix}01500"), message="range receipt")
        listed = (await client.get("/units", params={"sku": "LAPTOP-13", "limit": 10})).json()
        assert listed["total"] == 1502
        assert len(listed["items"]) == 10


async def test_anomalies_are_recorded_and_queryable(settings):
    sold_twice, never_received, stolen = f.serial(), f.serial(), f.serial()
    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.received("acme", sold_twice, minutes=0), f.received("acme", stolen, minutes=0),
            f.sold("acme", sold_twice, minutes=5), f.sold("acme", sold_twice, minutes=6),
            f.sold("acme", never_received, minutes=5),
            f.theft_reported("acme", stolen, minutes=3, case_number="C-99"),
            f.sold("acme", stolen, minutes=9),
        ])

        async def kinds():
            page = (await client.get("/anomalies", params={"status": "open", "manufacturer": "acme"})).json()
            found = {(a["serial"], a["kind"]) for a in page["items"]}
            wanted = {(sold_twice, "sold_twice"), (never_received, "sold_never_received"),
                      (stolen, "sold_while_stolen")}
            return wanted <= found

        await wait_for(kinds, message="three anomalies")
        unit = await get_unit(client, "acme", stolen)
        assert unit["stolen"] is True and unit["theft_cases"] == ["metro-pd:C-99"]
        assert unit["status"] == "sold"  # the sale happened; it is flagged, not dropped


async def test_recall_quarantines_stock_and_later_arrivals(settings):
    prefix = f.serial("R")
    in_stock, sold_before, arrives_later, other_sku = (f"{prefix}{n:03d}" for n in (1, 2, 3, 4))
    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.received("acme", in_stock, minutes=0), f.received("acme", sold_before, minutes=0),
            f.received("acme", other_sku, minutes=0, sku="RADIO"),
            f.sold("acme", sold_before, minutes=10),
        ])
        await wait_for(lambda: _with_history(client, "acme", sold_before, 2), message="setup applied")
        await publish_events(settings, [
            f.recall_issued("acme", minutes=20, recall_id="RC-1", skus=["TV-55"],
                            serial_ranges=[{"prefix": prefix, "first": 1, "last": 10, "width": 3}]),
        ])
        unit = await wait_for(lambda: _with_history(client, "acme", in_stock, 2), message="recall applied")
        assert unit["status"] == "quarantined" and unit["recalls"] == ["RC-1"], json.dumps(unit, indent=1, default=str)
        await publish_events(settings, [f.received("acme", arrives_later, minutes=30)])
        later = await wait_for(lambda: get_unit(client, "acme", arrives_later), message="late arrival")
        assert later["status"] == "quarantined"
        assert (await get_unit(client, "acme", sold_before))["status"] == "sold"
        assert (await get_unit(client, "acme", other_sku))["status"] == "in_stock"


async def test_read_api_gives_clear_errors(settings):
    async with running(inventory, settings) as app, http(app) as client:
        missing = await client.get("/units/acme/NOPE123")
        assert missing.status_code == 404 and "not known" in missing.json()["detail"]
        bad = await client.get("/units/acme/bad%20serial")
        assert bad.status_code == 400 and "serial" in bad.json()["detail"]
        assert (await client.get("/units", params={"status": "melted"})).status_code == 422
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"


async def test_recall_amendment_remedy_and_closure(settings):
    prefix = f.serial("A")
    first, widened_in, remedied, after_close = (f"{prefix}{n:03d}" for n in (1, 20, 2, 3))
    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, [f.received("acme", s, minutes=0) for s in (first, widened_in, remedied)])
        await wait_for(lambda: get_unit(client, "acme", remedied), message="stock received")
        await publish_events(settings, [
            f.recall_issued("acme", minutes=10, recall_id="RC-A", serial_ranges=[
                {"prefix": prefix, "first": 1, "last": 10, "width": 3}]),
        ])
        await wait_for(lambda: _status(client, first, "quarantined"), message="quarantine")
        amended = make_event(RecallAmended(recall_id="RC-A", manufacturer="acme", serial_ranges=[
            {"prefix": prefix, "first": 2, "last": 30, "width": 3}]), source="test/maker", time=f.at(20))
        remedy = make_event(RecallRemedyCompleted(recall_id="RC-A", manufacturer="acme", serial=remedied,
                                                  remedy="repair"), source="test/desk", time=f.at(30))
        closed = make_event(RecallClosed(recall_id="RC-A", manufacturer="acme", reason="all units fixed"),
                            source="test/maker", time=f.at(40))
        await publish_events(settings, [amended, remedy, closed, f.received("acme", after_close, minutes=50)])
        await wait_for(lambda: _status(client, widened_in, "quarantined"), message="widened scope")
        await wait_for(lambda: _status(client, first, "in_stock"), message="narrowed scope releases")
        await wait_for(lambda: _status(client, remedied, "in_stock"), message="remedy releases")
        await wait_for(lambda: _status(client, after_close, "in_stock"), message="arrival after closure")
        # Closed: the recall no longer holds it (a return would not quarantine it), but it stays held.
        held = await wait_for(lambda: _recalls_cleared(client, widened_in), message="closure reaches the unit")
        assert held["status"] == "quarantined"


async def _status(client, serial, status):
    unit = await get_unit(client, "acme", serial)
    return unit is not None and unit["status"] == status


async def _recalls_cleared(client, serial):
    unit = await get_unit(client, "acme", serial)
    return unit if unit is not None and unit["recalls"] == [] else None


def test_a_remedy_applied_before_its_recall_and_receipt_still_ends_right(settings):
    """Streams race: the recall is applied before the unit is known, then the receipt and the
    remedy arrive together. The receipt must still bring the recall into the unit's history
    (a demo run found this)."""
    engine = make_engine(settings.database_url("inventory"))
    migrate(engine, inventory.migrations)
    processor = EventProcessor("inventory", for_writing(engine), inventory.apply)
    sn = f.serial("RM")
    recall = f.recall_issued("acme", minutes=20, recall_id="RC-RM", skus=["TV-55"], serials=[sn])
    remedy = make_event(RecallRemedyCompleted(recall_id="RC-RM", manufacturer="acme", serial=sn, remedy="repair"),
                        source="test/desk", time=f.at(30))
    processor.process([recall])
    processor.process([f.received("acme", sn, minutes=0), remedy])
    with Session(engine) as session:
        unit = get_unit_row(session, ("acme", sn))
        history = [h.event_type for h in unit_history(session, ("acme", sn))]
    engine.dispose()
    assert history == ["unit.received", "recall.issued", "recall.remedy.completed"]
    assert unit.status == "in_stock"


async def test_a_broadcast_is_reported_in_lists_of_quarantined_units(settings):
    """unit.quarantined lists up to QUARANTINE_LIST units (EPCIS-style epcList): a recall over 2,500
    units in stock is reported in two events, a unit quarantined on arrival in a list of one."""
    from services.inventory.handlers import QUARANTINE_LIST
    from shared.envelope import decode_entry

    prefix, rid = f.serial("Q"), f"RC-{f.serial()}"
    span = {"prefix": prefix, "first": 1, "last": QUARANTINE_LIST + 500, "width": 5}
    scope = {**span, "last": QUARANTINE_LIST + 1000}
    stream = settings.streams.for_type("unit.quarantined")
    client = aioredis.from_url(settings.redis_url)

    async def reported() -> list:
        entries = await raw_entries(client, stream)
        events = [decode_entry(fields) for _, fields in entries]
        return [e for e in events if isinstance(e.data, UnitQuarantined) and e.data.recall_id == rid]

    try:
        async with running(inventory, settings):
            await publish_events(settings, [
                f.received("acme", selection={"serial_range": span}, minutes=0),
                f.recall_issued("acme", minutes=5, recall_id=rid, serial_ranges=[scope]),
            ])
            events = await wait_for(lambda: _when(reported(), lambda found: len(found) == 2), timeout=30,
                                    message="two quarantine lists")
            sizes = sorted(len(e.data.units) for e in events)
            assert sizes == [500, QUARANTINE_LIST]
            serials = sorted(u.serial for e in events for u in e.data.units)
            assert serials == [f"{prefix}{n:05d}" for n in range(1, QUARANTINE_LIST + 501)]
            assert all(u.location == "store-1" for e in events for u in e.data.units)
            await publish_events(settings, [f.received("acme", f"{prefix}{QUARANTINE_LIST + 900:05d}", minutes=10)])
            events = await wait_for(lambda: _when(reported(), lambda found: len(found) == 3), timeout=30,
                                    message="arrival reported")
            arrival = [e for e in events if len(e.data.units) == 1]
            assert [u.serial for u in arrival[0].data.units] == [f"{prefix}{QUARANTINE_LIST + 900:05d}"]
    finally:
        await client.aclose()


async def _when(awaitable, condition):
    value = await awaitable
    return value if condition(value) else None


async def test_a_broadcast_is_applied_in_steps_and_units_arriving_meanwhile_get_it_once(settings, monkeypatch):
    """RECALL_STEP units per transaction, a bookmark event between steps. A unit sold and one
    received while the steps run end as in-order application says, each with the broadcast once."""
    from services.inventory import handlers

    monkeypatch.setattr(handlers, "RECALL_STEP", 4)
    prefix, rid = f.serial("T"), f"RC-{f.serial()}"
    sn = [f"{prefix}{n:03d}" for n in range(30)]
    scope = {"prefix": prefix, "first": 1, "last": 29, "width": 3}
    stream = settings.streams.for_type("inventory.recall.continues")
    client = aioredis.from_url(settings.redis_url)
    try:
        async with running(inventory, settings) as app, http(app) as api:
            await publish_events(settings, [
                f.received("acme", selection={"serial_range": {**scope, "last": 20}}, minutes=0),
                f.received("acme", sn[21], minutes=0, sku="RADIO"),  # not covered: other sku
            ])
            await wait_for(lambda: get_unit(api, "acme", sn[20]), message="stock received")
            await publish_events(settings, [
                f.recall_issued("acme", minutes=5, recall_id=rid, skus=["TV-55"], serial_ranges=[scope]),
                f.sold("acme", sn[19], minutes=6),  # a late unit of the range is sold meanwhile
                f.received("acme", sn[25], minutes=7),  # and a new one arrives
            ])
            for serial in sn[1:19] + [sn[20], sn[25]]:
                unit = await wait_for(lambda s=serial: _with_history(api, "acme", s, 2), message=f"{serial} held")
                await wait_for(lambda s=serial: _status(api, s, "quarantined"), message=f"{serial} quarantined")
            sold = await wait_for(lambda: _with_history(api, "acme", sn[19], 3), message="sold unit")
            assert sold["status"] == "sold"
            assert [h["type"] for h in sold["history"]] == ["unit.received", "recall.issued", "unit.sold"]
            assert (await get_unit(api, "acme", sn[21]))["status"] == "in_stock"
            for serial in sn[1:21] + [sn[25]]:
                unit = await get_unit(api, "acme", serial)
                assert [h["type"] for h in unit["history"]].count("recall.issued") == 1, serial
            assert await client.xlen(stream) >= 4  # 21 covered units, 4 per step
    finally:
        await client.aclose()

"""Inventory over a real Redis and a real store (SQLite and PostgreSQL): what needs delivery (the wire
format, fan-out, quarantine lists published). The rules themselves (late events, refolds, anomalies,
recalls in steps) are tested without Redis in tests/service/test_inventory.py."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from services.inventory.app import definition as inventory
from shared.contracts import UnitQuarantined
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


async def test_read_api_gives_clear_errors(settings):
    async with running(inventory, settings) as app, http(app) as client:
        missing = await client.get("/units/acme/NOPE123")
        assert missing.status_code == 404 and "not known" in missing.json()["detail"]
        bad = await client.get("/units/acme/bad%20serial")
        assert bad.status_code == 400 and "serial" in bad.json()["detail"]
        assert (await client.get("/units", params={"status": "melted"})).status_code == 422
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"


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

"""Manifests and stock counts over a real Redis and real stores (SQLite and PostgreSQL), issue 14
parts 1 and 2: the diversion story with its receipt before its manifest and every event delivered
twice; a count in parts, its first part last, against a sale made during it and applied before it;
the idle tick that checks deadlines; bad input dead-lettered with nothing else changed. The rules in
each arrival order are tested without Redis in tests/service/test_inventory_reconciliation.py."""

from __future__ import annotations

import json
from datetime import date, timedelta

import redis.asyncio as aioredis

from services.inventory.app import definition as inventory
from shared.contracts import InventoryAnomalyDetected, ShipmentDispatched, StockCounted
from shared.envelope import decode_envelope_bytes, make_event
from shared.store import utcnow
from tests.integration.test_strict_input import dead_letters
from tests.support import factories as f
from tests.support.running import http, inbox_count, publish_events, running, wait_for
from tests.support.streams import raw_entries

PAST = date(2026, 11, 3)  # 3 Nov + 2 days of grace: the deadline is behind the test's clock


def shipment(shipment_id, serials, *, minutes, to_location, arrival=PAST, retailer=None) -> object:
    return make_event(ShipmentDispatched(shipment_id=shipment_id, manufacturer="acme", from_location="acme-dc",
                                         to_location=to_location, retailer=retailer, expected_arrival=arrival,
                                         serials=serials), source="edi/acme", time=f.at(minutes))


async def anomalies(client) -> list[tuple[str, str, str]]:
    items = (await client.get("/anomalies", params={"limit": 1000})).json()["items"]
    return sorted((a["serial"], a["kind"], a["status"]) for a in items)


async def published(settings, event_type: str) -> list:
    client = aioredis.from_url(settings.redis_url)
    try:
        return [decode_envelope_bytes(fields[b"event"])
                for _, fields in await raw_entries(client, settings.streams.for_type(event_type))]
    finally:
        await client.aclose()


async def test_the_diversion_story_out_of_order_and_twice(settings):
    p = f.serial("D")
    ours, theirs, stray = f"{p}1", f"{p}2", f"{p}9"
    future = (utcnow() + timedelta(days=30)).date()
    to_us = shipment(f"ASN-{p}-1", [ours], minutes=0, to_location="store-1", arrival=future)
    to_them = shipment(f"ASN-{p}-2", [theirs], minutes=0, to_location="outlet-7", retailer="other-retailer",
                       arrival=future)
    receipt = f.received("acme", minutes=120, location="store-1", selection={"serials": [ours, theirs, stray]})
    async with running(inventory, settings) as app, http(app) as client:
        # the receipt first (store-1 already took a manifest), then the manifests; all of it twice
        await publish_events(settings, [shipment(f"ASN-{p}-0", [f"{p}0"], minutes=0, to_location="store-1",
                                                 arrival=future)])
        await wait_for(lambda: inbox_count(settings, "inventory") == 1, message="the first manifest")
        await publish_events(settings, [receipt, receipt])
        await wait_for(lambda: inbox_count(settings, "inventory") == 2, message="the receipt")
        assert await anomalies(client) == [(ours, "unexpected", "open"), (theirs, "unexpected", "open"),
                                           (stray, "unexpected", "open")]
        await publish_events(settings, [to_us, to_them, to_them, to_us])
        await wait_for(lambda: inbox_count(settings, "inventory") == 4, message="the late manifests")
        assert await wait_for(lambda: _settled(client, 4)) == [
            (ours, "unexpected", "withdrawn"), (theirs, "diverted", "open"), (theirs, "unexpected", "withdrawn"),
            (stray, "unexpected", "open")]
        view = (await client.get(f"/shipments/ASN-{p}-2")).json()
        assert view["counts"]["diverted"] == 1 and view["diverted"][0]["location"] == "store-1"
        mine = (await client.get(f"/shipments/ASN-{p}-1")).json()
        assert mine["counts"]["received"] == 1 and mine["counts"]["outstanding"] == 0
        # published through the outbox: the diversion names where the unit was meant to go
        detected = await wait_for(lambda: _detected(settings, theirs, "diverted"), message="diversion published")
        assert "outlet-7 (retailer other-retailer)" in detected.detail
        withdrawn = [e.data for e in await published(settings, "inventory.anomaly.withdrawn")
                     if e.data.serial in (ours, theirs)]
        assert sorted((w.serial, w.kind) for w in withdrawn) == [(ours, "unexpected"), (theirs, "unexpected")]


async def _settled(client, count):
    found = await anomalies(client)
    return found if len(found) == count and all(a[2] != "open" or a[1] != "unexpected" or a[0].endswith("9")
                                                 for a in found) else None


async def _detected(settings, serial, kind) -> InventoryAnomalyDetected | None:
    for event in await published(settings, "inventory.anomaly.detected"):
        if event.data.serial == serial and event.data.kind == kind:
            return event.data
    return None


async def test_a_count_in_parts_against_a_sale_made_during_it(settings):
    p = f.serial("K")
    a, b, c = f"{p}A", f"{p}B", f"{p}C"
    count_id = f"CC-{p}"

    def part(n, units, final):
        return make_event(StockCounted(count_id=count_id, location="store-1", counted_at=f.at(60), part=n,
                                       final=final, units=[{"manufacturer": "acme", "serial": s} for s in units]),
                          source="store/store-1/handheld-2", time=f.at(60 + n))

    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, [f.received("acme", minutes=0, location="store-1",
                                                   selection={"serials": [a, b, c]}),
                                        f.sold("acme", a, minutes=65, location="store-1")])  # during the count
        await wait_for(lambda: inbox_count(settings, "inventory") == 2, message="receipt and sale")
        second = part(2, [b], True)
        # redelivered, and re-sent under another id (the first one stands; the other is logged)
        await publish_events(settings, [second, second, part(2, [a, b, c], True)])
        await wait_for(lambda: inbox_count(settings, "inventory") == 4, message="part 2")
        assert (await client.get(f"/counts/{count_id}")).json()["status"] == "open"
        await publish_events(settings, [part(1, [a], False)])
        view = await wait_for(lambda: _complete(client, count_id), message="the count judged")
        assert view["totals"] == {"matched": 2, "missing": 1, "unexpected": 0}
        assert {u["serial"]: u["result"] for u in view["units"]["items"]} == {a: "matched", b: "matched",
                                                                             c: "missing"}
        assert (await client.get(f"/units/acme/{c}")).json()["status"] == "in_stock"  # a report, not a change
        # a sale made during the count, applied after it was judged: b was on the shelf at counted_at
        await publish_events(settings, [f.sold("acme", b, minutes=70, location="store-1")])
        await wait_for(lambda: inbox_count(settings, "inventory") == 6, message="the later sale")
        view = (await client.get(f"/counts/{count_id}")).json()
        assert view["totals"] == {"matched": 2, "missing": 1, "unexpected": 0}
        csv_text = (await client.get(f"/counts/{count_id}/report.csv")).text
        assert f"{count_id},store-1,2026-11-01T10:00:00+00:00,acme,{c},missing,False,in_stock,store-1" in csv_text


async def _complete(client, count_id):
    view = (await client.get(f"/counts/{count_id}")).json()
    return view if view["status"] == "complete" else None


async def test_deadlines_are_checked_between_batches(settings):
    p = f.serial("T")
    settings = settings.model_copy(update={"housekeeping_s": 0.3})
    # three manifests already due: the writer's housekeeping checks them, one per transaction
    events = [shipment(f"ASN-{p}-{n}", [f"{p}{n}"], minutes=n, to_location="store-3") for n in range(3)]
    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, events)
        found = await wait_for(lambda: _all_missing(client, p, 3), message="every deadline checked")
        assert found == [(f"{p}{n}", "missing_in_transit", "open") for n in range(3)]
        for n in range(3):
            view = (await client.get(f"/shipments/ASN-{p}-{n}")).json()
            assert view["deadline_checked"] and view["counts"]["missing"] == 1


async def _all_missing(client, prefix, count):
    found = [a for a in await anomalies(client) if a[0].startswith(prefix)]
    return found if len(found) == count else None


async def test_bad_manifests_and_counts_are_dead_lettered_and_change_nothing(sqlite_settings):
    settings = sqlite_settings

    def envelope(event_id, event_type, data):
        return {"specversion": "1.0", "id": event_id, "source": "edi/acme", "type": event_type,
                "time": "2026-11-01T10:00:00Z", "data": data}

    manifest = {"shipment_id": "ASN-BAD", "manufacturer": "acme", "from_location": "dc", "to_location": "store-1",
                "expected_arrival": "2026-11-03", "serials": ["SN1"]}
    count = {"count_id": "CNT-BAD", "location": "store-1", "counted_at": "2026-11-01T10:00:00Z",
             "units": [{"manufacturer": "acme", "serial": "SN1"}]}
    refused = {
        "no-serials": ("shipment.dispatched", {**manifest, "serials": None}),
        "same-place": ("shipment.dispatched", {**manifest, "to_location": "dc"}),
        "slash-id": ("shipment.dispatched", {**manifest, "shipment_id": "ASN/1"}),
        "no-arrival": ("shipment.dispatched", {k: v for k, v in manifest.items() if k != "expected_arrival"}),
        "too-many": ("shipment.dispatched", {**manifest, "serials": None, "serial_ranges": [
            {"prefix": "R", "first": 1, "last": 600_000}, {"prefix": "Q", "first": 1, "last": 600_000}]}),
        "part-zero": ("stock.counted", {**count, "part": 0}),
        "counted-far-ahead": ("stock.counted", {**count, "counted_at": "2999-01-01T00:00:00Z"}),
        "bad-serial": ("stock.counted", {**count, "units": [{"manufacturer": "acme", "serial": "S N"}]}),
        "no-zone": ("stock.counted", {**count, "counted_at": "2026-11-01T10:00:00"}),
    }
    client = aioredis.from_url(settings.redis_url)
    for event_id, (event_type, data) in refused.items():
        await client.xadd(settings.streams.for_type(event_type),
                          {"event": json.dumps(envelope(event_id, event_type, data))})
    # and one good manifest after them: applied, not held back
    await client.xadd(settings.streams.for_type("shipment.dispatched"),
                      {"event": json.dumps(envelope("good", "shipment.dispatched", {**manifest, "shipment_id": "ASN-OK"}))})
    await client.aclose()
    async with running(inventory, settings) as app, http(app) as api:
        await wait_for(lambda: inbox_count(settings, "inventory") == 1, message="the good manifest")
        letters = await wait_for(lambda: _count(dead_letters(settings, "inventory"), len(refused)),
                                 message="every bad one dead-lettered")
        assert {i: letter["reason"] for i, letter in letters.items()} == dict.fromkeys(refused, "bad_data")
        assert "give serials, serial_ranges or both" in letters["no-serials"]["error"]
        assert "at most 1000000" in letters["too-many"]["error"]
        assert (await api.get("/shipments/ASN-BAD")).status_code == 404
        assert (await api.get("/counts/CNT-BAD")).status_code == 404
        assert (await api.get("/shipments/ASN-OK")).json()["counts"]["expected"] == 1


async def _count(letters, n):
    found = await letters
    return found if len(found) >= n else None


async def test_who_may_sign_a_manifest_and_a_count(sqlite_settings):
    """The roles of the bus-trust rules (shared/roles.py): a manifest from the manufacturer (for its
    own units only), a distributor or the retailer's DC (warehouse); a count from a store."""
    from shared.keys import create_key
    from shared.signing import load_signer

    settings = sqlite_settings
    data_dir = settings.data_dir
    create_key(data_dir, "acme-edi", "manufacturer", manufacturer="acme")
    create_key(data_dir, "dist", "distributor", source_prefix="edi/dist")
    create_key(data_dir, "dc", "warehouse", source_prefix="wms/dc-1")
    create_key(data_dir, "store-1", "store", source_prefix="store/store-1")
    signers = {name: load_signer(name, data_dir) for name in ("acme-edi", "dist", "dc", "store-1")}
    p = f.serial("S")

    def manifest(event_id, source, maker="acme"):
        return {"specversion": "1.0", "id": event_id, "source": source, "type": "shipment.dispatched",
                "time": "2026-11-01T10:00:00Z",
                "data": {"shipment_id": f"{event_id}-{p}", "manufacturer": maker, "from_location": "dc-1",
                         "to_location": "store-1", "expected_arrival": "2099-01-01", "serials": [f"{p}1"]}}

    count = {"specversion": "1.0", "id": "count", "source": "store/store-1/handheld", "type": "stock.counted",
             "time": "2026-11-01T10:00:00Z",
             "data": {"count_id": f"C-{p}", "location": "store-1", "counted_at": "2026-11-01T10:00:00Z",
                      "units": []}}
    entries = {
        "by-maker": ("acme-edi", manifest("by-maker", "edi/acme")),
        "by-distributor": ("dist", manifest("by-distributor", "edi/dist/feed")),
        "by-dc": ("dc", manifest("by-dc", "wms/dc-1")),
        "other-maker": ("acme-edi", manifest("other-maker", "edi/acme", maker="zeta")),
        "by-store": ("store-1", manifest("by-store", "store/store-1/handheld")),
        "count": ("store-1", count),
        "count-by-dc": ("dc", {**count, "id": "count-by-dc", "source": "wms/dc-1",
                               "data": {**count["data"], "count_id": f"D-{p}"}}),
    }
    client = aioredis.from_url(settings.redis_url)
    for signer, envelope in entries.values():
        await client.xadd(settings.streams.for_type(envelope["type"]),
                          {"event": json.dumps(signers[signer].sign(envelope, check=False))})
    await client.aclose()
    async with running(inventory, settings) as app, http(app) as api:
        await wait_for(lambda: inbox_count(settings, "inventory") == 4, message="the four allowed ones")
        letters = await wait_for(lambda: _count(dead_letters(settings, "inventory"), 3), message="the others")
        assert {i: letter["reason"] for i, letter in letters.items()} == {
            "other-maker": "data_not_allowed", "by-store": "type_not_allowed", "count-by-dc": "type_not_allowed"}
        for applied_id in ("by-maker", "by-distributor", "by-dc"):
            assert (await api.get(f"/shipments/{applied_id}-{p}")).status_code == 200
        assert (await api.get(f"/counts/C-{p}")).json()["status"] == "complete"

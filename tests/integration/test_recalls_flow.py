"""Recalls over a real Redis and a real store (SQLite and PostgreSQL), with inventory in the loop. Arrival
order, repeats, amendments and early reports (rules, not delivery) are tested without Redis in
tests/service/test_recalls.py."""

from __future__ import annotations

import csv
import io

import redis.asyncio as aioredis
from sqlalchemy import text

from services.inventory.app import definition as inventory
from services.recalls.app import definition as recalls
from shared.contracts import (
    RecallAmended,
    RecallClosed,
    RecallOwnerNotified,
    RecallOwnerUnknown,
    RecallRemedyCompleted,
    UnitQuarantined,
)
from shared.envelope import make_event
from shared.store import make_engine
from tests.support import factories as f
from tests.support.recalls import assert_counts_match_rows
from tests.support.running import http, publish_events, running, wait_for


def notified(rid, serial, *, minutes, maker="acme"):
    return make_event(RecallOwnerNotified(recall_id=rid, manufacturer=maker, serial=serial, customer_id="C-1",
                                          hazard="overheating", remedy="repair"),
                      source="test/warranty", time=f.at(minutes))


def owner_unknown(rid, serial, *, minutes, maker="acme"):
    return make_event(RecallOwnerUnknown(recall_id=rid, manufacturer=maker, serial=serial),
                      source="test/warranty", time=f.at(minutes))


def remedied(rid, serial, *, minutes, maker="acme"):
    return make_event(RecallRemedyCompleted(recall_id=rid, manufacturer=maker, serial=serial, remedy="repair",
                                            location="desk-1"), source="test/desk", time=f.at(minutes))


def quarantined(rid, serial, *, minutes, maker="acme"):
    return make_event(UnitQuarantined(recall_id=rid, manufacturer=maker, units=[{"serial": serial, "location": "store-1"}]),
                      source="test/inventory", time=f.at(minutes))


def amended(rid, *, minutes, maker="acme", **scope):
    return make_event(RecallAmended(recall_id=rid, manufacturer=maker, **scope), source="test/maker",
                      time=f.at(minutes))


def closed(rid, *, minutes, maker="acme"):
    return make_event(RecallClosed(recall_id=rid, manufacturer=maker, reason="campaign ended"),
                      source="test/maker", time=f.at(minutes))


def span(prefix, first, last, width=3):
    return {"prefix": prefix, "first": first, "last": last, "width": width}


async def progress(client, rid):
    response = await client.get(f"/recalls/{rid}")
    return response.json()["progress"] if response.status_code == 200 else None


async def progress_is(client, rid, **expected):
    current = await progress(client, rid)
    return current if current and all(current[k] == v for k, v in expected.items()) else None


async def test_full_fan_out_is_counted(settings):
    """recall -> inventory quarantines stock -> recalls counts it; warranty's answers and a service
    desk's remedy are counted too; a sale attempt of a quarantined unit shows in the campaign."""
    prefix, rid = f.serial("F"), f"RC-{f.serial()}"
    sn = [f"{prefix}{n:03d}" for n in range(12)]
    async with running(inventory, settings), running(recalls, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.received("acme", selection={"serial_range": span(prefix, 1, 10)}, minutes=0, sku="TV-55"),
            f.received("acme", sn[11], minutes=0, sku="RADIO"),
            *(f.sold("acme", sn[n], minutes=10) for n in (1, 2, 3)),
        ])
        await publish_events(settings, [
            f.recall_issued("acme", minutes=20, recall_id=rid, skus=["TV-55"], serial_ranges=[span(prefix, 1, 20)]),
        ])
        await wait_for(lambda: progress_is(client, rid, affected=10, quarantined=7, sold_awaiting_owner=3),
                       message="stock quarantined by inventory and counted")
        await publish_events(settings, [
            notified(rid, sn[1], minutes=25), owner_unknown(rid, sn[2], minutes=25),
            remedied(rid, sn[4], minutes=30),
            f.sold("acme", sn[5], minutes=40),  # a quarantined unit goes through a till
        ])
        final = await wait_for(lambda: progress_is(
            client, rid, sale_attempts_while_quarantined=1, remedied=1, sold_owner_notified=1), message="answers")
        assert final == {
            "affected": 10, "in_stock": 5, "quarantined": 5, "in_stock_not_quarantined": 0, "sold": 4,
            "sold_owner_notified": 1, "sold_owner_unknown": 1, "sold_awaiting_owner": 2, "remedied": 1,
            "unknown": 0, "reached": 7, "sale_attempts_while_quarantined": 1, "completion_rate": 0.1,
            "reach_rate": 0.7,
        }
        detail = (await client.get(f"/recalls/{rid}")).json()
        assert detail["open"] is True and detail["hazard"] == "overheating" and detail["remedy"] == "repair"
        assert detail["scope"]["ranges_described"] == [f"{prefix}001..{prefix}020"]
        assert [a["serial"] for a in detail["sale_attempts"]] == [sn[5]]

        page = (await client.get(f"/recalls/{rid}/units", params={"limit": 4, "offset": 2})).json()
        assert page["total"] == 10 and [u["serial"] for u in page["items"]] == sn[3:7]
        held = (await client.get(f"/recalls/{rid}/units", params={"status": "quarantined"})).json()
        assert [u["serial"] for u in held["items"]] == sn[6:11]
        assert held["items"][0]["quarantine_location"] == "store-1"

        report = list(csv.DictReader(io.StringIO((await client.get(f"/recalls/{rid}/report.csv")).text)))
        assert [r["serial"] for r in report] == sn[1:11]
        assert {r["serial"]: r["status"] for r in report}[sn[4]] == "remedied"
        as_json = (await client.get(f"/recalls/{rid}/report.json")).json()
        assert len(as_json["units"]) == 10 and as_json["recall"]["progress"] == final

        lookup = (await client.get(f"/units/ACME/{sn[7].lower()}/recalls")).json()
        assert lookup["under_open_recall"] is True and lookup["open_recalls"] == [rid]
        assert lookup["recalls"][0]["status"] == "quarantined" and lookup["stock"] == "in_stock"
        assert_counts_match_rows(settings, rid)
        remedied_unit = (await client.get(f"/units/acme/{sn[4]}/recalls")).json()
        assert remedied_unit["under_open_recall"] is False and remedied_unit["recalls"][0]["status"] == "remedied"
        radio = (await client.get(f"/units/acme/{sn[11]}/recalls")).json()
        assert radio == {"manufacturer": "acme", "serial": sn[11], "known": True, "sku": "RADIO",
                         "stock": "in_stock", "under_open_recall": False, "open_recalls": [], "recalls": []}


async def test_units_arriving_or_sold_after_the_broadcast_keep_counts_right(settings):
    prefix, rid = f.serial("L"), f"RC-{f.serial()}"
    sn = [f"{prefix}{n:03d}" for n in range(6)]
    async with running(inventory, settings), running(recalls, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.recall_issued("acme", minutes=0, recall_id=rid, serial_ranges=[span(prefix, 1, 4)]),
        ])
        await wait_for(lambda: progress(client, rid), message="recall applied")
        await publish_events(settings, [
            f.received("acme", sn[1], minutes=10), f.received("acme", sn[2], minutes=10),
            f.received("acme", sn[5], minutes=10),  # outside the range
        ])
        await wait_for(lambda: progress_is(client, rid, affected=2, quarantined=2), message="quarantined on arrival")
        await publish_events(settings, [
            f.received("acme", selection={"serials": [sn[3], sn[4]]}, minutes=15),
            f.sold("acme", sn[3], minutes=20),  # inventory sees a quarantined unit sold: an attempt
        ])
        await wait_for(lambda: progress_is(client, rid, affected=4, quarantined=3, sold_awaiting_owner=1,
                                           sale_attempts_while_quarantined=1), message="later units counted")
        await publish_events(settings, [closed(rid, minutes=30)])
        await wait_for(lambda: _closed(client, rid), message="closure")
        await publish_events(settings, [f.received("acme", selection={"serials": [f"{prefix}009"]}, minutes=40)])
        after_close = await wait_for(lambda: _known(client, f"{prefix}009"), message="unit known")
        assert after_close["recalls"] == []  # first seen after the closure: not affected
        closed_list = (await client.get("/recalls", params={"open": "false", "manufacturer": "acme"})).json()
        assert [r["recall_id"] for r in closed_list["items"]] == [rid]
        assert closed_list["items"][0]["progress"]["affected"] == 4
        assert (await client.get("/recalls", params={"open": "true", "manufacturer": "acme"})).json()["total"] == 0
        lookup = (await client.get(f"/units/acme/{sn[1]}/recalls")).json()
        assert lookup["under_open_recall"] is False and lookup["recalls"][0]["open"] is False


async def _closed(client, rid):
    page = (await client.get("/recalls", params={"open": "false", "manufacturer": "ACME"})).json()
    return [r["recall_id"] for r in page["items"]] == [rid]


async def _known(client, serial):
    body = (await client.get(f"/units/acme/{serial}/recalls")).json()
    return body if body.get("known") else None


def _scenario(prefix, rid):
    """Facts of one campaign with their times; the expected final progress."""
    sn = [f"{prefix}{n:03d}" for n in range(10)]
    events = [
        f.received("acme", selection={"serial_range": span(prefix, 1, 8)}, minutes=0, sku="TV-55"),
        f.recall_issued("acme", minutes=5, recall_id=rid, skus=["TV-55"], serial_ranges=[span(prefix, 1, 3)]),
        amended(rid, minutes=6, skus=["TV-55"], serial_ranges=[span(prefix, 1, 6)]),  # widened
        f.sold("acme", sn[2], minutes=7),
        f.sold("acme", sn[9], minutes=8, sku="TV-55"),  # sold, never received here: outside the scope anyway
        quarantined(rid, sn[1], minutes=9), quarantined(rid, sn[4], minutes=9),
        owner_unknown(rid, sn[2], minutes=10),
        f.returned("acme", sn[6], minutes=11),  # was in stock: a return of an unsold unit is still "on hand"
        closed(rid, minutes=20),
        f.received("acme", selection={"serials": [f"{prefix}005"]}, minutes=15, location="store-2"),
        f.received("acme", selection={"serials": [f"{prefix}099"]}, minutes=25),  # after the closure
    ]
    expected = {"affected": 6, "quarantined": 2, "in_stock_not_quarantined": 3, "sold_owner_unknown": 1,
                "sold_awaiting_owner": 0}
    return events, expected


async def test_read_api_gives_clear_errors(settings):
    async with running(recalls, settings) as app, http(app) as client:
        missing = await client.get("/recalls/RC-NOPE")
        assert missing.status_code == 404 and "not known" in missing.json()["detail"]
        assert (await client.get("/recalls/RC-NOPE/units")).status_code == 404
        assert (await client.get("/recalls/RC-NOPE/report.csv")).status_code == 404
        bad = await client.get("/units/acme/bad%20serial/recalls")
        assert bad.status_code == 400 and "serial" in bad.json()["detail"]
        assert (await client.get("/recalls", params={"manufacturer": "no/pe"})).status_code in (400, 404)
        assert (await client.get("/recalls", params={"open": "maybe"})).status_code == 422
        assert (await client.get("/recalls/X/units", params={"status": "melted"})).status_code == 422
        unknown = (await client.get("/units/acme/NEVERSEEN1/recalls")).json()
        assert unknown["known"] is False and unknown["recalls"] == []
        assert (await client.get("/healthz")).json()["status"] == "ok"


async def test_a_large_range_receipt_after_the_broadcast_is_matched_chunk_by_chunk(settings):
    """Above 10,000 serials a receipt is written and matched in chunks (never held whole)."""
    prefix, rid = f.serial("G"), f"RC-{f.serial()}"
    async with running(recalls, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.recall_issued("acme", minutes=0, recall_id=rid, skus=["TV-55"],
                            serial_ranges=[span(prefix, 9_950, 10_049, width=6)], serials=[f"{prefix}012000"]),
        ])
        await wait_for(lambda: progress(client, rid), message="recall applied")
        await publish_events(settings, [
            f.received("acme", selection={"serial_range": span(prefix, 1, 12_000, width=6)}, minutes=5, sku="TV-55"),
            f.received("acme", selection={"serial_range": span(prefix, 12_001, 24_000, width=6)}, minutes=5,
                       sku="RADIO"),
        ])
        final = await wait_for(lambda: progress_is(client, rid, affected=101), timeout=60, message="matched")
        assert final["in_stock_not_quarantined"] == 101
        edges = (await client.get(f"/recalls/{rid}/units", params={"limit": 1000})).json()["items"]
        assert [u["serial"] for u in (edges[0], edges[-2], edges[-1])] == [
            f"{prefix}009950", f"{prefix}010049", f"{prefix}012000"]
    if settings.database_url("recalls").startswith("postgresql"):  # planned with real sizes at once
        engine = make_engine(settings.database_url("recalls"))
        try:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'recalls_units'"))
                assert rows.scalar() >= 20_000
        finally:
            engine.dispose()


async def test_an_amendment_naming_another_manufacturer_is_dead_lettered(sqlite_settings):
    settings = sqlite_settings
    prefix, rid = f.serial("M"), f"RC-{f.serial()}"
    async with running(recalls, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.received("acme", selection={"serial_range": span(prefix, 1, 5)}, minutes=0),
            f.recall_issued("acme", minutes=1, recall_id=rid, serial_ranges=[span(prefix, 1, 5)]),
        ])
        await wait_for(lambda: progress_is(client, rid, affected=5), message="broadcast")
        await publish_events(settings, [amended(rid, minutes=2, maker="globex", serials=[f"{prefix}001"])])
        raw = aioredis.from_url(settings.redis_url)
        try:
            async def dead_letters():
                return await raw.xrange(settings.streams.dead_letters("recalls"))

            [(_, entry)] = await wait_for(dead_letters, timeout=30, message="dead letter")
        finally:
            await raw.aclose()
        assert entry[b"reason"] == b"handler_failed" and b"belongs to acme" in entry[b"error"]
        detail = (await client.get(f"/recalls/{rid}")).json()
        assert detail["progress"]["affected"] == 5 and detail["amendments"] == 0


async def test_after_the_closure_only_units_another_service_acted_on_are_counted(settings):
    prefix, rid = f.serial("C"), f"RC-{f.serial()}"
    async with running(recalls, settings) as app, http(app) as client:
        await publish_events(settings, [f.recall_issued("acme", minutes=0, recall_id=rid,
                                                        serial_ranges=[span(prefix, 1, 3)])])
        await wait_for(lambda: progress(client, rid), message="broadcast")
        await publish_events(settings, [f.received("acme", selection={"serials": [f"{prefix}001", f"{prefix}002"]},
                                                   minutes=20)])
        await wait_for(lambda: progress_is(client, rid, affected=2), message="matched while open")
        # the closure (dated before the receipt) arrives late: the units were never affected
        await publish_events(settings, [closed(rid, minutes=10)])
        await wait_for(lambda: progress_is(client, rid, affected=0), message="closure applied")
        # inventory had not seen the closure yet and held one of them: that hold is counted
        await publish_events(settings, [quarantined(rid, f"{prefix}002", minutes=21)])
        final = await wait_for(lambda: progress_is(client, rid, affected=1), message="report counted")
        assert final["quarantined"] == 1
        assert assert_counts_match_rows(settings, rid)[rid] == {"quarantined": 1}

"""Corrections without rewriting history (issue 14, part 3): ``event.voided`` through the four running
services, on real Redis and real stores (SQLite and PostgreSQL).

A void withdraws an earlier event: every service folds the unit again without it (state, anomalies,
alerts, decisions, campaign counts) and keeps both in the history, the voided one marked. A void that
arrives first waits for its event; a second void changes nothing; a void its key may not publish is
dead-lettered with a reason by every service, and changes nothing.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

import redis.asyncio as aioredis

from services.registry import load
from shared.contracts import WarrantyClaimSubmitted
from shared.envelope import make_event
from shared.keys import create_key
from shared.signing import load_signer
from tests.support import factories as f
from tests.support.running import http, publish_events, running, wait_for
from tests.support.streams import text_entries

SERVICES = ("inventory", "warranty", "theft", "recalls")


async def _services(stack: AsyncExitStack, settings) -> dict:
    clients = {}
    for name in SERVICES:
        app = await stack.enter_async_context(running(load(name), settings))
        clients[name] = await stack.enter_async_context(http(app))
    return clients


async def _get(client, path: str) -> dict:
    response = await client.get(path)
    return response.json() if response.status_code == 200 else {}


def _voided_ids(history: list[dict]) -> dict[str, str | None]:
    return {h["id"] if "id" in h else h["event_id"]: (h["voided"] or {}).get("id") for h in history}


async def test_a_voided_sale_takes_back_coverage_alert_anomaly_decision_and_campaign_count(settings):
    stolen, claimed = f.serial("VS"), f.serial("VC")
    recall_id = f"RC-{claimed}"
    mistaken = f.sold("acme", stolen, minutes=5, customer_id="C-9")  # the cashier scanned the wrong box
    sale = f.sold("acme", claimed, minutes=5, customer_id="C-1", receipt_id="R-77")
    claim = make_event(WarrantyClaimSubmitted(claim_id=f"CL-{claimed}", manufacturer="acme", serial=claimed,
                                              customer_id="C-1", issue="no picture", location="store-1"),
                       source="test/desk", time=f.at(8))  # before the recall: approved
    async with AsyncExitStack() as stack:
        c = await _services(stack, settings)
        await publish_events(settings, [
            f.received("acme", stolen, minutes=0), f.received("acme", claimed, minutes=0),
            f.theft_reported("acme", stolen, minutes=1), mistaken, sale,
            f.recall_issued("acme", minutes=10, recall_id=recall_id, serials=[claimed]), claim])

        async def before():
            unit = await _get(c["inventory"], f"/units/acme/{stolen}")
            alerts = (await _get(c["theft"], f"/stolen/acme/{stolen}")).get("alerts", [])
            decided = await _get(c["warranty"], f"/claims/CL-{claimed}")
            progress = (await _get(c["recalls"], f"/recalls/{recall_id}")).get("progress", {})
            ready = (unit.get("status") == "sold" and any(a["kind"] == "sighting" for a in alerts)
                     and decided.get("status") == "approved" and progress.get("sold_owner_notified") == 1)
            return (unit, alerts, decided, progress) if ready else None

        unit, alerts, decided, progress = await wait_for(before, timeout=40, message="the sales applied everywhere")
        assert [a["kind"] for a in unit["anomalies"]] == ["sold_while_stolen"]
        assert (await _get(c["warranty"], f"/warranties/acme/{stolen}"))["status"] == "covered"
        approved = decided["version"]  # 1, or more if the claim arrived before the sale (decided again then)

        await publish_events(settings, [f.voided(mistaken, minutes=40), f.voided(sale, minutes=41,
                                                                                 reason="sale keyed twice")])

        async def after():
            unit = await _get(c["inventory"], f"/units/acme/{stolen}")
            alerts = (await _get(c["theft"], f"/stolen/acme/{stolen}")).get("alerts", [])
            decided = await _get(c["warranty"], f"/claims/CL-{claimed}")
            progress = (await _get(c["recalls"], f"/recalls/{recall_id}")).get("progress", {})
            ready = (unit.get("status") == "in_stock" and decided.get("status") == "rejected"
                     and all(a["status"] == "withdrawn" for a in alerts if a["kind"] == "sighting")
                     and progress.get("quarantined") == 1)
            return (unit, alerts, decided, progress) if ready else None

        unit, alerts, decided, progress = await wait_for(after, timeout=40, message="the voids applied everywhere")
        # inventory: back in stock, the anomaly withdrawn, both events in the history, the sale marked
        assert [(a["kind"], a["status"]) for a in unit["anomalies"]] == [("sold_while_stolen", "withdrawn")]
        marks = _voided_ids(unit["history"])
        assert marks[mistaken.id] is not None and marks[mistaken.id] != mistaken.id
        assert [h["type"] for h in unit["history"]] == ["unit.received", "theft.reported", "unit.sold"]
        # warranty: no coverage any more; the sale shown, marked
        coverage = await _get(c["warranty"], f"/warranties/acme/{stolen}")
        assert coverage["status"] == "in_stock" and coverage["coverage"] is None and coverage["owner"] is None
        assert [h["voided"] is not None for h in coverage["history"] if h["type"] == "unit.sold"] == [True]
        # the claim on the other unit is decided again: no sale, no warranty
        assert "never_sold" in decided["reasons"] and decided["version"] == approved + 1
        # theft: the sighting alert withdrawn (the retroactive one, on the receipt, stays); the sale shown, marked
        assert {(a["kind"], a["status"]) for a in alerts} == {("sighting", "withdrawn"), ("retroactive", "open")}
        stolen_view = await _get(c["theft"], f"/stolen/acme/{stolen}")
        assert [s["voided"] is not None for s in stolen_view["last_sightings"] if s["event_type"] == "unit.sold"] \
            == [True]
        # recalls: the unit is on hand again, held for the recall; no longer counted as sold
        assert progress["sold"] == 0 and progress["quarantined"] == 1 and progress["affected"] == 1
        claimed_unit = await _get(c["inventory"], f"/units/acme/{claimed}")
        assert claimed_unit["status"] == "quarantined"


async def test_a_voided_receipt_and_its_corrected_receipt(settings):
    wrong, right = f.serial("VR"), f.serial("VR")
    receipt = f.received("acme", wrong, minutes=0, location="store-1")
    correction = f.received("acme", right, minutes=0, location="store-1")
    async with AsyncExitStack() as stack:
        c = await _services(stack, settings)
        await publish_events(settings, [receipt])
        await wait_for(lambda: _status(c["inventory"], wrong, "in_stock"), message="the receipt")
        await publish_events(settings, [f.voided(receipt, minutes=2, reason="wrong serial keyed",
                                                 corrected=correction)])
        right_unit = await wait_for(lambda: _status(c["inventory"], right, "in_stock"), message="the correction")
        wrong_unit = await wait_for(lambda: _status(c["inventory"], wrong, "unknown"), message="the voided receipt")
        assert [h["voided"]["reason"] for h in wrong_unit["history"]] == ["wrong serial keyed"]
        assert right_unit["location"] == "store-1" and right_unit["history"][0]["id"] == correction.id
        assert (await _get(c["warranty"], f"/warranties/acme/{wrong}"))["status"] == "not_sold_here"
        assert (await _get(c["warranty"], f"/warranties/acme/{right}"))["status"] == "in_stock"
        # The correction published again on its own stream is the same event: applied once.
        await publish_events(settings, [correction])
        await publish_events(settings, [f.sold("acme", right, minutes=5)])
        unit = await wait_for(lambda: _status(c["inventory"], right, "sold"), message="a sale of the corrected unit")
        assert unit["anomalies"] == [] and len(unit["history"]) == 2


async def test_a_void_that_arrives_first_waits_and_a_second_void_changes_nothing(settings):
    serial = f.serial("VF")
    sale = f.sold("acme", serial, minutes=5)
    first = f.voided(sale, minutes=6, reason="first void")
    second = f.voided(sale, minutes=7, reason="second void")
    async with AsyncExitStack() as stack:
        c = await _services(stack, settings)
        await publish_events(settings, [f.received("acme", serial, minutes=0), f.theft_reported("acme", serial,
                                                                                               minutes=1)])
        await wait_for(lambda: _status(c["inventory"], serial, "in_stock"), message="the receipt")
        await publish_events(settings, [first])  # before the sale it voids
        await publish_events(settings, [first, second])  # a redelivered void, and another void of the same sale
        await publish_events(settings, [sale])

        async def sale_recorded():
            unit = await _get(c["inventory"], f"/units/acme/{serial}")
            return unit if len(unit.get("history", [])) == 3 else None

        unit = await wait_for(sale_recorded, message="the voided sale in the history")
        assert unit["status"] == "in_stock" and unit["anomalies"] == []  # never sold while stolen
        assert [h["voided"]["reason"] if h["voided"] else None for h in unit["history"]] == [None, None, "first void"]

        async def theft_recorded():
            view = await _get(c["theft"], f"/stolen/acme/{serial}")
            return view if len(view.get("last_sightings", [])) == 2 else None

        view = await wait_for(theft_recorded, message="the voided sale among the sightings")
        assert [a["kind"] for a in view["alerts"]] == ["retroactive"]  # no sighting alert on the voided sale
        coverage = await wait_for(lambda: _warranty_history(c["warranty"], serial, 3), message="warranty history")
        assert coverage["status"] == "in_stock" and coverage["coverage"] is None
        await publish_events(settings, [f.sold("acme", serial, minutes=9, receipt_id="R-REAL")])
        unit = await wait_for(lambda: _status(c["inventory"], serial, "sold"), message="the real sale")
        assert [a["kind"] for a in unit["anomalies"]] == ["sold_while_stolen"]  # this one is real


async def test_a_void_by_another_role_or_source_is_dead_lettered_and_changes_nothing(settings):
    data_dir = settings.data_dir
    create_key(data_dir, "till-12", "pos", source_prefix="pos/store-12")
    create_key(data_dir, "dock-12", "warehouse", source_prefix="wms/store-12")
    till, dock = load_signer("till-12", data_dir), load_signer("dock-12", data_dir)
    serial = f.serial("VW")
    receipt = f.received("acme", serial, minutes=0, source="wms/store-12")
    sale = f.sold("acme", serial, minutes=5)
    sale = type(sale)(sale.envelope.model_copy(update={"source": "pos/store-13/till-1"}), sale.data)
    refused = {
        # a till may not withdraw a warehouse's receipt, even from its own source prefix
        "void_not_allowed/role": ("till", f.voided(receipt, minutes=6, source="pos/store-12/till-1")),
        # a store-12 till may not withdraw store 13's sale
        "void_not_allowed/source": ("till", f.voided(sale, minutes=7, source="pos/store-12/till-1")),
        # a warehouse may not withdraw a sale
        "void_not_allowed/warehouse": ("dock", f.voided(sale, minutes=8, source="wms/store-12")),
        "unsigned": (None, f.voided(sale, minutes=9)),
    }
    async with AsyncExitStack() as stack:
        c = await _services(stack, settings)
        await publish_events(settings, [receipt, sale])
        await wait_for(lambda: _status(c["inventory"], serial, "sold"), message="the sale")
        for signer, event in refused.values():
            key = {"till": till, "dock": dock}.get(signer) if signer else None
            body = (json.dumps(key.sign(event.envelope.model_dump(mode="json", exclude_none=True), check=False))
                    if key else event.envelope.model_dump_json(exclude_none=True))
            await _xadd(settings, "event.voided", body)
        for service in SERVICES:
            dead = await wait_for(lambda s=service: _letters(settings, s, len(refused)),
                                  message=f"{service} dead-letters the voids")
            assert sorted(d["reason"] for d in dead) == ["unsigned", "void_not_allowed", "void_not_allowed",
                                                         "void_not_allowed"]
            details = " ".join(d["error"] for d in dead)
            assert "may not void a unit.received" in details and "not for 'pos/store-13/till-1'" in details
            assert "(warehouse) may not void a unit.sold" in details
        unit = await _get(c["inventory"], f"/units/acme/{serial}")
        assert unit["status"] == "sold" and all(h["voided"] is None for h in unit["history"])
        assert (await _get(c["warranty"], f"/warranties/acme/{serial}"))["status"] == "covered"

        # The right till voids its own store's sale.
        own = f.sold("acme", f.serial("VW"), minutes=5)
        own = type(own)(own.envelope.model_copy(update={"source": "pos/store-12/till-3"}), own.data)
        await publish_events(settings, [own])
        await wait_for(lambda: _status(c["inventory"], own.data.serial, "sold"), message="store 12's sale")
        void = f.voided(own, minutes=6)
        await _xadd(settings, "event.voided",
                    json.dumps(till.sign(void.envelope.model_dump(mode="json", exclude_none=True), check=False)))
        await wait_for(lambda: _status(c["inventory"], own.data.serial, "unknown"), message="its void applied")


async def _status(client, serial: str, status: str):
    unit = await _get(client, f"/units/acme/{serial}")
    return unit if unit.get("status") == status else None


async def _warranty_history(client, serial: str, n: int):
    view = await _get(client, f"/warranties/acme/{serial}")
    return view if len(view.get("history", [])) == n else None


async def _xadd(settings, stream_type: str, body: str) -> None:
    client = aioredis.from_url(settings.redis_url)
    try:
        await client.xadd(settings.streams.for_type(stream_type), {"event": body})
    finally:
        await client.aclose()


async def _letters(settings, service: str, n: int):
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        found = [fields for _, fields in await text_entries(client, settings.streams.dead_letters(service))]
    finally:
        await client.aclose()
    return found if len(found) >= n else None

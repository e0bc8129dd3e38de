"""Warranty over a real Redis and a real store (SQLite and PostgreSQL): coverage, claims, returns,
recall notices, bulk receipts, the synchronous counter path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.inventory.app import definition as inventory
from services.warranty import store
from services.warranty.app import definition as warranty
from services.warranty.handlers import reproduce
from shared.contracts import (
    DecisionFacts,
    RecallClosed,
    ReturnRequested,
    WarrantyClaimSubmitted,
    WarrantyOwnerRegistered,
    WarrantyPolicySet,
)
from shared.envelope import make_event
from tests.support import factories as f
from tests.support.running import http, publish_events, running, wait_for
from tests.support.streams import raw_entries


async def emitted(settings, event_type: str) -> list[dict]:
    """The envelopes the service published on one stream (through its outbox)."""
    client = aioredis.from_url(settings.redis_url)
    try:
        entries = await raw_entries(client, settings.streams.for_type(event_type))
    finally:
        await client.aclose()
    return [json.loads(fields[b"event"]) for _, fields in entries]


def claim(sn, *, minutes, customer="C-1", issue="no picture", claim_id=None, location="store-1", maker="acme"):
    return make_event(WarrantyClaimSubmitted(claim_id=claim_id or f"CL-{f.serial('')}", manufacturer=maker,
                                             serial=sn, customer_id=customer, issue=issue, location=location),
                      source="test/desk", time=f.at(minutes))


def return_request(sn, *, minutes, receipt_id, request_id=None):
    return make_event(ReturnRequested(request_id=request_id or f"RQ-{f.serial('')}", manufacturer="acme", serial=sn,
                                      receipt_id=receipt_id, location="store-1"),
                      source="test/pos", time=f.at(minutes))


def policy(days, *, sku="TV-55", window=30, minutes=-10_000, policy_id="P-TV"):
    return make_event(WarrantyPolicySet(policy_id=policy_id, manufacturer="acme", sku=sku, coverage_days=days,
                                        return_window_days=window, effective_from=f.at(minutes)),
                      source="test/maker", time=f.at(minutes))


def registered(sn, customer, *, minutes):
    return make_event(WarrantyOwnerRegistered(manufacturer="acme", serial=sn, customer_id=customer, channel="web"),
                      source="test/web", time=f.at(minutes))


async def get_json(client, path):
    response = await client.get(path)
    return response.json() if response.status_code == 200 else None


async def decided(client, path, version=1):
    async def check():
        body = await get_json(client, path)
        return body if body and body["status"] != "pending" and body["version"] >= version else None
    return await wait_for(check, message=f"{path} decided (v{version})")


DAY = 24 * 60


async def test_one_sale_fans_out_to_inventory_and_warranty_and_the_counter_gets_decisions(settings):
    sold_sn, expired_sn, boxed_sn = f.serial(), f.serial(), f.serial()
    # The counter decides at the server's clock (a till's time only within 5 minutes of it): the
    # story is placed before now, not at the fixed T0 of the other tests.
    now = (datetime.now(UTC) - f.T0).total_seconds() / 60  # "now" in f.at's minutes
    async with running(inventory, settings) as inv, running(warranty, settings) as war, \
            http(inv) as inv_client, http(war) as client:
        await publish_events(settings, [
            policy(90, minutes=now - 200 * DAY),
            *(f.received("acme", sn, minutes=now - 150 * DAY) for sn in (sold_sn, expired_sn, boxed_sn)),
            f.sold("acme", sold_sn, minutes=now - 5 * DAY, customer_id="C-1", receipt_id="R-1"),
            f.sold("acme", expired_sn, minutes=now - 91 * DAY, customer_id="C-2", receipt_id="R-2"),
        ])
        unit = await wait_for(lambda: _status(inv_client, sold_sn, "sold"), message="inventory sale")
        coverage = await wait_for(lambda: _policy_applied(client, sold_sn), message="warranty sale and policy")
        await wait_for(lambda: _warranty_status(client, expired_sn, "expired"), message="second sale")
        await wait_for(lambda: _warranty_status(client, boxed_sn, "in_stock"), message="receipt")
        assert coverage["sale"]["receipt_id"] == "R-1" and coverage["owner"] == {
            "customer_id": "C-1", "via": "sale", "since": coverage["sale"]["sold_at"]}
        assert coverage["coverage"]["policy_id"] == "P-TV" and coverage["coverage"]["coverage_days"] == 90
        assert unit["location"] == "store-1"

        approved = await client.post("/claims/decisions", json={
            "claim_id": f"CL-{sold_sn}", "manufacturer": "ACME", "serial": sold_sn.lower(), "customer_id": "C-1",
            "issue": "no picture", "location": "store-1"})
        assert approved.status_code == 200, approved.text
        body = approved.json()
        assert body["status"] == "approved" and body["reasons"] == [] and body["version"] == 1
        assert body["facts"]["sale_receipt_id"] == "R-1" and body["facts"]["policy_id"] == "P-TV"
        assert [s["name"] for s in body["facts"]["fraud_signals"]] == ["claim_soon_after_sale"]

        late = (await client.post("/claims/decisions", json={
            "claim_id": f"CL-{expired_sn}", "manufacturer": "acme", "serial": expired_sn, "customer_id": "C-2",
            "issue": "no sound"})).json()
        assert late["status"] == "rejected" and late["reasons"] == ["outside_coverage"]
        assert late["facts"]["coverage_ends"].startswith(str((f.at(now - 91 * DAY) + timedelta(days=90)).date()))

        # A till's clock a little behind the server's is accepted (returns asked 2 minutes ago).
        till = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
        swapped = (await client.post("/returns/decisions", json={
            "request_id": f"RQ-{boxed_sn}", "manufacturer": "acme", "serial": boxed_sn, "receipt_id": "R-1",
            "location": "store-1", "time": till})).json()
        assert swapped["status"] == "rejected"
        assert swapped["reasons"] == ["never_sold", "serial_not_on_receipt"]
        assert swapped["facts"]["receipt_serials"] == [sold_sn]

        accepted = (await client.post("/returns/decisions", json={
            "request_id": f"RQ-{sold_sn}", "manufacturer": "acme", "serial": sold_sn, "receipt_id": "R-1",
            "location": "store-1", "time": till})).json()
        assert accepted["status"] == "accepted" and accepted["reasons"] == []

        # a retried POST is the same event: same decision, nothing new emitted
        again = await client.post("/claims/decisions", json={
            "claim_id": f"CL-{sold_sn}", "manufacturer": "acme", "serial": sold_sn, "customer_id": "C-1",
            "issue": "no picture"})
        assert again.json()["decision_id"] == body["decision_id"]
        listed = (await client.get("/claims", params={"status": "rejected", "manufacturer": "ACME"})).json()
        assert [c["claim_id"] for c in listed["items"]] == [f"CL-{expired_sn}"]
        view = await get_json(client, f"/warranties/acme/{sold_sn}")
        assert [(r["kind"], r["status"]) for r in view["requests"]] == [("return", "accepted"), ("claim", "approved")]
        decisions = await wait_for(lambda: _emitted_count(settings, "warranty.claim.decided", 2), message="outbox")
        assert sorted(d["data"]["status"] for d in decisions) == ["approved", "rejected"]
        assert_reproducible(war, [("claim", f"CL-{sold_sn}"), ("claim", f"CL-{expired_sn}"),
                                  ("return", f"RQ-{boxed_sn}"), ("return", f"RQ-{sold_sn}")])


def assert_reproducible(app_or_engine, references):
    """Each stored decision, decided again from the stored facts alone, is the same decision."""
    engine = app_or_engine.state.runtime.engine if hasattr(app_or_engine, "state") else app_or_engine
    with Session(engine) as session:
        for kind, reference in references:
            stored = store.get_request(session, kind, reference)
            again = reproduce(session, kind, reference)
            assert (again.status, list(again.reasons)) == (stored["status"], json.loads(stored["reasons"]))
            assert DecisionFacts.model_validate(again.facts) == DecisionFacts.model_validate_json(stored["facts"])


async def _status(client, sn, status):
    unit = await get_json(client, f"/units/acme/{sn}")
    return unit if unit and unit["status"] == status else None


async def _policy_applied(client, sn):
    unit = await _warranty_status(client, sn, "covered")
    return unit if unit and unit["coverage"]["policy_id"] == "P-TV" else None


async def _warranty_status(client, sn, status):
    unit = await get_json(client, f"/warranties/acme/{sn}")
    return unit if unit and unit["status"] == status else None


async def _emitted_count(settings, event_type, count):
    events = await emitted(settings, event_type)
    return events if len(events) >= count else None


async def test_owner_registration_stolen_units_and_every_reason(settings):
    sn, stolen_sn, gray_sn = f.serial(), f.serial(), f.serial()
    async with running(warranty, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.received("acme", sn, minutes=0), f.received("acme", stolen_sn, minutes=0),
            f.sold("acme", sn, minutes=10, customer_id="C-1"),
            f.sold("acme", stolen_sn, minutes=10, customer_id="C-5"),
            registered(sn, "C-2", minutes=20),
            registered(gray_sn, "C-3", minutes=20),
            f.theft_reported("acme", stolen_sn, minutes=15, case_number="C-77"),
        ])
        gray = await wait_for(lambda: _warranty_status(client, gray_sn, "not_sold_here"), message="registration")
        registration = gray["registrations"][0]
        assert (registration["customer_id"], registration["sold_here"]) == ("C-3", False)
        assert gray["status"] == "not_sold_here" and len(gray["registrations"]) == 1
        await wait_for(lambda: _warranty_status(client, sn, "covered"), message="sale")
        # C-2's unsigned registration names someone other than the buyer: a pending change, not a new owner.
        pending = await wait_for(lambda: _pending_change(client, sn, "C-2"), message="registration applied")
        assert pending["owner"]["customer_id"] == "C-1" and pending["owner"]["via"] == "sale"
        stolen_view = await wait_for(lambda: _warranty_status(client, stolen_sn, "covered"), message="stolen sale")
        if not stolen_view["stolen"]:
            await wait_for(lambda: _stolen_flag(client, stolen_sn), message="theft report")
        await publish_events(settings, [  # 20 days after T0: event times may not be ahead of the clock
            claim(sn, minutes=20 * DAY, customer="C-1", claim_id=f"A-{sn}"),
            claim(sn, minutes=20 * DAY + 1, customer="C-2", claim_id=f"B-{sn}", issue="no power"),
            claim(sn, minutes=20 * DAY + 2, customer="C-9", claim_id=f"N-{sn}", issue="no sound"),
            claim(stolen_sn, minutes=20 * DAY, customer="C-5", claim_id=f"S-{stolen_sn}", location="store-9"),
            claim(gray_sn, minutes=20 * DAY, customer="C-3", claim_id=f"G-{gray_sn}"),
        ])
        # While ownership is in question, neither the buyer nor the registrant is approved without a person.
        buyer = await decided(client, f"/claims/A-{sn}")
        assert buyer["status"] == "needs_review" and buyer["reasons"] == ["ownership_change_pending"]
        registrant = await decided(client, f"/claims/B-{sn}")
        assert registrant["status"] == "needs_review" and registrant["reasons"] == ["ownership_change_pending"]
        assert registrant["facts"]["owner_via"] == "sale" and registrant["facts"]["pending_owner_customer_ids"] == ["C-2"]
        assert [s["name"] for s in registrant["facts"]["fraud_signals"]] == ["serial_seen_at_several_owners"]
        not_owner = await decided(client, f"/claims/N-{sn}")
        assert not_owner["status"] == "rejected"
        assert not_owner["reasons"] == ["not_registered_owner", "ownership_change_pending"]
        stolen = await decided(client, f"/claims/S-{stolen_sn}")
        assert stolen["reasons"] == ["reported_stolen"] and stolen["facts"]["theft_cases"] == ["metro-pd:C-77"]
        gray_claim = await decided(client, f"/claims/G-{gray_sn}")
        assert gray_claim["status"] == "needs_review" and gray_claim["reasons"] == ["unknown_serial"]

        assert_reproducible(app, [("claim", f"A-{sn}"), ("claim", f"B-{sn}"), ("claim", f"N-{sn}"),
                                  ("claim", f"S-{stolen_sn}"),
                                  ("claim", f"G-{gray_sn}")])
        alerts = await wait_for(lambda: _emitted_count(settings, "warranty.stolen_unit_presented", 1), message="alert")
        assert [(a["data"]["serial"], a["data"]["reference"], a["data"]["theft_cases"]) for a in alerts] == [
            (stolen_sn, f"S-{stolen_sn}", ["metro-pd:C-77"])]


async def _stolen_flag(client, sn):
    unit = await get_json(client, f"/warranties/acme/{sn}")
    return unit if unit and unit["stolen"] else None


async def _owner(client, sn, customer):
    unit = await get_json(client, f"/warranties/acme/{sn}")
    return unit if unit and unit["owner"] and unit["owner"]["customer_id"] == customer else None


async def _pending_change(client, sn, customer):
    unit = await get_json(client, f"/warranties/acme/{sn}")
    changes = unit["pending_ownership_changes"] if unit else []
    return unit if any(c["customer_id"] == customer for c in changes) else None


async def test_recall_notices_once_per_recall_and_unit(settings):
    prefix = f.serial("RC")
    owned, anonymous, came_back, later, other_sku = (f"{prefix}{n:03d}" for n in range(1, 6))
    recall_id = f"RC-{prefix}"
    scope = {"serial_ranges": [{"prefix": prefix, "first": 1, "last": 10, "width": 3}], "skus": ["TV-55"]}
    async with running(warranty, settings) as app, http(app) as client:
        await publish_events(settings, [
            *(f.received("acme", sn, minutes=0) for sn in (owned, anonymous, came_back, later)),
            f.received("acme", other_sku, minutes=0, sku="RADIO"),
            f.sold("acme", owned, minutes=10, customer_id="C-1"),
            f.sold("acme", anonymous, minutes=10),
            f.sold("acme", came_back, minutes=10, customer_id="C-3"),
            f.returned("acme", came_back, minutes=20),
            f.sold("acme", other_sku, minutes=10, sku="RADIO", customer_id="C-9"),
        ])
        await wait_for(lambda: _warranty_status(client, came_back, "returned"), message="setup")
        recall = f.recall_issued("acme", minutes=100, recall_id=recall_id, **scope)
        rebroadcast = f.recall_issued("acme", minutes=101, recall_id=recall_id, **scope)  # same recall, new event
        await publish_events(settings, [recall, recall, rebroadcast])
        await wait_for(lambda: _emitted_count(settings, "recall.owner_unknown", 1), message="owner unknown")
        await publish_events(settings, [f.sold("acme", later, minutes=200, customer_id="C-4"),
                                        claim(owned, minutes=300, customer="C-1", claim_id=f"R-{owned}")])
        notified = await wait_for(lambda: _emitted_count(settings, "recall.owner_notified", 2), message="notices")
        recalled = await decided(client, f"/claims/R-{owned}")
        assert recalled["status"] == "rejected" and recalled["reasons"] == ["open_recall"]
        assert recalled["facts"]["recall_remedy"] == "repair" and recalled["facts"]["open_recalls"] == [recall_id]
        view = await get_json(client, f"/warranties/acme/{owned}")
        assert view["open_recalls"] == [{"recall_id": recall_id, "remedy": "repair", "hazard": "overheating",
                                         "notice": "notified"}]

        # after the recall closes, a sale notifies nobody; nothing was sent twice
        await publish_events(settings, [
            make_event(RecallClosed(recall_id=recall_id, manufacturer="acme", reason="done"), source="test/maker",
                       time=f.at(400)),
        ])
        await wait_for(lambda: _no_open_recall(client, owned), message="closed")
        await publish_events(settings, [f.returned("acme", later, minutes=500, receipt_id="R-x"),
                                        f.sold("acme", later, minutes=600, customer_id="C-6")])
        await wait_for(lambda: _owner(client, later, "C-6"), message="resale")
        notified = await emitted(settings, "recall.owner_notified")
        unknown = await emitted(settings, "recall.owner_unknown")
        assert sorted((n["data"]["serial"], n["data"]["customer_id"]) for n in notified) == [
            (owned, "C-1"), (later, "C-4")]
        assert [n["data"]["serial"] for n in unknown] == [anonymous]
        assert notified[0]["data"]["hazard"] == "overheating" and notified[0]["data"]["remedy"] == "repair"


async def _no_open_recall(client, sn):
    view = await get_json(client, f"/warranties/acme/{sn}")
    return view if view and view["open_recalls"] == [] else None


async def test_a_million_serial_receipt_is_one_row_and_still_answers(settings):
    """The receipt is stored as one range row, no row per serial. How fast it applies is a figure, not a
    pass/fail line: `bench/warranty_decisions.py --range-only` (docs/benchmarks.md)."""
    prefix = f.serial("M")
    inside, outside = f"{prefix}0500000", f"{prefix}X1"
    async with running(warranty, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.received("acme", selection={"serial_range": {"prefix": prefix, "first": 1, "last": 1_000_000,
                                                           "width": 7}}, minutes=0),
        ])
        unit = await wait_for(lambda: _warranty_status(client, inside, "in_stock"), message="range receipt")
        assert unit["history"][0]["type"] == "unit.received" and unit["sku"] == "TV-55"
        with Session(app.state.runtime.engine) as session:
            ranges = session.execute(select(store.RangeRow.prefix, store.RangeRow.first, store.RangeRow.last)).all()
            per_serial = session.scalar(select(func.count()).select_from(store.FactRow))
        assert [tuple(r) for r in ranges] == [(prefix, 1, 1_000_000)]  # one row for the million serials
        assert per_serial == 0  # and none per serial
        await publish_events(settings, [claim(inside, minutes=60, claim_id=f"I-{prefix}"),
                                        claim(outside, minutes=60, claim_id=f"O-{prefix}")])
        assert (await decided(client, f"/claims/I-{prefix}"))["reasons"] == ["never_sold"]
        assert (await decided(client, f"/claims/O-{prefix}"))["reasons"] == ["unknown_serial"]
        await publish_events(settings, [f.sold("acme", inside, minutes=30, customer_id="C-1")])
        redecided = await decided(client, f"/claims/I-{prefix}", version=2)
        assert redecided["status"] == "approved"


async def test_clear_errors_and_the_bounded_wait(settings):
    async with running(warranty, settings) as app, http(app) as client:
        missing = await client.get("/warranties/acme/NOPE123")
        assert missing.status_code == 404 and "not known" in missing.json()["detail"]
        bad = await client.get("/warranties/acme/bad%20serial")
        assert bad.status_code == 400 and "serial" in bad.json()["detail"]
        assert (await client.get("/claims/NOPE")).status_code == 404
        assert (await client.get("/claims", params={"status": "melted"})).status_code == 422
        invalid = await client.post("/claims/decisions", json={
            "claim_id": "X", "manufacturer": "acme", "serial": "bad/serial", "customer_id": "C", "issue": "x"})
        assert invalid.status_code == 422 and "serial" in json.dumps(invalid.json())
        pending = await client.post("/claims/decisions", params={"wait_ms": 0}, json={
            "claim_id": f"W-{f.serial()}", "manufacturer": "acme", "serial": f.serial(), "customer_id": "C-1",
            "issue": "no picture"})
        assert pending.status_code == 202 and pending.headers["location"].startswith("/claims/W-")
        undecided = await client.get("/claims", params={"status": "pending"})
        assert undecided.status_code == 200 and all(c["status"] == "pending" for c in undecided.json()["items"])
        taken = await decided(client, pending.headers["location"])
        conflict = await client.post("/claims/decisions", json={
            "claim_id": taken["claim_id"], "manufacturer": "acme", "serial": f.serial(), "customer_id": "C-1",
            "issue": "no picture"})
        assert conflict.status_code == 409 and "already exists" in conflict.json()["detail"]
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"

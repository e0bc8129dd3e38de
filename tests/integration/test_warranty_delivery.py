"""Warranty delivery guarantees over a real Redis and a real store: duplicates, crash and restart with
pending entries. Out-of-order arrival and superseded decisions (rules, not delivery) are tested without
Redis in tests/service/test_warranty.py."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from services.warranty import store
from services.warranty.app import definition as warranty
from shared.envelope import make_event
from shared.store import make_engine
from tests.integration.test_warranty_flow import (
    DAY,
    claim,
    decided,
    emitted,
    get_json,
    publish_events,
)
from tests.support import factories as f
from tests.support.running import (
    http,
    inbox_count,
    kill_mid_batch,
    running,
    start_service_process,
    wait_for,
    wait_healthy,
)


def _outcome(body):
    return body["status"], body["reasons"]


async def test_duplicate_deliveries_decide_once(settings):
    sn = f.serial()
    first = claim(sn, minutes=20 * DAY, claim_id=f"D-{sn}")
    same_id_other_event = claim(sn, minutes=21 * DAY, claim_id=f"D-{sn}", issue="other")
    async with running(warranty, settings) as app, http(app) as client:
        sale = [f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=10, customer_id="C-1")]
        await publish_events(settings, [*sale, *sale])
        await wait_for(lambda: _covered(client, sn), message="sale applied")
        await publish_events(settings, [first, first, first, same_id_other_event])
        body = await decided(client, f"/claims/D-{sn}")
        await publish_events(settings, [first, *sale])  # replays after the decision
        await wait_for(lambda: inbox_count(settings, "warranty") == 4, message="inbox")
        await wait_for(lambda: _emitted_count_is(settings, 1), message="one decision published")
        again = await get_json(client, f"/claims/D-{sn}")
        assert again["version"] == 1 and again["issue"] == "no picture" and again["decision_id"] == body["decision_id"]
        view = await get_json(client, f"/warranties/acme/{sn}")
        assert [h["type"] for h in view["history"]] == ["unit.received", "unit.sold"]


async def _covered(client, sn):
    view = await get_json(client, f"/warranties/acme/{sn}")
    return view if view and view["status"] == "covered" else None


async def _emitted_count_is(settings, count):
    return len(await emitted(settings, "warranty.claim.decided")) == count


def _start(settings, log_path):
    return start_service_process("warranty", settings, log_path)


def _serving(settings, process) -> None:
    wait_healthy(settings, "warranty", process)  # really this warranty process: it checks name and pid


def _decided_count(settings) -> int:
    engine = make_engine(settings.database_url("warranty"))
    try:
        with Session(engine) as session:
            return session.execute(select(func.count()).select_from(store.ClaimRow)
                                   .where(col(store.ClaimRow.status).is_not(None))).scalar_one()
    finally:
        engine.dispose()


async def test_crash_and_restart_with_pending_entries_decides_every_claim_once(settings, tmp_path):
    """SIGKILL inside a batch of claims (committed, not acked: the consumer's test hook holds the window
    open), on SQLite and PostgreSQL, plus entries a second dead process held: after a restart every
    claim has exactly one decision, published once."""
    settings = settings.model_copy(update={"batch_size": 20})
    count = 200
    serials = [f.serial() for _ in range(count)]
    events = [e for sn in serials for e in (f.received("acme", sn, minutes=0),
                                            f.sold("acme", sn, minutes=10, customer_id="C-1"))]
    claims = [claim(sn, minutes=DAY + n, claim_id=f"K-{sn}", customer=f"C-{sn}", location=f"desk-{n}")
              for n, sn in enumerate(serials)]
    # the buyer is C-1 but claims come from C-<serial>: every claim is rejected (not_registered_owner)
    process = _start(settings, tmp_path / "warranty-0.log")
    try:
        _serving(settings, process)
        await publish_events(settings, events)  # sales first: each claim then has one decision, version 1
        await wait_for(lambda: inbox_count(settings, "warranty") == 2 * count, message="sales applied")
    finally:
        process.terminate()
        process.wait(30)
    await publish_events(settings, claims)
    process = start_service_process("warranty", settings, tmp_path / "warranty-1.log", hold_ack_ms=1500)
    window = await kill_mid_batch(settings, "warranty", process, ["warranty.claim.submitted"])
    window.assert_mid_batch(3 * count)
    assert _decided_count(settings) < count, "crash happened too late to test anything"
    # Another process of the service that read entries and died before acking them.
    client = aioredis.from_url(settings.redis_url)
    stream = settings.streams.for_type("warranty.claim.submitted")
    try:
        await client.xreadgroup("warranty", "warranty-dead-2", {stream: ">"}, count=30)
        pending_after_crash = int((await client.xpending(stream, "warranty"))["pending"])
    finally:
        await client.aclose()
    assert pending_after_crash > 0

    process = _start(settings, tmp_path / "warranty-2.log")
    try:
        _serving(settings, process)
        await wait_for(lambda: _decided_count(settings) == count, timeout=40, message="every claim decided")
        await wait_for(lambda: _pending_is_zero(settings), timeout=20, message="pending list drained")
        await wait_for(lambda: _distinct_decisions(settings, count), timeout=20, message="outbox drained")
    finally:
        process.terminate()
        process.wait(30)
    assert inbox_count(settings, "warranty") == 2 * count + count
    decisions = await emitted(settings, "warranty.claim.decided")
    by_claim: dict[str, set] = {}
    for d in decisions:
        by_claim.setdefault(d["data"]["claim_id"], set()).add((d["id"], d["data"]["version"], d["data"]["status"]))
    assert len(by_claim) == count
    assert all(len(v) == 1 and next(iter(v))[1:] == (1, "rejected") for v in by_claim.values())


async def _pending_is_zero(settings) -> bool:
    client = aioredis.from_url(settings.redis_url)
    try:
        total = 0
        for event_type in ("unit.received", "unit.sold", "warranty.claim.submitted"):
            total += int((await client.xpending(settings.streams.for_type(event_type), "warranty"))["pending"])
        return total == 0
    finally:
        await client.aclose()


async def _distinct_decisions(settings, count) -> bool:
    return len({d["id"] for d in await emitted(settings, "warranty.claim.decided")}) == count


def test_decisions_contract_round_trip():
    """The decision events the service emits validate against their contracts (consumers parse them)."""
    from services.warranty.domain import ClaimRequest, decide_claim
    from shared.contracts import DecisionFacts, WarrantyClaimDecided

    request = ClaimRequest("C", "acme", "SN1", "C-1", "x", None, (f.at(0), "s", "i"))
    decision = decide_claim(request, [], [], [], [])
    data = WarrantyClaimDecided(claim_id="C", manufacturer="acme", serial="SN1", customer_id="C-1",
                                status=decision.status, reasons=list(decision.reasons), version=1,
                                submitted_at=f.at(0), facts=DecisionFacts.model_validate(decision.facts))
    envelope = make_event(data, source="serialtrack/warranty").envelope
    assert json.loads(envelope.model_dump_json())["data"]["reasons"] == ["unknown_serial"]

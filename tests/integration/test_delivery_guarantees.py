"""Delivery guarantees of the shared consumer (README "Delivery guarantees", docs/consumer.md), shown on
the inventory service over a real Redis and real stores. R1..R11 name the properties as
docs/consumer.md lists them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import signal
import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.inventory import store as inventory_store
from services.inventory.app import definition as inventory
from shared.consumer import EventProcessor
from shared.envelope import ENTRY_FIELD, make_event
from shared.redis_clients import async_client
from shared.schema import migrate
from shared.store import InboxRow, for_writing, make_engine, table_of
from tests.support import factories as f
from tests.support.running import (
    http,
    inbox_count,
    kill_mid_batch,
    publish_events,
    running,
    start_service_process,
    wait_for,
    wait_healthy,
)
from tests.support.streams import text_entries


async def pending_total(settings, event_types=inventory.event_types) -> int:
    client = async_client(settings.redis_url)
    try:
        total = 0
        for event_type in event_types:
            stream = settings.streams.for_type(event_type)
            if await client.exists(stream):
                groups = {g["name"].decode(): g for g in await client.xinfo_groups(stream)}
                if "inventory" in groups:
                    total += int(groups["inventory"]["pending"])
        return total
    finally:
        await client.aclose()


async def dead_letters(settings) -> list[dict]:
    client = async_client(settings.redis_url, decode_responses=True)
    try:
        return [fields for _, fields in await text_entries(client, settings.streams.dead_letters("inventory"))]
    finally:
        await client.aclose()


def count(settings, table) -> int:
    engine = make_engine(settings.database_url("inventory"))
    try:
        with Session(engine) as session:
            return session.execute(select(func.count()).select_from(table)).scalar_one()
    finally:
        engine.dispose()


def unit_states(settings) -> dict:
    engine = make_engine(settings.database_url("inventory"))
    try:
        with Session(engine) as session:
            rows = session.execute(select(table_of(inventory_store.UnitRow)))
            return {(r.manufacturer, r.serial): (r.status, r.location, r.stolen, r.theft_cases, r.recalls)
                    for r in rows}
    finally:
        engine.dispose()


def open_anomalies(settings) -> set:
    engine = make_engine(settings.database_url("inventory"))
    table = table_of(inventory_store.AnomalyRow)
    try:
        with Session(engine) as session:
            rows = session.execute(select(table.c.serial, table.c.kind, table.c.event_id).where(table.c.status == "open"))
            return {tuple(r) for r in rows}
    finally:
        engine.dispose()


# R1 -------------------------------------------------------------------------------------------


def test_r1_no_loss_when_the_consumer_is_killed(settings, tmp_path):
    """README "At-least-once": SIGKILL the service inside a batch, after its commit and before its XACK
    (the consumer's test hook holds that window open); the restarted one applies every event exactly
    once and leaves nothing pending. On SQLite and PostgreSQL."""
    # Enough for several batches: the hook, not the volume, puts the kill inside one.
    settings = settings.model_copy(update={"batch_size": 200})
    serials = [f.serial() for _ in range(1200)]
    events = [f.received("acme", s, minutes=0) for s in serials]
    events += [f.sold("acme", s, minutes=5) for s in serials[:400]]
    asyncio.run(publish_events(settings, events))

    log = tmp_path / "inventory.log"
    process = start_service_process("inventory", settings, log, hold_ack_ms=1500)
    window = asyncio.run(kill_mid_batch(settings, "inventory", process, inventory.event_types))
    window.assert_mid_batch(len(events))  # pending, some of it committed, not everything applied

    restarted = start_service_process("inventory", settings, log)
    try:
        wait_healthy(settings, "inventory", restarted)
        asyncio.run(wait_for(lambda: inbox_count(settings, "inventory") == len(events), timeout=60,
                             message="every event applied after restart"))
        asyncio.run(wait_for(lambda: _zero(pending_total(settings)), timeout=30, message="pending list empty"))
    finally:
        restarted.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal (exit status -SIGTERM).
        assert restarted.wait(30) in (0, -signal.SIGTERM)
    assert count(settings, table_of(inventory_store.HistoryRow)) == len(events)
    assert open_anomalies(settings) == set(), "an event applied twice would show as an anomaly"
    states = unit_states(settings)
    assert sum(1 for s in states.values() if s[0] == "sold") == 400
    assert sum(1 for s in states.values() if s[0] == "in_stock") == 800


async def _zero(awaitable) -> bool:
    return await awaitable == 0


# R2 -------------------------------------------------------------------------------------------


async def test_r2_the_same_envelope_three_times_applies_once(settings):
    sn = f.serial()
    receipt = f.received("acme", sn, minutes=0)
    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, [receipt, receipt, receipt, f.sold("acme", sn, minutes=1)])
        await wait_for(lambda: _history_len(client, sn, 2), message="sale applied")
        await wait_for(lambda: _zero(pending_total(settings)), message="all acked")
        unit = (await client.get(f"/units/acme/{sn}")).json()
    assert [h["type"] for h in unit["history"]] == ["unit.received", "unit.sold"]
    # The sale may arrive first (another stream): its anomaly is then withdrawn, never open.
    assert [a for a in unit["anomalies"] if a["status"] == "open"] == []
    assert inbox_count(settings, "inventory") == 2


async def test_r2_a_guessed_key_with_other_content_is_dead_lettered_with_both_not_dropped(settings):
    """A forged sale reuses the (source, id) of a real one published after it: the real one is not
    silently dropped as a duplicate but dead-lettered as conflicting_duplicate, naming both; a true
    redelivery of the first stays a silent no-op."""
    real_serial, forged_serial = f.serial(), f.serial()
    forged = f.sold("acme", forged_serial, minutes=1, receipt_id="R-42")
    real = make_event(forged.data.model_copy(update={"serial": real_serial}),
                      source=forged.source, id=forged.id, time=f.at(2))
    async with running(inventory, settings):
        await publish_events(settings, [forged])
        await wait_for(lambda: inbox_count(settings, "inventory") == 1, message="the first one applied")
        await publish_events(settings, [real, forged])
        letters = await wait_for(lambda: _at_least(dead_letters(settings), 1), message="a dead letter")
        await wait_for(lambda: _zero(pending_total(settings)), message="all acked")
    assert [letter["reason"] for letter in await dead_letters(settings)] == ["conflicting_duplicate"]
    assert "already applied with other content" in letters[0]["error"]
    assert real_serial in letters[0]["original"]
    assert inbox_count(settings, "inventory") == 1


async def _history_len(client, serial, n):
    response = await client.get(f"/units/acme/{serial}")
    return response.status_code == 200 and len(response.json()["history"]) >= n


def test_r2_one_entry_applied_by_two_consumers_at_once(settings):
    """Two consumers (threads with their own connections) apply the same batch concurrently:
    the inbox's unique key lets exactly one win; the other sees a duplicate, not an error."""
    engine = make_engine(settings.database_url("inventory"))
    migrate(engine, inventory.migrations)
    events = [f.received("acme", f.serial(), minutes=0) for _ in range(50)]
    processors = [EventProcessor("inventory", for_writing(engine), inventory.apply) for _ in range(2)]
    barrier = threading.Barrier(2)
    results, errors = [], []

    def consume(processor):
        barrier.wait()
        try:
            results.append(processor.process(events))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(p,)) for p in processors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(r.new_events for r in results) == [0, 50]
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(InboxRow)) == 50
        assert session.scalar(select(func.count()).select_from(inventory_store.HistoryRow)) == 50
    engine.dispose()


# R3 -------------------------------------------------------------------------------------------


async def test_r3_failure_after_commit_before_ack_is_redelivered_and_deduplicated(settings):
    sn = f.serial()
    async with running(inventory, settings) as app, http(app) as client:
        consumer = app.state.runtime.consumer
        real_ack = consumer._ack
        failures = []

        async def ack_fails_once(entries):
            if not failures:
                failures.append(entries)
                raise ConnectionError("injected: Redis went away between commit and XACK")
            return await real_ack(entries)

        consumer._ack = ack_fails_once
        await publish_events(settings, [f.received("acme", sn, minutes=0)])
        await wait_for(lambda: failures, message="the injected XACK failure")
        assert inbox_count(settings, "inventory") == 1  # committed...
        assert await pending_total(settings) == 1  # ...but not acked
        await wait_for(lambda: _zero(pending_total(settings)), timeout=15, message="redelivered and acked")
        unit = (await client.get(f"/units/acme/{sn}")).json()
    assert len(unit["history"]) == 1 and unit["anomalies"] == []
    assert inbox_count(settings, "inventory") == 1


async def test_r3_failure_before_commit_stores_nothing_and_stays_pending(settings):
    sn = f.serial()
    failures = []

    def apply_fails_once(session, events):
        inventory.apply(session, events)  # the writes happen, then the transaction dies
        if not failures:
            failures.append(1)
            raise RuntimeError("injected: crash before commit")

    flaky = dataclasses.replace(inventory, apply=apply_fails_once)
    async with running(flaky, settings) as app, http(app) as client:
        await publish_events(settings, [f.received("acme", sn, minutes=0)])
        await wait_for(lambda: failures, message="the injected failure")
        assert (await client.get(f"/units/acme/{sn}")).status_code == 404
        assert inbox_count(settings, "inventory") == 0
        assert await pending_total(settings) == 1
        await wait_for(lambda: _history_len(client, sn, 1), timeout=15, message="the retry applies it")
        await wait_for(lambda: _zero(pending_total(settings)), message="acked after the retry")
    assert inbox_count(settings, "inventory") == 1


# R5 -------------------------------------------------------------------------------------------


async def test_r5_poison_is_dead_lettered_and_does_not_block_the_rest(settings):
    stream = settings.streams.for_type("unit.sold")
    good_envelope = f.sold("acme", f.serial(), minutes=0).envelope.model_dump(mode="json")
    bad_serial = json.loads(json.dumps(good_envelope)) | {"id": "bad-serial"}
    bad_serial["data"]["serial"] = "SN 1\u0007"
    unknown_type = good_envelope | {"id": "unknown-type", "type": "unit.teleported"}
    missing_field = json.loads(json.dumps(good_envelope)) | {"id": "missing"}
    del missing_field["data"]["receipt_id"]
    poison = [
        {ENTRY_FIELD: b"{not json"},
        {ENTRY_FIELD: json.dumps(bad_serial)},
        {ENTRY_FIELD: json.dumps(unknown_type)},
        {ENTRY_FIELD: json.dumps(missing_field)},
        {ENTRY_FIELD: b"[" * 100_000 + b"]" * 100_000},  # deeply nested
        {ENTRY_FIELD: b"x" * 1_100_000},  # oversized
        {"something": "else"},  # not our wire format at all
    ]
    sales = [f.sold("acme", f.serial(), minutes=1) for _ in range(100)]
    raw = async_client(settings.redis_url)
    for fields in poison:
        await raw.xadd(stream, fields)
    await raw.aclose()
    await publish_events(settings, sales)

    async with running(inventory, settings):
        await wait_for(lambda: inbox_count(settings, "inventory") == 100, message="100 good events applied")
        await wait_for(lambda: _zero(pending_total(settings)), message="poison acked")
        letters = await wait_for(lambda: _at_least(dead_letters(settings), len(poison)), message="dead letters")
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons == sorted(["not_json", "bad_data", "unknown_type", "bad_data", "not_json", "too_large",
                              "bad_envelope"])
    by_reason = {letter["reason"]: letter for letter in letters}
    assert any("receipt_id" in x["error"] for x in letters)
    assert "control characters" in " ".join(x["error"] for x in letters)
    assert by_reason["bad_envelope"]["stream"] == stream
    assert json.loads(by_reason["bad_envelope"]["original"]) == {"something": "else"}


async def _at_least(awaitable, n):
    value = await awaitable
    return value if len(value) >= n else None


# R6 -------------------------------------------------------------------------------------------


async def test_r6_a_handler_that_always_fails_is_retried_then_dead_lettered(settings):
    doomed = f.serial("DOOMED")
    attempts = []

    def apply_or_fail(session, events):
        if any(getattr(e.data, "serial", None) == doomed for e in events):
            attempts.append(1)
            raise ValueError(f"injected: cannot apply {doomed}")
        inventory.apply(session, events)

    failing = dataclasses.replace(inventory, apply=apply_or_fail)
    others = [f.received("acme", f.serial(), minutes=0) for _ in range(20)]
    async with running(failing, settings):
        await publish_events(settings, [f.received("acme", doomed, minutes=0), *others])
        letters = await wait_for(lambda: _at_least(dead_letters(settings), 1), timeout=20, message="dead letter")
        await wait_for(lambda: _zero(pending_total(settings)), message="nothing left pending")
    assert inbox_count(settings, "inventory") == 20  # the rest of its batch applied
    assert letters[0]["reason"] == "handler_failed"
    assert "injected" in letters[0]["error"] and letters[0]["deliveries"] == str(settings.max_deliveries)
    # Once per delivery, plus once inside its first batch if it shared one.
    assert settings.max_deliveries <= len(attempts) <= settings.max_deliveries + 1


# The store outage (R6) is shown for every service, inventory included: tests/integration/test_every_service.py.


# R8 -------------------------------------------------------------------------------------------


async def test_r8_a_service_started_after_the_events_gets_them_all(settings):
    events = [f.received("acme", f.serial(), minutes=0) for _ in range(30)]
    await publish_events(settings, events)  # no consumer group exists yet
    async with running(inventory, settings):
        await wait_for(lambda: inbox_count(settings, "inventory") == 30, message="history applied")


# R11 ------------------------------------------------------------------------------------------


def unit_story(serial: str, rng: random.Random) -> list:
    """A plausible life of one unit with a few contradictions, at distinct times."""
    m = "acme"
    story = [f.received(m, serial, minutes=0, location="dc")]
    story.append(f.transferred(m, serial, minutes=10, from_location="dc", to_location="store-1"))
    if rng.random() < 0.5:
        story.append(f.theft_reported(m, serial, minutes=15, case_number=f"C-{serial}"))
    story.append(f.sold(m, serial, minutes=20, location="store-1"))
    if rng.random() < 0.5:
        story.append(f.returned(m, serial, minutes=30, location="store-2", condition="open_box"))
        story.append(f.sold(m, serial, minutes=40, location="store-2"))
    else:
        story.append(f.sold(m, serial, minutes=35, location="store-3"))  # sold twice
    if rng.random() < 0.3:
        story.append(f.theft_recovered(m, serial, minutes=50, case_number=f"C-{serial}"))
    story.append(f.adjusted(m, serial, "damaged", minutes=60 + rng.random()))
    return story


async def test_r11_shuffled_delivery_ends_in_the_in_order_state(settings, tmp_path):
    rng = random.Random(11)
    events = [e for n in range(40) for e in unit_story(f.serial(f"U{n}"), rng)]
    recall = f.recall_issued("acme", minutes=25, recall_id="RC-R11", skus=["TV-55"])
    events.append(recall)

    # Reference: every event applied alone, in time order, straight into a separate store.
    reference_url = f"sqlite:///{tmp_path}/reference.db"
    engine = make_engine(reference_url)
    migrate(engine, inventory.migrations)
    processor = EventProcessor("inventory", for_writing(engine), inventory.apply)
    for event in sorted(events, key=lambda e: (e.time, e.source, e.id)):
        processor.process([event])
    engine.dispose()
    reference = settings.model_copy(update={"inventory_database_url": reference_url})

    shuffled = events[:]
    rng.shuffle(shuffled)
    async with running(inventory, settings):
        for start in range(0, len(shuffled), 7):  # trickle in, so batches interleave across streams
            await publish_events(settings, shuffled[start:start + 7])
        await wait_for(lambda: inbox_count(settings, "inventory") == len(events), message="all applied")
    assert unit_states(settings) == unit_states(reference)
    assert open_anomalies(settings) == open_anomalies(reference)
    assert open_anomalies(reference), "the stories contain contradictions; the reference must show them"

"""The outbox relay publishes right after a batch that added outgoing events, and only then; rows a
crash left behind are published at the next start."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.inventory.app import definition as inventory
from shared.consumer import EventProcessor
from shared.envelope import decode_entry
from shared.schema import migrate
from shared.store import OutboxRow, for_writing, make_engine
from tests.support import factories as f
from tests.support.running import http, inbox_count, publish_events, running, wait_for


async def _stream_length(settings, event_type: str) -> int:
    client = aioredis.from_url(settings.redis_url)
    try:
        return await client.xlen(settings.streams.for_type(event_type))
    finally:
        await client.aclose()


async def test_the_relay_is_woken_only_by_batches_with_outgoing_events(sqlite_settings):
    settings = sqlite_settings
    async with running(inventory, settings) as app:
        runtime = app.state.runtime
        wakes = []
        wake = runtime.consumer.on_outgoing

        def counted_wake():
            wakes.append(1)
            wake()

        runtime.consumer.on_outgoing = counted_wake

        await publish_events(settings, [f.received("acme", f.serial(), minutes=0)])  # nothing to report
        await wait_for(lambda: inbox_count(settings, "inventory") == 1, message="the receipt applied")
        await publish_events(settings, [f.sold("acme", f.serial(), minutes=1)])  # sold, never received
        await wait_for(lambda: _stream_length(settings, "inventory.anomaly.detected"), message="anomaly published")
        await wait_for(lambda: wakes, message="the relay woken")
        await asyncio.sleep(0.3)
    assert wakes == [1]  # by the sale's batch, not the receipt's


async def test_outbox_rows_left_by_a_crash_are_published_after_restart(settings):
    """README "Outbox": a batch committed its outgoing events and the process died before its relay ran.
    The rows wait in the store (here: committed by the service's own batch handler, with no relay
    anywhere, which is what such a crash leaves); the next start publishes each once and empties the
    outbox, on SQLite and PostgreSQL."""
    engine = make_engine(settings.database_url("inventory"))
    try:
        migrate(engine, inventory.migrations)
        sales = [f.sold("acme", f.serial(), minutes=1) for _ in range(3)]  # never received: 3 anomalies
        applied = EventProcessor("inventory", for_writing(engine), inventory.apply).process(sales)
        assert applied.outgoing == 3
        with Session(engine) as session:
            left = session.execute(select(OutboxRow.event_id).order_by(OutboxRow.seq)).scalars().all()
    finally:
        engine.dispose()
    assert len(left) == 3 and await _stream_length(settings, "inventory.anomaly.detected") == 0

    async with running(inventory, settings) as app:
        await wait_for(lambda: _stream_length(settings, "inventory.anomaly.detected"), message="the rows published")
        await wait_for(lambda: _outbox_empty(app), message="the outbox emptied")
        await asyncio.sleep(1.2)  # two more relay rounds: nothing is published again
    client = aioredis.from_url(settings.redis_url)
    try:
        entries = await client.xrange(settings.streams.for_type("inventory.anomaly.detected"))
    finally:
        await client.aclose()
    assert [decode_entry(fields).id for _, fields in entries] == left


async def _outbox_empty(app) -> bool:
    async with http(app) as client:
        return (await client.get("/healthz")).json()["outbox_unpublished"] == 0

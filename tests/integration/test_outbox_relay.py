"""The outbox relay publishes right after a batch that added outgoing events, and only then."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from services.inventory.app import definition as inventory
from tests.support import factories as f
from tests.support.running import inbox_count, publish_events, running, wait_for


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

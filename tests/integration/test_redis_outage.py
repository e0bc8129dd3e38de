"""Redis itself fails while the services run (README "Delivery guarantees": at-least-once, idempotent;
docs/consumer.md R3, R7, R9), and nothing trims a stream.

Each test runs its own redis-server (never the session's, which other tests share): it is killed
with SIGKILL (AOF with fsync on every write, so what Redis acknowledged survives, as production's
compose file keeps an append-only file), restarted on the same port and directory, and the services,
which kept running, must carry on: nothing lost, nothing applied twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from serialtrack.redis_server import RedisServerProcess
from services.registry import load
from shared.consumer import HOLD_ACK_ENV
from shared.store import make_engine
from shared.streams import group_for
from tests.conftest import make_settings
from tests.support import factories as f
from tests.support.running import crash_window, inbox_count, publish_events, running, wait_for

SERVICES = ("inventory", "warranty")  # two groups on the same streams: both must recover


@pytest.fixture
def private_redis(tmp_path):
    server = RedisServerProcess(tmp_path / "redis", appendfsync="always").start()
    yield server
    server.stop()


async def group_state(settings, service: str, event_types) -> tuple[int, int]:
    """(pending entries, entries the group has not been delivered yet) over the service's streams."""
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        pending = undelivered = 0
        for stream in {settings.streams.for_type(t) for t in event_types}:
            if not await client.exists(stream):
                continue
            last = (await client.xinfo_stream(stream))["last-generated-id"]
            for group in await client.xinfo_groups(stream):
                if group["name"] == group_for(service):
                    pending += int(group["pending"])
                    undelivered += group["last-delivered-id"] != last
        return pending, undelivered
    finally:
        await client.aclose()


async def settled(settings, service: str, event_types) -> bool:
    return await group_state(settings, service, event_types) == (0, 0)


def inventory_history_rows(settings) -> int:
    engine = make_engine(settings.database_url("inventory"))
    try:
        with Session(engine) as session:
            return session.scalar(text("SELECT count(*) FROM inventory_history"))
    finally:
        engine.dispose()


async def dead_letter_count(settings) -> int:
    client = aioredis.from_url(settings.redis_url)
    try:
        return sum([await client.xlen(settings.streams.dead_letters(s)) for s in SERVICES])
    finally:
        await client.aclose()


async def test_redis_killed_between_commit_and_ack_and_restarted_loses_nothing_and_applies_nothing_twice(
        private_redis, database_urls, tmp_path, monkeypatch):
    """A real commit-then-ack failure: the consumers hold each batch's XACK (the test hook) and Redis is
    SIGKILLed while a batch is committed and not acked. Events published before the outage, in flight
    at it, and after the restart all apply exactly once in both services; no dead letters."""
    settings = make_settings(private_redis.url, database_urls, tmp_path, claim_idle_ms=1000)
    monkeypatch.setenv(HOLD_ACK_ENV, "300")  # read by each StreamConsumer when its app is built
    serials = [f.serial() for _ in range(60)]
    before = [f.received("acme", s, minutes=0) for s in serials]
    in_flight = [f.sold("acme", s, minutes=10, customer_id="C-1") for s in serials[:40]]
    after = [f.returned("acme", s, minutes=20, receipt_id=f"R-{s}-10") for s in serials[:20]]
    definitions = [load(s) for s in SERVICES]
    async with running(definitions[0], settings) as first, running(definitions[1], settings) as second:
        await publish_events(settings, before)
        for service in SERVICES:
            await wait_for(lambda s=service: inbox_count(settings, s) == len(before), timeout=30,
                           message=f"{service}: the receipts applied")
        await publish_events(settings, in_flight)

        async def committed_not_acked():
            window = await asyncio.to_thread(crash_window, settings, "inventory", definitions[0].event_types)
            return window if window.committed_not_acked else None

        window = await wait_for(committed_not_acked, timeout=30, interval=0.01, message="a batch committed, not acked")
        private_redis.kill()  # SIGKILL: the XACK the consumer is about to send has nowhere to go
        assert window.pending > 0
        for app in (first, second):  # the window is shown: redeliveries need not wait (one reclaim at a time)
            app.state.runtime.consumer._hold_ack_s = 0
        await asyncio.sleep(2)  # the services run on without Redis: their reads and acks fail
        private_redis.start()  # same port, same directory: the AOF brings the streams and groups back
        await publish_events(settings, after)
        total = len(before) + len(in_flight) + len(after)
        for service, definition in zip(SERVICES, definitions, strict=True):
            await wait_for(lambda s=service: inbox_count(settings, s) == total, timeout=60,
                           message=f"{service}: every event applied after the outage")
            await wait_for(lambda s=service, d=definition: settled(settings, s, d.event_types), timeout=30,
                           message=f"{service}: nothing pending, everything delivered")
    assert await dead_letter_count(settings) == 0
    # Applied once: one history row per event, and no anomaly (a second sale would be "sold twice").
    assert inventory_history_rows(settings) == len(before) + len(in_flight) + len(after)
    inventory = make_engine(settings.database_url("inventory"))
    try:
        with Session(inventory) as session:
            from services.inventory.store import AnomalyRow, UnitRow

            # Open ones only: a return delivered before its sale (redelivered after the outage) raises
            # an anomaly that the late sale withdraws.
            assert session.scalar(select(func.count()).select_from(AnomalyRow).where(AnomalyRow.status == "open")) == 0
            statuses = Counter(session.scalars(select(UnitRow.status)))
    finally:
        inventory.dispose()
    assert statuses == {"returned": 20, "sold": 20, "in_stock": 20}


async def test_no_silent_trimming_every_published_entry_stays_on_its_stream(private_redis, tmp_path):
    """README "No silent trimming": all four services run over a backlog and what they publish; every
    entry published is still on its stream afterwards (XLEN and the first entry unchanged), and
    the streams the services wrote hold every event they published."""
    settings = make_settings(private_redis.url, {}, tmp_path)
    serials = [f.serial() for _ in range(400)]
    events = [f.received("acme", s, minutes=0) for s in serials]
    events += [f.sold("acme", s, minutes=5) for s in serials[:300]]  # 300 entries on unit.sold
    events += [f.theft_reported("acme", s, minutes=1, case_number=f"C-{s}") for s in serials[:250]]
    events.append(f.recall_issued("acme", minutes=2, recall_id="RC-TRIM", skus=["TV-55"]))
    published = Counter(settings.streams.for_type(e.type) for e in events)
    ids = await publish_events(settings, events)
    first = {stream: min(i for i, e in zip(ids, events, strict=True) if settings.streams.for_type(e.type) == stream)
             for stream in published}
    definitions = [load(s) for s in ("inventory", "warranty", "theft", "recalls")]
    async with running(definitions[0], settings), running(definitions[1], settings), \
            running(definitions[2], settings), running(definitions[3], settings):
        for definition in definitions:
            await wait_for(lambda d=definition: settled(settings, d.name, d.event_types), timeout=60,
                           message=f"{definition.name} caught up")
        derived_before = await stream_lengths(settings, exclude=published)
        await asyncio.sleep(1.5)  # relays run every half second: three more rounds
        for definition in definitions:
            await wait_for(lambda d=definition: settled(settings, d.name, d.event_types), timeout=30,
                           message=f"{definition.name} caught up again")
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        for stream, count in published.items():
            assert await client.xlen(stream) == count, stream
            [(oldest, _)] = await client.xrange(stream, count=1)
            assert oldest == first[stream], f"{stream}: its first entries are gone"
    finally:
        await client.aclose()
    derived_after = await stream_lengths(settings, exclude=published)
    assert derived_after["theft.alert"] >= 250 and derived_after["unit.quarantined"] >= 1
    assert all(derived_after[name] >= length for name, length in derived_before.items()), (derived_before,
                                                                                          derived_after)


async def stream_lengths(settings, exclude) -> dict[str, int]:
    """XLEN of every stream of this test but the dead letters and ``exclude``, by event type."""
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    prefix = settings.stream_prefix + ":"
    try:
        return {stream.removeprefix(prefix): await client.xlen(stream)
                async for stream in client.scan_iter(f"{prefix}*", _type="stream")
                if stream not in exclude and ":deadletter" not in stream}
    finally:
        await client.aclose()

"""Theft watch survives crashes: entries delivered to a consumer that died are reclaimed and applied
once; a SIGKILLed process restarts and every sighting yields exactly one alert."""

from __future__ import annotations

import asyncio
import signal

import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.theft import store as theft_store
from services.theft.app import definition as theft
from shared.contracts import TheftAlertRaised, TheftReported
from shared.envelope import decode_entry, make_event
from shared.store import make_engine, table_of
from shared.streams import group_for
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
from tests.support.streams import raw_entries

SERVICE = "theft"




async def pending_total(settings) -> int:
    client = aioredis.from_url(settings.redis_url)
    try:
        total = 0
        for event_type in theft.event_types:
            stream = settings.streams.for_type(event_type)
            if await client.exists(stream):
                groups = {g["name"].decode(): g for g in await client.xinfo_groups(stream)}
                if SERVICE in groups:
                    total += int(groups[SERVICE]["pending"])
        return total
    finally:
        await client.aclose()


async def published_alert_ids(settings) -> list[str]:
    client = aioredis.from_url(settings.redis_url)
    try:
        entries = await raw_entries(client, settings.streams.for_type("theft.alert"))
        return [data.alert_id for _, fields in entries
                if isinstance(data := decode_entry(fields).data, TheftAlertRaised)]
    finally:
        await client.aclose()


def alert_count(settings) -> int:
    engine = make_engine(settings.database_url(SERVICE))
    try:
        with Session(engine) as session:
            return session.execute(select(func.count()).select_from(table_of(theft_store.AlertRow))).scalar_one()
    finally:
        engine.dispose()


def stolen_report(serials, *, minutes=0, case_number="C-BULK"):
    return make_event(TheftReported(manufacturer="acme", serials=serials, agency="metro-pd", case_number=case_number),
                      source="test/police", time=f.at(minutes))


async def _zero(awaitable) -> bool:
    return await awaitable == 0


async def _at_least(awaitable, count) -> bool:
    return len(await awaitable) >= count


async def test_entries_a_crashed_consumer_held_are_reclaimed_and_alert_once(settings):
    """A consumer read the entries (XREADGROUP) and died before acking: they sit in its pending
    list. The service's reclaimer takes them over after claim_idle_ms and applies each once."""
    serials = [f.serial() for _ in range(30)]
    await publish_events(settings, [stolen_report(serials)] + [f.sold("acme", s, minutes=10) for s in serials])
    client = aioredis.from_url(settings.redis_url)
    try:
        for event_type in theft.event_types:
            stream = settings.streams.for_type(event_type)
            await client.xgroup_create(stream, group_for(SERVICE), id="0", mkstream=True)
            await client.xreadgroup(group_for(SERVICE), "theft-crashed-0", {stream: ">"}, count=1000)
    finally:
        await client.aclose()
    assert await pending_total(settings) == 31

    async with running(theft, settings) as app, http(app) as http_client:
        await wait_for(lambda: _zero(pending_total(settings)), timeout=30, message="pending entries reclaimed")
        assert inbox_count(settings, SERVICE) == 31
        assert alert_count(settings) == 30
        await wait_for(lambda: _at_least(published_alert_ids(settings), 30), message="alerts published")
        assert len(set(await published_alert_ids(settings))) == 30
        unit = (await http_client.get(f"/stolen/acme/{serials[0]}")).json()
        assert [a["event_type"] for a in unit["alerts"]] == ["unit.sold"]


def test_killed_process_restarts_and_every_sighting_alerts_exactly_once(settings, tmp_path):
    """SIGKILL inside a batch (committed, not acked: the consumer's test hook holds the window open),
    on SQLite and PostgreSQL: after a restart every sighting has exactly one alert."""
    settings = settings.model_copy(update={"batch_size": 200})
    serials = [f.serial() for _ in range(1200)]  # several batches: the hook, not the volume, places the kill
    asyncio.run(publish_events(settings, [stolen_report(serials[:600]), stolen_report(serials[600:], minutes=1)]))
    sales = [f.sold("acme", s, minutes=10) for s in serials]
    asyncio.run(publish_events(settings, sales))
    total = 2 + len(sales)

    log = tmp_path / "theft.log"
    process = start_service_process(SERVICE, settings, log, hold_ack_ms=1500)
    window = asyncio.run(kill_mid_batch(settings, SERVICE, process, theft.event_types))
    window.assert_mid_batch(total)

    restarted = start_service_process(SERVICE, settings, log)
    try:
        wait_healthy(settings, SERVICE, restarted)
        asyncio.run(wait_for(lambda: inbox_count(settings, SERVICE) == total, timeout=60,
                             message="every event applied after restart"))
        asyncio.run(wait_for(lambda: _zero(pending_total(settings)), timeout=30, message="pending list empty"))
        asyncio.run(wait_for(lambda: _at_least(published_alert_ids(settings), len(serials)), timeout=30,
                             message="every alert published"))
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(30) in (0, -signal.SIGTERM)
    assert alert_count(settings) == len(serials)
    # The relay may publish a row twice around a crash; a repeat carries the same envelope id.
    assert len(set(asyncio.run(published_alert_ids(settings)))) == len(serials)

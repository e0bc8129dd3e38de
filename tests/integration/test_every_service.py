"""Poison, retries, a store outage and a late start, for every service (docs/consumer.md R5, R6, R8).

tests/integration/test_delivery_guarantees.py shows these on inventory in depth; the consumer is
shared but each service's handler is its own, so each gets a valid event it applies and a poison
entry of its own streams here, and a handler that keeps failing on one of its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from services.registry import INSTALLED, load
from shared.contracts import WarrantyClaimSubmitted
from shared.envelope import ENTRY_FIELD, make_event
from shared.redis_clients import async_client
from shared.store import make_engine
from shared.streams import group_for
from tests.conftest import make_settings
from tests.support import factories as f
from tests.support.running import inbox_count, publish_events, running, wait_for
from tests.support.streams import text_entries


def valid_events(service: str, n: int, minutes: float = 0) -> list:
    """``n`` events this service applies, each about its own unit or case."""
    serials = [f.serial() for _ in range(n)]
    if service == "inventory":
        return [f.received("acme", s, minutes=minutes) for s in serials]
    if service == "warranty":
        return [make_event(WarrantyClaimSubmitted(claim_id=f"CL-{s}", manufacturer="acme", serial=s,
                                                  customer_id="C-1", issue="no picture"),
                           source="test/desk", time=f.at(minutes)) for s in serials]
    if service == "theft":
        return [f.theft_reported("acme", s, minutes=minutes, case_number=f"C-{s}") for s in serials]
    return [f.recall_issued("acme", minutes=minutes, recall_id=f"RC-{s}", serials=[s]) for s in serials]


# A required field of each service's valid event: without it the entry can never apply.
REQUIRED = {"inventory": "location", "warranty": "customer_id", "theft": "case_number", "recalls": "hazard"}


def poison_entry(service: str) -> tuple[str, dict]:
    """(event type, stream fields) of an entry on one of the service's streams that fails validation."""
    event = valid_events(service, 1)[0]
    envelope = json.loads(event.envelope.model_dump_json(exclude_none=True))
    del envelope["data"][REQUIRED[service]]
    envelope["id"] = f"poison-{service}"
    return event.type, {ENTRY_FIELD: json.dumps(envelope)}


async def pending_total(settings, service: str) -> int:
    client = async_client(settings.redis_url)
    try:
        total = 0
        for stream in {settings.streams.for_type(t) for t in load(service).event_types}:
            if await client.exists(stream):
                total += int((await client.xpending(stream, group_for(service)))["pending"])
        return total
    finally:
        await client.aclose()


async def dead_letters(settings, service: str) -> list[dict]:
    client = async_client(settings.redis_url, decode_responses=True)
    try:
        return [fields for _, fields in await text_entries(client, settings.streams.dead_letters(service))]
    finally:
        await client.aclose()


async def _zero(awaitable) -> bool:
    return await awaitable == 0


@pytest.mark.parametrize("service", INSTALLED)
async def test_a_service_started_after_valid_and_poison_entries_applies_the_valid_and_dead_letters_the_poison(
        sqlite_settings, service):
    """R8 and R5: everything is on the streams before the service's group exists. The valid events
    apply; the poison entry is dead-lettered with its reason and the original, and acked."""
    settings = sqlite_settings
    events = valid_events(service, 20)
    event_type, fields = poison_entry(service)
    client = async_client(settings.redis_url)
    try:
        await client.xadd(settings.streams.for_type(event_type), fields)  # the poison comes first
    finally:
        await client.aclose()
    await publish_events(settings, events)
    async with running(load(service), settings):
        await wait_for(lambda: inbox_count(settings, service) == 20, message=f"{service}: history applied")
        await wait_for(lambda: _zero(pending_total(settings, service)), message=f"{service}: nothing pending")
        letters = await dead_letters(settings, service)
    assert [(letter["reason"], letter["stream"]) for letter in letters] == [
        ("bad_data", settings.streams.for_type(event_type))]
    assert REQUIRED[service] in letters[0]["error"]
    assert json.loads(json.loads(letters[0]["original"])[ENTRY_FIELD])["id"] == f"poison-{service}"


@pytest.mark.parametrize("service", INSTALLED)
async def test_a_handler_that_keeps_failing_on_one_event_is_retried_then_dead_lettered_and_the_rest_apply(
        sqlite_settings, service):
    """R6: this service's handler fails on one event of a batch; the others apply (isolation), the
    failing one is retried up to max_deliveries, then dead-lettered as handler_failed."""
    settings = sqlite_settings
    definition = load(service)
    events = valid_events(service, 10)
    doomed = events[3]
    attempts = []

    def apply_or_fail(session, batch):
        if any(e.id == doomed.id for e in batch):
            attempts.append(len(batch))
            raise ValueError(f"injected: {service} cannot apply {doomed.id}")
        definition.apply(session, batch)

    async with running(dataclasses.replace(definition, apply=apply_or_fail), settings):
        await publish_events(settings, events)
        await wait_for(lambda: inbox_count(settings, service) == 9, message=f"{service}: the other nine applied")
        letters = await wait_for(lambda: dead_letters(settings, service), timeout=20, message="the dead letter")
        await wait_for(lambda: _zero(pending_total(settings, service)), message=f"{service}: nothing pending")
    assert [(letter["reason"], letter["deliveries"]) for letter in letters] == [
        ("handler_failed", str(settings.max_deliveries))]
    assert doomed.id in letters[0]["original"] and "injected" in letters[0]["error"]
    # Alone once per delivery, plus once inside its first batch if it shared one.
    assert settings.max_deliveries <= len(attempts) <= settings.max_deliveries + 1
    assert inbox_count(settings, service) == 9


@pytest.mark.postgres
async def test_a_store_outage_dead_letters_nothing_and_everything_applies_after(redis_handle, postgres_admin, tmp_path):
    """R6: every service's PostgreSQL database (each its own) refuses connections for longer than
    max_deliveries x claim_idle; their events wait (transient failures are not poison) and all apply
    once the databases are back. The four run together: one outage, four handlers."""
    if postgres_admin is None:
        pytest.skip("no PostgreSQL: set TEST_POSTGRES_URL or make a Docker engine reachable")
    urls = {service: postgres_admin.create_database() for service in INSTALLED}
    names = [url.rsplit("/", 1)[1] for url in urls.values()]
    settings = make_settings(redis_handle.url, urls, tmp_path)
    admin = make_engine(postgres_admin.admin_url)

    def allow(allowed: bool) -> None:
        with admin.connect() as conn:  # this test's databases only, never a shared one
            for name in names:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
                if not allowed:
                    conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      f"WHERE datname = '{name}'"))
            conn.commit()

    def applied(service: str, n: int) -> bool:
        try:
            return inbox_count(settings, service) == n
        except OperationalError:
            return False

    try:
        warm_up = [e for service in INSTALLED for e in valid_events(service, 5)]
        during = [e for service in INSTALLED for e in valid_events(service, 15, minutes=1)]

        def reads(service, events) -> int:  # services read each other's types too (a theft report, a receipt)
            return sum(e.type in load(service).event_types for e in events)

        async with contextlib.AsyncExitStack() as stack:
            for service in INSTALLED:
                await stack.enter_async_context(running(load(service), settings))
            await publish_events(settings, warm_up)
            for service in INSTALLED:
                await wait_for(lambda s=service: applied(s, reads(s, warm_up)), message=f"{service}: warm-up applied")
            allow(False)
            await publish_events(settings, during)
            await asyncio.sleep(settings.max_deliveries * settings.claim_idle_ms / 1000 * 3)
            for service in INSTALLED:
                assert await pending_total(settings, service) > 0, f"{service} had nothing waiting"
            allow(True)
            for service in INSTALLED:
                await wait_for(lambda s=service: applied(s, reads(s, warm_up + during)), timeout=60,
                               message=f"{service}: everything applied after the outage")
                await wait_for(lambda s=service: _zero(pending_total(settings, s)), timeout=30,
                               message=f"{service}: nothing pending")
        for service in INSTALLED:
            assert await dead_letters(settings, service) == [], service
    finally:
        allow(True)
        admin.dispose()
        for url in urls.values():
            postgres_admin.drop_database(url)

"""Running services the way tests need them: in-process (lifespan) or as a real OS process."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from shared.publishing import publish
from shared.redis_clients import async_client, sync_client
from shared.service import ServiceDefinition, build_app
from shared.settings import SERVICES, Settings
from shared.signing import operator_signer
from shared.store import InboxRow, make_engine, table_of
from shared.tokens import ensure_admin_token


def admin_token(settings: Settings) -> str:
    """The test data dir's admin token, made the way `serialtrack up` makes it: services are never
    opened up for tests, the tests authenticate."""
    return ensure_admin_token(settings.data_dir, settings.tokens_dir)


def auth_headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(settings)}"}


@asynccontextmanager
async def running(definition: ServiceDefinition, settings: Settings):
    """The service's FastAPI app with its lifespan running: consumers, relay, everything."""
    admin_token(settings)  # the registry exists before the service starts, as under `serialtrack up`
    app = build_app(definition, settings)
    async with app.router.lifespan_context(app):
        yield app


def http(app, token: str | None = None) -> httpx.AsyncClient:
    """A client of the app, as the data dir's admin unless given another ``token`` ("" for none)."""
    if token is None:
        token = admin_token(app.state.runtime.settings)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service", headers=headers)


async def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last value: {last!r})")


async def publish_events(settings: Settings, events) -> list[str]:
    """Publish Events (from make_event/factories) the way producers do: plain XADD of the wire format,
    signed (with the data dir's operator key) where the type must be signed."""
    client = async_client(settings.resolve_redis_url())
    try:
        return await publish(client, settings.streams, [e.envelope for e in events], operator_signer(settings.data_dir))
    finally:
        await client.aclose()


def inbox_count(settings: Settings, service: str) -> int:
    engine = make_engine(settings.database_url(service))
    try:
        with Session(engine) as session:
            return session.execute(select(func.count()).select_from(InboxRow)
                                   .where(col(InboxRow.service) == service)).scalar_one()
    finally:
        engine.dispose()


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "REDIS_URL": settings.redis_url or "",
        "SERIALTRACK_DATA_DIR": str(settings.data_dir),
        "SERIALTRACK_STREAM_PREFIX": settings.stream_prefix,
        "SERIALTRACK_CLAIM_IDLE_MS": str(settings.claim_idle_ms),
        "SERIALTRACK_MAX_DELIVERIES": str(settings.max_deliveries),
        "SERIALTRACK_POLL_MS": str(settings.poll_ms),
        "SERIALTRACK_BATCH_SIZE": str(settings.batch_size),
    })
    for service in SERVICES:
        url = getattr(settings, f"{service}_database_url")
        if url:
            env[f"{service.upper()}_DATABASE_URL"] = url
        env[f"{service.upper()}_PORT"] = str(settings.port(service))
    return env


def start_service_process(service: str, settings: Settings, log_path, hold_ack_ms: int = 0,
                          crash_on_event_id: str | None = None) -> subprocess.Popen:
    """`serialtrack serve SERVICE` as its own OS process, as production runs it. ``hold_ack_ms``: the
    consumer's test hook (shared/consumer.py, HOLD_ACK_ENV), a pause between each commit and its
    XACK that a crash test kills the process in. ``crash_on_event_id``: the other hook (CRASH_ON_ENV),
    the process SIGKILLs itself while applying that event."""
    from shared.consumer import CRASH_ON_ENV, HOLD_ACK_ENV

    env = settings_env(settings)
    env.pop(HOLD_ACK_ENV, None)
    env.pop(CRASH_ON_ENV, None)
    if hold_ack_ms:
        env[HOLD_ACK_ENV] = str(hold_ack_ms)
    if crash_on_event_id:
        env[CRASH_ON_ENV] = crash_on_event_id
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process by the caller's kill/wait
    return subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "serve", service],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


async def kill_mid_batch(settings: Settings, service: str, process: subprocess.Popen, event_types,
                         timeout: float = 60.0) -> CrashWindow:
    """SIGKILL ``process`` once the store holds committed events whose entries are still pending
    (start it with ``hold_ack_ms``), then read what the kill left (``crash_window``)."""
    async def in_window():
        try:
            return (await asyncio.to_thread(crash_window, settings, service, event_types)).committed_not_acked > 0
        except Exception:  # noqa: BLE001 - tables not created yet, store busy: look again
            return False

    try:
        await wait_for(in_window, timeout=timeout, interval=0.05, message=f"{service}: a batch committed, not acked")
    finally:
        process.kill()
        process.wait()
    return crash_window(settings, service, event_types)


def wait_healthy(settings: Settings, service: str, process: subprocess.Popen | int, timeout: float = 30.0) -> dict:
    """Until ``service`` answers healthy from ``process`` (a Popen or a pid) itself: a port still held
    by an earlier process, or taken by another service, also answers 200, and a test that trusted
    it would publish to nobody. Returns the /healthz report."""
    pid = process if isinstance(process, int) else process.pid
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not isinstance(process, int) and process.poll() is not None:
            raise AssertionError(f"{service} exited with {process.returncode}")
        try:
            response = httpx.get(settings.service_url(service) + "/healthz", timeout=1)
            last = response.json()
            if response.status_code == 200 and last.get("service") == service and last.get("pid") == pid:
                return last
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{service} (pid {pid}) not healthy after {timeout}s; last /healthz: {last}")


@dataclass(frozen=True)
class CrashWindow:
    """What Redis and the store held at a kill: the proof that it landed mid-batch."""

    pending: int  # entries delivered to the service's group and not acked
    committed_not_acked: int  # of those, entries whose event the store already recorded as applied
    applied: int  # inbox rows: events the store recorded as applied

    def assert_mid_batch(self, total: int) -> None:
        assert self.pending > 0, f"nothing was pending at the kill: {self}"
        assert self.committed_not_acked > 0, f"no entry was committed but not acked at the kill: {self}"
        assert self.applied < total, f"every event was applied before the kill: {self}"


def crash_window(settings: Settings, service: str, event_types) -> CrashWindow:
    """Compare the group's pending entries (XPENDING) with the store's inbox. Read once the process
    is dead: nothing moves any more, so what this finds is what the kill left."""
    from shared.envelope import decode_entry
    from shared.streams import group_for

    client = sync_client(settings.resolve_redis_url())
    keys: set[tuple[str, str]] = set()
    pending = 0
    try:
        for stream in {settings.streams.for_type(t) for t in event_types}:
            if not client.exists(stream):
                continue
            entries = client.xpending_range(stream, group_for(service), min="-", max="+", count=1_000_000)
            pending += len(entries)
            pipe = client.pipeline(transaction=False)
            for entry in entries:
                pipe.xrange(stream, entry["message_id"], entry["message_id"])
            for [(_, fields)] in pipe.execute():
                event = decode_entry(fields)
                keys.add((event.source, event.id))
    finally:
        client.close()
    engine = make_engine(settings.database_url(service))
    try:
        with Session(engine) as session:
            inbox = table_of(InboxRow)
            rows = session.execute(select(inbox.c.source, inbox.c.event_id).where(inbox.c.service == service))
            applied = {(source, event_id) for source, event_id in rows}
    finally:
        engine.dispose()
    return CrashWindow(pending, len(keys & applied), len(applied))

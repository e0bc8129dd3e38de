"""Running services the way tests need them: in-process (lifespan) or as a real OS process."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
from contextlib import asynccontextmanager

import httpx
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from shared.publishing import publish
from shared.service import ServiceDefinition, build_app
from shared.settings import SERVICES, Settings
from shared.signing import operator_signer
from shared.store import InboxRow, make_engine
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
    client = aioredis.from_url(settings.resolve_redis_url())
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


def start_service_process(service: str, settings: Settings, log_path) -> subprocess.Popen:
    """`serialtrack serve SERVICE` as its own OS process, as production runs it."""
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process by the caller's kill/wait
    return subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "serve", service],
                            env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(settings: Settings, service: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{service} exited with {process.returncode}")
        try:
            if httpx.get(settings.service_url(service) + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{service} not healthy after {timeout}s")

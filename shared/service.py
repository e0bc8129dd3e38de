"""Wiring shared by every service: one process = FastStream consumers + outbox relay + HTTP read API.

A service declares a ``ServiceDefinition`` (its name, the event types it reads,
its tables, the function that applies a batch, its read API) and gets a FastAPI
app whose lifespan starts and stops the rest.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from sqlalchemy import Engine, Table
from sqlalchemy.orm import Session

from . import unit_locks
from .auth import Auth, check_every_route_is_gated
from .broker import make_broker, make_redis
from .consumer import ApplyEvents, EventProcessor, StreamConsumer
from .metrics import HttpMetricsMiddleware, ServiceMetrics
from .outbox import OutboxRelay
from .schema import Migrations, prepare
from .settings import Settings
from .store import for_reading, for_writing, make_engine, outbox_backlog, ping
from .unit_locks import LockPlanner

log = logging.getLogger("serialtrack.service")


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    description: str
    event_types: Sequence[str]
    tables: Sequence[Table]
    apply: ApplyEvents
    read_api: Callable[[Engine], APIRouter]
    lookup_path: str  # GET path with {manufacturer} and {serial}: this service's part of `serialtrack lookup`
    migrations_dir: Path  # services/<name>/migrations: the revisions of this service's tables
    # What a batch must lock before it reads (shared/unit_locks.py): the units its events name, and
    # the keys a service's fold reads across units.
    locks: LockPlanner = unit_locks.units_of

    @property
    def migrations(self) -> Migrations:
        return Migrations(self.name, self.migrations_dir, self.tables)


@dataclass
class ServiceRuntime:
    definition: ServiceDefinition
    settings: Settings
    engine: Engine
    consumer: StreamConsumer
    relay: OutboxRelay
    metrics: ServiceMetrics


def _tune_garbage_collector() -> None:
    """A consumer allocates millions of short-lived objects, freed by reference counting; the cyclic
    collector's default (a collection every 700 allocations, rescanning every long-lived object
    each full pass) cost 15-20% of the hot path. Objects alive after start-up (modules, compiled
    statements, caches) are frozen out of its scans, and it runs every 50,000 allocations."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def build_app(definition: ServiceDefinition, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Two Redis users (shared/acl.py): the reader consumes, acks and claims; the writer publishes
    # the outbox, the HTTP API's submissions and dead letters. One client when they are the same.
    redis_url, writer_url = settings.service_redis_urls(definition.name)
    engine = make_engine(settings.database_url(definition.name))
    prepare(engine, definition.migrations, run_migrations=settings.migrate)
    redis = make_redis(redis_url)
    writer = make_redis(writer_url) if writer_url != redis_url else redis
    broker = make_broker(redis_url)
    metrics = ServiceMetrics(definition.name)
    relay = OutboxRelay(definition.name, for_writing(engine), writer, settings.streams, on_published=metrics.published)
    consumer = StreamConsumer(
        service=definition.name,
        event_types=definition.event_types,
        processor=EventProcessor(definition.name, for_writing(engine), definition.apply, definition.locks, metrics),
        redis=redis,
        settings=settings,
        on_outgoing=relay.wake,
        metrics=metrics,
        writer=writer,
    )
    consumer.attach(broker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _tune_garbage_collector()
        await consumer.ensure_groups()
        consumer.start()
        await broker.start()
        relay.start()
        log.info("%s: consuming %d streams as %s", definition.name, len(consumer.stream_names), consumer.consumer_name)
        try:
            yield
        finally:
            await broker.stop()  # waits for in-flight batches (graceful_timeout)
            await consumer.stop()
            await relay.stop()
            await redis.aclose()
            if writer is not redis:
                await writer.aclose()
            engine.dispose()

    # /docs and /redoc with Swagger UI's and ReDoc's files served by the service itself: FastAPI's
    # own pages load them from a CDN and stay blank on a machine without internet.
    app = FastAPIOffline(
        title=f"serialtrack {definition.name}",
        description=definition.description,
        lifespan=lifespan,
    )
    app.state.runtime = ServiceRuntime(definition, settings, engine, consumer, relay, metrics)
    # Tokens: every route of the read API says who may call it (shared/auth.py); only /healthz,
    # /metrics and the API docs below are open.
    app.state.auth = Auth(settings.tokens_dir)
    say = log.info if app.state.auth.tokens.path.exists() else log.warning
    say("%s: %s", definition.name, app.state.auth.describe())
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    router = definition.read_api(for_reading(engine))
    check_every_route_is_gated(router.routes)
    app.include_router(router)

    def read_outbox() -> tuple[int, float | None]:
        with Session(engine) as session:
            return outbox_backlog(session, definition.name)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics of this service (README: Metrics)")
    async def prometheus_metrics():
        await metrics.refresh(redis, consumer.stream_names, consumer.group, read_outbox)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/healthz", tags=["operations"], summary="Liveness and backlog of this service")
    async def healthz():
        # The pid tells a caller that the process answering is the one it started, not another one
        # that holds the port (tests/support/running.py: wait_healthy).
        report: dict = {"service": definition.name, "pid": os.getpid(), "status": "ok"}
        try:
            await asyncio.to_thread(ping, engine)
            report["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            report["database"] = f"error: {exc}"[:300]
            report["status"] = "degraded"
        try:
            pending = 0
            for stream in consumer.stream_names:
                info = await redis.xpending(stream, consumer.group)
                pending += int(info["pending"])
            report["redis"] = "ok"
            report["pending_entries"] = pending
        except Exception as exc:  # noqa: BLE001 - reported as degraded, not raised
            report["redis"] = f"error: {exc}"[:300]
            report["status"] = "degraded"
        if report["database"] == "ok":
            unpublished, oldest = await asyncio.to_thread(read_outbox)
            report["outbox_unpublished"] = unpublished
            report["outbox_oldest_age_seconds"] = round(oldest, 3) if oldest is not None else None
        keys = consumer.trust.registry
        registry = keys.current()
        # A broken registry file keeps the last good keys (and their revocations): worth an alarm, not an outage.
        report["key_registry"] = {"keys": len(registry), "revoked": sum(k.is_revoked for k in registry.values()),
                                  "error": keys.error}
        tokens = app.state.auth.tokens
        report["token_registry"] = {"tokens": len(tokens.current()), "error": tokens.error}
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    return app

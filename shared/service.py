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
from .consumer import ApplyEvents, EventProcessor, Housekeeping, StreamConsumer
from .erasure import CustomerColumns, DeadLetterRewriter, DeadLetterScrubber, applier
from .http import BODY_TOO_LARGE
from .http import install as install_http_edge
from .metrics import HttpMetricsMiddleware, ServiceMetrics
from .outbox import OutboxRelay
from .parent_watch import stop_this_process, supervisor_pid, watch_parent
from .pseudonyms import Pseudonyms
from .redis_clients import sync_client
from .schema import Migrations, prepare
from .settings import Settings
from .store import for_reading, for_writing, make_engine, outbox_backlog, ping
from .stream_stats import redis_memory
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
    # Where its tables keep customer ids, receipt ids and text quoting them: what an erasure
    # request pseudonymizes (shared/erasure.py). A service that keeps none still applies the
    # request (its outbox, its dead letters, later events) and reports it.
    customer_data: Sequence[CustomerColumns] = ()
    # What a batch must lock before it reads (shared/unit_locks.py): the units its events name, and
    # the keys a service's fold reads across units.
    locks: LockPlanner = unit_locks.units_of
    # What it does on its own while no event comes (shared/consumer.py Housekeeping), every
    # SERIALTRACK_HOUSEKEEPING_S seconds of idleness.
    housekeeping: Housekeeping | None = None

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
    # Erasure on request around the service's own handler; the dead letters it rewrites are the
    # writer's (a sync client: it runs in the consumer's worker thread).
    dead_letter_client = sync_client(writer_url)
    pseudonyms = Pseudonyms(settings.tokens_dir)
    apply = applier(definition.name, definition.customer_data, definition.apply, pseudonyms,
                    DeadLetterRewriter(dead_letter_client, settings.streams.dead_letters(definition.name)))
    relay = OutboxRelay(definition.name, for_writing(engine), writer, settings.streams, on_published=metrics.published)
    consumer = StreamConsumer(
        service=definition.name,
        event_types=definition.event_types,
        processor=EventProcessor(definition.name, for_writing(engine), apply, definition.locks, metrics,
                                 definition.housekeeping),
        redis=redis,
        settings=settings,
        on_outgoing=relay.wake,
        metrics=metrics,
        writer=writer,
    )
    consumer.scrub_dead_letters = DeadLetterScrubber(engine, definition.name, pseudonyms)
    consumer.attach(broker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Started by `serialtrack up`: stop when it is gone (shared/parent_watch.py), not live on as an
        # orphan that holds the port. From the start: a start that waits for Redis is watched too.
        supervisor = supervisor_pid()
        parent_watch = asyncio.create_task(watch_parent(supervisor, stop_this_process)) if supervisor else None
        _tune_garbage_collector()
        await consumer.ensure_groups()
        consumer.start()
        await broker.start()
        relay.start()
        log.info("%s: consuming %d streams as %s", definition.name, len(consumer.stream_names), consumer.consumer_name)
        try:
            yield
        finally:
            if parent_watch is not None:
                parent_watch.cancel()
            await broker.stop()  # waits for in-flight batches (graceful_timeout)
            await consumer.stop()
            await relay.stop()
            await redis.aclose()
            if writer is not redis:
                await writer.aclose()
            dead_letter_client.close()
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
    # The request cap and the 422 shape (shared/http.py); metrics outside, so a 413 is counted too.
    install_http_edge(app)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    router = definition.read_api(for_reading(engine))
    check_every_route_is_gated(router.routes)
    app.include_router(router)

    def read_outbox() -> tuple[int, float | None]:
        with Session(engine) as session:
            return outbox_backlog(session, definition.name)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics of this service (README: Metrics)",
             response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "the Prometheus text format"}, **BODY_TOO_LARGE})
    async def prometheus_metrics():
        await metrics.refresh(redis, consumer.stream_names, consumer.group, read_outbox)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/healthz", tags=["operations"], summary="Liveness and backlog of this service",
             responses={200: {"description": "the service, its store and Redis answer"},
                        503: {"description": "degraded: the same report, naming what does not answer"},
                        **BODY_TOO_LARGE})
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
        if report["redis"] == "ok":
            try:
                report["redis_memory"] = redis_memory(await redis.info("memory"))
            except Exception as exc:  # noqa: BLE001 - a user without INFO (an older ACL): reported, not degraded
                report["redis_memory"] = {"error": f"{exc}"[:300]}
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

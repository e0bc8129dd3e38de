"""The outbox relay: publishes rows that services committed with their state changes.

At-least-once: a row is deleted only after its XADD succeeded. A crash between
the two publishes it again; consumers drop the repeat by (source, id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .publishing import publish_raw
from .store import forget_outbox, take_outbox
from .streams import Streams

log = logging.getLogger("serialtrack.outbox")


class OutboxRelay:
    def __init__(self, service: str, engine: Engine, redis: aioredis.Redis, streams: Streams,
                 interval_s: float = 0.5, batch: int = 1000, on_published: Callable[[int], None] | None = None):
        self.service = service
        self.engine = engine
        self.redis = redis
        self.streams = streams
        self.interval_s = interval_s
        self.batch = batch
        self.on_published = on_published  # counts them (shared/metrics.py)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.service}-outbox-relay")

    async def stop(self) -> None:
        # A flag, not Task.cancel(): on Python 3.11 asyncio.wait_for can swallow a cancellation
        # that races with its inner wait, which left stop() waiting forever.
        self._stopping = True
        self._wake.set()
        if self._task:
            try:
                async with asyncio.timeout(10):
                    await self._task
            except TimeoutError:  # stuck on Redis or the store: give up, rows stay in the outbox
                self._task.cancel()
        try:
            await self.flush()  # publish what the last batches committed
        except Exception as exc:  # noqa: BLE001 - rows stay in the outbox for the next start
            log.warning("%s: outbox not flushed at shutdown (%r); it will be on the next start", self.service, exc)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - Redis or the store is down: retry later
                log.warning("%s: outbox relay failed (%r); retrying", self.service, exc)
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def flush(self) -> int:
        published = 0
        while True:
            rows = await asyncio.to_thread(self._take)
            if not rows:
                return published
            await publish_raw(self.redis, [(self.streams.for_type(t), body) for _, t, body in rows])
            await asyncio.to_thread(self._forget, [seq for seq, _, _ in rows])
            published += len(rows)
            if self.on_published:
                self.on_published(len(rows))

    def _take(self):
        with Session(self.engine) as session:
            return take_outbox(session, self.service, self.batch)

    def _forget(self, seqs):
        with Session(self.engine) as session, session.begin():
            forget_outbox(session, seqs)

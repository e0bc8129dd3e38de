"""At-least-once, idempotent consumption of Redis Streams through FastStream.

FastStream's defaults do not give at-least-once delivery (docs/consumer.md: what
they do, what this module does instead, and the test of each guarantee), so every
service consumes through this module, which arranges it:

- groups are created at id 0 before the broker starts, so a service deployed
  after events were published still gets them;
- per stream two FastStream subscribers share the group: a batch reader
  (XREADGROUP, ``max_records`` = batch size) and a reclaimer (XAUTOCLAIM of
  entries idle longer than ``claim_idle_ms``: a crashed consumer's entries);
- acks are manual: XACK only after the service's transaction (state change +
  inbox rows + outbox rows) committed;
- entries that can never apply (not JSON, bad envelope, unknown type, bad
  data) go to the dead-letter stream with the reason and the original entry,
  then are acked: XADD as the service's writer user, XACK as its reader user
  (shared/acl.py: Redis 6.2 cannot give one user XACK on some streams and XADD
  on others). A crash between the two redelivers the entry, which is
  dead-lettered again: a duplicate in the dead-letter stream, with the same
  ``stream`` and ``entry_id`` fields;
- one writer task per process applies what every subscriber fetched in one
  transaction (group commit): entries of different streams that arrived
  together are applied together, sorted by event time, so a backlog of
  receipts and sales is not applied sales-first;
- a batch's transaction first takes the advisory locks of the units it folds (PostgreSQL;
  shared/unit_locks.py), so several processes of one service end where one would; a batch that
  loses a race anyway (a deadlock, a unique key) is retried at once, up to ``RETRIES`` times, and
  counted (``serialtrack_apply_retries``);
- a failing batch is split so one bad event does not hold back the others;
  an event whose handler keeps failing is dead-lettered after
  ``max_deliveries`` deliveries; infrastructure failures (database down) are
  never counted against that budget: they back off and retry, and give the
  delivery back (XCLAIM RETRYCOUNT);
- the delivery count is checked on every delivery before applying: an entry
  delivered more than ``max_deliveries`` times is dead-lettered as
  ``crashed_consumer`` with its count. That is the entry whose apply killed
  the process (an OOM kill, a segfault) each time: no exception was ever
  raised for it, and without this check it would crash-loop the service
  forever. New entries (XREADGROUP ``>``) are at delivery 1; the reclaimer's
  XAUTOCLAIM counts one more, read back with XPENDING on the claimed id only.
  A redelivered entry is applied alone, after the batch it came with, so a
  crash counts against it and not against its neighbours;
- each committed batch is counted (shared/metrics.py) and logged in one line
  at INFO, not one per event; a traced event's apply carries its trace
  (shared/tracing.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import NamedTuple

import redis.asyncio as aioredis
from faststream import AckPolicy
from faststream.message import StreamMessage
from faststream.redis import RedisBroker, StreamSub
from redis.exceptions import ResponseError
from redis.typing import StreamIdT
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from . import unit_locks
from .envelope import MAX_ENTRY_BYTES, Event, InvalidEvent, decode_entry
from .keys import registry_path
from .metrics import ServiceMetrics
from .settings import Settings
from .store import OUTBOX_ROWS, Conflict, claim_inbox, is_transient
from .streams import group_for
from .tracing import TRACEPARENT, apply_span, trace_id_of
from .trust import Trust
from .unit_locks import LockPlanner

log = logging.getLogger("serialtrack.consumer")

ApplyEvents = Callable[[Session, list[Event]], None]
# Work a service does on its own store that no event asks for (inventory: manifests whose deadline
# passed), one transaction per call, between batches; returns how much it did (0: nothing to do).
Housekeeping = Callable[[Session], int]

TRANSIENT_BACKOFF_S = 1.0

# Test hook, not a setting: a pause between a batch's commit and its XACK, so crash tests can kill a
# service inside that window and prove it (tests/integration/test_delivery_guarantees.py, R1).
# Unset in production: docs/consumer.md, "Test hooks".
HOLD_ACK_ENV = "SERIALTRACK_TEST_HOLD_ACK_MS"
# Test hook, not a setting: the process SIGKILLs itself while applying the event with this id (inside
# the transaction, as an OOM kill would), so a test can show that such an entry is dead-lettered as
# ``crashed_consumer`` instead of crash-looping the service (tests/integration/test_crashed_consumer.py).
# Unset in production: docs/consumer.md, "Test hooks".
CRASH_ON_ENV = "SERIALTRACK_TEST_CRASH_ON_EVENT_ID"


class Applied(NamedTuple):
    """What a committed batch did."""

    new_events: int  # not applied before (the rest were duplicates)
    outgoing: int  # events it added to the outbox
    by_type: dict[str, int]  # the new events per type
    event_times: list[float]  # the new events' times (Unix seconds): their lag is measured at commit
    trace_ids: list[str]  # traces of the new events that carried one
    conflicts: Sequence[Conflict] = ()  # applied (source, id)s with other content: to dead-letter, not apply


def _by_trace(events: list[Event]) -> list[tuple[str | None, str | None, list[Event]]]:
    """(traceparent, tracestate, events) groups: the untraced events together, first, then each
    trace's. Almost every batch is a single untraced group: one pass over it decides that."""
    if not any(e.envelope.traceparent for e in events):
        return [(None, None, events)]
    groups: dict[str | None, tuple[str | None, str | None, list[Event]]] = {}
    for event in events:
        tp = event.envelope.traceparent
        key = trace_id_of(tp) if tp else None
        if key not in groups:
            groups[key] = (tp, event.envelope.tracestate, [])
        groups[key][2].append(event)
    return sorted(groups.values(), key=lambda group: group[0] is not None)


class EventProcessor:
    """Applies a batch in one local transaction: the batch's unit locks, inbox dedupe, the service's
    change, its outbox rows.

    Give it ``for_writing(engine)``: on SQLite that takes the write lock at BEGIN. On PostgreSQL the
    transaction first takes the locks ``locks`` plans for the batch (shared/unit_locks.py), so
    processes of one service never interleave their read-fold-write on a unit.
    """

    def __init__(self, service: str, engine: Engine, apply: ApplyEvents,
                 locks: LockPlanner = unit_locks.units_of, metrics: ServiceMetrics | None = None,
                 housekeeping: Housekeeping | None = None):
        self.service = service
        self.housekeeping = housekeeping
        self.engine = engine
        self.apply = apply
        self._crash_on = os.environ.get(CRASH_ON_ENV) or None  # the test hook above
        self.locks = locks
        self.metrics = metrics

    def process(self, events: Sequence[Event]) -> Applied:
        """Runs in a worker thread (blocking I/O).

        Events of one trace are applied by one call of the service's apply (still in the batch's
        one transaction), so the outbox rows that call adds carry that trace and no other."""
        locks = self.locks(events)
        for attempt in range(1, RETRIES + 1):
            try:
                with Session(self.engine) as session, session.begin():
                    unit_locks.take(session, locks)
                    claim = claim_inbox(session, self.service, events)
                    fresh = claim.fresh
                    if self._crash_on and any(event.id == self._crash_on for event in fresh):
                        os.kill(os.getpid(), signal.SIGKILL)  # the test hook: die while applying
                    groups = _by_trace(fresh) if fresh else []
                    for traceparent, tracestate, group in groups:
                        with apply_span(self.service, traceparent, tracestate, len(group)) as carried:
                            session.info[TRACEPARENT] = carried
                            self.apply(session, group)
                    outgoing = session.info.get(OUTBOX_ROWS, 0)
                return Applied(len(fresh), outgoing, Counter(e.type for e in fresh),
                               [e.time.timestamp() for e in fresh],
                               [trace_id_of(tp) for tp, _, _ in groups if tp], claim.conflicts)
            except DBAPIError as exc:
                # A concurrent writer (another process of this service) won a race on a row
                # (integrity), or PostgreSQL broke a lock cycle (deadlock) or refused a snapshot
                # (serialization): the retry sees its commit. The unit locks make these rare; a real
                # constraint bug fails every attempt and is raised.
                kind = _race(exc)
                if kind is None or attempt == RETRIES:
                    raise
                if self.metrics is not None:
                    self.metrics.retried(kind)
                time.sleep(random.uniform(0, 0.01 * attempt))  # apart, so the two do not meet again
        raise AssertionError("unreachable")


    def housekeep(self) -> int:
        """The service's housekeeping in one transaction (a worker thread); 0 when it has none."""
        if self.housekeeping is None:
            return 0
        with Session(self.engine) as session, session.begin():
            done = self.housekeeping(session)
            outgoing = session.info.get(OUTBOX_ROWS, 0)
        return done + outgoing


RETRIES = 5  # attempts of a batch that lost a race (EventProcessor.process)
HOUSEKEEPING_STEPS = 100  # housekeeping transactions in one round at most (events waiting stop it sooner)


def _race(exc: DBAPIError) -> str | None:
    """What kind of lost race ``exc`` is, or None when it is not one."""
    if isinstance(exc, IntegrityError):
        return "integrity"
    code = getattr(exc.orig, "sqlstate", None)
    return {"40P01": "deadlock", "40001": "serialization"}.get(code or "")


@dataclass(slots=True)
class _Entry:
    stream: str
    entry_id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1  # times Redis delivered it, this delivery included
    event: Event | None = None

    @property
    def redelivered(self) -> bool:
        return self.deliveries > 1


async def _entries_as_they_are(message, _default_parser) -> StreamMessage:
    """Our entries carry our own wire format (shared/envelope.py): skip FastStream's per-entry
    body decoding and re-encoding, which costs more than our whole decode."""
    return StreamMessage(raw_message=message, body=b"")


async def _the_raw_batch(message: StreamMessage, _default_decoder) -> dict:
    """What the handler gets: XREADGROUP's entry ids and field maps, as redis-py returned them."""
    return message.raw_message


class StreamConsumer:
    def __init__(
        self,
        *,
        service: str,
        event_types: Sequence[str],
        processor: EventProcessor,
        redis: aioredis.Redis,
        settings: Settings,
        on_outgoing: Callable[[], None] | None = None,
        metrics: ServiceMetrics | None = None,
        writer: aioredis.Redis | None = None,
    ):
        self.service = service
        self.group = group_for(service)
        self.event_types = list(event_types)
        self.processor = processor
        self.redis = redis  # reads, acks, claims: the service's reader user
        self.writer = writer or redis  # XADDs (dead letters): the service's writer user
        self.settings = settings
        self.streams = settings.streams
        self.consumer_name = settings.consumer_name(service)
        self.dead_letter_stream = self.streams.dead_letters(service)
        self.on_outgoing = on_outgoing  # called after a batch that added outgoing events committed
        self.metrics = metrics or ServiceMetrics(service)
        self.trust = Trust(self.streams, registry_path(settings.data_dir), settings.require_signatures)
        # One writer per process: batches of different streams would otherwise fight over
        # the database (SQLite allows one writer) and over the same units.
        self._waiting: list[tuple[list[_Entry], asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task | None = None
        self._hold_ack_s = float(os.environ.get(HOLD_ACK_ENV) or 0) / 1000
        # Erasure (shared/erasure.py): dead letters are rewritten without the values the service
        # erased before they are written (blocking: runs in a worker thread). Failing, it raises:
        # the entries stay pending rather than be dead-lettered with an erased customer in them.
        self.scrub_dead_letters: Callable[[list[dict[str, str]]], list[dict[str, str]]] | None = None

    def start(self) -> None:
        """Start the writer. Call before the broker starts; stop it after the broker stopped."""
        self._writer = asyncio.create_task(self._write_loop(), name=f"{self.service}-writer")

    async def stop(self) -> None:
        if self._writer:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
        for _, done in self._waiting:  # not applied, not acked: they stay pending for the next start
            if not done.done():
                done.cancel()
        self._waiting.clear()

    @property
    def stream_names(self) -> list[str]:
        return [self.streams.for_type(t) for t in self.event_types]

    async def ensure_groups(self) -> None:
        """Create each group at id 0 (not FastStream's "$"): history published before us is ours too."""
        for stream in self.stream_names:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def attach(self, broker: RedisBroker) -> None:
        s = self.settings
        for stream in self.stream_names:
            reader = StreamSub(
                stream, group=self.group, consumer=self.consumer_name,
                batch=True, max_records=s.batch_size, polling_interval=s.poll_ms,
            )
            reclaimer = StreamSub(
                stream, group=self.group, consumer=self.consumer_name,
                batch=True, max_records=1, polling_interval=max(s.poll_ms, min(s.claim_idle_ms // 2, 1000)),
                min_idle_time=s.claim_idle_ms,
            )
            for sub, title, linger in ((reader, stream, True), (reclaimer, f"{stream}:reclaim", False)):
                broker.subscriber(stream=sub, ack_policy=AckPolicy.MANUAL, parser=_entries_as_they_are,
                                  decoder=_the_raw_batch,
                                  title=f"{self.service}:{title}")(self._handler(stream, linger))

    def _handler(self, stream: str, linger: bool):
        linger_s = self.settings.linger_ms / 1000 if linger else 0
        full = self.settings.batch_size

        reclaimer = not linger

        async def handle(raw: dict) -> None:
            ids = [i.decode() if isinstance(i, bytes) else i for i in raw["message_ids"]]
            data = raw["data"]
            entries = [_Entry(stream, i, f) for i, f in zip(ids, data, strict=True)]
            if reclaimer and ids:
                self.metrics.reclaimed(stream, len(ids))
                # XAUTOCLAIM counted this delivery; the reader's XREADGROUP ">" only ever delivers
                # new entries, at delivery 1 (the default).
                counts = await self.delivery_counts(stream, ids)
                for entry in entries:
                    entry.deliveries = counts.get(entry.entry_id, 1)
            await self.handle_entries(stream, entries)
            if linger_s and len(ids) < full:
                # A trickle: let the next events gather. Each read and each transaction costs about
                # a millisecond of CPU whatever its size; read at once after every few events and
                # a few hundred events/s keep a core busy (and the other services share it).
                await asyncio.sleep(linger_s)

        return handle

    async def handle_entries(self, stream: str, entries: list[_Entry]) -> None:
        good: list[_Entry] = []
        poison: list[tuple[_Entry, str, str]] = []
        limit = self.settings.max_deliveries
        for entry in entries:
            if entry.deliveries > limit:
                # Every earlier delivery ended without an ack and without a handler error: the
                # process died while applying it. Applying it again would kill it again.
                detail = (f"delivered {entry.deliveries} times (limit {limit}, SERIALTRACK_MAX_DELIVERIES) "
                          "without being applied or failing: the consumer died while applying it "
                          "(killed, out of memory, crashed)")
                poison.append((entry, "crashed_consumer", detail))
                continue
            try:
                entry.event = self.trust.check(entry.stream, decode_entry(entry.fields, entry.entry_id), entry.fields)
                good.append(entry)
            except InvalidEvent as exc:
                poison.append((entry, exc.reason, exc.detail))
            except Exception as exc:  # noqa: BLE001 - a decoder bug must not wedge the stream either
                poison.append((entry, "undecodable", f"{type(exc).__name__}: {exc}"[:2000]))
        if poison:
            # Invalid input skips retries: no delivery can fix it.
            await self._dead_letter(poison)
        if good:
            # Hand the entries to the writer and wait: FastStream reads this stream again only
            # after we return, which is the backpressure.
            done = asyncio.get_running_loop().create_future()
            self._waiting.append((good, done))
            self._wake.set()
            await done

    async def _write_loop(self) -> None:
        interval = self.settings.housekeeping_s
        last_housekeeping = time.monotonic()
        while True:
            if time.monotonic() - last_housekeeping >= interval:
                # Between batches, every ``interval`` seconds, busy or idle: the writer does the
                # service's housekeeping (shared/service.py ServiceDefinition.housekeeping).
                await self._housekeep()
                last_housekeeping = time.monotonic()
            try:
                await asyncio.wait_for(self._wake.wait(),
                                       timeout=max(interval - (time.monotonic() - last_housekeeping), 0.001))
            except TimeoutError:
                continue
            self._wake.clear()
            work, self._waiting = self._waiting, []
            if not work:
                continue
            try:
                entries = [entry for entries, _ in work for entry in entries]
                await self._apply([entry for entry in entries if not entry.redelivered])
                # A redelivered entry may be one whose apply killed the process: alone, a kill counts
                # against it only, least-delivered first.
                for entry in sorted((e for e in entries if e.redelivered), key=lambda e: e.deliveries):
                    await self._apply([entry])
            except Exception as exc:  # noqa: BLE001 - e.g. Redis down during XACK: entries stay pending
                log.warning("%s: could not finish a batch (%r); its entries stay pending", self.service, exc)
            finally:
                for _, done in work:
                    if not done.done():
                        done.set_result(None)

    async def _housekeep(self) -> None:
        """Housekeeping in steps of one transaction each, until it has nothing left or events wait."""
        if self.processor.housekeeping is None:
            return
        try:
            for _ in range(HOUSEKEEPING_STEPS):
                done = await asyncio.to_thread(self.processor.housekeep)
                if done and self.on_outgoing:
                    self.on_outgoing()
                if not done or self._waiting:
                    break
        except Exception as exc:  # noqa: BLE001 - a store outage: the next round tries again
            log.warning("%s: housekeeping failed (%r); it runs again in %.0f s", self.service, exc,
                        self.settings.housekeeping_s)

    async def _apply(self, entries: list[_Entry]) -> None:
        if not entries:
            return
        started = perf_counter()
        try:
            # Every entry handed to the writer was decoded (handle_entries set its event).
            applied = await asyncio.to_thread(self.processor.process, [e.event for e in entries if e.event is not None])
        except Exception as exc:  # noqa: BLE001 - every failure is handled below, none escapes
            if is_transient(exc):
                self.metrics.failed("store_unavailable")
                log.warning("%s: store unavailable (%s); %d entries stay pending", self.service, exc, len(entries))
                await self._give_back_deliveries(entries)
                await asyncio.sleep(TRANSIENT_BACKOFF_S)
                return
            self.metrics.failed("handler")
            if len(entries) > 1:
                for entry in entries:  # isolate the event that fails; the rest apply
                    await self._apply([entry])
                return
            await self._failed(entries[0], exc)
            return
        seconds = perf_counter() - started
        if applied.conflicts:
            refused = {id(conflict.event): conflict for conflict in applied.conflicts}
            await self._dead_letter([(entry, "conflicting_duplicate", refused[id(entry.event)].describe())
                                     for entry in entries if id(entry.event) in refused])
            entries = [entry for entry in entries if id(entry.event) not in refused]
        if self._hold_ack_s:
            await asyncio.sleep(self._hold_ack_s)  # the test hook above: committed, not yet acked
        await self._ack(entries)
        if applied.outgoing and self.on_outgoing:  # the relay publishes them now, not at its next tick
            self.on_outgoing()
        self.metrics.batch_applied(len(entries), applied.by_type, applied.event_times, seconds)
        if log.isEnabledFor(logging.INFO):
            streams = len({e.stream for e in entries})
            log.info("%s: applied %d events (%d new, %d already applied) from %d stream(s) in %.1f ms; "
                     "%d outgoing", self.service, len(entries), applied.new_events,
                     len(entries) - applied.new_events, streams, seconds * 1000, applied.outgoing,
                     extra={"trace_ids": applied.trace_ids,
                            "batch": {"events": len(entries), "new": applied.new_events, "streams": streams,
                                      "ms": round(seconds * 1000, 1), "outgoing": applied.outgoing}})

    async def _ack(self, entries: list[_Entry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        await pipe.execute()

    async def _failed(self, entry: _Entry, exc: Exception) -> None:
        assert entry.event is not None  # only decoded entries are applied, so only they fail
        deliveries = entry.deliveries
        traced = [trace_id_of(entry.event.envelope.traceparent)] if entry.event.envelope.traceparent else []
        if deliveries >= self.settings.max_deliveries:
            log.error("%s: %s failed %d times, dead-lettered: %r", self.service, entry.entry_id, deliveries, exc,
                      extra={"trace_ids": traced})
            await self._dead_letter([(entry, "handler_failed", f"{type(exc).__name__}: {exc}"[:2000])])
        else:
            log.warning("%s: %s failed (delivery %d of %d), will retry: %r",
                        self.service, entry.entry_id, deliveries, self.settings.max_deliveries, exc,
                        extra={"trace_ids": traced})

    async def delivery_counts(self, stream: str, entry_ids: list[str]) -> dict[str, int]:
        """How many times each entry was delivered: XPENDING over the ids' span only (the reclaimer
        claims one entry at a time, so that is one entry)."""
        span = sorted(entry_ids, key=lambda i: tuple(int(part) for part in i.split("-")))
        pending = await self.redis.xpending_range(stream, self.group, min=span[0], max=span[-1], count=10_000)
        counts = {}
        for item in pending:
            entry_id = item["message_id"]
            counts[entry_id.decode() if isinstance(entry_id, bytes) else entry_id] = int(item["times_delivered"])
        return {entry_id: counts[entry_id] for entry_id in entry_ids if entry_id in counts}

    async def _give_back_deliveries(self, entries: list[_Entry]) -> None:
        """A delivery that met an unavailable store says nothing about the entry: set its count
        back (XCLAIM RETRYCOUNT, JUSTID does not count), so an outage longer than
        ``max_deliveries`` reclaims never dead-letters an entry as ``crashed_consumer``."""
        by_count: dict[tuple[str, int], list[StreamIdT]] = {}
        for entry in entries:
            by_count.setdefault((entry.stream, entry.deliveries - 1), []).append(entry.entry_id)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for (stream, before), ids in by_count.items():
                pipe.xclaim(stream, self.group, self.consumer_name, 0, ids, retrycount=before, justid=True)
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis down too: the count stays one higher, nothing else
            log.warning("%s: could not give back %d deliveries (%r)", self.service, len(entries), exc)

    async def _dead_letter(self, items: list[tuple[_Entry, str, str]]) -> None:
        now = datetime.now(UTC).isoformat()
        # Copy first, ack after, as two users (see the module docstring): a crash in between
        # dead-letters the entry again, it never loses it.
        letters: list[dict[str, str]] = []
        acks: dict[str, list[str]] = {}
        for entry, reason, detail in items:
            original = {
                k.decode("utf-8", "replace"): v[:MAX_ENTRY_BYTES // 10].decode("utf-8", "replace")
                for k, v in entry.fields.items()
            }
            letters.append({
                "stream": entry.stream,
                "entry_id": entry.entry_id,
                "group": self.group,
                "reason": reason,
                "error": detail,
                "deliveries": str(entry.deliveries),
                "failed_at": now,
                "original": json.dumps(original),
            })
            acks.setdefault(entry.stream, []).append(entry.entry_id)
        if self.scrub_dead_letters is not None:
            letters = await asyncio.to_thread(self.scrub_dead_letters, letters)
        pipe = self.writer.pipeline(transaction=False)
        for letter in letters:
            pipe.xadd(self.dead_letter_stream, letter)  # type: ignore[arg-type]
        await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in acks.items():
            pipe.xack(stream, self.group, *ids)
        await pipe.execute()
        self.metrics.dead_lettered(reason for _, reason, _ in items)
        # One line per batch: the entries and their errors are in the dead-letter stream.
        reasons = Counter(reason for _, reason, _ in items)
        first, _, first_detail = items[0]
        log.warning("%s: dead-lettered %d entries from %s to %s (%s); first: %s: %s", self.service, len(items),
                    ", ".join(sorted(acks)), self.dead_letter_stream, ", ".join(f"{r} x{n}" for r, n in sorted(reasons.items())),
                    first.entry_id, first_detail[:300])

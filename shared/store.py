"""Store plumbing every service shares: engines, the inbox, the outbox, set-based writes.

Each service owns its database and its tables; the ``inbox`` and ``outbox``
tables carry a ``service`` column so that services may also share one
database without stepping on each other.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, overload

from sqlalchemy import Engine, Table, create_engine, delete, event, func, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from .envelope import Envelope, Event, content_digest
from .tracing import TRACEPARENT

CHUNK = 500  # keys per IN (...) query: well under SQLite's and PostgreSQL's parameter limits


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime. SQLModel's UTCDateTime columns already return
    aware values; this also covers times read from raw SQL or text."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def normalize_database_url(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


MIN_SQLITE = (3, 35)  # INSERT ... RETURNING (the inbox claim); Python 3.11's own builds bundle newer


def make_engine(url: str) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise RuntimeError(
                f"serialtrack needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; this Python uses "
                f"{sqlite3.sqlite_version}. Use a Python build with a newer SQLite, or PostgreSQL "
                "(set the service's database URL)."
            )
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # hide_parameters: a failed statement's message (logged, dead-lettered) must not carry the
        # customer ids it was writing.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
            # We emit BEGIN ourselves (below): pysqlite emits none before a SELECT, so the two
            # queries of one read (a unit, then its history) would see two different commits.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            # Checkpoint the WAL every ~40 MB instead of ~4 MB: hot index pages are copied back
            # to the database once per checkpoint, so fewer checkpoints write fewer pages.
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Writers take the write lock up front (waiting up to busy_timeout) instead of failing
            # with SQLITE_BUSY when a read transaction later wants to write.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITES) else "BEGIN")

        return engine
    # Timestamps are stored as UTC without zone: make the session zone UTC whatever the server's.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True,
                         connect_args={"options": "-c timezone=UTC"})


WRITES = "serialtrack_writes"


def for_writing(engine: Engine) -> Engine:
    """The engine for transactions that write (the consumer, the relay)."""
    return engine.execution_options(**{WRITES: True})


def for_reading(engine: Engine) -> Engine:
    """The engine for the read APIs: every query of one request sees the same snapshot
    (SQLite: one transaction in WAL mode; PostgreSQL: REPEATABLE READ)."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ")
    return engine


def is_transient(exc: BaseException) -> bool:
    """Failures of the infrastructure, not of the event: retry without counting them as poison."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class InboxRow(SQLModel, table=True):
    """'This service applied event (source, id)': written in the same transaction as the change."""

    __tablename__ = "inbox"
    # Key order (service, event_id, source): the dedupe query looks up a batch by event id.
    service: str = Field(primary_key=True, max_length=32)
    event_id: str = Field(primary_key=True, max_length=128)
    source: str = Field(primary_key=True, max_length=256)
    event_type: str = Field(max_length=64)
    event_time: datetime
    processed_at: datetime
    # content_digest of the applied envelope: the same (source, id) saying something else is refused.
    # None on rows written before 0.2.0.
    digest: str | None = Field(default=None, max_length=32)


class OutboxRow(SQLModel, table=True):
    """An outgoing event committed with the state change that caused it; the relay publishes it."""

    __tablename__ = "outbox"
    seq: int | None = Field(default=None, primary_key=True)
    service: str = Field(index=True, max_length=32)
    event_type: str = Field(max_length=64)
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    envelope: str
    created_at: datetime


class ErasedRow(SQLModel, table=True):
    """A customer id, or a receipt id of their purchases, this service erased (shared/erasure.py): kept
    as its pseudonym only, so that a later event naming it is pseudonymized on arrival."""

    __tablename__ = "erased_values"
    service: str = Field(primary_key=True, max_length=32)
    pseudonym: str = Field(primary_key=True, max_length=32)
    kind: str = Field(max_length=16)  # customer | receipt
    erasure_id: str = Field(max_length=64)  # the request that erased it (or the first one)
    erased_at: datetime


class VoidRow(SQLModel, table=True):
    """An ``event.voided`` this service recorded (shared/voids.py): the voided event's (source, id)
    is withdrawn from every fold, whether it arrived before the void or arrives after it. Keyed by
    the voided event, id first like the inbox: the first void of an event wins, a second changes
    nothing; each batch looks its events up by id."""

    __tablename__ = "voids"
    service: str = Field(primary_key=True, max_length=32)
    voided_id: str = Field(primary_key=True, max_length=128)
    voided_source: str = Field(primary_key=True, max_length=256)
    voided_type: str = Field(max_length=64)
    manufacturer: str = Field(max_length=64)
    void_source: str = Field(max_length=256)
    void_id: str = Field(max_length=128)
    void_time: datetime
    reason: str
    recorded_at: datetime


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a SQLModel table class (SQLModel sets ``__table__`` but does not declare it)."""
    table = sa_inspect(model).local_table
    assert isinstance(table, Table)
    return table


PLUMBING_TABLES: list[Table] = [table_of(InboxRow), table_of(OutboxRow), table_of(ErasedRow), table_of(VoidRow)]


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


_COMPILED: dict[tuple, tuple[str, tuple[str, ...] | None]] = {}

# On conflict, the SET clause as a function of (the excluded row, the table's columns); None: every
# given column that is not a key takes the new value.
ConflictSet = Callable[[Any, Any], dict[str, Any]]


def _compiled_insert(connection, table: Table, columns: tuple[str, ...], conflict: str,
                     keys: Sequence[str], on_conflict: ConflictSet | None = None,
                     shape: str = "") -> tuple[str, tuple[str, ...] | None]:
    """(SQL text, positional parameter order or None for named parameters), compiled once per
    shape (``shape`` names a custom ``on_conflict``, which must not vary under one name)."""
    dialect = connection.dialect
    cache_key = (dialect.name, table.name, columns, conflict, tuple(keys), shape)
    compiled = _COMPILED.get(cache_key)
    if compiled is None:
        stmt = (postgresql if dialect.name == "postgresql" else sqlite).insert(table)
        if conflict == "ignore":
            stmt = stmt.on_conflict_do_nothing()
        elif conflict == "update":
            set_ = (on_conflict(stmt.excluded, table.c) if on_conflict
                    else {c: stmt.excluded[c] for c in columns if c not in keys})
            stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=set_)
        sql = stmt.compile(dialect=dialect, column_keys=list(columns))
        compiled = _COMPILED[cache_key] = (str(sql), tuple(sql.positiontup) if sql.positional else None)
    return compiled


def _write_many(session: Session, table: Table, rows: Sequence[dict[str, Any]], conflict: str,
                keys: Sequence[str] = ()) -> None:
    """One INSERT executed for all rows through the driver's executemany.

    Hot path: SQLAlchemy's per-row parameter processing costs ~15 us a row, more than the
    database itself, so the statement is compiled once per shape and the rows go to the
    driver as plain values (on SQLite datetimes become UTC text through ``_sqlite_time``).
    """
    if not rows:
        return
    connection = session.connection()
    sql_text, order = _compiled_insert(connection, table, tuple(rows[0]), conflict, keys)
    if order is None:  # named parameters (psycopg): the driver adapts every value itself
        connection.exec_driver_sql(sql_text, list(rows))
        return
    getter = itemgetter(*order)
    if len(order) == 1:
        connection.exec_driver_sql(sql_text, [(getter(row),) for row in rows])
    else:
        connection.exec_driver_sql(sql_text, [getter(row) for row in rows])


def insert_tuples(session: Session, table: Table, columns: Sequence[str], rows: Sequence[tuple],
                  conflict: str = "error", keys: Sequence[str] = (), on_conflict: ConflictSet | None = None,
                  shape: str = "") -> None:
    """Like insert_rows (or upsert_rows, with ``conflict="update"`` and ``keys``) for rows already
    built as tuples in ``columns`` order: the cheapest path for very many rows (no dict per row).
    ``on_conflict`` (named by ``shape``) replaces the default SET clause of an upsert."""
    if not rows:
        return
    connection = session.connection()
    columns = tuple(columns)
    sql_text, order = _compiled_insert(connection, table, columns, conflict, keys, on_conflict, shape)
    if order is None:
        connection.exec_driver_sql(sql_text, [dict(zip(columns, row, strict=True)) for row in rows])
    elif order == columns:
        connection.exec_driver_sql(sql_text, list(rows))
    else:
        getter = itemgetter(*[columns.index(c) for c in order])
        connection.exec_driver_sql(sql_text, [getter(row) for row in rows])


_SQLITE_TIMES: dict[datetime, str] = {}


def _sqlite_time(value: datetime) -> str:
    """A datetime as SQLAlchemy writes it on SQLite (UTC, no zone): so rows written here and rows
    written through the ORM compare and sort alike. Memoized: a batch repeats the same few times."""
    text = _SQLITE_TIMES.get(value)
    if text is None:
        if len(_SQLITE_TIMES) > 50_000:
            _SQLITE_TIMES.clear()
        utc = value.astimezone(UTC) if value.utcoffset() else value
        text = _SQLITE_TIMES[value] = utc.isoformat(sep=" ", timespec="microseconds")[:26]
    return text


# Datetimes handed straight to the sqlite3 driver (the hot path above) are written by this adapter.
sqlite3.register_adapter(datetime, _sqlite_time)
# The driver binds only exact int, float, str and bytes without a look-up; for any other value it
# searches an adapter and then probes the value for ``__conform__`` (a failed attribute look-up
# each). A history row carries a dozen NULLs: C callables as adapters save ~0.2 us per NULL or bool.
sqlite3.register_adapter(type(None), dict[None, None]().get)  # None -> None
sqlite3.register_adapter(bool, int)


def driver_rows(session: Session, sql: str, params: Sequence[Any] = ()) -> Sequence[tuple]:
    """A SELECT written with ``?`` placeholders, run straight on the driver's cursor: rows as plain
    tuples. Hot path only (loading 100,000 units for a recall): SQLAlchemy's row and type processing
    would cost more than the query. Times come back as the driver gives them: see ``read_time``."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        sql = sql.replace("?", "%s")
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, tuple(params))
        return cursor.fetchall()
    finally:
        cursor.close()


def driver_execute_many(session: Session, sql: str, rows: Sequence[tuple]) -> None:
    """A statement written with ``?`` placeholders, executed once per row through the driver's
    executemany (the write-side sibling of ``driver_rows``)."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        sql = sql.replace("?", "%s")
    connection.exec_driver_sql(sql, list(rows))


@lru_cache(maxsize=65_536)
def _time_from_sqlite(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@overload
def read_time(value: datetime | str) -> datetime: ...
@overload
def read_time(value: None) -> None: ...
def read_time(value: datetime | str | None) -> datetime | None:
    """A time read by ``driver_rows``: UTC text on SQLite (as ``_sqlite_time`` wrote it), a datetime
    on PostgreSQL."""
    if isinstance(value, str):
        return _time_from_sqlite(value)
    return as_utc(value)


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """One executemany INSERT for the whole set (rows share their keys)."""
    _write_many(session, table, rows, "error")


def insert_ignore(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING (any unique constraint)."""
    _write_many(session, table, rows, "ignore")


def upsert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other given column. Rows must be unique by key
    (PostgreSQL refuses a key twice in one statement)."""
    _write_many(session, table, rows, "update", keys)


_INBOX_COLUMNS = "service, event_id, source, event_type, event_time, processed_at, digest"


@dataclass(frozen=True, slots=True)
class Conflict:
    """An event whose ``(source, id)`` names an event this service applied (or is applying in the same
    batch) with other content: a producer reused an id, or somebody forged one. Never applied."""

    event: Event
    applied_type: str
    applied_time: datetime
    applied_digest: str
    digest: str

    def describe(self) -> str:
        return (f"({self.event.source}, {self.event.id}) was already applied with other content: applied "
                f"{self.applied_type} at {self.applied_time.isoformat()} (digest {self.applied_digest}); this "
                f"one is {self.event.type} at {self.event.time.isoformat()} (digest {self.digest})")


@dataclass(frozen=True, slots=True)
class InboxClaim:
    fresh: list[Event]  # to apply: never applied by this service
    conflicts: list[Conflict]  # to dead-letter: an applied (source, id) with other content


def claim_inbox(session: Session, service: str, events: Iterable[Event]) -> InboxClaim:
    """Record the events this service has not applied yet and return them; a redelivery of an
    applied event (same ``(source, id)``, same content) is dropped silently, one with other content
    is returned as a conflict.

    One statement per chunk inserts the batch's keys and returns those that were not there yet:
    the events to apply. The inbox rows commit or roll back with the state change, so "applied"
    and "recorded as applied" can never disagree. On PostgreSQL a concurrent consumer inserting
    the same key waits for the first transaction: if it commits, the key is skipped here. Only
    the keys already there are read back, for their digests: duplicates are rare, so the common
    batch costs one statement.
    """
    by_key: dict[tuple[str, str], list[tuple[Event, str]]] = {}
    for ev in events:
        by_key.setdefault(ev.key, []).append((ev, content_digest(ev)))
    if not by_key:
        return InboxClaim([], [])
    now = utcnow()
    rows = [(service, ev.id, ev.source, ev.type, ev.time, now, digest) for (ev, digest), *_ in by_key.values()]
    claimed: set[tuple[str, str]] = set()
    for part in chunks(rows):  # straight through the driver: this runs for every batch of every service
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(part))
        claimed.update(driver_rows(
            session, f"INSERT INTO inbox ({_INBOX_COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING "
                     "RETURNING source, event_id", [value for row in part for value in row]))
    # What each key already stands for: the first of the batch if it was claimed now, else what was applied.
    reference = {key: (copies[0][0].type, copies[0][0].time, copies[0][1])
                 for key, copies in by_key.items() if key in claimed}
    seen_before = [key for key in by_key if key not in claimed]
    if seen_before:
        reference.update(_applied(session, service, seen_before))
    conflicts: list[Conflict] = []
    for key, copies in by_key.items():
        applied_type, applied_time, applied_digest = reference[key]
        if applied_digest is None:  # applied before 0.2.0: nothing to compare with
            continue
        conflicts.extend(Conflict(ev, applied_type, applied_time, applied_digest, digest)
                         for ev, digest in copies if digest != applied_digest)
    return InboxClaim([copies[0][0] for key, copies in by_key.items() if key in claimed], conflicts)


def _applied(session: Session, service: str, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
    """(type, time, digest) of events this service applied, by key."""
    wanted, applied = set(keys), {}
    for part in chunks(keys):
        marks = ", ".join("?" * len(part))
        for source, event_id, event_type, event_time, digest in driver_rows(
                session, f"SELECT source, event_id, event_type, event_time, digest FROM inbox "
                         f"WHERE service = ? AND event_id IN ({marks})", [service, *(event_id for _, event_id in part)]):
            if (source, event_id) in wanted:
                applied[(source, event_id)] = (event_type, read_time(event_time), digest)
    return applied


OUTBOX_ROWS = "serialtrack_outbox_rows"  # session.info key: outgoing events this transaction added


def add_to_outbox(session: Session, service: str, events: Iterable[Event]) -> None:
    now = utcnow()
    # The trace of the events being applied (shared/tracing.py): what they cause belongs to it.
    traceparent = session.info.get(TRACEPARENT)
    rows = [
        {"service": service, "event_type": ev.type, "event_source": ev.source, "event_id": ev.id,
         "envelope": _traced(ev.envelope, traceparent).model_dump_json(exclude_none=True), "created_at": now}
        for ev in events
    ]
    insert_rows(session, table_of(OutboxRow), rows)
    session.info[OUTBOX_ROWS] = session.info.get(OUTBOX_ROWS, 0) + len(rows)


def _traced(envelope: Envelope, traceparent: str | None) -> Envelope:
    if traceparent is None or envelope.traceparent is not None:
        return envelope
    return envelope.model_copy(update={"traceparent": traceparent})


def outbox_backlog(session: Session, service: str) -> tuple[int, float | None]:
    """(unpublished rows, age in seconds of the oldest of them or None)."""
    table = table_of(OutboxRow)
    count, oldest = session.execute(
        select(func.count(), func.min(table.c.created_at)).where(table.c.service == service)).one()
    oldest = read_time(oldest)
    return int(count), (utcnow() - oldest).total_seconds() if oldest else None


def take_outbox(session: Session, service: str, limit: int) -> list[tuple[int, str, str]]:
    table = table_of(OutboxRow)
    rows = session.execute(
        select(table.c.seq, table.c.event_type, table.c.envelope)
        .where(table.c.service == service)
        .order_by(table.c.seq)
        .limit(limit)
    )
    return [(r.seq, r.event_type, r.envelope) for r in rows]


def forget_outbox(session: Session, seqs: Sequence[int]) -> None:
    table = table_of(OutboxRow)
    for part in chunks(list(seqs)):
        session.execute(delete(table).where(table.c.seq.in_(part)))


def refresh_statistics(session: Session, *tables: str) -> None:
    """PostgreSQL plans queries from table statistics. A table that grew by 100,000 rows in one batch
    (a range receipt, a recall campaign) is planned as if nearly empty until autovacuum analyzes it,
    up to a minute later, and meanwhile each batch's key lookups scan it whole (measured in the
    recalls service: 20,000 owner notices took 96 s instead of 3). Services call this after such a
    batch; SQLite needs nothing."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"ANALYZE {', '.join(tables)}"))


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)

"""Store plumbing every service shares: engines, the inbox, the outbox, set-based writes.

Each service owns its database and its tables; the ``inbox`` and ``outbox``
tables carry a ``service`` column so that services may also share one
database without stepping on each other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, delete, event, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from .envelope import Event

CHUNK = 500  # keys per IN (...) query: well under SQLite's and PostgreSQL's parameter limits


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def normalize_database_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def is_transient(exc: BaseException) -> bool:
    """Failures of the infrastructure, not of the event: retry without counting them as poison."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class InboxRow(SQLModel, table=True):
    """'This service applied event (source, id)': written in the same transaction as the change."""

    __tablename__ = "inbox"
    service: str = Field(primary_key=True, max_length=32)
    source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=128)
    event_type: str = Field(max_length=64)
    event_time: datetime
    processed_at: datetime = Field(index=True)


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


PLUMBING_TABLES: list[Table] = [InboxRow.__table__, OutboxRow.__table__]  # type: ignore[list-item]


def create_tables(engine: Engine, tables: Sequence[Table]) -> None:
    SQLModel.metadata.create_all(engine, tables=[*PLUMBING_TABLES, *tables])


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _dialect_insert(session: Session, table: Table):
    return (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert(table)


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """One executemany INSERT for the whole set."""
    if rows:
        session.execute(table.insert(), list(rows))


def insert_ignore(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING (any unique constraint)."""
    if rows:
        session.execute(_dialect_insert(session, table).on_conflict_do_nothing(), list(rows))


def upsert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other column. Rows must be unique by key
    (PostgreSQL refuses a key twice in one statement)."""
    if not rows:
        return
    stmt = _dialect_insert(session, table)
    update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    session.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=update), list(rows))


def claim_inbox(session: Session, service: str, events: Iterable[Event]) -> list[Event]:
    """Drop events this service already applied (or that repeat within the batch), record the rest.

    The inbox rows commit or roll back with the state change, so "applied" and
    "recorded as applied" can never disagree. A concurrent consumer inserting the
    same key makes the commit fail with an IntegrityError; the caller retries and
    the retry sees the key.
    """
    unique: dict[tuple[str, str], Event] = {}
    for ev in events:
        unique.setdefault(ev.key, ev)
    if not unique:
        return []
    table = InboxRow.__table__
    seen: set[tuple[str, str]] = set()
    keys = list(unique)
    for part in chunks(keys):
        rows = session.execute(
            select(table.c.source, table.c.event_id).where(
                table.c.service == service, tuple_(table.c.source, table.c.event_id).in_(part)
            )
        )
        seen.update((r.source, r.event_id) for r in rows)
    fresh = [ev for key, ev in unique.items() if key not in seen]
    now = utcnow()
    insert_rows(
        session,
        table,
        [
            {"service": service, "source": ev.source, "event_id": ev.id, "event_type": ev.type,
             "event_time": ev.time, "processed_at": now}
            for ev in fresh
        ],
    )
    return fresh


def add_to_outbox(session: Session, service: str, events: Iterable[Event]) -> None:
    now = utcnow()
    insert_rows(
        session,
        OutboxRow.__table__,
        [
            {"service": service, "event_type": ev.type, "event_source": ev.source, "event_id": ev.id,
             "envelope": ev.envelope.model_dump_json(exclude_none=True), "created_at": now}
            for ev in events
        ],
    )


def take_outbox(session: Session, service: str, limit: int) -> list[tuple[int, str, str]]:
    table = OutboxRow.__table__
    rows = session.execute(
        select(table.c.seq, table.c.event_type, table.c.envelope)
        .where(table.c.service == service)
        .order_by(table.c.seq)
        .limit(limit)
    )
    return [(r.seq, r.event_type, r.envelope) for r in rows]


def forget_outbox(session: Session, seqs: Sequence[int]) -> None:
    table = OutboxRow.__table__
    for part in chunks(list(seqs)):
        session.execute(delete(table).where(table.c.seq.in_(part)))


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)

"""`serialtrack rebuild SERVICE`: a service's store built anew from the archive plus the live streams,
through the processor the service itself runs (shared/consumer.py ``EventProcessor`` with the
service's ``apply`` from services/registry.py), into a fresh database; and the comparison of a
store with another, table by table (docs/retention.md).

Replay order: per stream, entries in id order (the archive's, deduped, then Redis's after them);
streams merged by event time, as the consumer's group commit sorts what it read together, and
applied in transactions of ``SERIALTRACK_BATCH_SIZE`` events. An entry the service would dead-letter
(not an event, bad data, a refused signature, a failing handler) is skipped and counted by reason.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Table, inspect, select

from shared.consumer import EventProcessor
from shared.envelope import Event, InvalidEvent, decode_entry
from shared.keys import registry_path
from shared.retention import Archive, ArchivedEntry, raw_client, read_live
from shared.schema import migrate
from shared.service import ServiceDefinition
from shared.settings import Settings
from shared.store import PLUMBING_TABLES, for_writing, is_transient, make_engine

log = logging.getLogger("serialtrack.rebuild")

# Columns that legitimately differ between a store and its rebuild: when a row was written here
# (wall-clock times of application, not event times), and surrogate keys numbered in insert order.
APPLICATION_TIMES = frozenset({"updated_at", "recorded_at", "detected_at", "created_at", "processed_at",
                               "decided_at", "raised_at", "matched_at", "swept_at", "completed_at"})


@dataclass(frozen=True)
class Allowance:
    """What of a table legitimately differs in a rebuild, beyond times of application and row
    numbers: mostly what records the order the live service happened to receive events in, which a
    replay in event-time order does not repeat (the state it ends in is compared all the same)."""

    why: str
    ignore: tuple[str, ...] = ()  # columns that count or name re-decisions
    leave_out: tuple[str, object] | None = None  # (column, value): rows that exist only because of arrival order
    latest_of: tuple[tuple[str, ...], str] | None = None  # (key, version column): compare each key's last row only


ALLOWANCES = {
    "inventory_anomalies": Allowance(
        "an anomaly raised because a later event arrived first is withdrawn when the earlier one comes",
        leave_out=("status", "withdrawn")),
    "warranty_claims": Allowance(
        "a decision is made again when a fact arrives after it: the live store counts those versions",
        ignore=("version", "decision_id")),
    "warranty_returns": Allowance(
        "a decision is made again when a fact arrives after it: the live store counts those versions",
        ignore=("version", "decision_id")),
    "warranty_decisions": Allowance(
        "each re-decision is a row; the current decision of each claim and return is compared",
        ignore=("version", "event_id", "supersedes"), latest_of=(("kind", "reference"), "version")),
    "recalls_progress": Allowance(
        "a count at 0 is the same as no count (readers skip them); arrival order leaves some behind",
        leave_out=("units", 0)),
    "recalls_meta": Allowance(
        "the index token is a random value that tells readers the matcher's index changed",
        leave_out=("key", "index")),
}
# The outbox is this store's queue of events to publish: the live one is mostly published and
# emptied, the rebuilt one was never published (its events are in the streams already).
NOT_COMPARED_TABLES = frozenset({"outbox"})


class RebuildError(RuntimeError):
    """An expected failure, said in one line."""


@dataclass
class RebuildReport:
    service: str
    database: str
    streams: dict[str, dict[str, int]] = field(default_factory=dict)  # stream -> {"archived": n, "live": n}
    applied: int = 0  # events applied for the first time
    duplicates: int = 0  # events seen again (same source and id)
    skipped: Counter = field(default_factory=Counter)  # reason -> entries the service would dead-letter
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "database": self.database, "streams": self.streams,
                "applied": self.applied, "duplicates": self.duplicates, "skipped": dict(self.skipped),
                "seconds": round(self.seconds, 3)}


def _entries_of(stream: str, archive: Archive, client, counts: dict[str, int]) -> Iterator[ArchivedEntry]:
    """One stream's entries: the archive's, then Redis's after the last archived one."""
    last: str | None = None
    for entry in archive.read(stream):
        counts["archived"] += 1
        last = entry.id
        yield entry
    for entry in read_live(client, stream, after=last):
        counts["live"] += 1
        yield entry


def _events(stream: str, entries: Iterable[ArchivedEntry], trust, skipped: Counter) -> Iterator[Event]:
    for entry in entries:
        fields = entry.field_map()
        try:
            yield trust.check(stream, decode_entry(fields, entry.id), fields)
        except InvalidEvent as exc:
            skipped[exc.reason] += 1
        except Exception as exc:  # noqa: BLE001 - the consumer dead-letters these as undecodable
            skipped[f"undecodable ({type(exc).__name__})"] += 1


def _fresh_engine(url: str) -> Engine:
    engine = make_engine(url)
    if inspect(engine).get_table_names():
        engine.dispose()
        raise RebuildError(f"{url} already has tables: rebuild into a new, empty database")
    return engine


def default_target(settings: Settings, service: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    directory = settings.data_dir / "rebuild"
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(directory / f'{service}-{stamp}.db').resolve()}"


def rebuild(definition: ServiceDefinition, settings: Settings, target_url: str, redis_url: str,
            progress: Callable[[int], None] | None = None) -> RebuildReport:
    """Replay every archived and live entry of the service's streams into ``target_url`` (empty)."""
    from time import perf_counter

    from shared.trust import Trust

    started = perf_counter()
    engine = _fresh_engine(target_url)
    client = raw_client(redis_url)
    report = RebuildReport(definition.name, target_url)
    try:
        migrate(engine, definition.migrations)
        processor = EventProcessor(definition.name, for_writing(engine), definition.apply,
                                   housekeeping=definition.housekeeping)
        trust = Trust(settings.streams, registry_path(settings.data_dir), settings.require_signatures)
        archive = Archive(settings.archive_dir)
        sequences = []
        for event_type in definition.event_types:
            stream = settings.streams.for_type(event_type)
            counts = report.streams.setdefault(stream, {"archived": 0, "live": 0})
            sequences.append(_events(stream, _entries_of(stream, archive, client, counts), trust, report.skipped))
        batch: list[Event] = []
        for event in heapq.merge(*sequences, key=lambda e: e.time):
            batch.append(event)
            if len(batch) >= settings.batch_size:
                _apply(processor, batch, report, progress)
                batch = []
        if batch:
            _apply(processor, batch, report, progress)
        # What the live service does between batches (inventory: deadlines that passed), done once
        # at the end: the rebuilt store then holds what the live one holds.
        while processor.housekeep():
            pass
    finally:
        client.close()
        engine.dispose()
    report.seconds = perf_counter() - started
    return report


def _apply(processor: EventProcessor, events: list[Event], report: RebuildReport,
           progress: Callable[[int], None] | None) -> None:
    """As the consumer applies a batch: one transaction; a failing batch split to isolate the event
    that fails, which the service would dead-letter after its deliveries (``handler_failed``)."""
    try:
        applied = processor.process(events)
    except Exception as exc:
        if is_transient(exc):
            raise RebuildError(f"the new database is unavailable: {exc}") from exc
        if len(events) > 1:
            for event in events:
                _apply(processor, [event], report, progress)
            return
        log.warning("rebuild: %s/%s failed: %r (the service dead-letters it: handler_failed)",
                    events[0].source, events[0].id, exc)
        report.skipped["handler_failed"] += 1
        if progress:
            progress(1)
        return
    report.applied += applied.new_events
    report.duplicates += len(events) - applied.new_events - len(applied.conflicts)
    report.skipped["conflicting_duplicate"] += len(applied.conflicts)
    if not report.skipped["conflicting_duplicate"]:
        del report.skipped["conflicting_duplicate"]
    if progress:
        progress(len(events))


def expected_entries(definition: ServiceDefinition, settings: Settings, redis_url: str) -> int:
    """About how many entries a rebuild reads (for its progress bar): archived + in Redis."""
    archive = Archive(settings.archive_dir)
    client = raw_client(redis_url)
    try:
        total = 0
        for event_type in definition.event_types:
            stream = settings.streams.for_type(event_type)
            total += archive.state(stream).entries + int(client.xlen(stream))
        return total
    finally:
        client.close()


# --- comparison ----------------------------------------------------------------------------------


@dataclass
class TableDifference:
    table: str
    compared_columns: list[str]
    ignored_columns: list[str]
    live_rows: int
    rebuilt_rows: int
    not_compared: str | None  # what of the table is left out of the comparison (an Allowance), and why
    only_live: list[dict[str, Any]]  # rows (compared columns) the rebuild lacks, first few
    only_rebuilt: list[dict[str, Any]]  # rows the live store lacks, first few
    missing: int  # rows of the live store not in the rebuild (with multiplicity)
    extra: int  # rows of the rebuild not in the live store

    @property
    def equal(self) -> bool:
        return self.missing == 0 and self.extra == 0


def ignored_columns(table: Table) -> list[str]:
    """What differs legitimately: times of application, and integer surrogate keys (autoincrement
    row numbers: the order rows were inserted, which batching changes)."""
    ignored = []
    for column in table.columns:
        surrogate = (column.primary_key and len(table.primary_key.columns) == 1
                     and column.autoincrement in (True, "auto") and column.type.python_type is int)
        if surrogate or column.name in APPLICATION_TIMES:
            ignored.append(column.name)
    return ignored


def _plain(value: Any) -> Any:
    """One form for both databases: SQLite gives naive datetimes, PostgreSQL aware ones."""
    if isinstance(value, datetime):
        return (value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)).isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _rows(engine: Engine, table: Table, columns: Sequence[str], service: str) -> Counter:
    rule = ALLOWANCES.get(table.name)
    key, version = rule.latest_of if rule and rule.latest_of else ((), None)
    wanted = [*columns, *(c for c in (*key, version) if c and c not in columns)]
    query = select(*(table.c[name] for name in wanted))
    if "service" in table.c:  # the inbox holds one row per (service, event): ours only
        query = query.where(table.c.service == service)
    if rule and rule.leave_out:
        column, value = rule.leave_out
        query = query.where(table.c[column] != value)
    with engine.connect() as connection:
        rows = [dict(zip(wanted, row, strict=True)) for row in connection.execute(query)]
    if version:
        latest: dict[tuple, dict] = {}
        for row in rows:
            k = tuple(row[c] for c in key)
            if k not in latest or row[version] > latest[k][version]:
                latest[k] = row
        rows = list(latest.values())
    return Counter(tuple(_plain(row[c]) for c in columns) for row in rows)


def _allowance_note(rule: Allowance | None) -> str | None:
    if rule is None:
        return None
    what = []
    if rule.leave_out:
        what.append(f"rows with {rule.leave_out[0]} {rule.leave_out[1]} are left out")
    if rule.latest_of:
        what.append(f"only the highest {rule.latest_of[1]} of each {', '.join(rule.latest_of[0])} is compared")
    if rule.ignore:
        what.append(f"{', '.join(rule.ignore)} not compared")
    return f"{'; '.join(what)}: {rule.why}"


def compare(definition: ServiceDefinition, live_url: str, rebuilt_url: str, show: int = 5) -> list[TableDifference]:
    """Every table of the service (and its inbox), live against rebuilt, ignoring ``ignored_columns``."""
    live, rebuilt = make_engine(live_url), make_engine(rebuilt_url)
    differences = []
    try:
        tables = [t for t in (*definition.tables, *PLUMBING_TABLES) if t.name not in NOT_COMPARED_TABLES]
        for table in tables:
            rule = ALLOWANCES.get(table.name)
            ignored = ignored_columns(table) + list(rule.ignore if rule else ())
            columns = [c.name for c in table.columns if c.name not in ignored]
            a, b = _rows(live, table, columns, definition.name), _rows(rebuilt, table, columns, definition.name)
            only_a, only_b = a - b, b - a
            differences.append(TableDifference(
                table.name, columns, ignored, sum(a.values()), sum(b.values()), _allowance_note(rule),
                [dict(zip(columns, row, strict=True)) for row in sorted(only_a, key=repr)[:show]],
                [dict(zip(columns, row, strict=True)) for row in sorted(only_b, key=repr)[:show]],
                sum(only_a.values()), sum(only_b.values())))
    finally:
        live.dispose()
        rebuilt.dispose()
    return differences


def describe_differences(differences: list[TableDifference]) -> list[str]:
    lines = []
    for d in differences:
        verdict = "equal" if d.equal else f"DIFFERENT: {d.missing} row(s) only live, {d.extra} only rebuilt"
        ignored = f" (ignoring {', '.join(d.ignored_columns)})" if d.ignored_columns else ""
        if d.not_compared:
            ignored += f"; {d.not_compared}"
        lines.append(f"{d.table}: live {d.live_rows}, rebuilt {d.rebuilt_rows}: {verdict}{ignored}")
        for label, rows in (("only live", d.only_live), ("only rebuilt", d.only_rebuilt)):
            lines.extend(f"  {label}: {json.dumps(row, default=str)}" for row in rows)
    return lines


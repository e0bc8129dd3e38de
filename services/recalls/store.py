"""Recalls tables and the set-based reads and writes the handlers and the API use.

Progress comes from the per-(recall, unit) rows of ``recalls_affected``, whose status columns are
set idempotently (earliest time wins), so a duplicate, a redelivery or a refold can never count a
unit twice. So that reading a campaign's progress does not count 100,000 rows, each row also keeps
``counted_as``, the status it is counted under in ``recalls_progress`` (none when out of scope):
every write here notes the units it touched, and ``recount_touched`` (end of each batch, same
transaction) moves each touched row from the count of its old status to its new one. A row
recounted twice moves once; the totals always equal a full count (``status_counts_scanned``).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from operator import itemgetter

from sqlalchemy import (
    BigInteger,
    Index,
    Row,
    Table,
    and_,
    case,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from shared.identity import SerialRange
from shared.store import (
    as_utc,
    chunks,
    driver_execute_many,
    driver_rows,
    insert_ignore,
    insert_tuples,
    read_time,
    table_of,
    upsert_rows,
)

from .domain import STATUS_RULES, Recall, RecallIndex, UnitStatus

UnitKey = tuple[str, str]


class RecallRow(SQLModel, table=True):
    __tablename__ = "recalls_recalls"
    recall_id: str = Field(primary_key=True, max_length=64)
    manufacturer: str = Field(max_length=64, index=True)
    skus: str = "[]"  # JSON: the current scope (the latest recall.issued/amended by event time)
    serial_ranges: str = "[]"
    serials: str = "[]"
    scope_order: str = Field(max_length=450)
    scope_at: datetime
    amendments: int = 0
    hazard: str | None = None  # None until the recall.issued itself arrived (an amendment may come first)
    remedy: str | None = Field(default=None, max_length=16)
    instructions: str | None = None
    issued_at: datetime | None = None
    issued_source: str | None = Field(default=None, max_length=256)
    issued_id: str | None = Field(default=None, max_length=128)
    closed_at: datetime | None = None
    closed_order: str | None = Field(default=None, max_length=450)
    close_reason: str | None = None
    updated_at: datetime


class UnitRow(SQLModel, table=True):
    """What this service knows of a unit: its sku and whether it is on hand or sold (latest fact wins)."""

    __tablename__ = "recalls_units"
    __table_args__ = (Index("ix_recalls_units_sku", "manufacturer", "sku"),)
    manufacturer: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)
    sku: str | None = Field(default=None, max_length=64)
    stock: str = Field(max_length=16)
    location: str | None = Field(default=None, max_length=64)
    stock_order: str = Field(max_length=450)
    stock_at: datetime
    first_seen: datetime
    updated_at: datetime


class UnitFactRow(SQLModel, table=True):
    """Every receipt, sale and return of a unit (recalls_0002): what ``recalls_units`` is the latest
    of. Read only when a void (shared/voids.py) withdraws one, to fold the unit again without it."""

    __tablename__ = "recalls_unit_facts"
    __table_args__ = (Index("ix_recalls_unit_facts_event_ref", "event_id", "event_source"),)
    manufacturer: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)
    event_source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=128)
    event_type: str = Field(max_length=64)
    sku: str | None = Field(default=None, max_length=64)
    stock: str = Field(max_length=16)
    location: str | None = Field(default=None, max_length=64)
    stock_order: str = Field(max_length=450)
    stock_at: datetime


class ReceiptRangeRow(SQLModel, table=True):
    """A receipt of more than LARGE_RECEIPT serials (a range; recalls_0002): one row for the whole
    range, the unit facts of its units, which ``recalls_unit_facts`` does not repeat unit by unit."""

    __tablename__ = "recalls_receipt_ranges"
    __table_args__ = (Index("ix_recalls_receipt_ranges_manufacturer", "manufacturer"),)
    event_source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=128)
    manufacturer: str = Field(max_length=64)
    range_prefix: str = Field(max_length=64)
    range_first: int = Field(sa_type=BigInteger)
    range_last: int = Field(sa_type=BigInteger)
    range_width: int | None = None
    sku: str | None = Field(default=None, max_length=64)
    stock: str = Field(max_length=16)
    location: str | None = Field(default=None, max_length=64)
    stock_order: str = Field(max_length=450)
    stock_at: datetime


class AffectedRow(SQLModel, table=True):
    """One unit in one campaign. ``in_scope`` None: reported by another service before the recall
    itself arrived (decided when it does); False: no longer covered (narrowed), kept for history."""

    __tablename__ = "recalls_affected"
    __table_args__ = (Index("ix_recalls_affected_unit", "manufacturer", "serial"),)
    recall_id: str = Field(primary_key=True, max_length=64)
    manufacturer: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)
    in_scope: bool | None = None
    matched_at: datetime
    quarantined_at: datetime | None = None
    quarantine_location: str | None = Field(default=None, max_length=64)
    # Inventory's revision of the hold it reports (unit.quarantined, unit.quarantine.withdrawn): a
    # higher one replaces the hold, or takes it back. None: reports without one, the earliest wins.
    quarantine_revision: int | None = None
    notified_at: datetime | None = None
    owner_unknown_at: datetime | None = None
    remedied_at: datetime | None = None
    remedy: str | None = Field(default=None, max_length=16)
    remedy_location: str | None = Field(default=None, max_length=64)
    counted_as: str | None = Field(default=None, max_length=32)  # the status it is counted under in recalls_progress


class ProgressRow(SQLModel, table=True):
    """How many in-scope units of a campaign have each status: the sum of ``counted_as``."""

    __tablename__ = "recalls_progress"
    recall_id: str = Field(primary_key=True, max_length=64)
    status: str = Field(primary_key=True, max_length=32)
    units: int = 0


class SaleAttemptRow(SQLModel, table=True):
    """Inventory's ``sold_while_quarantined`` anomalies: a quarantined unit went through a till."""

    __tablename__ = "recalls_sale_attempts"
    __table_args__ = (Index("ix_recalls_sale_attempts_unit", "manufacturer", "serial"),)
    manufacturer: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)
    event_source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=128)
    detail: str = ""
    event_time: datetime | None = None
    status: str = Field(default="open", max_length=16)  # open | withdrawn
    recorded_at: datetime


class MetaRow(SQLModel, table=True):
    __tablename__ = "recalls_meta"
    key: str = Field(primary_key=True, max_length=32)
    value: str = Field(max_length=64)


TABLES: list[Table] = [table_of(RecallRow), table_of(UnitRow), table_of(AffectedRow),
                       table_of(ProgressRow), table_of(SaleAttemptRow), table_of(MetaRow), table_of(UnitFactRow),
                       table_of(ReceiptRangeRow)]

_recalls = table_of(RecallRow)
_units = table_of(UnitRow)
_affected = table_of(AffectedRow)
_attempts = table_of(SaleAttemptRow)
_meta = table_of(MetaRow)
_progress = table_of(ProgressRow)
_unit_facts = table_of(UnitFactRow)
_receipt_ranges = table_of(ReceiptRangeRow)

REPORT_COLUMNS = ("quarantined_at", "notified_at", "owner_unknown_at", "remedied_at")
_EXTRA_COLUMNS = {"quarantined_at": ("quarantine_location", "quarantine_revision"),
                  "remedied_at": ("remedy", "remedy_location")}


def _pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _insert(session: Session, table: Table):
    return (postgresql if _pg(session) else sqlite).insert(table)


def _bytewise(session: Session, column):
    """Order keys compare byte by byte whatever the database's default collation."""
    return column.collate("C" if _pg(session) else "BINARY")


# ---------------------------------------------------------------------------------------------
# The recall index: built from the store, cached per database, swapped when recalls change


_INDEX_KEY = "index"
_index_lock = threading.Lock()
_index_cache: dict[str, tuple[str | None, RecallIndex]] = {}


def _cache_key(session: Session) -> str:
    return session.get_bind().engine.url.render_as_string(hide_password=True)


def current_index(session: Session) -> RecallIndex:
    """The index matching the recalls in the store. A token row changes with every recall change,
    so every process (and the read API) sees a change on its next batch. A batch holds its
    manufacturers' locks (shared/unit_locks.py: shared for unit events, exclusive for recall
    events), so no recall of its manufacturers changes in another process while it matches."""
    token = session.scalar(select(_meta.c.value).where(_meta.c.key == _INDEX_KEY))
    key = _cache_key(session)
    with _index_lock:
        hit = _index_cache.get(key)
    if hit is not None and hit[0] == token:
        return hit[1]
    index = RecallIndex(load_index_recalls(session))
    with _index_lock:
        _index_cache[key] = (token, index)
    return index


def refresh_index(session: Session) -> RecallIndex:
    """After a recall change in this transaction: a new token, a new index. If the transaction rolls
    back, the stored token differs from the cached one and the next batch rebuilds."""
    token = uuid.uuid4().hex
    upsert_rows(session, _meta, [{"key": _INDEX_KEY, "value": token}], keys=("key",))
    index = RecallIndex(load_index_recalls(session))
    with _index_lock:
        _index_cache[_cache_key(session)] = (token, index)
    return index


def recall_from_row(row) -> Recall:
    return Recall(
        recall_id=row.recall_id, manufacturer=row.manufacturer, skus=frozenset(json.loads(row.skus)),
        ranges=tuple(SerialRange.model_validate(r) for r in json.loads(row.serial_ranges)),
        serials=frozenset(json.loads(row.serials)), closed_order=row.closed_order, closed_at=as_utc(row.closed_at),
    )


def load_index_recalls(session: Session) -> list[Recall]:
    # Closed recalls stay in the index: a fact dated before the closure still matches them.
    return [recall_from_row(r) for r in session.execute(select(_recalls))]


# ---------------------------------------------------------------------------------------------
# Recalls


def load_recalls(session: Session, recall_ids: Iterable[str]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for part in chunks(sorted(set(recall_ids))):
        for row in session.execute(select(_recalls).where(_recalls.c.recall_id.in_(part))):
            found[row.recall_id] = {k: as_utc(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}
    return found


def save_recalls(session: Session, rows: Sequence[dict]) -> None:
    upsert_rows(session, _recalls, rows, keys=("recall_id",))


def covered_units(session: Session, recall: Recall) -> list[tuple[str, datetime, str]]:
    """Known units the recall's scope covers, as (serial, first_seen, stock): by index (serial list,
    range bounds on the primary key, sku index), exact filter after."""
    maker = recall.manufacturer
    base = "SELECT serial, sku, first_seen, stock FROM recalls_units WHERE manufacturer = ?"
    candidates: list[tuple] = []
    if recall.serials:
        for part in chunks(sorted(recall.serials)):
            candidates.extend(driver_rows(session, f"{base} AND serial IN ({', '.join('?' * len(part))})",
                                          (maker, *part)))
    for rng in recall.ranges:
        if rng.width is not None:
            low, high = f"{rng.prefix}{rng.first:0{rng.width}d}", f"{rng.prefix}{rng.last:0{rng.width}d}"
        else:  # unpadded numbers do not sort as strings: take the prefix, filter exactly below
            low, high = rng.prefix, rng.prefix + "\x7f"
        candidates.extend(driver_rows(session, f"{base} AND serial >= ? AND serial <= ?", (maker, low, high)))
    if not recall.has_serial_condition:
        skus = sorted(recall.skus)
        candidates.extend(driver_rows(session, f"{base} AND sku IN ({', '.join('?' * len(skus))})", (maker, *skus)))
    seen: dict[str, tuple[str, datetime, str]] = {}
    covers = recall.unit_filter()
    for serial, sku, first_seen, stock in candidates:
        if serial not in seen and covers(serial, sku):
            seen[serial] = (serial, read_time(first_seen), stock)
    return list(seen.values())


def campaign_rows(session: Session, recall_id: str) -> dict[str, tuple]:
    """serial -> (in_scope, reported, sku, first_seen) for every row of the campaign."""
    reported = or_(*[_affected.c[c].isnot(None) for c in REPORT_COLUMNS])
    rows = session.execute(
        select(_affected.c.serial, _affected.c.in_scope, case((reported, true()), else_=false()).label("reported"),
               _units.c.sku, _units.c.first_seen)
        .select_from(_affected.outerjoin(_units, and_(_units.c.manufacturer == _affected.c.manufacturer,
                                                      _units.c.serial == _affected.c.serial)))
        .where(_affected.c.recall_id == recall_id)
    )
    return {r.serial: (r.in_scope, bool(r.reported), r.sku, as_utc(r.first_seen)) for r in rows}


def set_in_scope(session: Session, recall_id: str, manufacturer: str, serials: Sequence[str], value: bool) -> None:
    _touch(session, ((manufacturer, serial) for serial in serials))
    for part in chunks(sorted(serials)):
        session.execute(update(_affected).where(
            _affected.c.recall_id == recall_id, _affected.c.manufacturer == manufacturer,
            _affected.c.serial.in_(part),
        ).values(in_scope=value))


# ---------------------------------------------------------------------------------------------
# Units


def upsert_units(session: Session, rows: Sequence[dict]) -> None:
    """Rows unique by key. The latest fact by (time, source, id) sets stock, location and sku; the
    earliest sets first_seen. Whatever order facts arrive in, the row ends the same."""
    if not rows:
        return
    _touch(session, ((row["manufacturer"], row["serial"]) for row in rows))
    stmt = _insert(session, _units)
    new, old = stmt.excluded, _units.c
    newer = _bytewise(session, new.stock_order) > _bytewise(session, old.stock_order)

    def latest(column):
        return case((newer, new[column]), else_=old[column])

    set_ = {c: latest(c) for c in ("stock", "location", "stock_order", "stock_at")}
    set_["sku"] = case((and_(newer, new.sku.isnot(None)), new.sku), else_=func.coalesce(old.sku, new.sku))
    set_["first_seen"] = case((new.first_seen < old.first_seen, new.first_seen), else_=old.first_seen)
    set_["updated_at"] = new.updated_at
    for part in chunks(rows, 5000):
        session.execute(stmt.on_conflict_do_update(index_elements=["manufacturer", "serial"], set_=set_), list(part))


_FACT_COLUMNS = ("manufacturer", "serial", "event_source", "event_id", "event_type", "sku", "stock", "location",
                 "stock_order", "stock_at")


def save_unit_facts(session: Session, rows: Sequence[tuple]) -> None:
    """Unit facts as tuples in ``_FACT_COLUMNS`` order; a redelivered one stays once."""
    for part in chunks(rows, 5000):
        insert_tuples(session, _unit_facts, _FACT_COLUMNS, list(part), conflict="ignore")


def save_receipt_range(session: Session, manufacturer: str, rng: SerialRange, fact: tuple) -> None:
    """A large range receipt's facts: one row (``fact`` as in save_unit_facts, after the serial)."""
    source, event_id, _, sku, stock, location, stock_order, stock_at = fact
    insert_ignore(session, _receipt_ranges, [{
        "event_source": source, "event_id": event_id, "manufacturer": manufacturer, "range_prefix": rng.prefix,
        "range_first": rng.first, "range_last": rng.last, "range_width": rng.width, "sku": sku, "stock": stock,
        "location": location, "stock_order": stock_order, "stock_at": stock_at}])


def units_with_event(session: Session, manufacturer: str, source: str, event_id: str) -> Iterator[UnitKey]:
    """The known units an event reached: its unit facts by index, or the units of its range."""
    for (serial,) in session.execute(select(_unit_facts.c.serial).where(
            _unit_facts.c.event_id == event_id, _unit_facts.c.event_source == source,
            _unit_facts.c.manufacturer == manufacturer)):
        yield (manufacturer, serial)
    row = session.execute(select(_receipt_ranges).where(
        _receipt_ranges.c.event_source == source, _receipt_ranges.c.event_id == event_id,
        _receipt_ranges.c.manufacturer == manufacturer)).first()
    if row is not None:
        rng = SerialRange(prefix=row.range_prefix, first=row.range_first, last=row.range_last, width=row.range_width)
        for part in _batches(iter(rng), 10_000):
            yield from load_units(session, [(manufacturer, serial) for serial in part])


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while part := [item for _, item in zip(range(size), items, strict=False)]:
        yield part


def unit_facts(session: Session, keys: Sequence[UnitKey]) -> dict[UnitKey, list[dict]]:
    """Each unit's facts: its own rows, and the large range receipts that cover it."""
    found: dict[UnitKey, list[dict]] = {}
    for maker, serials in _by_maker(keys).items():
        for part in chunks(sorted(serials)):
            for row in session.execute(select(_unit_facts).where(_unit_facts.c.manufacturer == maker,
                                                                 _unit_facts.c.serial.in_(part))):
                found.setdefault((maker, row.serial), []).append(dict(row._mapping))
        # Few: one per receipt of more than 10,000 serials of the manufacturer.
        for row in session.execute(select(_receipt_ranges).where(_receipt_ranges.c.manufacturer == maker)):
            rng = SerialRange(prefix=row.range_prefix, first=row.range_first, last=row.range_last,
                              width=row.range_width)
            fact = {**row._mapping, "event_type": "unit.received"}
            for serial in serials:
                if serial in rng:
                    found.setdefault((maker, serial), []).append(fact)
    return found


def replace_units(session: Session, rows: Sequence[dict], gone: Sequence[UnitKey]) -> None:
    """Units folded again from their facts (a void): their rows as given, whatever they held; units
    left with no fact are forgotten, and leave the campaigns that only matched them."""
    _touch(session, [(r["manufacturer"], r["serial"]) for r in rows])
    _touch(session, gone)
    for part in chunks(rows, 5000):
        upsert_rows(session, _units, list(part), keys=("manufacturer", "serial"))
    reported = or_(*[_affected.c[c].isnot(None) for c in REPORT_COLUMNS])
    for maker, serials in _by_maker(gone).items():
        for part in chunks(sorted(serials)):
            session.execute(delete(_units).where(_units.c.manufacturer == maker, _units.c.serial.in_(part)))
            session.execute(update(_affected).where(_affected.c.manufacturer == maker, _affected.c.serial.in_(part),
                                                    ~reported).values(in_scope=False))


def _by_maker(keys: Iterable[UnitKey]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for maker, serial in keys:
        found.setdefault(maker, []).append(serial)
    return found


def load_units(session: Session, keys: Iterable[UnitKey]) -> dict[UnitKey, tuple[str | None, datetime]]:
    """(manufacturer, serial) -> (sku, first_seen) of the known ones."""
    by_maker: dict[str, list[str]] = {}
    for maker, serial in keys:
        by_maker.setdefault(maker, []).append(serial)
    found: dict[UnitKey, tuple[str | None, datetime]] = {}
    for maker, serials in by_maker.items():
        for part in chunks(sorted(set(serials))):
            rows = driver_rows(session, "SELECT serial, sku, first_seen FROM recalls_units WHERE manufacturer = ? "
                                        f"AND serial IN ({', '.join('?' * len(part))})", (maker, *part))
            found.update({(maker, serial): (sku, read_time(first_seen)) for serial, sku, first_seen in rows})
    return found


# ---------------------------------------------------------------------------------------------
# Campaign rows


_AFFECTED_KEY = ("recall_id", "manufacturer", "serial")
_MATCH_COLUMNS = (*_AFFECTED_KEY, "in_scope", "matched_at")


def _matched_again(new, old) -> dict:
    return {"in_scope": true()}


def save_matches(session: Session, rows: Sequence[dict]) -> None:
    """(recall, unit) pairs the current scope covers: in scope, whatever was decided before."""
    if not rows:
        return
    _touch(session, ((row["manufacturer"], row["serial"]) for row in rows))
    insert_tuples(session, _affected, _MATCH_COLUMNS, list(map(itemgetter(*_MATCH_COLUMNS), rows)),
                  conflict="update", keys=_AFFECTED_KEY, on_conflict=_matched_again, shape="match")


_NEW_ROW_COLUMNS = (*_MATCH_COLUMNS, "counted_as")


def add_campaign_rows(session: Session, rows: Sequence[dict]) -> None:
    """Rows new to the campaign, each with the status it is counted under (``counted_as``), added to
    the counts directly. Only for a batch that holds the recall's manufacturer exclusively (a recall
    event: shared/unit_locks.py), so no other writer can add the same rows meanwhile: the recompute
    of a campaign."""
    if not rows:
        return
    insert_tuples(session, _affected, _NEW_ROW_COLUMNS, list(map(itemgetter(*_NEW_ROW_COLUMNS), rows)))
    added: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["recall_id"], row["counted_as"])
        added[key] = added.get(key, 0) + 1
    _add_to_counts(session, added)


def _hold_replaces(new, old):
    """Inventory's later word on a hold replaces its earlier one (a higher revision, a withdrawal
    included); reports without a revision (before 0.4) keep the earliest, never over a revised one."""
    revised = new.quarantine_revision.isnot(None)
    return or_(and_(revised, or_(old.quarantine_revision.is_(None), new.quarantine_revision > old.quarantine_revision)),
               and_(~revised, old.quarantine_revision.is_(None),
                    or_(old.quarantined_at.is_(None), new.quarantined_at < old.quarantined_at)))


def _earliest_report(column: str):
    def on_conflict(new, old) -> dict:
        earlier = (_hold_replaces(new, old) if column == "quarantined_at"
                   else or_(old[column].is_(None), new[column] < old[column]))
        # in_scope: the caller's verdict for a reported row under the current scope (what a recompute
        # would say); None (recall not here yet) keeps what the row had.
        set_ = {column: case((earlier, new[column]), else_=old[column]),
                "in_scope": func.coalesce(new.in_scope, old.in_scope)}
        for extra in _EXTRA_COLUMNS.get(column, ()):
            set_[extra] = case((earlier, new[extra]), else_=old[extra])
        return set_
    return on_conflict


_REPORT_CONFLICT = {column: _earliest_report(column) for column in REPORT_COLUMNS}


def save_reports(session: Session, column: str, rows: Sequence[dict]) -> None:
    """Another service reported a step for (recall, unit): quarantined, owner notified or unknown,
    remedied. Rows unique by key, all with the same columns. The earliest report wins, so repeats
    change nothing."""
    if not rows:
        return
    _touch(session, ((row["manufacturer"], row["serial"]) for row in rows))
    columns = tuple(rows[0])
    insert_tuples(session, _affected, columns, list(map(itemgetter(*columns), rows)),
                  conflict="update", keys=_AFFECTED_KEY, on_conflict=_REPORT_CONFLICT[column],
                  shape=f"report:{column}")


def save_sale_attempts(session: Session, rows: Sequence[dict]) -> None:
    insert_ignore(session, _attempts, rows)  # a withdrawn attempt is not reopened by a late detection


def withdraw_sale_attempts(session: Session, rows: Sequence[dict]) -> None:
    if not rows:
        return
    stmt = _insert(session, _attempts)
    session.execute(stmt.on_conflict_do_update(
        index_elements=["manufacturer", "serial", "event_source", "event_id"], set_={"status": "withdrawn"},
    ), list(rows))


# ---------------------------------------------------------------------------------------------
# Progress counts

_TOUCHED = "recalls_touched_units"


def _touch(session: Session, keys: Iterable[UnitKey]) -> None:
    session.info.setdefault(_TOUCHED, set()).update(keys)


def recount_touched(session: Session) -> None:
    """Move every touched unit's campaign rows to the count of their current status (see the
    module docstring). Call at the end of each batch, inside its transaction."""
    touched: set[UnitKey] = session.info.pop(_TOUCHED, set())
    by_maker: dict[str, list[str]] = {}
    for maker, serial in touched:
        by_maker.setdefault(maker, []).append(serial)
    find_changed = _recount_sql(session)
    delta: dict[tuple[str, str], int] = {}
    changed: list[tuple] = []
    for maker, serials in sorted(by_maker.items()):
        for part in chunks(sorted(serials), 5000):
            sql = find_changed.format(marks=", ".join("?" * len(part)))
            for recall_id, serial, old, new in driver_rows(session, sql, (maker, *part)):
                changed.append((new, recall_id, maker, serial))
                if old is not None:
                    delta[(recall_id, old)] = delta.get((recall_id, old), 0) - 1
                if new is not None:
                    delta[(recall_id, new)] = delta.get((recall_id, new), 0) + 1
    driver_execute_many(session, "UPDATE recalls_affected SET counted_as = ? "
                                 "WHERE recall_id = ? AND manufacturer = ? AND serial = ?", changed)
    _add_to_counts(session, delta)


def _add_to_counts(session: Session, delta: dict[tuple[str, str], int]) -> None:
    changes = [{"recall_id": rid, "status": status, "units": n} for (rid, status), n in sorted(delta.items()) if n]
    if changes:  # sorted: two workers update the same counters in the same order (no deadlock)
        stmt = _insert(session, _progress)
        session.execute(stmt.on_conflict_do_update(index_elements=["recall_id", "status"],
                                                   set_={"units": _progress.c.units + stmt.excluded.units}), changes)


_RECOUNT_SQL: dict[str, str] = {}


def _recount_sql(session: Session) -> str:
    """The SELECT of the rows of one manufacturer's units, ``{marks}`` for the serials, whose status
    is not the one they are counted under: recall_id, serial, counted_as, current status. Plain SQL
    through the driver: this runs for every unit of every batch. No row lock: the batch holds its
    units' locks (shared/unit_locks.py)."""
    dialect = session.get_bind().dialect
    compiled = _RECOUNT_SQL.get(dialect.name)
    if compiled is None:
        status = case((_affected.c.in_scope.is_(True), _status_expression()), else_=None)
        status_sql = str(status.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        differs = "IS DISTINCT FROM" if dialect.name == "postgresql" else "IS NOT"
        compiled = _RECOUNT_SQL[dialect.name] = (
            f"SELECT recalls_affected.recall_id, recalls_affected.serial, recalls_affected.counted_as, {status_sql} "
            "FROM recalls_affected LEFT OUTER JOIN recalls_units "
            "ON recalls_units.manufacturer = recalls_affected.manufacturer "
            "AND recalls_units.serial = recalls_affected.serial "
            "WHERE recalls_affected.manufacturer = ? AND recalls_affected.serial IN ({marks}) "
            f"AND recalls_affected.counted_as {differs} {status_sql}")
    return compiled


def status_counts(session: Session, recall_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """recall_id -> status -> in-scope units, from the maintained counts (a few rows per recall)."""
    result: dict[str, dict[str, int]] = {rid: {} for rid in recall_ids}
    if recall_ids:
        for rid, status, n in session.execute(
            select(_progress.c.recall_id, _progress.c.status, _progress.c.units)
            .where(_progress.c.recall_id.in_(list(recall_ids)), _progress.c.units != 0)
        ):
            result[rid][status] = n
    return result


def status_counts_scanned(session: Session, recall_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """The same counts from every campaign row (a full count): what the maintained ones must equal."""
    if not recall_ids:
        return {}
    inner = (select(_affected.c.recall_id, _status_expression().label("status"))
             .select_from(_joined)
             .where(_affected.c.recall_id.in_(list(recall_ids)), _affected.c.in_scope.is_(True))
             .subquery())
    result: dict[str, dict[str, int]] = {rid: {} for rid in recall_ids}
    for rid, status, n in session.execute(
        select(inner.c.recall_id, inner.c.status, func.count()).group_by(inner.c.recall_id, inner.c.status)
    ):
        result[rid][status] = n
    return result


# ---------------------------------------------------------------------------------------------
# Read side (HTTP API)


def _flag(column, wanted: bool):
    return column.isnot(None) if wanted else column.is_(None)


def _status_expression(stock=_units.c.stock):
    """domain.STATUS_RULES as one SQL CASE over recalls_affected and the unit's ``stock`` (by
    default from recalls_affected LEFT JOIN recalls_units)."""
    flags = {"remedied": _affected.c.remedied_at, "notified": _affected.c.notified_at,
             "owner_unknown": _affected.c.owner_unknown_at, "quarantined": _affected.c.quarantined_at}
    whens = []
    for status, cond in STATUS_RULES[:-1]:
        parts = []
        if cond.stock is not None:
            parts.append(stock.in_(sorted(s.value for s in cond.stock)))
        parts.extend(_flag(column, getattr(cond, name)) for name, column in flags.items()
                     if getattr(cond, name) is not None)
        whens.append((and_(*parts), literal(status.value)))
    return case(*whens, else_=literal(STATUS_RULES[-1][0].value))


_joined = _affected.outerjoin(_units, and_(_units.c.manufacturer == _affected.c.manufacturer,
                                           _units.c.serial == _affected.c.serial))


def _attempt_in_campaign(recall_id: str):
    """The attempt's unit is in the campaign. An EXISTS probe by primary key, so the query walks
    the (few) sale attempts, never the campaign's 100,000 rows."""
    return exists().where(_affected.c.recall_id == recall_id, _affected.c.manufacturer == _attempts.c.manufacturer,
                          _affected.c.serial == _attempts.c.serial, _affected.c.in_scope.is_(True))


def sale_attempt_counts(session: Session, recall_ids: Sequence[str]) -> dict[str, int]:
    counts = {}
    for rid in recall_ids:
        n = session.scalar(select(func.count()).select_from(_attempts)
                           .where(_attempts.c.status == "open", _attempt_in_campaign(rid)))
        if n:
            counts[rid] = n
    return counts


def sale_attempts(session: Session, recall_id: str, limit: int = 100) -> list:
    return list(session.execute(
        select(_attempts).where(_attempts.c.status == "open", _attempt_in_campaign(recall_id))
        .order_by(_attempts.c.event_time).limit(limit)
    ))


def get_recall(session: Session, recall_id: str):
    return session.execute(select(_recalls).where(_recalls.c.recall_id == recall_id)).first()


def list_recalls(session: Session, *, manufacturer: str | None, open_: bool | None, limit: int,
                 offset: int) -> tuple[int, list]:
    conditions = [c for c in (
        _recalls.c.manufacturer == manufacturer if manufacturer else None,
        None if open_ is None else (_recalls.c.closed_at.is_(None) if open_ else _recalls.c.closed_at.isnot(None)),
    ) if c is not None]
    total = session.scalar(select(func.count()).select_from(_recalls).where(*conditions))
    rows = session.execute(select(_recalls).where(*conditions)
                           .order_by(_recalls.c.scope_at.desc(), _recalls.c.recall_id).limit(limit).offset(offset))
    return total or 0, list(rows)


_UNIT_COLUMNS = (_affected.c.recall_id, _affected.c.manufacturer, _affected.c.serial, _units.c.sku, _units.c.stock,
                 _units.c.location, _affected.c.quarantined_at, _affected.c.quarantine_location,
                 _affected.c.notified_at, _affected.c.owner_unknown_at, _affected.c.remedied_at, _affected.c.remedy)


def campaign_units(session: Session, recall_id: str, *, status: UnitStatus | None, limit: int,
                   offset: int) -> tuple[int, list]:
    expr = _status_expression()
    conditions = [_affected.c.recall_id == recall_id, _affected.c.in_scope.is_(True)]
    if status is not None:
        conditions.append(expr == status.value)
    total = session.scalar(select(func.count()).select_from(_joined).where(*conditions))
    rows = session.execute(select(*_UNIT_COLUMNS, expr.label("status")).select_from(_joined).where(*conditions)
                           .order_by(_affected.c.manufacturer, _affected.c.serial).limit(limit).offset(offset))
    return total or 0, list(rows)


def iter_campaign_units(session: Session, recall_id: str, page: int = 5000) -> Iterator:
    """Every unit of the campaign, by keyset pagination (serial order): for the reports."""
    expr = _status_expression()
    after = ""
    while True:
        rows = list(session.execute(
            select(*_UNIT_COLUMNS, expr.label("status")).select_from(_joined)
            .where(_affected.c.recall_id == recall_id, _affected.c.in_scope.is_(True), _affected.c.serial > after)
            .order_by(_affected.c.serial).limit(page)
        ))
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].serial


def unit_campaigns(session: Session, key: UnitKey) -> list:
    return list(session.execute(
        select(*_UNIT_COLUMNS, _status_expression().label("status"), _recalls.c.hazard, _recalls.c.remedy.label(
            "recall_remedy"), _recalls.c.instructions, _recalls.c.issued_at, _recalls.c.closed_at)
        .select_from(_joined.join(_recalls, _recalls.c.recall_id == _affected.c.recall_id))
        .where(_affected.c.manufacturer == key[0], _affected.c.serial == key[1], _affected.c.in_scope.is_(True))
        .order_by(_recalls.c.scope_at)
    ))


def get_unit(session: Session, key: UnitKey):
    return session.execute(select(_units).where(_units.c.manufacturer == key[0], _units.c.serial == key[1])).first()


def recalls_by_id(session: Session, recall_ids: Iterable[str]) -> dict[str, Row]:
    ids = sorted(set(recall_ids))
    if not ids:
        return {}
    return {r.recall_id: r for r in session.execute(select(_recalls).where(_recalls.c.recall_id.in_(ids)))}


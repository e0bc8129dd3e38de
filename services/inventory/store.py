"""Inventory tables and the set-based reads and writes the handlers and the API use.

Stolen reports over a range or a list (``inventory_theft_selections``) are kept as one row per
report, never expanded: a 10,000,000-serial report costs one row. A unit gets such a report as a
fact of its history when an event names it (``theft_selection_index``: an index lookup per unit,
no scan), so a unit received after the report is flagged on arrival, and a known unit at its next
event; the read side (``get_unit``, ``unit_history``) shows the reports that cover a unit and did
not reach its history yet. Open recalls are matched the same way (``open_recall_index``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from types import SimpleNamespace

from sqlalchemy import BigInteger, ColumnElement, Index, Table, UniqueConstraint, bindparam, case, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from shared.contracts import VOIDABLE_TYPES, RecallScope
from shared.identity import SerialRange
from shared.serial_index import Selection, SerialIndex
from shared.store import as_utc, chunks, driver_rows, insert_ignore, insert_tuples, read_time, table_of, utcnow
from shared.voids import VoidMark, voided_among

from .domain import Anomaly, Fact, OrderKey, Status, UnitState, fold

UnitKey = tuple[str, str]


class UnitRow(SQLModel, table=True):
    __tablename__ = "inventory_units"
    __table_args__ = (
        Index("ix_inventory_units_sku", "sku"),
        Index("ix_inventory_units_location", "location"),
        Index("ix_inventory_units_status", "status"),
    )
    manufacturer: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)
    status: str = Field(max_length=16)
    location: str | None = Field(default=None, max_length=64)
    sku: str | None = Field(default=None, max_length=64)
    condition: str | None = Field(default=None, max_length=16)
    stolen: bool = False
    theft_cases: str = "[]"  # JSON list of open "agency:case"
    recalls: str = "[]"  # JSON list of open recall ids holding the unit
    recalls_seen: str = "[]"  # JSON list of every recall broadcast in the unit's history
    ever_received: bool = False
    last_event_time: datetime
    last_event_source: str = Field(max_length=256)
    last_event_id: str = Field(max_length=128)
    updated_at: datetime


class HistoryRow(SQLModel, table=True):
    __tablename__ = "inventory_history"
    __table_args__ = (
        UniqueConstraint("manufacturer", "serial", "event_source", "event_id", name="uq_inventory_history_event"),
        # The units an event reached, by its (source, id): what a void folds again (inventory_0004).
        Index("ix_inventory_history_event_ref", "event_id", "event_source"),
    )
    id: int | None = Field(default=None, primary_key=True)
    manufacturer: str = Field(max_length=64)
    serial: str = Field(max_length=64)
    event_time: datetime
    event_type: str = Field(max_length=64)
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    location: str | None = None
    from_location: str | None = None
    sku: str | None = None
    condition: str | None = None
    disposition: str | None = None
    receipt_id: str | None = None
    customer_id: str | None = None
    terminal_id: str | None = None
    agency: str | None = None
    case_number: str | None = None
    recall_id: str | None = None
    note: str | None = None
    in_transit: bool = False
    recorded_at: datetime


class AnomalyRow(SQLModel, table=True):
    __tablename__ = "inventory_anomalies"
    __table_args__ = (
        UniqueConstraint("manufacturer", "serial", "kind", "event_source", "event_id", name="uq_inventory_anomaly"),
        Index("ix_inventory_anomalies_unit", "manufacturer", "serial"),
    )
    id: int | None = Field(default=None, primary_key=True)
    manufacturer: str = Field(max_length=64)
    serial: str = Field(max_length=64)
    kind: str = Field(max_length=48, index=True)
    detail: str
    event_type: str = Field(max_length=64)
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    event_time: datetime
    status: str = Field(default="open", max_length=16, index=True)  # open | withdrawn (a late event explained it)
    detected_at: datetime


class RecallRow(SQLModel, table=True):
    __tablename__ = "inventory_recalls"
    recall_id: str = Field(primary_key=True, max_length=64)
    manufacturer: str = Field(max_length=64, index=True)
    scope: str  # RecallScope JSON: from the issue, or from the latest amendment
    scope_time: datetime  # when the event that set the scope happened: a late older one never wins
    issued_at: datetime
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    status: str = Field(default="open", max_length=16)  # open | closed
    closed_at: datetime | None = None
    close_source: str | None = Field(default=None, max_length=256)
    close_event_id: str | None = Field(default=None, max_length=128)


class TheftSelectionRow(SQLModel, table=True):
    """A ``theft.reported`` or ``theft.recovered`` over a range or a list: one row, never expanded."""

    __tablename__ = "inventory_theft_selections"
    __table_args__ = (
        UniqueConstraint("event_source", "event_id", name="uq_inventory_theft_selection_event"),
        Index("ix_inventory_theft_selections_manufacturer", "manufacturer", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    manufacturer: str = Field(max_length=64)
    range_prefix: str | None = Field(default=None, max_length=64)  # a range: prefix, first, last, width
    range_first: int | None = Field(default=None, sa_type=BigInteger)  # serial numbers outgrow 32 bits
    range_last: int | None = Field(default=None, sa_type=BigInteger)
    range_width: int | None = None
    serials: str | None = None  # a list: JSON
    event_type: str = Field(max_length=64)
    event_time: datetime
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    agency: str = Field(max_length=64)
    case_number: str = Field(max_length=64)
    note: str | None = None
    recorded_at: datetime


TABLES: list[Table] = [table_of(UnitRow), table_of(HistoryRow), table_of(AnomalyRow), table_of(RecallRow),
                       table_of(TheftSelectionRow)]

_units = table_of(UnitRow)
_history = table_of(HistoryRow)
_anomalies = table_of(AnomalyRow)
_recalls = table_of(RecallRow)
_theft_selections = table_of(TheftSelectionRow)

_FACT_COLUMNS = ("location", "from_location", "sku", "condition", "disposition", "receipt_id", "customer_id",
                 "terminal_id", "agency", "case_number", "recall_id", "note", "in_transit")


@lru_cache(maxsize=4096)
def _json_tuple(text: str) -> tuple[str, ...]:
    return () if text == "[]" else tuple(json.loads(text))


@lru_cache(maxsize=4096)
def _json_text(values: tuple[str, ...]) -> str:
    return json.dumps(values) if values else "[]"


# The unit row as the hot path reads it (straight from the driver, see shared.store.driver_rows).
_UNIT_COLUMNS = ("manufacturer", "serial", "status", "location", "sku", "condition", "theft_cases", "recalls",
                 "recalls_seen", "ever_received", "last_event_time", "last_event_source", "last_event_id")
_SELECT_UNITS = f"SELECT {', '.join(_UNIT_COLUMNS)} FROM inventory_units WHERE manufacturer = ?"


def _state_from_tuple(row: tuple) -> UnitState:
    (manufacturer, serial, status, location, sku, condition, theft_cases, recalls, recalls_seen, ever_received,
     last_time, last_source, last_id) = row
    return UnitState(
        manufacturer=manufacturer, serial=serial, status=Status(status), location=location, sku=sku,
        condition=condition, theft_cases=_json_tuple(theft_cases), recalls=_json_tuple(recalls),
        recalls_seen=_json_tuple(recalls_seen), ever_received=bool(ever_received),
        last=(read_time(last_time), last_source, last_id),
    )


def load_units(session: Session, keys: Iterable[UnitKey]) -> dict[UnitKey, UnitState]:
    """Current state of the given units (missing ones are absent)."""
    found: dict[UnitKey, UnitState] = {}
    for manufacturer, serials in _keys_by_manufacturer(keys).items():
        for part in chunks(sorted(serials)):
            sql = f"{_SELECT_UNITS} AND serial IN ({', '.join('?' * len(part))})"
            for row in driver_rows(session, sql, (manufacturer, *part)):
                found[(row[0], row[1])] = _state_from_tuple(row)
    return found


def _keys_by_manufacturer(keys: Iterable[UnitKey]) -> dict[str, list[str]]:
    by_maker: dict[str, list[str]] = {}
    for manufacturer, serial in keys:
        by_maker.setdefault(manufacturer, []).append(serial)
    return by_maker


def load_histories(session: Session, keys: Iterable[UnitKey], *, voided: bool = False) -> dict[UnitKey, list[Fact]]:
    """The stored facts of the given units, one query per chunk of units; without the voided ones
    (shared/voids.py) unless ``voided``."""
    histories: dict[UnitKey, list[Fact]] = {}
    for manufacturer, serials in _keys_by_manufacturer(keys).items():
        for part in chunks(serials):
            rows = session.execute(
                select(_history).where(_history.c.manufacturer == manufacturer, _history.c.serial.in_(part))
            )
            for r in rows:
                histories.setdefault((r.manufacturer, r.serial), []).append(
                    Fact(time=as_utc(r.event_time), source=r.event_source, event_id=r.event_id, type=r.event_type,
                         **{c: getattr(r, c) for c in _FACT_COLUMNS}))
    return histories if voided else _without_voided(session, histories)


def _without_voided(session: Session, histories: dict[UnitKey, list[Fact]]) -> dict[UnitKey, list[Fact]]:
    marks = voided_in(session, histories)
    if not marks:
        return histories
    return {key: [f for f in facts if (f.source, f.event_id) not in marks] for key, facts in histories.items()}


def voided_in(session: Session, histories: dict[UnitKey, list[Fact]]) -> dict[tuple[str, str], VoidMark]:
    """The voids (shared/voids.py) that withdraw facts of these histories, by the facts' (source, id).
    Only the movements a void may name are looked up: one query by id, on a table that is mostly empty."""
    return voided_among(session, "inventory", {(f.source, f.event_id, f.type, key[0])
                                               for key, facts in histories.items() for f in facts
                                               if f.type in VOIDABLE_TYPES})


def units_with_event(session: Session, manufacturer: str, source: str, event_id: str) -> list[UnitKey]:
    """The units whose history holds the event (source, id), by index."""
    return [(manufacturer, serial) for (serial,) in session.execute(
        select(_history.c.serial).where(_history.c.event_id == event_id, _history.c.event_source == source,
                                        _history.c.manufacturer == manufacturer))]


_SAVED_UNIT_COLUMNS = ("manufacturer", "serial", "status", "location", "sku", "condition", "stolen", "theft_cases",
                       "recalls", "recalls_seen", "ever_received", "last_event_time", "last_event_source",
                       "last_event_id", "updated_at")


def _last(state: UnitState) -> OrderKey:
    if state.last is None:  # a unit is saved after an event: one it was loaded with, or one applied now
        raise ValueError(f"unit {state.manufacturer}/{state.serial} has no last event to save")
    return state.last


def save_units(session: Session, states: Sequence[UnitState]) -> None:
    now = utcnow()
    insert_tuples(session, _units, _SAVED_UNIT_COLUMNS, [
        (s.manufacturer, s.serial, s.status.value, s.location, s.sku, s.condition, s.stolen,
         _json_text(s.theft_cases), _json_text(s.recalls), _json_text(s.recalls_seen), s.ever_received,
         *_last(s), now)
        for s in states
    ], conflict="update", keys=("manufacturer", "serial"))


_HISTORY_COLUMNS = ("manufacturer", "serial", "event_time", "event_type", "event_source", "event_id", "recorded_at",
                    *_FACT_COLUMNS)


def save_history(session: Session, facts: Sequence[tuple[UnitKey, Fact]]) -> None:
    now = utcnow()
    # The fact's part of a row once per distinct fact (a bulk receipt shares one Fact among all its units).
    parts: dict[int, tuple] = {}
    rows = []
    for key, fact in facts:
        part = parts.get(id(fact))
        if part is None:
            part = parts[id(fact)] = (fact.time, fact.type, fact.source, fact.event_id, now,
                                      *[getattr(fact, c) for c in _FACT_COLUMNS])
        rows.append(key + part)
    # "ignore": a fact already in the history (refold input) stays once.
    insert_tuples(session, _history, _HISTORY_COLUMNS, rows, conflict="ignore")


def anomaly_row(key: UnitKey, anomaly: Anomaly) -> dict:
    fact = anomaly.fact
    return {
        "manufacturer": key[0], "serial": key[1], "kind": anomaly.kind, "detail": anomaly.detail,
        "event_type": fact.type, "event_source": fact.source, "event_id": fact.event_id, "event_time": fact.time,
        "status": "open", "detected_at": utcnow(),
    }


def anomaly_identity(row: dict) -> tuple:
    return (row["manufacturer"], row["serial"], row["kind"], row["event_source"], row["event_id"])


def save_anomalies(session: Session, rows: Sequence[dict]) -> None:
    insert_ignore(session, _anomalies, rows)  # an anomaly already recorded stays recorded once


def set_anomaly_status(session: Session, identities: Iterable[tuple], status: str) -> None:
    """Withdraw anomalies a refold no longer derives, or reopen ones it derives again (one executemany)."""
    params = [{"m": m, "s": s, "k": k, "src": src, "eid": eid, "status": status}
              for m, s, k, src, eid in identities]
    if params:
        session.execute(
            update(_anomalies).where(
                _anomalies.c.manufacturer == bindparam("m"), _anomalies.c.serial == bindparam("s"),
                _anomalies.c.kind == bindparam("k"), _anomalies.c.event_source == bindparam("src"),
                _anomalies.c.event_id == bindparam("eid"),
            ).values(status=bindparam("status")).execution_options(synchronize_session=False),
            params,
        )


def anomaly_identities(session: Session, keys: Iterable[UnitKey]) -> dict[UnitKey, dict[tuple, str]]:
    """Recorded anomalies of the given units: {unit: {identity: status}}."""
    found: dict[UnitKey, dict[tuple, str]] = {}
    for manufacturer, serials in _keys_by_manufacturer(keys).items():
        for part in chunks(serials):
            rows = session.execute(
                select(_anomalies.c.manufacturer, _anomalies.c.serial, _anomalies.c.kind, _anomalies.c.event_source,
                       _anomalies.c.event_id, _anomalies.c.status).where(
                    _anomalies.c.manufacturer == manufacturer, _anomalies.c.serial.in_(part))
            )
            for m, s, kind, source, event_id, status in rows:
                found.setdefault((m, s), {})[(m, s, kind, source, event_id)] = status
    return found


def save_recall(session: Session, recall: RecallScope, fact: Fact) -> None:
    insert_ignore(session, _recalls, [{
        "recall_id": recall.recall_id, "manufacturer": recall.manufacturer,
        "scope": RecallScope.model_validate(recall.model_dump()).model_dump_json(), "scope_time": fact.time,
        "issued_at": fact.time, "event_source": fact.source, "event_id": fact.event_id, "status": "open",
    }])


def get_recall_scope(session: Session, recall_id: str) -> tuple[RecallScope, datetime] | None:
    row = session.execute(select(_recalls.c.scope, _recalls.c.scope_time)
                          .where(_recalls.c.recall_id == recall_id)).first()
    return (RecallScope.model_validate_json(row.scope), row.scope_time) if row else None


def set_recall_scope(session: Session, scope: RecallScope, at: datetime) -> None:
    session.execute(update(_recalls).where(_recalls.c.recall_id == scope.recall_id)
                    .values(scope=scope.model_dump_json(), scope_time=at))


def close_recall(session: Session, recall_id: str, fact: Fact) -> None:
    session.execute(update(_recalls).where(_recalls.c.recall_id == recall_id).values(
        status="closed", closed_at=fact.time, close_source=fact.source, close_event_id=fact.event_id))


def recall_closure(session: Session, recall_id: str) -> Fact | None:
    """The closing fact of a closed recall: units an amendment brings in later get it too."""
    row = session.execute(select(_recalls).where(_recalls.c.recall_id == recall_id,
                                                 _recalls.c.status == "closed")).first()
    if row is None:
        return None
    return Fact(time=row.closed_at, source=row.close_source, event_id=row.close_event_id, type="recall.closed",
                recall_id=recall_id)


@lru_cache(maxsize=1024)
def _scope(text: str) -> RecallScope:
    """A stored scope, parsed once: every batch checks its units against the open recalls."""
    return RecallScope.model_validate_json(text)


# Matchers: which open recalls and stolen reports cover a unit (shared.serial_index), built from the
# store and cached per database; a batch only checks that what it would build is what it has.

MatchIndex = tuple[SerialIndex, dict[Hashable, Fact]]  # the index, and the fact each of its keys stands for
_match_lock = threading.Lock()
_recall_cache: dict[tuple[str, str], tuple[tuple, MatchIndex]] = {}
_theft_cache: dict[tuple[str, str], tuple[tuple, MatchIndex]] = {}


def _cache_key(session: Session, manufacturer: str) -> tuple[str, str]:
    return (session.get_bind().engine.url.render_as_string(hide_password=True), manufacturer)


def open_recall_index(session: Session, manufacturers: Iterable[str]) -> dict[str, MatchIndex]:
    """The open recalls of these manufacturers, indexed, each key a recall id with the fact of its
    broadcast. Runs for every batch: one small query straight through the driver; the scopes are
    read and the index rebuilt only when a manufacturer's open recalls or their scopes changed (an
    amendment sets ``scope_time``)."""
    makers = sorted(set(manufacturers))
    if not makers:
        return {}
    # What identifies each open recall's current scope, without the scope itself (up to 1,000 ranges
    # of JSON each): read only when it changed.
    rows = driver_rows(
        session, "SELECT manufacturer, recall_id, scope_time, length(scope) FROM inventory_recalls "
                 f"WHERE status = 'open' AND manufacturer IN ({', '.join('?' * len(makers))})", makers)
    by_maker: dict[str, list[tuple]] = {}
    for row in rows:
        by_maker.setdefault(row[0], []).append(tuple(row))
    found: dict[str, MatchIndex] = {}
    for maker, recalls in by_maker.items():
        version = tuple(sorted(recalls))
        cache_key = _cache_key(session, maker)
        with _match_lock:
            hit = _recall_cache.get(cache_key)
        if hit is None or hit[0] != version:
            facts: dict[Hashable, Fact] = {}
            selections = []
            stored = driver_rows(
                session, "SELECT recall_id, scope, issued_at, event_source, event_id FROM inventory_recalls "
                         "WHERE status = 'open' AND manufacturer = ?", (maker,))
            for recall_id, scope_text, issued_at, source, event_id in stored:
                scope = _scope(scope_text)
                selections.append(Selection(recall_id, frozenset(scope.skus), tuple(scope.serial_ranges),
                                            frozenset(scope.serials)))
                facts[recall_id] = Fact(time=read_time(issued_at), source=source, event_id=event_id,
                                        type="recall.issued", recall_id=recall_id)
            hit = (version, (SerialIndex.build(selections), facts))
            with _match_lock:
                _recall_cache[cache_key] = hit
        found[maker] = hit[1]
    return found


def save_theft_selection(session: Session, manufacturer: str, selection: SerialRange | list[str],
                         fact: Fact) -> None:
    row = {
        "manufacturer": manufacturer, "event_type": fact.type, "event_time": fact.time, "event_source": fact.source,
        "event_id": fact.event_id, "agency": fact.agency, "case_number": fact.case_number, "note": fact.note,
        "recorded_at": utcnow(), "range_prefix": None, "range_first": None, "range_last": None,
        "range_width": None, "serials": None,
    }
    if isinstance(selection, SerialRange):
        row.update(range_prefix=selection.prefix, range_first=selection.first, range_last=selection.last,
                   range_width=selection.width)
    else:
        row["serials"] = json.dumps(sorted(set(selection)))
    insert_ignore(session, _theft_selections, [row])  # a redelivered report stays one row


def sold_since(session: Session, manufacturer: str, selection: SerialRange | list[str], since: datetime) -> list[UnitKey]:
    """Units of a range or list with a sale at or after ``since`` in their history: the units whose
    anomalies a stolen report (or recovery) of that time may change. Found by index on the unit
    key, filtered exactly here; as many as such sales, not as many as serials in the range."""
    query = select(_history.c.serial).where(_history.c.manufacturer == manufacturer,
                                            _history.c.event_type == "unit.sold", _history.c.event_time >= since)
    found: set[str] = set()
    if isinstance(selection, SerialRange):
        if selection.width is not None:
            low = f"{selection.prefix}{selection.first:0{selection.width}d}"
            high = f"{selection.prefix}{selection.last:0{selection.width}d}"
        else:  # unpadded numbers do not sort as strings: scan the prefix, filter exactly below
            low, high = selection.prefix, selection.prefix + "\x7f"
        found.update(serial for (serial,) in session.execute(query.where(_history.c.serial.between(low, high)))
                     if serial in selection)
    else:
        for part in chunks(sorted(set(selection))):
            found.update(serial for (serial,) in session.execute(query.where(_history.c.serial.in_(part))))
    return [(manufacturer, serial) for serial in sorted(found)]


def _theft_fact(row) -> Fact:
    return Fact(time=as_utc(row.event_time), source=row.event_source, event_id=row.event_id, type=row.event_type,
                agency=row.agency, case_number=row.case_number, note=row.note)


def _theft_selection(row) -> Selection:
    if row.serials is not None:
        return Selection(row.id, serials=frozenset(json.loads(row.serials)))
    return Selection(row.id, ranges=(SerialRange(prefix=row.range_prefix, first=row.range_first,
                                                 last=row.range_last, width=row.range_width),))


def theft_selection_index(session: Session, manufacturers: Iterable[str]) -> dict[str, MatchIndex]:
    """The stolen reports and recoveries over ranges and lists of these manufacturers, indexed, each
    key a row id with its fact. One small query per batch; the rows are read again only when a
    manufacturer's set changed (rows are only ever added: their count and highest id tell)."""
    makers = sorted(set(manufacturers))
    if not makers:
        return {}
    versions = session.execute(
        select(_theft_selections.c.manufacturer, func.count(), func.max(_theft_selections.c.id))
        .where(_theft_selections.c.manufacturer.in_(makers)).group_by(_theft_selections.c.manufacturer)
    ).all()
    found: dict[str, MatchIndex] = {}
    for maker, rows, highest in versions:
        version = (rows, highest)
        cache_key = _cache_key(session, maker)
        with _match_lock:
            hit = _theft_cache.get(cache_key)
        if hit is None or hit[0] != version:
            stored = session.execute(select(_theft_selections).where(_theft_selections.c.manufacturer == maker)).all()
            index = SerialIndex.build(_theft_selection(row) for row in stored)
            hit = (version, (index, {row.id: _theft_fact(row) for row in stored}))
            with _match_lock:
                _theft_cache[cache_key] = hit
        found[maker] = hit[1]
    return found


def theft_facts_covering(session: Session, key: UnitKey) -> list[Fact]:
    index = theft_selection_index(session, [key[0]]).get(key[0])
    if index is None:
        return []
    matcher, facts = index
    return [facts[k] for k in matcher.match(key[1], None)]


def units_covered_by(session: Session, recall: RecallScope) -> dict[UnitKey, UnitState]:
    """Known units a recall covers with their current state, in serial
    order, found by index (serial list, range bounds, sku), not by scan."""
    return covered_units_page(session, recall, after=None, limit=None)[0]


def covered_units_page(session: Session, recall: RecallScope, after: str | None,
                       limit: int | None) -> tuple[dict[UnitKey, UnitState], str | None]:
    """``units_covered_by`` one page at a time: the covered units with serial above ``after`` up to
    a bound, and that bound if more may follow (None: this was the last page). Each range (or sku)
    query reads at most ``limit`` rows (None: all); serial lists are at most 10,000 anyway."""
    maker = recall.manufacturer
    above = after if after is not None else ""
    candidates: list[tuple] = []
    if recall.serials:
        for part in chunks(sorted(s for s in set(recall.serials) if s > above)):
            sql = f"{_SELECT_UNITS} AND serial IN ({', '.join('?' * len(part))})"
            candidates.extend(driver_rows(session, sql, (maker, *part)))
    queries: list[tuple[str, tuple[str | int, ...]]] = []
    for rng in recall.serial_ranges:
        if rng.width is not None:
            low, high = f"{rng.prefix}{rng.first:0{rng.width}d}", f"{rng.prefix}{rng.last:0{rng.width}d}"
        else:  # unpadded numbers do not sort as strings: scan the prefix, filter exactly below
            low, high = rng.prefix, rng.prefix + "\x7f"
        queries.append(("serial >= ? AND serial <= ?", (low, high)))
    if not (recall.serials or recall.serial_ranges):
        skus = sorted(set(recall.skus))
        queries.append((f"sku IN ({', '.join('?' * len(skus))})", tuple(skus)))
    bound: str | None = None  # the lowest last serial of a query that hit its limit
    for condition, params in queries:
        sql = f"{_SELECT_UNITS} AND {condition} AND serial > ? ORDER BY serial"
        if limit is not None:
            sql, params = f"{sql} LIMIT ?", (*params, above, limit)
        else:
            params = (*params, above)
        rows = driver_rows(session, sql, (maker, *params))
        candidates.extend(rows)
        if limit is not None and len(rows) == limit and (bound is None or rows[-1][1] < bound):
            bound = rows[-1][1]
    covered, covers = {}, recall.unit_filter
    for row in sorted(candidates, key=lambda r: r[1]):
        key = (row[0], row[1])
        if (bound is None or row[1] <= bound) and key not in covered and covers(row[1], row[4]):
            covered[key] = _state_from_tuple(row)
    return covered, bound


# Read side (HTTP API)


def get_unit(session: Session, key: UnitKey):
    """The unit's row; with the stolen reports over ranges and lists that cover it and did not reach
    its history yet (they do at its next event) folded in."""
    row = session.execute(
        select(_units).where(_units.c.manufacturer == key[0], _units.c.serial == key[1])
    ).first()
    if row is None:
        return None
    pending = _pending_theft_facts(session, key)
    if not pending:
        return row
    history = load_histories(session, [key]).get(key, [])
    state, _ = fold(key[0], key[1], [*history, *pending])
    return _row_like({**row._mapping, "stolen": state.stolen, "theft_cases": _json_text(state.theft_cases)})


def _row_like(values: dict) -> SimpleNamespace:
    """A value read like a result row: by attribute and through ``_mapping``."""
    return SimpleNamespace(**values, _mapping=values)


def _pending_theft_facts(session: Session, key: UnitKey) -> list[Fact]:
    covering = theft_facts_covering(session, key)
    if not covering:
        return []
    applied = {(r.event_source, r.event_id) for r in session.execute(
        select(_history.c.event_source, _history.c.event_id)
        .where(_history.c.manufacturer == key[0], _history.c.serial == key[1]))}
    return [fact for fact in covering if (fact.source, fact.event_id) not in applied]


def unit_history(session: Session, key: UnitKey) -> list:
    rows: list = list(session.execute(
        select(_history).where(_history.c.manufacturer == key[0], _history.c.serial == key[1])
        .order_by(_history.c.event_time, _history.c.event_source, _history.c.event_id)
    ))
    pending = _pending_theft_facts(session, key)
    if pending:  # shown where they belong in time, as the unit's next event will store them
        rows.extend(_row_like({"manufacturer": key[0], "serial": key[1], "event_time": fact.time,
                               "event_type": fact.type, "event_source": fact.source, "event_id": fact.event_id,
                               "recorded_at": None, **{c: getattr(fact, c) for c in _FACT_COLUMNS}})
                    for fact in pending)
        rows.sort(key=lambda r: (as_utc(r.event_time), r.event_source, r.event_id))
    return rows


def history_voids(session: Session, key: UnitKey, rows: Sequence) -> dict[tuple[str, str], VoidMark]:
    """The voids of the unit's history rows (``unit_history``), by the voided event's (source, id)."""
    return voided_among(session, "inventory", {(r.event_source, r.event_id, r.event_type, key[0]) for r in rows
                                               if r.event_type in VOIDABLE_TYPES})


def unit_anomalies(session: Session, key: UnitKey) -> list:
    return list(session.execute(
        select(_anomalies).where(_anomalies.c.manufacturer == key[0], _anomalies.c.serial == key[1])
        .order_by(_anomalies.c.event_time)
    ))


def list_units(session: Session, *, sku=None, location=None, status=None, manufacturer=None,
               limit: int, offset: int) -> tuple[int, list]:
    conditions = [c for c in (
        _units.c.sku == sku if sku else None,
        _units.c.location == location if location else None,
        _units.c.status == status if status else None,
        _units.c.manufacturer == manufacturer if manufacturer else None,
    ) if c is not None]
    total = session.scalar(select(func.count()).select_from(_units).where(*conditions))
    rows = session.execute(
        select(_units).where(*conditions).order_by(_units.c.manufacturer, _units.c.serial).limit(limit).offset(offset)
    )
    return total or 0, list(rows)


def list_anomalies(session: Session, *, kind=None, status=None, manufacturer=None,
                   limit: int, offset: int) -> tuple[int, list]:
    conditions = [c for c in (
        _anomalies.c.kind == kind if kind else None,
        _anomalies.c.status == status if status else None,
        _anomalies.c.manufacturer == manufacturer if manufacturer else None,
    ) if c is not None]
    total = session.scalar(select(func.count()).select_from(_anomalies).where(*conditions))
    rows = session.execute(
        select(_anomalies).where(*conditions).order_by(_anomalies.c.id.desc()).limit(limit).offset(offset)
    )
    return total or 0, list(rows)


# --- the web console's reads (serialtrack/console) -----------------------------------------------------

def manufacturers(session: Session) -> list[str]:
    """Every manufacturer with a unit, by a loose index scan: one seek per manufacturer on the primary
    key, not a pass over every unit."""
    step = select(func.min(_units.c.manufacturer)).scalar_subquery()
    first = select(step.label("m")).cte("makers", recursive=True)
    following = select(
        select(func.min(_units.c.manufacturer)).where(_units.c.manufacturer > first.c.m).scalar_subquery()
    ).where(first.c.m.is_not(None))
    makers = first.union_all(following)
    return [m for (m,) in session.execute(select(makers.c.m).where(makers.c.m.is_not(None)))]


def units_by_serial(session: Session, serial: str, *, prefix: bool, manufacturer: str | None,
                    limit: int) -> list:
    """Units whose serial is ``serial`` (or starts with it), manufacturer by manufacturer so that each
    query is a seek on the primary key (manufacturer, serial)."""
    rows: list = []
    for maker in [manufacturer] if manufacturer else manufacturers(session):
        match: ColumnElement[bool]
        if prefix:  # >= seeks to the first candidate; LIKE (escaped) keeps only true prefixes in any collation
            match = (_units.c.serial >= serial) & _units.c.serial.startswith(serial, autoescape=True)
        else:
            match = _units.c.serial == serial
        rows += session.execute(select(_units).where(_units.c.manufacturer == maker, match)
                                .order_by(_units.c.serial).limit(limit - len(rows)))
        if len(rows) >= limit:
            break
    return rows


AGING_BANDS_DAYS = (30, 90, 180)  # units in stock by days since their last event (labels in stock_summary)


def stock_summary(session: Session, manufacturer: str | None, now: datetime, top: int = 50) -> dict:
    """Counts by status, location and sku (the ``top`` largest of each), and in-stock units by how long
    nothing has happened to them."""
    scope = [_units.c.manufacturer == manufacturer] if manufacturer else []

    def counts(column, *extra) -> list[tuple]:
        n = func.count().label("n")
        return [tuple(r) for r in session.execute(
            select(column, n).where(*scope, *extra).group_by(column).order_by(n.desc(), column).limit(top))]

    in_stock = _units.c.status == Status.IN_STOCK.value
    bounds = [now - timedelta(days=d) for d in AGING_BANDS_DAYS]
    band = case(*((_units.c.last_event_time >= b, i) for i, b in enumerate(bounds)), else_=len(bounds))
    aging = dict(counts(band, in_stock))
    labels = ("0-30 days", "31-90 days", "91-180 days", "over 180 days")
    return {
        "total": session.scalar(select(func.count()).select_from(_units).where(*scope)) or 0,
        "by_status": counts(_units.c.status),
        "by_location": counts(_units.c.location),
        "by_sku": counts(_units.c.sku),
        "aging": [(label, aging.get(i, 0)) for i, label in enumerate(labels)],
    }

"""Inventory tables and the set-based reads and writes the handlers and the API use.

Stolen reports over a range or a list (``inventory_theft_selections``) are kept as one row per
report, never expanded: a 10,000,000-serial report costs one row. A unit gets such a report as a
fact of its history when the report arrives if the unit is known (``units_in_selection``, by index
on range bounds), or when an event first names it (``theft_selection_index``: an index lookup per
unit, no scan), so a unit received after the report is flagged on arrival. Recalls are matched the
same way (``recall_index``), over every scope a recall has had (``inventory_recall_versions``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from functools import lru_cache
from types import SimpleNamespace

from sqlalchemy import BigInteger, ColumnElement, Index, Table, UniqueConstraint, bindparam, case, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from shared.contracts import VOIDABLE_TYPES, RecallScope
from shared.identity import SerialRange
from shared.serial_index import Selection, SerialIndex
from shared.store import (
    as_utc,
    chunks,
    driver_rows,
    insert_ignore,
    insert_tuples,
    read_time,
    table_of,
    upsert_rows,
    utcnow,
)
from shared.voids import VoidMark, voided_among

from .domain import ON_HAND, Anomaly, Fact, OrderKey, RecallVersion, Status, UnitState, fold
from .reconciliation import CountJudgement, Manifest, ShipmentUnit

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
    stocked_at: datetime | None = None  # stock aging (inventory_0005): domain.UnitState.stocked_at
    times_returned: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class HistoryRow(SQLModel, table=True):
    __tablename__ = "inventory_history"
    __table_args__ = (
        UniqueConstraint("manufacturer", "serial", "event_source", "event_id", name="uq_inventory_history_event"),
        # A stock count finds the units whose history moved after its time (count_candidates).
        Index("ix_inventory_history_event_time", "event_time"),
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


class RecallVersionRow(SQLModel, table=True):
    """Every scope a recall has had: the issue's and each amendment's, kept with its event time. A
    unit's recall facts are worked out from all of them (domain.recall_coverage), so the scope an
    amendment replaced still tells which units it held, and when, whatever order they arrived in."""

    __tablename__ = "inventory_recall_versions"
    __table_args__ = (Index("ix_inventory_recall_versions_manufacturer", "manufacturer"),)
    recall_id: str = Field(primary_key=True, max_length=64)
    event_source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=128)
    manufacturer: str = Field(max_length=64)
    event_type: str = Field(max_length=64)  # recall.issued | recall.amended
    event_time: datetime
    scope: str  # RecallScope JSON
    recorded_at: datetime


class HoldRow(SQLModel, table=True):
    """What inventory last reported of a (recall, unit) hold: when and where the recall first held
    the unit by its full history, or nothing (``held_at`` None: a hold taken back). ``revision``
    counts the reports, so the recalls service keeps the latest whatever order they arrive in."""

    __tablename__ = "inventory_holds"
    manufacturer: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)
    recall_id: str = Field(primary_key=True, max_length=64)
    held_at: datetime | None = None
    location: str | None = Field(default=None, max_length=64)
    revision: int


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


class ShipmentRow(SQLModel, table=True):
    """A ``shipment.dispatched`` (one part of a manifest): its serials as sent (a list, ranges), never
    expanded."""

    __tablename__ = "inventory_shipments"
    __table_args__ = (
        UniqueConstraint("shipment_id", "part", name="uq_inventory_shipment_part"),
        Index("ix_inventory_shipments_manufacturer", "manufacturer", "id"),
        Index("ix_inventory_shipments_to_location", "to_location", "event_time"),
        Index("ix_inventory_shipments_due", "swept_at", "deadline"),
    )
    id: int | None = Field(default=None, primary_key=True)
    shipment_id: str = Field(max_length=64)
    part: int
    manufacturer: str = Field(max_length=64)
    from_location: str = Field(max_length=64)
    to_location: str = Field(max_length=64)
    retailer: str | None = Field(default=None, max_length=64)
    sku: str | None = Field(default=None, max_length=64)
    expected_arrival: str = Field(max_length=10)  # ISO date, as sent
    grace_days: int
    deadline: datetime  # the end of expected_arrival (UTC) plus grace_days
    serials: str | None = None  # JSON list
    serial_ranges: str | None = None  # JSON list of SerialRange
    expected_count: int
    event_time: datetime
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    swept_at: datetime | None = None  # when the deadline was checked: units not received by it are missing
    recorded_at: datetime


class ShipmentUnitRow(SQLModel, table=True):
    """What reconciliation found for one unit of a shipment; only units something happened to."""

    __tablename__ = "inventory_shipment_units"
    __table_args__ = (Index("ix_inventory_shipment_units_unit", "manufacturer", "serial"),)
    shipment_id: str = Field(primary_key=True, max_length=64)
    manufacturer: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)
    outcome: str = Field(max_length=16)  # received | diverted | missing | unexpected
    location: str | None = Field(default=None, max_length=64)  # where it was received
    on_time: bool
    event_time: datetime | None = None  # the receipt (None: missing)
    event_source: str | None = Field(default=None, max_length=256)
    event_id: str | None = Field(default=None, max_length=128)


class CountRow(SQLModel, table=True):
    __tablename__ = "inventory_counts"
    __table_args__ = (Index("ix_inventory_counts_counted_at", "status", "counted_at"),)
    count_id: str = Field(primary_key=True, max_length=64)
    location: str = Field(max_length=64)
    counted_at: datetime
    parts_expected: int | None = None  # known once the final part came
    status: str = Field(max_length=16)  # open (parts missing) | complete (reconciled)
    completed_at: datetime | None = None
    recorded_at: datetime


class CountPartRow(SQLModel, table=True):
    __tablename__ = "inventory_count_parts"
    count_id: str = Field(primary_key=True, max_length=64)
    part: int = Field(primary_key=True)
    final: bool
    units: str  # "manufacturer/serial" lines
    unit_count: int
    event_time: datetime
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    recorded_at: datetime


class CountUnitRow(SQLModel, table=True):
    """A count's judgement of one unit: matched, missing or unexpected."""

    __tablename__ = "inventory_count_units"
    __table_args__ = (Index("ix_inventory_count_units_unit", "manufacturer", "serial"),)
    count_id: str = Field(primary_key=True, max_length=64)
    manufacturer: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)
    result: str = Field(max_length=16)
    seen: bool
    status_at_count: str | None = Field(default=None, max_length=16)
    location_at_count: str | None = Field(default=None, max_length=64)
    detail: str


TABLES: list[Table] = [table_of(UnitRow), table_of(HistoryRow), table_of(AnomalyRow), table_of(RecallRow),
                       table_of(RecallVersionRow), table_of(HoldRow), table_of(TheftSelectionRow),
                       table_of(ShipmentRow), table_of(ShipmentUnitRow), table_of(CountRow), table_of(CountPartRow),
                       table_of(CountUnitRow)]

_units = table_of(UnitRow)
_history = table_of(HistoryRow)
_anomalies = table_of(AnomalyRow)
_recalls = table_of(RecallRow)
_recall_versions = table_of(RecallVersionRow)
_holds = table_of(HoldRow)
_theft_selections = table_of(TheftSelectionRow)
_shipments = table_of(ShipmentRow)
_shipment_units = table_of(ShipmentUnitRow)
_counts = table_of(CountRow)
_count_parts = table_of(CountPartRow)
_count_units = table_of(CountUnitRow)

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
                 "recalls_seen", "ever_received", "last_event_time", "last_event_source", "last_event_id",
                 "stocked_at", "times_returned")
_SELECT_UNITS = f"SELECT {', '.join(_UNIT_COLUMNS)} FROM inventory_units WHERE manufacturer = ?"


def _state_from_tuple(row: tuple) -> UnitState:
    (manufacturer, serial, status, location, sku, condition, theft_cases, recalls, recalls_seen, ever_received,
     last_time, last_source, last_id, stocked_at, times_returned) = row
    return UnitState(
        manufacturer=manufacturer, serial=serial, status=Status(status), location=location, sku=sku,
        condition=condition, theft_cases=_json_tuple(theft_cases), recalls=_json_tuple(recalls),
        recalls_seen=_json_tuple(recalls_seen), ever_received=bool(ever_received),
        last=(read_time(last_time), last_source, last_id), stocked_at=read_time(stocked_at),
        times_returned=times_returned or 0,
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
                       "last_event_id", "updated_at", "stocked_at", "times_returned")


def _last(state: UnitState) -> OrderKey:
    if state.last is None:  # a unit is saved after an event: one it was loaded with, or one applied now
        raise ValueError(f"unit {state.manufacturer}/{state.serial} has no last event to save")
    return state.last


def save_units(session: Session, states: Sequence[UnitState]) -> None:
    now = utcnow()
    insert_tuples(session, _units, _SAVED_UNIT_COLUMNS, [
        (s.manufacturer, s.serial, s.status.value, s.location, s.sku, s.condition, s.stolen,
         _json_text(s.theft_cases), _json_text(s.recalls), _json_text(s.recalls_seen), s.ever_received,
         *_last(s), now, s.stocked_at, s.times_returned)
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


Hold = tuple[datetime | None, str | None]  # (held at, where), or (None, None): not held


def load_holds(session: Session, keys: Iterable[UnitKey]) -> dict[UnitKey, dict[str, tuple[Hold, int]]]:
    """The holds inventory reported for these units: {unit: {recall: ((held at, where), revision)}}."""
    found: dict[UnitKey, dict[str, tuple[Hold, int]]] = {}
    for manufacturer, serials in _keys_by_manufacturer(keys).items():
        for part in chunks(serials):
            rows = session.execute(select(_holds).where(_holds.c.manufacturer == manufacturer,
                                                        _holds.c.serial.in_(part)))
            for row in rows:
                held = (as_utc(row.held_at) if row.held_at is not None else None, row.location)
                found.setdefault((row.manufacturer, row.serial), {})[row.recall_id] = (held, row.revision)
    return found


def save_holds(session: Session, rows: Sequence[dict]) -> None:
    """Each (recall, unit) with its new report; the batch holds the unit's lock (shared/unit_locks.py),
    so the revision read before is still the latest."""
    if rows:
        upsert_rows(session, _holds, rows, keys=("manufacturer", "serial", "recall_id"))


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

RecallRules = tuple[list[RecallVersion], Fact | None]  # a recall's scopes, and its closure if closed
MatchIndex = tuple[SerialIndex, dict[Hashable, Fact]]  # the index, and the fact each of its keys stands for
_match_lock = threading.Lock()
_recall_cache: dict[tuple[str, str], tuple[tuple, tuple[SerialIndex, dict[str, RecallRules]]]] = {}
_theft_cache: dict[tuple[str, str], tuple[tuple, MatchIndex]] = {}


def _cache_key(session: Session, manufacturer: str) -> tuple[str, str]:
    return (session.get_bind().engine.url.render_as_string(hide_password=True), manufacturer)


def save_recall_version(session: Session, scope: RecallScope, fact: Fact) -> None:
    insert_ignore(session, _recall_versions, [{  # a redelivered issue or amendment stays one row
        "recall_id": scope.recall_id, "event_source": fact.source, "event_id": fact.event_id,
        "manufacturer": scope.manufacturer, "event_type": fact.type, "event_time": fact.time,
        "scope": RecallScope.model_validate(scope.model_dump()).model_dump_json(), "recorded_at": utcnow(),
    }])


def _recall_version(recall_id: str, event_type: str, time: datetime, source: str, event_id: str,
                    scope_text: str) -> RecallVersion:
    fact = Fact(time=time, source=source, event_id=event_id, type=event_type, recall_id=recall_id)
    if event_type == "recall.issued":
        return RecallVersion(_scope(scope_text).unit_filter, fact, None)
    return RecallVersion(_scope(scope_text).unit_filter, replace(fact, disposition="covered"),
                         replace(fact, disposition="released"))


def recall_rules(session: Session, recall_id: str) -> tuple[list[RecallScope], RecallRules]:
    """A recall's scopes as stored (to find its units) and as rules (to work out their facts)."""
    rows = driver_rows(session, "SELECT event_type, event_time, event_source, event_id, scope "
                                "FROM inventory_recall_versions WHERE recall_id = ?", (recall_id,))
    scopes = [_scope(scope_text) for *_, scope_text in rows]
    versions = [_recall_version(recall_id, kind, read_time(time), source, event_id, scope_text)
                for kind, time, source, event_id, scope_text in rows]
    return scopes, (versions, recall_closure(session, recall_id))


def recall_index(session: Session, manufacturers: Iterable[str]) -> dict[str, tuple[SerialIndex, dict[str, RecallRules]]]:
    """Every recall of these manufacturers, open or closed, indexed by every scope it ever had: a
    match names the recall ids whose facts a unit must have. Runs for every batch: two small
    queries straight through the driver; the scopes are read and the index rebuilt only when a
    manufacturer's scopes or closures changed (rows are only ever added, or closed)."""
    makers = sorted(set(manufacturers))
    if not makers:
        return {}
    marks = ', '.join('?' * len(makers))
    changes: dict[str, list] = {}
    for maker, count, latest in driver_rows(
            session, "SELECT manufacturer, count(*), max(recorded_at) FROM inventory_recall_versions "
                     f"WHERE manufacturer IN ({marks}) GROUP BY manufacturer", makers):
        changes[maker] = [count, str(latest)]
    for maker, count, latest in driver_rows(
            session, "SELECT manufacturer, count(*), max(close_event_id) FROM inventory_recalls "
                     f"WHERE status = 'closed' AND manufacturer IN ({marks}) GROUP BY manufacturer", makers):
        if maker in changes:
            changes[maker] += [count, latest]
    found: dict[str, tuple[SerialIndex, dict[str, RecallRules]]] = {}
    for maker, change in changes.items():
        version = tuple(change)
        cache_key = _cache_key(session, maker)
        with _match_lock:
            hit = _recall_cache.get(cache_key)
        if hit is None or hit[0] != version:
            rules: dict[str, RecallRules] = {}
            selections = []
            closures = {recall_id: Fact(time=read_time(time), source=source, event_id=event_id,
                                        type="recall.closed", recall_id=recall_id)
                        for recall_id, time, source, event_id in driver_rows(
                            session, "SELECT recall_id, closed_at, close_source, close_event_id FROM "
                                     "inventory_recalls WHERE status = 'closed' AND manufacturer = ?", (maker,))}
            for n, (recall_id, kind, time, source, event_id, scope_text) in enumerate(driver_rows(
                    session, "SELECT recall_id, event_type, event_time, event_source, event_id, scope "
                             "FROM inventory_recall_versions WHERE manufacturer = ?", (maker,))):
                scope = _scope(scope_text)
                selections.append(Selection((recall_id, n), frozenset(scope.skus), tuple(scope.serial_ranges),
                                            frozenset(scope.serials)))
                versions, _ = rules.setdefault(recall_id, ([], closures.get(recall_id)))
                versions.append(_recall_version(recall_id, kind, read_time(time), source, event_id, scope_text))
            hit = (version, (SerialIndex.build(selections), rules))
            with _match_lock:
                _recall_cache[cache_key] = hit
        found[maker] = hit[1]
    return found


def recall_facts_applied(session: Session, keys: Iterable[UnitKey]) -> dict[UnitKey, set[tuple[str, str]]]:
    """The recall facts in these units' histories, as (source, event id) per unit."""
    by_maker: dict[str, list[str]] = {}
    for maker, serial in keys:
        by_maker.setdefault(maker, []).append(serial)
    found: dict[UnitKey, set[tuple[str, str]]] = {}
    for maker, serials in by_maker.items():
        for part in chunks(sorted(serials)):
            sql = ("SELECT serial, event_source, event_id FROM inventory_history WHERE manufacturer = ? "
                   f"AND serial IN ({', '.join('?' * len(part))}) AND recall_id IS NOT NULL")
            for serial, source, event_id in driver_rows(session, sql, (maker, *part)):
                found.setdefault((maker, serial), set()).add((source, event_id))
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


def units_in_selection(session: Session, manufacturer: str,
                       selection: SerialRange | list[str]) -> dict[UnitKey, UnitState]:
    """The known units of a range or a list, with their state, found by index (range bounds, the
    serials themselves), as many as are known, not as many as serials in the range."""
    if isinstance(selection, SerialRange):
        scope = RecallScope.model_construct(recall_id="", manufacturer=manufacturer, skus=[],
                                            serial_ranges=[selection], serials=[])
    else:
        scope = RecallScope.model_construct(recall_id="", manufacturer=manufacturer, skus=[], serial_ranges=[],
                                            serials=selection)
    return covered_units_page(session, scope, after=None, limit=None)[0]  # a scope of serials alone


def units_with_event_since(session: Session, manufacturer: str, selection: SerialRange | list[str],
                           since: datetime, event_type: str) -> list[UnitKey]:
    """Units of a range or list with an ``event_type`` at or after ``since`` in their history. Found
    by index on the unit key, filtered exactly here; as many as such events, not as many as serials
    in the range."""
    query = select(_history.c.serial).where(_history.c.manufacturer == manufacturer,
                                            _history.c.event_type == event_type, _history.c.event_time >= since)
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


def units_of_any_page(session: Session, scopes: Sequence[RecallScope], after: str | None,
                      limit: int | None) -> tuple[dict[UnitKey, UnitState], str | None]:
    """``covered_units_page`` over several scopes of one recall: the known units any of them covers,
    one page (up to the lowest bound any scope's query reached) at a time."""
    found: dict[UnitKey, UnitState] = {}
    bound: str | None = None
    for scope in scopes:
        covered, reached = covered_units_page(session, scope, after, limit)
        found.update(covered)
        if reached is not None and (bound is None or reached < bound):
            bound = reached
    if bound is not None:
        found = {key: state for key, state in found.items() if key[1] <= bound}
    return dict(sorted(found.items())), bound


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


# --- shipment manifests (reconciliation.judge_manifests) -----------------------------------------------

def _manifest_selection(row) -> Selection:
    ranges = tuple(SerialRange.model_validate(r) for r in json.loads(row.serial_ranges)) if row.serial_ranges else ()
    serials = frozenset(json.loads(row.serials)) if row.serials else frozenset()
    return Selection(row.id, ranges=ranges, serials=serials)


def _manifest(row) -> Manifest:
    return Manifest(row.shipment_id, row.to_location, row.retailer,
                    (as_utc(row.event_time), row.event_source, row.event_id), as_utc(row.deadline),
                    row.swept_at is not None)


_SHIPMENT_TERMS = ("manufacturer", "from_location", "to_location", "retailer", "expected_arrival", "grace_days")


def save_shipment(session: Session, row: dict) -> str | None:
    """Store a part of a manifest, once per (shipment id, part). Returns None when stored (or a
    redelivery of the same event), else why not: the part came already in another event (the first
    one stands), or the shipment's other parts name other places, maker or dates."""
    c = _shipments.c
    others = session.execute(select(*(getattr(c, t) for t in _SHIPMENT_TERMS), c.part)
                             .where(c.shipment_id == row["shipment_id"], c.part != row["part"]).limit(1)).first()
    if others is not None and tuple(others[:-1]) != tuple(row[t] for t in _SHIPMENT_TERMS):
        return (f"part {others.part} of shipment {row['shipment_id']} says "
                + ", ".join(f"{t} {v}" for t, v in zip(_SHIPMENT_TERMS, others[:-1], strict=True)))
    insert_ignore(session, _shipments, [row])
    held = session.execute(select(c.event_source, c.event_id)
                           .where(c.shipment_id == row["shipment_id"], c.part == row["part"])).one()
    if (held.event_source, held.event_id) == (row["event_source"], row["event_id"]):
        return None
    return f"part {row['part']} of shipment {row['shipment_id']} came already in {held.event_source} {held.event_id}"


ManifestIndex = tuple[SerialIndex, dict[Hashable, Manifest]]
_shipment_cache: dict[tuple[str, str], tuple[tuple, ManifestIndex]] = {}


def shipment_index(session: Session, manufacturers: Iterable[str]) -> dict[str, ManifestIndex]:
    """The manifests of these manufacturers, indexed (a unit's lookup is one index probe). Rebuilt
    when a manufacturer's manifests changed: one added, or one's deadline checked."""
    makers = sorted(set(manufacturers))
    if not makers:
        return {}
    versions = session.execute(
        select(_shipments.c.manufacturer, func.count(), func.max(_shipments.c.id), func.count(_shipments.c.swept_at))
        .where(_shipments.c.manufacturer.in_(makers)).group_by(_shipments.c.manufacturer)
    ).all()
    found: dict[str, ManifestIndex] = {}
    for maker, rows, highest, swept in versions:
        version = (rows, highest, swept)
        cache_key = _cache_key(session, maker)
        with _match_lock:
            hit = _shipment_cache.get(cache_key)
        if hit is None or hit[0] != version:
            stored = session.execute(select(_shipments).where(_shipments.c.manufacturer == maker)).all()
            manifests: dict[Hashable, Manifest] = {r.id: _manifest(r) for r in stored}
            hit = (version, (SerialIndex.build(_manifest_selection(r) for r in stored), manifests))
            with _match_lock:
                _shipment_cache[cache_key] = hit
        found[maker] = hit[1]
    return found


def manifests_to(session: Session, locations: Iterable[str]) -> dict[str, list[Manifest]]:
    """Every manifest to each location: whether it takes manifests, and what it expected."""
    wanted = sorted(set(locations))
    found: dict[str, list[Manifest]] = {}
    c = _shipments.c  # not the serials: a location may have had thousands of manifests
    columns = (c.shipment_id, c.to_location, c.retailer, c.event_time, c.event_source, c.event_id, c.deadline,
               c.swept_at)
    for part in chunks(wanted):
        for row in session.execute(select(*columns).where(c.to_location.in_(part))):
            found.setdefault(row.to_location, []).append(_manifest(row))
    return found


def shipment_units_of(session: Session, keys: Iterable[UnitKey]) -> dict[UnitKey, set[tuple]]:
    """The recorded shipment rows of these units, each as ``_shipment_unit_tuple`` gives it."""
    found: dict[UnitKey, set[tuple]] = {}
    for manufacturer, serials in _keys_by_manufacturer(keys).items():
        for part in chunks(serials):
            rows = session.execute(select(_shipment_units).where(
                _shipment_units.c.manufacturer == manufacturer, _shipment_units.c.serial.in_(part)))
            for r in rows:
                found.setdefault((r.manufacturer, r.serial), set()).add(
                    (r.shipment_id, r.manufacturer, r.serial, r.outcome, r.location, bool(r.on_time),
                     as_utc(r.event_time), r.event_source, r.event_id))
    return found


def shipment_unit_tuple(key: UnitKey, row: ShipmentUnit) -> tuple:
    receipt = row.receipt
    return (row.shipment_id, key[0], key[1], row.outcome, receipt.location if receipt else None, row.on_time,
            *(receipt.order if receipt else (None, None, None)))


_SHIPMENT_UNIT_COLUMNS = ("shipment_id", "manufacturer", "serial", "outcome", "location", "on_time", "event_time",
                          "event_source", "event_id")


def replace_shipment_units(session: Session, stale: Sequence[UnitKey], rows: Sequence[tuple]) -> None:
    """The shipment rows of units judged again: those of ``stale`` deleted, ``rows`` inserted."""
    for manufacturer, serials in _keys_by_manufacturer(stale).items():
        for part in chunks(serials):
            session.execute(_shipment_units.delete().where(_shipment_units.c.manufacturer == manufacturer,
                                                           _shipment_units.c.serial.in_(part)))
    insert_tuples(session, _shipment_units, _SHIPMENT_UNIT_COLUMNS, rows)


def due_shipments(session: Session, now: datetime, limit: int) -> list:
    """Manifests whose deadline passed and was not checked yet, earliest first."""
    return list(session.execute(select(_shipments).where(_shipments.c.swept_at.is_(None), _shipments.c.deadline <= now)
                                .order_by(_shipments.c.deadline, _shipments.c.id).limit(limit)))


def mark_swept(session: Session, row_id: int, now: datetime) -> None:
    session.execute(update(_shipments).where(_shipments.c.id == row_id).values(swept_at=now))


def shipment_serials(row) -> Iterable[str]:
    """Every serial of a stored manifest, listed ones first (each once)."""
    listed: list[str] = json.loads(row.serials) if row.serials else []
    seen = set(listed)
    yield from listed
    for r in json.loads(row.serial_ranges) if row.serial_ranges else ():
        yield from (serial for serial in SerialRange.model_validate(r) if serial not in seen)


def known_units(session: Session, manufacturer: str, serials: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for part in chunks(serials):
        found.update(serial for (serial,) in session.execute(
            select(_units.c.serial).where(_units.c.manufacturer == manufacturer, _units.c.serial.in_(part))))
    return found


def get_shipment(session: Session, shipment_id: str) -> list:
    """The parts of a shipment (none: unknown), first part first."""
    return list(session.execute(select(_shipments).where(_shipments.c.shipment_id == shipment_id)
                                .order_by(_shipments.c.part)))


def shipment_totals(session: Session, shipment_id: str) -> dict[tuple[str, bool], int]:
    return {(outcome, bool(on_time)): n for outcome, on_time, n in session.execute(
        select(_shipment_units.c.outcome, _shipment_units.c.on_time, func.count())
        .where(_shipment_units.c.shipment_id == shipment_id)
        .group_by(_shipment_units.c.outcome, _shipment_units.c.on_time))}


def shipment_unit_rows(session: Session, shipment_id: str, outcome: str, limit: int, offset: int) -> list:
    return list(session.execute(select(_shipment_units).where(_shipment_units.c.shipment_id == shipment_id,
                                                              _shipment_units.c.outcome == outcome)
                                .order_by(_shipment_units.c.manufacturer, _shipment_units.c.serial)
                                .limit(limit).offset(offset)))


# --- stock counts (reconciliation.judge_count) ---------------------------------------------------------

def save_count_part(session: Session, count_id: str, location: str, counted_at: datetime, part: int, final: bool,
                    units: Sequence[UnitKey], event: tuple[datetime, str, str]) -> str | None:
    """Store one part of a count. Returns None when stored (or a redelivery), else why it was not:
    a part already held from another event, or a part of the same count id naming another location
    or time (the first part to arrive fixed them)."""
    insert_ignore(session, _counts, [{"count_id": count_id, "location": location, "counted_at": counted_at,
                                      "parts_expected": None, "status": "open", "completed_at": None,
                                      "recorded_at": utcnow()}])
    count = session.execute(select(_counts).where(_counts.c.count_id == count_id)).one()
    if count.location != location or as_utc(count.counted_at) != counted_at:
        return (f"count {count_id} is at {count.location} on {as_utc(count.counted_at).isoformat()}; this part says "
                f"{location} on {counted_at.isoformat()}")
    insert_ignore(session, _count_parts, [{
        "count_id": count_id, "part": part, "final": final, "units": "\n".join(f"{m}/{s}" for m, s in units),
        "unit_count": len(units), "event_time": event[0], "event_source": event[1], "event_id": event[2],
        "recorded_at": utcnow(),
    }])
    held = session.execute(select(_count_parts.c.event_source, _count_parts.c.event_id).where(
        _count_parts.c.count_id == count_id, _count_parts.c.part == part)).one()
    if (held.event_source, held.event_id) != (event[1], event[2]):
        return f"part {part} of count {count_id} came already in {held.event_source} {held.event_id}"
    if final:
        session.execute(update(_counts).where(_counts.c.count_id == count_id).values(parts_expected=part))
    return None


def count_ready(session: Session, count_id: str):
    """The count when every part of it is stored and it is not reconciled yet, else None."""
    count = session.execute(select(_counts).where(_counts.c.count_id == count_id)).one()
    if count.status != "open" or count.parts_expected is None:
        return None
    parts = session.scalar(select(func.count()).select_from(_count_parts).where(_count_parts.c.count_id == count_id))
    return count if parts == count.parts_expected else None


def counted_units(session: Session, count_id: str) -> set[UnitKey]:
    seen: set[UnitKey] = set()
    for (text,) in session.execute(select(_count_parts.c.units).where(_count_parts.c.count_id == count_id)):
        for line in text.split("\n") if text else ():
            manufacturer, _, serial = line.partition("/")
            seen.add((manufacturer, serial))
    return seen


def count_candidates(session: Session, location: str, counted_at: datetime) -> tuple[set[UnitKey], set[UnitKey]]:
    """Units that may have been on hand at ``location`` at ``counted_at``: those on hand there now
    with nothing after ``counted_at``, and those whose history moved after ``counted_at`` (the
    event-time index) and had been at ``location`` before it (they are folded back to then)."""
    on_hand = [s.value for s in ON_HAND]
    here = {(m, s) for m, s in session.execute(
        select(_units.c.manufacturer, _units.c.serial).where(_units.c.location == location,
                                                             _units.c.status.in_(on_hand)))}
    before = _history.alias("before")
    was_here = select(before.c.id).where(before.c.manufacturer == _history.c.manufacturer,
                                         before.c.serial == _history.c.serial, before.c.location == location,
                                         before.c.event_time <= counted_at).exists()
    moved = {(m, s) for m, s in session.execute(
        select(_history.c.manufacturer, _history.c.serial).where(_history.c.event_time > counted_at, was_here)
        .distinct())}
    return here, moved


def complete_count(session: Session, count_id: str) -> None:
    session.execute(update(_counts).where(_counts.c.count_id == count_id)
                    .values(status="complete", completed_at=utcnow()))


def counts_judged_since(session: Session, earliest: datetime) -> list:
    """Reconciled counts at or after ``earliest``: a late fact at or before one changes its judgement."""
    return list(session.execute(select(_counts).where(_counts.c.status == "complete",
                                                      _counts.c.counted_at >= earliest)))


def count_judgements(session: Session, count_id: str, keys: Iterable[UnitKey]) -> dict[UnitKey, tuple]:
    found: dict[UnitKey, tuple] = {}
    for manufacturer, serials in _keys_by_manufacturer(keys).items():
        for part in chunks(serials):
            for r in session.execute(select(_count_units).where(
                    _count_units.c.count_id == count_id, _count_units.c.manufacturer == manufacturer,
                    _count_units.c.serial.in_(part))):
                found[(r.manufacturer, r.serial)] = (r.result, bool(r.seen), r.status_at_count, r.location_at_count,
                                                     r.detail)
    return found


_COUNT_UNIT_COLUMNS = ("count_id", "manufacturer", "serial", "result", "seen", "status_at_count",
                       "location_at_count", "detail")


def save_count_judgements(session: Session, count_id: str, judged: dict[UnitKey, CountJudgement | None]) -> None:
    """Upsert each unit's judgement; None deletes it (the unit no longer concerns the count)."""
    gone = [key for key, j in judged.items() if j is None]
    for manufacturer, serials in _keys_by_manufacturer(gone).items():
        for part in chunks(serials):
            session.execute(_count_units.delete().where(_count_units.c.count_id == count_id,
                                                        _count_units.c.manufacturer == manufacturer,
                                                        _count_units.c.serial.in_(part)))
    insert_tuples(session, _count_units, _COUNT_UNIT_COLUMNS, [
        (count_id, key[0], key[1], j.result, j.seen, j.status, j.location, j.detail)
        for key, j in sorted(judged.items()) if j is not None
    ], conflict="update", keys=("count_id", "manufacturer", "serial"))


def get_count(session: Session, count_id: str):
    return session.execute(select(_counts).where(_counts.c.count_id == count_id)).first()


def count_parts(session: Session, count_id: str) -> list:
    return list(session.execute(select(_count_parts.c.part, _count_parts.c.final, _count_parts.c.unit_count)
                                .where(_count_parts.c.count_id == count_id).order_by(_count_parts.c.part)))


def count_unit_rows(session: Session, count_id: str, result: str | None = None, limit: int | None = None,
                    offset: int = 0) -> Iterable:
    """A count's judgements, by result then unit; all of them (streamed) without ``limit``."""
    conditions = [_count_units.c.count_id == count_id]
    if result:
        conditions.append(_count_units.c.result == result)
    query = select(_count_units).where(*conditions).order_by(
        _count_units.c.result, _count_units.c.manufacturer, _count_units.c.serial)
    if limit is None:
        return session.execute(query.execution_options(yield_per=1000))
    return list(session.execute(query.limit(limit).offset(offset)))


def count_totals(session: Session, count_id: str) -> dict[str, int]:
    return {result: n for result, n in session.execute(
        select(_count_units.c.result, func.count()).where(_count_units.c.count_id == count_id)
        .group_by(_count_units.c.result))}

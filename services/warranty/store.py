"""Warranty tables and the set-based reads and writes the handlers and the API use.

What is stored is only what decisions need: per-unit facts (sales, returns, registrations, single or
listed receipts and stolen reports), ranges kept as one row each (a receipt of a million serials is
one row, matched by prefix), policy versions, recall events, claims, return requests, their decision
versions, and the recall notices already sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Table, UniqueConstraint, and_, false, func, or_, select, tuple_, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from shared.contracts import (
    VOIDABLE_TYPES,
    RecallAmended,
    RecallIssued,
    ReturnRequested,
    UnitSold,
    WarrantyClaimSubmitted,
)
from shared.envelope import Event
from shared.identity import SerialRange
from shared.store import as_utc, chunks, insert_ignore, insert_rows, table_of, upsert_rows, utcnow
from shared.unit_locks import UnitLocks, with_keys
from shared.voids import VoidMark, voided_among

from .domain import ClaimRequest, Fact, Policy, PriorClaim, RecallEvent, ReturnRequest

UnitKey = tuple[str, str]


class FactRow(SQLModel, table=True):
    __tablename__ = "warranty_facts"
    __table_args__ = (
        UniqueConstraint("manufacturer", "serial", "event_source", "event_id", name="uq_warranty_facts_event"),
        Index("ix_warranty_facts_unit", "manufacturer", "serial"),
        Index("ix_warranty_facts_receipt", "receipt_id"),
        Index("ix_warranty_facts_sku", "manufacturer", "event_type", "sku"),
        # The sell-through report (warranty_0004): a manufacturer's sales or returns of a period, in time order.
        Index("ix_warranty_facts_period", "manufacturer", "event_type", "event_time", "id"),
        # The units an event reached, by its (source, id): what a void decides again (warranty_0003).
        Index("ix_warranty_facts_event_ref", "event_id", "event_source"),
    )
    id: int | None = Field(default=None, primary_key=True)
    manufacturer: str = Field(max_length=64)
    serial: str = Field(max_length=64)
    event_time: datetime
    event_type: str = Field(max_length=64)
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    sku: str | None = None
    location: str | None = None
    receipt_id: str | None = None
    customer_id: str | None = None
    agency: str | None = None
    case_number: str | None = None
    recorded_at: datetime
    # Who vouched for the event (warranty_0002): the kid of the key whose signature the consumer verified,
    # and whether that key was trusted for ownership transfers when the event was applied. Stored, not
    # looked up again, so a decision stays reproducible after the key is revoked or re-flagged.
    signed_by: str | None = Field(default=None, max_length=128)
    trusted_transfer: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    terminal_id: str | None = None  # a sale's till (warranty_0004): the channel of the sell-through report


class RangeRow(SQLModel, table=True):
    """A receipt or stolen report of a serial range: one row, never expanded."""

    __tablename__ = "warranty_ranges"
    __table_args__ = (
        UniqueConstraint("event_source", "event_id", name="uq_warranty_ranges_event"),
        Index("ix_warranty_ranges_prefix", "manufacturer", "prefix"),
    )
    id: int | None = Field(default=None, primary_key=True)
    manufacturer: str = Field(max_length=64)
    prefix: str = Field(max_length=64)
    first: int = Field(sa_type=BigInteger)  # serial numbers outgrow 32 bits
    last: int = Field(sa_type=BigInteger)  # serial numbers outgrow 32 bits
    width: int | None = None
    event_time: datetime
    event_type: str = Field(max_length=64)
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    sku: str | None = None
    location: str | None = None
    agency: str | None = None
    case_number: str | None = None
    recorded_at: datetime
    signed_by: str | None = Field(default=None, max_length=128)  # see FactRow.signed_by


class PolicyRow(SQLModel, table=True):
    __tablename__ = "warranty_policies"
    event_source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=128)
    policy_id: str = Field(max_length=64)
    manufacturer: str = Field(max_length=64, index=True)
    sku: str | None = None
    coverage_days: int
    return_window_days: int
    effective_from: datetime
    event_time: datetime


class RecallEventRow(SQLModel, table=True):
    __tablename__ = "warranty_recall_events"
    event_source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=128)
    recall_id: str = Field(max_length=64, index=True)
    manufacturer: str = Field(max_length=64, index=True)
    event_type: str = Field(max_length=64)
    event_time: datetime
    data: str  # the event's data as JSON


class ClaimRow(SQLModel, table=True):
    __tablename__ = "warranty_claims"
    __table_args__ = (
        Index("ix_warranty_claims_unit", "manufacturer", "serial"),
        Index("ix_warranty_claims_customer", "customer_id", "submitted_at"),
        Index("ix_warranty_claims_location", "location", "submitted_at"),
        Index("ix_warranty_claims_status", "status", "manufacturer"),
    )
    claim_id: str = Field(primary_key=True, max_length=64)
    manufacturer: str = Field(max_length=64)
    serial: str = Field(max_length=64)
    customer_id: str = Field(max_length=64)
    issue: str
    issue_key: str
    location: str | None = None
    submitted_at: datetime
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    status: str | None = Field(default=None, max_length=16)
    reasons: str = "[]"
    facts: str = "{}"
    version: int = 0
    decision_id: str | None = None
    decided_at: datetime | None = None


class ReturnRow(SQLModel, table=True):
    __tablename__ = "warranty_returns"
    __table_args__ = (Index("ix_warranty_returns_unit", "manufacturer", "serial"),)
    request_id: str = Field(primary_key=True, max_length=64)
    manufacturer: str = Field(max_length=64)
    serial: str = Field(max_length=64)
    receipt_id: str = Field(max_length=64)
    location: str = Field(max_length=64)
    customer_id: str | None = None
    terminal_id: str | None = None
    reason: str = ""
    requested_at: datetime
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    status: str | None = Field(default=None, max_length=16)
    reasons: str = "[]"
    facts: str = "{}"
    version: int = 0
    decision_id: str | None = None
    decided_at: datetime | None = None


class DecisionRow(SQLModel, table=True):
    """Every version of every decision, as emitted."""

    __tablename__ = "warranty_decisions"
    __table_args__ = (UniqueConstraint("kind", "reference", "version", name="uq_warranty_decisions_version"),)
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=8)  # claim | return
    reference: str = Field(max_length=64)
    version: int
    status: str = Field(max_length=16)
    reasons: str
    facts: str
    event_id: str = Field(max_length=128)
    supersedes: str | None = None
    decided_at: datetime


class RecallNoticeRow(SQLModel, table=True):
    """One notice per (recall, unit): recall.owner_notified or recall.owner_unknown was emitted."""

    __tablename__ = "warranty_recall_notices"
    recall_id: str = Field(primary_key=True, max_length=64)
    manufacturer: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)
    outcome: str = Field(max_length=16)  # notified | unknown
    customer_id: str | None = None
    event_id: str = Field(max_length=128)
    created_at: datetime


TABLES: list[Table] = [table_of(t) for t in (
    FactRow, RangeRow, PolicyRow, RecallEventRow, ClaimRow, ReturnRow, DecisionRow, RecallNoticeRow)]

_facts = table_of(FactRow)
_ranges = table_of(RangeRow)
_policies = table_of(PolicyRow)
_recall_events = table_of(RecallEventRow)
_claims = table_of(ClaimRow)
_returns = table_of(ReturnRow)
_decisions = table_of(DecisionRow)
_notices = table_of(RecallNoticeRow)

_FACT_COLUMNS = ("sku", "location", "receipt_id", "customer_id", "agency", "case_number", "signed_by",
                 "trusted_transfer", "terminal_id")


# Locks: besides the units its events name (shared/unit_locks.py), a batch holds the keys a
# decision reads across units: a sale or return request its receipt (the returns on a receipt are
# decided with its sales), a claim its customer and its store (the fraud signals count their claims).


def lock_keys(locks: UnitLocks, event: Event) -> None:
    d = event.data
    if isinstance(d, (UnitSold, ReturnRequested)):
        locks.key("receipt", d.manufacturer, d.receipt_id, manufacturer=d.manufacturer)
    elif isinstance(d, WarrantyClaimSubmitted):
        locks.key("customer", d.customer_id)
        if d.location:
            locks.key("location", d.location)


LOCKS = with_keys(lock_keys)


# Writes


def save_facts(session: Session, facts: Sequence[tuple[UnitKey, Fact]]) -> None:
    now = utcnow()
    templates: dict[int, dict] = {}  # one dict per distinct fact: a listed receipt shares one Fact
    rows = []
    for (manufacturer, serial), fact in facts:
        template = templates.get(id(fact))
        if template is None:
            template = templates[id(fact)] = {
                "event_time": fact.time, "event_type": fact.type, "event_source": fact.source,
                "event_id": fact.event_id, "recorded_at": now, **{c: getattr(fact, c) for c in _FACT_COLUMNS},
            }
        rows.append({**template, "manufacturer": manufacturer, "serial": serial})
    for part in chunks(rows, 5000):
        insert_ignore(session, _facts, part)


def save_ranges(session: Session, ranges: Sequence[tuple[str, SerialRange, Fact]]) -> None:
    now = utcnow()
    insert_ignore(session, _ranges, [
        {"manufacturer": maker, "prefix": rng.prefix, "first": rng.first, "last": rng.last, "width": rng.width,
         "event_time": fact.time, "event_type": fact.type, "event_source": fact.source, "event_id": fact.event_id,
         "recorded_at": now, **{c: getattr(fact, c) for c in ("sku", "location", "agency", "case_number", "signed_by")}}
        for maker, rng, fact in ranges
    ])


def save_policies(session: Session, rows: Sequence[dict]) -> None:
    insert_ignore(session, _policies, rows)


def save_recall_events(session: Session, rows: Sequence[dict]) -> None:
    insert_ignore(session, _recall_events, rows)


def add_new(session: Session, kind: str, rows: Sequence[dict]) -> list[dict]:
    """Insert claims (or return requests) not known yet; returns the rows inserted. The claim_id
    (request_id) is the identity: a second submission under a known id is ignored."""
    table, key = (_claims, "claim_id") if kind == "claim" else (_returns, "request_id")
    unique: dict[str, dict] = {}
    for row in rows:
        unique.setdefault(row[key], row)
    known: set[str] = set()
    for part in chunks(list(unique)):
        known.update(session.scalars(select(table.c[key]).where(table.c[key].in_(part))))
    fresh = [row for k, row in unique.items() if k not in known]
    insert_rows(session, table, fresh)
    return fresh


def save_requests(session: Session, kind: str, rows: Sequence[dict]) -> None:
    table, key = (_claims, "claim_id") if kind == "claim" else (_returns, "request_id")
    upsert_rows(session, table, rows, keys=(key,))


def save_decisions(session: Session, rows: Sequence[dict]) -> None:
    insert_ignore(session, _decisions, rows)


def save_notices(session: Session, rows: Sequence[dict]) -> None:
    insert_ignore(session, _notices, rows)


# Reads for decisions


def _by_maker(keys: Iterable[UnitKey]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for manufacturer, serial in keys:
        found.setdefault(manufacturer, []).append(serial)
    return found


def _fact(row) -> Fact:
    values: dict[str, Any] = {c: getattr(row, c, None) for c in _FACT_COLUMNS}
    values["trusted_transfer"] = bool(values["trusted_transfer"])  # ranges have no such column
    return Fact(time=as_utc(row.event_time), source=row.event_source, event_id=row.event_id, type=row.event_type,
                **values)


def _range(row) -> SerialRange:
    return SerialRange.model_construct(prefix=row.prefix, first=row.first, last=row.last, width=row.width)


def load_facts(session: Session, keys: Iterable[UnitKey], *, voided: bool = False) -> dict[UnitKey, list[Fact]]:
    """Every fact of the given units: their own rows plus the ranges that contain them, found through
    the index on (manufacturer, prefix) by the prefixes that begin the serials. Without the voided
    ones (shared/voids.py) unless ``voided``: decisions never see a withdrawn sale or receipt."""
    keys = sorted(set(keys))
    found: dict[UnitKey, list[Fact]] = {key: [] for key in keys}
    for manufacturer, serials in _by_maker(keys).items():
        for part in chunks(serials):
            for row in session.execute(select(_facts).where(_facts.c.manufacturer == manufacturer,
                                                            _facts.c.serial.in_(part))):
                found[(row.manufacturer, row.serial)].append(_fact(row))
        # Range prefixes are few (one per bulk receipt or report family): read them, keep the ones that
        # begin one of our serials, then fetch only those ranges.
        known = set(session.scalars(select(_ranges.c.prefix).where(_ranges.c.manufacturer == manufacturer)
                                    .distinct()))
        prefixes = sorted({serial[:n] for serial in serials for n in range(len(serial) + 1)} & known)
        for part in chunks(prefixes):
            for row in session.execute(select(_ranges).where(_ranges.c.manufacturer == manufacturer,
                                                             _ranges.c.prefix.in_(part))):
                rng, fact = _range(row), _fact(row)
                for serial in serials:
                    if serial in rng:
                        found[(manufacturer, serial)].append(fact)
    if voided:
        return found
    marks = voids_of(session, found)
    if not marks:
        return found
    return {key: [f for f in facts if (f.source, f.event_id) not in marks] for key, facts in found.items()}


def voids_of(session: Session, facts: dict[UnitKey, list[Fact]]) -> dict[tuple[str, str], VoidMark]:
    """The voids that withdraw some of these units' facts, by the facts' (source, id)."""
    return voided_among(session, "warranty", {(f.source, f.event_id, f.type, key[0]) for key, unit_facts in facts.items()
                                              for f in unit_facts if f.type in VOIDABLE_TYPES})


def units_with_event(session: Session, manufacturer: str, source: str, event_id: str) -> list[tuple[UnitKey, Fact]]:
    """The units an event reached, with its fact: its unit rows by index, or its range (as one key per
    serial would be a million keys, a range comes back as its manufacturer only: see ``range_with_event``)."""
    return [((manufacturer, row.serial), _fact(row)) for row in session.execute(
        select(_facts).where(_facts.c.event_id == event_id, _facts.c.event_source == source,
                             _facts.c.manufacturer == manufacturer))]


def range_with_event(session: Session, manufacturer: str, source: str, event_id: str) -> tuple[SerialRange, Fact] | None:
    row = session.execute(select(_ranges).where(_ranges.c.event_source == source, _ranges.c.event_id == event_id,
                                                _ranges.c.manufacturer == manufacturer)).first()
    return (_range(row), _fact(row)) if row is not None else None


def load_policies(session: Session, manufacturers: Iterable[str]) -> list[Policy]:
    makers = sorted(set(manufacturers))
    if not makers:
        return []
    rows = session.execute(select(_policies).where(_policies.c.manufacturer.in_(makers)))
    return [Policy(r.policy_id, r.manufacturer, r.sku, r.coverage_days, r.return_window_days, as_utc(r.effective_from),
                   (as_utc(r.event_time), r.event_source, r.event_id)) for r in rows]


def _scope_model(event_type: str, data: str):
    return (RecallIssued if event_type == "recall.issued" else RecallAmended).model_validate_json(data)


class Recalls:
    """Recall events of some manufacturers: ``events`` for recall_states, each recall's issue data
    (hazard, remedy, instructions) once its recall.issued is known, and its latest scope."""

    def __init__(self) -> None:
        self.events: list[RecallEvent] = []
        self.issued: dict[str, dict] = {}
        self.latest_scope: dict[str, RecallIssued | RecallAmended] = {}
        self.scopes: dict[str, list[RecallIssued | RecallAmended]] = {}  # every scope it had, oldest first


def load_recalls(session: Session, manufacturers: Iterable[str]) -> Recalls:
    makers = sorted(set(manufacturers))
    found = Recalls()
    if not makers:
        return found
    rows = session.execute(select(_recall_events).where(_recall_events.c.manufacturer.in_(makers)))
    for r in sorted(rows, key=lambda r: (as_utc(r.event_time), r.event_source, r.event_id)):
        order = (as_utc(r.event_time), r.event_source, r.event_id)
        if r.event_type == "recall.closed":
            found.events.append(RecallEvent(r.recall_id, r.event_type, order))
            continue
        scope = _scope_model(r.event_type, r.data)
        remedy = getattr(scope, "remedy", None)
        found.events.append(RecallEvent(r.recall_id, r.event_type, order, scope.covers,
                                        remedy.value if remedy else None))
        found.latest_scope[r.recall_id] = scope
        found.scopes.setdefault(r.recall_id, []).append(scope)
        if r.event_type == "recall.issued":
            found.issued[r.recall_id] = json.loads(r.data)
    return found


def sold_units_in_scope(session: Session, scope: RecallIssued | RecallAmended) -> set[UnitKey]:
    """Units with a sale that a recall scope may cover, by index (serial list, range bounds, sku);
    the caller checks ``covers`` on each unit's current sku."""
    maker = scope.manufacturer
    base = select(_facts.c.serial).where(_facts.c.manufacturer == maker, _facts.c.event_type == "unit.sold")
    serials: set[str] = set()
    if scope.serials:
        for part in chunks(sorted(set(scope.serials))):
            serials.update(session.scalars(base.where(_facts.c.serial.in_(part))))
    for rng in scope.serial_ranges:
        if rng.width is not None:
            low, high = f"{rng.prefix}{rng.first:0{rng.width}d}", f"{rng.prefix}{rng.last:0{rng.width}d}"
        else:  # unpadded numbers do not sort as strings: take the prefix, filter exactly
            low, high = rng.prefix, rng.prefix + "\x7f"
        serials.update(s for s in session.scalars(base.where(and_(_facts.c.serial >= low, _facts.c.serial <= high)))
                       if s in rng)
    if not (scope.serials or scope.serial_ranges):
        serials.update(session.scalars(base.where(_facts.c.sku.in_(scope.skus))))
    return {(maker, s) for s in serials}


def notice_outcomes(session: Session, pairs: Iterable[tuple[str, UnitKey]]) -> dict[tuple[str, UnitKey], str]:
    """The notices already sent for these (recall, unit) pairs: their outcome, notified or unknown."""
    by_recall: dict[str, list[UnitKey]] = {}
    for recall_id, key in pairs:
        by_recall.setdefault(recall_id, []).append(key)
    found: dict[tuple[str, UnitKey], str] = {}
    for recall_id, keys in by_recall.items():
        for part in chunks(sorted(set(keys))):
            rows = session.execute(select(_notices.c.manufacturer, _notices.c.serial, _notices.c.outcome).where(
                _notices.c.recall_id == recall_id, tuple_(_notices.c.manufacturer, _notices.c.serial).in_(part)))
            found.update(((recall_id, (r.manufacturer, r.serial)), r.outcome) for r in rows)
    return found


def owner_found(session: Session, rows: Sequence[dict]) -> None:
    """Notices sent as owner unknown whose owner is now known and notified."""
    for row in rows:
        session.execute(update(_notices).where(
            _notices.c.recall_id == row["recall_id"], _notices.c.manufacturer == row["manufacturer"],
            _notices.c.serial == row["serial"]).values(outcome=row["outcome"], customer_id=row["customer_id"],
                                                        event_id=row["event_id"], created_at=row["created_at"]))


def claim_request(row: dict) -> ClaimRequest:
    return ClaimRequest(row["claim_id"], row["manufacturer"], row["serial"], row["customer_id"], row["issue"],
                        row["location"], (as_utc(row["submitted_at"]), row["event_source"], row["event_id"]))


def return_request(row: dict) -> ReturnRequest:
    return ReturnRequest(row["request_id"], row["manufacturer"], row["serial"], row["receipt_id"], row["location"],
                         row["customer_id"], (as_utc(row["requested_at"]), row["event_source"], row["event_id"]))


def row_dict(row) -> dict:
    data = dict(row._mapping)
    for column in ("submitted_at", "requested_at", "decided_at"):
        if column in data:
            data[column] = as_utc(data[column])
    return data


def requests_of_units(session: Session, kind: str, keys: Iterable[UnitKey]) -> list[dict]:
    table = _claims if kind == "claim" else _returns
    rows: list[dict] = []
    for part in chunks(sorted(set(keys))):
        rows.extend(row_dict(r) for r in session.execute(
            select(table).where(tuple_(table.c.manufacturer, table.c.serial).in_(part))))
    return rows


def requests_of_makers_since(session: Session, kind: str, since: dict[str, datetime]) -> list[dict]:
    """Claims (requests) of each manufacturer made at or after a time: the ones a range, policy or
    recall event that happened then may change."""
    table, time_col = (_claims, _claims.c.submitted_at) if kind == "claim" else (_returns, _returns.c.requested_at)
    if not since:
        return []
    condition = or_(*(and_(table.c.manufacturer == m, time_col >= t) for m, t in since.items()))
    return [row_dict(r) for r in session.execute(select(table).where(condition))]


def returns_on_receipts(session: Session, receipts: dict[tuple[str, str], datetime]) -> list[dict]:
    """Return requests on these (manufacturer, receipt_id) made at or after the given time: a sale on
    the receipt that arrives late may change them."""
    rows: list[dict] = []
    for part in chunks(sorted({r for _, r in receipts})):
        for row in session.execute(select(_returns).where(_returns.c.receipt_id.in_(part))):
            since = receipts.get((row.manufacturer, row.receipt_id))
            if since is not None and as_utc(row.requested_at) >= since:
                rows.append(row_dict(row))
    return rows


def claims_by(session: Session, column: str, values: Iterable[str], start: datetime, end: datetime) -> list[dict]:
    """Claims by these customers (or at these locations) submitted in [start, end]."""
    col = _claims.c[column]
    rows: list[dict] = []
    for part in chunks(sorted(set(values))):
        rows.extend(row_dict(r) for r in session.execute(
            select(_claims).where(col.in_(part), _claims.c.submitted_at >= start, _claims.c.submitted_at <= end)))
    return rows


def prior_claim(row: dict) -> PriorClaim:
    request = claim_request(row)
    return PriorClaim(request.claim_id, (request.manufacturer, request.serial), request.customer_id,
                      request.location, request.issue_key, request.order, row["status"])


def sales_on_receipts(session: Session, receipts: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list]:
    """(manufacturer, receipt_id) -> [(serial, sale Fact)]."""
    wanted = sorted(set(receipts))
    found: dict[tuple[str, str], list] = {key: [] for key in wanted}
    for part in chunks([r for _, r in wanted]):
        for row in session.execute(select(_facts).where(_facts.c.event_type == "unit.sold",
                                                        _facts.c.receipt_id.in_(part))):
            if (row.manufacturer, row.receipt_id) in found:
                found[(row.manufacturer, row.receipt_id)].append((row.serial, _fact(row)))
    sales = [(maker, fact) for (maker, _), listed in found.items() for _, fact in listed]
    marks = voided_among(session, "warranty", {(f.source, f.event_id, f.type, maker) for maker, f in sales})
    if marks:  # a voided sale is not on its receipt
        found = {key: [(serial, f) for serial, f in listed if (f.source, f.event_id) not in marks]
                 for key, listed in found.items()}
    return found


# Read side (HTTP API)


def unit_rows(session: Session, key: UnitKey) -> list:
    return list(session.execute(select(_facts).where(_facts.c.manufacturer == key[0], _facts.c.serial == key[1])))


def requests_by_id(session: Session, kind: str, references: Iterable[str]) -> dict[str, dict]:
    """The stored rows of these claims (or return requests), by id."""
    table, col = (_claims, _claims.c.claim_id) if kind == "claim" else (_returns, _returns.c.request_id)
    found: dict[str, dict] = {}
    for part in chunks(sorted(set(references))):
        for row in session.execute(select(table).where(col.in_(part))):
            data = row_dict(row)
            found[data["claim_id" if kind == "claim" else "request_id"]] = data
    return found


def get_request(session: Session, kind: str, reference: str) -> dict | None:
    table, col = (_claims, _claims.c.claim_id) if kind == "claim" else (_returns, _returns.c.request_id)
    row = session.execute(select(table).where(col == reference)).first()
    return row_dict(row) if row else None


def decision_versions(session: Session, kind: str, reference: str) -> list:
    return list(session.execute(select(_decisions).where(_decisions.c.kind == kind, _decisions.c.reference == reference)
                                .order_by(_decisions.c.version)))


def list_claims(session: Session, *, status=None, manufacturer=None, customer_id=None, limit: int,
                offset: int) -> tuple[int, list[dict]]:
    conditions = [c for c in (
        (_claims.c.status.is_(None) if status == "pending" else _claims.c.status == status) if status else None,
        _claims.c.manufacturer == manufacturer if manufacturer else None,
        _claims.c.customer_id == customer_id if customer_id else None,
    ) if c is not None]
    total = session.scalar(select(func.count()).select_from(_claims).where(*conditions))
    rows = session.execute(select(_claims).where(*conditions)
                           .order_by(_claims.c.submitted_at.desc(), _claims.c.claim_id).limit(limit).offset(offset))
    return total or 0, [row_dict(r) for r in rows]


def notices_of_unit(session: Session, key: UnitKey) -> list:
    return list(session.execute(select(_notices).where(_notices.c.manufacturer == key[0], _notices.c.serial == key[1])
                                .order_by(_notices.c.recall_id)))


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def purchases_of(session: Session, customer_id: str, limit: int) -> list:
    """The units a customer bought here or registered, newest first (the web console's customer page).
    No index on customer_id in the facts: a scan, fine for a desk asking about one customer at a time."""
    return list(session.execute(
        select(_facts).where(_facts.c.customer_id == customer_id,
                             _facts.c.event_type.in_(("unit.sold", "warranty.owner.registered")))
        .order_by(_facts.c.event_time.desc()).limit(limit)))

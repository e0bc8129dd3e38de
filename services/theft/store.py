"""Theft-watch tables and the set-based reads and writes the handlers and the API use.

- ``theft_registry``: one row per (report/recovery event, serial): the registry and its index.
- ``theft_registry_ranges``: reports and recoveries of consecutive serials, kept as ranges
  (never expanded); matched by prefix, then by number.
- ``theft_sightings``: every event that named a unit (this service's own record: it never asks
  another service where a unit was).
- ``theft_alerts``: one row per alert id; ``status`` open or withdrawn.
- ``theft_registry_keys`` / ``theft_sighting_keys``: the near-miss index (services/theft/near.py):
  each reported serial's and each sold/returned/claimed serial's keys, so that a possible match is
  found by key lookups in either direction, whichever of the report and the sale arrives first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from sqlalchemy import BigInteger, Index, Row, Table, and_, func, or_, select, text, update
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from shared.contracts import VOIDABLE_TYPES
from shared.identity import SerialRange
from shared.store import as_utc, chunks, insert_ignore, table_of, utcnow
from shared.voids import VoidMark, voided_among

from . import near
from .domain import FUZZY_SIGHTING_TYPES, RETAILER, Alert, NearMatch, RegistryFact, Sighting, range_candidates

RETAILER_EVENT_TYPE = "unit.adjusted"  # what a retailer report (origin retailer) comes from

UnitKey = tuple[str, str]


class _RegistryFields(SQLModel):
    kind: str = Field(max_length=16)  # reported | recovered | found
    origin: str = Field(max_length=16)  # agency | retailer
    agency: str = Field(max_length=64)
    case_number: str = Field(max_length=64)
    manufacturer: str = Field(max_length=64)
    event_time: datetime  # the report's reported_at when given, else the event time: what "when" means here
    event_type: str = Field(max_length=64)
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    description: str | None = None
    contact: str | None = Field(default=None, max_length=200)
    location: str | None = Field(default=None, max_length=64)
    disposition: str | None = Field(default=None, max_length=16)  # retailer reports: lost | stolen
    recorded_at: datetime


class RegistryRow(_RegistryFields, table=True):
    __tablename__ = "theft_registry"
    __table_args__ = (
        Index("uq_theft_registry_event", "event_source", "event_id", "manufacturer", "serial", unique=True),
        Index("ix_theft_registry_unit", "manufacturer", "serial"),
        Index("ix_theft_registry_origin_time", "origin", "event_time"),
    )
    id: int | None = Field(default=None, primary_key=True)
    serial: str = Field(max_length=64)


class RegistryRangeRow(_RegistryFields, table=True):
    __tablename__ = "theft_registry_ranges"
    __table_args__ = (
        Index("uq_theft_registry_range_event", "event_source", "event_id", "manufacturer", "range_prefix",
              "range_first", unique=True),
        Index("ix_theft_registry_range_prefix", "manufacturer", "range_prefix"),
    )
    id: int | None = Field(default=None, primary_key=True)
    range_prefix: str = Field(max_length=64)
    range_first: int = Field(sa_type=BigInteger)  # serial numbers outgrow 32 bits
    range_last: int = Field(sa_type=BigInteger)  # serial numbers outgrow 32 bits
    range_width: int | None = None


class SightingRow(SQLModel, table=True):
    __tablename__ = "theft_sightings"
    # The units an event was seen on, by its (source, id): what a void derives again (theft_0002).
    __table_args__ = (Index("ix_theft_sightings_event_ref", "event_id", "event_source"),)
    manufacturer: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)
    event_source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=128)
    event_time: datetime
    event_type: str = Field(max_length=64)
    location: str | None = Field(default=None, max_length=64)
    terminal_id: str | None = Field(default=None, max_length=64)
    reference: str | None = Field(default=None, max_length=64)
    recorded_at: datetime


class AlertRow(SQLModel, table=True):
    __tablename__ = "theft_alerts"
    __table_args__ = (
        Index("ix_theft_alerts_unit", "manufacturer", "serial"),
        Index("ix_theft_alerts_agency_seen", "agency", "seen_at"),
        Index("ix_theft_alerts_seen", "seen_at"),
    )
    alert_id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)  # sighting | retroactive
    status: str = Field(default="open", max_length=16)  # open | withdrawn
    manufacturer: str = Field(max_length=64)
    serial: str = Field(max_length=64)
    origin: str = Field(max_length=16)
    agency: str = Field(max_length=64)
    case_number: str = Field(max_length=64)
    seen_at: datetime  # the (newest named) sighting's time
    event_type: str = Field(max_length=64)  # of the newest named sighting, for exports
    event_source: str = Field(max_length=256)
    location: str | None = Field(default=None, max_length=64)
    terminal_id: str | None = Field(default=None, max_length=64)
    sightings: str  # JSON list, newest first
    near_matches: str | None = None  # possible_match alerts: JSON list of the stolen serials it resembles
    raised_at: datetime
    updated_at: datetime


class _NearKeyFields(SQLModel):
    # The primary key is the index: (manufacturer, key) lookups and key-interval scans. SQLite keeps
    # the table as that index alone (WITHOUT ROWID, set in the table args and migration theft_0003).
    manufacturer: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=64)
    serial: str = Field(primary_key=True, max_length=64)


class RegistryKeyRow(_NearKeyFields, table=True):
    """Near-miss keys of every serial a report names one by one (ranges are matched as ranges)."""

    __tablename__ = "theft_registry_keys"
    __table_args__ = {"sqlite_with_rowid": False}


class SightingKeyRow(_NearKeyFields, table=True):
    """Near-miss keys of every serial sold, returned or claimed (the sightings a possible match needs)."""

    __tablename__ = "theft_sighting_keys"
    __table_args__ = {"sqlite_with_rowid": False}


TABLES: list[Table] = [table_of(RegistryRow), table_of(RegistryRangeRow), table_of(SightingRow),
                       table_of(AlertRow), table_of(RegistryKeyRow), table_of(SightingKeyRow)]

_registry = table_of(RegistryRow)
_ranges = table_of(RegistryRangeRow)
_sightings = table_of(SightingRow)
_alerts = table_of(AlertRow)
_registry_keys = table_of(RegistryKeyRow)
_sighting_keys = table_of(SightingKeyRow)
NEAR_SERIALS_PER_UNIT = 100  # near stolen serials considered for one unit: keeps a range's share bounded


# Writes

def save_registry(session: Session, rows: Sequence[dict]) -> None:
    insert_ignore(session, _registry, rows)  # a redelivered report stays one row per serial


def save_registry_ranges(session: Session, rows: Sequence[dict]) -> None:
    insert_ignore(session, _ranges, rows)


def save_sightings(session: Session, rows: Sequence[dict]) -> None:
    insert_ignore(session, _sightings, rows)


def _key_rows(units: Iterable[UnitKey]) -> list[dict]:
    return [{"manufacturer": m, "key": k, "serial": s} for m, s in sorted(set(units)) for k in sorted(near.keys(s))]


def save_near_keys(session: Session, registry: Sequence[dict], sightings: Iterable[dict]) -> None:
    """Index the serials a batch reported one by one and those it saw sold, returned or claimed."""
    insert_ignore(session, _registry_keys, _key_rows(
        (r["manufacturer"], r["serial"]) for r in registry if r["kind"] == "reported"))
    insert_ignore(session, _sighting_keys, _key_rows(
        (r["manufacturer"], r["serial"]) for r in sightings if r["event_type"] in FUZZY_SIGHTING_TYPES))


def _by_maker(keys: Iterable[UnitKey]) -> dict[str, list[str]]:
    by_maker: dict[str, set[str]] = {}
    for manufacturer, serial in keys:
        by_maker.setdefault(manufacturer, set()).add(serial)
    return {m: sorted(s) for m, s in by_maker.items()}


# The registry index: exact serials, then ranges by prefix


def registry_rows(session: Session, keys: Iterable[UnitKey], columns: Sequence | None = None) -> dict[UnitKey, list]:
    """Registry rows (reports, recoveries, found) covering each unit, by index: one IN query per
    500 serials, plus, only where ranges exist for the manufacturer, one query per range prefix set."""
    by_maker = _by_maker(keys)
    found: dict[UnitKey, list] = {}
    exact_cols = columns or [_registry]
    for manufacturer, serials in by_maker.items():
        for part in chunks(serials):
            query = select(*exact_cols).where(_registry.c.manufacturer == manufacturer, _registry.c.serial.in_(part))
            for row in session.execute(query):
                found.setdefault((manufacturer, row.serial), []).append(row)
    for (manufacturer, serial), row in _range_rows(session, by_maker):
        found.setdefault((manufacturer, serial), []).append(row)
    return _without_voided_reports(session, found)


def _without_voided_reports(session: Session, found: dict[UnitKey, list]) -> dict[UnitKey, list]:
    """Retailer reports (``unit.adjusted``) withdrawn by a void (shared/voids.py) are no reports; a
    unit left with none has no registry rows. Agency reports cannot be voided: no look-up for them."""
    retailer = {(r.event_source, r.event_id, RETAILER_EVENT_TYPE, key[0]) for key, rows in found.items() for r in rows
                if r.origin == RETAILER}
    marks = voided_among(session, "theft", retailer) if retailer else {}
    if not marks:
        return found
    return {key: kept for key, rows in found.items()
            if (kept := [r for r in rows if r.origin != RETAILER or (r.event_source, r.event_id) not in marks])}


def _range_rows(session: Session, by_maker: dict[str, list[str]]) -> Iterator[tuple[UnitKey, Row]]:
    makers = list(by_maker)
    prefixes: set[tuple[str, str]] = set()
    for part in chunks(makers):
        prefixes.update(tuple(r) for r in session.execute(
            select(_ranges.c.manufacturer, _ranges.c.range_prefix).where(_ranges.c.manufacturer.in_(part)).distinct()
        ))
    if not prefixes:
        return
    for manufacturer, serials in by_maker.items():
        wanted: dict[str, list[str]] = {}
        for serial in serials:
            for prefix, _, _ in range_candidates(serial):
                if (manufacturer, prefix) in prefixes:
                    wanted.setdefault(prefix, []).append(serial)
        if not wanted:
            continue
        for part in chunks(sorted(wanted)):
            rows = session.execute(select(_ranges).where(_ranges.c.manufacturer == manufacturer,
                                                         _ranges.c.range_prefix.in_(part)))
            for row in rows:
                rng = range_of(row)
                for serial in wanted[row.range_prefix]:
                    if serial in rng:
                        yield (manufacturer, serial), row


# The near-miss index: possible matches, either direction


def near_stolen_serials(session: Session, units: Iterable[UnitKey]) -> dict[UnitKey, dict[str, near.NearReason]]:
    """For each unit, the serials reported stolen (one by one, or as range members) that it nearly
    matches, with the reason (near.near_reason), homoglyph matches first, at most
    ``NEAR_SERIALS_PER_UNIT`` of them. Reported serials are found by their keys (``_key_hits``);
    ranges only where the manufacturer has ranges whose (normalized) prefix is within one edit of
    the unit's."""
    by_maker = _by_maker(units)
    found: dict[UnitKey, dict[str, near.NearReason | None]] = {}
    for manufacturer, serial, other in _key_hits(session, _registry_keys, by_maker):
        mine = found.setdefault((manufacturer, serial), {})
        if other not in mine:  # a homoglyph pair shares every key: judge it once
            mine[other] = near.near_reason(serial, other)
    for unit, members in _near_range_members(session, by_maker).items():
        mine = found.setdefault(unit, {})
        for member in members:
            mine.setdefault(member, near.near_reason(unit[1], member))
    result: dict[UnitKey, dict[str, near.NearReason]] = {}
    for unit, candidates in found.items():
        hits = sorted(((other, reason) for other, reason in candidates.items() if reason is not None),
                      key=lambda item: near.closeness(item[1], item[0]))
        if hits:
            result[unit] = dict(hits[:NEAR_SERIALS_PER_UNIT])
    return result


def _near_range_members(session: Session, by_maker: dict[str, list[str]]) -> dict[UnitKey, list[str]]:
    prefixes: dict[str, set[str]] = {}
    for part in chunks(list(by_maker)):
        for manufacturer, prefix in session.execute(select(_ranges.c.manufacturer, _ranges.c.range_prefix)
                                                    .where(_ranges.c.manufacturer.in_(part)).distinct()):
            prefixes.setdefault(manufacturer, set()).add(prefix)
    found: dict[UnitKey, list[str]] = {}
    for manufacturer, raw_prefixes in prefixes.items():
        by_norm: dict[str, list[str]] = {}
        for raw in raw_prefixes:
            by_norm.setdefault(near.normalize(raw), []).append(raw)
        prefix_index = near.PrefixIndex(by_norm)
        units = {serial: prefix_index.near(near.normalize(serial)) for serial in by_maker[manufacturer]}
        raw_wanted = sorted({raw for hits in units.values() for norm in hits for raw in by_norm[norm]})
        if not raw_wanted:
            continue
        rows = [row for part in chunks(raw_wanted) for row in session.execute(
            select(_ranges.c.id, _ranges.c.range_prefix, _ranges.c.range_first, _ranges.c.range_last,
                   _ranges.c.range_width).where(_ranges.c.manufacturer == manufacturer,
                                                _ranges.c.range_prefix.in_(part)))]
        index = near.RangeNearIndex((row.id, range_of(row)) for row in rows)
        for serial, hits in units.items():
            if hits:
                members = index.near(serial, limit=NEAR_SERIALS_PER_UNIT)
                if members:
                    found[(manufacturer, serial)] = sorted({m.serial for m in members})
    return found


def near_sighted(session: Session, units: Iterable[UnitKey]) -> set[UnitKey]:
    """Units sold, returned or claimed whose serial nearly matches one of ``units`` (reported serials)."""
    found: set[UnitKey] = set()
    for manufacturer, reported, seen in _key_hits(session, _sighting_keys, _by_maker(units)):
        if (manufacturer, seen) not in found and near.near_reason(seen, reported):
            found.add((manufacturer, seen))
    return found


KEY_CHUNK = 50_000  # keys per lookup statement
_PLAIN = re.compile(r"[A-Za-z0-9._-]*")  # what serials, manufacturers and keys are made of: JSON as they are


def _json_string(text: str) -> str:
    """A JSON string literal; a tenth of the cost of json.dumps for names that need no escape."""
    return f'"{text}"' if _PLAIN.fullmatch(text) else json.dumps(text)


def _key_hits(session: Session, table: Table, by_maker: dict[str, list[str]]) -> Iterator[tuple[str, str, str]]:
    """(manufacturer, serial asked about, indexed serial sharing a key with it), by index. SQLite: one
    join per 50,000 keys against the keys as a JSON array (json_each), each pair once. PostgreSQL:
    one ``key = ANY(array)`` index scan per manufacturer and 50,000 keys, paired here. Either way no
    statement grows with one bind parameter per key (building those cost more than the lookups)."""
    name = table.name
    if session.get_bind().dialect.name == "sqlite":
        triples: list[str] = []
        for manufacturer, serials in by_maker.items():
            for serial in serials:
                head = f"[{_json_string(serial)},{_json_string(manufacturer)},"
                if _PLAIN.fullmatch(serial):  # so are its keys (letters become digits, nothing else changes)
                    triples.extend(f'{head}"{key}"]' for key in near.keys(serial))
                else:
                    triples.extend(f"{head}{json.dumps(key)}]" for key in near.keys(serial))
        for part in chunks(triples, KEY_CHUNK):
            yield from session.execute(text(
                "SELECT DISTINCT json_extract(w.value, '$[1]'), json_extract(w.value, '$[0]'), r.serial "
                f"FROM json_each(:wanted) AS w JOIN {name} AS r "
                "ON r.manufacturer = json_extract(w.value, '$[1]') AND r.key = json_extract(w.value, '$[2]')"),
                {"wanted": "[" + ",".join(part) + "]"}).tuples()
        return
    lookup = text(f"SELECT key, serial FROM {name} WHERE manufacturer = :manufacturer "
                  "AND key = ANY(CAST(:keys AS text[]))")
    for manufacturer, serials in by_maker.items():
        wanted: dict[str, list[str]] = {}
        for serial in serials:
            for key in near.keys(serial):
                wanted.setdefault(key, []).append(serial)
        ordered = sorted(wanted)
        for start in range(0, len(ordered), KEY_CHUNK):
            rows = session.execute(lookup, {"manufacturer": manufacturer, "keys": ordered[start:start + KEY_CHUNK]})
            for key, other in rows:
                for serial in wanted[key]:
                    yield manufacturer, serial, other


def near_sighted_in_range(session: Session, manufacturer: str, rng: SerialRange) -> set[UnitKey]:
    """Units sold, returned or claimed whose serial nearly matches a member of ``rng``: their keys lie in
    near.range_key_intervals (about as many numbers as the range holds), then each is verified."""
    candidates: set[str] = set()
    intervals = near.range_key_intervals(rng)
    for part in chunks(intervals, 50):
        candidates.update(session.execute(select(_sighting_keys.c.serial).where(
            _sighting_keys.c.manufacturer == manufacturer,
            or_(*(and_(_sighting_keys.c.key >= low, _sighting_keys.c.key <= high) for low, high in part)),
        ).distinct()).scalars())
    if not candidates:
        return set()
    index = near.RangeNearIndex([(0, rng)])
    return {(manufacturer, serial) for serial in candidates if index.near(serial, limit=1)}


def range_of(row) -> SerialRange:
    return SerialRange(prefix=row.range_prefix, first=row.range_first, last=row.range_last, width=row.range_width)


def registry_fact(row) -> RegistryFact:
    return RegistryFact(kind=row.kind, origin=row.origin, agency=row.agency, case_number=row.case_number,
                        time=as_utc(row.event_time), source=row.event_source, event_id=row.event_id)


# Sightings


def sighted_keys(session: Session, keys: Iterable[UnitKey]) -> set[UnitKey]:
    found: set[UnitKey] = set()
    for manufacturer, serials in _by_maker(keys).items():
        for part in chunks(serials):
            found.update((manufacturer, r.serial) for r in session.execute(
                select(_sightings.c.serial).where(_sightings.c.manufacturer == manufacturer,
                                                  _sightings.c.serial.in_(part)).distinct()))
    return found


def sighted_in_range(session: Session, manufacturer: str, rng: SerialRange) -> set[UnitKey]:
    """Units of a range that were ever seen, found by index on the serial bounds."""
    if rng.width is not None:
        low, high = f"{rng.prefix}{rng.first:0{rng.width}d}", f"{rng.prefix}{rng.last:0{rng.width}d}"
    else:  # unpadded numbers do not sort as strings: scan the prefix, filter exactly below
        low, high = rng.prefix, rng.prefix + "\x7f"
    rows = session.execute(select(_sightings.c.serial).where(
        _sightings.c.manufacturer == manufacturer, and_(_sightings.c.serial >= low, _sightings.c.serial <= high)
    ).distinct())
    return {(manufacturer, r.serial) for r in rows if r.serial in rng}


def sightings_of(session: Session, keys: Iterable[UnitKey]) -> dict[UnitKey, list[Sighting]]:
    """The units' sightings, without those a void withdrew (shared/voids.py)."""
    found: dict[UnitKey, list[Sighting]] = {}
    for manufacturer, serials in _by_maker(keys).items():
        for part in chunks(serials):
            for r in session.execute(select(_sightings).where(_sightings.c.manufacturer == manufacturer,
                                                              _sightings.c.serial.in_(part))):
                found.setdefault((manufacturer, r.serial), []).append(_sighting(r))
    marks = sighting_voids(session, found)
    if not marks:
        return found
    return {key: [s for s in seen if (s.source, s.event_id) not in marks] for key, seen in found.items()}


def sighting_voids(session: Session, sightings: dict[UnitKey, list[Sighting]]) -> dict[tuple[str, str], VoidMark]:
    """The voids that withdraw some of these sightings, by the sightings' (source, id)."""
    return voided_among(session, "theft", {(s.source, s.event_id, s.type, key[0]) for key, seen in sightings.items()
                                           for s in seen if s.type in VOIDABLE_TYPES})


def units_with_event(session: Session, manufacturer: str, source: str, event_id: str) -> set[UnitKey]:
    """The units an event was seen on or reported (a retailer report), by index."""
    seen = session.execute(select(_sightings.c.serial).where(
        _sightings.c.event_id == event_id, _sightings.c.event_source == source,
        _sightings.c.manufacturer == manufacturer))
    reported = session.execute(select(_registry.c.serial).where(
        _registry.c.event_source == source, _registry.c.event_id == event_id, _registry.c.manufacturer == manufacturer))
    return {(manufacturer, serial) for (serial,) in (*seen, *reported)}


def _sighting(r) -> Sighting:
    return Sighting(time=as_utc(r.event_time), source=r.event_source, event_id=r.event_id, type=r.event_type,
                    location=r.location, terminal_id=r.terminal_id, reference=r.reference)


def last_sightings(session: Session, key: UnitKey, limit: int) -> list[Sighting]:
    rows = session.execute(
        select(_sightings).where(_sightings.c.manufacturer == key[0], _sightings.c.serial == key[1])
        .order_by(_sightings.c.event_time.desc(), _sightings.c.event_source.desc(), _sightings.c.event_id.desc())
        .limit(limit))
    return [_sighting(r) for r in rows]


# Alerts


def sighting_json(s: Sighting) -> dict:
    return {"event_type": s.type, "event_source": s.source, "event_id": s.event_id, "seen_at": s.time.isoformat(),
            "location": s.location, "terminal_id": s.terminal_id, "reference": s.reference}


def _sighting_from_json(d: dict) -> Sighting:
    return Sighting(time=as_utc(datetime.fromisoformat(d["seen_at"])), source=d["event_source"],
                    event_id=d["event_id"], type=d["event_type"], location=d.get("location"),
                    terminal_id=d.get("terminal_id"), reference=d.get("reference"))


def alert_from_row(row) -> Alert:
    return Alert(alert_id=row.alert_id, kind=row.kind, origin=row.origin, agency=row.agency,
                 case_number=row.case_number, seen_at=as_utc(row.seen_at),
                 sightings=tuple(_sighting_from_json(d) for d in json.loads(row.sightings)),
                 near=tuple(NearMatch(d["serial"], d["reason"]) for d in near_matches_of(row)))


def near_matches_of(row) -> list[dict]:
    """A possible_match alert's near serials ([] for exact alerts), as stored."""
    return json.loads(row.near_matches) if row.near_matches else []


def stored_alerts(session: Session, keys: Iterable[UnitKey]) -> dict[UnitKey, dict[str, tuple[str, Alert]]]:
    found: dict[UnitKey, dict[str, tuple[str, Alert]]] = {}
    for manufacturer, serials in _by_maker(keys).items():
        for part in chunks(serials):
            for r in session.execute(select(_alerts).where(_alerts.c.manufacturer == manufacturer,
                                                           _alerts.c.serial.in_(part))):
                found.setdefault((manufacturer, r.serial), {})[r.alert_id] = (r.status, alert_from_row(r))
    return found


def alert_row(key: UnitKey, alert: Alert) -> dict:
    newest = alert.sightings[0]
    now = utcnow()
    return {
        "alert_id": alert.alert_id, "kind": alert.kind, "status": "open", "manufacturer": key[0], "serial": key[1],
        "origin": alert.origin, "agency": alert.agency, "case_number": alert.case_number, "seen_at": alert.seen_at,
        "event_type": newest.type, "event_source": newest.source, "location": newest.location,
        "terminal_id": newest.terminal_id, "sightings": json.dumps([sighting_json(s) for s in alert.sightings]),
        "near_matches": json.dumps([{"serial": n.serial, "reason": n.reason} for n in alert.near]) if alert.near
        else None,
        "raised_at": now, "updated_at": now,
    }


def save_alerts(session: Session, rows: Sequence[dict]) -> None:
    insert_ignore(session, _alerts, rows)  # a concurrent consumer raising the same alert keeps one row


def set_alert_status(session: Session, alert_ids: Sequence[str], status: str) -> None:
    now = utcnow()
    for part in chunks(sorted(alert_ids)):
        session.execute(update(_alerts).where(_alerts.c.alert_id.in_(part)).values(status=status, updated_at=now))


def update_alert_content(session: Session, key: UnitKey, alert: Alert) -> None:
    """A retroactive alert learnt of more sightings (rare: a late, earlier sighting)."""
    row = alert_row(key, alert)
    del row["raised_at"], row["status"]
    session.execute(update(_alerts).where(_alerts.c.alert_id == alert.alert_id).values(**row))


# Read side (HTTP API, exports)


def alerts_for_unit(session: Session, key: UnitKey) -> list:
    return list(session.execute(
        select(_alerts).where(_alerts.c.manufacturer == key[0], _alerts.c.serial == key[1])
        .order_by(_alerts.c.seen_at.desc(), _alerts.c.alert_id)))


def _alert_conditions(*, agency=None, since=None, until=None, status=None, manufacturer=None, kind=None) -> list:
    return [c for c in (
        _alerts.c.kind == kind if kind else None,
        _alerts.c.agency == agency if agency else None,
        _alerts.c.seen_at >= since if since else None,
        _alerts.c.seen_at < until if until else None,
        _alerts.c.status == status if status else None,
        _alerts.c.manufacturer == manufacturer if manufacturer else None,
    ) if c is not None]


def list_alerts(session: Session, *, limit: int, offset: int, **filters) -> tuple[int, list]:
    conditions = _alert_conditions(**filters)
    total = session.scalar(select(func.count()).select_from(_alerts).where(*conditions))
    rows = session.execute(select(_alerts).where(*conditions)
                           .order_by(_alerts.c.seen_at.desc(), _alerts.c.alert_id).limit(limit).offset(offset))
    return total or 0, list(rows)


def iter_alerts(session: Session, **filters) -> Iterator:
    """Every matching alert, oldest first, streamed (exports may be large)."""
    query = select(_alerts).where(*_alert_conditions(**filters)).order_by(_alerts.c.seen_at, _alerts.c.alert_id)
    yield from session.execute(query.execution_options(yield_per=1000))


def iter_retailer_reports(session: Session, *, since=None, until=None, location=None) -> Iterator:
    conditions = [c for c in (
        _registry.c.origin == "retailer",
        _registry.c.kind == "reported",
        _registry.c.event_time >= since if since else None,
        _registry.c.event_time < until if until else None,
        _registry.c.location == location if location else None,
    ) if c is not None]
    query = select(_registry).where(*conditions).order_by(_registry.c.event_time, _registry.c.id)
    yield from session.execute(query.execution_options(yield_per=1000))



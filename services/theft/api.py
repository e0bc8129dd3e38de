"""Theft watch's HTTP side: is a unit stolen, bulk checks, alerts, and exports for law enforcement."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, StrictBool
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shared.auth import (
    CONTACT,
    RECEIPT,
    STOLEN_CHECKS,
    THEFT_CASES,
    UNIT_LOOKUP,
    allow,
    customer_data_routes,
    shape_records,
)
from shared.http import (
    MAX_BODY_BYTES,
    SHAPED_ERRORS,
    Filter,
    Limit,
    ManufacturerFilter,
    ManufacturerPath,
    Offset,
    Page,
    QueryTime,
    SerialPath,
    errors,
    manufacturer_or_400,
    time_query,
    unit_key_or_400,
)
from shared.identity import IdentityError, normalize_manufacturer, normalize_serial
from shared.store import as_utc, table_of
from shared.voids import VoidMark, VoidOut, void_out

from . import store
from .domain import RETAILER, case_statuses, priority_of

MAX_CHECK_ITEMS = 10_000
LAST_SIGHTINGS = 5
# Customers' data in theft's answers (shared/auth.py VISIBILITY says who sees what): a sighting's
# ``reference`` is the receipt it was seen on, a report's ``contact`` reaches whoever reported it.
CUSTOMER_FIELDS = {"reference": RECEIPT, "contact": CONTACT}


class SightingOut(BaseModel):
    event_type: str
    event_source: str
    event_id: str
    seen_at: datetime
    location: str | None = None
    terminal_id: str | None = None
    reference: str | None = None
    voided: VoidOut | None = None  # withdrawn by an event.voided: shown, never alerted on


class ReportOut(BaseModel):
    origin: Literal["agency", "retailer"]
    agency: str
    case_number: str
    status: Literal["open", "recovered", "found"]
    reported_at: datetime
    closed_at: datetime | None = None
    selection: str  # the serial, or the range the report named
    description: str | None = None
    contact: str | None = None
    location: str | None = None
    disposition: str | None = None  # retailer reports: lost | stolen
    event_source: str
    event_id: str


AlertKind = Literal["sighting", "retroactive", "possible_match"]
NearReason = Literal["homoglyph", "dropped_character", "extra_character", "swapped_characters", "changed_character"]


class NearMatchOut(BaseModel):
    serial: str  # the reported serial the unit's resembles
    reason: NearReason


class AlertOut(BaseModel):
    alert_id: str
    kind: AlertKind
    priority: Literal["high", "low"]  # low: a possible match (a similar serial is reported, not this one)
    status: Literal["open", "withdrawn"]
    manufacturer: str
    serial: str
    origin: str
    agency: str
    case_number: str
    seen_at: datetime
    location: str | None = None
    terminal_id: str | None = None
    event_type: str
    event_source: str
    sightings: list[SightingOut]
    near_matches: list[NearMatchOut] = []  # possible_match: the reported serials it resembles
    raised_at: datetime


class StolenOut(BaseModel):
    manufacturer: str
    serial: str
    stolen: bool
    open_cases: list[str]  # "agency:case_number" of the open reports
    reports: list[ReportOut]
    alerts: list[AlertOut]
    last_sightings: list[SightingOut]


class CheckItem(BaseModel):
    manufacturer: str = Field(max_length=200)
    serial: str = Field(max_length=200)


class CheckRequest(BaseModel):
    items: list[CheckItem] = Field(min_length=1, max_length=MAX_CHECK_ITEMS)
    fuzzy: StrictBool = Field(False, description="also list the reported serials each unit that is not itself "
                                                 "reported nearly matches (docs/theft.md, \"Near misses\")")


class CaseRef(BaseModel):
    origin: str
    agency: str
    case_number: str


class PossibleMatch(BaseModel):
    serial: str  # a reported serial of the same manufacturer that the checked one nearly matches
    reason: NearReason
    cases: list[CaseRef]  # its open cases


class CheckResult(BaseModel):
    manufacturer: str
    serial: str
    stolen: bool | None  # None: the item was invalid (see error)
    cases: list[CaseRef] = []
    possible_matches: list[PossibleMatch] = []  # "fuzzy": true, and the unit itself is not stolen
    error: str | None = None


class CheckResponse(BaseModel):
    checked: int
    stolen: int
    possible: int  # units not stolen with at least one possible match ("fuzzy": true; else 0)
    invalid: int
    results: list[CheckResult]  # in request order


def _report_status(origin: str, open_: bool) -> str:
    if open_:
        return "open"
    return "found" if origin == RETAILER else "recovered"


def _reports(rows: list) -> tuple[list[ReportOut], list[str]]:
    statuses = {s.case: s for s in case_statuses(store.registry_fact(r) for r in rows)}
    reports = []
    for r in sorted(rows, key=lambda r: (r.event_time, r.event_source, r.event_id)):
        if r.kind != "reported":
            continue
        status = statuses[(r.origin, r.agency, r.case_number)]
        selection = r.serial if hasattr(r, "serial") else store.range_of(r).describe()
        reports.append(ReportOut(
            origin=r.origin, agency=r.agency, case_number=r.case_number,
            status=_report_status(r.origin, status.open), reported_at=as_utc(r.event_time),
            closed_at=None if status.open else status.closed_at, selection=selection, description=r.description,
            contact=r.contact, location=r.location, disposition=r.disposition, event_source=r.event_source,
            event_id=r.event_id,
        ))
    open_cases = [f"{agency}:{case}" for (_, agency, case), s in statuses.items() if s.open]
    return reports, open_cases


def _sighting_out(s, voids: dict[tuple[str, str], VoidMark] | None = None) -> SightingOut:
    return SightingOut(event_type=s.type, event_source=s.source, event_id=s.event_id, seen_at=s.time,
                       location=s.location, terminal_id=s.terminal_id, reference=s.reference,
                       voided=void_out((voids or {}).get((s.source, s.event_id))))


def _alert_out(row) -> AlertOut:
    return AlertOut(
        alert_id=row.alert_id, kind=row.kind, priority=priority_of(row.kind), status=row.status, manufacturer=row.manufacturer, serial=row.serial,
        origin=row.origin, agency=row.agency, case_number=row.case_number, seen_at=as_utc(row.seen_at),
        location=row.location, terminal_id=row.terminal_id, event_type=row.event_type,
        event_source=row.event_source, sightings=[SightingOut(**s) for s in json.loads(row.sightings)],
        near_matches=[NearMatchOut(**n) for n in store.near_matches_of(row)], raised_at=as_utc(row.raised_at),
    )


# Already-normal names (the common case: scanners and feeds send them so) skip the full normalizer.
_NORMAL_SERIAL = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,63}")
_NORMAL_MANUFACTURER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CHECK_COLUMNS = ("serial", "kind", "origin", "agency", "case_number", "event_source", "event_id")  # ids: voids


def _normal_key(manufacturer: str, serial: str, makers: dict[str, str]) -> tuple[str, str]:
    maker = makers.get(manufacturer)
    if maker is None:
        maker = makers[manufacturer] = (manufacturer if _NORMAL_MANUFACTURER.fullmatch(manufacturer)
                                        else normalize_manufacturer(manufacturer))
    return maker, serial if _NORMAL_SERIAL.fullmatch(serial) else normalize_serial(serial)


def _open_cases(rows: list) -> list[CaseRef]:
    return [CaseRef(origin=s.case[0], agency=s.case[1], case_number=s.case[2])
            for s in case_statuses(store.registry_fact(r) for r in rows) if s.open]


def _open_cases_of(session: Session, units: set[tuple[str, str]]) -> dict[tuple[str, str], list[CaseRef]]:
    """Open cases of each unit now. A unit whose registry rows are all reports is open in each of their
    cases without a fold; only units with a recovery or a retailer "found" need their facts in time order."""
    table = table_of(store.RegistryRow)
    rows = store.registry_rows(session, units, columns=[table.c[name] for name in _CHECK_COLUMNS])
    open_cases: dict[tuple[str, str], list[CaseRef]] = {}
    to_fold = []
    for key, found in rows.items():
        if all(r.kind == "reported" for r in found):
            open_cases[key] = [CaseRef(origin=o, agency=a, case_number=c)
                               for o, a, c in sorted({(r.origin, r.agency, r.case_number) for r in found})]
        else:
            to_fold.append(key)
    if to_fold:
        for key, found in store.registry_rows(session, to_fold).items():
            open_cases[key] = _open_cases(found)
    return open_cases


def possible_matches(session: Session, units: set[tuple[str, str]]) -> dict[tuple[str, str], list[PossibleMatch]]:
    """The reported serials each unit nearly matches whose cases are open now, by index (store.near_stolen_serials)."""
    near = store.near_stolen_serials(session, units)
    open_cases = _open_cases_of(session, {(key[0], other) for key, found in near.items() for other in found})
    found: dict[tuple[str, str], list[PossibleMatch]] = {}
    for key, others in near.items():
        for other, reason in others.items():
            cases = open_cases.get((key[0], other))
            if cases:
                found.setdefault(key, []).append(PossibleMatch(serial=other, reason=reason, cases=cases))
    return found


def check_units(session: Session, items: list[CheckItem], fuzzy: bool = False) -> CheckResponse:
    """The bulk check: normalize, then one indexed lookup per 500 serials (the store function the
    benchmark times). A unit whose registry rows are all reports is stolen without a fold; only
    units with a recovery or a retailer "found" need their facts in time order."""
    keys: list[tuple[str, str] | None] = []
    errors: list[str | None] = []
    makers: dict[str, str] = {}
    for item in items:
        try:
            keys.append(_normal_key(item.manufacturer, item.serial, makers))
            errors.append(None)
        except IdentityError as exc:
            keys.append(None)
            errors.append(str(exc))
    wanted = {k for k in keys if k is not None}
    open_cases = _open_cases_of(session, wanted)
    near = possible_matches(session, {k for k in wanted if not open_cases.get(k)}) if fuzzy else {}
    results = []
    stolen = 0
    for item, unit, error in zip(items, keys, errors, strict=True):
        if unit is None:
            results.append(CheckResult(manufacturer=item.manufacturer, serial=item.serial, stolen=None, error=error))
            continue
        cases = open_cases.get(unit, [])
        stolen += bool(cases)
        results.append(CheckResult(manufacturer=unit[0], serial=unit[1], stolen=bool(cases), cases=cases,
                                   possible_matches=near.get(unit, [])))
    return CheckResponse(checked=len(items), stolen=stolen, possible=sum(1 for k in keys if k in near),
                         invalid=sum(e is not None for e in errors), results=results)


ALERT_COLUMNS = ("alert_id", "kind", "status", "manufacturer", "serial", "origin", "agency", "case_number",
                 "seen_at", "event_type", "event_source", "location", "terminal_id", "raised_at", "sightings",
                 "priority", "near_matches")
RETAILER_REPORT_COLUMNS = ("case_number", "status", "manufacturer", "serial", "disposition", "reported_at",
                           "closed_at", "location", "description", "reported_by", "event_id")


def _alert_record(row) -> dict:
    return _alert_out(row).model_dump(mode="json")


def _retailer_records(engine: Engine, **filters) -> Iterator[dict]:
    with Session(engine) as session:
        rows = store.iter_retailer_reports(session, **filters)
        while True:
            part = [r for _, r in zip(range(500), rows)]
            if not part:
                return
            registry = store.registry_rows(session, {(r.manufacturer, r.serial) for r in part})
            for r in part:
                statuses = {s.case: s for s in case_statuses(
                    store.registry_fact(x) for x in registry.get((r.manufacturer, r.serial), ()))}
                status = statuses.get((r.origin, r.agency, r.case_number))
                if status is None:  # a report withdrawn by a void (shared/voids.py)
                    continue
                yield {
                    "case_number": r.case_number, "status": _report_status(r.origin, status.open),
                    "manufacturer": r.manufacturer, "serial": r.serial, "disposition": r.disposition,
                    "reported_at": as_utc(r.event_time).isoformat(),
                    "closed_at": status.closed_at.isoformat() if status.closed_at else None,
                    "location": r.location, "description": r.description, "reported_by": r.event_source,
                    "event_id": r.event_id,
                }


def _csv(records: Iterator[dict], columns: tuple[str, ...]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for n, record in enumerate(records, start=1):
        writer.writerow({k: _csv_cell(v) for k, v in record.items()})
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _csv_cell(value):
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value  # no formula injection when a spreadsheet opens the export
    return value


def _json_array(records: Iterator[dict]) -> Iterator[str]:
    yield "["
    for n, record in enumerate(records):
        yield ("," if n else "") + json.dumps(record, default=str)
    yield "]"


def _check_window(since: datetime | None, until: datetime | None) -> None:
    if since and until and until <= since:
        raise HTTPException(400, detail=f"until ({until.isoformat()}) must be after since ({since.isoformat()})")


def read_api(engine: Engine) -> APIRouter:
    router = APIRouter(tags=["theft"], route_class=customer_data_routes(CUSTOMER_FIELDS), responses=SHAPED_ERRORS)

    @router.get("/stolen/{manufacturer}/{serial}", response_model=StolenOut,
                summary="Is this unit stolen? Its reports, alerts and last sightings",
                responses=errors({400: "invalid manufacturer or serial",
                                  404: "another manufacturer's unit (manufacturer tokens)"}),
                dependencies=[allow(*UNIT_LOOKUP)])
    def get_stolen(manufacturer: ManufacturerPath, serial: SerialPath) -> StolenOut:
        key = unit_key_or_400(manufacturer, serial)
        with Session(engine) as session:
            rows = store.registry_rows(session, [key]).get(key, [])
            reports, open_cases = _reports(rows)
            alerts = [_alert_out(r) for r in store.alerts_for_unit(session, key)]
            seen = store.last_sightings(session, key, LAST_SIGHTINGS)
            voids = store.sighting_voids(session, {key: seen})
            sightings = [_sighting_out(s, voids) for s in seen]
        return StolenOut(manufacturer=key[0], serial=key[1], stolen=bool(open_cases), open_cases=open_cases,
                         reports=reports, alerts=alerts, last_sightings=sightings)

    @router.post("/checks", response_model=CheckResponse,
                 summary=f"Check up to {MAX_CHECK_ITEMS:,} units at once (pawn / trade-in desk)",
                 description=f"Invalid items get an `error` and `stolen: null`; the others are still checked. "
                             "With `\"fuzzy\": true`, a unit not itself stolen also gets `possible_matches`: reported "
                             "serials of its manufacturer that its serial nearly matches (homoglyphs, one character "
                             "dropped, added, changed or swapped on serials of 8 or more), with their open cases. "
                             f"At most {MAX_CHECK_ITEMS:,} items and {MAX_BODY_BYTES // (1024 * 1024)} MiB per call "
                             "(422, 413 beyond): split a larger check into calls of that size.",
                 responses=errors({400: "the body is not text (not UTF-8)"}),
                 dependencies=[allow(*STOLEN_CHECKS)])
    def post_checks(request: CheckRequest) -> Response:
        with Session(engine) as session:
            result = check_units(session, request.items, request.fuzzy)
        # Serialized once, directly: re-validating 10,000 results through response_model would double the cost.
        return Response(result.model_dump_json(), media_type="application/json")

    @router.get("/alerts", response_model=Page[AlertOut], summary="Alerts, newest sighting first",
                responses=errors({400: "invalid manufacturer, or until not after since"}),
                dependencies=[allow(*THEFT_CASES)])
    def list_alerts(
        since: Annotated[QueryTime, time_query("seen at or after")] = None,
        until: Annotated[QueryTime, time_query("seen before")] = None,
        agency: Filter = None,
        status: Annotated[Literal["open", "withdrawn"] | None, Query()] = None,
        manufacturer: ManufacturerFilter = None,
        kind: Annotated[AlertKind | None, Query(description="possible_match: the low-priority near misses")] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Page[AlertOut]:
        filters = {**_alert_filters(since, until, agency, status, manufacturer), "kind": kind}
        with Session(engine) as session:
            total, rows = store.list_alerts(session, limit=limit, offset=offset, **filters)
        return Page(total=total, limit=limit, offset=offset, items=[_alert_out(r) for r in rows])

    def _alert_filters(since, until, agency, status, manufacturer) -> dict:
        _check_window(since, until)
        if manufacturer:
            manufacturer = manufacturer_or_400(manufacturer)
        return {"since": since, "until": until, "agency": agency, "status": status, "manufacturer": manufacturer}

    def _alert_records(filters: dict) -> Iterator[dict]:
        with Session(engine) as session:
            for row in store.iter_alerts(session, **filters):
                yield _alert_record(row)

    @router.get("/exports/alerts.{fmt}", summary="Hits for law enforcement, as CSV or JSON (streamed)",
                responses={200: {"content": {"text/csv": {}, "application/json": {}}},
                           **errors({400: "until not after since"})},
                dependencies=[allow(*THEFT_CASES)])
    def export_alerts(
        request: Request,
        fmt: Literal["csv", "json"],
        since: Annotated[QueryTime, time_query("seen at or after")] = None,
        until: Annotated[QueryTime, time_query("seen before")] = None,
        agency: Filter = None,
        status: Annotated[Literal["open", "withdrawn"] | None, Query()] = "open",
    ) -> StreamingResponse:
        filters = _alert_filters(since, until, agency, status, None)
        # Streamed, so shaped record by record (JSON answers are shaped by the route class).
        records = shape_records(request, CUSTOMER_FIELDS, _alert_records(filters))
        if fmt == "csv":
            return StreamingResponse(_csv(records, ALERT_COLUMNS), media_type="text/csv",
                                     headers={"Content-Disposition": 'attachment; filename="theft-alerts.csv"'})
        return StreamingResponse(_json_array(records), media_type="application/json")

    @router.get("/exports/retailer-reports.{fmt}",
                summary="Units the retailer marked lost or stolen, for law enforcement, as CSV or JSON",
                responses={200: {"content": {"text/csv": {}, "application/json": {}}},
                           **errors({400: "until not after since"})},
                dependencies=[allow(*THEFT_CASES)])
    def export_retailer_reports(
        request: Request,
        fmt: Literal["csv", "json"],
        since: Annotated[QueryTime, time_query("reported at or after")] = None,
        until: Annotated[QueryTime, time_query("reported before")] = None,
        location: Filter = None,
    ) -> StreamingResponse:
        _check_window(since, until)
        records = shape_records(request, CUSTOMER_FIELDS, _retailer_records(engine, since=since, until=until,
                                                                            location=location))
        if fmt == "csv":
            return StreamingResponse(_csv(records, RETAILER_REPORT_COLUMNS), media_type="text/csv",
                                     headers={"Content-Disposition": 'attachment; filename="retailer-reports.csv"'})
        return StreamingResponse(_json_array(records), media_type="application/json")

    return router


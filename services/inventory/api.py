"""Inventory's HTTP read side: units, their history and anomalies (OpenAPI at /docs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shared.auth import (
    ALL_ROLES,
    ANOMALIES,
    CUSTOMER,
    MANUFACTURER,
    RECEIPT,
    SHIPMENTS,
    STOCK_COUNTS,
    UNIT_LISTS,
    UNIT_LOOKUP,
    Principal,
    allow,
    customer_data_routes,
    manufacturer_filter,
)
from shared.csv_export import cell, download, stream
from shared.http import (
    NAME_PATTERN,
    SHAPED_ERRORS,
    Filter,
    Limit,
    ManufacturerFilter,
    ManufacturerPath,
    Offset,
    Page,
    SerialPath,
    errors,
    id_path,
    manufacturer_or_400,
    unit_key_or_400,
)
from shared.store import as_utc
from shared.voids import VoidMark, VoidOut, void_out

from . import aging, store
from .domain import EPCIS_DISPOSITION, Status


class HistoryEntry(BaseModel):
    time: datetime
    type: str
    source: str
    id: str
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
    voided: VoidOut | None = None  # withdrawn by an event.voided: kept in the history, not in the unit's state


class AnomalyOut(BaseModel):
    manufacturer: str
    serial: str
    kind: str
    detail: str
    status: str
    event_type: str
    event_source: str
    event_id: str
    event_time: datetime
    detected_at: datetime


class UnitOut(BaseModel):
    manufacturer: str
    serial: str
    status: Status
    epcis_disposition: str
    location: str | None
    sku: str | None
    condition: str | None
    stolen: bool
    theft_cases: list[str]
    recalls: list[str]
    last_event_time: datetime


class UnitDetail(UnitOut):
    history: list[HistoryEntry]
    anomalies: list[AnomalyOut]


class Caller(BaseModel):
    name: str
    role: str
    manufacturer: str | None


class SerialMatches(BaseModel):
    serial: str
    match: Literal["exact", "prefix"]
    items: list[UnitOut]  # manufacturer, then serial order


class Count(BaseModel):
    key: str | None  # None: units without a location or sku
    count: int


class StockSummary(BaseModel):
    manufacturer: str | None
    total: int
    by_status: list[Count]
    by_location: list[Count]  # largest first, at most 50
    by_sku: list[Count]
    aging: list[Count]  # units in stock by days since their last event (stock that does not move)


class AgingBands(BaseModel):
    days_0_to_30: int = Field(alias="0-30")
    days_31_to_90: int = Field(alias="31-90")
    days_91_to_180: int = Field(alias="91-180")
    over_180: int = Field(alias="180+")
    unknown: int  # on hand without a receipt or return on record
    total: int


class AgingGroup(AgingBands):
    sku: str | None
    location: str | None


class ReturnedStock(BaseModel):
    sku: str | None
    returned_units: int  # units on hand that customers brought back at least once
    restocked: int  # of them, sellable again (in stock)
    awaiting: int  # back, not restocked yet (status returned)
    held: int  # damaged or quarantined
    returns: int  # the returns they had, all told
    returned_more_than_once: int


class AgedUnit(BaseModel):
    manufacturer: str
    serial: str
    sku: str | None
    location: str | None
    status: Status
    stocked_at: datetime | None  # the receipt (or the later return) that put it where it stands
    days_in_stock: int | None  # whole days since stocked_at
    times_returned: int


class StockAging(BaseModel):
    as_of: datetime
    manufacturer: str | None
    location: str | None
    sku: str | None
    older_than_days: int | None
    bands: list[AgingGroup]  # per (sku, location), sku then location order
    totals: AgingBands
    returns: list[ReturnedStock]  # per sku
    units: Page[AgedUnit]  # oldest stock first


class ShipmentUnitOut(BaseModel):
    manufacturer: str
    serial: str
    location: str | None  # where it was received (None: missing)
    on_time: bool  # received by the deadline
    time: datetime | None  # the receipt's event time
    event_source: str | None
    event_id: str | None


class ShipmentCounts(BaseModel):
    expected: int  # serials on the manifest
    received: int  # at the destination (received_late of them after the deadline)
    received_late: int
    missing: int  # not received at the destination by the deadline (known once it was checked)
    unexpected: int  # received at the destination with it, on no manifest to it
    diverted: int  # on this manifest, received somewhere else
    outstanding: int  # neither received, diverted nor missing yet


class ShipmentPartOut(BaseModel):
    part: int
    units: int
    dispatched_at: datetime
    event_source: str
    event_id: str


class ShipmentOut(BaseModel):
    shipment_id: str
    manufacturer: str
    from_location: str
    to_location: str
    retailer: str | None
    sku: str | None
    expected_arrival: str
    grace_days: int
    deadline: datetime
    deadline_checked: bool  # missing units are known (and reported as missing_in_transit) once it is
    dispatched_at: datetime  # the first part's
    parts: list[ShipmentPartOut]  # as they came (a manifest of more than 10,000 listed serials is several)
    counts: ShipmentCounts
    received: list[ShipmentUnitOut]  # each list: up to ``limit`` units from ``offset``, unit order
    missing: list[ShipmentUnitOut]
    unexpected: list[ShipmentUnitOut]
    diverted: list[ShipmentUnitOut]


class CountUnitOut(BaseModel):
    manufacturer: str
    serial: str
    result: Literal["matched", "missing", "unexpected"]
    seen: bool
    status_at_count: str | None  # the unit's status at counted_at (None: unknown to inventory then)
    location_at_count: str | None
    detail: str


class CountPartOut(BaseModel):
    part: int
    final: bool
    units: int


class CountOut(BaseModel):
    count_id: str
    location: str
    counted_at: datetime
    status: Literal["open", "complete"]  # open: parts still to come, nothing judged yet
    parts_expected: int | None  # known once the final part came
    parts: list[CountPartOut]
    completed_at: datetime | None
    totals: dict[str, int]  # matched, missing, unexpected
    units: Page[CountUnitOut]


COUNT_REPORT_FIELDS = ("count_id", "location", "counted_at", "manufacturer", "serial", "result", "seen",
                       "status_at_count", "location_at_count", "detail")


def _shipment_unit(row) -> ShipmentUnitOut:
    return ShipmentUnitOut(manufacturer=row.manufacturer, serial=row.serial, location=row.location,
                           on_time=row.on_time, time=as_utc(row.event_time), event_source=row.event_source,
                           event_id=row.event_id)


def _count_unit(row) -> CountUnitOut:
    return CountUnitOut(manufacturer=row.manufacturer, serial=row.serial, result=row.result, seen=row.seen,
                        status_at_count=row.status_at_count, location_at_count=row.location_at_count,
                        detail=row.detail)


ShipmentId = Annotated[str, id_path("shipment id")]
CountId = Annotated[str, id_path("count id")]


def _unit(row) -> dict:
    return {
        "manufacturer": row.manufacturer, "serial": row.serial, "status": row.status,
        "epcis_disposition": EPCIS_DISPOSITION[Status(row.status)], "location": row.location, "sku": row.sku,
        "condition": row.condition, "stolen": row.stolen, "theft_cases": json.loads(row.theft_cases),
        "recalls": json.loads(row.recalls), "last_event_time": as_utc(row.last_event_time),
    }


def _history(row, voids: dict[tuple[str, str], VoidMark]) -> HistoryEntry:
    fields = {k: v for k, v in row._mapping.items()
              if k in HistoryEntry.model_fields and k not in ("id", "time", "type", "source", "voided")
              and v is not None}
    return HistoryEntry(**fields, time=as_utc(row.event_time), type=row.event_type, source=row.event_source,
                        id=row.event_id, voided=void_out(voids.get((row.event_source, row.event_id))))


def _anomaly(row) -> AnomalyOut:
    data = dict(row._mapping)
    data["event_time"], data["detected_at"] = as_utc(row.event_time), as_utc(row.detected_at)
    return AnomalyOut(**data)


# Customers' data in inventory's answers (shared/auth.py VISIBILITY says who sees what).
CUSTOMER_FIELDS = {"customer_id": CUSTOMER, "receipt_id": RECEIPT}


def read_api(engine: Engine) -> APIRouter:
    router = APIRouter(tags=["inventory"], route_class=customer_data_routes(CUSTOMER_FIELDS),
                       responses=SHAPED_ERRORS)

    @router.get("/units/{manufacturer}/{serial}", response_model=UnitDetail,
                summary="One unit: current state, full history, anomalies",
                responses=errors({400: "invalid manufacturer or serial",
                                  404: "unknown unit, or another manufacturer's (manufacturer tokens)"}),
                dependencies=[allow(*UNIT_LOOKUP)])
    def get_unit(manufacturer: ManufacturerPath, serial: SerialPath) -> UnitDetail:
        key = unit_key_or_400(manufacturer, serial)
        with Session(engine) as session:
            row = store.get_unit(session, key)
            if row is None:
                raise HTTPException(404, detail=f"unit {key[0]}/{key[1]} is not known to inventory "
                                                "(no receipt, sale or report of it has been applied)")
            history = store.unit_history(session, key)
            voids = store.history_voids(session, key, history)
            return UnitDetail(**_unit(row), history=[_history(h, voids) for h in history],
                              anomalies=[_anomaly(a) for a in store.unit_anomalies(session, key)])

    @router.get("/units", response_model=Page[UnitOut], summary="Units, filtered, paginated",
                responses=errors({400: "invalid manufacturer",
                                  404: "another manufacturer's units (manufacturer tokens)"}))
    def list_units(
        caller: Annotated[Principal, allow(*UNIT_LISTS)],
        sku: Filter = None,
        location: Filter = None,
        status: Annotated[Status | None, Query(description="e.g. in_stock, sold, quarantined")] = None,
        manufacturer: ManufacturerFilter = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Page[UnitOut]:
        manufacturer = manufacturer_filter(caller, manufacturer)  # a manufacturer token: its own units only
        with Session(engine) as session:
            total, rows = store.list_units(session, sku=sku, location=location, status=status,
                                           manufacturer=manufacturer, limit=limit, offset=offset)
        return Page(total=total, limit=limit, offset=offset, items=[UnitOut(**_unit(r)) for r in rows])

    @router.get("/anomalies", response_model=Page[AnomalyOut], summary="Anomalies, newest first",
                responses=errors({400: "invalid manufacturer"}), dependencies=[allow(*ANOMALIES)])
    def list_anomalies(
        kind: Filter = None,
        status: Annotated[str | None, Query(pattern="^(open|withdrawn)$")] = None,
        manufacturer: ManufacturerFilter = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Page[AnomalyOut]:
        if manufacturer:
            manufacturer = manufacturer_or_400(manufacturer)
        with Session(engine) as session:
            total, rows = store.list_anomalies(session, kind=kind, status=status, manufacturer=manufacturer,
                                               limit=limit, offset=offset)
        return Page(total=total, limit=limit, offset=offset, items=[_anomaly(r) for r in rows])

    # --- for the web console (serialtrack/console) ---

    @router.get("/whoami", response_model=Caller, summary="The caller's token: its name, role and manufacturer")
    def whoami(caller: Annotated[Principal, allow(*ALL_ROLES)]) -> Caller:
        return Caller(name=caller.name, role=caller.role, manufacturer=caller.manufacturer)

    @router.get("/serials", response_model=SerialMatches,
                summary="Units by serial, whatever the manufacturer: the exact serial, or serials starting with it",
                responses=errors({400: "invalid serial or manufacturer",
                                  404: "another manufacturer's units (manufacturer tokens)"}))
    def find_serials(
        caller: Annotated[Principal, allow(*UNIT_LISTS)],
        serial: Annotated[str, Query(
            description="a serial, or its beginning: 1-64 of A-Z 0-9 . _ - starting with a letter or digit "
                        "(case-insensitive)", json_schema_extra={"pattern": NAME_PATTERN})],
        match: Annotated[Literal["exact", "prefix"], Query()] = "exact",
        manufacturer: ManufacturerFilter = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> SerialMatches:
        manufacturer = manufacturer_filter(caller, manufacturer)  # a manufacturer token: its own units only
        serial = unit_key_or_400(manufacturer or "x", serial)[1]
        with Session(engine) as session:
            rows = store.units_by_serial(session, serial, prefix=match == "prefix", manufacturer=manufacturer,
                                         limit=limit)
        return SerialMatches(serial=serial, match=match, items=[UnitOut(**_unit(r)) for r in rows])

    @router.get("/stock", response_model=StockSummary,
                summary="Counts by status, location and sku; units in stock by days since their last event",
                responses=errors({400: "invalid manufacturer",
                                  404: "another manufacturer's units (manufacturer tokens)"}))
    def stock(caller: Annotated[Principal, allow(*UNIT_LISTS)], manufacturer: ManufacturerFilter = None) -> StockSummary:
        manufacturer = manufacturer_filter(caller, manufacturer)
        with Session(engine) as session:
            summary = store.stock_summary(session, manufacturer, datetime.now(UTC))
        return StockSummary(
            manufacturer=manufacturer, total=summary["total"],
            **{k: [Count(key=key, count=n) for key, n in summary[k]]
               for k in ("by_status", "by_location", "by_sku", "aging")})

    @router.get("/stock/aging", response_model=StockAging,
                summary="Stock that is not selling: units on hand by days in stock, counts per sku and location "
                        "by age band, returned stock per sku",
                description="Days in stock count from the event time of the receipt (or of a later return) that put "
                            "the unit where it stands. Bands: 0-30, 31-90, 91-180 and 180+ whole days. "
                            "`older_than_days=N` keeps units in stock for more than N days. `format=csv` streams "
                            "every matching unit (oldest first) instead of a page.",
                responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
                           **errors({400: "invalid manufacturer",
                                     404: "another manufacturer's units (manufacturer tokens)"})})
    def stock_aging(
        caller: Annotated[Principal, allow(*UNIT_LISTS)],
        location: Filter = None,
        sku: Filter = None,
        older_than_days: Annotated[int | None, Query(ge=0, le=36_500, description="in stock for more than N days")] = None,
        manufacturer: ManufacturerFilter = None,
        format: Annotated[Literal["json", "csv"], Query(description="json (default, a page of units) or csv "
                                                                      "(every unit, streamed)")] = "json",
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Any:
        manufacturer = manufacturer_filter(caller, manufacturer)  # a manufacturer token: its own units only
        now = datetime.now(UTC)
        filters: dict[str, Any] = {"manufacturer": manufacturer, "location": location, "sku": sku,
                                   "older_than_days": older_than_days}
        if format == "csv":
            def rows():
                with Session(engine) as session:
                    yield from aging.csv_text(aging.iter_units(session, now=now, **filters))
            return download(rows(), "stock-aging.csv")
        with Session(engine) as session:
            summary = aging.summary(session, now=now, **filters)
            total, units = aging.units_page(session, now=now, limit=limit, offset=offset, **filters)
        return StockAging(as_of=now, **filters, bands=[AgingGroup(**g) for g in summary["bands"]],
                          totals=AgingBands(**summary["totals"]), returns=[ReturnedStock(**r) for r in summary["returns"]],
                          units=Page(total=total, limit=limit, offset=offset, items=[AgedUnit(**u) for u in units]))
    # --- manifests and counts (issue 14) ---

    @router.get("/shipments/{shipment_id}", response_model=ShipmentOut,
                summary="A shipment's manifest reconciled: expected, received, missing, unexpected, diverted",
                responses=errors({404: "unknown shipment, or another manufacturer's (manufacturer tokens)"}))
    def get_shipment(shipment_id: ShipmentId, caller: Annotated[Principal, allow(*SHIPMENTS)],
                     limit: Limit = 100, offset: Offset = 0) -> ShipmentOut:
        with Session(engine) as session:
            parts = store.get_shipment(session, shipment_id)
            row = parts[0] if parts else None
            if row is None or (caller.role == MANUFACTURER and not caller.owns(row.manufacturer)):
                raise HTTPException(404, detail=f"shipment {shipment_id} is not known to inventory")
            totals = store.shipment_totals(session, shipment_id)
            lists = {outcome: [_shipment_unit(r) for r in store.shipment_unit_rows(session, shipment_id, outcome,
                                                                                     limit, offset)]
                     for outcome in ("received", "missing", "unexpected", "diverted")}

        def total(outcome: str) -> int:
            return totals.get((outcome, True), 0) + totals.get((outcome, False), 0)

        expected = sum(p.expected_count for p in parts)
        judged = total("received") + total("diverted") + total("missing")
        counts = ShipmentCounts(expected=expected, received=total("received"),
                                received_late=totals.get(("received", False), 0), missing=total("missing"),
                                unexpected=total("unexpected"), diverted=total("diverted"),
                                outstanding=max(expected - judged, 0))
        return ShipmentOut(
            shipment_id=row.shipment_id, manufacturer=row.manufacturer, from_location=row.from_location,
            to_location=row.to_location, retailer=row.retailer, sku=row.sku, expected_arrival=row.expected_arrival,
            grace_days=row.grace_days, deadline=as_utc(row.deadline),
            deadline_checked=all(p.swept_at is not None for p in parts),
            dispatched_at=min(as_utc(p.event_time) for p in parts),
            parts=[ShipmentPartOut(part=p.part, units=p.expected_count, dispatched_at=as_utc(p.event_time),
                                   event_source=p.event_source, event_id=p.event_id) for p in parts],
            counts=counts, **lists)

    @router.get("/counts/{count_id}", response_model=CountOut,
                summary="A stock count reconciled: matched, missing and unexpected units",
                responses=errors({404: "unknown count"}), dependencies=[allow(*STOCK_COUNTS)])
    def get_count(count_id: CountId,
                  result: Annotated[Literal["matched", "missing", "unexpected"] | None, Query()] = None,
                  limit: Limit = 100, offset: Offset = 0) -> CountOut:
        with Session(engine) as session:
            count = store.get_count(session, count_id)
            if count is None:
                raise HTTPException(404, detail=f"count {count_id} is not known to inventory")
            totals = store.count_totals(session, count_id)
            parts = [CountPartOut(part=p.part, final=p.final, units=p.unit_count)
                     for p in store.count_parts(session, count_id)]
            rows = [_count_unit(r) for r in store.count_unit_rows(session, count_id, result, limit, offset)]
        listed = totals.get(result, 0) if result else sum(totals.values())
        return CountOut(count_id=count.count_id, location=count.location, counted_at=as_utc(count.counted_at),
                        status=count.status, parts_expected=count.parts_expected, parts=parts,
                        completed_at=as_utc(count.completed_at),
                        totals={r: totals.get(r, 0) for r in ("matched", "missing", "unexpected")},
                        units=Page(total=listed, limit=limit, offset=offset, items=rows))

    @router.get("/counts/{count_id}/report.csv", summary="A stock count's result, one row per unit, CSV",
                response_class=StreamingResponse,
                responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                                 "description": "one row per unit judged (matched, missing, unexpected)"},
                           **errors({404: "unknown count"})},
                dependencies=[allow(*STOCK_COUNTS)])
    def count_report(count_id: CountId) -> StreamingResponse:
        with Session(engine) as session:
            count = store.get_count(session, count_id)
        if count is None:
            raise HTTPException(404, detail=f"count {count_id} is not known to inventory")
        head = (count.count_id, count.location, as_utc(count.counted_at))

        def rows() -> Iterator[list[str]]:
            with Session(engine) as session:
                for r in store.count_unit_rows(session, count_id):
                    yield [cell(v) for v in (*head, r.manufacturer, r.serial, r.result, r.seen, r.status_at_count,
                                             r.location_at_count, r.detail)]

        return download(stream(COUNT_REPORT_FIELDS, rows()), f"count-{count_id}.csv")

    return router

"""Inventory's HTTP read side: units, their history and anomalies (OpenAPI at /docs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shared.auth import (
    ALL_ROLES,
    ANOMALIES,
    CUSTOMER,
    RECEIPT,
    UNIT_LISTS,
    UNIT_LOOKUP,
    Principal,
    allow,
    customer_data_routes,
    manufacturer_filter,
)
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
    manufacturer_or_400,
    unit_key_or_400,
)
from shared.store import as_utc
from shared.voids import VoidMark, VoidOut, void_out

from . import store
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

    return router

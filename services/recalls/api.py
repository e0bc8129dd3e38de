"""The recalls read API: campaigns with scope and progress, their units, per-unit lookup, and the
manufacturer report as CSV and JSON (OpenAPI at /docs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shared.auth import RECALL_CAMPAIGNS, UNIT_LOOKUP, Principal, allow, manufacturer_filter
from shared.csv_export import cell, download, stream
from shared.http import (
    COMMON_ERRORS,
    Limit,
    ManufacturerFilter,
    ManufacturerPath,
    Offset,
    Page,
    SerialPath,
    errors,
    id_path,
    unit_key_or_400,
)
from shared.identity import SerialRange
from shared.store import as_utc

from . import store
from .domain import Progress, UnitStatus


class ProgressOut(BaseModel):
    affected: int
    in_stock: int
    quarantined: int
    in_stock_not_quarantined: int
    sold: int
    sold_owner_notified: int
    sold_owner_unknown: int
    sold_awaiting_owner: int
    remedied: int
    unknown: int
    reached: int
    sale_attempts_while_quarantined: int
    completion_rate: float
    reach_rate: float


class ScopeOut(BaseModel):
    skus: list[str]
    serial_ranges: list[SerialRange]
    serials: list[str]
    ranges_described: list[str]


class RecallOut(BaseModel):
    recall_id: str
    manufacturer: str
    open: bool
    hazard: str | None  # None: only an amendment or closure of this recall has arrived so far
    remedy: str | None
    instructions: str | None
    issued_at: datetime | None
    closed_at: datetime | None
    close_reason: str | None
    amendments: int
    scope_updated_at: datetime
    scope: ScopeOut
    progress: ProgressOut


class SaleAttemptOut(BaseModel):
    manufacturer: str
    serial: str
    detail: str
    event_time: datetime | None
    event_source: str
    event_id: str


class RecallDetail(RecallOut):
    sale_attempts: list[SaleAttemptOut]


class CampaignUnitOut(BaseModel):
    recall_id: str
    manufacturer: str
    serial: str
    sku: str | None
    stock: str | None
    location: str | None
    status: UnitStatus
    quarantined_at: datetime | None
    quarantine_location: str | None
    owner_notified_at: datetime | None
    owner_unknown_at: datetime | None
    remedied_at: datetime | None
    remedy: str | None


class UnitRecallOut(BaseModel):
    recall_id: str
    open: bool
    basis: str  # "campaign": the unit is in the campaign; "scope": the scope covers the serial, unit unknown here
    hazard: str | None
    remedy: str | None
    instructions: str | None
    issued_at: datetime | None
    closed_at: datetime | None
    status: UnitStatus
    quarantined_at: datetime | None = None
    owner_notified_at: datetime | None = None
    owner_unknown_at: datetime | None = None
    remedied_at: datetime | None = None


class UnitRecallsOut(BaseModel):
    manufacturer: str
    serial: str
    known: bool  # a receipt, sale or return of the unit has been seen
    sku: str | None
    stock: str | None
    under_open_recall: bool  # an open recall covers it and it is not remedied
    open_recalls: list[str]
    recalls: list[UnitRecallOut]


REPORT_FIELDS = ("recall_id", "manufacturer", "serial", "sku", "status", "stock", "location", "quarantined_at",
                 "quarantine_location", "owner_notified_at", "owner_unknown_at", "remedied_at", "remedy")


def _scope(row) -> ScopeOut:
    ranges = [SerialRange.model_validate(r) for r in json.loads(row.serial_ranges)]
    return ScopeOut(skus=json.loads(row.skus), serial_ranges=ranges, serials=json.loads(row.serials),
                    ranges_described=[r.describe() for r in ranges])


def _recall(row, counts: dict[str, int], attempts: int) -> dict:
    return {
        "recall_id": row.recall_id, "manufacturer": row.manufacturer, "open": row.closed_at is None,
        "hazard": row.hazard, "remedy": row.remedy, "instructions": row.instructions,
        "issued_at": as_utc(row.issued_at), "closed_at": as_utc(row.closed_at), "close_reason": row.close_reason,
        "amendments": row.amendments, "scope_updated_at": as_utc(row.scope_at), "scope": _scope(row),
        "progress": ProgressOut(**asdict(Progress.from_counts(counts, attempts))),
    }


def _unit(row) -> CampaignUnitOut:
    return CampaignUnitOut(
        recall_id=row.recall_id, manufacturer=row.manufacturer, serial=row.serial, sku=row.sku, stock=row.stock,
        location=row.location, status=row.status, quarantined_at=as_utc(row.quarantined_at),
        quarantine_location=row.quarantine_location, owner_notified_at=as_utc(row.notified_at),
        owner_unknown_at=as_utc(row.owner_unknown_at), remedied_at=as_utc(row.remedied_at), remedy=row.remedy,
    )


RecallId = Annotated[str, id_path("recall id")]


def _not_found(recall_id: str) -> HTTPException:
    return HTTPException(404, detail=f"recall {recall_id!r} is not known (no recall.issued, amendment or closure "
                                     "of it has been applied)")


def read_api(engine: Engine) -> APIRouter:
    router = APIRouter(tags=["recalls"], responses=COMMON_ERRORS)
    unknown_recall = errors({404: "unknown recall, or another manufacturer's (manufacturer tokens)"})

    def visible_recall(session: Session, recall_id: str, caller: Principal):
        """The recall's row; 404 when unknown, or another manufacturer's for a manufacturer token
        (the same answer: it learns nothing of others' campaigns)."""
        row = store.get_recall(session, recall_id)
        if row is None or not caller.owns(row.manufacturer):
            raise _not_found(recall_id)
        return row

    def load_recall(session: Session, recall_id: str, caller: Principal) -> RecallDetail:
        row = visible_recall(session, recall_id, caller)
        counts = store.status_counts(session, [recall_id])[recall_id]
        attempts = store.sale_attempt_counts(session, [recall_id]).get(recall_id, 0)
        return RecallDetail(**_recall(row, counts, attempts), sale_attempts=[
            SaleAttemptOut(manufacturer=a.manufacturer, serial=a.serial, detail=a.detail,
                           event_time=as_utc(a.event_time), event_source=a.event_source, event_id=a.event_id)
            for a in store.sale_attempts(session, recall_id)
        ])

    @router.get("/recalls", response_model=Page[RecallOut], summary="Campaigns with their progress, newest first",
                responses=errors({400: "invalid manufacturer",
                                  404: "another manufacturer's recalls (manufacturer tokens)"}))
    def list_recalls(
        caller: Annotated[Principal, allow(*RECALL_CAMPAIGNS)],
        manufacturer: ManufacturerFilter = None,
        open: Annotated[bool | None, Query(description="true: open campaigns only; false: closed only")] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Page[RecallOut]:
        manufacturer = manufacturer_filter(caller, manufacturer)  # a manufacturer token: its own recalls only
        with Session(engine) as session:
            total, rows = store.list_recalls(session, manufacturer=manufacturer, open_=open, limit=limit,
                                             offset=offset)
            ids = [r.recall_id for r in rows]
            counts = store.status_counts(session, ids)
            attempts = store.sale_attempt_counts(session, ids)
            items = [RecallOut(**_recall(r, counts[r.recall_id], attempts.get(r.recall_id, 0))) for r in rows]
        return Page(total=total, limit=limit, offset=offset, items=items)

    @router.get("/recalls/{recall_id}", response_model=RecallDetail, summary="One campaign: scope and progress",
                responses=unknown_recall)
    def get_recall(recall_id: RecallId, caller: Annotated[Principal, allow(*RECALL_CAMPAIGNS)]) -> RecallDetail:
        with Session(engine) as session:
            return load_recall(session, recall_id, caller)

    @router.get("/recalls/{recall_id}/units", response_model=Page[CampaignUnitOut],
                summary="The campaign's units with their status, paginated (serial order)",
                responses=unknown_recall)
    def list_campaign_units(
        recall_id: RecallId,
        caller: Annotated[Principal, allow(*RECALL_CAMPAIGNS)],
        status: Annotated[UnitStatus | None, Query(description="e.g. quarantined, sold_owner_unknown")] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Page[CampaignUnitOut]:
        with Session(engine) as session:
            visible_recall(session, recall_id, caller)
            total, rows = store.campaign_units(session, recall_id, status=status, limit=limit, offset=offset)
        return Page(total=total, limit=limit, offset=offset, items=[_unit(r) for r in rows])

    @router.get("/recalls/{recall_id}/report.csv", summary="Manufacturer report: every affected serial, CSV",
                response_class=StreamingResponse,
                responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                                 "description": "one row per affected serial"}, **unknown_recall})
    def report_csv(recall_id: RecallId, caller: Annotated[Principal, allow(*RECALL_CAMPAIGNS)]) -> StreamingResponse:
        with Session(engine) as session:
            visible_recall(session, recall_id, caller)

        def rows() -> Iterator[list[str]]:
            with Session(engine) as session:
                for row in store.iter_campaign_units(session, recall_id):
                    unit = _unit(row).model_dump()
                    yield [cell(unit[f]) for f in REPORT_FIELDS]

        return download(stream(REPORT_FIELDS, rows()), f"recall-{recall_id}.csv")

    @router.get("/recalls/{recall_id}/report.json", summary="Manufacturer report: campaign, progress, every unit",
                responses=unknown_recall)
    def report_json(recall_id: RecallId, caller: Annotated[Principal, allow(*RECALL_CAMPAIGNS)]) -> dict:
        with Session(engine) as session:
            recall = load_recall(session, recall_id, caller)
            units = [_unit(r).model_dump(mode="json") for r in store.iter_campaign_units(session, recall_id)]
        return {"recall": recall.model_dump(mode="json"), "units": units}

    @router.get("/units/{manufacturer}/{serial}/recalls", response_model=UnitRecallsOut,
                summary="Is this unit under an open recall, and which",
                responses=errors({400: "invalid manufacturer or serial",
                                  404: "another manufacturer's unit (manufacturer tokens)"}),
                dependencies=[allow(*UNIT_LOOKUP)])
    def unit_recalls(manufacturer: ManufacturerPath, serial: SerialPath) -> UnitRecallsOut:
        key = unit_key_or_400(manufacturer, serial)
        with Session(engine) as session:
            unit = store.get_unit(session, key)
            rows = store.unit_campaigns(session, key)
            index = store.current_index(session)
            in_campaign = {r.recall_id for r in rows}
            # The unit may be unknown here (sold by another retailer, never received): the index
            # still says which recalls' serial scope covers it (recalls without an sku condition,
            # or with the sku this service has for it).
            by_scope = [rid for rid in index.match(key[0], key[1], unit.sku if unit else None)
                        if rid not in in_campaign]
            scope_rows = store.recalls_by_id(session, by_scope)
        recalls = [
            UnitRecallOut(recall_id=r.recall_id, open=r.closed_at is None, basis="campaign", hazard=r.hazard,
                          remedy=r.recall_remedy, instructions=r.instructions, issued_at=as_utc(r.issued_at),
                          closed_at=as_utc(r.closed_at), status=r.status, quarantined_at=as_utc(r.quarantined_at),
                          owner_notified_at=as_utc(r.notified_at), owner_unknown_at=as_utc(r.owner_unknown_at),
                          remedied_at=as_utc(r.remedied_at))
            for r in rows
        ] + [
            UnitRecallOut(recall_id=r.recall_id, open=True, basis="scope", hazard=r.hazard, remedy=r.remedy,
                          instructions=r.instructions, issued_at=as_utc(r.issued_at), closed_at=None,
                          status=UnitStatus.UNKNOWN)
            for r in scope_rows.values()
        ]
        open_ids = [r.recall_id for r in recalls if r.open and r.status != UnitStatus.REMEDIED]
        return UnitRecallsOut(manufacturer=key[0], serial=key[1], known=unit is not None,
                              sku=unit.sku if unit else None, stock=unit.stock if unit else None,
                              under_open_recall=bool(open_ids), open_recalls=open_ids, recalls=recalls)

    return router

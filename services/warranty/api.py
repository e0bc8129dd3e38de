"""Warranty's HTTP side: coverage per unit, claims and returns, and the counter's synchronous path.

The synchronous path (``POST /claims/decisions``, ``POST /returns/decisions``) does not decide by
itself: it publishes the request as its event (``warranty.claim.submitted`` / ``return.requested``)
with an id derived from the claim or request id, and waits (bounded) for the decision the consumer
commits. A retried POST is the same event, deduplicated. The answer is therefore the same decision
the rest of the system sees, and the request is in the history like any other.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field, ValidationError
from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shared.auth import (
    COUNTER,
    CUSTOMER,
    CUSTOMER_CASES,
    CUSTOMER_PURCHASES,
    CUSTOMER_SERVICE,
    PSEUDONYM,
    RECEIPT,
    SELL_THROUGH,
    UNIT_LOOKUP,
    Principal,
    allow,
    customer_data_routes,
)
from shared.contracts import (
    Code,
    CustomerErasureRequested,
    DecisionFacts,
    Note,
    ReturnRequested,
    Text,
    WarrantyClaimSubmitted,
)
from shared.envelope import make_event, new_event_id
from shared.erasure import receipts_of
from shared.http import (
    NAME_PATTERN,
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
    id_path,
    invalid_body,
    manufacturer_or_400,
    time_query,
    unit_key_or_400,
)
from shared.publishing import publish
from shared.store import as_utc
from shared.time_window import event_time_problem
from shared.voids import VoidOut, void_out

from . import sell_through, store
from .domain import fold_unit, open_recalls_covering, policy_for, recall_states
from .handlers import claim_event_id, return_event_id

MAX_WAIT_MS = 10_000
DEFAULT_WAIT_MS = 2_000
# The counter decides at the server's clock: a till's ``time`` is accepted only this close to it,
# so a client cannot backdate a claim into a coverage that has ended (or before a theft report).
MAX_CLOCK_SKEW = timedelta(minutes=5)

# Customers' data in warranty's answers (shared/auth.py VISIBILITY says who sees what). Fields a
# role may not see are null, hence ``str | None`` below even where the store always has a value.
CUSTOMER_FIELDS = {"customer_id": CUSTOMER, "owner_customer_id": CUSTOMER, "sale_customer_id": CUSTOMER,
                   "pending_owner_customer_ids": CUSTOMER, "receipt_id": RECEIPT, "sale_receipt_id": RECEIPT}


class DecisionVersion(BaseModel):
    version: int
    status: str
    reasons: list[str]
    event_id: str
    supersedes: str | None
    decided_at: datetime
    facts: DecisionFacts


class ClaimOut(BaseModel):
    claim_id: str
    manufacturer: str
    serial: str
    customer_id: str | None  # null for roles that do not see customer ids
    issue: str
    location: str | None
    submitted_at: datetime
    status: Literal["approved", "rejected", "needs_review", "pending"]
    reasons: list[str]
    version: int
    decision_id: str | None
    decided_at: datetime | None
    facts: DecisionFacts | None


class ClaimDetail(ClaimOut):
    versions: list[DecisionVersion]


class ReturnOut(BaseModel):
    request_id: str
    manufacturer: str
    serial: str
    receipt_id: str | None  # null for roles that do not see receipts
    location: str
    customer_id: str | None
    requested_at: datetime
    status: Literal["accepted", "rejected", "needs_review", "pending"]
    reasons: list[str]
    version: int
    decision_id: str | None
    decided_at: datetime | None
    facts: DecisionFacts | None


class ReturnDetail(ReturnOut):
    versions: list[DecisionVersion]


class Pending(BaseModel):
    status: Literal["pending"] = "pending"
    poll: str
    detail: str


class SaleOut(BaseModel):
    receipt_id: str | None
    sold_at: datetime
    location: str | None
    customer_id: str | None
    sku: str | None


class CoverageOut(BaseModel):
    policy_id: str
    coverage_days: int
    return_window_days: int
    starts: datetime
    ends: datetime
    return_window_ends: datetime
    status: Literal["active", "expired", "ended_by_return"]


class OwnerOut(BaseModel):
    customer_id: str | None  # null for roles that do not see customer ids
    via: Literal["registration", "sale", "transfer"]  # transfer: a registration signed by a trusted key
    since: datetime


class OwnerPeriodOut(OwnerOut):
    event: str  # "source/id" of the sale or registration that made them owner


class RegistrationOut(BaseModel):
    customer_id: str | None  # null for roles that do not see customer ids
    registered_at: datetime
    sold_here: bool  # False: registered although this retailer never sold the unit (before the registration)
    # What it did (docs/warranty.md, "Owners"): owner, transfer, confirmed, no_change, pending, closed.
    outcome: Literal["owner", "transfer", "confirmed", "no_change", "pending", "closed"]
    event: str
    channel: str | None = None
    signed_by: str | None = None  # kid of the verified signature, None when unsigned
    closed_by: str | None = None  # a closed pending change: the sale or trusted registration that settled it


class PendingOwnershipChangeOut(BaseModel):
    """A registration naming someone other than the owner, not signed by a key trusted for transfers."""

    customer_id: str | None  # null for roles that do not see customer ids
    registered_at: datetime
    event: str
    channel: str | None
    signed_by: str | None
    reason: Literal["ownership_change_pending"] = "ownership_change_pending"
    detail: str


class RecallOut(BaseModel):
    recall_id: str
    remedy: str | None
    hazard: str | None
    notice: Literal["notified", "unknown"] | None  # what the warranty service sent for this unit


class RequestSummary(BaseModel):
    kind: Literal["claim", "return"]
    reference: str
    at: datetime
    status: str
    reasons: list[str]
    version: int


class HistoryEntry(BaseModel):
    time: datetime
    type: str
    source: str
    id: str
    sku: str | None = None
    location: str | None = None
    receipt_id: str | None = None
    customer_id: str | None = None
    theft_case: str | None = None
    signed_by: str | None = None
    voided: VoidOut | None = None  # withdrawn by an event.voided: shown, never counted (coverage, decisions)


class WarrantyOut(BaseModel):
    manufacturer: str
    serial: str
    status: Literal["covered", "expired", "returned", "in_stock", "not_sold_here"]
    received: bool
    sku: str | None
    sale: SaleOut | None
    coverage: CoverageOut | None
    owner: OwnerOut | None
    # Changes that wait for a person (or a trusted registration): claims go to review meanwhile.
    pending_ownership_changes: list[PendingOwnershipChangeOut]
    owner_history: list[OwnerPeriodOut]
    registrations: list[RegistrationOut]
    stolen: bool
    theft_cases: list[str]
    open_recalls: list[RecallOut]
    requests: list[RequestSummary]
    history: list[HistoryEntry]


class PurchaseOut(BaseModel):
    manufacturer: str
    serial: str
    at: datetime
    via: Literal["sale", "registration"]
    sku: str | None
    location: str | None
    receipt_id: str | None
    customer_id: str | None


class ClaimAsk(BaseModel):
    """A claim at the counter: the ``warranty.claim.submitted`` data, and optionally the till's time
    (within MAX_CLOCK_SKEW of the server's clock). The envelope's source is the caller's token
    (``http/<token name>``); a ``source`` in the body is ignored."""

    claim_id: Code
    manufacturer: str = Field(json_schema_extra={"pattern": NAME_PATTERN})
    serial: str = Field(json_schema_extra={"pattern": NAME_PATTERN})
    customer_id: Code
    issue: Text
    location: Code | None = None
    time: AwareDatetime | None = Field(default=None, description="the till's clock; at most 5 minutes from the "
                                                                  "server's, else 422. Default: the server's clock")


class ReturnAsk(BaseModel):
    request_id: Code
    manufacturer: str = Field(json_schema_extra={"pattern": NAME_PATTERN})
    serial: str = Field(json_schema_extra={"pattern": NAME_PATTERN})
    receipt_id: Code
    location: Code
    customer_id: Code | None = None
    terminal_id: Code | None = None
    reason: Note = ""
    time: AwareDatetime | None = Field(default=None, description="the till's clock; at most 5 minutes from the "
                                                                  "server's, else 422. Default: the server's clock")


def _facts(raw: str) -> DecisionFacts | None:
    return DecisionFacts.model_validate_json(raw) if raw and raw != "{}" else None


def claim_out(row: dict) -> dict:
    return {**{k: row[k] for k in ("claim_id", "manufacturer", "serial", "customer_id", "issue", "location",
                                   "submitted_at", "version", "decision_id", "decided_at")},
            "status": row["status"] or "pending", "reasons": json.loads(row["reasons"]), "facts": _facts(row["facts"])}


def return_out(row: dict) -> dict:
    return {**{k: row[k] for k in ("request_id", "manufacturer", "serial", "receipt_id", "location", "customer_id",
                                   "requested_at", "version", "decision_id", "decided_at")},
            "status": row["status"] or "pending", "reasons": json.loads(row["reasons"]), "facts": _facts(row["facts"])}


def _versions(session: Session, kind: str, reference: str) -> list[DecisionVersion]:
    return [DecisionVersion(version=r.version, status=r.status, reasons=json.loads(r.reasons), event_id=r.event_id,
                            supersedes=r.supersedes, decided_at=as_utc(r.decided_at),
                            facts=DecisionFacts.model_validate_json(r.facts))
            for r in store.decision_versions(session, kind, reference)]


LATEST_TIME = datetime.max.replace(tzinfo=UTC)


def _plus_days(time: datetime, days: int) -> datetime:
    """``time`` + ``days``, or the latest time there is: a sale stored with a date near 9999 (which
    versions before the event-time window accepted) must still show, not fail the whole view."""
    try:
        return time + timedelta(days=days)
    except OverflowError:
        return LATEST_TIME


def warranty_view(session: Session, key: store.UnitKey, now: datetime) -> WarrantyOut | None:
    shown = store.load_facts(session, [key], voided=True)[key]
    claims = store.requests_of_units(session, "claim", [key])
    returns = store.requests_of_units(session, "return", [key])
    if not shown and not claims and not returns:
        return None
    voids = store.voids_of(session, {key: shown})
    facts = [f for f in shown if (f.source, f.event_id) not in voids]
    view = fold_unit(facts)
    coverage = None
    if view.sale is not None:
        policy = policy_for(store.load_policies(session, [key[0]]), key[0], view.sku, view.sale.time)
        ends = _plus_days(view.sale.time, policy.coverage_days)
        coverage = CoverageOut(
            policy_id=policy.policy_id, coverage_days=policy.coverage_days,
            return_window_days=policy.return_window_days, starts=view.sale.time, ends=ends,
            return_window_ends=_plus_days(view.sale.time, policy.return_window_days),
            status="ended_by_return" if view.returned else ("active" if now < ends else "expired"))
    if view.sale is None:
        status = "in_stock" if view.received else "not_sold_here"
    else:
        status = "returned" if view.returned else ("covered" if coverage and coverage.status == "active" else "expired")
    recalls = store.load_recalls(session, [key[0]])
    notices = {r.recall_id: r.outcome for r in store.notices_of_unit(session, key)}
    open_recalls = [
        RecallOut(recall_id=r.recall_id, remedy=r.remedy, hazard=recalls.issued.get(r.recall_id, {}).get("hazard"),
                  notice=notices.get(r.recall_id))
        for r in open_recalls_covering(recall_states(recalls.events), key[0], key[1], view.sku)
    ]
    requests = sorted(
        [RequestSummary(kind="claim", reference=r["claim_id"], at=r["submitted_at"], status=r["status"] or "pending",
                        reasons=json.loads(r["reasons"]), version=r["version"]) for r in claims]
        + [RequestSummary(kind="return", reference=r["request_id"], at=r["requested_at"],
                          status=r["status"] or "pending", reasons=json.loads(r["reasons"]), version=r["version"])
           for r in returns],
        key=lambda r: (r.at, r.reference))
    history = [HistoryEntry(time=f.time, type=f.type, source=f.source, id=f.event_id, sku=f.sku, location=f.location,
                            receipt_id=f.receipt_id, customer_id=f.customer_id,
                            theft_case=f.case if f.agency else None, signed_by=f.signed_by,
                            voided=void_out(voids.get((f.source, f.event_id))))
               for f in sorted(shown, key=lambda f: f.order)]
    return WarrantyOut(
        manufacturer=key[0], serial=key[1], status=status, received=view.received is not None, sku=view.sku,
        sale=SaleOut(receipt_id=view.sale.receipt_id, sold_at=view.sale.time, location=view.sale.location,
                     customer_id=view.sale.customer_id, sku=view.sale.sku) if view.sale else None,
        coverage=coverage,
        owner=OwnerOut(customer_id=view.owner, via=view.owner_via, since=view.owner_since) if view.owner else None,
        pending_ownership_changes=[
            PendingOwnershipChangeOut(
                customer_id=r.customer_id, registered_at=r.time, event=r.ref, channel=r.channel, signed_by=r.signed_by,
                detail=f"registration of {r.customer_id} while {view.owner} owns the unit ({view.owner_via} since "
                       f"{view.owner_since:%Y-%m-%dT%H:%M:%SZ}), not signed by a key trusted for ownership "
                       "transfers: claims go to review until a trusted registration or a new sale settles it")
            for r in view.pending],
        owner_history=[OwnerPeriodOut(customer_id=o.customer_id, via=o.via, since=o.since, event=o.ref)
                       for o in view.owner_history],
        registrations=[RegistrationOut(customer_id=r.customer_id, registered_at=r.time, sold_here=r.sold_here,
                                       outcome=r.outcome, event=r.ref, channel=r.channel, signed_by=r.signed_by,
                                       closed_by=r.closed_by)
                       for r in view.registrations],
        stolen=bool(view.theft_cases), theft_cases=list(view.theft_cases), open_recalls=open_recalls,
        requests=requests, history=history,
    )


class ErasureAsk(BaseModel):
    customer_id: Code
    receipt_ids: list[Code] = Field(default_factory=list, max_length=1000)
    note: Note = ""


class ErasureAccepted(BaseModel):
    erasure_id: str
    receipts: int  # receipts erased with the customer, besides those each service finds itself
    detail: str = ("requested: each service reports a customer.erasure.completed event naming this erasure_id "
                   "(`serialtrack erase` waits for them)")


def counter_time(at: datetime | None, now: datetime | None = None) -> datetime:
    """The event time of a counter request: the server's clock, or the till's within MAX_CLOCK_SKEW."""
    now = now or datetime.now(UTC)
    if at is None:
        return now
    problem = event_time_problem(at, now)
    if problem is None and abs(at - now) > MAX_CLOCK_SKEW:
        problem = (f"time must be within {int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes of the server's clock "
                   f"({now.isoformat(timespec='seconds')}); the counter decides now, it does not backdate")
    if problem:
        # The shape of FastAPI's own 422 (HTTPValidationError), so clients read one format.
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "time"), "input": at.isoformat(),
                                       "msg": problem}])
    return at


def _contract(model, data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_body(exc) from None


async def _wait_for_decision(engine: Engine, kind: str, reference: str, wait_ms: int) -> dict | None:
    """Poll the committed decision (cheap primary-key reads), backing off from 2 ms to 20 ms. wait_ms=0
    does not look: the caller asked not to wait (202 at once), whatever the consumer did meanwhile."""
    if wait_ms == 0:
        return None
    deadline = time.monotonic() + wait_ms / 1000
    delay = 0.002
    while True:
        row = await asyncio.to_thread(_read_request, engine, kind, reference)
        if row is not None and row["status"] is not None:
            return row
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 1.5, 0.02)


def _read_request(engine: Engine, kind: str, reference: str) -> dict | None:
    with Session(engine) as session:
        return store.get_request(session, kind, reference)


# --- the sell-through report (services/warranty/sell_through.py): no customer data in it ---

class SellThroughLine(BaseModel):
    kind: Literal["sold", "returned"]
    time: datetime
    serial: str
    sku: str | None  # a return's: the sku of the sale it ended
    location: str | None
    channel: str | None  # a sale's terminal_id; a return's envelope source (unit.returned names no till)
    owner_registered: bool  # an owner is on record for the ownership the sale began (now, not as of the period)
    owner_via: Literal["sale", "registration", "transfer"] | None
    sold_at: datetime | None  # the sale (a sale's own time; a return's sale; null: returned, never sold here)


class SellThroughCount(BaseModel):
    sku: str | None
    location: str | None
    sold: int
    returned: int
    net: int
    sold_with_owner: int


class SellThroughTotals(BaseModel):
    sold: int
    returned: int
    net: int
    sold_with_owner: int


class SellThroughReport(BaseModel):
    manufacturer: str
    since: datetime | None
    until: datetime | None
    sku: str | None
    as_of: datetime
    units: list[SellThroughLine] | None  # null with view=counts
    counts: list[SellThroughCount]  # per (sku, location), sku then location order
    totals: SellThroughTotals


def read_api(engine: Engine) -> APIRouter:
    router = APIRouter(tags=["warranty"], route_class=customer_data_routes(CUSTOMER_FIELDS),
                       responses=SHAPED_ERRORS)

    @router.get("/warranties/{manufacturer}/{serial}", response_model=WarrantyOut,
                summary="One unit's coverage, owner, policy, recalls, claims, returns and history",
                responses=errors({400: "invalid manufacturer or serial",
                                  404: "unit unknown to the warranty service, or another manufacturer's "
                                       "(manufacturer tokens)"}),
                dependencies=[allow(*UNIT_LOOKUP)])
    def get_warranty(manufacturer: ManufacturerPath, serial: SerialPath) -> WarrantyOut:
        key = unit_key_or_400(manufacturer, serial)
        with Session(engine) as session:
            found = warranty_view(session, key, datetime.now(UTC))
        if found is None:
            raise HTTPException(404, detail=f"unit {key[0]}/{key[1]} is not known to the warranty service "
                                            "(no receipt, sale, registration, claim or return of it)")
        return found

    @router.get("/claims/{claim_id}", response_model=ClaimDetail, summary="One claim, its decision and versions",
                responses=errors({404: "unknown claim"}), dependencies=[allow(*CUSTOMER_CASES)])
    def get_claim(claim_id: Annotated[str, id_path("claim id")]) -> ClaimDetail:
        with Session(engine) as session:
            row = store.get_request(session, "claim", claim_id)
            if row is None:
                raise HTTPException(404, detail=f"claim {claim_id!r} is not known (not submitted, or not applied yet)")
            return ClaimDetail(**claim_out(row), versions=_versions(session, "claim", claim_id))

    @router.get("/claims", response_model=Page[ClaimOut], summary="Claims, newest first, filtered, paginated",
                responses=errors({400: "invalid manufacturer",
                                  403: "the token's role may not call this endpoint, or may not filter by "
                                       "customer_id (auditor: it sees pseudonyms)"}))
    def list_claims(
        caller: Annotated[Principal, allow(*CUSTOMER_CASES)],
        status: Annotated[str | None, Query(pattern="^(approved|rejected|needs_review|pending)$")] = None,
        manufacturer: ManufacturerFilter = None,
        customer_id: Filter = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Page[ClaimOut]:
        if customer_id is not None and caller.sees(CUSTOMER) == PSEUDONYM:
            # An auditor sees pseudonyms: looking a person up by their real id would undo that.
            raise HTTPException(403, detail=f"role {caller.role} may not filter by customer_id")
        if manufacturer:
            manufacturer = manufacturer_or_400(manufacturer)
        with Session(engine) as session:
            total, rows = store.list_claims(session, status=status, manufacturer=manufacturer,
                                            customer_id=customer_id, limit=limit, offset=offset)
        return Page(total=total, limit=limit, offset=offset, items=[ClaimOut(**claim_out(r)) for r in rows])

    @router.get("/customers/{customer_id}/purchases", response_model=list[PurchaseOut],
                summary="A customer's units: bought here or registered to them, newest first",
                dependencies=[allow(*CUSTOMER_PURCHASES)])
    def customer_purchases(customer_id: Annotated[str, id_path("customer id")],
                           limit: Limit = 100) -> list[PurchaseOut]:
        with Session(engine) as session:
            rows = store.purchases_of(session, customer_id, limit)
        return [PurchaseOut(manufacturer=r.manufacturer, serial=r.serial, at=as_utc(r.event_time),
                            via="sale" if r.event_type == "unit.sold" else "registration", sku=r.sku,
                            location=r.location, receipt_id=r.receipt_id, customer_id=r.customer_id) for r in rows]

    @router.get("/manufacturers/{manufacturer}/sell-through", response_class=StreamingResponse,
                summary="Sell-through: the manufacturer's serials sold or returned in a period, and counts per "
                        "sku and store (JSON or CSV, streamed)",
                description="Each sale and return in [since, until) (event time), oldest first: date, serial, sku, "
                            "location, channel (the till), and whether an owner is on record (no customer data). "
                            "`sku` keeps the sales of that sku and the returns of their units. `format=csv` gives "
                            "the lines as CSV, or with `view=counts` the counts per sku and location. Only the "
                            "manufacturer's own token (and admin) may read it.",
                responses={200: {"model": SellThroughReport, "content": {"text/csv": {"schema": {"type": "string"}}},
                                 "description": "the report: JSON (below) or CSV"},
                           **errors({400: "invalid manufacturer, or until not after since",
                                     404: "another manufacturer's report (manufacturer tokens)"})},
                dependencies=[allow(*SELL_THROUGH)])
    def get_sell_through(
        manufacturer: ManufacturerPath,
        since: Annotated[QueryTime, time_query("sold or returned at or after")] = None,
        until: Annotated[QueryTime, time_query("sold or returned before")] = None,
        sku: Filter = None,
        format: Annotated[Literal["json", "csv"], Query(description="json (default) or csv")] = "json",
        view: Annotated[Literal["units", "counts"], Query(
            description="units: every sale and return, and the counts (JSON); counts: only the counts")] = "units",
    ) -> StreamingResponse:
        maker = manufacturer_or_400(manufacturer)
        if since and until and until <= since:
            raise HTTPException(400, detail=f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
        counts = sell_through.Counts()
        head = {"manufacturer": maker, "since": since, "until": until, "sku": sku, "as_of": datetime.now(UTC)}

        def body():
            with Session(engine) as session:
                rows = sell_through.counted(sell_through.lines(session, maker, since=since, until=until, sku=sku),
                                            counts)
                if view == "counts":
                    for _ in rows:
                        pass
                if format == "csv":
                    yield from (sell_through.csv_text(rows, sell_through.UNIT_COLUMNS) if view == "units" else
                                sell_through.csv_text(counts.rows(), sell_through.COUNT_COLUMNS))
                else:
                    yield from sell_through.json_text(head, rows if view == "units" else None, counts)

        if format == "csv":
            name = f"sell-through-{maker}{'-counts' if view == 'counts' else ''}.csv"
            return StreamingResponse(body(), media_type="text/csv; charset=utf-8",
                                     headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return StreamingResponse(body(), media_type="application/json")

    @router.get("/returns/{request_id}", response_model=ReturnDetail, summary="One return request and its decision",
                responses=errors({404: "unknown request"}), dependencies=[allow(*CUSTOMER_CASES)])
    def get_return(request_id: Annotated[str, id_path("return request id")]) -> ReturnDetail:
        with Session(engine) as session:
            row = store.get_request(session, "return", request_id)
            if row is None:
                raise HTTPException(404, detail=f"return request {request_id!r} is not known")
            return ReturnDetail(**return_out(row), versions=_versions(session, "return", request_id))

    async def ask(request: Request, response: Response, kind: str, data, event_id: str, source: str,
                  at: datetime | None, reference: str, wait_ms: int):
        runtime = request.app.state.runtime
        known = await asyncio.to_thread(_read_request, engine, kind, reference)
        if known is not None and (known["manufacturer"], known["serial"]) != (data.manufacturer, data.serial):
            raise HTTPException(409, detail=f"{kind} {reference!r} already exists for unit "
                                            f"{known['manufacturer']}/{known['serial']}: use a new id")
        if known is None or known["status"] is None:
            if known is None:
                event = make_event(data, source=source, id=event_id, time=at)
                try:
                    await publish(runtime.consumer.writer, runtime.settings.streams, [event.envelope])
                except RedisError as exc:
                    raise HTTPException(503, detail=f"cannot record the {kind}: Redis unavailable ({exc})") from None
            known = await _wait_for_decision(engine, kind, reference, wait_ms)
        if known is None:
            plural = "claims" if kind == "claim" else "returns"
            response.status_code = 202
            response.headers["Location"] = f"/{plural}/{reference}"
            return Pending(poll=f"/{plural}/{reference}",
                           detail=f"recorded; no decision within {wait_ms} ms, poll /{plural}/{reference}")
        return known

    @router.post("/claims/decisions", response_model=ClaimOut | Pending,
                 summary="Submit a claim and wait (bounded) for its decision",
                 responses={202: {"model": Pending, "description": "recorded, not decided within wait_ms"},
                            **errors({400: "the body is not text (not UTF-8)",
                                      409: "the claim_id is taken by a claim on another unit",
                                      503: "Redis is unavailable (the claim is not recorded), or "
                                           "pseudonyms are not (no key in the tokens dir)"})})
    async def ask_claim(ask_body: ClaimAsk, request: Request, response: Response,
                        caller: Annotated[Principal, allow(*COUNTER)],
                        wait_ms: Annotated[int, Query(ge=0, le=MAX_WAIT_MS)] = DEFAULT_WAIT_MS):
        at = counter_time(ask_body.time)
        data = _contract(WarrantyClaimSubmitted, ask_body.model_dump(exclude={"time"}))
        row = await ask(request, response, "claim", data, claim_event_id(data.claim_id), caller.source,
                        at, data.claim_id, wait_ms)
        return row if isinstance(row, Pending) else ClaimOut(**claim_out(row))

    @router.post("/returns/decisions", response_model=ReturnOut | Pending,
                 summary="Ask at the counter whether a return is accepted; waits (bounded) for the decision",
                 responses={202: {"model": Pending, "description": "recorded, not decided within wait_ms"},
                            **errors({400: "the body is not text (not UTF-8)",
                                      409: "the request_id is taken by a request on another unit",
                                      503: "Redis is unavailable (the request is not recorded), or "
                                           "pseudonyms are not (no key in the tokens dir)"})})
    async def ask_return(ask_body: ReturnAsk, request: Request, response: Response,
                         caller: Annotated[Principal, allow(*COUNTER)],
                         wait_ms: Annotated[int, Query(ge=0, le=MAX_WAIT_MS)] = DEFAULT_WAIT_MS):
        at = counter_time(ask_body.time)
        data = _contract(ReturnRequested, ask_body.model_dump(exclude={"time"}))
        row = await ask(request, response, "return", data, return_event_id(data.request_id), caller.source,
                        at, data.request_id, wait_ms)
        return row if isinstance(row, Pending) else ReturnOut(**return_out(row))

    @router.post("/erasures", response_model=ErasureAccepted, status_code=202,
                 summary="Erase a customer on request: every service pseudonymizes them and reports it",
                 responses=errors({400: "the body is not text (not UTF-8)",
                                   503: "Redis is unavailable: nothing was requested"}))
    async def request_erasure(body: ErasureAsk, request: Request,
                              caller: Annotated[Principal, allow(CUSTOMER_SERVICE)]) -> ErasureAccepted:
        # The receipts this service ties to the customer go with the request, so that services that
        # keep receipts without customers (theft's sightings) erase them too.
        with Session(engine) as session:
            known = receipts_of(session, request.app.state.runtime.definition.customer_data, body.customer_id)
        data = _contract(CustomerErasureRequested, {
            "erasure_id": f"erasure-{new_event_id()}", "customer_id": body.customer_id,
            "receipt_ids": sorted(known | set(body.receipt_ids)), "note": body.note})
        runtime = request.app.state.runtime
        try:
            await publish(runtime.consumer.writer, runtime.settings.streams,
                          [make_event(data, source=caller.source).envelope])
        except RedisError as exc:
            raise HTTPException(503, detail=f"cannot request the erasure: Redis unavailable ({exc})") from None
        return ErasureAccepted(erasure_id=data.erasure_id, receipts=len(data.receipt_ids))

    return router


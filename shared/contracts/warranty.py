"""Warranty policies, owners, claims and return requests, and what the warranty service answers."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..identity import Manufacturer, Serial
from .base import Code, EventData, Note, Text
from .recalls import Remedy


class WarrantyPolicySet(EventData):
    """A manufacturer's warranty terms, for all its skus (``sku`` omitted) or one sku, in force from
    ``effective_from``. A sale is covered by the most specific policy in force at the sale's time."""

    event_type: ClassVar[str] = "warranty.policy.set"
    policy_id: Code
    manufacturer: Manufacturer
    sku: Code | None = None
    coverage_days: int = Field(ge=1, le=3650)
    return_window_days: int = Field(default=30, ge=0, le=365)
    effective_from: AwareDatetime


class WarrantyOwnerRegistered(EventData):
    """A consumer registered ownership of a unit they hold. It makes them the owner only when nobody
    is (the unit was sold without a customer, or never sold here); naming someone other than the owner,
    it is a pending ownership change unless signed by a key trusted for ownership transfers
    (docs/warranty.md, "Owners")."""

    event_type: ClassVar[str] = "warranty.owner.registered"
    manufacturer: Manufacturer
    serial: Serial
    customer_id: Code
    channel: Code | None = None  # where they registered: web, store, manufacturer, ...


class WarrantyClaimSubmitted(EventData):
    """A customer claimed warranty on a unit they hold."""

    event_type: ClassVar[str] = "warranty.claim.submitted"
    claim_id: Code
    manufacturer: Manufacturer
    serial: Serial
    customer_id: Code
    issue: Text
    location: Code | None = None  # the store or service desk taking the claim


class ReturnRequested(EventData):
    """A customer at the counter wants to return a unit bought on ``receipt_id``."""

    event_type: ClassVar[str] = "return.requested"
    request_id: Code
    manufacturer: Manufacturer
    serial: Serial
    receipt_id: Code
    location: Code
    customer_id: Code | None = None
    terminal_id: Code | None = None
    reason: Note = ""


class RecallOwnerNotified(EventData):
    """The warranty service sent the registered owner of a recalled unit its notice."""

    event_type: ClassVar[str] = "recall.owner_notified"
    published_by: ClassVar[str | None] = "warranty"
    recall_id: Code
    manufacturer: Manufacturer
    serial: Serial
    customer_id: Code
    hazard: Text
    remedy: Remedy
    instructions: Note = ""


class RecallOwnerUnknown(EventData):
    """A recalled unit was sold but nobody registered as its owner: it cannot be notified."""

    event_type: ClassVar[str] = "recall.owner_unknown"
    published_by: ClassVar[str | None] = "warranty"
    recall_id: Code
    manufacturer: Manufacturer
    serial: Serial


# What the warranty service answers. Decisions are re-issued (``version`` + 1, ``supersedes`` naming the
# previous decision's event id) when a fact that arrived late, but happened before the request, changes
# the outcome; consumers keep the highest version per claim or request.

ClaimStatus = Literal["approved", "rejected", "needs_review"]
ReturnStatus = Literal["accepted", "rejected", "needs_review"]

ClaimReason = Literal[
    "unknown_serial",  # neither received nor sold by this retailer: counterfeit, gray market, or a late sale
    "never_sold",  # received, never sold (still in stock): nothing to claim on
    "outside_coverage",  # the claim came after ``coverage_ends``
    "coverage_ended_by_return",  # the sale was returned: its coverage ended
    "duplicate_claim",  # same unit, same issue, an earlier claim not rejected, within the duplicate window
    "not_registered_owner",  # the claimant is neither the owner nor named by a pending ownership change
    "owner_unknown",  # nobody is on record as owner: cannot verify the claimant
    "ownership_change_pending",  # an untrusted registration naming someone else than the owner awaits review
    "reported_stolen",  # an open law-enforcement report covers the unit (also: warranty.stolen_unit_presented)
    "open_recall",  # an open recall covers the unit: the customer goes to the recall remedy instead
    "fraud_signals",  # the fraud score reached the review threshold
]

ReturnReason = Literal[
    "unknown_serial",  # neither received nor sold by this retailer
    "never_sold",  # received, never sold
    "receipt_unknown",  # no sale on this receipt is known (yet)
    "serial_not_on_receipt",  # the receipt is known but this serial was not sold on it (unit swap)
    "outside_return_window",  # the request came after ``return_window_ends``
    "already_returned",  # the sale was already returned
    "reported_stolen",
]


class FraudSignal(BaseModel):
    """One fraud signal (see docs/warranty.md for each): ``weight`` adds to the claim's score."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    name: str
    weight: int
    value: float | int
    detail: str


class DecisionFacts(BaseModel):
    """The facts a decision used, as they stood at the request's event time. Reproducible: the same
    stored history gives the same facts and the same decision."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    as_of: AwareDatetime  # the request's event time: only facts up to it count
    received: bool = False
    sku: str | None = None
    sale_receipt_id: str | None = None
    sale_event: str | None = None  # "source/id" of the sale
    sold_at: AwareDatetime | None = None
    sold_location: str | None = None
    sale_customer_id: str | None = None
    returned_at: AwareDatetime | None = None
    policy_id: str | None = None
    coverage_days: int | None = None
    return_window_days: int | None = None
    coverage_ends: AwareDatetime | None = None
    return_window_ends: AwareDatetime | None = None
    owner_customer_id: str | None = None
    owner_via: Literal["registration", "sale", "transfer"] | None = None
    # Customers named by ownership changes pending at ``as_of`` (untrusted registrations), oldest first.
    pending_owner_customer_ids: list[str] = Field(default_factory=list)
    theft_cases: list[str] = Field(default_factory=list)
    open_recalls: list[str] = Field(default_factory=list)
    recall_remedy: str | None = None
    duplicate_of: str | None = None
    receipt_serials: list[str] = Field(default_factory=list)  # returns: serials this maker sold on the receipt
    fraud_score: int = 0
    fraud_signals: list[FraudSignal] = Field(default_factory=list)


class WarrantyClaimDecided(EventData):
    event_type: ClassVar[str] = "warranty.claim.decided"
    published_by: ClassVar[str | None] = "warranty"
    claim_id: Code
    manufacturer: Manufacturer
    serial: Serial
    customer_id: Code
    status: ClaimStatus
    reasons: list[ClaimReason]
    version: int = Field(ge=1)
    supersedes: str | None = None  # event id of the decision this one replaces
    submitted_at: AwareDatetime
    facts: DecisionFacts


class ReturnDecided(EventData):
    event_type: ClassVar[str] = "return.decided"
    published_by: ClassVar[str | None] = "warranty"
    request_id: Code
    manufacturer: Manufacturer
    serial: Serial
    receipt_id: Code
    location: Code
    status: ReturnStatus
    reasons: list[ReturnReason]
    version: int = Field(ge=1)
    supersedes: str | None = None
    requested_at: AwareDatetime
    facts: DecisionFacts


class WarrantyStolenUnitPresented(EventData):
    """A unit under an open stolen report was presented for a warranty claim or a return: an alert for
    the theft service. Once per claim or request (deterministic id)."""

    event_type: ClassVar[str] = "warranty.stolen_unit_presented"
    published_by: ClassVar[str | None] = "warranty"
    manufacturer: Manufacturer
    serial: Serial
    theft_cases: list[Code]  # "agency:case_number"
    presented_as: Literal["claim", "return"]
    reference: Code  # claim_id or request_id
    customer_id: Code | None = None
    location: Code | None = None
    presented_at: AwareDatetime

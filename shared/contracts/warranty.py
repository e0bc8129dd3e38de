"""Warranty policies, owners, claims and return requests, and what the warranty service answers."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AwareDatetime, Field

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
    """A consumer registered (or took over) ownership of a unit they hold."""

    event_type: ClassVar[str] = "warranty.owner.registered"
    manufacturer: Manufacturer
    serial: Serial
    customer_id: Code
    channel: Code | None = None  # where they registered: web, store, manufacturer, ...


class WarrantyClaimSubmitted(EventData):
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
    recall_id: Code
    manufacturer: Manufacturer
    serial: Serial

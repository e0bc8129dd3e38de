"""Events the inventory service publishes (through its outbox)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..identity import Manufacturer, Serial
from .base import MAX_SERIALS_PER_EVENT, Code, EventData, Note


class QuarantinedUnit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    serial: Serial
    location: Code | None = None
    # Inventory's count of its reports on this (recall, unit): a later word replaces an earlier one,
    # whatever order they arrive in. None: from a version before 0.4, where the earliest report wins.
    revision: int | None = Field(default=None, ge=1)


class ReleasedUnit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    serial: Serial
    revision: int = Field(ge=1)


class UnitQuarantined(EventData):
    """Inventory put units on hold because an open recall covers them.

    A list, like an EPCIS ObjectEvent's epcList: a recall broadcast quarantines thousands of units
    in one transaction and inventory reports them in events of up to 2,000 units, not one event
    per unit. A unit quarantined on arrival is reported in a list of one.
    """

    event_type: ClassVar[str] = "unit.quarantined"
    published_by: ClassVar[str | None] = "inventory"
    manufacturer: Manufacturer
    recall_id: Code
    units: list[QuarantinedUnit] = Field(min_length=1, max_length=MAX_SERIALS_PER_EVENT)


class UnitQuarantineWithdrawn(EventData):
    """Inventory takes back a hold it reported: the unit's full history, now known, shows the
    recall never held it (a sale that arrived late came before the recall, say). Like an anomaly
    withdrawal: what inventory reported follows from all the facts, not from the order they arrived
    in. ``revision`` orders it among inventory's reports on the same (recall, unit)."""

    event_type: ClassVar[str] = "unit.quarantine.withdrawn"
    published_by: ClassVar[str | None] = "inventory"
    manufacturer: Manufacturer
    recall_id: Code
    units: list[ReleasedUnit] = Field(min_length=1, max_length=MAX_SERIALS_PER_EVENT)


class RecallApplicationContinues(EventData):
    """Inventory applies a recall broadcast to its units in steps (services/inventory/handlers.py,
    RECALL_STEP units each, one transaction each), so a recall over a million units is never one
    transaction and inventory's reports flow while it works. This bookmark, published by inventory
    to itself through its outbox, starts the next step: the units after ``after_serial``. It carries
    the broadcast being applied. Consumed by inventory only."""

    event_type: ClassVar[str] = "inventory.recall.continues"
    published_by: ClassVar[str | None] = "inventory"
    recall_id: Code
    manufacturer: Manufacturer
    after_serial: Serial
    broadcast_source: str = Field(min_length=1, max_length=256)  # the envelope's limits
    broadcast_id: str = Field(min_length=1, max_length=128)
    broadcast_time: AwareDatetime


AnomalyKind = Literal[
    "sold_twice",
    "sold_never_received",
    "sold_while_quarantined",
    "sold_while_stolen",
    "sold_while_unavailable",
    "received_while_in_stock",
    "returned_never_sold",
    "transferred_while_not_in_stock",
    "transferred_from_wrong_location",
    # reconciling receipts with shipment manifests (shipment.dispatched)
    "unexpected",  # received at a location that takes manifests, on no manifest to it
    "missing_in_transit",  # on a manifest, not received at its destination by the deadline
    "diverted",  # on a manifest to another location (or retailer), received here
]


class InventoryAnomalyDetected(EventData):
    """Inventory saw a fact that contradicts the unit's history. The fact was still applied."""

    event_type: ClassVar[str] = "inventory.anomaly.detected"
    published_by: ClassVar[str | None] = "inventory"
    manufacturer: Manufacturer
    serial: Serial
    kind: AnomalyKind
    detail: Note
    event_type_seen: str
    event_source: str
    event_id: str


class InventoryAnomalyWithdrawn(EventData):
    """An anomaly inventory reported turned out to come only from arrival order: a late event
    (earlier in time) explained it. Same identity fields as the detection."""

    event_type: ClassVar[str] = "inventory.anomaly.withdrawn"
    published_by: ClassVar[str | None] = "inventory"
    manufacturer: Manufacturer
    serial: Serial
    kind: AnomalyKind
    event_source: str
    event_id: str

"""Events the inventory service publishes (through its outbox)."""

from __future__ import annotations

from typing import ClassVar, Literal

from ..identity import Manufacturer, Serial
from .base import Code, EventData, Note


class UnitQuarantined(EventData):
    """Inventory put a unit on hold because an open recall covers it."""

    event_type: ClassVar[str] = "unit.quarantined"
    manufacturer: Manufacturer
    serial: Serial
    recall_id: Code
    location: Code | None = None


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
]


class InventoryAnomalyDetected(EventData):
    """Inventory saw a fact that contradicts the unit's history. The fact was still applied."""

    event_type: ClassVar[str] = "inventory.anomaly.detected"
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
    manufacturer: Manufacturer
    serial: Serial
    kind: AnomalyKind
    event_source: str
    event_id: str

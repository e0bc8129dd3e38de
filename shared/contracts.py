"""Event contracts: the ``data`` of every event type the system knows.

Rules (see README, "Event catalogue"):
- Events are facts in the past tense (``unit.sold``), one stream per type.
- Models are frozen. Within a version changes are additive; a breaking change
  is a new type beside the old one.
- Consumers are tolerant: unknown fields are ignored. Producers are strict:
  ``serialtrack publish`` refuses unknown fields (see ``unknown_fields``).
- Words follow GS1 EPCIS/CBV where they fit (conditions, dispositions).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from .identity import Manufacturer, Serial, SerialRange

MAX_SERIALS_PER_EVENT = 10_000

# Free text that ends up in tables, logs and CSV exports: printable, bounded.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]


class Condition(StrEnum):
    NEW = "new"
    OPEN_BOX = "open_box"
    REFURBISHED = "refurbished"
    DAMAGED = "damaged"


class Adjustment(StrEnum):
    """What a stock adjustment declares about a unit (EPCIS disposition words where they exist)."""

    DAMAGED = "damaged"
    LOST = "lost"
    STOLEN = "stolen"  # the retailer's own finding; law-enforcement reports are theft.reported
    DESTROYED = "destroyed"
    FOUND = "found"  # a lost unit turned up: back in stock
    QUARANTINED = "quarantined"  # held: not to be sold
    SELLABLE = "sellable"  # inspected or repaired: back in stock, quarantine lifted


class Remedy(StrEnum):
    REPAIR = "repair"
    REPLACE = "replace"
    REFUND = "refund"


class EventData(BaseModel):
    """Base of every contract. ``event_type`` is the envelope ``type`` it travels under."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    event_type: ClassVar[str]


class UnitSelection(EventData):
    """One unit (``serial``), a list (``serials``) or a range (``serial_range``) of one manufacturer.

    Exactly one of the three is given.
    """

    manufacturer: Manufacturer
    serial: Serial | None = None
    serials: list[Serial] | None = Field(default=None, min_length=1, max_length=MAX_SERIALS_PER_EVENT)
    serial_range: SerialRange | None = None

    @model_validator(mode="after")
    def _exactly_one_selection(self):
        given = [name for name in ("serial", "serials", "serial_range") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of serial, serials or serial_range (got {', '.join(given) or 'none'})")
        return self

    def iter_serials(self) -> Iterator[str]:
        if self.serial is not None:
            yield self.serial
        elif self.serials is not None:
            yield from dict.fromkeys(self.serials)  # a pasted scan list may repeat a serial
        else:
            assert self.serial_range is not None
            yield from self.serial_range

    @property
    def unit_count(self) -> int:
        if self.serial is not None:
            return 1
        if self.serials is not None:
            return len(set(self.serials))
        assert self.serial_range is not None
        return self.serial_range.count


class UnitReceived(UnitSelection):
    """Units arrived at a location (a receipt, or the end of a transfer in transit).

    Bulk receipts use ``serials`` (up to 10,000) or ``serial_range`` (up to 10,000,000).
    """

    event_type: ClassVar[str] = "unit.received"
    sku: Code
    location: Code
    condition: Condition = Condition.NEW


class UnitTransferred(EventData):
    """A unit moved between locations. ``in_transit`` leaves it in transit until a ``unit.received``."""

    event_type: ClassVar[str] = "unit.transferred"
    manufacturer: Manufacturer
    serial: Serial
    from_location: Code
    to_location: Code
    in_transit: bool = False


class UnitSold(EventData):
    event_type: ClassVar[str] = "unit.sold"
    manufacturer: Manufacturer
    serial: Serial
    sku: Code
    location: Code
    terminal_id: Code
    receipt_id: Code
    customer_id: Code | None = None
    price: Decimal | None = Field(default=None, ge=0, max_digits=12, decimal_places=2)


class UnitReturned(EventData):
    event_type: ClassVar[str] = "unit.returned"
    manufacturer: Manufacturer
    serial: Serial
    location: Code
    receipt_id: Code
    reason: Text
    condition: Condition = Condition.OPEN_BOX


class UnitAdjusted(EventData):
    event_type: ClassVar[str] = "unit.adjusted"
    manufacturer: Manufacturer
    serial: Serial
    disposition: Adjustment
    note: Note = ""
    location: Code | None = None


class TheftReported(UnitSelection):
    """A law-enforcement stolen report; consecutive serials may come as one report."""

    event_type: ClassVar[str] = "theft.reported"
    agency: Code
    case_number: Code
    description: Note = ""
    reported_at: AwareDatetime | None = None
    contact: Text | None = None


class TheftRecovered(UnitSelection):
    event_type: ClassVar[str] = "theft.recovered"
    agency: Code
    case_number: Code


class RecallIssued(EventData):
    """A manufacturer recall. A unit of ``manufacturer`` is affected when its sku is in
    ``skus`` (or ``skus`` is empty) AND its serial is in ``serial_ranges``/``serials``
    (or both are empty). At least one of the three narrows the scope.
    """

    event_type: ClassVar[str] = "recall.issued"
    recall_id: Code
    manufacturer: Manufacturer
    skus: list[Code] = Field(default_factory=list, max_length=1000)
    serial_ranges: list[SerialRange] = Field(default_factory=list, max_length=1000)
    serials: list[Serial] = Field(default_factory=list, max_length=MAX_SERIALS_PER_EVENT)
    hazard: Text
    remedy: Remedy
    instructions: Note = ""

    @model_validator(mode="after")
    def _scope_is_narrowed(self):
        if not (self.skus or self.serial_ranges or self.serials):
            raise ValueError("a recall needs at least one of skus, serial_ranges or serials")
        return self

    def covers(self, manufacturer: str, serial: str, sku: str | None) -> bool:
        if manufacturer != self.manufacturer:
            return False
        if self.skus and sku not in self.skus:
            return False
        if self.serial_ranges or self.serials:
            return serial in self.serials or any(serial in r for r in self.serial_ranges)
        return True


class WarrantyClaimSubmitted(EventData):
    event_type: ClassVar[str] = "warranty.claim.submitted"
    claim_id: Code
    manufacturer: Manufacturer
    serial: Serial
    customer_id: Code
    issue: Text


# Outbound events of the inventory service.


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


EVENT_TYPES: dict[str, type[EventData]] = {
    model.event_type: model
    for model in (
        UnitReceived,
        UnitTransferred,
        UnitSold,
        UnitReturned,
        UnitAdjusted,
        TheftReported,
        TheftRecovered,
        RecallIssued,
        WarrantyClaimSubmitted,
        UnitQuarantined,
        InventoryAnomalyDetected,
    )
}


def unknown_fields(model: type[EventData], data: dict) -> list[str]:
    """Fields a strict producer should refuse: not part of the contract."""
    return sorted(set(data) - set(model.model_fields))

"""Unit movements published by stores, warehouses and POS terminals."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..identity import Manufacturer, Serial, SerialRange
from ..time_window import event_time_problem
from .base import MAX_RECEIPT_RANGE, MAX_SERIALS_PER_EVENT, Code, Condition, EventData, Note, Text, UnitSelection


class Adjustment(StrEnum):
    """What a stock adjustment declares about a unit (EPCIS disposition words where they exist)."""

    DAMAGED = "damaged"
    LOST = "lost"
    STOLEN = "stolen"  # the retailer's own finding; law-enforcement reports are theft.reported
    DESTROYED = "destroyed"
    FOUND = "found"  # a lost unit turned up: back in stock
    QUARANTINED = "quarantined"  # held: not to be sold
    SELLABLE = "sellable"  # inspected or repaired: back in stock, quarantine lifted


class UnitReceived(UnitSelection):
    """Units arrived at a location (a receipt, or the end of a transfer in transit).

    Bulk receipts use ``serials`` (up to 10,000) or ``serial_range`` (up to 1,000,000: every
    unit received becomes a row in inventory, see MAX_RECEIPT_RANGE).
    """

    event_type: ClassVar[str] = "unit.received"
    sku: Code
    location: Code
    condition: Condition = Condition.NEW

    @model_validator(mode="after")
    def _receipt_range_is_bounded(self):
        if self.serial_range is not None and self.serial_range.count > MAX_RECEIPT_RANGE:
            raise ValueError(f"a receipt's serial range has {self.serial_range.count} serials; at most "
                             f"{MAX_RECEIPT_RANGE} per unit.received (split it into several receipts)")
        return self


class UnitTransferred(EventData):
    """A unit moved between locations. ``in_transit`` leaves it in transit until a ``unit.received``."""

    event_type: ClassVar[str] = "unit.transferred"
    manufacturer: Manufacturer
    serial: Serial
    from_location: Code
    to_location: Code
    in_transit: bool = False


class UnitSold(EventData):
    """A unit was sold at a till or a web checkout."""

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
    """A customer brought a sold unit back to a store."""

    event_type: ClassVar[str] = "unit.returned"
    manufacturer: Manufacturer
    serial: Serial
    location: Code
    receipt_id: Code
    reason: Text
    condition: Condition = Condition.OPEN_BOX


class UnitAdjusted(EventData):
    """A stock count or inspection changed what a unit is: lost, found, damaged, quarantined or sellable again."""

    event_type: ClassVar[str] = "unit.adjusted"
    manufacturer: Manufacturer
    serial: Serial
    disposition: Adjustment
    note: Note = ""
    location: Code | None = None


# --- expected-serial manifests and stock counts (issue 14, parts 1 and 2) ---------------------------

MAX_MANIFEST_RANGES = 1_000
MAX_MANIFEST_UNITS = 1_000_000  # per event, like a receipt's range: a manifest is reconciled unit by unit at receipt
MAX_MANIFEST_PARTS = 100  # a list of 1,000,000 serials is 100 parts (one event holds 10,000 and 1 MB)
MAX_COUNT_PARTS = 1_000  # 1,000 parts of 10,000 units: a count of up to 10,000,000 units
# A shipment's or a count's id: read back at GET /shipments/{id} and /counts/{id}, so no "/".
PathId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64,
                                          pattern=r"^[^\x00-\x1f\x7f/]*$")]


class ShipmentDispatched(EventData):
    """A shipper sent units to a location: an advance ship notice (EDI 856, an EPCIS shipping event).

    Published by the manufacturer, a distributor, or the retailer's own DC for a transfer. The
    serials are a list (up to 10,000), ranges (up to 1,000 of them), or both: up to 1,000,000 units,
    kept as they came (inventory never expands a manifest at dispatch). A longer list comes in parts
    (``part`` 1, 2, ... of one ``shipment_id``, each with the same locations and dates), in any
    order. ``shipment_id`` is unique across shippers (prefix it with the shipper's name). The units
    are due at ``to_location`` by the end of ``expected_arrival`` (UTC) plus ``grace_days``; a unit
    not received there by then is ``missing_in_transit``.
    """

    event_type: ClassVar[str] = "shipment.dispatched"
    shipment_id: PathId
    manufacturer: Manufacturer
    from_location: Code
    to_location: Code
    retailer: Code | None = None  # the destination's retailer: named in a diversion's detail
    expected_arrival: date
    grace_days: int = Field(default=2, ge=0, le=90)
    part: int = Field(default=1, ge=1, le=MAX_MANIFEST_PARTS)
    sku: Code | None = None
    serials: list[Serial] | None = Field(default=None, min_length=1, max_length=MAX_SERIALS_PER_EVENT)
    serial_ranges: list[SerialRange] | None = Field(default=None, min_length=1, max_length=MAX_MANIFEST_RANGES)

    @model_validator(mode="after")
    def _manifest_is_bounded(self):
        if not (self.serials or self.serial_ranges):
            raise ValueError("a shipment lists its units: give serials, serial_ranges or both")
        if self.from_location == self.to_location:
            raise ValueError(f"a shipment goes somewhere else: from_location and to_location are both "
                             f"{self.to_location!r}")
        if self.unit_count > MAX_MANIFEST_UNITS:
            raise ValueError(f"the manifest has {self.unit_count} serials; at most {MAX_MANIFEST_UNITS} per "
                             "shipment.dispatched (split it into several shipments)")
        return self

    @property
    def unit_count(self) -> int:
        """Serials on the manifest, without expanding its ranges: a repeated listed serial counts once,
        but a serial in two ranges, or listed and in a range, counts twice (a manifest's ranges and
        list are expected not to overlap; inventory's reconciliation is per serial and not fooled)."""
        return len(set(self.serials or ())) + sum(r.count for r in self.serial_ranges or ())


class CountedUnit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    manufacturer: Manufacturer
    serial: Serial


class StockCounted(EventData):
    """What a cycle count saw at one location: one part of a count of up to 1,000 parts.

    Parts share ``count_id``, ``location`` and ``counted_at``; each has a ``part`` number (1, 2, ...),
    and the last one says ``final``. Inventory reconciles the count when it has every part, in
    whatever order they came, against what it expected at ``location`` at ``counted_at`` (event time:
    sales made during the count and applied before it do not make counted units unexpected).
    """

    event_type: ClassVar[str] = "stock.counted"
    count_id: PathId
    location: Code
    counted_at: AwareDatetime
    part: int = Field(default=1, ge=1, le=MAX_COUNT_PARTS)
    final: bool = True
    units: list[CountedUnit] = Field(default_factory=list, max_length=MAX_SERIALS_PER_EVENT)  # empty: a bare shelf

    @model_validator(mode="after")
    def _counted_at_is_believable(self):
        problem = event_time_problem(self.counted_at)
        if problem:
            raise ValueError(f"counted_at: {problem}")
        return self

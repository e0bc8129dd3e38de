"""Unit movements published by stores, warehouses and POS terminals."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from pydantic import Field, model_validator

from ..identity import Manufacturer, Serial
from .base import MAX_RECEIPT_RANGE, Code, Condition, EventData, Note, Text, UnitSelection


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

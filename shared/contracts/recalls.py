"""Manufacturer recall broadcasts and what follows them."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import cached_property
from typing import ClassVar

from pydantic import Field, model_validator

from ..identity import Manufacturer, Serial, SerialRange
from .base import MAX_SERIALS_PER_EVENT, Code, EventData, Note, Text


class Remedy(StrEnum):
    REPAIR = "repair"
    REPLACE = "replace"
    REFUND = "refund"


class RecallScope(EventData):
    """Which units of ``manufacturer`` a recall covers: sku in ``skus`` (or ``skus`` empty) AND
    serial in ``serial_ranges``/``serials`` (or both empty). At least one of the three is given.
    Ranges are kept as ranges: a recall of millions of serials is never expanded."""

    recall_id: Code
    manufacturer: Manufacturer
    skus: list[Code] = Field(default_factory=list, max_length=1000)
    serial_ranges: list[SerialRange] = Field(default_factory=list, max_length=1000)
    serials: list[Serial] = Field(default_factory=list, max_length=MAX_SERIALS_PER_EVENT)

    @model_validator(mode="after")
    def _scope_is_narrowed(self):
        if not (self.skus or self.serial_ranges or self.serials):
            raise ValueError("a recall needs at least one of skus, serial_ranges or serials")
        return self

    @cached_property
    def unit_filter(self) -> Callable[[str, str | None], bool]:
        """``covers`` for a unit of this recall's manufacturer, as a plain function built once:
        checking 100,000 units stays cheap (field access on a pydantic model is not)."""
        skus, serials, ranges = frozenset(self.skus), frozenset(self.serials), tuple(self.serial_ranges)

        def covers(serial: str, sku: str | None) -> bool:
            if skus and sku not in skus:
                return False
            if serials or ranges:
                return serial in serials or any(serial in r for r in ranges)
            return True

        return covers

    def covers(self, manufacturer: str, serial: str, sku: str | None) -> bool:
        return manufacturer == self.manufacturer and self.unit_filter(serial, sku)


class RecallIssued(RecallScope):
    """A manufacturer recall broadcast."""

    event_type: ClassVar[str] = "recall.issued"
    hazard: Text
    remedy: Remedy
    instructions: Note = ""


class RecallAmended(RecallScope):
    """The recall's scope changed (widened or narrowed): the scope given here replaces the old one."""

    event_type: ClassVar[str] = "recall.amended"
    note: Note = ""


class RecallClosed(EventData):
    """The campaign ended: units received afterwards are no longer quarantined on arrival."""

    event_type: ClassVar[str] = "recall.closed"
    recall_id: Code
    manufacturer: Manufacturer
    reason: Text


class RecallRemedyCompleted(EventData):
    """A service desk repaired, replaced or refunded one recalled unit."""

    event_type: ClassVar[str] = "recall.remedy.completed"
    recall_id: Code
    manufacturer: Manufacturer
    serial: Serial
    remedy: Remedy
    location: Code | None = None

"""Building blocks of every contract: the base model, text types, unit selections."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..identity import Manufacturer, Serial, SerialRange

# What one event may carry, per role (README, "Limits per event"). A list is applied unit by unit
# where units need rows; a range of a receipt too (inventory keeps a row per unit it holds), while
# stolen reports and recall scopes are kept as ranges (up to shared.identity.MAX_RANGE_SIZE each).
MAX_SERIALS_PER_EVENT = 10_000
MAX_RECEIPT_RANGE = 1_000_000

# Free text that ends up in tables, logs and CSV exports: printable, bounded.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]


class Condition(StrEnum):
    NEW = "new"
    OPEN_BOX = "open_box"
    REFURBISHED = "refurbished"
    DAMAGED = "damaged"


class EventData(BaseModel):
    """Base of every contract. ``event_type`` is the envelope ``type`` it travels under."""

    # defer_build: a model's validator is built when it first validates, not at import. A CLI
    # command publishing one event then builds one of the ~25 contracts, not all (they cost most
    # of its start-up); a service builds the ones it reads at its first batch.
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)
    event_type: ClassVar[str]
    # The service that publishes this type from its outbox, for types nobody else may publish
    # (`serialtrack publish` refuses them); None for facts from outside (stores, feeds, makers).
    published_by: ClassVar[str | None] = None


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
        if (self.serial is not None) + (self.serials is not None) + (self.serial_range is not None) != 1:
            given = [n for n in ("serial", "serials", "serial_range") if getattr(self, n) is not None]
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

"""Corrections without rewriting history (GS1 EPCIS errorDeclaration): ``event.voided``.

A cashier scans the wrong serial; a warehouse books a receipt at the wrong store. The event stays on
the bus and in every history; a void withdraws it. Every service that applied it folds its units
again without it (README, "Corrections"; shared/voids.py).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints, model_validator

from ..identity import Manufacturer
from ..time_window import event_time_problem
from .base import EventData, Text

# The facts a void may withdraw: the per-unit movements stores, warehouses and tills publish. Reports
# of other parties (a theft report, a recall) have their own withdrawals (theft.recovered,
# recall.amended/closed); requests (claims, returns) have decisions with versions.
VOIDABLE_TYPES: tuple[str, ...] = ("unit.received", "unit.transferred", "unit.sold", "unit.returned", "unit.adjusted")
VoidableType = Literal["unit.received", "unit.transferred", "unit.sold", "unit.returned", "unit.adjusted"]

# Envelope ids and sources (shared/envelope.py): printable ASCII without spaces.
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
EventSource = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")]


class CorrectedEvent(BaseModel):
    """The event that should have been published instead: applied as a normal event of ``type``,
    from the void's source, with ``id`` (default: derived from the void's id) and ``time`` (default:
    the voided event's time is unknown to the producer of the void, so the void's time)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: VoidableType
    id: EventId | None = None
    time: AwareDatetime | None = None
    data: dict[str, Any]


class EventVoided(EventData):
    """Withdraws an earlier event (voided_source, voided_id) of voided_type, about units of manufacturer,
    published by mistake; corrected: the event that should have been published instead. Signed by a key
    of a role that may publish that type, whose source prefix covers voided_source (`serialtrack void`).

    A void that arrives before the event waits for it; a second void of the same event changes nothing."""

    event_type: ClassVar[str] = "event.voided"
    manufacturer: Manufacturer  # the voided event's: what a batch locks, and what a manufacturer key speaks for
    voided_source: EventSource
    voided_id: EventId
    voided_type: VoidableType
    reason: Text
    corrected: CorrectedEvent | None = None

    @model_validator(mode="after")
    def _corrected_is_a_valid_event_of_the_same_kind(self):
        if self.corrected is None:
            return self
        if self.corrected.type != self.voided_type:
            raise ValueError(f"corrected.type is {self.corrected.type}, the voided event is a {self.voided_type}: a "
                             "correction replaces an event by one of its own type")
        from . import EVENT_TYPES  # the registry imports this module

        data = EVENT_TYPES[self.corrected.type].model_validate(self.corrected.data)
        if getattr(data, "manufacturer", None) != self.manufacturer:
            raise ValueError(f"corrected.data names manufacturer {getattr(data, 'manufacturer', None)!r}, the void "
                             f"{self.manufacturer!r}")
        problem = event_time_problem(self.corrected.time) if self.corrected.time is not None else None
        if problem:
            raise ValueError(f"corrected.time: {problem}")
        if self.corrected.id == self.voided_id:
            raise ValueError("corrected.id is the voided event's id: give the correction an id of its own")
        return self

"""Event contracts: the ``data`` of every event type the system knows.

Rules (see README, "Event catalogue"):
- Events are facts in the past tense (``unit.sold``), one stream per type.
- Models are frozen. Within a version changes are additive; a breaking change
  is a new type beside the old one.
- Consumers are tolerant: unknown fields are ignored. Producers are strict:
  ``serialtrack publish`` refuses unknown fields (see ``unknown_fields``).
- Words follow GS1 EPCIS/CBV where they fit (conditions, dispositions).

One module per publisher family; every EventData subclass that declares an
``event_type`` in one of them is registered in ``EVENT_TYPES``.
"""

from __future__ import annotations

from . import corrections, customers, inventory, recalls, theft, units, warranty
from .base import (
    MAX_SERIALS_PER_EVENT,
    Code,
    Condition,
    EventData,
    Note,
    Text,
    UnitSelection,
)
from .corrections import *
from .customers import *
from .inventory import *
from .recalls import *
from .theft import *
from .units import *
from .warranty import *


def _registry() -> dict[str, type[EventData]]:
    found: dict[str, type[EventData]] = {}
    for module in (units, theft, recalls, warranty, inventory, customers, corrections):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, EventData) and "event_type" in value.__dict__:
                if value.event_type in found and found[value.event_type] is not value:
                    raise RuntimeError(f"two contracts claim {value.event_type}")
                found[value.event_type] = value
    return found


EVENT_TYPES: dict[str, type[EventData]] = _registry()


def unknown_fields(model: type[EventData], data: dict) -> list[str]:
    """Fields a strict producer should refuse: not part of the contract."""
    return sorted(set(data) - set(model.model_fields))

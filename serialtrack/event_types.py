"""`serialtrack types`: what can be published, read from the contracts registry (shared/contracts)."""

from __future__ import annotations

from shared.contracts import EVENT_TYPES, UnitSelection

_SELECTION = ("serial", "serials", "serial_range")


def publishable() -> list[str]:
    """Types a producer outside the system may publish; the rest come only from a service's outbox."""
    return sorted(name for name, model in EVENT_TYPES.items() if not model.published_by)


def describe(event_type: str) -> dict:
    model = EVENT_TYPES[event_type]
    required = [name for name, info in model.model_fields.items() if info.is_required()]
    optional = [name for name, info in model.model_fields.items() if not info.is_required()]
    if issubclass(model, UnitSelection):
        # Each of the three is optional on its own, but exactly one must be given.
        optional = [name for name in optional if name not in _SELECTION]
        required.append("one of serial, serials, serial_range")
    doc = (model.__dict__.get("__doc__") or "").strip()
    return {"summary": " ".join(doc.split("\n\n")[0].split()), "required": required, "optional": optional,
            "example": _example(event_type)}


def _example(event_type: str) -> dict | None:
    """The demo story's first event of this type: real data that validates."""
    from .demo import story

    steps, _serials, _expect = story("1A2B")
    return next((step.data for step in steps if step.type == event_type), None)

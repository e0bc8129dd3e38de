"""Events with random serials, so tests never collide."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from shared.contracts import (
    EventVoided,
    RecallIssued,
    TheftRecovered,
    TheftReported,
    UnitAdjusted,
    UnitReceived,
    UnitReturned,
    UnitSold,
    UnitTransferred,
)
from shared.envelope import Event, make_event

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def serial(prefix: str = "SN") -> str:
    return f"{prefix}{secrets.token_hex(5).upper()}"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def received(manufacturer="acme", serial_=None, *, minutes=0, sku="TV-55", location="store-1",
             source="test/wms", **extra) -> Event:
    selection = extra.pop("selection", None) or {"serial": serial_}
    return make_event(UnitReceived(manufacturer=manufacturer, sku=sku, location=location, **selection, **extra),
                      source=source, time=at(minutes))


def transferred(manufacturer, serial_, *, minutes, from_location="store-1", to_location="store-2",
                **extra) -> Event:
    return make_event(UnitTransferred(manufacturer=manufacturer, serial=serial_, from_location=from_location,
                                      to_location=to_location, **extra), source="test/wms", time=at(minutes))


def sold(manufacturer, serial_, *, minutes, location="store-1", sku="TV-55", receipt_id=None, **extra) -> Event:
    return make_event(UnitSold(manufacturer=manufacturer, serial=serial_, sku=sku, location=location,
                               terminal_id=f"{location}/till-1", receipt_id=receipt_id or f"R-{serial_}-{minutes}",
                               **extra), source="test/pos", time=at(minutes))


def returned(manufacturer, serial_, *, minutes, location="store-1", receipt_id="R-1", **extra) -> Event:
    return make_event(UnitReturned(manufacturer=manufacturer, serial=serial_, location=location,
                                   receipt_id=receipt_id, reason=extra.pop("reason", "changed mind"), **extra),
                      source="test/pos", time=at(minutes))


def adjusted(manufacturer, serial_, disposition, *, minutes, **extra) -> Event:
    return make_event(UnitAdjusted(manufacturer=manufacturer, serial=serial_, disposition=disposition, **extra),
                      source="test/wms", time=at(minutes))


def theft_reported(manufacturer, serial_, *, minutes, agency="metro-pd", case_number="C-1") -> Event:
    return make_event(TheftReported(manufacturer=manufacturer, serial=serial_, agency=agency,
                                    case_number=case_number), source="test/police", time=at(minutes))


def theft_recovered(manufacturer, serial_, *, minutes, agency="metro-pd", case_number="C-1") -> Event:
    return make_event(TheftRecovered(manufacturer=manufacturer, serial=serial_, agency=agency,
                                     case_number=case_number), source="test/police", time=at(minutes))


def recall_issued(manufacturer="acme", *, minutes, recall_id=None, **scope) -> Event:
    return make_event(RecallIssued(recall_id=recall_id or f"RC-{secrets.token_hex(3)}", manufacturer=manufacturer,
                                   hazard="overheating", remedy="repair", **scope),
                      source="test/maker", time=at(minutes))


def voided(original: Event, *, minutes, reason="scanned the wrong serial", source=None, corrected=None,
           **extra) -> Event:
    """An event.voided of ``original`` (from its source unless ``source``); ``corrected``: an Event
    whose type, id, time and data become the correction."""
    fix = None if corrected is None else {"type": corrected.type, "id": corrected.id,
                                          "time": corrected.time.isoformat(), "data": corrected.envelope.data}
    data = EventVoided(manufacturer=original.data.manufacturer,  # type: ignore[attr-defined]  # every voidable type has one
                       voided_source=original.source,
                       voided_id=original.id, voided_type=original.type, reason=reason, corrected=fix, **extra)
    return make_event(data, source=source or original.source, time=at(minutes))

"""`serialtrack demo`: a short story published against a running system, and what came of it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from shared.publishing import publish
from shared.settings import Settings

from .publishing import build_envelope

MANUFACTURER = "acme"
SKU = "TV-55-OLED"


def story(batch: str, start: datetime) -> list[tuple[str, str, dict, timedelta]]:
    """(narration, type, data, offset from start). Serials are fresh per run: demos never collide."""
    tv = [f"TV{batch}{n:03d}" for n in (1, 2, 3)]
    return [
        ("3 TVs arrive at warehouse-1 (one bulk receipt by serial range)", "unit.received",
         {"manufacturer": MANUFACTURER, "serial_range": {"prefix": f"TV{batch}", "first": 1, "last": 3, "width": 3},
          "sku": SKU, "location": "warehouse-1"}, timedelta()),
        (f"{tv[0]} moves to store-12", "unit.transferred",
         {"manufacturer": MANUFACTURER, "serial": tv[0], "from_location": "warehouse-1", "to_location": "store-12"},
         timedelta(hours=2)),
        (f"{tv[0]} is sold at store-12, till 3", "unit.sold",
         {"manufacturer": MANUFACTURER, "serial": tv[0], "sku": SKU, "location": "store-12",
          "terminal_id": "store-12/till-3", "receipt_id": f"R-{batch}-1", "customer_id": "C-1042", "price": "899.00"},
         timedelta(days=1)),
        (f"{tv[0]} comes back: dead pixels", "unit.returned",
         {"manufacturer": MANUFACTURER, "serial": tv[0], "location": "store-12", "receipt_id": f"R-{batch}-1",
          "reason": "dead pixels", "condition": "open_box"}, timedelta(days=2)),
        (f"police report {tv[2]} stolen from the warehouse dock", "theft.reported",
         {"manufacturer": MANUFACTURER, "serial": tv[2], "agency": "metro-pd", "case_number": f"2026-{batch}"},
         timedelta(days=2, hours=1)),
        (f"someone rings up {tv[2]} at store-12 anyway", "unit.sold",
         {"manufacturer": MANUFACTURER, "serial": tv[2], "sku": SKU, "location": "store-12",
          "terminal_id": "store-12/till-1", "receipt_id": f"R-{batch}-2"}, timedelta(days=3)),
        (f"{tv[1]} is sold twice: the second scan is a duplicate at another till", "unit.sold",
         {"manufacturer": MANUFACTURER, "serial": tv[1], "sku": SKU, "location": "warehouse-1",
          "terminal_id": "web/checkout", "receipt_id": f"R-{batch}-3"}, timedelta(days=3, hours=1)),
        ("", "unit.sold",
         {"manufacturer": MANUFACTURER, "serial": tv[1], "sku": SKU, "location": "store-12",
          "terminal_id": "store-12/till-2", "receipt_id": f"R-{batch}-4"}, timedelta(days=3, hours=2)),
    ]


def _caught_up(report: dict, event_ids: set[str]) -> bool:
    """Every service that tracks this unit has applied the story's events for it."""
    unit = report.get("inventory")
    if not unit or not event_ids <= {h["id"] for h in unit["history"]}:
        return False
    stolen = report.get("theft")
    if stolen is not None and stolen["stolen"]:
        return len(stolen["alerts"]) >= 2  # the warehouse receipt (retroactive) and the sale
    return True


def run_demo(settings: Settings, redis_url: str, say: Callable[[str], None], timeout: float = 30.0) -> dict:
    from .cli import fetch_unit

    batch = secrets.token_hex(2).upper()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=4)
    steps = story(batch, start)
    envelopes = []
    for narration, event_type, data, offset in steps:
        envelopes.append(build_envelope(event_type, data, source="demo/serialtrack", time=start + offset))
        if narration:
            say(f"  {(start + offset):%b %d %H:%M}  {narration}")

    async def send():
        client = aioredis.from_url(redis_url)
        try:
            await publish(client, settings.streams, envelopes)
        finally:
            await client.aclose()

    asyncio.run(send())
    say(f"published {len(envelopes)} events; waiting for the services...")

    serials = [f"TV{batch}{n:03d}" for n in (1, 2, 3)]
    expected = {s: {e.id for e in envelopes if e.data.get("serial") in (s, None)} for s in serials}
    deadline = time.monotonic() + timeout
    units: dict[str, dict] = {}
    while time.monotonic() < deadline:
        units = {s: fetch_unit(settings, MANUFACTURER, s) for s in serials}
        if all(_caught_up(u, expected[s]) for s, u in units.items()):
            break
        time.sleep(0.3)
    else:
        raise TimeoutError("the services did not apply the demo events within "
                           f"{timeout:.0f}s; check `serialtrack deadletters` and the service logs")

    say("")
    say("inventory now says:")
    for serial, report in units.items():
        unit = report["inventory"]
        flags = " STOLEN" if unit["stolen"] else ""
        say(f"  {MANUFACTURER}/{serial}: {unit['status']} at {unit['location']}{flags}")
        for anomaly in (a for a in unit["anomalies"] if a["status"] == "open"):
            say(f"      anomaly {anomaly['kind']}: {anomaly['detail']}")
    stolen = units[serials[2]].get("theft")
    if stolen:
        say("")
        say(f"theft watch on {MANUFACTURER}/{serials[2]}:")
        for alert in stolen["alerts"]:
            where = alert.get("location") or "?"
            say(f"  alert ({alert['kind']}): case {alert['agency']}:{alert['case_number']}, "
                f"seen by {alert.get('terminal_id') or alert.get('event_source')} at {where}")
    say("")
    say(f"try: serialtrack lookup {MANUFACTURER} {serials[2]}")
    return {"manufacturer": MANUFACTURER, "serials": serials, "units": units}

"""Issue 12, fault 7: input the rules refuse is refused on the bus too, with a dead-letter reason that
says why, and changes nothing else; an informational ``subject`` in any CloudEvents form is accepted.
Raw XADDs to a real Redis, consumed by real services (inventory, warranty) on their real stores."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from services.inventory.app import definition as inventory
from services.warranty.app import definition as warranty
from tests.support import factories as f
from tests.support.running import http, inbox_count, running, wait_for
from tests.support.streams import text_entries


def sale(serial: str, **envelope) -> dict:
    return {"specversion": "1.0", "id": f"strict-{serial}-{len(envelope)}", "source": "pos/store-1/till-1",
            "type": "unit.sold", "time": "2026-11-01T10:00:00Z",
            "data": {"manufacturer": "acme", "serial": serial, "sku": "TV-55", "location": "store-1",
                     "terminal_id": "till-1", "receipt_id": "R-1"}, **envelope}


async def dead_letters(settings, service) -> dict[str, dict]:
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        entries = await text_entries(client, settings.streams.dead_letters(service))
    finally:
        await client.aclose()
    return {json.loads(json.loads(fields["original"]).get("event", "{}")).get("id", fields["entry_id"]): fields
            for _, fields in entries}


async def test_each_refused_entry_is_dead_lettered_with_its_reason_and_nothing_else_changes(sqlite_settings):
    settings = sqlite_settings
    good = f.serial("OK")
    refused = {  # id -> (entry fields, the reason)
        "bad-ligature": ({"event": sale("\ufb01x1")}, "bad_data"),
        "bad-long-s": ({"event": sale("\u017fn-9")}, "bad_data"),
        "bad-maker": ({"event": sale("SN1") | {"data": {**sale("SN1")["data"], "manufacturer": "\u212acme"}}},
                      "bad_data"),
        "bad-two-fields": ({"event": sale("SN2"), "note": "a second field"}, "bad_envelope"),
        "bad-unix-time": ({"event": sale("SN3") | {"time": 1}}, "bad_time"),
        "bad-far-future": ({"event": sale("SN4") | {"time": "9999-12-31T00:00:00Z"}}, "bad_time"),
        "bad-year-one": ({"event": sale("SN5") | {"time": "0001-01-01T00:00:00Z"}}, "bad_time"),
    }
    client = aioredis.from_url(settings.redis_url)
    stream = settings.streams.for_type("unit.sold")
    for entry_id, (fields, _) in refused.items():
        fields["event"]["id"] = entry_id
        await client.xadd(stream, {k: json.dumps(v) if k == "event" else v for k, v in fields.items()})
    # The CloudEvents SDK's subject: the raw manufacturer name. Informational: the unit is in data.
    await client.xadd(stream, {"event": json.dumps(sale(good, subject="Zeta Corp/ce-1 \u00e9") | {"id": "good"})})
    await client.aclose()

    async with running(inventory, settings) as app, http(app) as api:
        await wait_for(lambda: inbox_count(settings, "inventory") == 1, message="the good sale applied")
        letters = await wait_for(lambda: _all(dead_letters(settings, "inventory"), len(refused)),
                                 message="every refused entry dead-lettered")
        assert {i: letter["reason"] for i, letter in letters.items()} == {
            i: reason for i, (_, reason) in refused.items()}
        assert "non-ASCII" in letters["bad-ligature"]["error"] and "RFC 3339" in letters["bad-unix-time"]["error"]
        assert "exactly one" in letters["bad-two-fields"]["error"]
        assert all(letter["deliveries"] == "1" for letter in letters.values())  # never retried
        units = (await api.get("/units", params={"manufacturer": "acme"})).json()
        assert [u["serial"] for u in units["items"]] == [good]  # nothing stored as FIX1, SN-9 or from 1970
        assert (await api.get(f"/units/acme/{good}")).json()["status"] == "sold"


async def test_a_claim_dated_year_one_is_refused_at_once_not_retried(sqlite_settings):
    settings = sqlite_settings
    claim = {"specversion": "1.0", "id": "claim-year-1", "source": "desk/1", "type": "warranty.claim.submitted",
             "time": "0001-01-01T00:00:00Z",
             "data": {"claim_id": "CL-1", "manufacturer": "acme", "serial": "SN1", "customer_id": "C-1",
                      "issue": "no sound"}}
    client = aioredis.from_url(settings.redis_url)
    await client.xadd(settings.streams.for_type("warranty.claim.submitted"), {"event": json.dumps(claim)})
    await client.aclose()
    async with running(warranty, settings):
        letters = await wait_for(lambda: _all(dead_letters(settings, "warranty"), 1), message="dead-lettered")
    assert letters["claim-year-1"]["reason"] == "bad_time" and letters["claim-year-1"]["deliveries"] == "1"
    assert inbox_count(settings, "warranty") == 0


async def _all(letters, n):
    found = await letters
    return found if len(found) >= n else None

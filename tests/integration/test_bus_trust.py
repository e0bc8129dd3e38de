"""Trust on the bus, tried as an attacker would (issue "Trust on the bus"): with a plain XADD of
forged, unsigned, tampered or misplaced envelopes to a running service. Each is dead-lettered with
a reason that says what was wrong and changes nothing; signed feeds from the right keys apply."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from services.inventory.app import definition as inventory
from shared.keys import create_key, revoke_key
from shared.signing import load_signer
from tests.support import factories as f
from tests.support.running import http, running, wait_for
from tests.support.streams import text_entries


async def xadd(settings, stream_type: str, body: str) -> None:
    """A raw entry, as anyone who reaches Redis could add it."""
    client = aioredis.from_url(settings.redis_url)
    try:
        await client.xadd(settings.streams.for_type(stream_type), {"event": body})
    finally:
        await client.aclose()


async def letters(settings) -> list[dict]:
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        return [fields for _, fields in await text_entries(client, settings.streams.dead_letters("inventory"))]
    finally:
        await client.aclose()


def plain(event) -> str:
    return event.envelope.model_dump_json(exclude_none=True)


def signed(signer, event) -> str:
    return json.dumps(signer.sign(event.envelope.model_dump(mode="json", exclude_none=True), check=False))


async def unit(client, serial: str) -> dict:
    return (await client.get(f"/units/acme/{serial}")).json()


async def test_every_forgery_is_dead_lettered_with_its_reason_and_signed_feeds_apply(settings):
    data_dir = settings.data_dir
    create_key(data_dir, "metro-pd", "law-enforcement", agency="metro-pd", source_prefix="agency/metro-pd")
    create_key(data_dir, "till-3", "pos", source_prefix="pos/store-12")
    create_key(data_dir, "acme", "manufacturer", manufacturer="acme")
    police, till, acme = (load_signer(name, data_dir) for name in ("metro-pd", "till-3", "acme"))
    serial = f.serial("TR")
    received = f.received("acme", serial, minutes=0)

    def report(minutes, **changes):
        event = f.theft_reported("acme", serial, minutes=minutes, case_number=f"C-{minutes}")
        envelope = event.envelope.model_copy(update={"source": "agency/metro-pd/desk-1", **changes})
        return type(event)(envelope, event.data)

    tampered = json.loads(signed(police, report(2)))
    tampered["data"]["case_number"] = "C-OTHER"  # one changed value after signing
    other_agency = report(7)
    other_agency = type(other_agency)(other_agency.envelope.model_copy(
        update={"data": {**other_agency.envelope.data, "agency": "county-sheriff"}}), other_agency.data)
    forgeries = {
        "unsigned": ("theft.reported", plain(report(1))),
        "bad_signature": ("theft.reported", json.dumps(tampered)),
        "unknown_key": ("theft.reported", json.dumps({**json.loads(signed(police, report(3))),
                                                      "signature": {"alg": "Ed25519", "kid": "nobody-123",
                                                                    "sig": "A" * 86}})),
        "type_not_allowed": ("recall.issued", signed(till, f.recall_issued("acme", minutes=4, serials=[serial]))),
        "source_not_allowed": ("theft.reported", signed(police, report(5, source="pos/store-12/till-3"))),
        "data_not_allowed": ("theft.reported", signed(police, other_agency)),
        "type_stream_mismatch": ("unit.sold", signed(police, report(6))),
    }
    async with running(inventory, settings) as app, http(app) as client:
        await xadd(settings, "unit.received", plain(received))
        await wait_for(lambda: _status(client, serial), message="the receipt applied")
        for stream_type, body in forgeries.values():
            await xadd(settings, stream_type, body)
        dead = await wait_for(lambda: _at_least(letters(settings), len(forgeries)), message="dead letters")
        assert sorted(letter["reason"] for letter in dead) == sorted(forgeries)
        state = await unit(client, serial)
        assert state["stolen"] is False and state["recalls"] == []  # none of it applied

        await xadd(settings, "theft.reported", signed(police, report(10)))  # the real feed
        await xadd(settings, "recall.issued", signed(acme, f.recall_issued("acme", minutes=11, recall_id="RC-T",
                                                                          serials=[serial])))
        state = await wait_for(lambda: _applied(client, serial), message="the signed report and recall")
        assert state["stolen"] is True and state["theft_cases"] == ["metro-pd:C-10"]


async def test_rotation_both_keys_verify_during_the_overlap_and_a_revoked_key_is_refused(settings):
    data_dir = settings.data_dir
    old_record, _ = create_key(data_dir, "metro-pd-2025", "law-enforcement", agency="metro-pd")
    create_key(data_dir, "metro-pd-2026", "law-enforcement", agency="metro-pd")
    old, new = load_signer("metro-pd-2025", data_dir), load_signer("metro-pd-2026", data_dir)
    serials = [f.serial("RO") for _ in range(3)]
    async with running(inventory, settings) as app, http(app) as client:
        for serial in serials:
            await xadd(settings, "unit.received", plain(f.received("acme", serial, minutes=0)))
        await xadd(settings, "theft.reported", signed(old, f.theft_reported("acme", serials[0], minutes=1,
                                                                           case_number="C-OLD")))
        await xadd(settings, "theft.reported", signed(new, f.theft_reported("acme", serials[1], minutes=1,
                                                                           case_number="C-NEW")))
        for serial in serials[:2]:
            await wait_for(lambda s=serial: _stolen(client, s), message=f"{serial} reported under either key")
        revoke_key(data_dir, old_record.kid)
        await wait_for(lambda: _revocations_loaded(client), message="the revocation picked up (within seconds)")
        await xadd(settings, "theft.reported", signed(old, f.theft_reported("acme", serials[2], minutes=2,
                                                                           case_number="C-LATE")))
        dead = await wait_for(lambda: _at_least(letters(settings), 1), message="the revoked key's report refused")
        assert dead[0]["reason"] == "revoked_key"
        assert (await unit(client, serials[2]))["stolen"] is False


async def _revocations_loaded(client):
    return (await client.get("/healthz")).json()["key_registry"]["revoked"] == 1


async def _status(client, serial):
    response = await client.get(f"/units/acme/{serial}")
    return response.status_code == 200


async def _stolen(client, serial):
    return (await unit(client, serial)).get("stolen")  # None while the unit is not known yet (404)


async def _applied(client, serial):
    state = await unit(client, serial)
    return state if state.get("stolen") and state.get("recalls") else None


async def _at_least(awaitable, n):
    value = await awaitable
    return value if len(value) >= n else None

"""Erasure on request, end to end (issue 11 part 2): the four services running against a real Redis,
on SQLite and on PostgreSQL, a customer's story through all of them (sale, claim, return, a theft
report that makes an alert of the sale, entries dead-lettered with the customer in them), then:

- `POST /erasures` on warranty with a customer-service token; every service reports;
- a late sale of the erased customer, and a later return on their receipt: pseudonymized on arrival;
- a poison entry naming the customer after the erasure: its dead letter is scrubbed;
- `serialtrack erase` (the CLI, as its own process) for the same customer: idempotent, reported as
  erased before;
- every column of every table of every service's database, and every service's dead-letter stream,
  scanned: neither the customer id nor their receipts appear anywhere; another customer is untouched,
  and the erased customer's units, sales and decisions keep their shape under the pseudonym.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from contextlib import AsyncExitStack

import redis.asyncio as aioredis
from sqlalchemy import MetaData, select

from services.registry import INSTALLED, load
from shared.contracts import ReturnRequested, UnitSold, WarrantyClaimSubmitted
from shared.envelope import ENTRY_FIELD, make_event
from shared.pseudonyms import Pseudonyms
from shared.store import make_engine
from shared.tokens import create_token
from tests.support import factories as f
from tests.support.running import http, inbox_count, publish_events, running, settings_env, wait_for
from tests.support.streams import text_entries


def _sale(serial: str, customer: str, receipt: str, minutes: float):
    return make_event(UnitSold(manufacturer="acme", serial=serial, sku="TV-55", location="store-1",
                               terminal_id="store-1/till-1", receipt_id=receipt, customer_id=customer),
                      source="test/pos", time=f.at(minutes))


def _poison_sale(serial: str, customer: str, receipt: str, event_id: str) -> dict:
    """A unit.sold entry naming the customer that no service can apply (no location)."""
    envelope = json.loads(_sale(serial, customer, receipt, 1).envelope.model_dump_json(exclude_none=True))
    del envelope["data"]["location"]
    envelope["id"] = event_id
    return {ENTRY_FIELD: json.dumps(envelope)}


async def _reports(settings, erasure_id: str) -> dict[str, dict]:
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        entries = await text_entries(client, settings.streams.for_type("customer.erasure.completed"))
    finally:
        await client.aclose()
    data = [json.loads(fields[ENTRY_FIELD])["data"] for _, fields in entries]
    return {d["service"]: d for d in data if d["erasure_id"] == erasure_id}


def _every_value(settings, service: str) -> list[tuple[str, str, str]]:
    """(table, column, value) of every text value in every table of the service's database."""
    engine = make_engine(settings.database_url(service))
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        found: list[tuple[str, str, str]] = []
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(select(table)):
                    found.extend((table.name, column, value) for column, value in row._mapping.items()
                                 if isinstance(value, str))
        return found
    finally:
        engine.dispose()


async def _dead_letter_text(settings, service: str) -> list[str]:
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        return [json.dumps(fields) for _, fields in await text_entries(client, settings.streams.dead_letters(service))]
    finally:
        await client.aclose()


async def _dead_letter_entries(settings, service: str) -> set[tuple[str, str]]:
    """The distinct entries the service dead-lettered: (stream, entry id)."""
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        letters = await text_entries(client, settings.streams.dead_letters(service))
    finally:
        await client.aclose()
    return {(fields["stream"], fields["entry_id"]) for _, fields in letters}


async def test_a_customer_is_erased_everywhere_and_stays_erased(settings):
    token = secrets.token_hex(3).upper()
    customer, other = f"C-{token}", f"C-OTHER-{token}"
    receipt, late_receipt, other_receipt = f"R-{token}-1", f"R-{token}-2", f"R-OTHER-{token}"
    a, b, c = f.serial(), f.serial(), f.serial()
    story = [
        f.received("acme", a, minutes=0), f.received("acme", b, minutes=0), f.received("acme", c, minutes=0),
        _sale(a, customer, receipt, 10),
        _sale(c, other, other_receipt, 10),
        make_event(WarrantyClaimSubmitted(claim_id=f"CL-{token}", manufacturer="acme", serial=a, customer_id=customer,
                                          issue=f"no picture, says {customer}"), source="test/desk", time=f.at(20)),
        make_event(ReturnRequested(request_id=f"RQ-{token}", manufacturer="acme", serial=a, receipt_id=receipt,
                                   location="store-1", customer_id=customer), source="test/pos", time=f.at(25)),
        f.theft_reported("acme", a, minutes=30, case_number=f"CASE-{token}"),  # the sale becomes an alert's sighting
    ]
    async with AsyncExitStack() as stack:
        apps = {name: await stack.enter_async_context(running(load(name), settings)) for name in INSTALLED}
        admin = {name: await stack.enter_async_context(http(app)) for name, app in apps.items()}
        await publish_events(settings, story)
        writer = aioredis.from_url(settings.redis_url)
        stack.push_async_callback(writer.aclose)
        await writer.xadd(settings.streams.for_type("unit.sold"), _poison_sale(b, customer, receipt, f"poison-1-{token}"))

        async def story_applied():
            claim = await admin["warranty"].get(f"/claims/CL-{token}")
            alerts = (await admin["theft"].get("/alerts")).json()["items"]
            letters = [await _dead_letter_text(settings, name) for name in INSTALLED]
            return (claim.status_code == 200 and claim.json()["status"] != "pending"
                    and any(x["serial"] == a for x in alerts) and all(customer in "".join(t) for t in letters))
        await wait_for(story_applied, timeout=40, message="the story applied and dead-lettered everywhere")
        assert any(customer in value for _, _, value in _every_value(settings, "warranty"))  # the scan can see it

        letters_before = {name: len(await _dead_letter_text(settings, name)) for name in INSTALLED}
        # The request, as customer service makes it.
        desk, _ = create_token(settings.tokens_dir, "customer-service", name="desk")
        async with http(apps["warranty"], desk) as client:
            response = await client.post("/erasures", json={"customer_id": customer, "note": "ticket 4711"})
        assert response.status_code == 202, response.text
        erasure_id = response.json()["erasure_id"]
        assert response.json()["receipts"] == 1  # warranty ties the receipt to the customer
        reports = await wait_for(lambda: _n_reports(settings, erasure_id, 4), timeout=30, message="four reports")
        pseudonym = Pseudonyms(settings.tokens_dir)(customer)
        assert {r["pseudonym"] for r in reports.values()} == {pseudonym}
        assert not any(r["already_erased"] for r in reports.values())
        assert reports["warranty"]["rows"]["warranty_facts"] == 1  # the sale (the receipt row is the unit's own)
        assert reports["warranty"]["rows"]["warranty_claims"] == 1
        assert reports["inventory"]["rows"]["inventory_history"] == 1
        assert reports["theft"]["rows"]["theft_sightings"] == 1 and reports["theft"]["rows"]["theft_alerts"] == 1
        # Each dead letter naming the customer was rewritten (an entry reclaimed while it was being
        # dead-lettered is there twice, with the same stream and entry id: README, "Delivery guarantees").
        assert {s: r["dead_letters"] for s, r in reports.items()} == letters_before

        # Later events naming the customer or their receipt are pseudonymized on arrival.
        before = {name: inbox_count(settings, name) for name in INSTALLED}
        await publish_events(settings, [
            f.received("acme", b, minutes=40), _sale(b, customer, late_receipt, 50),
            make_event(ReturnRequested(request_id=f"RQ2-{token}", manufacturer="acme", serial=a, receipt_id=receipt,
                                       location="store-1"), source="test/pos", time=f.at(60)),
        ])
        await writer.xadd(settings.streams.for_type("unit.sold"), _poison_sale(b, customer, late_receipt,
                                                                                f"poison-2-{token}"))
        await wait_for(lambda: inbox_count(settings, "warranty") >= before["warranty"] + 3
                       and inbox_count(settings, "inventory") >= before["inventory"] + 2, message="late events applied")

        async def two_dead_letters_each():
            return all([len(await _dead_letter_entries(settings, name)) >= 2 for name in INSTALLED])
        await wait_for(two_dead_letters_each, message="the late poison entry dead-lettered")
        late_return = (await admin["warranty"].get(f"/returns/RQ2-{token}")).json()
        assert late_return["receipt_id"] == Pseudonyms(settings.tokens_dir)(receipt)
        assert "returned_never_sold" not in late_return["reasons"]  # still matched to its (pseudonymized) sale

        # The same customer again, through the CLI as the operator would: nothing left to change.
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "serialtrack.cli", "erase", customer, "--json", "--wait", "30"],
            env=settings_env(settings), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        again = json.loads(result.stdout)
        assert customer not in result.stdout and again["missing"] == []
        assert all(r["already_erased"] and r["pseudonym"] == pseudonym for r in again["reports"])
        assert all(r["dead_letters"] == 0 for r in again["reports"])

        # Units, sales and decisions keep their shape, under the pseudonym.
        unit = (await admin["warranty"].get(f"/warranties/acme/{a}")).json()
        assert unit["owner"]["customer_id"] == pseudonym and unit["sale"]["customer_id"] == pseudonym
        claim = (await admin["warranty"].get(f"/claims/CL-{token}")).json()
        assert claim["customer_id"] == pseudonym and claim["facts"]["sale_customer_id"] == pseudonym
        assert claim["issue"] == f"no picture, says {pseudonym}"
        assert (await admin["inventory"].get(f"/units/acme/{b}")).json()["status"] == "sold"

    # Nothing of the customer anywhere: every value of every table, every dead letter.
    erased = [customer.lower(), receipt.lower(), late_receipt.lower()]
    for name in INSTALLED:
        values = _every_value(settings, name)
        leaks = [(t, col, v) for t, col, v in values if any(e in v.lower() for e in erased)]
        assert leaks == [], (name, leaks[:5])
        letters = await _dead_letter_text(settings, name)
        assert len(await _dead_letter_entries(settings, name)) == 2
        assert not [x for x in letters if any(e in x.lower() for e in erased)], (name, letters)
    # ... while the other customer is untouched.
    assert any(v == other for _, col, v in _every_value(settings, "warranty") if col == "customer_id")
    assert any(v == other_receipt for _, col, v in _every_value(settings, "theft") if col == "reference")


async def _n_reports(settings, erasure_id: str, n: int) -> dict[str, dict] | None:
    reports = await _reports(settings, erasure_id)
    return reports if len(reports) >= n else None

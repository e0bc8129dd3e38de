"""Ownership (issue 10, section 3): a stranger's owner registration does not take over a sold unit.

Service layer first: the warranty handlers under the shared EventProcessor (inbox, one transaction per
batch, outbox) on a SQLite store migrated like a service migrates it at start, with every arrival
order of sale, registration and claim. Then the attack as issue 10 ran it, over a real Redis with
signed registrations.

Events a verified signature vouched for carry ``Event.signed_by`` (set by the consumer after it
verified the envelope); the service-layer tests set it as the consumer will, with
``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.warranty import store
from services.warranty.api import warranty_view
from services.warranty.app import definition as warranty
from services.warranty.handlers import reproduce
from shared.consumer import EventProcessor
from shared.contracts import DecisionFacts, WarrantyOwnerRegistered
from shared.envelope import make_event
from shared.keys import create_key
from shared.publishing import publish_raw
from shared.schema import prepare
from shared.signing import VerifiedKey, load_signer
from shared.store import OutboxRow, for_writing, make_engine
from tests.integration.test_warranty_flow import DAY, claim, decided, get_json
from tests.support import factories as f
from tests.support.running import http, publish_events, running, wait_for

DESK = VerifiedKey(kid="after-sales-kPrK_qmxVWaY", name="after-sales", role="owner-registry",
                   transfers_ownership=True)
WEB = VerifiedKey(kid="web-registrations-Jx3vQ0c1LkqA", name="web-registrations", role="owner-registry")


def registration(sn, customer, *, minutes, signed_by=None, channel="web"):
    event = make_event(WarrantyOwnerRegistered(manufacturer="acme", serial=sn, customer_id=customer, channel=channel),
                       source="test/registrations", time=f.at(minutes))
    return dataclasses.replace(event, signed_by=signed_by)


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/warranty.db")
    prepare(engine, warranty.migrations)  # what the service does at start: migrate to the heads
    yield engine
    engine.dispose()


def apply(engine, *events) -> None:
    EventProcessor("warranty", for_writing(engine), warranty.apply).process(list(events))


def claim_row(engine, claim_id) -> dict:
    with Session(engine) as session:
        row = store.get_request(session, "claim", claim_id)
    assert row is not None, f"no claim {claim_id}"
    return row


def outcome(engine, claim_id) -> tuple[str, list[str]]:
    row = claim_row(engine, claim_id)
    return row["status"], json.loads(row["reasons"])


def versions(engine, claim_id) -> list[tuple[int, str, list[str], str | None]]:
    """(version, status, reasons, supersedes) of every stored decision version."""
    with Session(engine) as session:
        return [(v.version, v.status, json.loads(v.reasons), v.supersedes)
                for v in store.decision_versions(session, "claim", claim_id)]


def decision_ids(engine, claim_id) -> list[str]:
    with Session(engine) as session:
        return [v.event_id for v in store.decision_versions(session, "claim", claim_id)]


def assert_reproducible(engine, claim_id) -> None:
    """The stored decision is what the stored facts give (the handlers' audit property)."""
    with Session(engine) as session:
        stored = store.get_request(session, "claim", claim_id)
        again = reproduce(session, "claim", claim_id)
    assert stored is not None and again is not None
    assert (again.status, list(again.reasons)) == (stored["status"], json.loads(stored["reasons"]))
    assert DecisionFacts.model_validate(again.facts) == DecisionFacts.model_validate_json(stored["facts"])


def unit_view(engine, sn):
    with Session(engine) as session:
        return warranty_view(session, ("acme", sn), datetime(2026, 12, 1, tzinfo=UTC))


# Cases applied in every arrival order: (sale customer, registration customer, its signer, claimant) ->
# the final decision, which must be the one time order gives.
CASES = {
    "stranger registers, stranger claims": ("C-BUYER", "C-STRANGER", None, "C-STRANGER",
                                            ("needs_review", ["ownership_change_pending"])),
    "stranger via an untrusted channel key": ("C-BUYER", "C-STRANGER", WEB, "C-STRANGER",
                                              ("needs_review", ["ownership_change_pending"])),
    "trusted transfer, new owner claims": ("C-BUYER", "C-NEW", DESK, "C-NEW", ("approved", [])),
    "trusted transfer, old owner claims": ("C-BUYER", "C-NEW", DESK, "C-BUYER", ("rejected", ["not_registered_owner"])),
    "buyer registers again, buyer claims": ("C-BUYER", "C-BUYER", None, "C-BUYER", ("approved", [])),
    "sale without customer, registrant claims": (None, "C-GIFT", None, "C-GIFT", ("approved", [])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_arrival_order_of_sale_registration_and_claim_ends_in_the_time_order_decision(engine, case):
    buyer, registrant, signer, claimant, expected = CASES[case]
    finals = {}
    for order in itertools.permutations(("sale", "registration", "claim")):
        sn = f.serial()

        def customer(name, sn=sn):  # customers of this unit only: the fraud signals count claims across units
            return f"{name}-{sn}" if name else None

        # Time order: receipt, sale (day 0), registration (day 1), claim (day 10). Arrival: ``order``.
        events = {
            "sale": f.sold("acme", sn, minutes=10, customer_id=customer(buyer)),
            "registration": registration(sn, customer(registrant), minutes=DAY, signed_by=signer),
            "claim": claim(sn, minutes=10 * DAY, customer=customer(claimant), claim_id=f"CL-{sn}"),
        }
        apply(engine, f.received("acme", sn, minutes=0))
        for name in order:
            apply(engine, events[name])
        finals[order] = outcome(engine, f"CL-{sn}")
        assert_reproducible(engine, f"CL-{sn}")
        history = versions(engine, f"CL-{sn}")
        assert [v[0] for v in history] == list(range(1, len(history) + 1))
        ids = decision_ids(engine, f"CL-{sn}")
        assert [v[3] for v in history] == [None, *ids[:-1]]  # each version supersedes the one before
        view = unit_view(engine, sn)
        if signer is not None:  # who vouched is kept with the fact and shown in the history
            assert [h.signed_by for h in view.history if h.type == "warranty.owner.registered"] == [signer.kid]
    assert all(final == expected for final in finals.values()), finals


def test_a_pending_change_arriving_late_turns_an_approval_into_review_with_a_new_version(engine):
    sn = f.serial()
    apply(engine, f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=10, customer_id="C-BUYER"))
    apply(engine, claim(sn, minutes=10 * DAY, customer="C-BUYER", claim_id="CL-BUYER"))
    assert versions(engine, "CL-BUYER") == [(1, "approved", [], None)]

    # A stranger's registration dated before the claim arrives after it: the claim is decided again.
    apply(engine, registration(sn, "C-STRANGER", minutes=5 * DAY, signed_by=WEB))
    [_, second] = versions(engine, "CL-BUYER")
    assert second == (2, "needs_review", ["ownership_change_pending"], decision_ids(engine, "CL-BUYER")[0])
    facts = json.loads(claim_row(engine, "CL-BUYER")["facts"])
    assert (facts["owner_customer_id"], facts["pending_owner_customer_ids"]) == ("C-BUYER", ["C-STRANGER"])
    # The new version went out as an event (outbox) that supersedes the approval.
    with Session(engine) as session:
        decided_events = [json.loads(row.envelope) for row in session.scalars(
            select(OutboxRow).where(OutboxRow.event_type == "warranty.claim.decided").order_by(OutboxRow.seq))]
    data = [e["data"] for e in decided_events if e["data"]["claim_id"] == "CL-BUYER"]
    assert [(d["version"], d["status"]) for d in data] == [(1, "approved"), (2, "needs_review")]
    assert data[1]["supersedes"] == decided_events[0]["id"]

    # A registration dated after the claim changes nothing: facts after a request never do.
    apply(engine, registration(sn, "C-OTHER", minutes=20 * DAY))
    assert len(versions(engine, "CL-BUYER")) == 2

    # The desk confirms the buyer (trusted, dated before the claim): the change is settled, approved again.
    apply(engine, registration(sn, "C-BUYER", minutes=6 * DAY, signed_by=DESK, channel="store-desk"))
    assert versions(engine, "CL-BUYER")[-1][:3] == (3, "approved", [])
    view = unit_view(engine, sn)
    assert view.owner.customer_id == "C-BUYER" and view.owner.via == "sale"
    assert [(r.customer_id, r.outcome) for r in view.registrations] == [
        ("C-STRANGER", "closed"), ("C-BUYER", "confirmed"), ("C-OTHER", "pending")]
    assert [p.customer_id for p in view.pending_ownership_changes] == ["C-OTHER"]
    assert_reproducible(engine, "CL-BUYER")


def test_the_trusted_flag_is_stored_with_the_fact_so_a_later_revocation_does_not_rewrite_history(engine):
    """Trust is judged when the registration is applied; re-deciding later reads the stored flag, not the
    registry (a key revoked or re-flagged later does not turn an old transfer into a pending change)."""
    sn = f.serial()
    apply(engine, f.sold("acme", sn, minutes=10, customer_id="C-BUYER"),
          registration(sn, "C-NEW", minutes=DAY, signed_by=DESK, channel="store-desk"))
    with Session(engine) as session:
        rows = store.unit_rows(session, ("acme", sn))
    stored = {row.event_type: (row.signed_by, row.trusted_transfer) for row in rows}
    assert stored == {"unit.sold": (None, False), "warranty.owner.registered": (DESK.kid, True)}
    # A late claim (any time after) is decided from the stored facts alone.
    apply(engine, claim(sn, minutes=3 * DAY, customer="C-NEW", claim_id=f"CL-{sn}"))
    assert outcome(engine, f"CL-{sn}") == ("approved", [])
    facts = json.loads(claim_row(engine, f"CL-{sn}")["facts"])
    assert (facts["owner_customer_id"], facts["owner_via"]) == ("C-NEW", "transfer")
    view = unit_view(engine, sn)
    assert [(o.customer_id, o.via) for o in view.owner_history] == [("C-BUYER", "sale"), ("C-NEW", "transfer")]


def test_recall_notices_go_to_the_owner_on_record_not_to_a_pending_registrant(engine):
    sn = f.serial()
    apply(engine, f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=10, customer_id="C-BUYER"),
          registration(sn, "C-STRANGER", minutes=DAY))
    apply(engine, f.recall_issued("acme", minutes=2 * DAY, recall_id=f"RC-{sn}", serials=[sn]))
    with Session(engine) as session:
        notices = store.notices_of_unit(session, ("acme", sn))
    assert [(n.outcome, n.customer_id) for n in notices] == [("notified", "C-BUYER")]


# Over a real Redis: the attack of issue 10, published the way a producer publishes.


def signed_body(settings, key_name: str, event) -> tuple[str, str]:
    signer = load_signer(key_name, settings.data_dir)
    return settings.streams.for_type(event.type), signer.entry_body(event.envelope)


async def publish_signed(settings, key_name: str, events) -> None:
    client = aioredis.from_url(settings.redis_url)
    try:
        await publish_raw(client, [signed_body(settings, key_name, e) for e in events])
    finally:
        await client.aclose()


def registered_signed(sn, customer, *, minutes, source):
    return make_event(WarrantyOwnerRegistered(manufacturer="acme", serial=sn, customer_id=customer, channel="web"),
                      source=source, time=f.at(minutes))


@pytest.fixture
def keys(settings):
    """The two owner-registry channels of a store: its public web form, and its after-sales desk, the
    one key the registry trusts for ownership transfers."""
    create_key(settings.data_dir, "web-registrations", "owner-registry", source_prefix="web/registrations")
    create_key(settings.data_dir, "after-sales", "owner-registry", source_prefix="store/after-sales",
               transfers_ownership=True)
    return settings


async def test_a_strangers_registration_does_not_get_the_strangers_claim_approved(keys):
    """Issue 10: "a warranty.owner.registered by a stranger took over a sold unit, after which that
    stranger's claim was approved". Now it is a pending change and the claim goes to a person."""
    settings = keys
    sn = f.serial()
    async with running(warranty, settings) as app, http(app) as client:
        await publish_events(settings, [f.received("acme", sn, minutes=0),
                                        f.sold("acme", sn, minutes=10, customer_id="C-BUYER")])
        # Anyone can register through the web form: validly signed, by a key not trusted for transfers.
        await publish_signed(settings, "web-registrations",
                             [registered_signed(sn, "C-STRANGER", minutes=DAY, source="web/registrations")])
        await wait_for(lambda: _pending(client, sn), message="the registration applied as a pending change")
        await publish_events(settings, [claim(sn, minutes=10 * DAY, customer="C-STRANGER", claim_id=f"CL-{sn}")])
        decision = await decided(client, f"/claims/CL-{sn}")
        assert (decision["status"], decision["reasons"]) == ("needs_review", ["ownership_change_pending"])
        assert decision["facts"]["owner_customer_id"] == "C-BUYER"
        assert decision["facts"]["pending_owner_customer_ids"] == ["C-STRANGER"]

        view = await get_json(client, f"/warranties/acme/{sn}")
        assert view["owner"] == {"customer_id": "C-BUYER", "via": "sale", "since": "2026-11-01T09:10:00Z"}
        [pending] = view["pending_ownership_changes"]
        assert (pending["customer_id"], pending["reason"]) == ("C-STRANGER", "ownership_change_pending")
        assert "C-BUYER owns the unit" in pending["detail"]
        assert [r["outcome"] for r in view["registrations"]] == ["pending"]


async def test_a_registration_signed_by_the_trusted_desk_transfers_ownership(keys):
    settings = keys
    sn = f.serial()
    async with running(warranty, settings) as app, http(app) as client:
        await publish_events(settings, [f.received("acme", sn, minutes=0),
                                        f.sold("acme", sn, minutes=10, customer_id="C-BUYER")])
        await publish_signed(settings, "after-sales",
                             [registered_signed(sn, "C-NEW", minutes=DAY, source="store/after-sales/desk-1")])
        await wait_for(lambda: _registrations(client, sn, 1), message="the registration applied")
        await publish_events(settings, [claim(sn, minutes=10 * DAY, customer="C-NEW", claim_id=f"CL-{sn}")])
        decision = await decided(client, f"/claims/CL-{sn}")
        view = await get_json(client, f"/warranties/acme/{sn}")
        assert view["owner"]["customer_id"] == "C-NEW" and view["owner"]["via"] == "transfer"
        assert view["pending_ownership_changes"] == []
        assert (decision["status"], decision["reasons"]) == ("approved", [])


async def _pending(client, sn):
    view = await get_json(client, f"/warranties/acme/{sn}")
    return view if view and view["pending_ownership_changes"] else None


async def _registrations(client, sn, count):
    view = await get_json(client, f"/warranties/acme/{sn}")
    return view if view and len(view["registrations"]) >= count else None


def test_lookup_shows_a_pending_ownership_change(engine):
    """`serialtrack lookup` renders what GET /warranties answers: the desk sees why claims go to review."""
    from rich.console import Console

    from serialtrack.lookup_view import print_unit

    sn = f.serial()
    apply(engine, f.sold("acme", sn, minutes=10, customer_id="C-BUYER"), registration(sn, "C-STRANGER", minutes=DAY))
    out = Console(record=True, width=200)
    print_unit(out, {"warranty": unit_view(engine, sn).model_dump(mode="json")})
    text = out.export_text()
    assert "owner C-BUYER (via sale)" in text
    assert "ownership change pending: C-STRANGER registered 2026-11-02" in text

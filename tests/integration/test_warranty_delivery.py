"""Warranty delivery guarantees over a real Redis and a real store: out-of-order arrival, duplicates,
crash and restart with pending entries."""

from __future__ import annotations

import itertools
import json

import httpx
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from services.warranty import store
from services.warranty.app import definition as warranty
from shared.contracts import (
    RecallClosed,
    RecallIssued,
    ReturnRequested,
    WarrantyClaimSubmitted,
    WarrantyOwnerRegistered,
    WarrantyPolicySet,
)
from shared.envelope import make_event
from shared.store import make_engine
from tests.integration.test_warranty_flow import (
    DAY,
    assert_reproducible,
    claim,
    decided,
    emitted,
    get_json,
    publish_events,
    return_request,
)
from tests.support import factories as f
from tests.support.running import (
    http,
    inbox_count,
    running,
    start_service_process,
    wait_for,
    wait_healthy,
)


def _outcome(body):
    return body["status"], body["reasons"]


async def test_a_claim_before_its_sale_is_redecided_when_the_sale_arrives(settings):
    """Documented behaviour: decided with what is known (unknown serial -> needs_review), then a new
    version supersedes it when the late sale arrives; the final decision equals in-order delivery."""
    late, in_order = f.serial(), f.serial()
    history = {sn: [f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=10, customer_id="C-1",
                                                               receipt_id=f"R-{sn}")] for sn in (late, in_order)}
    async with running(warranty, settings) as app, http(app) as client:
        await publish_events(settings, history[in_order])  # the reference: truly in order
        await wait_for(lambda: _covered(client, in_order), message="reference sale applied")
        await publish_events(settings, [claim(in_order, minutes=5 * DAY, claim_id=f"C-{in_order}"),
                                        return_request(in_order, minutes=DAY, receipt_id=f"R-{in_order}",
                                                       request_id=f"Q-{in_order}")])
        await publish_events(settings, [claim(late, minutes=5 * DAY, claim_id=f"C-{late}"),
                                        return_request(late, minutes=DAY, receipt_id=f"R-{late}",
                                                       request_id=f"Q-{late}")])
        first = await decided(client, f"/claims/C-{late}")
        assert _outcome(first) == ("needs_review", ["unknown_serial"])
        first_return = await decided(client, f"/returns/Q-{late}")
        assert _outcome(first_return) == ("needs_review", ["unknown_serial", "receipt_unknown"])

        # The sale, earlier in time, arrives after the claim: a new version supersedes the first.
        await publish_events(settings, [history[late][1]])
        approved = await decided(client, f"/claims/C-{late}", version=2)
        assert _outcome(approved) == ("approved", []) and approved["facts"]["received"] is False
        # Then the receipt: the outcome stays, a fact it used changed, so a new version records it.
        await publish_events(settings, [history[late][0]])
        final = await wait_for(lambda: _outcome_is(client, f"/claims/C-{late}", "approved"), message="re-decided")
        assert final["version"] == 3
        reference = await decided(client, f"/claims/C-{in_order}")
        assert _outcome(final) == _outcome(reference) == ("approved", [])
        assert reference["version"] == 1
        versions = final["versions"]
        assert versions[0]["event_id"] == first["decision_id"] and versions[-1]["event_id"] == final["decision_id"]
        assert [v["version"] for v in versions] == list(range(1, len(versions) + 1))
        assert all(v["supersedes"] == p["event_id"] for p, v in itertools.pairwise(versions))
        returned = await wait_for(lambda: _outcome_is(client, f"/returns/Q-{late}", "accepted"), message="return")
        assert _outcome(returned) == _outcome(await decided(client, f"/returns/Q-{in_order}")) == ("accepted", [])

        # a theft report after the claim changes nothing; one before it rejects the claim (a new version)
        await publish_events(settings, [f.theft_reported("acme", late, minutes=6 * DAY, case_number="AFTER")])
        await wait_for(lambda: _stolen(client, late), message="report applied")
        assert (await get_json(client, f"/claims/C-{late}"))["version"] == final["version"]
        await publish_events(settings, [f.theft_reported("acme", late, minutes=3 * DAY, case_number="BEFORE")])
        stolen = await decided(client, f"/claims/C-{late}", version=final["version"] + 1)
        assert _outcome(stolen) == ("rejected", ["reported_stolen"])
        assert stolen["facts"]["theft_cases"] == ["metro-pd:BEFORE"]

        await wait_for(lambda: _published(settings, f"C-{late}", stolen["version"]), message="outbox")
        decisions = await _published(settings, f"C-{late}", stolen["version"])
        assert [d["version"] for d in decisions] == list(range(1, stolen["version"] + 1))
        assert decisions[0]["status"] == "needs_review" and decisions[-2]["status"] == "approved"
        assert decisions[-1]["supersedes"] == final["decision_id"]
        assert_reproducible(app, [("claim", f"C-{late}"), ("return", f"Q-{late}"), ("claim", f"C-{in_order}")])


async def _covered(client, sn):
    view = await get_json(client, f"/warranties/acme/{sn}")
    return view if view and view["status"] == "covered" else None


async def _outcome_is(client, path, status):
    """Settled on ``status`` with both the receipt and the sale known (each may re-version the decision)."""
    body = await get_json(client, path)
    settled = body and body["facts"] and body["facts"]["received"] and body["facts"]["sold_at"]
    return body if settled and body["status"] == status else None


async def _published(settings, claim_id, count):
    found = [d["data"] for d in await emitted(settings, "warranty.claim.decided") if d["data"]["claim_id"] == claim_id]
    return sorted(found, key=lambda d: d["version"]) if len(found) >= count else None


async def _stolen(client, sn):
    view = await get_json(client, f"/warranties/acme/{sn}")
    return view if view and len(view["theft_cases"]) else None


async def test_a_late_earlier_claim_makes_the_later_one_a_duplicate(settings):
    sn = f.serial()
    async with running(warranty, settings) as app, http(app) as client:
        await publish_events(settings, [f.received("acme", sn, minutes=0),
                                        f.sold("acme", sn, minutes=10, customer_id="C-1")])
        await wait_for(lambda: _covered(client, sn), message="sale applied")
        await publish_events(settings, [claim(sn, minutes=20 * DAY, claim_id=f"L-{sn}", issue="No Picture")])
        assert _outcome(await decided(client, f"/claims/L-{sn}")) == ("approved", [])
        await publish_events(settings, [claim(sn, minutes=15 * DAY, claim_id=f"E-{sn}", issue="no  picture")])
        assert _outcome(await decided(client, f"/claims/E-{sn}")) == ("approved", [])
        later = await decided(client, f"/claims/L-{sn}", version=2)
        assert _outcome(later) == ("rejected", ["duplicate_claim"]) and later["facts"]["duplicate_of"] == f"E-{sn}"


async def test_duplicate_deliveries_decide_once(settings):
    sn = f.serial()
    first = claim(sn, minutes=20 * DAY, claim_id=f"D-{sn}")
    same_id_other_event = claim(sn, minutes=21 * DAY, claim_id=f"D-{sn}", issue="other")
    async with running(warranty, settings) as app, http(app) as client:
        sale = [f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=10, customer_id="C-1")]
        await publish_events(settings, [*sale, *sale])
        await wait_for(lambda: _covered(client, sn), message="sale applied")
        await publish_events(settings, [first, first, first, same_id_other_event])
        body = await decided(client, f"/claims/D-{sn}")
        await publish_events(settings, [first, *sale])  # replays after the decision
        await wait_for(lambda: inbox_count(settings, "warranty") == 4, message="inbox")
        await wait_for(lambda: _emitted_count_is(settings, 1), message="one decision published")
        again = await get_json(client, f"/claims/D-{sn}")
        assert again["version"] == 1 and again["issue"] == "no picture" and again["decision_id"] == body["decision_id"]
        view = await get_json(client, f"/warranties/acme/{sn}")
        assert [h["type"] for h in view["history"]] == ["unit.received", "unit.sold"]


async def _emitted_count_is(settings, count):
    return len(await emitted(settings, "warranty.claim.decided")) == count


def _start(settings, log_path):
    return start_service_process("warranty", settings, log_path)


def _serving(settings, process) -> None:
    """Healthy, and really this warranty process (a port taken by another process would also answer 200)."""
    wait_healthy(settings, "warranty", process)
    health = httpx.get(settings.service_url("warranty") + "/healthz", timeout=5).json()
    assert health["service"] == "warranty" and process.poll() is None, f"port clash: {health}"


def _decided_count(settings) -> int:
    engine = make_engine(settings.database_url("warranty"))
    try:
        with Session(engine) as session:
            return session.execute(select(func.count()).select_from(store.ClaimRow)
                                   .where(col(store.ClaimRow.status).is_not(None))).scalar_one()
    finally:
        engine.dispose()


async def test_crash_and_restart_with_pending_entries_decides_every_claim_once(sqlite_settings, tmp_path):
    settings = sqlite_settings.model_copy(update={"batch_size": 20})
    count = 200
    serials = [f.serial() for _ in range(count)]
    events = [e for sn in serials for e in (f.received("acme", sn, minutes=0),
                                            f.sold("acme", sn, minutes=10, customer_id="C-1"))]
    claims = [claim(sn, minutes=DAY + n, claim_id=f"K-{sn}", customer=f"C-{sn}", location=f"desk-{n}")
              for n, sn in enumerate(serials)]
    # the buyer is C-1 but claims come from C-<serial>: every claim is rejected (not_registered_owner)
    process = _start(settings, tmp_path / "warranty-1.log")
    try:
        _serving(settings, process)
        await publish_events(settings, events)  # sales first: each claim then has one decision, version 1
        await wait_for(lambda: inbox_count(settings, "warranty") == 2 * count, message="sales applied")
        await publish_events(settings, claims)
        await wait_for(lambda: _decided_count(settings) >= 20, interval=0.01, message="some claims decided")
        process.kill()  # SIGKILL mid-stream: delivered-but-unacked entries stay pending
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert _decided_count(settings) < count, "crash happened too late to test anything"
    # Another process of the service that read entries and died before acking them.
    client = aioredis.from_url(settings.redis_url)
    stream = settings.streams.for_type("warranty.claim.submitted")
    try:
        await client.xreadgroup("warranty", "warranty-dead-2", {stream: ">"}, count=30)
        pending_after_crash = int((await client.xpending(stream, "warranty"))["pending"])
    finally:
        await client.aclose()
    assert pending_after_crash > 0

    process = _start(settings, tmp_path / "warranty-2.log")
    try:
        _serving(settings, process)
        await wait_for(lambda: _decided_count(settings) == count, timeout=40, message="every claim decided")
        await wait_for(lambda: _pending_is_zero(settings), timeout=20, message="pending list drained")
        await wait_for(lambda: _distinct_decisions(settings, count), timeout=20, message="outbox drained")
    finally:
        process.terminate()
        process.wait(30)
    assert inbox_count(settings, "warranty") == 2 * count + count
    decisions = await emitted(settings, "warranty.claim.decided")
    by_claim: dict[str, set] = {}
    for d in decisions:
        by_claim.setdefault(d["data"]["claim_id"], set()).add((d["id"], d["data"]["version"], d["data"]["status"]))
    assert len(by_claim) == count
    assert all(len(v) == 1 and next(iter(v))[1:] == (1, "rejected") for v in by_claim.values())


async def _pending_is_zero(settings) -> bool:
    client = aioredis.from_url(settings.redis_url)
    try:
        total = 0
        for event_type in ("unit.received", "unit.sold", "warranty.claim.submitted"):
            total += int((await client.xpending(settings.streams.for_type(event_type), "warranty"))["pending"])
        return total == 0
    finally:
        await client.aclose()


async def _distinct_decisions(settings, count) -> bool:
    return len({d["id"] for d in await emitted(settings, "warranty.claim.decided")}) == count


def test_decisions_contract_round_trip():
    """The decision events the service emits validate against their contracts (consumers parse them)."""
    from services.warranty.domain import ClaimRequest, decide_claim
    from shared.contracts import DecisionFacts, WarrantyClaimDecided

    request = ClaimRequest("C", "acme", "SN1", "C-1", "x", None, (f.at(0), "s", "i"))
    decision = decide_claim(request, [], [], [], [])
    data = WarrantyClaimDecided(claim_id="C", manufacturer="acme", serial="SN1", customer_id="C-1",
                                status=decision.status, reasons=list(decision.reasons), version=1,
                                submitted_at=f.at(0), facts=DecisionFacts.model_validate(decision.facts))
    envelope = make_event(data, source="serialtrack/warranty").envelope
    assert json.loads(envelope.model_dump_json())["data"]["reasons"] == ["unknown_serial"]


def _story(maker: str, sn: str, tag: str) -> list:
    """One unit's history, in time order: claims and a return among sales, thefts, recalls, policies, and
    owner registrations: the sale names no customer, so the first registration (day 0.5) makes the owner
    and a stranger's at day 30 is a pending change. Applied in reverse, the stranger's arrives first: the
    owner must still be who registered first in time."""
    ref = f"{tag}-{sn}"
    owner = f"C-2{tag}"  # a customer of this story only: fraud signals count claims across units
    stranger = f"C-9{tag}"
    unit = {"manufacturer": maker, "serial": sn}
    desk = {"source": "test/desk"}

    def at(days):
        return f.at(days * DAY)

    return [
        make_event(WarrantyPolicySet(policy_id="P", manufacturer=maker, sku="TV-55", coverage_days=400,
                                     return_window_days=14, effective_from=at(-10)), source="test/maker", time=at(-10)),
        f.received(maker, sn, minutes=0),
        f.sold(maker, sn, minutes=10, receipt_id=f"R-{ref}"),
        make_event(WarrantyOwnerRegistered(**unit, customer_id=owner), source="test/web", time=at(0.5)),
        make_event(WarrantyClaimSubmitted(**unit, claim_id=f"A-{ref}", customer_id=owner, issue="no picture"),
                   time=at(2), **desk),
        f.theft_reported(maker, sn, minutes=3 * DAY, case_number="X"),
        make_event(WarrantyClaimSubmitted(**unit, claim_id=f"B-{ref}", customer_id=owner, issue="No picture"),
                   time=at(4), **desk),
        f.theft_recovered(maker, sn, minutes=5 * DAY, case_number="X"),
        make_event(ReturnRequested(**unit, request_id=f"Q-{ref}", receipt_id=f"R-{ref}", location="store-1"),
                   source="test/pos", time=at(6)),
        make_event(RecallIssued(recall_id=f"RC-{ref}", manufacturer=maker, skus=["TV-55"], hazard="fire",
                                remedy="replace"), source="test/maker", time=at(8)),
        make_event(WarrantyClaimSubmitted(**unit, claim_id=f"C-{ref}", customer_id=owner, issue="no sound"),
                   time=at(9), **desk),
        make_event(RecallClosed(recall_id=f"RC-{ref}", manufacturer=maker, reason="fixed"), source="test/maker",
                   time=at(10)),
        make_event(WarrantyOwnerRegistered(**unit, customer_id=stranger), source="test/web", time=at(30)),
        make_event(WarrantyClaimSubmitted(**unit, claim_id=f"D-{ref}", customer_id=owner, issue="no sound"),
                   time=at(40), **desk),
        f.returned(maker, sn, minutes=50 * DAY, receipt_id=f"R-{ref}"),
        make_event(WarrantyClaimSubmitted(**unit, claim_id=f"E-{ref}", customer_id=owner, issue="no sound"),
                   time=at(51), **desk),
    ]


async def _final_decisions(client, tag, sn):
    ref = f"{tag}-{sn}"
    found = {}
    for label in "ABCDE":
        body = await get_json(client, f"/claims/{label}-{ref}")
        facts = body["facts"]
        found[label] = (body["status"], body["reasons"], (facts["duplicate_of"] or "").split("-")[0],
                        facts["coverage_ends"], facts["owner_customer_id"][:3], facts["theft_cases"],
                        [r.split("-")[0] for r in facts["open_recalls"]], facts["fraud_score"])
    body = await get_json(client, f"/returns/Q-{ref}")
    found["Q"] = (body["status"], body["reasons"], body["facts"]["return_window_ends"])
    return found


async def test_final_decisions_do_not_depend_on_arrival_order(settings):
    """R11: the same history applied in time order and in reverse time order (each event applied before
    the next) ends in the same decisions."""
    forward_sn, reverse_sn = f.serial(), f.serial()
    forward = _story("acme-fwd", forward_sn, "F")
    reverse = list(reversed(_story("acme-rev", reverse_sn, "V")))
    async with running(warranty, settings) as app, http(app) as client:
        for applied, event in enumerate([*forward, *reverse], start=1):
            await publish_events(settings, [event])
            await wait_for(lambda n=applied: inbox_count(settings, "warranty") >= n, message=f"event {applied}")
        in_order = await _final_decisions(client, "F", forward_sn)
        reversed_ = await _final_decisions(client, "V", reverse_sn)
        assert in_order == reversed_
        assert {label: outcome[:2] for label, outcome in in_order.items()} == {
            "A": ("approved", []),
            "B": ("rejected", ["duplicate_claim", "reported_stolen"]),
            "C": ("rejected", ["open_recall"]),  # 3rd claim in 30 days (score 2); the stranger comes later
            "D": ("needs_review", ["ownership_change_pending"]),  # the stranger's registration at day 30
            # D: same issue 11 days before, not rejected
            "E": ("rejected", ["coverage_ended_by_return", "duplicate_claim", "ownership_change_pending"]),
            "Q": ("accepted", []),
        }
        assert (await get_json(client, f"/claims/A-F-{forward_sn}"))["version"] == 1  # in order: decided once
        assert_reproducible(app, [("claim", f"{label}-V-{reverse_sn}") for label in "ABCDE"])

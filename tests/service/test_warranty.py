"""Warranty's reconcile logic at the service layer: claims and returns decided with what is known, a
new version superseding the last when a late fact changes an outcome or a fact it used; final
decisions that do not depend on arrival order. Moved here from tests/integration/test_warranty_delivery.py,
where each step waited on Redis delivery: none of them was about delivery."""

from __future__ import annotations

import itertools

import pytest

from shared.contracts import (
    RecallClosed,
    RecallIssued,
    ReturnRequested,
    WarrantyClaimSubmitted,
    WarrantyOwnerRegistered,
    WarrantyPolicySet,
)
from shared.envelope import make_event
from tests.integration.test_warranty_flow import DAY, assert_reproducible, claim, return_request
from tests.support import factories as f


@pytest.fixture
def warranty(make_store):
    return make_store("warranty")


def outcome(body):
    return body["status"], body["reasons"]


def published_decisions(store, claim_id):
    return sorted((e.data for e in store.outbox()
                   if e.type == "warranty.claim.decided" and e.data.claim_id == claim_id), key=lambda d: d.version)


def test_a_claim_before_its_sale_is_redecided_when_the_sale_arrives(warranty):
    """Decided with what is known (unknown serial -> needs_review), then a new version supersedes it
    when the late sale arrives; the final decision equals in-order delivery."""
    late, in_order = f.serial(), f.serial()
    history = {sn: [f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=10, customer_id="C-1",
                                                               receipt_id=f"R-{sn}")] for sn in (late, in_order)}
    warranty.apply_each(history[in_order])  # the reference: truly in order
    warranty.apply(claim(in_order, minutes=5 * DAY, claim_id=f"C-{in_order}"),
                   return_request(in_order, minutes=DAY, receipt_id=f"R-{in_order}", request_id=f"Q-{in_order}"))
    warranty.apply(claim(late, minutes=5 * DAY, claim_id=f"C-{late}"),
                   return_request(late, minutes=DAY, receipt_id=f"R-{late}", request_id=f"Q-{late}"))
    first = warranty.get(f"/claims/C-{late}")
    assert outcome(first) == ("needs_review", ["unknown_serial"]) and first["version"] == 1
    assert outcome(warranty.get(f"/returns/Q-{late}")) == ("needs_review", ["unknown_serial", "receipt_unknown"])

    # The sale, earlier in time, arrives after the claim: a new version supersedes the first.
    warranty.apply(history[late][1])
    approved = warranty.get(f"/claims/C-{late}")
    assert approved["version"] == 2 and outcome(approved) == ("approved", [])
    assert approved["facts"]["received"] is False
    # Then the receipt: the outcome stays, a fact it used changed, so a new version records it.
    warranty.apply(history[late][0])
    final = warranty.get(f"/claims/C-{late}")
    assert final["version"] == 3 and final["facts"]["received"] is True
    reference = warranty.get(f"/claims/C-{in_order}")
    assert outcome(final) == outcome(reference) == ("approved", []) and reference["version"] == 1
    versions = final["versions"]
    assert versions[0]["event_id"] == first["decision_id"] and versions[-1]["event_id"] == final["decision_id"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert all(v["supersedes"] == p["event_id"] for p, v in itertools.pairwise(versions))
    assert outcome(warranty.get(f"/returns/Q-{late}")) == outcome(warranty.get(f"/returns/Q-{in_order}")) == (
        "accepted", [])

    # A theft report after the claim changes nothing; one before it rejects the claim (a new version).
    warranty.apply(f.theft_reported("acme", late, minutes=6 * DAY, case_number="AFTER"))
    assert warranty.get(f"/warranties/acme/{late}")["theft_cases"]
    assert warranty.get(f"/claims/C-{late}")["version"] == 3
    warranty.apply(f.theft_reported("acme", late, minutes=3 * DAY, case_number="BEFORE"))
    stolen = warranty.get(f"/claims/C-{late}")
    assert stolen["version"] == 4 and outcome(stolen) == ("rejected", ["reported_stolen"])
    assert stolen["facts"]["theft_cases"] == ["metro-pd:BEFORE"]

    # Every version was committed to the outbox with the change that caused it, each superseding the last.
    decisions = published_decisions(warranty, f"C-{late}")
    assert [(d.version, d.status) for d in decisions] == [
        (1, "needs_review"), (2, "approved"), (3, "approved"), (4, "rejected")]
    assert decisions[-1].supersedes == final["decision_id"]
    assert_reproducible(warranty.engine, [("claim", f"C-{late}"), ("return", f"Q-{late}"),
                                          ("claim", f"C-{in_order}")])


def test_a_late_earlier_claim_makes_the_later_one_a_duplicate(warranty):
    sn = f.serial()
    warranty.apply(f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=10, customer_id="C-1"))
    warranty.apply(claim(sn, minutes=20 * DAY, claim_id=f"L-{sn}", issue="No Picture"))
    assert outcome(warranty.get(f"/claims/L-{sn}")) == ("approved", [])
    warranty.apply(claim(sn, minutes=15 * DAY, claim_id=f"E-{sn}", issue="no  picture"))
    assert outcome(warranty.get(f"/claims/E-{sn}")) == ("approved", [])
    later = warranty.get(f"/claims/L-{sn}")
    assert later["version"] == 2 and outcome(later) == ("rejected", ["duplicate_claim"])
    assert later["facts"]["duplicate_of"] == f"E-{sn}"


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



def final_decisions(store, tag, sn):
    ref = f"{tag}-{sn}"
    found = {}
    for label in "ABCDE":
        body = store.get(f"/claims/{label}-{ref}")
        facts = body["facts"]
        found[label] = (body["status"], body["reasons"], (facts["duplicate_of"] or "").split("-")[0],
                        facts["coverage_ends"], facts["owner_customer_id"][:3], facts["theft_cases"],
                        [r.split("-")[0] for r in facts["open_recalls"]], facts["fraud_score"])
    body = store.get(f"/returns/Q-{ref}")
    found["Q"] = (body["status"], body["reasons"], body["facts"]["return_window_ends"])
    return found


def test_final_decisions_do_not_depend_on_arrival_order(warranty):
    """R11: the same history applied in time order and in reverse time order (each event in its own
    batch) ends in the same decisions."""
    forward_sn, reverse_sn = f.serial(), f.serial()
    warranty.apply_each(_story("acme-fwd", forward_sn, "F"))
    warranty.apply_each(reversed(_story("acme-rev", reverse_sn, "V")))
    in_order = final_decisions(warranty, "F", forward_sn)
    assert in_order == final_decisions(warranty, "V", reverse_sn)
    assert {label: decided[:2] for label, decided in in_order.items()} == {
        "A": ("approved", []),
        "B": ("rejected", ["duplicate_claim", "reported_stolen"]),
        "C": ("rejected", ["open_recall"]),  # 3rd claim in 30 days (score 2); the stranger comes later
        "D": ("needs_review", ["ownership_change_pending"]),  # the stranger's registration at day 30
        # D: same issue 11 days before, not rejected
        "E": ("rejected", ["coverage_ended_by_return", "duplicate_claim", "ownership_change_pending"]),
        "Q": ("accepted", []),
    }
    assert warranty.get(f"/claims/A-F-{forward_sn}")["version"] == 1  # in order: decided once
    assert_reproducible(warranty.engine, [("claim", f"{label}-V-{reverse_sn}") for label in "ABCDE"])

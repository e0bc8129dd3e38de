"""Warranty rules as pure functions: every reason, policy versions, boundaries and time zones."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.warranty.domain import (
    ClaimRequest,
    Fact,
    Policy,
    PriorClaim,
    RecallEvent,
    ReturnRequest,
    decide_claim,
    decide_return,
    fold_unit,
    policy_for,
    recall_states,
)
from shared.contracts import RecallIssued

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
M, S = "acme", "SN1"
_ids = itertools.count()


def at(days: float = 0, **kw) -> datetime:
    return T0 + timedelta(days=days, **kw)


def fact(kind: str, time: datetime, **extra) -> Fact:
    return Fact(time=time, source="test", event_id=f"e{next(_ids)}", type=kind, **extra)


def received(days=0, sku="TV-55"):
    return fact("unit.received", at(days), sku=sku, location="warehouse")


def sold(days=1, customer="C-1", receipt="R-1", sku="TV-55", time=None):
    return fact("unit.sold", time or at(days), sku=sku, location="store-1", receipt_id=receipt, customer_id=customer)


def returned(days, receipt="R-1"):
    return fact("unit.returned", at(days), location="store-1", receipt_id=receipt)


def registered(days, customer, trusted=False, channel="web"):
    """A registration; ``trusted``: signed by a key the registry trusts for ownership transfers."""
    return fact("warranty.owner.registered", at(days), customer_id=customer, location=channel,
                signed_by="desk-kid" if trusted else None, trusted_transfer=trusted)


def stolen(days, case="C-9"):
    return fact("theft.reported", at(days), agency="pd", case_number=case)


def recovered(days, case="C-9"):
    return fact("theft.recovered", at(days), agency="pd", case_number=case)


def claim(days, customer="C-1", issue="no picture", claim_id=None, location="store-1", serial=S, time=None):
    time = time or at(days)
    order = (time, "pos", f"c{next(_ids)}")
    return ClaimRequest(claim_id or f"CL-{next(_ids)}", M, serial, customer, issue, location, order)


def prior(c: ClaimRequest, status="approved", serial=S) -> PriorClaim:
    return PriorClaim(c.claim_id, (M, serial), c.customer_id, c.location, c.issue_key, c.order, status)


def policy(days, window=30, sku=None, effective=T0 - timedelta(days=400), policy_id="P", order_day=0):
    return Policy(policy_id, M, sku, days, window, effective, (at(order_day), "maker", policy_id))


def decide(c, facts, policies=(), recalls=(), priors=()):
    return decide_claim(c, facts, policies, recalls, priors)


def ret(days, receipt="R-1", serial=S, time=None):
    order = (time or at(days), "pos", f"r{next(_ids)}")
    return ReturnRequest(f"RQ-{next(_ids)}", M, serial, receipt, "store-1", None, order)


def recall_event(days, recall_id="RC-1", kind="recall.issued", **scope):
    order = (at(days), "maker", f"{recall_id}-{kind}-{days}")
    if kind == "recall.closed":
        return RecallEvent(recall_id, kind, order)
    model = RecallIssued(recall_id=recall_id, manufacturer=M, hazard="fire", remedy="repair", **scope)
    return RecallEvent(recall_id, kind, order, model.covers, "repair")


# Claims: every reason


def test_a_claim_by_the_buyer_within_coverage_is_approved_with_the_facts_it_used():
    decision = decide(claim(100), [received(), sold(1)])
    assert decision.status == "approved" and decision.reasons == ()
    facts = decision.facts
    assert facts["policy_id"] == "default" and facts["coverage_days"] == 365
    assert facts["coverage_ends"] == at(366).isoformat()
    assert facts["sale_receipt_id"] == "R-1" and facts["owner_customer_id"] == "C-1" and facts["owner_via"] == "sale"
    assert facts["fraud_score"] == 0


def test_unknown_serial_goes_to_review_and_a_received_unsold_unit_is_rejected():
    unknown = decide(claim(10), [])
    assert unknown.status == "needs_review" and unknown.reasons == ("unknown_serial",)
    in_stock = decide(claim(10), [received()])
    assert in_stock.status == "rejected" and in_stock.reasons == ("never_sold",)


def test_outside_coverage_shows_the_end_and_the_end_is_exclusive():
    facts = [received(), sold(1)]
    policies = [policy(90)]
    end = at(91)
    inside = decide(claim(0, time=end - timedelta(seconds=1)), facts, policies)
    assert inside.status == "approved"
    outside = decide(claim(0, time=end), facts, policies)
    assert outside.status == "rejected" and outside.reasons == ("outside_coverage",)
    assert outside.facts["coverage_ends"] == end.isoformat()


def test_a_returned_sale_has_no_coverage_but_a_resale_starts_a_new_one():
    facts = [received(), sold(1), returned(5)]
    assert decide(claim(10), facts).reasons == ("coverage_ended_by_return",)
    resold = [*facts, sold(20, customer="C-2", receipt="R-2")]
    decision = decide(claim(380, customer="C-2"), resold)
    assert decision.status == "approved"  # covered from the resale (day 20 + 365), not from day 1
    assert decision.facts["sale_receipt_id"] == "R-2"


def test_duplicate_claim_same_unit_same_issue_within_the_window():
    first = claim(10, issue="No  Picture")
    second = claim(12, issue="no picture")
    decision = decide(second, [received(), sold(1)], priors=[prior(first)])
    assert decision.status == "rejected" and "duplicate_claim" in decision.reasons
    assert decision.facts["duplicate_of"] == first.claim_id
    # another issue, an old claim, or an earlier rejected claim is no duplicate
    assert decide(claim(12, issue="no sound"), [received(), sold(1)], priors=[prior(first)]).status == "approved"
    late = claim(10 + 31)
    assert decide(late, [received(), sold(1)], priors=[prior(first)]).status == "approved"
    assert decide(second, [received(), sold(1)], priors=[prior(first, status="rejected")]).status == "approved"


def test_a_later_claim_is_never_a_duplicate_of_itself_or_of_a_later_one():
    c1, c2 = claim(10), claim(11)
    assert decide(c1, [received(), sold(1)], priors=[prior(c2), prior(c1)]).status == "approved"


def test_claimant_must_be_the_owner_the_buyer_or_who_a_trusted_transfer_names():
    sale = [received(), sold(1, customer="C-1")]
    assert decide(claim(10, customer="C-9"), sale).reasons == ("not_registered_owner",)
    assert decide(claim(10, customer="C-1"), sale).status == "approved"
    transferred = [*sale, registered(3, "C-2", trusted=True)]
    by_buyer = decide(claim(10, customer="C-1"), transferred)
    assert by_buyer.status == "rejected" and by_buyer.reasons == ("not_registered_owner",)
    by_owner = decide(claim(10, customer="C-2"), transferred)
    assert by_owner.status == "approved" and by_owner.facts["owner_via"] == "transfer"
    assert by_owner.facts["owner_customer_id"] == "C-2" and by_owner.facts["pending_owner_customer_ids"] == []


def test_a_sale_without_customer_and_no_registration_needs_review():
    decision = decide(claim(10), [received(), sold(1, customer=None)])
    assert decision.status == "needs_review" and decision.reasons == ("owner_unknown",)


def test_stolen_unit_is_rejected_until_recovered():
    facts = [received(), sold(1), stolen(5)]
    assert decide(claim(10), facts).reasons == ("reported_stolen",)
    assert decide(claim(4), facts).status == "approved"  # the report came after the claim
    assert decide(claim(10), [*facts, recovered(8)]).status == "approved"


def test_open_recall_routes_to_the_remedy_and_closure_or_scope_ends_it():
    facts = [received(), sold(1)]
    recalls = [recall_event(5, skus=["TV-55"])]
    decision = decide(claim(10), facts, recalls=recalls)
    assert decision.status == "rejected" and decision.reasons == ("open_recall",)
    assert decision.facts["open_recalls"] == ["RC-1"] and decision.facts["recall_remedy"] == "repair"
    assert decide(claim(4), facts, recalls=recalls).status == "approved"  # before the recall
    closed = [*recalls, recall_event(8, kind="recall.closed")]
    assert decide(claim(10), facts, recalls=closed).status == "approved"
    narrowed = [*recalls, recall_event(7, kind="recall.amended", skus=["TV-65"])]
    assert decide(claim(10), facts, recalls=narrowed).status == "approved"
    assert decide(claim(10), facts, recalls=[recall_event(5, skus=["RADIO"])]).status == "approved"


def test_every_applicable_reason_is_listed():
    facts = [received(), sold(1, customer="C-1"), returned(3), stolen(4)]
    decision = decide(claim(10, customer="C-9"), facts, recalls=[recall_event(2, skus=["TV-55"])])
    assert decision.reasons == ("coverage_ended_by_return", "not_registered_owner", "reported_stolen", "open_recall")


# Fraud signals


def test_fraud_signals_and_review_threshold():
    facts = [received(), sold(1, customer="C-1"), registered(1.5, "C-7", trusted=True)]
    earlier = [prior(claim(2 + i, customer="C-7", serial=f"X{i}", issue=f"i{i}"), serial=f"X{i}") for i in range(2)]
    decision = decide(claim(3, customer="C-7"), facts, priors=earlier)
    names = {s["name"] for s in decision.facts["fraud_signals"]}
    assert names == {"claim_soon_after_sale", "customer_claim_burst", "serial_seen_at_several_owners"}
    assert decision.facts["fraud_score"] == 4
    assert decision.status == "needs_review" and decision.reasons == ("fraud_signals",)
    # one weak signal alone does not stop a claim
    single = decide(claim(3), [received(), sold(1)])
    assert single.status == "approved" and single.facts["fraud_score"] == 1


def test_location_burst_counts_claims_at_the_store_within_24_hours():
    priors = [prior(claim(10, customer=f"C-{i}", serial=f"Y{i}", time=at(10, hours=i)), serial=f"Y{i}")
              for i in range(4)]
    decision = decide(claim(0, time=at(10, hours=5), customer="C-1"), [received(), sold(-30)], priors=priors)
    assert [s["name"] for s in decision.facts["fraud_signals"]] == ["location_claim_burst"]
    assert decision.facts["fraud_signals"][0]["value"] == 5


# Policies


def test_policy_versions_by_effective_date_and_specificity():
    p_old = policy(365, effective=at(-100), policy_id="old")
    p_new = policy(730, effective=at(50), policy_id="new")
    p_sku = policy(90, sku="TV-55", effective=at(0), policy_id="sku")
    assert policy_for([p_old, p_new], M, "TV-55", at(49)).policy_id == "old"
    assert policy_for([p_old, p_new], M, "TV-55", at(50)).policy_id == "new"  # effective from the instant
    assert policy_for([p_old, p_new, p_sku], M, "TV-55", at(60)).policy_id == "sku"  # sku beats manufacturer-wide
    assert policy_for([p_old, p_new, p_sku], M, "RADIO", at(60)).policy_id == "new"
    assert policy_for([p_sku], M, "TV-55", at(-1)).policy_id == "default"
    assert policy_for([policy(10, policy_id="x").__class__("x", "other", None, 1, 1, at(-9))], M, None,
                      at(0)).policy_id == "default"
    # the same version set again later replaces the earlier one
    again = policy(400, effective=at(-100), policy_id="old", order_day=5)
    assert policy_for([p_old, again], M, None, at(0)).coverage_days == 400


def test_a_sale_keeps_the_policy_in_force_when_it_happened():
    policies = [policy(365, effective=at(-100)), policy(30, effective=at(5))]
    assert decide(claim(100), [received(), sold(1)], policies).status == "approved"  # 365 days from day 1
    assert decide(claim(100), [received(), sold(6)], policies).reasons == ("outside_coverage",)


def test_boundaries_are_instants_whatever_the_time_zone():
    # Sold at 23:30 in New York on Jan 31 = 04:30 UTC Feb 1; a 1-day policy ends 04:30 UTC Feb 2.
    ny = timezone(timedelta(hours=-5))
    sale_time = datetime(2026, 1, 31, 23, 30, tzinfo=ny)
    facts = [received(-5), sold(time=sale_time.astimezone(UTC))]
    policies = [policy(1)]
    tokyo = timezone(timedelta(hours=9))
    just_before = datetime(2026, 2, 2, 13, 29, 59, tzinfo=tokyo).astimezone(UTC)  # 04:29:59 UTC
    assert decide(claim(0, time=just_before), facts, policies).status == "approved"
    decision = decide(claim(0, time=just_before + timedelta(seconds=1)), facts, policies)
    assert decision.reasons == ("outside_coverage",)
    assert decision.facts["coverage_ends"] == "2026-02-02T04:30:00+00:00"


# Returns


def test_a_return_on_its_receipt_within_the_window_is_accepted():
    sale = sold(1)
    decision = decide_return(ret(10), [received(), sale], [], [(S, sale)])
    assert decision.status == "accepted" and decision.reasons == ()
    assert decision.facts["return_window_ends"] == at(31).isoformat() and decision.facts["receipt_serials"] == [S]


def test_a_swapped_unit_is_rejected():
    # the receipt sold SN2; the customer brings SN1 (bought elsewhere, or a broken unit from stock)
    other_sale = sold(1, receipt="R-1")
    mine = [received(), sold(0, receipt="R-OLD")]
    decision = decide_return(ret(3, receipt="R-1"), mine, [], [("SN2", other_sale)])
    assert decision.status == "rejected" and decision.reasons == ("serial_not_on_receipt",)
    assert decision.facts["receipt_serials"] == ["SN2"] and decision.facts["sale_receipt_id"] == "R-OLD"
    in_stock = decide_return(ret(3, receipt="R-1"), [received()], [], [("SN2", other_sale)])
    assert in_stock.reasons == ("never_sold", "serial_not_on_receipt")


def test_unknown_receipt_and_unknown_serial_need_review():
    decision = decide_return(ret(3, receipt="R-X"), [], [], [])
    assert decision.status == "needs_review" and decision.reasons == ("unknown_serial", "receipt_unknown")


def test_return_window_already_returned_and_stolen():
    sale = sold(1)
    facts = [received(), sale]
    policies = [policy(365, window=14)]
    assert decide_return(ret(15, time=at(15) - timedelta(seconds=1)), facts, policies, [(S, sale)]).status == "accepted"
    late = decide_return(ret(15), facts, policies, [(S, sale)])
    assert late.reasons == ("outside_return_window",) and late.facts["return_window_ends"] == at(15).isoformat()
    assert decide_return(ret(10), [*facts, returned(5)], policies, [(S, sale)]).reasons == ("already_returned",)
    assert decide_return(ret(10), [*facts, stolen(2)], policies, [(S, sale)]).reasons == ("reported_stolen",)


def test_zero_day_return_window_accepts_nothing():
    sale = sold(1)
    decision = decide_return(ret(1, time=at(1)), [received(), sale], [policy(365, window=0)], [(S, sale)])
    assert decision.reasons == ("outside_return_window",)


# Folding


def test_fold_is_independent_of_arrival_order_and_marks_registrations_not_sold_here():
    facts = [received(), registered(0.5, "C-0"), sold(1, customer="C-1"), registered(3, "C-2"), stolen(4),
             recovered(5)]
    views = [fold_unit(order) for order in itertools.permutations(facts)]
    assert all(v == views[0] for v in views)
    view = views[0]
    # C-0 registered a unit never sold here (owner then); the sale made C-1 the owner; C-2's unsigned
    # registration naming someone else is pending, not an owner.
    assert view.owner == "C-1" and view.owners_seen == ["C-0", "C-1", "C-2"]
    assert [(r.customer_id, r.sold_here, r.outcome) for r in view.registrations] == [
        ("C-0", False, "owner"), ("C-2", True, "pending")]
    assert view.pending_customers == ["C-2"]
    assert view.theft_cases == ()


def test_a_new_sale_makes_its_customer_the_owner():
    resale = sold(4, customer="C-3", receipt="R-2")
    view = fold_unit([received(), sold(1, customer="C-1"), registered(2, "C-2"), returned(3), resale])
    assert view.owner == "C-3" and view.owner_via == "sale" and view.out_with_customer
    # C-2's pending change was about C-1's ownership: the resale closes it.
    assert view.pending == [] and view.registrations[0].outcome == "closed"
    assert view.registrations[0].closed_by == resale.ref
    assert [(o.customer_id, o.via) for o in view.owner_history] == [("C-1", "sale"), ("C-3", "sale")]


def test_recall_amendment_replaces_the_scope_and_unknown_fact_type_is_refused():
    states = recall_states([recall_event(3, kind="recall.amended", skus=["TV-55"]),
                            recall_event(2, skus=["RADIO"])])
    assert states["RC-1"].covers(M, S, "TV-55") and not states["RC-1"].covers(M, S, "RADIO")
    assert states["RC-1"].remedy == "repair"
    only_amended = recall_states([recall_event(3, kind="recall.amended", skus=["TV-55"])])
    assert only_amended["RC-1"].open and only_amended["RC-1"].remedy is None
    with pytest.raises(ValueError, match="no rule"):
        fold_unit([fact("unit.melted", at(0))])


# Owners (docs/warranty.md, "Owners"): the buyer, else the first registration; a registration naming
# someone else is pending unless a key trusted for ownership transfers signed it.


def test_a_strangers_registration_of_a_sold_unit_is_pending_and_their_claim_goes_to_review():
    """The issue-10 attack: a stranger registered a sold unit, then claimed; it was approved."""
    facts = [received(), sold(1, customer="C-1"), registered(2, "C-X")]
    view = fold_unit(facts)
    assert (view.owner, view.owner_via, view.pending_customers) == ("C-1", "sale", ["C-X"])
    stranger = decide(claim(10, customer="C-X"), facts)
    assert stranger.status == "needs_review" and stranger.reasons == ("ownership_change_pending",)
    assert stranger.facts["owner_customer_id"] == "C-1" and stranger.facts["pending_owner_customer_ids"] == ["C-X"]
    # The buyer too: who owns the unit is in question until a person (or a trusted registration) settles it.
    assert decide(claim(10, customer="C-1"), facts).reasons == ("ownership_change_pending",)
    # A third customer is neither: rejected, and the pending change is listed for the desk.
    third = decide(claim(10, customer="C-9"), facts)
    assert third.status == "rejected" and third.reasons == ("not_registered_owner", "ownership_change_pending")


def test_the_first_registration_is_the_owner_when_the_sale_named_no_customer():
    facts = [received(), sold(1, customer=None), registered(2, "C-2"), registered(3, "C-3")]
    view = fold_unit(facts)
    assert (view.owner, view.owner_via) == ("C-2", "registration")
    assert [r.outcome for r in view.registrations] == ["owner", "pending"]
    assert decide(claim(2.5, customer="C-2"), facts).status == "approved"  # before C-3's registration
    assert decide(claim(10, customer="C-2"), facts).reasons == ("ownership_change_pending",)
    assert decide(claim(10, customer="C-3"), facts).reasons == ("ownership_change_pending",)


def test_a_registration_naming_the_owner_changes_nothing():
    plain = [received(), sold(1, customer="C-1")]
    again = [*plain, registered(2, "C-1")]
    view = fold_unit(again)
    assert (view.owner, view.owner_via, view.owner_since) == ("C-1", "sale", at(1))
    assert [r.outcome for r in view.registrations] == ["no_change"] and view.pending == []
    assert decide(claim(10), again).outcome == decide(claim(10), plain).outcome == ("approved", ())


def test_a_trusted_transfer_replaces_the_owner_and_keeps_the_history():
    facts = [received(), sold(1, customer="C-1"), registered(2, "C-2", trusted=True, channel="store-desk"),
             registered(4, "C-3", trusted=True)]
    view = fold_unit(facts)
    assert [(o.customer_id, o.via, o.since) for o in view.owner_history] == [
        ("C-1", "sale", at(1)), ("C-2", "transfer", at(2)), ("C-3", "transfer", at(4))]
    assert [(r.outcome, r.channel, r.signed_by) for r in view.registrations] == [
        ("transfer", "store-desk", "desk-kid"), ("transfer", "web", "desk-kid")]
    assert decide(claim(3, customer="C-2"), facts).status == "approved"  # C-2 owned it then
    assert decide(claim(5, customer="C-2"), facts).reasons == ("not_registered_owner",)
    assert decide(claim(5, customer="C-3"), facts).status == "approved"


def test_a_trusted_registration_settles_a_pending_change_either_way():
    pending = [received(), sold(1, customer="C-1"), registered(2, "C-X")]
    # The desk confirms the buyer: the change is closed, the buyer's later claims are approved again.
    confirmed = [*pending, registered(3, "C-1", trusted=True)]
    view = fold_unit(confirmed)
    assert view.owner == "C-1" and view.pending == []
    assert [(r.outcome, r.closed_by) for r in view.registrations] == [("closed", confirmed[-1].ref),
                                                                       ("confirmed", None)]
    assert decide(claim(10, customer="C-1"), confirmed).status == "approved"
    assert decide(claim(10, customer="C-X"), confirmed).reasons == ("not_registered_owner",)
    # A claim made while it was pending stays with a person: facts after a claim never change it.
    assert decide(claim(2.5, customer="C-1"), confirmed).reasons == ("ownership_change_pending",)
    # Or the desk transfers to the customer who registered (a gift, say).
    accepted = [*pending, registered(3, "C-X", trusted=True)]
    view = fold_unit(accepted)
    assert (view.owner, view.owner_via, view.pending) == ("C-X", "transfer", [])
    assert decide(claim(10, customer="C-X"), accepted).status == "approved"


def test_recall_notices_go_to_the_owner_on_record_not_to_a_pending_registrant():
    from services.warranty.domain import recall_notice_owner

    assert recall_notice_owner(fold_unit([sold(1, customer="C-1"), registered(2, "C-X")])) == "C-1"
    assert recall_notice_owner(fold_unit([sold(1, customer="C-1"), registered(2, "C-X", trusted=True)])) == "C-X"


OWNERSHIP_CASES = {
    # name: (facts, (claim day, claimant), expected (status, reasons), expected owner, expected pending)
    "stranger registers after the sale, claims": (
        lambda: [sold(1, customer="C-1"), registered(2, "C-X")], (3, "C-X"),
        ("needs_review", ("ownership_change_pending",)), "C-1", ["C-X"]),
    "trusted transfer, new owner claims": (
        lambda: [sold(1, customer="C-1"), registered(2, "C-X", trusted=True)], (3, "C-X"),
        ("approved", ()), "C-X", []),
    "sale without customer, first registration owns, second pends": (
        lambda: [sold(1, customer=None), registered(2, "C-2"), registered(2.5, "C-3")], (3, "C-2"),
        ("needs_review", ("ownership_change_pending",)), "C-2", ["C-3"]),
    "registration after the claim does not count": (
        lambda: [sold(1, customer="C-1"), registered(3, "C-X")], (2, "C-X"),
        ("rejected", ("not_registered_owner",)), "C-1", ["C-X"]),
    "registration before the sale belongs to the earlier ownership": (
        lambda: [registered(0.5, "C-0"), sold(1, customer="C-1"), registered(1.5, "C-1")], (3, "C-1"),
        ("approved", ()), "C-1", []),
    "resale closes the pending change": (
        lambda: [sold(1, customer="C-1"), registered(2, "C-X"), returned(3), sold(4, customer="C-2", receipt="R-2")],
        (5, "C-2"), ("approved", ()), "C-2", []),
}


@pytest.mark.parametrize("case", sorted(OWNERSHIP_CASES))
def test_ownership_does_not_depend_on_arrival_order(case):
    """Every permutation of a case's facts (sales, registrations, returns, the receipt) folds to the same
    owner and pending changes, and gives the claim the same decision, as time order does."""
    make_facts, (claim_day, claimant), expected, owner, pending = OWNERSHIP_CASES[case]
    facts = [received(0), *make_facts()]
    request = claim(claim_day, customer=claimant)
    results = set()
    for order in itertools.permutations(facts):
        view = fold_unit(order)
        decision = decide(request, order)
        results.add((view.owner, tuple(view.pending_customers), tuple(view.registrations), tuple(view.owner_history),
                     decision.outcome, repr(decision.facts)))
    assert len(results) == 1, results
    [(got_owner, got_pending, _, _, outcome, _)] = results
    assert (outcome, got_owner, list(got_pending)) == (expected, owner, pending)

"""Warranty rules, pure: coverage from the sale, and decisions on claims and return requests.

Everything here is a function of stored facts, so a decision can be reproduced:

- a unit's facts (receipts, sales, returns, owner registrations, stolen reports and recoveries) are
  folded in event-time order (ties broken by source and id), and only facts up to the request's own
  event time count (``as_of``): a decision says what was true when the customer asked;
- policies are versions by ``effective_from``: a sale is covered by the most specific policy (sku over
  manufacturer-wide) in force at the sale's time, else ``DEFAULT_POLICY``;
- a recall counts for a request when it was issued (and not closed) before the request, with the scope
  of its latest amendment before the request.

Arrival order does not matter: the service re-decides a request whenever a fact that happened before
it arrives later, and emits a new decision version when the outcome or a fact it used changes.

Time boundaries are instants in UTC, never local dates: coverage runs from the sale's instant for
``coverage_days`` x 24 h, end exclusive (a claim at exactly ``coverage_ends`` is outside); the same
for the return window.

Owners (docs/warranty.md, "Owners"), folded in time order like every other fact:

- a sale makes its customer the owner (none if it named no customer) and closes the ownership
  changes pending from before it: they were about the previous ownership;
- a registration when nobody is owner makes its customer the owner (the first registration of a
  unit sold without a customer, or of a unit never sold here);
- a registration naming the owner changes nothing; signed by a key trusted for ownership transfers
  it also closes the pending changes (the desk confirmed who owns it);
- a registration naming someone else replaces the owner only when signed by a trusted key
  (``Fact.trusted_transfer``); otherwise it is a pending ownership change, and claims while one is
  pending go to a person (``ownership_change_pending``) instead of being approved.

Anyone who can publish a registration could otherwise take over a sold unit and have their claim
approved; the buyer (or a trusted desk) is who the retailer actually knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

OrderKey = tuple[datetime, str, str]

DEFAULT_COVERAGE_DAYS = 365
DEFAULT_RETURN_WINDOW_DAYS = 30
DUPLICATE_WINDOW = timedelta(days=30)

# Fraud signals (docs/warranty.md): name -> (weight, threshold, window)
SOON_AFTER_SALE = timedelta(days=7)
CUSTOMER_BURST_WINDOW, CUSTOMER_BURST_COUNT = timedelta(days=30), 3
LOCATION_BURST_WINDOW, LOCATION_BURST_COUNT = timedelta(hours=24), 5
FRAUD_REVIEW_SCORE = 3
FRAUD_WEIGHTS = {
    "claim_soon_after_sale": 1,
    "customer_claim_burst": 2,
    "location_claim_burst": 1,
    "serial_seen_at_several_owners": 1,
}

# A rejecting reason decides the claim; otherwise a review reason sends it to a person.
CLAIM_REJECTING = ("never_sold", "outside_coverage", "coverage_ended_by_return", "duplicate_claim",
                   "not_registered_owner", "reported_stolen", "open_recall")
CLAIM_REVIEW = ("unknown_serial", "owner_unknown", "ownership_change_pending", "fraud_signals")
RETURN_REJECTING = ("never_sold", "serial_not_on_receipt", "outside_return_window", "already_returned",
                    "reported_stolen")
RETURN_REVIEW = ("unknown_serial", "receipt_unknown")


@dataclass(frozen=True, slots=True)
class Fact:
    """One event as it concerns one unit. A bulk receipt or a range theft report is one Fact
    shared by all its units."""

    time: datetime
    source: str
    event_id: str
    type: str  # unit.received, unit.sold, unit.returned, warranty.owner.registered, theft.reported, theft.recovered
    sku: str | None = None
    location: str | None = None
    receipt_id: str | None = None
    customer_id: str | None = None
    agency: str | None = None
    case_number: str | None = None
    signed_by: str | None = None  # kid of the key whose signature the consumer verified
    # A registration signed by a key the registry trusts for ownership transfers: it may replace the owner.
    trusted_transfer: bool = False
    terminal_id: str | None = None  # a sale's till or checkout (warranty_0004): the sell-through's channel

    @property
    def order(self) -> OrderKey:
        return (self.time, self.source, self.event_id)

    @property
    def ref(self) -> str:
        return f"{self.source}/{self.event_id}"

    @property
    def case(self) -> str:
        return f"{self.agency}:{self.case_number}"


# What a registration did, as the fold saw it at its time (Registration.outcome).
OWNER = "owner"  # nobody was owner: its customer became the owner
TRANSFER = "transfer"  # trusted, named someone else: replaced the owner
CONFIRMED = "confirmed"  # trusted, named the owner: settled the pending changes
NO_CHANGE = "no_change"  # named the owner: nothing to do
PENDING = "pending"  # named someone else, not trusted: waits for a person or a trusted registration
CLOSED = "closed"  # was pending; a later sale or trusted registration settled ownership (``closed_by``)


@dataclass(frozen=True, slots=True)
class Registration:
    customer_id: str
    time: datetime
    sold_here: bool  # a sale of the unit happened before the registration
    outcome: str = OWNER
    ref: str = ""  # "source/id" of the registration
    channel: str | None = None
    signed_by: str | None = None
    closed_by: str | None = None  # for a pending change that was closed: the fact that closed it


@dataclass(frozen=True, slots=True)
class Ownership:
    """One owner on record and how they became it; ``UnitView.owner_history`` lists them in order."""

    customer_id: str
    since: datetime
    via: str  # sale | registration | transfer
    ref: str


@dataclass(slots=True)
class UnitView:
    """A unit as the facts up to ``as_of`` show it."""

    received: Fact | None = None  # the first receipt
    sku: str | None = None
    sale: Fact | None = None  # the latest sale
    returned: Fact | None = None  # a return after the latest sale
    owner: str | None = None
    owner_since: datetime | None = None
    owner_via: str | None = None  # registration | sale | transfer
    owner_history: list[Ownership] = field(default_factory=list)
    owners_seen: list[str] = field(default_factory=list)  # distinct customers, first seen first
    registrations: list[Registration] = field(default_factory=list)
    theft_cases: tuple[str, ...] = ()

    @property
    def pending(self) -> list[Registration]:
        """Ownership changes waiting for review, oldest first."""
        return [r for r in self.registrations if r.outcome == PENDING]

    @property
    def pending_customers(self) -> list[str]:
        return list(dict.fromkeys(r.customer_id for r in self.pending))

    @property
    def known(self) -> bool:
        return self.received is not None or self.sale is not None

    @property
    def out_with_customer(self) -> bool:
        return self.sale is not None and self.returned is None


def _see_owner(view: UnitView, customer: str | None) -> None:
    if customer and customer not in view.owners_seen:
        view.owners_seen.append(customer)


def _set_owner(view: UnitView, customer: str | None, fact: Fact, via: str) -> None:
    view.owner, view.owner_since = customer, fact.time
    view.owner_via = via if customer else None
    if customer:
        view.owner_history.append(Ownership(customer, fact.time, via, fact.ref))


def _close_pending(view: UnitView, fact: Fact) -> None:
    view.registrations = [replace(r, outcome=CLOSED, closed_by=fact.ref) if r.outcome == PENDING else r
                          for r in view.registrations]


def _register(view: UnitView, fact: Fact) -> None:
    customer = fact.customer_id or ""
    if view.owner is None:
        outcome = OWNER
        _set_owner(view, customer, fact, "registration")
    elif customer == view.owner:
        outcome = CONFIRMED if fact.trusted_transfer else NO_CHANGE
        if fact.trusted_transfer:
            _close_pending(view, fact)
    elif fact.trusted_transfer:
        outcome = TRANSFER
        _close_pending(view, fact)
        _set_owner(view, customer, fact, "transfer")
    else:
        outcome = PENDING
    view.registrations.append(Registration(customer, fact.time, view.sale is not None, outcome, fact.ref,
                                           fact.location, fact.signed_by))
    _see_owner(view, customer)


def fold_unit(facts: Iterable[Fact], as_of: datetime | None = None) -> UnitView:
    view = UnitView()
    for fact in sorted(facts, key=lambda f: f.order):
        if as_of is not None and fact.time > as_of:
            break
        kind = fact.type
        if kind == "unit.received":
            view.received = view.received or fact
            view.sku = view.sku or fact.sku
        elif kind == "unit.sold":
            view.sale, view.returned = fact, None
            view.sku = fact.sku or view.sku
            # A new sale makes its customer the owner: earlier registrations, and the changes pending
            # from them, belonged to the previous ownership.
            _close_pending(view, fact)
            _set_owner(view, fact.customer_id, fact, "sale")
            _see_owner(view, fact.customer_id)
        elif kind == "unit.returned":
            if view.sale is not None and view.returned is None:
                view.returned = fact
        elif kind == "warranty.owner.registered":
            _register(view, fact)
        elif kind == "theft.reported":
            if fact.case not in view.theft_cases:
                view.theft_cases = (*view.theft_cases, fact.case)
        elif kind == "theft.recovered":
            view.theft_cases = tuple(c for c in view.theft_cases if c != fact.case)
        else:
            raise ValueError(f"warranty has no rule for {kind!r}")
    return view


SOLD, RETURNED, REGISTERED = "unit.sold", "unit.returned", "warranty.owner.registered"


@dataclass(frozen=True, slots=True)
class SaleOwnership:
    """For a sale or a return (the sell-through report): the sale it is about (itself, or the sale
    the return ended; None for a return of a unit never sold here) and how an owner came on record
    for the ownership that sale began (``owner_via``: sale, registration or transfer; None: nobody)."""

    sale: Fact | None
    owner_via: str | None

    @property
    def owner_registered(self) -> bool:
        return self.owner_via is not None


def sale_ownerships(facts: Iterable[Fact]) -> dict[OrderKey, SaleOwnership]:
    """Every sale and return among a unit's facts, by its order key, with its SaleOwnership.

    An ownership runs from a sale to the next sale (a return does not end it: the owner stays on
    record, as ``fold_unit`` keeps them). It is folded as the facts now stand, so a registration that
    arrives late, or that happened after the period a report asks about, counts: the report says
    whether the manufacturer can reach an owner today. Folding each ownership alone gives what
    ``fold_unit`` gives, since a sale sets the owner afresh."""
    ordered = sorted((f for f in facts if f.type in (SOLD, RETURNED, REGISTERED)), key=lambda f: f.order)
    found: dict[OrderKey, SaleOwnership] = {}
    segment: list[Fact] = []

    def close() -> None:
        sale = segment[0] if segment and segment[0].type == SOLD else None
        if sale is None:
            via = None
        elif any(f.type == REGISTERED for f in segment):
            via = fold_unit(segment).owner_via
        else:  # no registration: the buyer, if the sale named one (what fold_unit says, without folding)
            via = "sale" if sale.customer_id else None
        for fact in segment:
            if fact.type in (SOLD, RETURNED):
                found[fact.order] = SaleOwnership(sale, via)

    for fact in ordered:
        if fact.type == SOLD:
            close()
            segment = []
        segment.append(fact)
    close()
    return found


@dataclass(frozen=True, slots=True)
class Policy:
    policy_id: str
    manufacturer: str
    sku: str | None
    coverage_days: int
    return_window_days: int
    effective_from: datetime
    order: OrderKey = (datetime.min.replace(tzinfo=UTC), "", "")


def default_policy(manufacturer: str) -> Policy:
    return Policy("default", manufacturer, None, DEFAULT_COVERAGE_DAYS, DEFAULT_RETURN_WINDOW_DAYS,
                  datetime.min.replace(tzinfo=UTC))


def policy_for(policies: Iterable[Policy], manufacturer: str, sku: str | None, at: datetime) -> Policy:
    """The most specific policy in force at ``at``: a sku policy beats a manufacturer-wide one; among
    equals the latest ``effective_from`` wins, then the latest event (a re-set version replaces)."""
    in_force = [p for p in policies if p.manufacturer == manufacturer and p.effective_from <= at
                and (p.sku is None or p.sku == sku)]
    if not in_force:
        return default_policy(manufacturer)
    return max(in_force, key=lambda p: (p.sku is not None, p.effective_from, p.order))


@dataclass(frozen=True, slots=True)
class RecallEvent:
    """recall.issued / recall.amended / recall.closed; ``covers`` is the scope's own predicate
    (the contract's RecallScope.covers), None for a closure."""

    recall_id: str
    type: str
    order: OrderKey
    covers: Any = None  # Callable[[str, str, str | None], bool]
    remedy: str | None = None

    @property
    def time(self) -> datetime:
        return self.order[0]


@dataclass(frozen=True, slots=True)
class RecallState:
    recall_id: str
    open: bool
    covers: Any
    remedy: str | None


def recall_states(events: Iterable[RecallEvent], as_of: datetime | None = None) -> dict[str, RecallState]:
    """Each recall as its events up to ``as_of`` leave it: amendments replace the scope."""
    states: dict[str, RecallState] = {}
    for ev in sorted(events, key=lambda e: e.order):
        if as_of is not None and ev.time > as_of:
            break
        previous = states.get(ev.recall_id)
        if ev.type == "recall.issued":
            states[ev.recall_id] = RecallState(ev.recall_id, True, ev.covers, ev.remedy)
        elif ev.type == "recall.amended":
            if previous is None:  # an amendment without its issue: the scope is known, the remedy not yet
                states[ev.recall_id] = RecallState(ev.recall_id, True, ev.covers, None)
            else:
                states[ev.recall_id] = RecallState(ev.recall_id, previous.open, ev.covers, previous.remedy)
        elif ev.type == "recall.closed":
            if previous is not None:
                states[ev.recall_id] = RecallState(ev.recall_id, False, previous.covers, previous.remedy)
            else:
                states[ev.recall_id] = RecallState(ev.recall_id, False, None, None)
    return states


def recall_notice_due(recall_events: Iterable[RecallEvent], facts: Iterable[Fact], manufacturer: str,
                      serial: str, sku: str | None) -> datetime | None:
    """When a recall's owner notice became due for a unit, or None: the first moment, by event time,
    the recall was open, one of its scopes covered the unit, and the unit was out with a customer
    (sold, not returned). Decided from all the facts, never from the order they arrived in: one
    process or several, a late sale or a late amendment, the same units are notified."""
    timeline = sorted([(e.order, e) for e in recall_events] + [(f.order, f) for f in facts], key=lambda item: item[0])
    open_, covers, out = False, None, False
    for order, item in timeline:
        if isinstance(item, RecallEvent):
            if item.type == "recall.closed":
                open_ = False
            else:  # the issue, or an amendment (without its issue: the scope is known already)
                open_, covers = (True, item.covers) if item.type == "recall.issued" or covers is None else (open_, item.covers)
        elif item.type == "unit.sold":
            out = True
        elif item.type == "unit.returned":
            out = False
        if open_ and out and covers is not None and covers(manufacturer, serial, sku):
            return order[0]
    return None


def owner_to_notify(facts: list[Fact], due: datetime) -> str | None:
    """Who a recall notice due at ``due`` goes to: the owner then, or else the first one known after
    (a registration months later still reaches the person holding the unit)."""
    owner = fold_unit(facts, as_of=due).owner
    if owner:
        return owner
    return next((o.customer_id for o in fold_unit(facts).owner_history if o.since > due and o.customer_id), None)


def open_recalls_covering(states: dict[str, RecallState], manufacturer: str, serial: str,
                          sku: str | None) -> list[RecallState]:
    covering = (s for s in states.values() if s.open and s.covers is not None and s.covers(manufacturer, serial, sku))
    return sorted(covering, key=lambda s: s.recall_id)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    claim_id: str
    manufacturer: str
    serial: str
    customer_id: str
    issue: str
    location: str | None
    order: OrderKey

    @property
    def time(self) -> datetime:
        return self.order[0]

    @property
    def issue_key(self) -> str:
        return issue_key(self.issue)


def issue_key(issue: str) -> str:
    """Two wordings of one issue are the same issue: case and spacing do not count."""
    return " ".join(issue.casefold().split())


@dataclass(frozen=True, slots=True)
class PriorClaim:
    """An earlier claim as the decision of a later one sees it."""

    claim_id: str
    serial_key: tuple[str, str]
    customer_id: str
    location: str | None
    issue_key: str
    order: OrderKey
    status: str | None  # its current decision; None while undecided


@dataclass(frozen=True, slots=True)
class ReturnRequest:
    request_id: str
    manufacturer: str
    serial: str
    receipt_id: str
    location: str
    customer_id: str | None
    order: OrderKey

    @property
    def time(self) -> datetime:
        return self.order[0]


@dataclass(frozen=True, slots=True)
class Decision:
    status: str
    reasons: tuple[str, ...]
    facts: dict[str, Any]  # DecisionFacts fields, JSON-ready

    @property
    def outcome(self) -> tuple[str, tuple[str, ...]]:
        return (self.status, self.reasons)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _status(reasons: Sequence[str], rejecting: Sequence[str], review: Sequence[str], ok: str) -> str:
    if any(r in rejecting for r in reasons):
        return "rejected"
    if any(r in review for r in reasons):
        return "needs_review"
    return ok


def _base_facts(view: UnitView, as_of: datetime, policy: Policy | None) -> dict[str, Any]:
    facts: dict[str, Any] = {"as_of": _iso(as_of), "received": view.received is not None, "sku": view.sku}
    if view.sale:
        facts.update(sale_receipt_id=view.sale.receipt_id, sale_event=view.sale.ref, sold_at=_iso(view.sale.time),
                     sold_location=view.sale.location, sale_customer_id=view.sale.customer_id)
    if view.returned:
        facts["returned_at"] = _iso(view.returned.time)
    if policy and view.sale:
        facts.update(policy_id=policy.policy_id, coverage_days=policy.coverage_days,
                     return_window_days=policy.return_window_days,
                     coverage_ends=_iso(view.sale.time + timedelta(days=policy.coverage_days)),
                     return_window_ends=_iso(view.sale.time + timedelta(days=policy.return_window_days)))
    if view.owner:
        facts.update(owner_customer_id=view.owner, owner_via=view.owner_via)
    facts["pending_owner_customer_ids"] = view.pending_customers
    facts["theft_cases"] = list(view.theft_cases)
    return facts


def fraud_signals(claim: ClaimRequest, view: UnitView, prior: Sequence[PriorClaim]) -> list[dict[str, Any]]:
    """Signals from the facts up to the claim (each documented in docs/warranty.md). ``prior`` holds
    claims earlier than this one (any unit)."""
    signals = []
    if view.sale is not None and claim.time - view.sale.time < SOON_AFTER_SALE:
        days = round((claim.time - view.sale.time).total_seconds() / 86400, 2)
        signals.append(("claim_soon_after_sale", days, f"claimed {days} days after the sale"))
    by_customer = 1 + sum(1 for p in prior if p.customer_id == claim.customer_id
                          and claim.time - p.order[0] <= CUSTOMER_BURST_WINDOW)
    if by_customer >= CUSTOMER_BURST_COUNT:
        signals.append(("customer_claim_burst", by_customer,
                        f"{by_customer} claims by {claim.customer_id} within {CUSTOMER_BURST_WINDOW.days} days"))
    if claim.location:
        at_location = 1 + sum(1 for p in prior if p.location == claim.location
                              and claim.time - p.order[0] <= LOCATION_BURST_WINDOW)
        if at_location >= LOCATION_BURST_COUNT:
            signals.append(("location_claim_burst", at_location,
                            f"{at_location} claims at {claim.location} within 24 hours"))
    if len(view.owners_seen) >= 2:
        signals.append(("serial_seen_at_several_owners", len(view.owners_seen),
                        f"owners on record: {', '.join(view.owners_seen)}"))
    return [{"name": name, "weight": FRAUD_WEIGHTS[name], "value": value, "detail": detail}
            for name, value, detail in signals]


def decide_claim(claim: ClaimRequest, facts: Iterable[Fact], policies: Iterable[Policy],
                 recalls: Iterable[RecallEvent], prior: Sequence[PriorClaim]) -> Decision:
    """``facts``: the unit's facts (any time; only those up to the claim count). ``prior``: claims
    earlier than this one, of this unit and of this customer or location (for fraud signals)."""
    prior = [p for p in prior if p.order < claim.order]
    view = fold_unit(facts, claim.time)
    policy = policy_for(policies, claim.manufacturer, view.sku, view.sale.time) if view.sale else None
    out = _base_facts(view, claim.time, policy)
    reasons: list[str] = []

    if not view.known:
        reasons.append("unknown_serial")
    elif view.sale is None:
        reasons.append("never_sold")
    elif view.returned is not None:
        reasons.append("coverage_ended_by_return")
    elif policy is not None and claim.time >= view.sale.time + timedelta(days=policy.coverage_days):
        reasons.append("outside_coverage")

    unit = (claim.manufacturer, claim.serial)
    duplicates = [p for p in prior if p.serial_key == unit and p.issue_key == claim.issue_key
                  and claim.time - p.order[0] <= DUPLICATE_WINDOW and p.status != "rejected"]
    if duplicates:
        reasons.append("duplicate_claim")
        out["duplicate_of"] = max(duplicates, key=lambda p: p.order).claim_id

    pending = view.pending_customers
    if view.owner is None:
        if view.sale is not None:  # unknown units already go to review
            reasons.append("owner_unknown")
    elif view.owner != claim.customer_id and claim.customer_id not in pending:
        reasons.append("not_registered_owner")
    if pending:
        # Who owns the unit is in question: neither the owner on record nor the customer who registered
        # is approved without a person, and a stranger's registration never approves a stranger's claim.
        reasons.append("ownership_change_pending")

    if view.theft_cases:
        reasons.append("reported_stolen")

    covering = open_recalls_covering(recall_states(recalls, claim.time), claim.manufacturer, claim.serial, view.sku)
    out["open_recalls"] = [r.recall_id for r in covering]
    if covering:
        reasons.append("open_recall")
        out["recall_remedy"] = covering[0].remedy

    signals = fraud_signals(claim, view, prior)
    score = sum(s["weight"] for s in signals)
    out.update(fraud_score=score, fraud_signals=signals)
    if score >= FRAUD_REVIEW_SCORE:
        reasons.append("fraud_signals")

    return Decision(_status(reasons, CLAIM_REJECTING, CLAIM_REVIEW, "approved"), tuple(reasons), out)


def decide_return(request: ReturnRequest, facts: Iterable[Fact], policies: Iterable[Policy],
                  receipt_sales: Iterable[tuple[str, Fact]]) -> Decision:
    """``receipt_sales``: (serial, sale fact) of this manufacturer's sales on ``request.receipt_id``
    (any time; only those up to the request count)."""
    view = fold_unit(facts, request.time)
    policy = policy_for(policies, request.manufacturer, view.sku, view.sale.time) if view.sale else None
    out = _base_facts(view, request.time, policy)
    on_receipt = sorted({serial for serial, sale in receipt_sales
                         if sale.receipt_id == request.receipt_id and sale.time <= request.time})
    out["receipt_serials"] = on_receipt
    reasons: list[str] = []

    if not view.known:
        reasons.append("unknown_serial")
    elif view.sale is None:
        reasons.append("never_sold")
    if view.sale is None or view.sale.receipt_id != request.receipt_id:
        # The serial's own (latest) sale must be on this receipt: a unit bought elsewhere, or a broken unit
        # swapped for the new one from the box, does not match.
        reasons.append("serial_not_on_receipt" if on_receipt else "receipt_unknown")
    else:
        if view.returned is not None:
            reasons.append("already_returned")
        elif policy is not None and request.time >= view.sale.time + timedelta(days=policy.return_window_days):
            reasons.append("outside_return_window")
    if view.theft_cases:
        reasons.append("reported_stolen")
    return Decision(_status(reasons, RETURN_REJECTING, RETURN_REVIEW, "accepted"), tuple(reasons), out)


def recall_notice_owner(view: UnitView) -> str | None:
    """Who a recall notice goes to: the registered (or latest) owner, else the sale's customer."""
    return view.owner if view.out_with_customer else None

"""Warranty's service layer: record a batch's facts, (re-)decide the requests they concern, send
recall notices. Called by the shared consumer inside the transaction that holds the inbox rows.

Order tolerance: a request is decided with the facts known when it arrives, as of its own event time.
Whenever a fact that happened at or before a request arrives later (a late sale, receipt, return,
registration, stolen report, policy, recall, or an earlier claim of the same unit, customer or store),
the request is decided again; if the status, the reasons or any fact the decision used changes, a new
decision version is emitted that supersedes the previous one. The final decisions therefore equal those
of in-order delivery, and every stored decision is reproducible from the stored facts.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from shared import unit_locks
from shared.contracts import (
    DecisionFacts,
    RecallAmended,
    RecallClosed,
    RecallIssued,
    RecallOwnerNotified,
    RecallOwnerUnknown,
    ReturnDecided,
    ReturnRequested,
    TheftRecovered,
    TheftReported,
    UnitReceived,
    UnitReturned,
    UnitSold,
    WarrantyClaimDecided,
    WarrantyClaimSubmitted,
    WarrantyOwnerRegistered,
    WarrantyPolicySet,
    WarrantyStolenUnitPresented,
)
from shared.envelope import Event, make_event
from shared.identity import SerialRange
from shared.store import add_to_outbox, utcnow
from shared.voids import VoidMark

from . import store
from .domain import (
    CUSTOMER_BURST_WINDOW,
    LOCATION_BURST_WINDOW,
    ClaimRequest,
    Decision,
    Fact,
    PriorClaim,
    ReturnRequest,
    decide_claim,
    decide_return,
    fold_unit,
    issue_key,
    owner_to_notify,
    recall_notice_due,
)

SERVICE = "warranty"
SOURCE = "serialtrack/warranty"
EVENT_TYPES = (
    "unit.received", "unit.sold", "unit.returned", "theft.reported", "theft.recovered",
    "recall.issued", "recall.amended", "recall.closed", "warranty.policy.set", "warranty.owner.registered",
    "warranty.claim.submitted", "return.requested",
    "customer.erasure.requested",  # applied around this module by shared/erasure.py (ServiceDefinition.customer_data)
    "event.voided",  # applied around this module by shared/voids.py: apply_voided below
)
_IDS = uuid.UUID("2b7c0e55-43d4-4f7a-8a0e-5d3b9c7e1f21")


def decision_event_id(kind: str, reference: str, version: int, decision: Decision, facts_json: str) -> str:
    # Deterministic: the same history re-decided gives the same id, which consumers drop as a repeat.
    digest = hashlib.sha256(facts_json.encode()).hexdigest()[:16]
    outcome = f"{decision.status}/{','.join(decision.reasons)}"
    return str(uuid.uuid5(_IDS, f"{kind}/{reference}/v{version}/{outcome}/{digest}"))


def claim_event_id(claim_id: str) -> str:
    """The envelope id the synchronous API gives a claim: a retried POST is the same event."""
    return str(uuid.uuid5(_IDS, f"claim-request/{claim_id}"))


def return_event_id(request_id: str) -> str:
    return str(uuid.uuid5(_IDS, f"return-request/{request_id}"))


@dataclass
class _Batch:
    unit_facts: list[tuple[store.UnitKey, Fact]] = field(default_factory=list)
    ranges: list[tuple[str, SerialRange, Fact]] = field(default_factory=list)
    policies: list[dict] = field(default_factory=list)
    recall_rows: list[dict] = field(default_factory=list)
    recall_ids: set[str] = field(default_factory=set)
    claims: list[dict] = field(default_factory=list)
    returns: list[dict] = field(default_factory=list)
    unit_since: dict[store.UnitKey, datetime] = field(default_factory=dict)  # earliest new fact per unit
    maker_since: dict[str, datetime] = field(default_factory=dict)  # policies and recalls: whole manufacturer
    receipt_since: dict[tuple[str, str], datetime] = field(default_factory=dict)  # new sales per receipt
    sold: set[store.UnitKey] = field(default_factory=set)
    registered: set[store.UnitKey] = field(default_factory=set)  # an owner may have become known

    def touch(self, key: store.UnitKey, time: datetime) -> None:
        if key not in self.unit_since or time < self.unit_since[key]:
            self.unit_since[key] = time

    def touch_maker(self, maker: str, time: datetime) -> None:
        if maker not in self.maker_since or time < self.maker_since[maker]:
            self.maker_since[maker] = time


def _selection(batch: _Batch, data, fact: Fact) -> None:
    """A receipt or stolen report: a range stays one row; single and listed serials become unit facts."""
    if data.serial_range is not None:
        batch.ranges.append((data.manufacturer, data.serial_range, fact))
        return
    for serial in data.iter_serials():
        batch.unit_facts.append(((data.manufacturer, serial), fact))
        batch.touch((data.manufacturer, serial), fact.time)


def _collect(events: list[Event]) -> _Batch:
    batch = _Batch()
    for event in events:
        d = event.data
        signer = event.signed_by  # shared.signing.VerifiedKey set by the consumer, None when unsigned
        base: dict[str, Any] = {"time": event.time, "source": event.source, "event_id": event.id, "type": event.type,
                                "signed_by": signer.kid if signer is not None else None}
        if isinstance(d, UnitReceived):
            _selection(batch, d, Fact(**base, sku=d.sku, location=d.location))
        elif isinstance(d, (TheftReported, TheftRecovered)):
            _selection(batch, d, Fact(**base, agency=d.agency, case_number=d.case_number))
        elif isinstance(d, (UnitSold, UnitReturned, WarrantyOwnerRegistered)):
            key = (d.manufacturer, d.serial)
            if isinstance(d, UnitSold):
                fact = Fact(**base, sku=d.sku, location=d.location, receipt_id=d.receipt_id, customer_id=d.customer_id,
                            terminal_id=d.terminal_id)
                batch.sold.add(key)
                receipt = (d.manufacturer, d.receipt_id)
                batch.receipt_since[receipt] = min(event.time, batch.receipt_since.get(receipt, event.time))
            elif isinstance(d, UnitReturned):
                fact = Fact(**base, location=d.location, receipt_id=d.receipt_id)
            else:
                batch.registered.add(key)
                # Only a key the registry trusts for transfers may replace an owner (domain.fold_unit).
                fact = Fact(**base, customer_id=d.customer_id, location=d.channel,
                            trusted_transfer=bool(signer is not None and signer.transfers_ownership))
            batch.unit_facts.append((key, fact))
            batch.touch(key, event.time)
        elif isinstance(d, WarrantyPolicySet):
            batch.policies.append({
                "event_source": event.source, "event_id": event.id, "policy_id": d.policy_id,
                "manufacturer": d.manufacturer, "sku": d.sku, "coverage_days": d.coverage_days,
                "return_window_days": d.return_window_days, "effective_from": d.effective_from,
                "event_time": event.time,
            })
            batch.touch_maker(d.manufacturer, d.effective_from)
        elif isinstance(d, (RecallIssued, RecallAmended, RecallClosed)):
            batch.recall_rows.append({
                "event_source": event.source, "event_id": event.id, "recall_id": d.recall_id,
                "manufacturer": d.manufacturer, "event_type": event.type, "event_time": event.time,
                "data": d.model_dump_json(),
            })
            batch.recall_ids.add(d.recall_id)
            batch.touch_maker(d.manufacturer, event.time)
        elif isinstance(d, WarrantyClaimSubmitted):
            batch.claims.append({
                "claim_id": d.claim_id, "manufacturer": d.manufacturer, "serial": d.serial,
                "customer_id": d.customer_id, "issue": d.issue, "issue_key": issue_key(d.issue),
                "location": d.location, "submitted_at": event.time, "event_source": event.source,
                "event_id": event.id, "status": None, "reasons": "[]", "facts": "{}", "version": 0,
                "decision_id": None, "decided_at": None,
            })
        elif isinstance(d, ReturnRequested):
            batch.returns.append({
                "request_id": d.request_id, "manufacturer": d.manufacturer, "serial": d.serial,
                "receipt_id": d.receipt_id, "location": d.location, "customer_id": d.customer_id,
                "terminal_id": d.terminal_id, "reason": d.reason, "requested_at": event.time,
                "event_source": event.source, "event_id": event.id, "status": None, "reasons": "[]",
                "facts": "{}", "version": 0, "decision_id": None, "decided_at": None,
            })
        else:
            raise TypeError(f"warranty does not consume {event.type}")
    return batch


def apply_events(session: Session, events: list[Event]) -> None:
    batch = _collect(events)
    store.save_facts(session, batch.unit_facts)
    store.save_ranges(session, batch.ranges)
    store.save_policies(session, batch.policies)
    store.save_recall_events(session, batch.recall_rows)
    new_claims = store.add_new(session, "claim", batch.claims)
    new_returns = store.add_new(session, "return", batch.returns)

    claims, returns = _affected(session, batch, new_claims, new_returns)
    outgoing = _decide(session, claims, returns)
    outgoing.extend(_recall_notices(session, batch))
    add_to_outbox(session, SERVICE, outgoing)


def apply_voided(session: Session, arriving: list[Event], voids: list[VoidMark]) -> None:
    """Voids (shared/voids.py): facts that arrived after their void are stored (and shown, marked)
    but never folded (``store.load_facts`` leaves voided facts out). A new void of a known fact
    re-decides every request its unit, its receipt (a sale) or its range made at or after it, as a
    late fact would: a voided sale takes its coverage back, and the decisions that relied on it get
    a new version."""
    if arriving:
        kept = _collect(arriving)
        store.save_facts(session, kept.unit_facts)
        store.save_ranges(session, kept.ranges)
    batch = _Batch()
    for mark in voids:
        for key, fact in store.units_with_event(session, mark.manufacturer, mark.voided_source, mark.voided_id):
            batch.touch(key, fact.time)
            if fact.type == "unit.sold" and fact.receipt_id:
                receipt = (key[0], fact.receipt_id)
                batch.receipt_since[receipt] = min(fact.time, batch.receipt_since.get(receipt, fact.time))
        found = store.range_with_event(session, mark.manufacturer, mark.voided_source, mark.voided_id)
        if found is not None:
            batch.ranges.append((mark.manufacturer, *found))
    if batch.unit_since or batch.ranges:
        claims, returns = _affected(session, batch, [], [])
        add_to_outbox(session, SERVICE, _decide(session, claims, returns))


def _affected(session: Session, batch: _Batch, new_claims: list[dict],
              new_returns: list[dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """The requests this batch may change: new ones, and older ones made at or after a new fact about
    their unit, their receipt, their manufacturer (policy, recall, range) or their customer or store."""
    claims = {row["claim_id"]: row for row in new_claims}
    returns = {row["request_id"]: row for row in new_returns}

    def later_than_unit_fact(row: dict, time_column: str) -> bool:
        since = batch.unit_since.get((row["manufacturer"], row["serial"]))
        return since is not None and row[time_column] >= since

    for row in store.requests_of_units(session, "claim", batch.unit_since):
        if later_than_unit_fact(row, "submitted_at"):
            claims.setdefault(row["claim_id"], row)
    for row in store.requests_of_units(session, "return", batch.unit_since):
        if later_than_unit_fact(row, "requested_at"):
            returns.setdefault(row["request_id"], row)
    for row in store.returns_on_receipts(session, batch.receipt_since):
        returns.setdefault(row["request_id"], row)

    since = dict(batch.maker_since)
    for maker, _, fact in batch.ranges:
        since[maker] = min(fact.time, since.get(maker, fact.time))

    def wide_change(row: dict, time: datetime) -> bool:
        maker = row["manufacturer"]
        if maker in batch.maker_since and time >= batch.maker_since[maker]:
            return True
        return any(m == maker and time >= fact.time and row["serial"] in rng for m, rng, fact in batch.ranges)

    for row in store.requests_of_makers_since(session, "claim", since):
        if wide_change(row, row["submitted_at"]):
            claims.setdefault(row["claim_id"], row)
    for row in store.requests_of_makers_since(session, "return", since):
        if wide_change(row, row["requested_at"]):
            returns.setdefault(row["request_id"], row)

    # A late claim counts in the fraud signals and duplicates of later claims by the customer or store.
    for column, window in (("customer_id", CUSTOMER_BURST_WINDOW), ("location", LOCATION_BURST_WINDOW)):
        values = {row[column] for row in new_claims if row[column]}
        if not values:
            continue
        start = min(row["submitted_at"] for row in new_claims)
        end = max(row["submitted_at"] for row in new_claims) + window
        for row in store.claims_by(session, column, values, start, end):
            if any(n[column] == row[column] and n["submitted_at"] <= row["submitted_at"] <= n["submitted_at"] + window
                   for n in new_claims):
                claims.setdefault(row["claim_id"], row)
    return claims, returns


def _decide(session: Session, claims: dict[str, dict], returns: dict[str, dict]) -> list[Event]:
    if not claims and not returns:
        return []
    keys = {(r["manufacturer"], r["serial"]) for r in [*claims.values(), *returns.values()]}
    # A late fact re-decides requests of units the batch did not name (a customer's later claims, the
    # returns on a receipt): lock those units too (shared/unit_locks.py), then read the requests
    # again, as another process's commit on them may have left them.
    if unit_locks.take_more(session, keys):
        claims = store.requests_by_id(session, "claim", claims)
        returns = store.requests_by_id(session, "return", returns)
    facts = store.load_facts(session, keys)
    makers = {k[0] for k in keys}
    policies = store.load_policies(session, makers)
    recalls = store.load_recalls(session, makers)
    outgoing: list[Event] = []
    saved: list[dict] = []
    decisions: list[dict] = []
    now = utcnow()
    request: ClaimRequest | ReturnRequest

    if claims:
        # Later claims of the same unit are decided again too: an earlier claim whose status changes may make
        # (or stop making) them duplicates. In time order, so each sees the new status of the ones before it.
        unit_claims = store.requests_of_units(session, "claim", {(r["manufacturer"], r["serial"])
                                                                 for r in claims.values()})
        first: dict[store.UnitKey, tuple] = {}
        for row in claims.values():
            key, order = (row["manufacturer"], row["serial"]), _order(row)
            first[key] = min(order, first.get(key, order))
        for row in unit_claims:
            if _order(row) >= first[(row["manufacturer"], row["serial"])]:
                claims.setdefault(row["claim_id"], row)
        priors = _prior_claims(session, claims, unit_claims)
        statuses = {cid: row["status"] for cid, row in priors.items()}
        by_unit: dict[store.UnitKey, list[dict]] = {}
        by_customer: dict[str, list[dict]] = {}
        by_location: dict[str, list[dict]] = {}
        for row in priors.values():
            by_unit.setdefault((row["manufacturer"], row["serial"]), []).append(row)
            by_customer.setdefault(row["customer_id"], []).append(row)
            if row["location"]:
                by_location.setdefault(row["location"], []).append(row)
        for row in sorted(claims.values(), key=_order):
            request = store.claim_request(row)
            key = (request.manufacturer, request.serial)
            related = {r["claim_id"]: r for r in (*by_unit.get(key, ()), *by_customer.get(request.customer_id, ()),
                                                  *by_location.get(request.location or "", ()))}
            prior = [PriorClaim(p.claim_id, p.serial_key, p.customer_id, p.location, p.issue_key, p.order,
                                statuses.get(p.claim_id)) for p in map(store.prior_claim, related.values())
                     if p.claim_id != request.claim_id]
            decision = decide_claim(request, facts.get(key, []), policies, recalls.events, prior)
            statuses[request.claim_id] = decision.status
            change = _record(row, "claim", request.claim_id, decision, now)
            if change is None:
                continue
            saved.append(change[0])
            decisions.append(change[1])
            facts_model = DecisionFacts.model_validate(decision.facts)
            outgoing.append(make_event(WarrantyClaimDecided(
                claim_id=request.claim_id, manufacturer=request.manufacturer, serial=request.serial,
                customer_id=request.customer_id, status=decision.status, reasons=list(decision.reasons),
                version=change[0]["version"], supersedes=row["decision_id"], submitted_at=request.time,
                facts=facts_model), source=SOURCE, id=change[0]["decision_id"], time=now))
            if "reported_stolen" in decision.reasons and "reported_stolen" not in json.loads(row["reasons"]):
                outgoing.append(_stolen_alert("claim", request.claim_id, request.manufacturer, request.serial,
                                              facts_model, request.customer_id, request.location, request.time))
        store.save_requests(session, "claim", saved)
        saved = []

    if returns:
        receipts = store.sales_on_receipts(session, {(r["manufacturer"], r["receipt_id"]) for r in returns.values()})
        for row in returns.values():
            request = store.return_request(row)
            key = (request.manufacturer, request.serial)
            decision = decide_return(request, facts.get(key, []), policies,
                                     receipts.get((request.manufacturer, request.receipt_id), []))
            change = _record(row, "return", request.request_id, decision, now)
            if change is None:
                continue
            saved.append(change[0])
            decisions.append(change[1])
            facts_model = DecisionFacts.model_validate(decision.facts)
            outgoing.append(make_event(ReturnDecided(
                request_id=request.request_id, manufacturer=request.manufacturer, serial=request.serial,
                receipt_id=request.receipt_id, location=request.location, status=decision.status,
                reasons=list(decision.reasons), version=change[0]["version"], supersedes=row["decision_id"],
                requested_at=request.time, facts=facts_model), source=SOURCE, id=change[0]["decision_id"], time=now))
            if "reported_stolen" in decision.reasons and "reported_stolen" not in json.loads(row["reasons"]):
                outgoing.append(_stolen_alert("return", request.request_id, request.manufacturer, request.serial,
                                              facts_model, request.customer_id, request.location, request.time))
        store.save_requests(session, "return", saved)
    store.save_decisions(session, decisions)
    return outgoing


def reproduce(session: Session, kind: str, reference: str) -> Decision | None:
    """Decide a stored claim or return request again from the stored facts alone (an audit: it must
    equal the stored decision). None for an unknown reference."""
    row = store.get_request(session, kind, reference)
    if row is None:
        return None
    key = (row["manufacturer"], row["serial"])
    facts = store.load_facts(session, [key])[key]
    policies = store.load_policies(session, [key[0]])
    request: ClaimRequest | ReturnRequest
    if kind == "return":
        request = store.return_request(row)
        sales = store.sales_on_receipts(session, [(key[0], request.receipt_id)])[(key[0], request.receipt_id)]
        return decide_return(request, facts, policies, sales)
    request = store.claim_request(row)
    prior = [store.prior_claim(r) for cid, r in _prior_claims(session, {reference: row}).items() if cid != reference]
    return decide_claim(request, facts, policies, store.load_recalls(session, [key[0]]).events, prior)


def _order(row: dict) -> tuple:
    return (row["submitted_at"], row["event_source"], row["event_id"])


def _prior_claims(session: Session, claims: dict[str, dict],
                  unit_claims: list[dict] | None = None) -> dict[str, dict]:
    """Claims that may come before the ones being decided: same unit (``unit_claims`` when already
    loaded), same customer or store within the fraud windows."""
    rows = list(claims.values())
    if unit_claims is None:
        unit_claims = store.requests_of_units(session, "claim", {(r["manufacturer"], r["serial"]) for r in rows})
    found = {r["claim_id"]: r for r in unit_claims}
    end = max(r["submitted_at"] for r in rows)
    start = min(r["submitted_at"] for r in rows)
    for column, window in (("customer_id", CUSTOMER_BURST_WINDOW), ("location", LOCATION_BURST_WINDOW)):
        values = {r[column] for r in rows if r[column]}
        if values:
            found.update((r["claim_id"], r) for r in store.claims_by(session, column, values, start - window, end))
    found.update(claims)  # duplicates look only at the unit's own claims, all loaded above
    return found


def _record(row: dict, kind: str, reference: str, decision: Decision, now: datetime) -> tuple[dict, dict] | None:
    """The request row and decision row of a new decision version; None when neither the outcome nor any
    fact it used changed (so every stored decision is exactly what its stored facts give)."""
    facts = DecisionFacts.model_validate(decision.facts)
    if (row["status"] is not None and (row["status"], tuple(json.loads(row["reasons"]))) == decision.outcome
            and DecisionFacts.model_validate_json(row["facts"]) == facts):
        return None
    version = row["version"] + 1
    facts_json = facts.model_dump_json()
    event_id = decision_event_id(kind, reference, version, decision, facts_json)
    reasons_json = json.dumps(list(decision.reasons))
    updated = {**row, "status": decision.status, "reasons": reasons_json, "facts": facts_json, "version": version,
               "decision_id": event_id, "decided_at": now}
    history = {"kind": kind, "reference": reference, "version": version, "status": decision.status,
               "reasons": reasons_json, "facts": facts_json, "event_id": event_id, "supersedes": row["decision_id"],
               "decided_at": now}
    return updated, history


def _stolen_alert(kind: str, reference: str, manufacturer: str, serial: str, facts: DecisionFacts,
                  customer_id: str | None, location: str | None, time: datetime) -> Event:
    return make_event(
        WarrantyStolenUnitPresented(manufacturer=manufacturer, serial=serial, theft_cases=facts.theft_cases,
                                    presented_as=kind, reference=reference, customer_id=customer_id,
                                    location=location, presented_at=time),
        source=SOURCE, id=str(uuid.uuid5(_IDS, f"stolen-presented/{kind}/{reference}")), time=time,
    )


def _recall_notices(session: Session, batch: _Batch) -> list[Event]:
    """Once per (recall, unit): for a unit that, by event time, was out with a customer while the
    recall was open and covered it (``domain.recall_notice_due``). Looked at when a recall event
    arrives (for the sold units any of its scopes covers) and when a sale or a registration arrives.
    A notice sent as owner unknown is sent again, to the owner, once warranty learns who that is."""
    makers = {k[0] for k in batch.sold | batch.registered} | {r["manufacturer"] for r in batch.recall_rows}
    if not makers:
        return []
    recalls = store.load_recalls(session, makers)
    candidates: set[tuple[str, store.UnitKey]] = set()
    for recall_id in batch.recall_ids & recalls.issued.keys():
        for scope in recalls.scopes[recall_id]:
            candidates.update((recall_id, key) for key in store.sold_units_in_scope(session, scope))
    for key in batch.sold | batch.registered:
        candidates.update((rid, key) for rid, scope in recalls.latest_scope.items()
                          if rid in recalls.issued and scope.manufacturer == key[0])
    sent = store.notice_outcomes(session, candidates)
    candidates = {c for c in candidates if sent.get(c) != "notified"}
    if not candidates:
        return []
    events_of: dict[str, list] = {}
    for recall_event in recalls.events:
        events_of.setdefault(recall_event.recall_id, []).append(recall_event)
    facts = store.load_facts(session, {key for _, key in candidates})
    skus = {key: fold_unit(unit_facts).sku for key, unit_facts in facts.items()}
    outgoing: list[Event] = []
    notices: list[dict] = []
    found: list[dict] = []
    now = utcnow()
    for recall_id, key in sorted(candidates):
        if key not in facts:
            continue
        due = recall_notice_due(events_of[recall_id], facts[key], key[0], key[1], skus[key])
        if due is None:
            continue
        owner = owner_to_notify(facts[key], due)
        if sent.get((recall_id, key)) == "unknown" and not owner:
            continue
        issued = recalls.issued[recall_id]
        data: RecallOwnerNotified | RecallOwnerUnknown
        if owner:
            data = RecallOwnerNotified(recall_id=recall_id, manufacturer=key[0], serial=key[1], customer_id=owner,
                                       hazard=issued["hazard"], remedy=issued["remedy"],
                                       instructions=issued.get("instructions", ""))
        else:
            data = RecallOwnerUnknown(recall_id=recall_id, manufacturer=key[0], serial=key[1])
        again = "/owner" if (recall_id, key) in sent else ""  # the owner, found after an "unknown" notice
        event_id = str(uuid.uuid5(_IDS, f"recall-notice/{recall_id}/{key[0]}/{key[1]}{again}"))
        outgoing.append(make_event(data, source=SOURCE, id=event_id, time=now))
        (found if again else notices).append({
            "recall_id": recall_id, "manufacturer": key[0], "serial": key[1],
            "outcome": "notified" if owner else "unknown", "customer_id": owner,
            "event_id": event_id, "created_at": now})
    store.save_notices(session, notices)
    store.owner_found(session, found)
    return outgoing

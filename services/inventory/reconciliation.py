"""Reconciliation rules, pure: receipts against shipment manifests, stock counts against stock.

Both judge one unit at a time from facts ordered by event time, so a unit's judgement is the same
whatever order its events arrived in; the service judges a unit again whenever one of its inputs
changes (a receipt, a manifest, a deadline passing, a late event before a count) and reconciles
the result with what it recorded, as it does for the unit's own anomalies (domain.py).

**Manifests.** A manifest is *open* for a unit from its dispatch time until a receipt of the unit
uses it. A unit's receipts are walked in time order; each one uses the earliest open manifest to
its location (the unit is ``received`` on that shipment), else the earliest open manifest to
anywhere else (``diverted``: the unit was shipped elsewhere and turned up here), else, when the
location takes manifests (some manifest to it was dispatched at or before the receipt), it is
``unexpected``. A manifest not used by a receipt at or before its deadline is ``missing`` once
the deadline has been checked (``Manifest.due``); a receipt after the deadline still records the
unit as received (late), and the ``missing_in_transit`` anomaly stays: it was missing then.

**Counts.** A unit is expected at the count's location when its state at ``counted_at`` (its
history folded up to then) is on hand there. Seen and expected: ``matched``; expected, not seen:
``missing`` (a candidate loss, not a change: a ``unit.adjusted`` stays the human decision); seen,
not expected: ``unexpected``, with what inventory had recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from .domain import ON_HAND, Fact, OrderKey, Status, UnitState, fold

# Anomaly kinds these rules raise; the unit's own fold (domain.py) never derives them, so a refold
# leaves them to these rules.
MANIFEST_KINDS = frozenset({"unexpected", "missing_in_transit", "diverted"})


@dataclass(frozen=True, slots=True)
class Manifest:
    """A shipment as it concerns one unit (or a location)."""

    shipment_id: str
    to_location: str
    retailer: str | None
    dispatched: OrderKey  # (time, source, id) of its shipment.dispatched
    deadline: datetime
    due: bool  # the deadline has passed and was checked: units not received by it are missing


@dataclass(frozen=True, slots=True)
class Receipt:
    order: OrderKey  # the unit.received
    location: str


@dataclass(frozen=True, slots=True)
class ShipmentUnit:
    """What became of one unit of one shipment (a row of the shipment's report)."""

    shipment_id: str
    outcome: str  # received | diverted | missing | unexpected
    receipt: Receipt | None  # None: missing
    on_time: bool  # received (or diverted) at or before the deadline


@dataclass(frozen=True, slots=True)
class ManifestAnomaly:
    kind: str
    detail: str
    event: OrderKey  # the receipt (unexpected, diverted) or the shipment.dispatched (missing_in_transit)
    event_type: str


def receipts_of(facts: Iterable[Fact]) -> list[Receipt]:
    return [Receipt(f.order, f.location) for f in facts if f.type == "unit.received" and f.location]


def judge_manifests(manifests: Sequence[Manifest], receipts: Sequence[Receipt],
                    manifests_to: Mapping[str, Sequence[Manifest]]) -> tuple[list[ShipmentUnit], list[ManifestAnomaly]]:
    """One unit: its ``manifests`` (the shipments whose serials cover it) and ``receipts`` (any order).
    ``manifests_to`` gives, for a receipt's location, every manifest to it: whether the location
    takes manifests at the receipt's time, and which shipment an unexpected unit came with."""
    rows: list[ShipmentUnit] = []
    anomalies: list[ManifestAnomaly] = []
    used: set[str] = set()
    ordered = sorted(manifests, key=lambda m: m.dispatched)
    for receipt in sorted(receipts, key=lambda r: r.order):
        time = receipt.order[0]
        open_ = [m for m in ordered if m.shipment_id not in used and m.dispatched[0] <= time]
        here = next((m for m in open_ if m.to_location == receipt.location), None)
        if here is not None:
            used.add(here.shipment_id)
            rows.append(ShipmentUnit(here.shipment_id, "received", receipt, time <= here.deadline))
            continue
        if open_:
            elsewhere = open_[0]
            used.add(elsewhere.shipment_id)
            rows.append(ShipmentUnit(elsewhere.shipment_id, "diverted", receipt, time <= elsewhere.deadline))
            to = elsewhere.to_location + (f" (retailer {elsewhere.retailer})" if elsewhere.retailer else "")
            anomalies.append(ManifestAnomaly(
                "diverted", f"received at {receipt.location}, shipped to {to} on shipment {elsewhere.shipment_id}",
                receipt.order, "unit.received"))
            continue
        expected_here = [m for m in manifests_to.get(receipt.location, ()) if m.dispatched[0] <= time]
        if expected_here:
            # The shipment it most likely came with: the latest dispatched to here before the receipt.
            came_with = max(expected_here, key=lambda m: m.dispatched)
            rows.append(ShipmentUnit(came_with.shipment_id, "unexpected", receipt, True))
            anomalies.append(ManifestAnomaly(
                "unexpected", f"received at {receipt.location}, on no manifest to it "
                              f"(latest shipment expected there: {came_with.shipment_id})",
                receipt.order, "unit.received"))
    received_by = {row.shipment_id: row for row in rows if row.outcome in ("received", "diverted")}
    for manifest in ordered:
        row = received_by.get(manifest.shipment_id)
        if manifest.due and (row is None or not row.on_time):
            if row is None:
                rows.append(ShipmentUnit(manifest.shipment_id, "missing", None, False))
            anomalies.append(ManifestAnomaly(
                "missing_in_transit", f"shipped to {manifest.to_location} on shipment {manifest.shipment_id}, "
                                      f"not received there by {manifest.deadline.isoformat()}"
                + (f" (received {row.outcome} at {row.receipt.location} on {row.receipt.order[0].isoformat()})"
                   if row is not None and row.receipt is not None else ""),
                manifest.dispatched, "shipment.dispatched"))
    return rows, anomalies


# --- counts ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CountJudgement:
    result: str  # matched | missing | unexpected
    seen: bool
    status: str | None  # the unit's status at counted_at (None: unknown to inventory then)
    location: str | None
    detail: str


def state_at(manufacturer: str, serial: str, history: Iterable[Fact], at: datetime) -> UnitState | None:
    """The unit as it was at ``at``: its history folded up to then (None: nothing of it yet)."""
    before = [fact for fact in history if fact.time <= at]
    return fold(manufacturer, serial, before)[0] if before else None


def judge_count(state: UnitState | None, seen: bool, location: str) -> CountJudgement | None:
    """One unit against a count at ``location``: ``state`` is the unit at counted_at. None: the
    unit has nothing to do with the count (not seen, not expected)."""
    status = state.status.value if state else None
    where = state.location if state else None
    expected = state is not None and state.status in ON_HAND and state.location == location
    if expected and seen:
        return CountJudgement("matched", True, status, where, "")
    if expected:
        return CountJudgement("missing", False, status, where, f"expected at {location} ({status}), not seen")
    if not seen:
        return None
    if state is None or not state.ever_received:
        detail = "never received" + (f" ({status} at {where})" if state is not None and where else "")
    elif state.status == Status.SOLD:
        detail = f"sold at {where}"
    elif state.status in ON_HAND:
        detail = f"recorded at {where} ({status})"
    else:
        detail = f"{status}" + (f" at {where}" if where else "")
    return CountJudgement("unexpected", True, status, where, detail)

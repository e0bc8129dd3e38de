"""Inventory rules, pure: how the facts about one unit fold into its current state.

A unit's state is a function of its history ordered by event time (ties broken
by source and id), not of the order in which events happened to arrive. The
service applies a late fact incrementally when it is newer than everything
seen, and refolds the unit's whole history otherwise, so shuffled delivery
ends in the same state as in-order delivery.

Facts that contradict the history are still applied (they happened) and are
reported as anomalies; a refold may withdraw an anomaly that only came from
arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    IN_STOCK = "in_stock"
    IN_TRANSIT = "in_transit"
    SOLD = "sold"
    RETURNED = "returned"  # back in a store after a sale, awaiting resale or inspection
    QUARANTINED = "quarantined"  # held, not to be sold (recall, inspection)
    DAMAGED = "damaged"
    LOST = "lost"
    STOLEN = "stolen"  # the retailer's own finding; a law-enforcement report sets the stolen flag
    DESTROYED = "destroyed"
    UNKNOWN = "unknown"  # known only from a report or a sale, never received


# GS1 CBV disposition for each status (shown by the read API).
EPCIS_DISPOSITION = {
    Status.IN_STOCK: "sellable_accessible",
    Status.IN_TRANSIT: "in_transit",
    Status.SOLD: "retail_sold",
    Status.RETURNED: "returned",
    Status.QUARANTINED: "non_sellable_other",
    Status.DAMAGED: "damaged",
    Status.LOST: "unknown",
    Status.STOLEN: "stolen",
    Status.DESTROYED: "destroyed",
    Status.UNKNOWN: "unknown",
}

ON_HAND = frozenset({Status.IN_STOCK, Status.RETURNED, Status.QUARANTINED, Status.DAMAGED})
QUARANTINABLE = frozenset({Status.IN_STOCK, Status.RETURNED, Status.DAMAGED})

ADJUSTMENT_STATUS = {
    "damaged": Status.DAMAGED,
    "lost": Status.LOST,
    "stolen": Status.STOLEN,
    "destroyed": Status.DESTROYED,
    "found": Status.IN_STOCK,
    "quarantined": Status.QUARANTINED,
    "sellable": Status.IN_STOCK,
}

OrderKey = tuple[datetime, str, str]


@dataclass(frozen=True, slots=True)
class Fact:
    """One event as it concerns one unit: a row of the unit's history.

    A bulk receipt shares one Fact among all its units.
    """

    time: datetime
    source: str
    event_id: str
    type: str
    location: str | None = None
    from_location: str | None = None
    sku: str | None = None
    condition: str | None = None
    disposition: str | None = None
    receipt_id: str | None = None
    customer_id: str | None = None
    terminal_id: str | None = None
    agency: str | None = None
    case_number: str | None = None
    recall_id: str | None = None
    note: str | None = None
    in_transit: bool = False

    @property
    def order(self) -> OrderKey:
        return (self.time, self.source, self.event_id)

    @property
    def case(self) -> str:
        return f"{self.agency}:{self.case_number}"


@dataclass(slots=True)
class UnitState:
    manufacturer: str
    serial: str
    status: Status = Status.UNKNOWN
    location: str | None = None
    sku: str | None = None
    condition: str | None = None
    theft_cases: tuple[str, ...] = ()  # open law-enforcement reports, "agency:case"
    recalls: tuple[str, ...] = ()  # open recalls covering the unit (not closed, remedied or released)
    recalls_seen: tuple[str, ...] = ()  # every recall whose broadcast is in the unit's history
    ever_received: bool = False
    last: OrderKey | None = None
    # Stock aging (inventory_0005): when the receipt, or a return if later, put the unit where it stands
    # on hand (a transfer does not restart the clock; a receipt at the destination does), and how many
    # times customers brought it back.
    stocked_at: datetime | None = None
    times_returned: int = 0

    @property
    def stolen(self) -> bool:
        return bool(self.theft_cases)

    @property
    def key(self) -> tuple[str, str]:
        return (self.manufacturer, self.serial)


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str
    detail: str
    fact: Fact


@dataclass(frozen=True, slots=True)
class Quarantined:
    """The unit went on hold because recall ``recall_id`` covers it."""

    recall_id: str
    location: str | None
    fact: Fact


Effect = Anomaly | Quarantined


def _recall_covers(state: UnitState, fact: Fact, effects: list[Effect]) -> None:
    recall_id = fact.recall_id
    assert recall_id is not None  # a recall's fact names it
    if recall_id not in state.recalls:
        state.recalls = (*state.recalls, recall_id)
    if recall_id not in state.recalls_seen:
        state.recalls_seen = (*state.recalls_seen, recall_id)
    if state.status in QUARANTINABLE:
        state.status = Status.QUARANTINED
        effects.append(Quarantined(recall_id, state.location, fact))


def _recall_lets_go(state: UnitState, fact: Fact, lift_quarantine: bool) -> None:
    """The recall no longer holds this unit (remedied, scope narrowed, or campaign closed)."""
    state.recalls = tuple(r for r in state.recalls if r != fact.recall_id)
    if lift_quarantine and not state.recalls and state.status == Status.QUARANTINED:
        state.status = Status.IN_STOCK


def _quarantine_for_recalls(state: UnitState, fact: Fact, effects: list[Effect]) -> None:
    if state.recalls and state.status in QUARANTINABLE:
        state.status = Status.QUARANTINED
        effects.extend(Quarantined(r, state.location, fact) for r in state.recalls)


def apply(state: UnitState, fact: Fact) -> list[Effect]:
    """Apply one fact in time order; returns anomalies and quarantines it caused."""
    effects: list[Effect] = []
    kind = fact.type
    status = state.status
    if kind == "unit.received":
        if status in ON_HAND:
            effects.append(Anomaly("received_while_in_stock",
                                   f"received at {fact.location} while {status} at {state.location}", fact))
        state.status = Status.DAMAGED if fact.condition == "damaged" else Status.IN_STOCK
        state.location, state.sku, state.condition = fact.location, fact.sku, fact.condition
        state.ever_received = True
        state.stocked_at = fact.time
        _quarantine_for_recalls(state, fact, effects)
    elif kind == "unit.transferred":
        if status not in ON_HAND:
            effects.append(Anomaly("transferred_while_not_in_stock",
                                   f"transferred from {fact.from_location} while {status}", fact))
        elif state.location != fact.from_location:
            effects.append(Anomaly("transferred_from_wrong_location",
                                   f"transferred from {fact.from_location} but it is at {state.location}", fact))
        state.location = fact.location
        if fact.in_transit and status in (Status.IN_STOCK, Status.RETURNED):
            state.status = Status.IN_TRANSIT
    elif kind == "unit.sold":
        if not state.ever_received:
            effects.append(Anomaly("sold_never_received", f"sold at {fact.location}, never received", fact))
        if status == Status.SOLD:
            effects.append(Anomaly("sold_twice", f"sold at {fact.location} without a return since its last sale", fact))
        elif status == Status.QUARANTINED:
            effects.append(Anomaly("sold_while_quarantined",
                                   f"sold at {fact.location} while quarantined"
                                   + (f" (recall {', '.join(state.recalls)})" if state.recalls else ""), fact))
        elif status in (Status.LOST, Status.DESTROYED, Status.DAMAGED):
            effects.append(Anomaly("sold_while_unavailable", f"sold at {fact.location} while {status}", fact))
        if state.stolen or status == Status.STOLEN:
            cases = ", ".join(state.theft_cases) or "retailer report"
            effects.append(Anomaly("sold_while_stolen", f"sold at {fact.location} while reported stolen ({cases})", fact))
        state.status = Status.SOLD
        state.location = fact.location
        state.sku = fact.sku or state.sku
    elif kind == "unit.returned":
        if status != Status.SOLD:
            effects.append(Anomaly("returned_never_sold", f"returned at {fact.location} while {status}", fact))
        state.status = Status.DAMAGED if fact.condition == "damaged" else Status.RETURNED
        state.location, state.condition = fact.location, fact.condition
        state.stocked_at = fact.time
        state.times_returned += 1
        _quarantine_for_recalls(state, fact, effects)
    elif kind == "unit.adjusted":
        assert fact.disposition is not None  # unit.adjusted requires one
        state.status = ADJUSTMENT_STATUS[fact.disposition]
        state.location = fact.location or state.location
        if fact.disposition == "found":
            _quarantine_for_recalls(state, fact, effects)
    elif kind == "theft.reported":
        if fact.case not in state.theft_cases:
            state.theft_cases = (*state.theft_cases, fact.case)
    elif kind == "theft.recovered":
        state.theft_cases = tuple(c for c in state.theft_cases if c != fact.case)
    elif kind == "recall.issued" or (kind == "recall.amended" and fact.disposition == "covered"):
        _recall_covers(state, fact, effects)
    elif kind in ("recall.amended", "recall.remedy.completed"):  # scope narrowed, or remedied: no longer affected
        _recall_lets_go(state, fact, lift_quarantine=True)
    elif kind == "recall.closed":  # stops quarantine on arrival or return; a held unit stays held
        _recall_lets_go(state, fact, lift_quarantine=False)
    else:
        raise ValueError(f"inventory has no rule for {kind!r}")
    state.last = fact.order if state.last is None or fact.order > state.last else state.last
    return effects


@dataclass(frozen=True, slots=True)
class RecallVersion:
    """One scope of a recall, in force from its event's time: the issue's, or an amendment's."""

    covers: Callable[[str, str | None], bool]  # (serial, sku) -> covered by this scope
    covered: Fact  # what a unit this scope covers gets: the issue, or the amendment as "covered"
    released: Fact | None  # what a unit an earlier scope covered and this one does not gets


def recall_coverage(versions: Iterable[RecallVersion], closure: Fact | None, serial: str,
                    sku: str | None) -> list[Fact]:
    """A unit's facts of one recall, from the recall's scopes alone, in event-time order: covered
    by each scope that covers it, released by each later one that does not, closed with the recall.
    The same facts whatever order the issue, the amendments and the closure arrived in, and
    whichever process applied them: a unit's recall state never depends on arrival order."""
    facts: list[Fact] = []
    ever = False
    for version in sorted(versions, key=lambda v: v.covered.order):
        if version.covers(serial, sku):
            facts.append(version.covered)
            ever = True
        elif ever and version.released is not None:
            facts.append(version.released)
    if ever and closure is not None:
        facts.append(closure)
    return facts


def fold(manufacturer: str, serial: str, facts: Iterable[Fact]) -> tuple[UnitState, list[Effect]]:
    """The unit's state from its whole history, applied in time order."""
    state = UnitState(manufacturer, serial)
    effects: list[Effect] = []
    for fact in sorted(facts, key=lambda f: f.order):
        effects.extend(apply(state, fact))
    return state, effects


@dataclass(slots=True)
class Outcome:
    """What applying new facts to one unit produced."""

    state: UnitState
    effects: list[Effect] = field(default_factory=list)
    refolded: bool = False  # the whole history was replayed: stored anomalies must be reconciled


def needs_refold(state: UnitState | None, new: list[Fact]) -> bool:
    """A fact no later than the latest one applied means replaying the history."""
    if state is None or state.last is None:
        return False
    earliest = new[0].order if len(new) == 1 else min(f.order for f in new)  # one fact: the common case
    return earliest <= state.last


def advance(state: UnitState | None, manufacturer: str, serial: str, new: list[Fact],
            history: list[Fact] | None = None) -> Outcome:
    """Apply ``new`` facts to a unit: incrementally when they are newer than everything seen,
    otherwise by refolding the stored ``history`` plus the new facts (see ``needs_refold``)."""
    if len(new) > 1:
        new = sorted(new, key=lambda f: f.order)
    if state is None:
        state, effects = fold(manufacturer, serial, new)
        return Outcome(state, effects)
    if not needs_refold(state, new):
        effects = []
        for fact in new:
            effects.extend(apply(state, fact))
        return Outcome(state, effects)
    if history is None:
        raise ValueError("a late fact needs the unit's stored history to refold")
    refolded, effects = fold(manufacturer, serial, [*history, *new])
    return Outcome(refolded, effects, refolded=True)

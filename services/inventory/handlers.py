"""Inventory's service layer: turn a batch of events into per-unit facts, fold, save.

Called by the shared consumer inside one transaction that also holds the inbox
rows, so everything here commits or rolls back together with "event applied".
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from shared.contracts import (
    InventoryAnomalyDetected,
    InventoryAnomalyWithdrawn,
    RecallAmended,
    RecallApplicationContinues,
    RecallClosed,
    RecallIssued,
    RecallRemedyCompleted,
    RecallScope,
    TheftRecovered,
    TheftReported,
    UnitAdjusted,
    UnitQuarantined,
    UnitReceived,
    UnitReturned,
    UnitSold,
    UnitTransferred,
)
from shared.envelope import Event, make_event, make_trusted_event
from shared.store import add_to_outbox, chunks, refresh_statistics
from shared.voids import VoidMark

from . import store
from .domain import Anomaly, Fact, Quarantined, UnitState, advance, fold, needs_refold

SERVICE = "inventory"
SOURCE = "serialtrack/inventory"
EVENT_TYPES = (
    "unit.received", "unit.transferred", "unit.sold", "unit.returned", "unit.adjusted",
    "theft.reported", "theft.recovered", "recall.issued", "recall.amended", "recall.closed",
    "recall.remedy.completed", "inventory.recall.continues",
    "customer.erasure.requested",  # applied around this module by shared/erasure.py (ServiceDefinition.customer_data)
    "event.voided",  # applied around this module by shared/voids.py: apply_voided below
)
LARGE_BATCH = 10_000  # new units in one batch from which PostgreSQL's table statistics are refreshed
# Units a broadcast is applied to per transaction: a recall over 100,000 units is ten steps, each
# committed (and reported) before the next; memory stays flat whatever the recall's size.
RECALL_STEP = 10_000
# Units per unit.quarantined: 2,000 of the longest serials and locations stay far below the 1 MB
# entry limit (shared.envelope.MAX_ENTRY_BYTES).
QUARANTINE_LIST = 2_000
_IDS = uuid.UUID("6f1d2a4e-6c1b-4f0e-9a57-3c2f4f1b9d10")


def facts_of(event: Event) -> Iterator[tuple[store.UnitKey, Fact]]:
    d = event.data
    base: dict[str, Any] = {"time": event.time, "source": event.source, "event_id": event.id, "type": event.type}
    if isinstance(d, UnitReceived):
        fact = Fact(**base, location=d.location, sku=d.sku, condition=d.condition.value)
        for serial in d.iter_serials():
            yield (d.manufacturer, serial), fact
    elif isinstance(d, UnitTransferred):
        yield (d.manufacturer, d.serial), Fact(**base, location=d.to_location, from_location=d.from_location,
                                               in_transit=d.in_transit)
    elif isinstance(d, UnitSold):
        yield (d.manufacturer, d.serial), Fact(**base, location=d.location, sku=d.sku, receipt_id=d.receipt_id,
                                               customer_id=d.customer_id, terminal_id=d.terminal_id)
    elif isinstance(d, UnitReturned):
        yield (d.manufacturer, d.serial), Fact(**base, location=d.location, receipt_id=d.receipt_id,
                                               condition=d.condition.value, note=d.reason)
    elif isinstance(d, UnitAdjusted):
        yield (d.manufacturer, d.serial), Fact(**base, disposition=d.disposition.value, note=d.note or None,
                                               location=d.location)
    elif isinstance(d, (TheftReported, TheftRecovered)):
        if d.serial is not None:  # a range or a list is stored as one row instead (_save_theft_selection)
            yield (d.manufacturer, d.serial), _theft_fact(event)
    else:
        raise TypeError(f"inventory does not consume {event.type}")


def _theft_fact(event: Event) -> Fact:
    d = event.data
    assert isinstance(d, (TheftReported, TheftRecovered))
    return Fact(time=event.time, source=event.source, event_id=event.id, type=event.type, agency=d.agency,
                case_number=d.case_number, note=getattr(d, "description", None) or None)


def _theft_selection_facts(session: Session, event: Event) -> Iterator[tuple[store.UnitKey, Fact]]:
    """A stolen report (or recovery) over a range or a list: one row, whatever its size. Each unit
    gets it as a fact when an event names the unit (_add_theft_selections). Now, only the units sold
    since the report's time get it: their "sold while stolen" anomalies depend on it (a late report
    raises one, a late recovery withdraws it)."""
    d = event.data
    assert isinstance(d, (TheftReported, TheftRecovered))
    selection = d.serial_range if d.serial_range is not None else d.serials
    assert selection is not None  # a single serial is applied as a fact of that unit
    fact = _theft_fact(event)
    store.save_theft_selection(session, d.manufacturer, selection, fact)
    for key in store.sold_since(session, d.manufacturer, selection, event.time):
        yield key, fact


def _recall_fact(event: Event, disposition: str | None = None) -> Fact:
    d = event.data
    assert isinstance(d, (RecallIssued, RecallAmended, RecallClosed, RecallRemedyCompleted))
    return Fact(time=event.time, source=event.source, event_id=event.id, type=event.type,
                recall_id=d.recall_id, disposition=disposition)


def _recall_facts(session: Session, event: Event, states: dict[store.UnitKey, UnitState],
                  outgoing: list[Event]) -> Iterator[tuple[store.UnitKey, Fact]]:
    """The units a recall event concerns, each with its fact. Units found through the recall's
    scope come with their state, added to ``states`` (a broadcast reads its units once)."""
    d = event.data
    if isinstance(d, RecallIssued):
        fact = _recall_fact(event)
        store.save_recall(session, d, fact)
        yield from _broadcast_step(session, d, fact, None, states, outgoing)
    elif isinstance(d, RecallApplicationContinues):
        known = store.get_recall_scope(session, d.recall_id)
        if known is not None:  # the current scope: an amendment may have come in between steps
            fact = Fact(time=d.broadcast_time, source=d.broadcast_source, event_id=d.broadcast_id,
                        type="recall.issued", recall_id=d.recall_id)
            yield from _broadcast_step(session, known[0], fact, d.after_serial, states, outgoing)
    elif isinstance(d, RecallAmended):
        known = store.get_recall_scope(session, d.recall_id)
        old = known[0] if known else None
        if known is None or event.time >= known[1]:
            # An amendment that arrives before its recall is kept as the scope; the older issue
            # will not replace it (save_recall ignores a recall it already has).
            if known is None:
                store.save_recall(session, d, _recall_fact(event))
            store.set_recall_scope(session, RecallScope.model_validate(d.model_dump()), event.time)
        new_units = store.units_covered_by(session, d)
        old_units = store.units_covered_by(session, old) if old else {}
        states.update(new_units)
        states.update(old_units)
        covered, released = _recall_fact(event, "covered"), _recall_fact(event, "released")
        closure = store.recall_closure(session, d.recall_id)  # the closure may have been applied first
        for key in sorted(new_units.keys() - old_units.keys()):
            yield key, covered
            if closure:
                yield key, closure
        yield from ((key, released) for key in sorted(old_units.keys() - new_units.keys()))
    elif isinstance(d, RecallClosed):
        fact = _recall_fact(event)
        store.close_recall(session, d.recall_id, fact)
        known = store.get_recall_scope(session, d.recall_id)
        units = store.units_covered_by(session, known[0]) if known else {}
        states.update(units)
        yield from ((key, fact) for key in units)
    elif isinstance(d, RecallRemedyCompleted):
        yield (d.manufacturer, d.serial), _recall_fact(event)


def _broadcast_step(session: Session, scope: RecallScope, fact: Fact, after: str | None,
                    states: dict[store.UnitKey, UnitState],
                    outgoing: list[Event]) -> Iterator[tuple[store.UnitKey, Fact]]:
    """One step of a broadcast: up to RECALL_STEP covered units after ``after`` (the first step:
    from the start), and the bookmark that starts the next step if more may follow."""
    covered, bound = store.covered_units_page(session, scope, after, RECALL_STEP)
    if bound is not None:
        outgoing.append(make_event(
            RecallApplicationContinues(recall_id=fact.recall_id, manufacturer=scope.manufacturer, after_serial=bound,
                                       broadcast_source=fact.source, broadcast_id=fact.event_id,
                                       broadcast_time=fact.time),
            source=SOURCE, id=str(uuid.uuid5(_IDS, f"recall-step/{fact.source}/{fact.event_id}/{bound}")),
        ))
    for key, state in covered.items():
        # A later step skips units that already have the recall: a unit event that arrived between
        # steps brought it (_add_open_recalls), as it would for a unit received after the broadcast.
        if after is not None and fact.recall_id in state.recalls_seen:
            continue
        states[key] = state
        yield key, fact


def apply_events(session: Session, events: list[Event]) -> None:
    per_unit: dict[store.UnitKey, list[Fact]] = {}
    states: dict[store.UnitKey, UnitState] = {}
    outgoing: list[Event] = []
    for event in events:
        if event.type.startswith("recall.") or event.type == RecallApplicationContinues.event_type:
            for key, fact in _recall_facts(session, event, states, outgoing):
                per_unit.setdefault(key, []).append(fact)
        elif isinstance(event.data, (TheftReported, TheftRecovered)) and event.data.serial is None:
            for key, fact in _theft_selection_facts(session, event):
                per_unit.setdefault(key, []).append(fact)
        else:
            for key, fact in facts_of(event):
                per_unit.setdefault(key, []).append(fact)

    states.update(store.load_units(session, [key for key in per_unit if key not in states]))
    _add_open_recalls(session, per_unit, states)
    histories = _add_theft_selections(session, per_unit)
    late = [key for key, facts in per_unit.items() if needs_refold(states.get(key), facts)]
    unread = [key for key in late if key not in histories]
    if unread:
        histories.update(store.load_histories(session, unread))
    recorded = store.anomaly_identities(session, late) if late else {}

    saved_states, anomaly_rows = [], []
    history: list[tuple[store.UnitKey, Fact]] = []
    quarantines: dict[tuple[str, str, datetime], list[tuple[str, str | None]]] = {}
    withdraw: list[tuple] = []
    reopen: list[tuple] = []
    for key, facts in per_unit.items():
        outcome = advance(states.get(key), key[0], key[1], facts, histories.get(key, []))
        saved_states.append(outcome.state)
        history.extend((key, fact) for fact in facts)
        derived = [store.anomaly_row(key, e) for e in outcome.effects if isinstance(e, Anomaly)]
        if outcome.refolded:
            # Reconcile with what was recorded: withdraw anomalies that only came from arrival
            # order, reopen ones derived again, record the new ones.
            known = recorded.get(key, {})
            derived_ids = {store.anomaly_identity(row) for row in derived}
            withdrawn_now = [i for i, status in known.items() if status == "open" and i not in derived_ids]
            withdraw.extend(withdrawn_now)
            reopen.extend(i for i in derived_ids if known.get(i) == "withdrawn")
            outgoing.extend(_withdrawal_event(identity) for identity in withdrawn_now)
            derived = [row for row in derived if store.anomaly_identity(row) not in known]
        anomaly_rows.extend(derived)
        outgoing.extend(_anomaly_event(row) for row in derived)
        for effect in outcome.effects:
            if isinstance(effect, Quarantined):
                quarantines.setdefault((key[0], effect.recall_id, effect.fact.time), []).append(
                    (key[1], effect.location))
    outgoing.extend(_quarantine_events(quarantines))

    store.save_units(session, saved_states)
    store.save_history(session, history)
    store.save_anomalies(session, anomaly_rows)
    store.set_anomaly_status(session, withdraw, "withdrawn")
    store.set_anomaly_status(session, reopen, "open")
    add_to_outbox(session, SERVICE, outgoing)
    if sum(1 for key in per_unit if key not in states) >= LARGE_BATCH:  # a range receipt: the tables grew
        refresh_statistics(session, "inventory_units", "inventory_history")


def apply_voided(session: Session, arriving: list[Event], voids: list[VoidMark]) -> None:
    """Voids (shared/voids.py): events that arrived after their void join their units' histories
    without being applied; every unit a new void reaches is folded again from its history without
    the voided events, and what changes is reconciled as after a late event: anomalies withdrawn or
    reopened (and published), quarantines reported."""
    history = [(key, fact) for event in arriving for key, fact in facts_of(event)]
    store.save_history(session, history)
    keys = {key for key, _ in history}
    for mark in voids:
        keys.update(store.units_with_event(session, mark.manufacturer, mark.voided_source, mark.voided_id))
    for part in chunks(sorted(keys), RECALL_STEP):  # a voided receipt of 1,000,000 units: steps of 10,000
        _refold(session, list(part))


def _refold(session: Session, keys: list[store.UnitKey]) -> None:
    histories = store.load_histories(session, keys, voided=True)
    marks = store.voided_in(session, histories)
    recorded = store.anomaly_identities(session, keys)
    saved: list[UnitState] = []
    anomaly_rows: list[dict] = []
    withdraw: list[tuple] = []
    reopen: list[tuple] = []
    outgoing: list[Event] = []
    quarantines: dict[tuple[str, str, datetime], list[tuple[str, str | None]]] = {}
    for key in keys:
        facts = histories.get(key, [])
        state, effects = fold(key[0], key[1], [f for f in facts if (f.source, f.event_id) not in marks])
        if state.last is None:  # only voided facts: a unit of unknown status, as known as its history
            state.last = max((f.order for f in facts), default=None)
            if state.last is None:
                continue
        saved.append(state)
        derived = [store.anomaly_row(key, e) for e in effects if isinstance(e, Anomaly)]
        known = recorded.get(key, {})
        derived_ids = {store.anomaly_identity(row) for row in derived}
        withdrawn_now = [i for i, status in known.items() if status == "open" and i not in derived_ids]
        withdraw.extend(withdrawn_now)
        reopen.extend(i for i in derived_ids if known.get(i) == "withdrawn")
        outgoing.extend(_withdrawal_event(identity) for identity in withdrawn_now)
        fresh = [row for row in derived if store.anomaly_identity(row) not in known]
        anomaly_rows.extend(fresh)
        outgoing.extend(_anomaly_event(row) for row in fresh)
        for effect in effects:
            if isinstance(effect, Quarantined):
                quarantines.setdefault((key[0], effect.recall_id, effect.fact.time), []).append(
                    (key[1], effect.location))
    outgoing.extend(_quarantine_events(quarantines))
    store.save_units(session, saved)
    store.save_anomalies(session, anomaly_rows)
    store.set_anomaly_status(session, withdraw, "withdrawn")
    store.set_anomaly_status(session, reopen, "open")
    add_to_outbox(session, SERVICE, outgoing)


def _add_open_recalls(session: Session, per_unit: dict[store.UnitKey, list[Fact]],
                      states: dict[store.UnitKey, UnitState]) -> None:
    """Units first seen now (or whose sku just became known) get the open recalls that cover them,
    as facts at the recall's time: a unit received after a recall is quarantined on arrival."""
    indexes = store.open_recall_index(session, {maker for maker, _ in per_unit})
    if not indexes:
        return
    for key, facts in per_unit.items():
        index = indexes.get(key[0])
        if index is None:
            continue
        matcher, recall_facts = index
        state = states.get(key)
        sku = (state.sku if state else None) or next((f.sku for f in facts if f.sku), None)
        covering = matcher.match(key[1], sku)  # an index lookup: as cheap with 20 recalls of 1,000 ranges as with one
        if not covering:
            continue
        seen: set[str | None] = set(state.recalls_seen) if state else set()
        # Only a broadcast brings a recall to a unit; a remedy or closure fact names it too.
        seen.update(f.recall_id for f in facts if f.type == "recall.issued" or f.disposition == "covered")
        facts.extend(recall_facts[recall_id] for recall_id in covering if recall_id not in seen)


def _add_theft_selections(session: Session, per_unit: dict[store.UnitKey, list[Fact]]) -> dict[store.UnitKey, list[Fact]]:
    """Units named now get the stolen reports and recoveries over ranges and lists that cover them
    and are not in their history yet, as facts at the report's time: a unit received after a range
    report is flagged on arrival, a known one at its next event. Returns the histories it read (the
    units it matched), which the refold needs anyway."""
    indexes = store.theft_selection_index(session, {maker for maker, _ in per_unit})
    if not indexes:
        return {}
    matched: dict[store.UnitKey, list[Fact]] = {}
    for key in per_unit:
        index = indexes.get(key[0])
        if index is not None:
            matcher, facts = index
            for row_id in matcher.match(key[1], None):
                matched.setdefault(key, []).append(facts[row_id])
    if not matched:
        return {}
    histories = store.load_histories(session, matched)
    for key, covering in matched.items():
        applied = {(f.source, f.event_id) for f in (*histories.get(key, ()), *per_unit[key])}
        per_unit[key].extend(f for f in covering if (f.source, f.event_id) not in applied)
    return histories


def _withdrawal_event(identity: tuple) -> Event:
    manufacturer, serial, kind, source, event_id = identity
    return make_event(
        InventoryAnomalyWithdrawn(manufacturer=manufacturer, serial=serial, kind=kind, event_source=source,
                                  event_id=event_id),
        source=SOURCE,  # a random id: the same anomaly may be withdrawn, reopened and withdrawn again
    )


def _anomaly_event(row: dict) -> Event:
    identity = "/".join(store.anomaly_identity(row))
    return make_event(
        InventoryAnomalyDetected(
            manufacturer=row["manufacturer"], serial=row["serial"], kind=row["kind"], detail=row["detail"],
            event_type_seen=row["event_type"], event_source=row["event_source"], event_id=row["event_id"],
        ),
        source=SOURCE, id=str(uuid.uuid5(_IDS, f"anomaly/{identity}")), time=row["event_time"],
    )


def _quarantine_events(quarantines: dict[tuple[str, str, datetime], list[tuple[str, str | None]]]) -> list[Event]:
    """One unit.quarantined per (manufacturer, recall, time) and up to QUARANTINE_LIST units, not one
    per unit: a broadcast over 100,000 units is reported in 50 events."""
    events = []
    for (manufacturer, recall_id, time), units in sorted(quarantines.items()):
        units.sort()
        for start in range(0, len(units), QUARANTINE_LIST):
            part = units[start:start + QUARANTINE_LIST]
            # Deterministic id: a refold that quarantines the same units again emits the same event,
            # which consumers drop (and a quarantine report is a set-once fact anyway).
            digest = hashlib.sha256("\n".join(serial for serial, _ in part).encode()).hexdigest()
            listed = [{"serial": serial, "location": location} if location else {"serial": serial}
                      for serial, location in part]
            events.append(make_trusted_event(  # stored unit keys: valid by construction
                UnitQuarantined, {"manufacturer": manufacturer, "recall_id": recall_id, "units": listed},
                source=SOURCE, id=str(uuid.uuid5(_IDS, f"quarantine/{manufacturer}/{recall_id}/{digest}")), time=time,
            ))
    return events

"""Inventory's service layer: turn a batch of events into per-unit facts, fold, save.

Called by the shared consumer inside one transaction that also holds the inbox
rows, so everything here commits or rolls back together with "event applied".
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from shared import unit_locks
from shared.contracts import (
    InventoryAnomalyDetected,
    InventoryAnomalyWithdrawn,
    RecallAmended,
    RecallApplicationContinues,
    RecallClosed,
    RecallIssued,
    RecallRemedyCompleted,
    RecallScope,
    ShipmentDispatched,
    StockCounted,
    TheftRecovered,
    TheftReported,
    UnitAdjusted,
    UnitQuarantined,
    UnitQuarantineWithdrawn,
    UnitReceived,
    UnitReturned,
    UnitSold,
    UnitTransferred,
)
from shared.envelope import Event, make_event, make_trusted_event
from shared.store import add_to_outbox, as_utc, chunks, refresh_statistics, utcnow
from shared.unit_locks import UnitLocks
from shared.voids import VoidMark

from . import store
from .domain import Anomaly, Fact, Quarantined, UnitState, advance, fold, needs_refold, recall_coverage
from .reconciliation import MANIFEST_KINDS, Manifest, Receipt, judge_count, judge_manifests, receipts_of, state_at

log = logging.getLogger("serialtrack.inventory")

SERVICE = "inventory"
SOURCE = "serialtrack/inventory"
EVENT_TYPES = (
    "unit.received", "unit.transferred", "unit.sold", "unit.returned", "unit.adjusted",
    "theft.reported", "theft.recovered", "recall.issued", "recall.amended", "recall.closed",
    "recall.remedy.completed", "inventory.recall.continues", "shipment.dispatched", "stock.counted",
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


def _theft_selection_facts(session: Session, event: Event,
                           states: dict[store.UnitKey, UnitState]) -> Iterator[tuple[store.UnitKey, Fact]]:
    """A stolen report (or recovery) over a range or a list: one row, whatever its size, which a
    unit received later gets on arrival (_add_theft_selections). The units already known in it get
    it now, found by index (range bounds, serial list), as many as are known, never as many as
    serials in the range: a unit's stolen flag then never waits for its next event."""
    d = event.data
    assert isinstance(d, (TheftReported, TheftRecovered))
    selection = d.serial_range if d.serial_range is not None else d.serials
    assert selection is not None  # a single serial is applied as a fact of that unit
    fact = _theft_fact(event)
    store.save_theft_selection(session, d.manufacturer, selection, fact)
    for key, state in store.units_in_selection(session, d.manufacturer, selection).items():
        states[key] = state
        yield key, fact


def _recall_fact(event: Event, disposition: str | None = None) -> Fact:
    d = event.data
    assert isinstance(d, (RecallIssued, RecallAmended, RecallClosed, RecallRemedyCompleted))
    return Fact(time=event.time, source=event.source, event_id=event.id, type=event.type,
                recall_id=d.recall_id, disposition=disposition)


def _recall_facts(session: Session, event: Event, states: dict[store.UnitKey, UnitState],
                  outgoing: list[Event]) -> Iterator[tuple[store.UnitKey, Fact]]:
    """The units a recall event concerns, each with its facts. An issue, an amendment or a closure
    is stored, then the recall's facts are worked out again for every known unit any of its scopes
    covers (``domain.recall_coverage``): the facts follow from all the recall's events, never from
    the order they came in, so one process or several, in any order, end the same. Units found
    through the scopes come with their state, added to ``states``."""
    d = event.data
    if isinstance(d, RecallRemedyCompleted):
        yield (d.manufacturer, d.serial), _recall_fact(event)
        return
    if isinstance(d, (RecallIssued, RecallAmended)):
        fact = _recall_fact(event)
        store.save_recall(session, d, fact)  # the recall's row (status): the first of its events makes it
        store.save_recall_version(session, d, fact)
        known = store.get_recall_scope(session, d.recall_id)
        if known is None or event.time >= known[1]:  # the row shows the latest scope by event time
            store.set_recall_scope(session, RecallScope.model_validate(d.model_dump()), event.time)
    elif isinstance(d, RecallClosed):
        fact = _recall_fact(event)
        store.close_recall(session, d.recall_id, fact)
    elif isinstance(d, RecallApplicationContinues):
        fact = Fact(time=d.broadcast_time, source=d.broadcast_source, event_id=d.broadcast_id,
                    type="recall.issued", recall_id=d.recall_id)
        yield from _broadcast_step(session, d.recall_id, fact, d.after_serial, states, outgoing)
        return
    else:
        raise TypeError(f"inventory has no recall rule for {event.type}")
    yield from _broadcast_step(session, d.recall_id, fact, None, states, outgoing)


def _broadcast_step(session: Session, recall_id: str, trigger: Fact, after: str | None,
                    states: dict[store.UnitKey, UnitState],
                    outgoing: list[Event]) -> Iterator[tuple[store.UnitKey, Fact]]:
    """One step of a broadcast: up to RECALL_STEP known units after ``after`` (the first step: from
    the start) that any scope of the recall covers, each with the recall facts its history lacks,
    and the bookmark that starts the next step if more may follow. ``trigger``: the event that
    started the broadcast (it names the steps)."""
    scopes, (versions, closure) = store.recall_rules(session, recall_id)
    if not scopes:  # a closure before any issue or amendment: nothing to apply yet
        return
    units, bound = store.units_of_any_page(session, scopes, after, RECALL_STEP)
    if bound is not None:
        outgoing.append(make_event(
            RecallApplicationContinues(recall_id=recall_id, manufacturer=scopes[0].manufacturer, after_serial=bound,
                                       broadcast_source=trigger.source, broadcast_id=trigger.event_id,
                                       broadcast_time=trigger.time),
            source=SOURCE, id=str(uuid.uuid5(_IDS, f"recall-step/{trigger.source}/{trigger.event_id}/{bound}")),
        ))
    applied = store.recall_facts_applied(session, units)
    for key, state in units.items():
        done = applied.get(key, set())
        missing = [f for f in recall_coverage(versions, closure, key[1], state.sku) if (f.source, f.event_id) not in done]
        if missing:
            states[key] = state
            yield from ((key, fact) for fact in missing)


def apply_events(session: Session, events: list[Event]) -> None:
    per_unit: dict[store.UnitKey, list[Fact]] = {}
    states: dict[store.UnitKey, UnitState] = {}
    outgoing: list[Event] = []
    shipments: list[Event] = []
    counts: list[Event] = []
    for event in events:
        if isinstance(event.data, ShipmentDispatched):
            shipments.append(event)
        elif isinstance(event.data, StockCounted):
            counts.append(event)
        elif event.type.startswith("recall.") or event.type == RecallApplicationContinues.event_type:
            for key, fact in _recall_facts(session, event, states, outgoing):
                per_unit.setdefault(key, []).append(fact)
        elif isinstance(event.data, (TheftReported, TheftRecovered)) and event.data.serial is None:
            for key, fact in _theft_selection_facts(session, event, states):
                per_unit.setdefault(key, []).append(fact)
        else:
            for key, fact in facts_of(event):
                per_unit.setdefault(key, []).append(fact)

    for key, facts in per_unit.items():  # two broadcasts of one recall in a batch name a unit's fact twice
        if len(facts) > 1:
            unique = {(f.source, f.event_id): f for f in reversed(facts)}
            if len(unique) < len(facts):
                per_unit[key] = list(reversed(unique.values()))
    states.update(store.load_units(session, [key for key in per_unit if key not in states]))
    known = set(states)  # units inventory had before this batch
    _add_recall_coverage(session, per_unit, states)
    histories = _add_theft_selections(session, per_unit)
    late = [key for key, facts in per_unit.items() if needs_refold(states.get(key), facts)]
    unread = [key for key in late if key not in histories]
    if unread:
        histories.update(store.load_histories(session, unread))
    recorded = store.anomaly_identities(session, late) if late else {}

    saved_states, anomaly_rows = [], []
    history: list[tuple[store.UnitKey, Fact]] = []
    first_holds: dict[store.UnitKey, dict[str, store.Hold]] = {}  # per unit: each recall's first hold found now
    refolded: set[store.UnitKey] = set()
    withdraw: list[tuple] = []
    reopen: list[tuple] = []
    for key, facts in per_unit.items():
        outcome = advance(states.get(key), key[0], key[1], facts, histories.get(key, []))
        saved_states.append(outcome.state)
        history.extend((key, fact) for fact in facts)
        derived = [store.anomaly_row(key, e) for e in outcome.effects if isinstance(e, Anomaly)]
        if outcome.refolded:
            derived = _reconcile_anomalies(derived, recorded.get(key, {}), withdraw, reopen, outgoing)
        anomaly_rows.extend(derived)
        outgoing.extend(_anomaly_event(row) for row in derived)
        holds = _first_holds(outcome.effects)
        if outcome.refolded and outcome.state.recalls_seen:
            refolded.add(key)
            first_holds[key] = holds
        elif holds:
            first_holds[key] = holds
    hold_rows, held, released = _hold_changes(session, first_holds, refolded)
    outgoing.extend(_quarantine_events(held))
    outgoing.extend(_withdrawn_hold_events(released))

    store.save_units(session, saved_states)
    store.save_history(session, history)
    store.save_anomalies(session, anomaly_rows)
    store.save_holds(session, hold_rows)
    store.set_anomaly_status(session, withdraw, "withdrawn")
    store.set_anomaly_status(session, reopen, "open")
    # After the units and their history are saved: reconciliation reads them as they are now.
    _reconcile_manifests(session, shipments, per_unit, known, outgoing)
    _apply_counts(session, counts, per_unit, {(e.source, e.id) for e in events})
    add_to_outbox(session, SERVICE, outgoing)
    if sum(1 for key in per_unit if key not in known) >= LARGE_BATCH:  # a range receipt: the tables grew
        refresh_statistics(session, "inventory_units", "inventory_history")


def apply_voided(session: Session, arriving: list[Event], voids: list[VoidMark]) -> None:
    """Voids (shared/voids.py): events that arrived after their void join their units' histories
    without being applied; every unit a new void reaches is folded again from its history without
    the voided events, and what changes is reconciled as after a late event: anomalies withdrawn or
    reopened (and published), holds reported again or taken back."""
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
    first_holds: dict[store.UnitKey, dict[str, store.Hold]] = {}
    for key in keys:
        facts = histories.get(key, [])
        state, effects = fold(key[0], key[1], [f for f in facts if (f.source, f.event_id) not in marks])
        if state.last is None:  # only voided facts: a unit of unknown status, as known as its history
            state.last = max((f.order for f in facts), default=None)
            if state.last is None:
                continue
        saved.append(state)
        derived = [store.anomaly_row(key, e) for e in effects if isinstance(e, Anomaly)]
        fresh = _reconcile_anomalies(derived, recorded.get(key, {}), withdraw, reopen, outgoing)
        anomaly_rows.extend(fresh)
        outgoing.extend(_anomaly_event(row) for row in fresh)
        if state.recalls_seen:
            first_holds[key] = _first_holds(effects)
    hold_rows, held, released = _hold_changes(session, first_holds, set(first_holds))
    outgoing.extend(_quarantine_events(held))
    outgoing.extend(_withdrawn_hold_events(released))
    store.save_units(session, saved)
    store.save_anomalies(session, anomaly_rows)
    store.save_holds(session, hold_rows)
    store.set_anomaly_status(session, withdraw, "withdrawn")
    store.set_anomaly_status(session, reopen, "open")
    add_to_outbox(session, SERVICE, outgoing)


def _add_recall_coverage(session: Session, per_unit: dict[store.UnitKey, list[Fact]],
                         states: dict[store.UnitKey, UnitState]) -> None:
    """Units named now get the recall facts their history lacks, from every recall any of whose
    scopes covers them (open or closed), at the recall events' times: a unit received after a
    recall is quarantined on arrival, one whose sku just became known gets the recalls of its sku,
    and one first seen after an amendment narrowed a recall still shows it held in between."""
    indexes = store.recall_index(session, {maker for maker, _ in per_unit})
    if not indexes:
        return
    wanted: dict[store.UnitKey, list[tuple[str, str | None]]] = {}
    for key, facts in per_unit.items():
        index = indexes.get(key[0])
        if index is None:
            continue
        state = states.get(key)
        sku = (state.sku if state else None) or next((f.sku for f in facts if f.sku), None)
        # an index lookup: as cheap with 20 recalls of 1,000 ranges as with one
        covering = {match[0] for match in index[0].match(key[1], sku) if isinstance(match, tuple)}
        if covering:
            wanted[key] = [(recall_id, sku) for recall_id in sorted(covering)]
    if not wanted:
        return
    applied = store.recall_facts_applied(session, wanted)
    for key, recalls in wanted.items():
        rules = indexes[key[0]][1]
        facts = per_unit[key]
        done = applied.get(key, set()) | {(f.source, f.event_id) for f in facts}
        for recall_id, sku in recalls:
            versions, closure = rules[recall_id]
            for fact in recall_coverage(versions, closure, key[1], sku):
                if (fact.source, fact.event_id) not in done:
                    facts.append(fact)
                    done.add((fact.source, fact.event_id))


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


def _reconcile_anomalies(derived: list[dict], recorded: dict[tuple, str], withdraw: list[tuple], reopen: list[tuple],
                         outgoing: list[Event]) -> list[dict]:
    """After a unit's whole history was folded again: withdraw the recorded anomalies it no longer
    derives (they came from arrival order, or from a voided event), reopen the withdrawn ones it
    derives again, and return the new ones to record. Manifest anomalies are not the fold's:
    _judge_manifests reconciles them."""
    known = {i: status for i, status in recorded.items() if i[2] not in MANIFEST_KINDS}
    derived_ids = {store.anomaly_identity(row) for row in derived}
    withdrawn_now = [i for i, status in known.items() if status == "open" and i not in derived_ids]
    withdraw.extend(withdrawn_now)
    reopen.extend(i for i in derived_ids if known.get(i) == "withdrawn")
    outgoing.extend(_withdrawal_event(identity) for identity in withdrawn_now)
    return [row for row in derived if store.anomaly_identity(row) not in known]


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


def _first_holds(effects: list) -> dict[str, store.Hold]:
    """Each recall's first hold among ``effects`` (time order), with where the unit was."""
    first: dict[str, tuple] = {}
    for effect in effects:
        if isinstance(effect, Quarantined) and (effect.recall_id not in first
                                                or effect.fact.order < first[effect.recall_id][0]):
            first[effect.recall_id] = (effect.fact.order, effect.location)
    return {recall_id: (order[0], location) for recall_id, (order, location) in first.items()}


Reports = dict[tuple[str, str, datetime | None], list[tuple[str, str | None, int]]]


def _hold_changes(session: Session, first_holds: dict[store.UnitKey, dict[str, store.Hold]],
                  refolded: set[store.UnitKey]) -> tuple[list[dict], Reports, Reports]:
    """What inventory must report of its holds: a refolded unit's first hold per recall, from its
    whole history, replaces what was reported (a hold taken back when there is none now); a unit
    applied in order reports a new hold only where none stands (its new facts are later than all
    it had, so an earlier hold stays the first). Returns the rows to store, and the holds and
    withdrawals to report, by (manufacturer, recall, time)."""
    stored = store.load_holds(session, first_holds) if first_holds else {}
    rows: list[dict] = []
    held: Reports = {}
    released: Reports = {}
    no_hold: store.Hold = (None, None)
    for key, holds in first_holds.items():
        reported = stored.get(key, {})
        recalls = set(holds) | (set(reported) if key in refolded else set())
        for recall_id in sorted(recalls):
            now = holds.get(recall_id, no_hold)
            before, revision = reported.get(recall_id, (no_hold, 0))
            if now == before or (key not in refolded and before[0] is not None):
                continue
            revision += 1
            rows.append({"manufacturer": key[0], "serial": key[1], "recall_id": recall_id, "held_at": now[0],
                         "location": now[1], "revision": revision})
            (held if now[0] is not None else released).setdefault((key[0], recall_id, now[0]), []).append(
                (key[1], now[1], revision))
    return rows, held, released


def _quarantine_events(quarantines: Reports) -> list[Event]:
    """One unit.quarantined per (manufacturer, recall, time) and up to QUARANTINE_LIST units, not one
    per unit: a broadcast over 100,000 units is reported in 50 events."""
    events = []
    for (manufacturer, recall_id, time), units in sorted(quarantines.items(), key=lambda item: str(item[0])):
        assert time is not None  # a hold has its time
        units.sort()
        for start in range(0, len(units), QUARANTINE_LIST):
            part = units[start:start + QUARANTINE_LIST]
            # Deterministic id: the same reports again (a redelivered batch) are the same event.
            digest = hashlib.sha256("\n".join(f"{serial}/{revision}" for serial, _, revision in part).encode()).hexdigest()
            listed = [{"serial": serial, "location": location, "revision": revision} if location
                      else {"serial": serial, "revision": revision} for serial, location, revision in part]
            events.append(make_trusted_event(  # stored unit keys: valid by construction
                UnitQuarantined, {"manufacturer": manufacturer, "recall_id": recall_id, "units": listed},
                source=SOURCE, id=str(uuid.uuid5(_IDS, f"quarantine/{manufacturer}/{recall_id}/{digest}")), time=time,
            ))
    return events


def _withdrawn_hold_events(withdrawals: Reports) -> list[Event]:
    """One unit.quarantine.withdrawn per (manufacturer, recall) and up to QUARANTINE_LIST units."""
    events = []
    for (manufacturer, recall_id, _), units in sorted(withdrawals.items(), key=lambda item: item[0][:2]):
        units.sort()
        for start in range(0, len(units), QUARANTINE_LIST):
            part = units[start:start + QUARANTINE_LIST]
            digest = hashlib.sha256("\n".join(f"{serial}/{revision}" for serial, _, revision in part).encode()).hexdigest()
            listed = [{"serial": serial, "revision": revision} for serial, _, revision in part]
            events.append(make_trusted_event(
                UnitQuarantineWithdrawn, {"manufacturer": manufacturer, "recall_id": recall_id, "units": listed},
                source=SOURCE, id=str(uuid.uuid5(_IDS, f"hold-withdrawn/{manufacturer}/{recall_id}/{digest}")),
                time=utcnow(),
            ))
    return events
# --- shipment manifests: receipts reconciled against them (reconciliation.judge_manifests) ----------------

# Due manifests checked per transaction: housekeeping checks one and leaves the next to its next
# transaction, so a lost truck of 100,000 units holds the writer about as long as a bulk receipt.
DEADLINES_PER_CHECK = 1


def deadline_of(expected_arrival, grace_days: int) -> datetime:
    """The end of the expected arrival day (UTC) plus the grace period."""
    return datetime.combine(expected_arrival, datetime.min.time(), tzinfo=UTC) + timedelta(days=1 + grace_days)


def _shipment_row(event: Event) -> dict:
    d = event.data
    assert isinstance(d, ShipmentDispatched)
    return {
        "shipment_id": d.shipment_id, "part": d.part, "manufacturer": d.manufacturer, "from_location": d.from_location,
        "to_location": d.to_location, "retailer": d.retailer, "sku": d.sku,
        "expected_arrival": d.expected_arrival.isoformat(), "grace_days": d.grace_days,
        "deadline": deadline_of(d.expected_arrival, d.grace_days),
        "serials": json.dumps(list(dict.fromkeys(d.serials))) if d.serials else None,
        "serial_ranges": json.dumps([r.model_dump() for r in d.serial_ranges]) if d.serial_ranges else None,
        "expected_count": d.unit_count, "event_time": event.time, "event_source": event.source,
        "event_id": event.id, "swept_at": None, "recorded_at": utcnow(),
    }


def _reconcile_manifests(session: Session, shipments: list[Event], per_unit: dict[store.UnitKey, list[Fact]],
                         known: set[store.UnitKey], outgoing: list[Event]) -> None:
    """Store new manifests (one row each, whatever their size) and judge the units that need it: the
    ones received now that a manifest covers or at a location that takes manifests, and the ones a
    new manifest covers that were received at or after its dispatch (their receipt came first)."""
    to_judge: set[store.UnitKey] = set()
    for event in shipments:
        d = event.data
        assert isinstance(d, ShipmentDispatched)
        held_by = store.save_shipment(session, _shipment_row(event))
        if held_by is not None:
            log.warning("inventory: shipment.dispatched %s %s not applied: %s", event.source, event.id, held_by)
            continue
        selections: list = [*(d.serial_ranges or ()), *([d.serials] if d.serials else ())]
        for selection in selections:
            to_judge.update(store.units_with_event_since(session, d.manufacturer, selection, event.time,
                                                         "unit.received"))
    received = {key: receipts for key, facts in per_unit.items() if (receipts := receipts_of(facts))}
    covering: dict[store.UnitKey, list[Manifest]] = {}
    if received:
        index = store.shipment_index(session, {maker for maker, _ in received})
        destinations = store.manifests_to(session, {r.location for rs in received.values() for r in rs})
        for key, receipts in received.items():
            maker_index = index.get(key[0])
            covering[key] = _covering(maker_index, key[1])
            if covering[key] or any(r.location in destinations for r in receipts):
                to_judge.add(key)
    if to_judge:
        _judge_manifests(session, sorted(to_judge), per_unit, known, outgoing, covering, received)


def _covering(maker_index: store.ManifestIndex | None, serial: str) -> list[Manifest]:
    if maker_index is None:
        return []
    matcher, manifests = maker_index
    # dict.fromkeys: a serial in two ranges (or listed and in a range) of one manifest is on it once
    return [manifests[i] for i in dict.fromkeys(matcher.serial_candidates(serial))]


def _judge_manifests(session: Session, keys: list[store.UnitKey], per_unit: dict[store.UnitKey, list[Fact]],
                     known: set[store.UnitKey], outgoing: list[Event],
                     covering: dict[store.UnitKey, list[Manifest]] | None = None,
                     batch_receipts: dict[store.UnitKey, list[Receipt]] | None = None) -> None:
    """Judge ``keys`` against every manifest that covers them and reconcile with what was recorded:
    their shipment rows replaced where they changed; anomalies recorded, withdrawn (a late event
    explained them) or reopened, and published. ``covering`` and ``batch_receipts``: what the
    caller already looked up (the manifest index is up to date: a new manifest of the batch changed
    its version only before the lookups)."""
    covering = dict(covering or {})
    batch_receipts = batch_receipts or {}
    index = store.shipment_index(session, {maker for maker, _ in keys})
    # Receipts: a unit new in this batch has only the batch's; others are read from their history
    # (saved already, this batch's facts included).
    from_history = [key for key in keys if key in known or key not in per_unit]
    histories = store.load_histories(session, from_history) if from_history else {}
    receipts: dict[store.UnitKey, list[Receipt]] = {}
    for key in keys:
        if key in known or key not in per_unit:
            receipts[key] = receipts_of(histories.get(key, ()))
        else:
            found = batch_receipts.get(key)
            receipts[key] = found if found is not None else receipts_of(per_unit[key])
        if key not in covering:
            covering[key] = _covering(index.get(key[0]), key[1])
    destinations = store.manifests_to(session, {r.location for rs in receipts.values() for r in rs})
    # What was recorded about a unit new in this batch can only come from a checked deadline (a unit
    # missing before it was ever received): the common bulk receipt reads nothing more.
    recorded_keys = [key for key in keys if key not in per_unit or key in known or any(m.due for m in covering[key])]
    stored_rows = store.shipment_units_of(session, recorded_keys) if recorded_keys else {}
    recorded = store.anomaly_identities(session, recorded_keys) if recorded_keys else {}
    stale: list[store.UnitKey] = []
    rows: list[tuple] = []
    new_anomalies: list[dict] = []
    withdraw: list[tuple] = []
    reopen: list[tuple] = []
    no_rows: set[tuple] = set()
    for key in keys:
        judged, anomalies = judge_manifests(covering[key], receipts[key], destinations)
        tuples = {store.shipment_unit_tuple(key, row) for row in judged}
        before = stored_rows.get(key, no_rows)
        if tuples != before:
            if before:
                stale.append(key)
            rows.extend(tuples)
        kept = {i: status for i, status in recorded.get(key, {}).items() if i[2] in MANIFEST_KINDS}
        if not (anomalies or kept):
            continue  # the common case: received as expected, nothing recorded
        derived = [store.anomaly_row(key, Anomaly(a.kind, a.detail, Fact(time=a.event[0], source=a.event[1],
                                                                         event_id=a.event[2], type=a.event_type)))
                   for a in anomalies]
        derived_ids = {store.anomaly_identity(row) for row in derived}
        withdrawn_now = [i for i, status in kept.items() if status == "open" and i not in derived_ids]
        withdraw.extend(withdrawn_now)
        outgoing.extend(_withdrawal_event(identity) for identity in withdrawn_now)
        reopen.extend(i for i in derived_ids if kept.get(i) == "withdrawn")
        fresh = [row for row in derived if store.anomaly_identity(row) not in kept]
        new_anomalies.extend(fresh)
        outgoing.extend(_anomaly_event(row) for row in fresh)
    store.replace_shipment_units(session, stale, rows)
    store.save_anomalies(session, new_anomalies)
    store.set_anomaly_status(session, withdraw, "withdrawn")
    store.set_anomaly_status(session, reopen, "open")


def check_deadlines(session: Session, outgoing: list[Event], now: datetime, limit: int = DEADLINES_PER_CHECK) -> int:
    """Check manifests whose deadline passed: each of their units not received by it becomes
    ``missing_in_transit``. The judgement is by event time, so when this runs changes nothing but
    how soon it is reported. On PostgreSQL it first takes their manufacturers' locks, as a batch of a
    range event would (shared/unit_locks.py), so no batch judges their units at the same time."""
    due = store.due_shipments(session, now, limit)
    if not due:
        return 0
    locks = UnitLocks()
    for row in due:
        locks.whole(row.manufacturer)
    unit_locks.take(session, locks)
    checked = 0
    for row in store.due_shipments(session, now, limit):  # again, under the locks: another process may have
        # checked some meanwhile
        store.mark_swept(session, row.id, now)
        keys = list(dict.fromkeys((row.manufacturer, serial) for serial in store.shipment_serials(row)))
        for start in range(0, len(keys), 100_000):
            _judge_manifests(session, keys[start:start + 100_000], {}, set(), outgoing)
        checked += 1
    return checked


def housekeeping(session: Session) -> int:
    """What the service does between batches, every SERIALTRACK_HOUSEKEEPING_S (shared/consumer.py):
    the manifest whose deadline passed first, if any. Returns how many it checked (0 or 1)."""
    outgoing: list[Event] = []
    checked = check_deadlines(session, outgoing, utcnow())
    add_to_outbox(session, SERVICE, outgoing)
    return checked


# --- stock counts (reconciliation.judge_count) ---------------------------------------------------------------

def _apply_counts(session: Session, counts: list[Event], per_unit: dict[store.UnitKey, list[Fact]],
                  batch: set[tuple[str, str]]) -> None:
    """Store count parts; judge a count when its last part is in. An event of this ``batch`` (its
    (source, id)s) dated at or before a count already judged changes that count's judgement of its
    units (judged by event time). Facts the batch only brought along (an open recall reaching a unit
    first seen now, at the recall's time) are not such events."""
    late = {key: times for key, facts in per_unit.items()
            if (times := [fact.time for fact in facts if (fact.source, fact.event_id) in batch])}
    if late:
        earliest = min(min(times) for times in late.values())
        for count in store.counts_judged_since(session, earliest):
            counted_at = as_utc(count.counted_at)
            keys = [key for key, times in late.items() if min(times) <= counted_at]
            if keys:
                seen = {key for key, judged in store.count_judgements(session, count.count_id, keys).items()
                        if judged[1]}
                _judge_count(session, count.count_id, count.location, counted_at, keys, seen)
    ready: list[str] = []
    for event in counts:
        d = event.data
        assert isinstance(d, StockCounted)
        units = list(dict.fromkeys((u.manufacturer, u.serial) for u in d.units))
        refused = store.save_count_part(session, d.count_id, d.location, d.counted_at, d.part, d.final, units,
                                        (event.time, event.source, event.id))
        if refused:
            log.warning("inventory: stock.counted %s %s not applied: %s", event.source, event.id, refused)
            continue
        ready.append(d.count_id)
    for count_id in dict.fromkeys(ready):
        count = store.count_ready(session, count_id)
        if count is None:
            continue
        counted_at = as_utc(count.counted_at)
        seen = store.counted_units(session, count_id)
        here, moved = store.count_candidates(session, count.location, counted_at)
        _judge_count(session, count_id, count.location, counted_at, sorted(here | moved | seen), seen)
        store.complete_count(session, count_id)


def _judge_count(session: Session, count_id: str, location: str, counted_at: datetime,
                 keys: Iterable[store.UnitKey], seen: set[store.UnitKey]) -> None:
    """Each unit as it was at ``counted_at`` (its history folded up to then when anything happened to
    it since) against the count; the judgements saved, a unit that no longer concerns it dropped."""
    keys = list(keys)
    states = store.load_units(session, keys)
    later = [key for key, state in states.items() if state.last is not None and state.last[0] > counted_at]
    histories = store.load_histories(session, later) if later else {}
    judged = {}
    for key in keys:
        state = states.get(key)
        if key in histories or (state is not None and key in later):
            state = state_at(key[0], key[1], histories.get(key, []), counted_at)
        judged[key] = judge_count(state, key in seen, location)
    store.save_count_judgements(session, count_id, judged)

"""Theft watch's service layer: record registry facts and sightings, re-derive the alerts of every
unit a batch touched that has both, reconcile them with the stored ones, publish the difference.

Called by the shared consumer inside one transaction that also holds the inbox rows, so the rows,
the alert changes and the outgoing events commit or roll back together with "event applied".
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from typing import Any

from sqlalchemy.orm import Session

from shared.contracts import (
    AlertSighting,
    NearSerial,
    ReturnRequested,
    TheftAlertRaised,
    TheftAlertWithdrawn,
    TheftRecovered,
    TheftReported,
    UnitAdjusted,
    UnitReceived,
    UnitReturned,
    UnitSold,
    UnitTransferred,
    WarrantyClaimSubmitted,
)
from shared.envelope import Event, make_event
from shared.identity import SerialRange
from shared.store import add_to_outbox, utcnow
from shared.unit_locks import UnitLocks, with_keys
from shared.voids import VoidMark

from . import store
from .domain import (
    AGENCY,
    FUZZY_SIGHTING_TYPES,
    RETAILER,
    RETAILER_AGENCY,
    RETAILER_REPORT_DISPOSITIONS,
    SIGHTING_TYPES,
    Alert,
    Sighting,
    derive_alerts,
    derive_possible_matches,
    priority_of,
    reconcile,
    retailer_case_number,
)
from .near import NearReason, normalize

SERVICE = "theft"
SOURCE = "serialtrack/theft"
# Applied around this module by shared/erasure.py (ServiceDefinition.customer_data): erasure requests,
# and the other services' reports of them, whose receipts theft keeps without knowing their customer.
EVENT_TYPES = ("theft.reported", "theft.recovered", "unit.adjusted", *SIGHTING_TYPES, "customer.erasure.requested",
               "customer.erasure.completed",
               "event.voided")  # applied around this module by shared/voids.py: apply_voided below
CLOSED = "the case was closed (recovered or found) before the unit was seen"
VOIDED = "the event it was raised on was voided (event.voided)"


def sightings_of(event: Event) -> Iterator[tuple[store.UnitKey, Sighting]]:
    """The units an event names, and where, when and by whom they were seen."""
    d = event.data
    base: dict[str, Any] = {"time": event.time, "source": event.source, "event_id": event.id, "type": event.type}
    if isinstance(d, UnitReceived):
        sighting = Sighting(**base, location=d.location)
        for serial in d.iter_serials():
            yield (d.manufacturer, serial), sighting
    elif isinstance(d, UnitSold):
        yield (d.manufacturer, d.serial), Sighting(**base, location=d.location, terminal_id=d.terminal_id,
                                                   reference=d.receipt_id)
    elif isinstance(d, UnitReturned):
        yield (d.manufacturer, d.serial), Sighting(**base, location=d.location, reference=d.receipt_id)
    elif isinstance(d, UnitTransferred):
        yield (d.manufacturer, d.serial), Sighting(**base, location=d.to_location)
    elif isinstance(d, WarrantyClaimSubmitted):
        yield (d.manufacturer, d.serial), Sighting(**base, location=d.location, reference=d.claim_id)
    elif isinstance(d, ReturnRequested):
        yield (d.manufacturer, d.serial), Sighting(**base, location=d.location, terminal_id=d.terminal_id,
                                                   reference=d.request_id)
    else:
        raise TypeError(f"{event.type} is not a sighting")


def _registry_base(event: Event, now) -> dict:
    return {"event_type": event.type, "event_source": event.source, "event_id": event.id, "recorded_at": now,
            "event_time": event.time, "description": None, "contact": None, "location": None,
            "disposition": None}


class _Batch:
    """The rows one batch adds and the units it touches."""

    def __init__(self) -> None:
        self.now = utcnow()
        self.registry: list[dict] = []
        self.ranges: list[dict] = []
        self.sightings: dict[tuple, dict] = {}
        self.sighted: set[store.UnitKey] = set()
        self.fuzzy_sighted: set[store.UnitKey] = set()  # sold, returned or claimed: checked for near misses
        self.reported: set[store.UnitKey] = set()
        self.reported_ranges: list[tuple[str, SerialRange]] = []

    def add(self, event: Event) -> None:
        d = event.data
        if isinstance(d, (TheftReported, TheftRecovered)):
            self._add_agency_fact(event, d)
        elif isinstance(d, UnitAdjusted):
            self._add_retailer_fact(event, d)
        else:
            for key, s in sightings_of(event):
                self.sighted.add(key)
                if s.type in FUZZY_SIGHTING_TYPES:
                    self.fuzzy_sighted.add(key)
                self.sightings[(*key, s.source, s.event_id)] = {
                    "manufacturer": key[0], "serial": key[1], "event_source": s.source, "event_id": s.event_id,
                    "event_time": s.time, "event_type": s.type, "location": s.location,
                    "terminal_id": s.terminal_id, "reference": s.reference, "recorded_at": self.now,
                }

    def _add_agency_fact(self, event: Event, d: TheftReported | TheftRecovered) -> None:
        row = {**_registry_base(event, self.now), "origin": AGENCY, "agency": d.agency,
               "case_number": d.case_number, "manufacturer": d.manufacturer}
        if isinstance(d, TheftReported):
            row.update(kind="reported", description=d.description or None, contact=d.contact,
                       event_time=d.reported_at or event.time)
        else:
            row["kind"] = "recovered"
        if d.serial_range is not None:
            rng = d.serial_range
            self.ranges.append({**row, "range_prefix": rng.prefix, "range_first": rng.first,
                                "range_last": rng.last, "range_width": rng.width})
            self.reported_ranges.append((d.manufacturer, rng))
            return
        for serial in d.iter_serials():
            self.registry.append({**row, "serial": serial})
            self.reported.add((d.manufacturer, serial))

    def _add_retailer_fact(self, event: Event, d: UnitAdjusted) -> None:
        disposition = d.disposition.value
        if disposition in RETAILER_REPORT_DISPOSITIONS:
            kind, case_number = "reported", retailer_case_number(event.source, event.id)
        elif disposition == "found":
            kind, case_number = "found", "*"  # closes every retailer case of the unit opened before it
        else:
            return  # damaged, destroyed, quarantined, sellable: nothing for the theft watch
        self.registry.append({
            **_registry_base(event, self.now), "kind": kind, "origin": RETAILER, "agency": RETAILER_AGENCY,
            "case_number": case_number, "manufacturer": d.manufacturer, "serial": d.serial,
            "location": d.location, "disposition": disposition, "description": d.note or None,
        })
        self.reported.add((d.manufacturer, d.serial))


def near_lock_keys(locks: UnitLocks, event: Event) -> None:
    """Beyond the units it names (shared/unit_locks.py), a batch locks the homoglyph-normalized form
    of each serial it reports or sees sold, returned or claimed: two processes applying a report and
    a misread sale of it at once then wait for each other, as they do for one unit. Edit-distance
    pairs share no single key (13 locks per serial would lock whole manufacturers at a few hundred
    sales a batch): docs/theft.md, "Limits"."""
    d: Any = event.data
    named = event.type in FUZZY_SIGHTING_TYPES or isinstance(d, (TheftReported, TheftRecovered, UnitAdjusted))
    if named and getattr(d, "serial_range", None) is None:  # a range locks its whole manufacturer already
        for serial in d.iter_serials() if hasattr(d, "iter_serials") else (d.serial,):
            locks.key("near", d.manufacturer, normalize(serial), manufacturer=d.manufacturer)


LOCKS = with_keys(near_lock_keys)


def apply_events(session: Session, events: list[Event]) -> None:
    batch = _Batch()
    for event in events:
        batch.add(event)
    store.save_registry(session, batch.registry)
    store.save_registry_ranges(session, batch.ranges)
    store.save_sightings(session, list(batch.sightings.values()))
    store.save_near_keys(session, batch.registry, batch.sightings.values())

    # Only a unit with both a registry entry and a sighting can have alerts: find those by index.
    affected = set(store.registry_rows(session, batch.sighted)) if batch.sighted else set()
    # A sale, return or claim of a serial near a reported one (looked up once: rederive reuses it).
    near_found = store.near_stolen_serials(session, batch.fuzzy_sighted) if batch.fuzzy_sighted else {}
    affected |= set(near_found)
    if batch.reported:
        affected |= store.sighted_keys(session, batch.reported)
        affected |= store.near_sighted(session, batch.reported)
    for manufacturer, rng in batch.reported_ranges:
        affected |= store.sighted_in_range(session, manufacturer, rng)
        affected |= store.near_sighted_in_range(session, manufacturer, rng)
    if affected:
        add_to_outbox(session, SERVICE, rederive(session, affected, (batch.fuzzy_sighted, near_found)))


def apply_voided(session: Session, arriving: list[Event], voids: list[VoidMark]) -> None:
    """Voids (shared/voids.py): sightings and retailer reports that arrived after their void are
    stored (``GET /stolen`` shows them, marked) but never alerted on; the units a new void reaches
    have their alerts derived again without the voided events, so an alert raised on a voided sale
    is withdrawn (``theft.alert.withdrawn``, with that reason)."""
    batch = _Batch()
    for event in arriving:
        batch.add(event)
    store.save_registry(session, batch.registry)
    store.save_sightings(session, list(batch.sightings.values()))
    keys: set[store.UnitKey] = set()
    for mark in voids:
        keys |= store.units_with_event(session, mark.manufacturer, mark.voided_source, mark.voided_id)
    # Units with a report left, or with alerts (a voided retailer report leaves its alerts, not its case).
    affected = set(store.registry_rows(session, keys)) | set(store.stored_alerts(session, keys)) if keys else set()
    if affected:
        add_to_outbox(session, SERVICE, rederive(session, affected, voided={mark.ref for mark in voids}))


NearLookups = tuple[set[store.UnitKey], dict[store.UnitKey, dict[str, NearReason]]]


def rederive(session: Session, keys: set[store.UnitKey], known: NearLookups | None = None,
             voided: AbstractSet[tuple[str, str]] = frozenset()) -> list[Event]:
    """Derive each unit's alerts from all its facts and store/publish what changed. ``known``: units
    whose near stolen serials were already looked up, and what was found. ``voided``: the events
    just voided, to say why an alert raised on one of them is withdrawn."""
    registry = store.registry_rows(session, keys)
    sightings = store.sightings_of(session, keys)
    stored = store.stored_alerts(session, keys)
    # Near misses: only units sold, returned or claimed, then the facts of the serials they resemble.
    fuzzy = {key for key in keys if any(s.type in FUZZY_SIGHTING_TYPES for s in sightings.get(key, ()))}
    looked_up, found = known or (set(), {})
    near = {key: found[key] for key in fuzzy if key in found}
    if fuzzy - looked_up:
        near |= store.near_stolen_serials(session, fuzzy - looked_up)
    near_registry = store.registry_rows(session, {(k[0], other) for k, found in near.items() for other in found})
    new_rows: list[dict] = []
    withdrawn_ids: list[str] = []
    reopened_ids: list[str] = []
    outgoing: list[Event] = []
    for key in sorted(keys):
        own = [store.registry_fact(r) for r in registry.get(key, ())]
        derived = derive_alerts(key[0], key[1], own, sightings.get(key, ()))
        if key in near:
            derived |= derive_possible_matches(key[0], key[1], own, sightings.get(key, ()), {
                other: (reason, [store.registry_fact(r) for r in near_registry.get((key[0], other), ())])
                for other, reason in near[key].items()})
        before = stored.get(key, {})
        result = reconcile(derived, before)
        new_rows.extend(store.alert_row(key, a) for a in result.raised)
        outgoing.extend(_alert_event(key, a, a.alert_id) for a in result.raised)
        for alert in result.changed:
            store.update_alert_content(session, key, alert)
        for alert in result.reopened:
            store.update_alert_content(session, key, alert)
            reopened_ids.append(alert.alert_id)
            # A new envelope id: consumers already applied the first raise of this alert id.
            outgoing.append(_alert_event(key, alert, str(uuid.uuid4())))
        for alert_id in result.withdrawn:
            withdrawn_ids.append(alert_id)
            alert = before[alert_id][1]
            on_voided = any((s.source, s.event_id) in voided for s in alert.sightings) or any(
                alert.origin == RETAILER and alert.case_number == retailer_case_number(*ref) for ref in voided)
            outgoing.append(_withdrawal_event(key, alert, VOIDED if on_voided else WITHDRAWN_BECAUSE.get(alert.kind, CLOSED)))
    store.save_alerts(session, new_rows)
    store.set_alert_status(session, withdrawn_ids, "withdrawn")
    store.set_alert_status(session, reopened_ids, "open")
    return outgoing


def _alert_event(key: store.UnitKey, alert: Alert, event_id: str) -> Event:
    return make_event(
        TheftAlertRaised(
            alert_id=alert.alert_id, kind=alert.kind, manufacturer=key[0], serial=key[1], origin=alert.origin,
            agency=alert.agency, case_number=alert.case_number, seen_at=alert.seen_at,
            priority=priority_of(alert.kind),
            near_matches=[NearSerial(serial=n.serial, reason=n.reason) for n in alert.near],
            sightings=[AlertSighting(event_type=s.type, event_source=s.source, event_id=s.event_id, seen_at=s.time,
                                     location=s.location, terminal_id=s.terminal_id, reference=s.reference)
                       for s in alert.sightings],
        ),
        # The alert id is derived from (sighting, unit, case): a redelivered sighting or a refold
        # that derives the alert again produces the same envelope, which consumers drop.
        source=SOURCE, id=event_id, time=alert.seen_at,
    )


WITHDRAWN_BECAUSE = {
    "possible_match": "the case of the similar serial was closed before the unit was seen, or the unit itself was "
                      "reported (an exact alert replaces this one)",
}


def _withdrawal_event(key: store.UnitKey, alert: Alert, reason: str) -> Event:
    return make_event(
        TheftAlertWithdrawn(alert_id=alert.alert_id, manufacturer=key[0], serial=key[1], agency=alert.agency,
                            case_number=alert.case_number, reason=reason),
        source=SOURCE,  # a random id: an alert may be withdrawn, reopened and withdrawn again
    )

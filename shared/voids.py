"""Corrections without rewriting history: ``event.voided`` (GS1 EPCIS errorDeclaration), once for
every service that folds units (README, "Corrections").

A void withdraws one earlier event. Nothing is deleted: the voided event stays in every history,
marked; each service folds its units again without it, so state, anomalies, alerts, decisions and
campaign counts end as if it had never been published, and what it caused is withdrawn through the
service's usual reconciliation (anomaly and alert withdrawals, new decision versions).

The parts, in the order an event meets them:

- **Who may void** (``check_publisher``, called by shared/trust.py after the signature verified;
  ``event.voided`` must always be signed): the key's role must be one that may publish the voided
  type (a till voids sales and returns, a warehouse receipts, transfers and adjustments; the operator
  anything voidable), and its source prefix, where it has one, must cover the voided event's source:
  a key of store 12 cannot void store 13's sale. Otherwise the void is dead-lettered as
  ``void_not_allowed`` by every service, and nothing of it applies.
- **Recorded** (the plumbing table ``voids``, one row per voided event and service): the first void
  of an event wins; a second void of it, or the same void delivered again, changes nothing.
- **Applied** (``applier``, around the service's handler, inside the batch's transaction): the
  batch's new voids are recorded; their corrected events are applied as normal events (each with an
  inbox row of its own, so a copy published on its own stream is a duplicate); an event that arrives
  after its void is held back from the fold and given to the service's ``apply_voided`` to be kept
  as history only; then ``apply_voided`` folds again every unit a new void concerns.
- **Order tolerance**: a void whose event is unknown waits in ``voids``; the event, when it arrives,
  is found there (one look-up per batch by event id) and never enters a fold.
- **Read** (``voided_among``): services drop voided facts from what they fold and mark them in the
  histories their APIs show (``VoidMark``).

A void applies to the event only if the event is of the ``voided_type`` and ``manufacturer`` it
names: a void that names a sale but finds a receipt under that (source, id) changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NoReturn

from pydantic import BaseModel
from sqlalchemy.orm import Session

from .contracts import EVENT_TYPES, VOIDABLE_TYPES, EventVoided
from .envelope import Envelope, Event
from .roles import ROLE_TYPES
from .signing import VOID_NOT_ALLOWED, SignatureRejected
from .store import VoidRow as _VoidRow
from .store import chunks, claim_inbox, driver_rows, insert_ignore, read_time, table_of, utcnow

if TYPE_CHECKING:
    from .keys import KeyRecord

log = logging.getLogger("serialtrack.voids")

VOIDED = EventVoided.event_type
VOIDABLE = frozenset(VOIDABLE_TYPES)
# session.info key: how the service readies events that did not come through the consumer (erasure's
# pseudonymization, set by shared/erasure.py around this applier), for the corrected events.
PREPARE_ARRIVALS = "serialtrack_prepare_arrivals"
_CORRECTION_IDS = uuid.UUID("5d0c8f3e-1a7b-4c52-9e8d-2f6b7a1c3e94")
_voids = table_of(_VoidRow)

# (source, id) of an event
Ref = tuple[str, str]


@dataclass(frozen=True, slots=True)
class VoidMark:
    """A recorded void: what the histories show beside the voided event."""

    voided_source: str
    voided_id: str
    voided_type: str
    manufacturer: str
    void_source: str
    void_id: str
    void_time: datetime
    reason: str

    @property
    def ref(self) -> Ref:
        return (self.voided_source, self.voided_id)

    def applies_to(self, event_type: str, manufacturer: str) -> bool:
        return event_type == self.voided_type and manufacturer == self.manufacturer


class VoidOut(BaseModel):
    """A history entry's void, in the read APIs."""

    source: str  # the void's
    id: str
    time: datetime
    reason: str


def void_out(mark: VoidMark | None) -> VoidOut | None:
    return None if mark is None else VoidOut(source=mark.void_source, id=mark.void_id, time=mark.void_time,
                                             reason=mark.reason)


# --- who may void ----------------------------------------------------------------------------------

def check_publisher(data: EventVoided, key: KeyRecord) -> None:
    """SignatureRejected(``void_not_allowed``) unless ``key`` (which signed the void) may withdraw the
    event it names: its role may publish the voided type, and its source prefix covers the voided
    event's source. A manufacturer key's binding to ``data.manufacturer`` was checked with the
    signature (shared/signing.py). Consumers run it after verifying the signature (shared/trust.py),
    producers before they send (``Signer.sign``)."""
    def refuse(detail: str) -> NoReturn:
        raise SignatureRejected(VOID_NOT_ALLOWED, detail, key.kid)

    if data.voided_type not in ROLE_TYPES.get(key.role, frozenset()):
        refuse(f"key {key.kid} ({key.role}) may not void a {data.voided_type}: only a role that may publish it "
               "may withdraw it")
    if not key.allows_source(data.voided_source):
        refuse(f"key {key.kid} speaks for sources under {key.source_prefix!r}, not for {data.voided_source!r}, "
               "which published the voided event")
    # The corrected event is of the voided type (the contract checks it): the same role publishes it.


# --- recorded --------------------------------------------------------------------------------------

def _mark(void: Event) -> VoidMark:
    d = void.data
    assert isinstance(d, EventVoided)
    return VoidMark(d.voided_source, d.voided_id, d.voided_type, d.manufacturer, void.source, void.id, void.time,
                    d.reason)


def record(session: Session, service: str, voids: Sequence[Event]) -> list[tuple[VoidMark, Event]]:
    """Record the batch's voids; returns those that are new (not a second void of an event)."""
    marks: dict[Ref, tuple[VoidMark, Event]] = {}
    for void in sorted(voids, key=lambda e: (e.time, e.source, e.id)):  # the earliest of a batch wins
        mark = _mark(void)
        marks.setdefault(mark.ref, (mark, void))
    known = set(voided_among(session, service, [(*ref, m.voided_type, m.manufacturer)
                                                for ref, (m, _) in marks.items()]))
    fresh = [(mark, void) for ref, (mark, void) in marks.items() if ref not in known]
    now = utcnow()
    insert_ignore(session, _voids, [
        {"service": service, "voided_id": m.voided_id, "voided_source": m.voided_source,
         "voided_type": m.voided_type, "manufacturer": m.manufacturer, "void_source": m.void_source,
         "void_id": m.void_id, "void_time": m.void_time, "reason": m.reason, "recorded_at": now}
        for m, _ in fresh])
    return fresh


def voided_among(session: Session, service: str,
                 events: Iterable[tuple[str, str, str, str]]) -> dict[Ref, VoidMark]:
    """The voids recorded for these events ((source, id, type, manufacturer) each) that apply to
    them. One query per chunk of ids, by the table's key: cheap when nothing was voided."""
    wanted: dict[Ref, tuple[str, str]] = {(source, event_id): (kind, maker) for source, event_id, kind, maker in events}
    if not wanted:
        return {}
    found: dict[Ref, VoidMark] = {}
    ids = sorted({event_id for _, event_id in wanted})
    for part in chunks(ids):
        rows = driver_rows(session, "SELECT voided_source, voided_id, voided_type, manufacturer, void_source, "
                                    "void_id, void_time, reason FROM voids WHERE service = ? AND voided_id IN "
                                    f"({', '.join('?' * len(part))})", (service, *part))
        for source, event_id, kind, maker, void_source, void_id, void_time, reason in rows:
            expected = wanted.get((source, event_id))
            mark = VoidMark(source, event_id, kind, maker, void_source, void_id, read_time(void_time), reason)
            if expected is not None and mark.applies_to(*expected):
                found[mark.ref] = mark
    return found


# --- corrected events ------------------------------------------------------------------------------

def corrected_event(void: Event) -> Event | None:
    """The void's corrected event as a normal event: the void's source, its own id (default derived
    from the void's, so a redelivered void gives the same event), its time (default the void's), and
    the key that signed the void."""
    d = void.data
    assert isinstance(d, EventVoided)
    fix = d.corrected
    if fix is None:
        return None
    envelope = Envelope(id=fix.id or str(uuid.uuid5(_CORRECTION_IDS, f"{void.source}\n{void.id}")),
                        source=void.source, type=fix.type, time=fix.time or void.time, data=fix.data)
    return Event(envelope, EVENT_TYPES[fix.type].model_validate(fix.data), None, void.signed_by)


# --- applied ---------------------------------------------------------------------------------------

ApplyEvents = Callable[[Session, list[Event]], None]
# (session, events that arrived after their void: keep as history only, units to fold again because
# of new voids) -> None. Each service folds the units of both without the voided events.
ApplyVoided = Callable[[Session, list[Event], list[VoidMark]], None]


def applier(service: str, event_types: Iterable[str], apply: ApplyEvents, apply_voided: ApplyVoided) -> ApplyEvents:
    """The service's batch handler with voids (module docstring). The corrected events are readied as
    the consumer's arrivals are (``PREPARE_ARRIVALS``: erasure's pseudonymization) before they apply."""
    consumed = frozenset(event_types)

    def apply_with_voids(session: Session, events: list[Event]) -> None:
        voids = [e for e in events if e.type == VOIDED]
        others = [e for e in events if e.type != VOIDED] if voids else events
        new = record(session, service, voids) if voids else []
        corrections = [fix for _, void in new if (fix := corrected_event(void)) is not None and fix.type in consumed]
        if corrections:
            claim = claim_inbox(session, service, corrections)  # published on its own too: applied once
            for conflict in claim.conflicts:  # its (source, id) is another applied event's: not applied
                log.warning("%s: the corrected event %s/%s has the source and id of another event applied "
                            "before; it is not applied", service, conflict.event.source, conflict.event.id)
            fresh = claim.fresh
            prepare = session.info.get(PREPARE_ARRIVALS)
            others = [*others, *(prepare(fresh) if prepare else fresh)]
        # The batch's events that a recorded void withdraws: one look-up by id, for the types a void may name.
        held = voided_among(session, service, [(e.source, e.id, e.type, getattr(e.data, "manufacturer", ""))
                                               for e in others if e.type in VOIDABLE])
        arriving = [e for e in others if e.key in held]
        if arriving:
            others = [e for e in others if e.key not in held]
            log.info("%s: %d events arrived after their void: kept in history, not applied", service, len(arriving))
        if others:
            apply(session, others)
        if new or arriving:
            apply_voided(session, arriving, [mark for mark, _ in new])
            for mark, _ in new:
                log.info("%s: %s/%s (%s) voided by %s/%s: %s", service, mark.voided_source, mark.voided_id,
                         mark.voided_type, mark.void_source, mark.void_id, mark.reason)

    return apply_with_voids


def without_voided(session: Session, service: str, manufacturer: str, facts: Sequence, *,
                   source: str = "source", event_id: str = "event_id", kind: str = "type") -> tuple[list, set[Ref]]:
    """``facts`` (objects with source, event id and type attributes, named as given) of one
    manufacturer's units without the voided ones, and the refs that were dropped."""
    if not facts:
        return list(facts), set()
    marks = voided_among(session, service, {(getattr(f, source), getattr(f, event_id), getattr(f, kind), manufacturer)
                                            for f in facts})
    if not marks:
        return list(facts), set()
    return [f for f in facts if (getattr(f, source), getattr(f, event_id)) not in marks], set(marks)

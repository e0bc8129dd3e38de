"""Per-unit serialization across the processes of one service (PostgreSQL; docs/scaling.md).

Every service folds per-unit state: it reads what it knows of a unit, folds the batch's new facts
into it, and writes the result. Two processes of one service applying events of the same unit at
the same time would each read the state without the other's uncommitted write, and the last
commit would win: a unit sold by one process and returned by the other ends ``sold`` with a
``returned_never_sold`` anomaly. So a batch's transaction first takes, before it reads anything,
a transaction-scoped advisory lock (``pg_advisory_xact_lock``) on every key it will fold:

- level 0, the whole store: shared by every batch; exclusive only for an event that names no
  manufacturer (none does today: the safe default for a contract that would);
- level 1, a manufacturer: shared by a batch that names units of it; exclusive by a batch with a
  range event (a receipt or theft report of a serial range, a recall and its amendments and
  closure, a policy): those concern units no per-unit lock could name, some not known yet;
- level 2, a unit (manufacturer, serial), or another key a service's fold reads across units
  (warranty: a receipt, a customer, a store): exclusive.

Locks are taken in one statement, in one global order (level, then a stable 64-bit hash of the
key), so two batches never wait for each other in a cycle; they are released at commit or
rollback. After a lock is granted the batch's statements see every commit that released it (READ
COMMITTED takes a new snapshot per statement), so the second batch folds onto the first one's
result, exactly as one process applying the two batches one after the other would.

A batch naming more than ``MAX_KEYS`` level-2 keys takes its manufacturers exclusively instead
(and the store exclusively, if keys without a manufacturer are that many): PostgreSQL keeps every
lock in one shared table (``max_locks_per_transaction`` x ``max_connections`` entries, 6,400 by
default), which thousands of locks per transaction across processes would fill.

SQLite needs none of this: its single writer already serializes every transaction (the consumer
takes the write lock at BEGIN, ``shared.store.for_writing``), so ``take`` does nothing there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from .contracts.base import UnitSelection
from .envelope import Event

MAX_KEYS = 2000  # level-2 locks per transaction before a batch takes whole manufacturers

_STORE, _MAKER, _KEY = 0, 1, 2


@dataclass
class UnitLocks:
    """What one batch must hold: units and other keys (exclusive), and manufacturers it concerns
    as a whole."""

    units: set[tuple[str, str]] = field(default_factory=set)  # (manufacturer, serial)
    keys: set[tuple[str, ...]] = field(default_factory=set)  # other fold inputs: (kind, *parts)
    key_makers: dict[tuple[str, ...], str] = field(default_factory=dict)  # a key's manufacturer, if it has one
    whole_makers: set[str] = field(default_factory=set)  # range events: every unit of the manufacturer
    whole_store: bool = False

    def unit(self, manufacturer: str, serial: str) -> None:
        self.units.add((manufacturer, serial))

    def key(self, kind: str, *parts: str, manufacturer: str | None = None) -> None:
        """A key other than a unit that the service's fold reads across units (``manufacturer``: it
        lives under one, so a range event of that manufacturer covers it too)."""
        key = (kind, *parts)
        self.keys.add(key)
        if manufacturer is not None:
            self.key_makers[key] = manufacturer

    def whole(self, manufacturer: str) -> None:
        self.whole_makers.add(manufacturer)

    def plan(self) -> list[tuple[int, bool]]:
        """(lock id, shared) in acquisition order. Units of a manufacturer held whole need no lock of
        their own."""
        whole = set(self.whole_makers)
        units = [u for u in self.units if u[0] not in whole]
        keys = [k for k in self.keys if self.key_makers.get(k) not in whole]
        if len(units) + len(keys) > MAX_KEYS:
            # Too many to lock one by one: the manufacturers with units here, whole.
            whole.update(m for m, _ in units)
            whole.update(m for k in keys if (m := self.key_makers.get(k)) is not None)
            units = []
            keys = [k for k in keys if k not in self.key_makers]
        whole_store = self.whole_store or len(keys) > MAX_KEYS
        if whole_store:
            return [(_lock_id(_STORE), False)]
        makers = {m: False for m in whole}
        for manufacturer, _ in units:
            makers.setdefault(manufacturer, True)
        for key in keys:
            if (maker := self.key_makers.get(key)) is not None:
                makers.setdefault(maker, True)
        ordered = [((_MAKER, _lock_id(_MAKER, m)), shared) for m, shared in makers.items()]
        ordered += [((_KEY, _lock_id(_KEY, "unit", m, s)), False) for m, s in units]
        ordered += [((_KEY, _lock_id(_KEY, *k)), False) for k in keys]
        ordered.sort()
        return [(_lock_id(_STORE), True), *((lock_id, shared) for (_, lock_id), shared in ordered)]


def _lock_id(level: int, *parts: str) -> int:
    """A stable signed 64-bit id (every process computes the same one; Python's hash() is salted)."""
    text = "\x1f".join((str(level), *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


def units_of(events: Sequence[Event]) -> UnitLocks:
    """The locks a batch needs from what its events name: a unit, a list of units, or (a serial
    range, a recall scope, a policy: anything that does not name its units) the whole manufacturer.
    Every service's fold is per unit; one whose fold also reads across units adds its own keys
    (``with_keys``)."""
    locks = UnitLocks()
    for event in events:
        add_event(locks, event)
    return locks


def add_event(locks: UnitLocks, event: Event) -> None:
    data = event.data
    manufacturer = getattr(data, "manufacturer", None)
    if manufacturer is None:
        locks.whole_store = True
    elif isinstance(data, UnitSelection):
        if data.serial_range is not None:
            locks.whole(manufacturer)
        else:
            for serial in data.iter_serials():
                locks.unit(manufacturer, serial)
    elif isinstance(named := getattr(data, "serial", None), str):
        locks.unit(manufacturer, named)
    elif isinstance(units := getattr(data, "units", None), list):  # unit.quarantined
        for unit in units:
            locks.unit(manufacturer, unit.serial)
    else:
        locks.whole(manufacturer)


LockPlanner = Callable[[Sequence[Event]], UnitLocks]


def with_keys(extra: Callable[[UnitLocks, Event], None]) -> LockPlanner:
    """A planner: ``units_of`` plus the keys ``extra`` adds for each event."""
    def plan(events: Sequence[Event]) -> UnitLocks:
        locks = units_of(events)
        for event in events:
            extra(locks, event)
        return locks
    return plan


_TAKE = ("SELECT count(CASE WHEN shared THEN pg_advisory_xact_lock_shared(id)::text "
         "ELSE pg_advisory_xact_lock(id)::text END) "
         "FROM unnest(%s::bigint[], %s::boolean[]) WITH ORDINALITY AS wanted(id, shared, n)")


def take(session: Session, locks: UnitLocks) -> int:
    """Take the batch's locks (PostgreSQL; nothing on SQLite). Call first in the transaction, before
    any read. Returns how many were taken."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return 0
    plan = locks.plan()
    # One round trip; unnest yields the arrays in order and each row's lock is taken as it is read.
    cursor = connection.connection.cursor()
    try:
        cursor.execute(_TAKE, ([lock_id for lock_id, _ in plan], [shared for _, shared in plan]))
    finally:
        cursor.close()
    return len(plan)



def take_more(session: Session, units: Iterable[tuple[str, str]]) -> bool:
    """Lock units a fold found it must change only after reading (warranty: a late claim re-decides
    the later claims of its customer, on other units). Outside the global order, so it may
    deadlock with another batch; PostgreSQL then aborts one of the two, which the consumer retries
    (shared/consumer.py, EventProcessor). Locks the batch holds already are taken again at no cost.
    True if locks were taken: rows read before may be older than another process's commit since."""
    locks = UnitLocks(units=set(units))
    return bool(locks.units) and take(session, locks) > 0

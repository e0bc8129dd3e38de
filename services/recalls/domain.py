"""Recall rules, pure: which units a recall covers, how a unit's campaign status is derived, and
the campaign's progress.

Matching is an index lookup, never a scan over recalls: per manufacturer the
``RecallIndex`` keeps a ``shared.serial_index.SerialIndex`` of the recalls'
scopes (explicit serials, range buckets, sku-only), the matcher inventory uses
too.

Order: a unit fact at time t is matched by a recall unless the recall was
closed at or before t. A unit first seen after a recall closed is never
affected by it; one seen earlier is, even when its fact arrives after the
closure. Scope changes (amendments) replace the scope: the service recomputes
the campaign's rows from the new scope, so the result does not depend on
whether a unit's fact arrived before or after the amendment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache

from shared.identity import SerialRange
from shared.serial_index import Selection, SerialIndex

# ---------------------------------------------------------------------------------------------
# Order of facts


def order_key(time: datetime, source: str, event_id: str) -> str:
    """A string that sorts like (time, source, id): fixed-width UTC digits, then source and id.

    Sources and ids are printable ASCII without spaces, so the space separator sorts below every
    character they use and a shorter source sorts first, as in a tuple comparison. Compared
    bytewise (SQLite BINARY, PostgreSQL COLLATE "C").
    """
    return f"{time.astimezone(UTC):%Y%m%d%H%M%S%f} {source} {event_id}"


class Stock(StrEnum):
    """Where a unit is, as far as the recall campaign cares (from receipts, sales, returns)."""

    IN_STOCK = "in_stock"
    RETURNED = "returned"  # back in a store after a sale: on hand
    SOLD = "sold"


ON_HAND = frozenset({Stock.IN_STOCK, Stock.RETURNED})

STOCK_OF_EVENT = {"unit.received": Stock.IN_STOCK, "unit.sold": Stock.SOLD, "unit.returned": Stock.RETURNED}


# ---------------------------------------------------------------------------------------------
# A unit's status in one campaign


class UnitStatus(StrEnum):
    REMEDIED = "remedied"
    SOLD_OWNER_NOTIFIED = "sold_owner_notified"
    SOLD_OWNER_UNKNOWN = "sold_owner_unknown"
    SOLD_AWAITING_OWNER = "sold_awaiting_owner"  # sold; the warranty service has not answered yet
    QUARANTINED = "quarantined"  # on hand and on hold
    IN_STOCK_NOT_QUARANTINED = "in_stock_not_quarantined"  # on hand, inventory has not confirmed the hold
    UNKNOWN = "unknown"  # reported by another service, but no receipt or sale seen here


@dataclass(frozen=True, slots=True)
class Condition:
    """One conjunct of a status rule. ``stock`` None = any; flags None = either way."""

    stock: frozenset[Stock] | None = None
    remedied: bool | None = None
    notified: bool | None = None
    owner_unknown: bool | None = None
    quarantined: bool | None = None


# First rule that holds wins. The store turns the same table into one SQL CASE, so counts in SQL
# and statuses shown per unit can never disagree.
STATUS_RULES: tuple[tuple[UnitStatus, Condition], ...] = (
    (UnitStatus.REMEDIED, Condition(remedied=True)),
    (UnitStatus.SOLD_OWNER_NOTIFIED, Condition(stock=frozenset({Stock.SOLD}), notified=True)),
    (UnitStatus.SOLD_OWNER_UNKNOWN, Condition(stock=frozenset({Stock.SOLD}), owner_unknown=True)),
    (UnitStatus.SOLD_AWAITING_OWNER, Condition(stock=frozenset({Stock.SOLD}))),
    (UnitStatus.QUARANTINED, Condition(stock=ON_HAND, quarantined=True)),
    (UnitStatus.IN_STOCK_NOT_QUARANTINED, Condition(stock=ON_HAND)),
    (UnitStatus.UNKNOWN, Condition()),
)


def unit_status(stock: str | None, *, remedied: bool, notified: bool, owner_unknown: bool,
                quarantined: bool) -> UnitStatus:
    flags = {"remedied": remedied, "notified": notified, "owner_unknown": owner_unknown, "quarantined": quarantined}
    for status, cond in STATUS_RULES:
        if cond.stock is not None and stock not in cond.stock:
            continue
        if all(getattr(cond, name) is None or getattr(cond, name) == value for name, value in flags.items()):
            return status
    raise AssertionError("the last rule always holds")


@lru_cache(maxsize=64)
def unreported_status(stock: str | None) -> UnitStatus:
    """The status of a unit no service has reported anything about under the recall yet."""
    return unit_status(stock, remedied=False, notified=False, owner_unknown=False, quarantined=False)


# ---------------------------------------------------------------------------------------------
# Campaign progress


@dataclass(frozen=True, slots=True)
class Progress:
    affected: int  # units this retailer knows that the recall covers
    in_stock: int  # on hand, not remedied
    quarantined: int  # on hand and held (inventory confirmed), not remedied
    in_stock_not_quarantined: int
    sold: int  # sold, not remedied
    sold_owner_notified: int
    sold_owner_unknown: int
    sold_awaiting_owner: int
    remedied: int
    unknown: int
    reached: int  # the campaign's action is done: held, owner notified, or remedied
    sale_attempts_while_quarantined: int
    completion_rate: float  # remedied / affected (the recall-industry definition)
    reach_rate: float  # reached / affected

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], sale_attempts: int = 0) -> Progress:
        c = {s: int(counts.get(s, 0)) for s in UnitStatus}
        affected = sum(c.values())
        sold = c[UnitStatus.SOLD_OWNER_NOTIFIED] + c[UnitStatus.SOLD_OWNER_UNKNOWN] + c[UnitStatus.SOLD_AWAITING_OWNER]
        in_stock = c[UnitStatus.QUARANTINED] + c[UnitStatus.IN_STOCK_NOT_QUARANTINED]
        reached = c[UnitStatus.QUARANTINED] + c[UnitStatus.SOLD_OWNER_NOTIFIED] + c[UnitStatus.REMEDIED]
        return cls(
            affected=affected, in_stock=in_stock, quarantined=c[UnitStatus.QUARANTINED],
            in_stock_not_quarantined=c[UnitStatus.IN_STOCK_NOT_QUARANTINED], sold=sold,
            sold_owner_notified=c[UnitStatus.SOLD_OWNER_NOTIFIED], sold_owner_unknown=c[UnitStatus.SOLD_OWNER_UNKNOWN],
            sold_awaiting_owner=c[UnitStatus.SOLD_AWAITING_OWNER], remedied=c[UnitStatus.REMEDIED],
            unknown=c[UnitStatus.UNKNOWN], reached=reached, sale_attempts_while_quarantined=sale_attempts,
            completion_rate=round(c[UnitStatus.REMEDIED] / affected, 4) if affected else 0.0,
            reach_rate=round(reached / affected, 4) if affected else 0.0,
        )


# ---------------------------------------------------------------------------------------------
# Scopes and the index


@dataclass(frozen=True, slots=True)
class Recall:
    """What matching needs to know about one recall."""

    recall_id: str
    manufacturer: str
    skus: frozenset[str] = frozenset()
    ranges: tuple[SerialRange, ...] = ()
    serials: frozenset[str] = frozenset()
    closed_order: str | None = None  # order key of the closure, if closed
    closed_at: datetime | None = None

    @property
    def has_serial_condition(self) -> bool:
        return bool(self.ranges or self.serials)

    @property
    def open(self) -> bool:
        return self.closed_order is None

    def serial_covered(self, serial: str) -> bool:
        if not self.has_serial_condition:
            return True
        return serial in self.serials or any(serial in r for r in self.ranges)

    def sku_covered(self, sku: str | None, *, reported: bool = False) -> bool:
        """A unit whose sku this service has not seen passes the sku condition only when another
        service (inventory, warranty, a service desk) reported it under this recall: it knew the sku."""
        if not self.skus:
            return True
        if sku is None:
            return reported
        return sku in self.skus

    @property
    def scoped(self) -> bool:
        """False for a recall known only from its closure (the broadcast has not arrived): it covers nothing."""
        return bool(self.skus or self.ranges or self.serials)

    def covers(self, serial: str, sku: str | None, *, reported: bool = False) -> bool:
        return self.scoped and self.sku_covered(sku, reported=reported) and self.serial_covered(serial)

    def unit_filter(self, *, reported: bool = False) -> Callable[[str, str | None], bool]:
        """``covers`` as a plain function of (serial, sku) built once: for checking 100,000 units
        (the same rules, without attribute look-ups per unit; tests check they agree)."""
        if not self.scoped:
            return lambda serial, sku: False
        skus, serials, ranges = self.skus, self.serials, self.ranges
        any_serial = not (serials or ranges)

        def covers(serial: str, sku: str | None) -> bool:
            if skus and (sku not in skus if sku is not None else not reported):
                return False
            return any_serial or serial in serials or any(serial in r for r in ranges)

        return covers

    def in_scope(self, serial: str, sku: str | None, first_seen: datetime | None, *, reported: bool) -> bool:
        """Whether a known (or reported) unit belongs to the campaign under the current scope."""
        if not self.covers(serial, sku, reported=reported):
            return False
        return reported or self.seen_before_closure(first_seen)

    def seen_before_closure(self, first_seen: datetime | None) -> bool:
        """A unit first seen after the closure was never affected (unless another service acted on it)."""
        return self.closed_at is None or first_seen is None or first_seen < self.closed_at


class RecallIndex:
    """All recalls of all manufacturers, indexed for matching one unit at a time. Immutable once
    built: the service builds a new one when recalls change and swaps it in."""

    def __init__(self, recalls: Iterable[Recall] = ()):
        self.recalls: dict[str, Recall] = {r.recall_id: r for r in recalls}
        grouped: dict[str, list[Recall]] = {}
        for recall in self.recalls.values():
            grouped.setdefault(recall.manufacturer, []).append(recall)
        self._makers = {maker: self._build(recalls) for maker, recalls in grouped.items()}

    @staticmethod
    def _build(recalls: list[Recall]) -> SerialIndex:
        return SerialIndex.build(Selection(r.recall_id, r.skus, r.ranges, r.serials) for r in recalls)

    def __len__(self) -> int:
        return len(self.recalls)

    def has_manufacturer(self, manufacturer: str) -> bool:
        return manufacturer in self._makers

    def get(self, recall_id: str) -> Recall | None:
        return self.recalls.get(recall_id)

    def match(self, manufacturer: str, serial: str, sku: str | None, order: str | None = None) -> list[str]:
        """Recalls covering the unit. ``order``: the order key of the fact being applied (recalls
        closed at or before it do not match); None = now (only open recalls match)."""
        index = self._makers.get(manufacturer)
        if index is None:
            return []
        recalls = self.recalls
        result = []
        for rid in index.match(serial, sku):
            closed = recalls[rid].closed_order  # type: ignore[index]  # keys are recall ids
            if closed is not None and (order is None or order >= closed):
                continue
            result.append(rid)
        return result  # type: ignore[return-value]  # recall ids

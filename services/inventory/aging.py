"""Stock aging (issue 14, part 5): units on hand with their days in stock, counts per sku and
location by age band, and the units customers brought back, per sku.

Days in stock count from ``stocked_at`` (``domain.UnitState.stocked_at``): the event time of the
receipt that put the unit where it stands, or of its return when that is later, as the fold of the
unit's history in event time sets it. Late and duplicate events therefore change it exactly as
they change the unit's status. A unit is on hand when its status is one of ``domain.ON_HAND``
(in stock, returned, quarantined, damaged); in transit, sold, lost, stolen or destroyed units are
not stock here.

Every read is one statement over ``inventory_units`` (its status, sku and location indexes), grouped
in the database; the units themselves are read a page at a time, or streamed for CSV.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from shared.csv_export import cell, stream
from shared.store import as_utc

from .domain import ON_HAND, Status
from .store import _units

# Age bands by whole days in stock: (label, first day, last day or None).
BANDS: tuple[tuple[str, int, int | None], ...] = (("0-30", 0, 30), ("31-90", 31, 90), ("91-180", 91, 180),
                                                  ("180+", 181, None))
UNKNOWN = "unknown"  # on hand without a receipt or return on record (a unit known only from an adjustment)
ON_HAND_STATUSES = tuple(sorted(s.value for s in ON_HAND))
UNIT_COLUMNS = ("manufacturer", "serial", "sku", "location", "status", "stocked_at", "days_in_stock", "times_returned")


def _conditions(now: datetime, manufacturer: str | None, location: str | None, sku: str | None,
                older_than_days: int | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [_units.c.status.in_(ON_HAND_STATUSES)]
    if manufacturer:
        conditions.append(_units.c.manufacturer == manufacturer)
    if location:
        conditions.append(_units.c.location == location)
    if sku:
        conditions.append(_units.c.sku == sku)
    if older_than_days is not None:  # in stock for more than N days: stocked more than N x 24 h ago
        conditions.append(_units.c.stocked_at < now - timedelta(days=older_than_days))
    return conditions


def _band(now: datetime):
    """The band's index in BANDS (len(BANDS) for unknown), from ``stocked_at``: whole days d <= last
    day exactly when stocked_at > now - (last + 1) days."""
    return case(
        (_units.c.stocked_at.is_(None), len(BANDS)),
        *((_units.c.stocked_at > now - timedelta(days=last + 1), i) for i, (_, _, last) in enumerate(BANDS)
          if last is not None),
        else_=len(BANDS) - 1,
    )


def _empty_bands() -> dict[str, int]:
    return {label: 0 for label, _, _ in BANDS} | {UNKNOWN: 0, "total": 0}


def summary(session: Session, *, now: datetime, manufacturer: str | None = None, location: str | None = None,
            sku: str | None = None, older_than_days: int | None = None) -> dict:
    """Counts per (sku, location) by age band, their totals, and per sku the units on hand that
    customers returned: restocked (sellable again), awaiting (back, not yet restocked), held
    (damaged or quarantined), the returns they had, and how many came back more than once."""
    conditions = _conditions(now, manufacturer, location, sku, older_than_days)
    band = _band(now).label("band")
    n = func.count().label("n")
    groups: dict[tuple[str | None, str | None], dict[str, int]] = {}
    totals = _empty_bands()
    labels = [label for label, _, _ in BANDS] + [UNKNOWN]
    for row_sku, row_location, index, count in session.execute(
            select(_units.c.sku, _units.c.location, band, n).where(*conditions)
            .group_by(_units.c.sku, _units.c.location, band)):
        counts = groups.setdefault((row_sku, row_location), _empty_bands())
        for target in (counts, totals):
            target[labels[index]] += count
            target["total"] += count
    returned = _units.c.times_returned > 0
    status = _units.c.status
    returns = [
        {"sku": row.sku, "returned_units": row.units, "restocked": row.restocked, "awaiting": row.awaiting,
         "held": row.units - row.restocked - row.awaiting, "returns": row.returns, "returned_more_than_once": row.repeat}
        for row in session.execute(
            select(_units.c.sku, func.count().label("units"),
                   func.sum(case((status == Status.IN_STOCK.value, 1), else_=0)).label("restocked"),
                   func.sum(case((status == Status.RETURNED.value, 1), else_=0)).label("awaiting"),
                   func.sum(_units.c.times_returned).label("returns"),
                   func.sum(case((_units.c.times_returned > 1, 1), else_=0)).label("repeat"))
            .where(*conditions, returned).group_by(_units.c.sku).order_by(_units.c.sku))
    ]
    return {
        "bands": [{"sku": key[0], "location": key[1], **counts}
                  for key, counts in sorted(groups.items(), key=lambda item: (item[0][0] or "", item[0][1] or ""))],
        "totals": totals,
        "returns": returns,
    }


def _unit(row, now: datetime) -> dict:
    stocked = as_utc(row.stocked_at) if row.stocked_at is not None else None
    return {"manufacturer": row.manufacturer, "serial": row.serial, "sku": row.sku, "location": row.location,
            "status": row.status, "stocked_at": stocked,
            "days_in_stock": (now - stocked).days if stocked is not None else None,
            "times_returned": row.times_returned}


def _units_query(now: datetime, **filters):
    return (select(_units.c.manufacturer, _units.c.serial, _units.c.sku, _units.c.location, _units.c.status,
                   _units.c.stocked_at, _units.c.times_returned)
            .where(*_conditions(now, **filters))
            # The oldest stock first; units without a receipt on record last.
            .order_by(_units.c.stocked_at.asc().nulls_last(), _units.c.manufacturer, _units.c.serial))


def units_page(session: Session, *, now: datetime, limit: int, offset: int, **filters) -> tuple[int, list[dict]]:
    total = session.scalar(select(func.count()).select_from(_units).where(*_conditions(now, **filters))) or 0
    rows = session.execute(_units_query(now, **filters).limit(limit).offset(offset))
    return total, [_unit(row, now) for row in rows]


def iter_units(session: Session, *, now: datetime, **filters) -> Iterator[dict]:
    """Every matching unit, oldest stock first, streamed (a CSV of all the stock on hand)."""
    for row in session.execute(_units_query(now, **filters).execution_options(yield_per=1000)):
        yield _unit(row, now)


def csv_text(units: Iterable[dict]) -> Iterator[str]:
    return stream(UNIT_COLUMNS, ([cell(unit[c]) for c in UNIT_COLUMNS] for unit in units))

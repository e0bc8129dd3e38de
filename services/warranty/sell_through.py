"""The sell-through report (issue 14, part 4): a manufacturer's serials sold or returned in a period,
with the sku, store, channel and whether an owner is on record, and counts per sku and store.

Warranty serves it because warranty alone holds all three things it needs: the sales, the returns
and the owner registrations (inventory never sees registrations, and owners are warranty's rule:
docs/warranty.md, "Owners"). No customer data leaves: a line says *whether* an owner is on record
and how (the sale named the buyer, a registration, a trusted transfer), never who.

Streamed in constant memory: the period's sales and returns are read in time order through
``ix_warranty_facts_period`` with a server-side cursor, ``PART`` rows at a time; for each part the
sales, returns and registrations of its units are read in one query per chunk of units (through
``ix_warranty_facts_unit``) and folded (``domain.sale_ownerships``). What is held at once is one part
and the counts per (sku, location), as many as the manufacturer has skus in stores, never as many
as sales.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from shared.csv_export import cell, stream
from shared.store import VoidRow, as_utc, chunks, table_of

from .domain import REGISTERED, RETURNED, SOLD, Fact, OrderKey, sale_ownerships
from .store import _facts

PART = 1000
_voids = table_of(VoidRow)
KINDS = {SOLD: "sold", RETURNED: "returned"}
UNIT_COLUMNS = ("kind", "time", "serial", "sku", "location", "channel", "owner_registered", "owner_via", "sold_at")
COUNT_COLUMNS = ("sku", "location", "sold", "returned", "net", "sold_with_owner")


def _not_voided():
    """A fact whose event was voided (event.voided, shared/voids.py) is no sale, return or registration:
    one primary-key probe of the voids table per row."""
    return ~exists().where(_voids.c.service == "warranty", _voids.c.voided_id == _facts.c.event_id,
                           _voids.c.voided_source == _facts.c.event_source)


def _period_rows(session: Session, manufacturer: str, since: datetime | None, until: datetime | None,
                 sku: str | None) -> Iterator:
    """The manufacturer's sales (of ``sku``) and returns (of any sku: a return does not carry one, its
    sale does) in [since, until), oldest first, streamed. Two reads, each in the order of the index
    (manufacturer, event_type, event_time, id), merged here: one read of both types would be sorted by
    the database first (SQLite: a temporary b-tree of the whole period before the first line)."""
    def read(event_type: str) -> Iterator:
        conditions = [_facts.c.manufacturer == manufacturer, _facts.c.event_type == event_type]
        if since is not None:
            conditions.append(_facts.c.event_time >= since)
        if until is not None:
            conditions.append(_facts.c.event_time < until)
        if sku is not None and event_type == SOLD:
            conditions.append(_facts.c.sku == sku)
        query = (select(_facts.c.id, _facts.c.serial, _facts.c.event_type, _facts.c.event_time,
                        _facts.c.event_source, _facts.c.event_id, _facts.c.sku, _facts.c.location,
                        _facts.c.terminal_id)
                 .where(*conditions, _not_voided()).order_by(_facts.c.event_time, _facts.c.id))
        yield from session.execute(query.execution_options(yield_per=PART))

    yield from heapq.merge(read(SOLD), read(RETURNED), key=lambda row: (row.event_time, row.id))


_OWNERSHIP_COLUMNS = (_facts.c.serial, _facts.c.event_type, _facts.c.event_time, _facts.c.event_source,
                      _facts.c.event_id, _facts.c.sku, _facts.c.customer_id, _facts.c.trusted_transfer)
_OWNERSHIP_TYPES = frozenset((SOLD, RETURNED, REGISTERED))


def _unit_facts(session: Session, manufacturer: str, serials: Iterable[str]) -> dict[str, list[Fact]]:
    """The sales, returns and registrations of these units: what their ownerships are folded from.
    Asked by unit only, the types kept here: with the types in the query SQLite took the period index
    and read every sale of the manufacturer for each part."""
    found: dict[str, list[Fact]] = {}
    for part in chunks(sorted(set(serials))):
        for serial, kind, at, source, event_id, sku, customer, trusted in session.execute(
                select(*_OWNERSHIP_COLUMNS).where(_facts.c.manufacturer == manufacturer, _facts.c.serial.in_(part),
                                                  _not_voided())):
            if kind in _OWNERSHIP_TYPES:
                found.setdefault(serial, []).append(Fact(
                    time=as_utc(at), source=source, event_id=event_id, type=kind, sku=sku, customer_id=customer,
                    trusted_transfer=bool(trusted)))
    return found


@dataclass
class Counts:
    """Counts per (sku, location), filled while the lines stream past."""

    by_key: dict[tuple[str | None, str | None], list[int]] = field(default_factory=dict)

    def add(self, line: dict) -> None:
        counts = self.by_key.setdefault((line["sku"], line["location"]), [0, 0, 0])
        if line["kind"] == "sold":
            counts[0] += 1
            counts[2] += line["owner_registered"]
        else:
            counts[1] += 1

    def rows(self) -> list[dict]:
        return [{"sku": sku, "location": location, "sold": sold, "returned": returned, "net": sold - returned,
                 "sold_with_owner": with_owner}
                for (sku, location), (sold, returned, with_owner)
                in sorted(self.by_key.items(), key=lambda item: (item[0][0] or "", item[0][1] or ""))]

    def totals(self) -> dict:
        sold = sum(c[0] for c in self.by_key.values())
        returned = sum(c[1] for c in self.by_key.values())
        return {"sold": sold, "returned": returned, "net": sold - returned,
                "sold_with_owner": sum(c[2] for c in self.by_key.values())}


def lines(session: Session, manufacturer: str, *, since: datetime | None, until: datetime | None,
          sku: str | None) -> Iterator[dict]:
    """Every sale and return of the period, oldest first, as report lines (no customer data)."""
    for part in _batched(_period_rows(session, manufacturer, since, until, sku)):
        ownerships = {serial: sale_ownerships(facts)
                      for serial, facts in _unit_facts(session, manufacturer, (r.serial for r in part)).items()}
        for row in part:
            order: OrderKey = (as_utc(row.event_time), row.event_source, row.event_id)
            owned = ownerships[row.serial][order]
            sale = owned.sale
            line_sku = sale.sku if sale is not None else row.sku
            if sku is not None and line_sku != sku:
                continue  # a return of another sku's sale
            yield {
                "kind": KINDS[row.event_type],
                "time": order[0],
                "serial": row.serial,
                "sku": line_sku,
                "location": row.location,
                # A sale's till; a return carries none (unit.returned has no terminal_id): the POS that sent it.
                "channel": row.terminal_id if row.event_type == SOLD else row.event_source,
                "owner_registered": owned.owner_registered,
                "owner_via": owned.owner_via,
                "sold_at": sale.time if sale is not None else None,
            }


def _batched(rows: Iterable) -> Iterator[tuple]:  # itertools.batched from Python 3.12
    iterator = iter(rows)
    while part := tuple(itertools.islice(iterator, PART)):
        yield part


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return cell(value)


def csv_text(rows: Iterable[dict], columns: tuple[str, ...]) -> Iterator[str]:
    return stream(columns, ([_cell(row[c]) for c in columns] for row in rows))


def _json_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


def json_text(head: dict, rows: Iterator[dict] | None, counts: Counts) -> Iterator[str]:
    """The report as one JSON object, written as the lines stream past: ``head``, then ``units`` (null
    when only the counts were asked for), then ``counts`` and ``totals``, known only at the end."""
    yield json.dumps({k: _json_value(v) for k, v in head.items()})[:-1]
    if rows is None:
        yield ', "units": null'
    else:
        yield ', "units": ['
        buffer: list[str] = []
        for n, row in enumerate(rows):
            buffer.append(("," if n else "") + json.dumps({k: _json_value(v) for k, v in row.items()}))
            if len(buffer) == 500:
                yield "".join(buffer)
                buffer.clear()
        yield "".join(buffer) + "]"
    yield f', "counts": {json.dumps(counts.rows())}, "totals": {json.dumps(counts.totals())}}}'


def counted(rows: Iterator[dict], counts: Counts) -> Iterator[dict]:
    for row in rows:
        counts.add(row)
        yield row

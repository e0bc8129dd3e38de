"""The recalls service layer: turn a batch of events into recall scopes, unit rows and campaign rows.

Called by the shared consumer inside one transaction that also holds the inbox rows, so everything
here commits or rolls back together with "event applied".

Order tolerance (events of different types travel on different streams):
- a recall's scope is the one of its latest recall.issued/amended by event time; an older one that
  arrives late changes nothing but the broadcast details (hazard, remedy) it alone carries;
- a unit's stock (in stock, sold, returned) is set by its latest fact by event time, in SQL
  (``store.upsert_units``), so a sale that arrives before its receipt ends the same;
- reports (quarantined, owner notified/unknown, remedied) are set-once facts, earliest wins;
- a unit fact matches the recalls not closed at its time, against the current scope; when a scope
  changes or a recall closes, the campaign's rows are recomputed from the stored units, so the
  result does not depend on which arrived first.

The service only listens and counts: it publishes no events of its own (inventory and warranty
consume the recall broadcast themselves and report back).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice

from sqlalchemy.orm import Session

from shared.contracts import (
    InventoryAnomalyDetected,
    InventoryAnomalyWithdrawn,
    RecallAmended,
    RecallClosed,
    RecallIssued,
    RecallOwnerNotified,
    RecallOwnerUnknown,
    RecallRemedyCompleted,
    UnitQuarantined,
    UnitQuarantineWithdrawn,
    UnitReceived,
    UnitReturned,
    UnitSold,
)
from shared.envelope import Event
from shared.store import chunks, refresh_statistics, utcnow
from shared.voids import VoidMark, voided_among

from . import store
from .domain import STOCK_OF_EVENT, Recall, RecallIndex, order_key, unreported_status

SERVICE = "recalls"
SOURCE = "serialtrack/recalls"
EVENT_TYPES = (
    "recall.issued", "recall.amended", "recall.closed", "recall.remedy.completed",
    "unit.received", "unit.sold", "unit.returned",
    "unit.quarantined", "unit.quarantine.withdrawn", "recall.owner_notified", "recall.owner_unknown",
    "inventory.anomaly.detected", "inventory.anomaly.withdrawn",
    "customer.erasure.requested",  # applied around this module by shared/erasure.py (ServiceDefinition.customer_data)
    "event.voided",  # applied around this module by shared/voids.py: apply_voided below
)
RECALL_TYPES = frozenset({"recall.issued", "recall.amended", "recall.closed"})
UNIT_TYPES = frozenset(STOCK_OF_EVENT)
REPORT_COLUMN = {
    "unit.quarantined": "quarantined_at",
    "unit.quarantine.withdrawn": "quarantined_at",
    "recall.owner_notified": "notified_at",
    "recall.owner_unknown": "owner_unknown_at",
    "recall.remedy.completed": "remedied_at",
}
ANOMALY_TYPES = frozenset({"inventory.anomaly.detected", "inventory.anomaly.withdrawn"})
SALE_WHILE_QUARANTINED = "sold_while_quarantined"

# Receipts above this are written and matched chunk by chunk; after one, or after a campaign that
# gains this many rows, PostgreSQL's table statistics are refreshed.
LARGE_RECEIPT = 10_000
CHUNK = 10_000


class RecallMismatch(ValueError):
    """An event names a known recall under another manufacturer: refused (dead-lettered), not guessed."""


def _order(event: Event) -> str:
    return order_key(event.time, event.source, event.id)


def apply_events(session: Session, events: list[Event]) -> None:
    recall_events = [e for e in events if e.type in RECALL_TYPES]
    index = store.current_index(session)
    if recall_events:
        index = _apply_recall_events(session, recall_events)
    unit_events = [e for e in events if e.type in UNIT_TYPES]
    if unit_events:
        _apply_unit_events(session, index, unit_events)
    reports = [e for e in events if e.type in REPORT_COLUMN]
    if reports:
        _apply_reports(session, index, reports)
    anomalies = [e for e in events if e.type in ANOMALY_TYPES]
    if anomalies:
        _apply_anomalies(session, anomalies)
    store.recount_touched(session)  # the progress counts follow the rows written above


# ---------------------------------------------------------------------------------------------
# Recall broadcasts, amendments, closures


def _recall_data(event: Event) -> RecallIssued | RecallAmended | RecallClosed:
    d = event.data
    assert isinstance(d, (RecallIssued, RecallAmended, RecallClosed)), event.type
    return d


def _new_recall_row(event: Event) -> dict:
    d = _recall_data(event)
    return {
        "recall_id": d.recall_id, "manufacturer": d.manufacturer, "skus": "[]", "serial_ranges": "[]",
        "serials": "[]", "scope_order": "", "scope_at": event.time, "amendments": 0, "hazard": None, "remedy": None,
        "instructions": None, "issued_at": None, "issued_source": None, "issued_id": None, "closed_at": None,
        "closed_order": None, "close_reason": None, "updated_at": utcnow(),
    }


def _apply_recall_events(session: Session, events: list[Event]) -> RecallIndex:
    rows = store.load_recalls(session, [_recall_data(e).recall_id for e in events])
    changed: set[str] = set()
    for event in sorted(events, key=_order):
        d = _recall_data(event)
        row = rows.get(d.recall_id)
        if row is None:
            row = rows[d.recall_id] = _new_recall_row(event)
        elif row["manufacturer"] != d.manufacturer:
            raise RecallMismatch(f"recall {d.recall_id} belongs to {row['manufacturer']}, "
                                 f"but this {event.type} names {d.manufacturer}")
        order = _order(event)
        if isinstance(d, (RecallIssued, RecallAmended)):
            if order > row["scope_order"]:
                row.update(skus=json.dumps(sorted(set(d.skus))),
                           serial_ranges=json.dumps([r.model_dump(mode="json") for r in d.serial_ranges]),
                           serials=json.dumps(sorted(set(d.serials))), scope_order=order, scope_at=event.time)
                changed.add(d.recall_id)
            if isinstance(d, RecallAmended):
                row["amendments"] += 1
            elif row["issued_at"] is None or event.time < row["issued_at"]:
                row.update(hazard=d.hazard, remedy=d.remedy.value, instructions=d.instructions,
                           issued_at=event.time, issued_source=event.source, issued_id=event.id)
        elif isinstance(d, RecallClosed) and (row["closed_order"] is None or order < row["closed_order"]):
            row.update(closed_at=event.time, closed_order=order, close_reason=d.reason)
            changed.add(d.recall_id)
        row["updated_at"] = utcnow()
    store.save_recalls(session, list(rows.values()))
    index = store.refresh_index(session)
    for recall_id in sorted(changed):
        _recompute_campaign(session, index.recalls[recall_id])
    return index


def _recompute_campaign(session: Session, recall: Recall) -> None:
    """The campaign's rows under the recall's current scope and closure: known units newly covered
    get rows; existing rows are put in or out of scope. Rows are never deleted (history)."""
    existing = store.campaign_rows(session, recall.recall_id)
    now = utcnow()
    # Units the scope covers (covered_units checked that) that have no row yet: nothing was reported
    # for them, so their status follows from their stock alone.
    new_rows = [
        {"recall_id": recall.recall_id, "manufacturer": recall.manufacturer, "serial": serial, "in_scope": True,
         "matched_at": now, "counted_as": unreported_status(stock).value}
        for serial, first_seen, stock in store.covered_units(session, recall)
        if serial not in existing and recall.seen_before_closure(first_seen)
    ]
    into: list[str] = []
    out_of: list[str] = []
    for serial, (in_scope, reported, sku, first_seen) in existing.items():
        wanted = recall.in_scope(serial, sku, first_seen, reported=reported)
        if wanted != in_scope:
            (into if wanted else out_of).append(serial)
    store.add_campaign_rows(session, new_rows)
    if len(new_rows) >= LARGE_RECEIPT:
        refresh_statistics(session, "recalls_affected")
    store.set_in_scope(session, recall.recall_id, recall.manufacturer, into, True)
    store.set_in_scope(session, recall.recall_id, recall.manufacturer, out_of, False)


# ---------------------------------------------------------------------------------------------
# Receipts, sales, returns


def _batches(serials: Iterator[str], size: int) -> Iterator[list[str]]:
    while part := list(islice(serials, size)):
        yield part


def _apply_unit_events(session: Session, index: RecallIndex, events: list[Event]) -> None:
    now = utcnow()
    folded: dict[store.UnitKey, dict] = {}
    first_order: dict[store.UnitKey, str] = {}
    facts: list[tuple] = []
    for event in events:
        d = event.data
        assert isinstance(d, (UnitReceived, UnitSold, UnitReturned)), event.type
        order = _order(event)
        template = {"sku": getattr(d, "sku", None), "stock": STOCK_OF_EVENT[event.type].value,
                    "location": d.location, "stock_order": order, "stock_at": event.time,
                    "first_seen": event.time, "updated_at": now}
        fact = _fact_part(event, template)
        if isinstance(d, UnitReceived) and d.unit_count > LARGE_RECEIPT:
            assert d.serial_range is not None  # a list holds at most LARGE_RECEIPT serials
            store.save_receipt_range(session, d.manufacturer, d.serial_range, fact)
            _apply_large_receipt(session, index, d.manufacturer, d.iter_serials(), template, order)
            continue
        serials = d.iter_serials() if isinstance(d, UnitReceived) else [d.serial]
        for serial in serials:
            key = (d.manufacturer, serial)
            facts.append((d.manufacturer, serial, *fact))
            row = folded.get(key)
            if row is None:
                folded[key] = {**template, "manufacturer": d.manufacturer, "serial": serial}
                first_order[key] = order
                continue
            _fold(row, template)
            first_order[key] = min(first_order[key], order)
    store.save_unit_facts(session, facts)
    if not folded:
        return
    store.upsert_units(session, list(folded.values()))
    keys = [k for k in folded if index.recalls and folded[k]["sku"] is None]  # returns carry no sku
    known = store.load_units(session, keys) if keys else {}
    matches = []
    for key, row in folded.items():
        sku = row["sku"] if row["sku"] is not None else known.get(key, (None, None))[0]
        for recall_id in index.match(key[0], key[1], sku, first_order[key]):
            matches.append({"recall_id": recall_id, "manufacturer": key[0], "serial": key[1], "in_scope": True,
                            "matched_at": now})
    store.save_matches(session, matches)


def apply_voided(session: Session, arriving: list[Event], voids: list[VoidMark]) -> None:
    """Voids (shared/voids.py): receipts, sales and returns that arrived after their void are kept as
    unit facts only; a unit a new void reaches gets its row folded again from its other facts (the
    same rule as ``_fold``), so its campaigns count it as it now is: a voided sale puts it back on
    hand. A unit with no fact left is forgotten, and leaves the campaigns that only matched it."""
    now = utcnow()
    facts: list[tuple] = []
    for event in arriving:
        d = event.data
        if not isinstance(d, (UnitReceived, UnitSold, UnitReturned)):
            continue  # a voidable type this service does not keep (a transfer, an adjustment)
        template = {"sku": getattr(d, "sku", None), "stock": STOCK_OF_EVENT[event.type].value,
                    "location": d.location, "stock_order": _order(event), "stock_at": event.time}
        if isinstance(d, UnitReceived) and d.serial_range is not None and d.unit_count > LARGE_RECEIPT:
            store.save_receipt_range(session, d.manufacturer, d.serial_range, _fact_part(event, template))
            continue
        serials = d.iter_serials() if isinstance(d, UnitReceived) else [d.serial]
        facts.extend((d.manufacturer, serial, *_fact_part(event, template)) for serial in serials)
    store.save_unit_facts(session, facts)
    keys = sorted({key for mark in voids
                   for key in store.units_with_event(session, mark.manufacturer, mark.voided_source, mark.voided_id)})
    for part in chunks(keys, CHUNK):
        known = store.unit_facts(session, list(part))
        marks = voided_among(session, SERVICE, {(f["event_source"], f["event_id"], f["event_type"], key[0])
                                                for key, fs in known.items() for f in fs})
        rows, gone = [], []
        for key in part:
            kept = sorted((f for f in known.get(key, []) if (f["event_source"], f["event_id"]) not in marks),
                          key=lambda f: f["stock_order"])
            if not kept:
                gone.append(key)
                continue
            row = {"manufacturer": key[0], "serial": key[1], "first_seen": kept[0]["stock_at"], "updated_at": now,
                   **{c: kept[0][c] for c in ("sku", "stock", "location", "stock_order", "stock_at")}}
            for fact in kept[1:]:
                _fold(row, {**fact, "first_seen": fact["stock_at"]})
            rows.append(row)
        store.replace_units(session, rows, gone)
        store.recount_touched(session)


def _fold(row: dict, fact: dict) -> None:
    """Two facts of one unit in one batch: the same rule as store.upsert_units."""
    if fact["stock_order"] > row["stock_order"]:
        for column in ("stock", "location", "stock_order", "stock_at"):
            row[column] = fact[column]
        if fact["sku"] is not None:
            row["sku"] = fact["sku"]
    elif row["sku"] is None:
        row["sku"] = fact["sku"]
    row["first_seen"] = min(row["first_seen"], fact["first_seen"])


def _fact_part(event: Event, template: dict) -> tuple:
    """A unit fact's columns after (manufacturer, serial) (store.save_unit_facts): what a void refolds from."""
    return (event.source, event.id, event.type, template["sku"], template["stock"], template["location"],
            template["stock_order"], template["stock_at"])


def _apply_large_receipt(session: Session, index: RecallIndex, manufacturer: str, serials: Iterator[str],
                         template: dict, order: str) -> None:
    """A receipt of up to millions of serials: set-based, chunk by chunk; serials of one receipt are
    distinct, so each chunk is a valid multi-row upsert."""
    sku, now = template["sku"], template["updated_at"]
    for part in _batches(iter(serials), CHUNK):
        store.upsert_units(session, [{**template, "manufacturer": manufacturer, "serial": s} for s in part])
        if index.has_manufacturer(manufacturer):
            store.save_matches(session, [
                {"recall_id": rid, "manufacturer": manufacturer, "serial": s, "in_scope": True, "matched_at": now}
                for s in part for rid in index.match(manufacturer, s, sku, order)
            ])
        store.recount_touched(session)  # chunk by chunk: never a million touched units held at once
    refresh_statistics(session, "recalls_units", "recalls_affected")


# ---------------------------------------------------------------------------------------------
# What inventory, warranty and service desks report back


def _apply_reports(session: Session, index: RecallIndex, events: list[Event]) -> None:
    now = utcnow()
    by_column: dict[str, dict[tuple[str, str, str], dict]] = {}
    for event in events:
        column = REPORT_COLUMN[event.type]
        rows = by_column.setdefault(column, {})
        for row in _report_rows(event, column, now):
            key = (row["recall_id"], row["manufacturer"], row["serial"])
            if key not in rows or _replaces(column, row, rows[key]):  # as the store decides
                rows[key] = row
    # A reported unit's verdict depends on its sku only under an sku condition (and never on when it
    # was first seen): load the units only for those.
    units = store.load_units(session, {
        (k[1], k[2]) for rows in by_column.values() for k in rows
        if (recall := index.get(k[0])) is not None and recall.skus
    })
    # A reported unit is in scope when the scope covers it (reported: a closure does not matter).
    verdicts = {rid: r.unit_filter(reported=True) for rid in {k[0] for rows in by_column.values() for k in rows}
                if (r := index.get(rid)) is not None}
    no_unit = (None, None)
    for column, rows in by_column.items():
        for (recall_id, manufacturer, serial), row in rows.items():
            covers, recall = verdicts.get(recall_id), index.get(recall_id)
            if covers is not None and recall is not None:  # else decided when the recall arrives (_recompute_campaign)
                row["in_scope"] = (recall.manufacturer == manufacturer
                                   and covers(serial, units.get((manufacturer, serial), no_unit)[0]))
        store.save_reports(session, column, list(rows.values()))


def _replaces(column: str, new: dict, old: dict) -> bool:
    """Which of two reports on one (recall, unit) in a batch stands (store._earliest_report)."""
    if column != "quarantined_at":
        return new[column] < old[column]  # the earliest
    if new["quarantine_revision"] is not None:  # inventory's latest word
        return old["quarantine_revision"] is None or new["quarantine_revision"] > old["quarantine_revision"]
    return old["quarantine_revision"] is None and (old[column] is None or new[column] < old[column])


def _report_rows(event: Event, column: str, now) -> Iterator[dict]:
    d = event.data
    assert isinstance(d, (UnitQuarantined, UnitQuarantineWithdrawn, RecallOwnerNotified, RecallOwnerUnknown,
                          RecallRemedyCompleted)), event.type
    base = {"recall_id": d.recall_id, "manufacturer": d.manufacturer, "in_scope": None, "matched_at": now,
            column: event.time}
    if isinstance(d, UnitQuarantined):  # a list of units
        for unit in d.units:
            yield {**base, "serial": unit.serial, "quarantine_location": unit.location,
                   "quarantine_revision": unit.revision}
    elif isinstance(d, UnitQuarantineWithdrawn):  # inventory takes the holds back
        for released in d.units:
            yield {**base, column: None, "serial": released.serial, "quarantine_location": None,
                   "quarantine_revision": released.revision}
    elif isinstance(d, RecallRemedyCompleted):
        yield {**base, "serial": d.serial, "remedy": d.remedy.value, "remedy_location": d.location}
    else:
        yield {**base, "serial": d.serial}


def _apply_anomalies(session: Session, events: list[Event]) -> None:
    now = utcnow()
    detected: dict[tuple, dict] = {}
    withdrawn: dict[tuple, dict] = {}
    for event in events:
        d = event.data
        assert isinstance(d, (InventoryAnomalyDetected, InventoryAnomalyWithdrawn)), event.type
        if d.kind != SALE_WHILE_QUARANTINED:
            continue
        key = (d.manufacturer, d.serial, d.event_source, d.event_id)
        row = {"manufacturer": d.manufacturer, "serial": d.serial, "event_source": d.event_source,
               "event_id": d.event_id, "recorded_at": now}
        if isinstance(d, InventoryAnomalyDetected):
            detected[key] = {**row, "detail": d.detail, "event_time": event.time, "status": "open"}
        elif isinstance(d, InventoryAnomalyWithdrawn):
            withdrawn[key] = {**row, "detail": "", "event_time": event.time, "status": "withdrawn"}
    # A withdrawal wins over its detection whatever the arrival order: inventory withdraws only
    # after detecting, and a withdrawn row is not reopened by a late detection.
    store.withdraw_sale_attempts(session, list(withdrawn.values()))
    store.save_sale_attempts(session, [row for key, row in detected.items() if key not in withdrawn])


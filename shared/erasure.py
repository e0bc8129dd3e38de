"""Erasure on request: a customer id, and the receipt ids of that customer's purchases, replaced by
their pseudonyms (shared/pseudonyms.py) in a service's store, its history, its unpublished outbox
and its dead letters, and in every later event that names them.

Each service declares where it keeps customers' data (``CustomerColumns``: its tables' columns that
hold a customer id, a receipt id, or text that may quote either); the rest is here, once:

- ``erase``: the rows, for one ``customer.erasure.requested``. A column holding the value is set to
  its pseudonym; text (JSON, prose) has each whole-token occurrence replaced, also JSON-escaped and
  in any letter case. Units, sales and decisions keep their shape: equal ids stay equal, so a
  return still matches its sale's receipt, and a decision refolded later finds the facts it used;
- the pseudonyms (never the values) go into the plumbing table ``erased_values``;
- ``pseudonymize_arrivals``: events naming an erased value are rewritten before the service
  applies them (a sale of the erased customer published late, a return on their receipt);
- ``DeadLetterRewriter``: the service's dead-letter entries that quote an erased value are replaced
  by a rewritten copy (same fields, values pseudonymized, ``erasure_id`` added; new entry id, so
  `serialtrack deadletters` lists them as of their original ``failed_at``), and future dead
  letters are scrubbed before they are written;
- ``applier``: wraps a service's batch handler. Other events of the batch are applied first, then
  each erasure, in the same transaction; each service then reports through its outbox
  (``customer.erasure.completed``: counts and the pseudonym, never the id).

What it does not reach: the Redis streams the events came in on keep what producers published
until they are trimmed (README, "Erasure on request").
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, Table, or_, select, text, update
from sqlalchemy.orm import Session

from .contracts import CustomerErasureCompleted, CustomerErasureRequested
from .envelope import ENTRY_FIELD, Event, make_event
from .pseudonyms import is_pseudonym
from .store import ErasedRow, OutboxRow, add_to_outbox, chunks, driver_rows, insert_ignore, table_of, utcnow
from .voids import PREPARE_ARRIVALS

log = logging.getLogger("serialtrack.erasure")

ERASURE_REQUESTED = CustomerErasureRequested.event_type
ERASURE_COMPLETED = CustomerErasureCompleted.event_type
ERASURE_TYPES = frozenset({ERASURE_REQUESTED, ERASURE_COMPLETED})
CUSTOMER, RECEIPT = "customer", "receipt"
# Fields of inbound events (shared/contracts) that hold a customer id or a receipt id.
CUSTOMER_FIELDS = ("customer_id",)
RECEIPT_FIELDS = ("receipt_id",)
_IDS = uuid.UUID("7d0c3f6e-2a51-4c59-9d3e-0b8f4e6a1c27")

Pseudonymize = Callable[[str], str]
_erased = table_of(ErasedRow)


@dataclass(frozen=True)
class CustomerColumns:
    """Where one table keeps customers' data."""

    table: Table
    customer: tuple[str, ...] = ()  # columns whose whole value is a customer id
    receipt: tuple[str, ...] = ()  # columns whose whole value is a receipt id
    text: tuple[str, ...] = ()  # JSON or prose that may quote either


# Every service's unpublished outgoing events (a decision naming the customer, not relayed yet).
OUTBOX = CustomerColumns(table_of(OutboxRow), text=("envelope",))


class Replacer:
    """Replaces whole-token occurrences of some values (as they are, JSON-escaped, any case) by their
    pseudonyms. A token ends where a letter, digit, ``_`` or ``-`` does not follow: C-7 is not
    replaced inside C-77."""

    def __init__(self, pseudonyms: Mapping[str, str]):
        self.by_form: dict[str, str] = {}
        for value, pseudonym in pseudonyms.items():
            for form in (value, json.dumps(value)[1:-1]):
                self.by_form[form.lower()] = pseudonym
        forms = sorted(self.by_form, key=len, reverse=True)
        self.pattern = re.compile(
            r"(?<![A-Za-z0-9_-])(?:" + "|".join(map(re.escape, forms)) + r")(?![A-Za-z0-9_-])", re.IGNORECASE
        ) if forms else None

    @property
    def forms(self) -> list[str]:
        return list(self.by_form)

    def __call__(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda match: self.by_form[match.group(0).lower()], text)


@dataclass
class Report:
    pseudonym: str
    receipts: list[str]  # the receipts' pseudonyms
    rows: dict[str, int]
    already_erased: bool
    dead_letters: int = 0


def receipts_of(session: Session, data: Sequence[CustomerColumns], customer_id: str) -> set[str]:
    """Receipt ids on this service's rows that name the customer (their sales and returns)."""
    found: set[str] = set()
    for columns in data:
        for customer in columns.customer:
            for receipt in columns.receipt:
                table = columns.table
                found.update(value for (value,) in session.execute(
                    select(table.c[receipt]).distinct().where(table.c[customer] == customer_id,
                                                              table.c[receipt].is_not(None))))
    return {value for value in found if not is_pseudonym(value)}


def erase(session: Session, service: str, data: Sequence[CustomerColumns], request: CustomerErasureRequested,
          pseudonymize: Pseudonymize) -> tuple[Report, Replacer]:
    """Pseudonymize the customer and their receipts in every declared column; remember the pseudonyms."""
    if session.get_bind().dialect.name == "postgresql":
        # Every batch reads erased_values before it applies (pseudonymize_arrivals), and PostgreSQL
        # holds that read's lock until the batch commits: so a batch of another process of this
        # service that is applying a sale of this customer commits before the rows are rewritten,
        # and one that starts later waits and sees the erasure. (SQLite has one writer at a time.)
        session.execute(text("LOCK TABLE erased_values IN ACCESS EXCLUSIVE MODE"))
    customer = request.customer_id
    pseudonym = pseudonymize(customer)
    already = session.execute(select(_erased.c.pseudonym).where(
        _erased.c.service == service, _erased.c.pseudonym == pseudonym)).first() is not None
    receipts = (set(request.receipt_ids) | receipts_of(session, data, customer)) - {customer}
    receipts = {r for r in receipts if not is_pseudonym(r)}
    values = {customer: pseudonym, **{r: pseudonymize(r) for r in sorted(receipts)}}
    replace_text = Replacer(values)
    rows: dict[str, int] = {}
    for columns in (*data, OUTBOX):
        changed = _erase_table(session, columns, {customer: pseudonym}, {r: values[r] for r in receipts},
                               replace_text)
        if changed:
            rows[columns.table.name] = rows.get(columns.table.name, 0) + changed
    now = utcnow()
    insert_ignore(session, _erased, [
        {"service": service, "pseudonym": p, "kind": CUSTOMER if v == customer else RECEIPT,
         "erasure_id": request.erasure_id, "erased_at": now} for v, p in values.items()])
    return Report(pseudonym, sorted(values[r] for r in receipts), rows, already), replace_text


def erase_receipts_reported(session: Session, service: str, data: Sequence[CustomerColumns],
                            report: CustomerErasureCompleted, pseudonymize: Pseudonymize) -> tuple[dict[str, int], Replacer]:
    """Another service's report of an erasure: the receipts whose pseudonyms it names, found here by
    pseudonymizing each distinct receipt this service keeps (theft keeps receipts, never customers).
    Rows changed per table, and the replacer for the dead letters."""
    wanted = set(report.receipt_pseudonyms) - set(erased_among(session, service, report.receipt_pseudonyms))
    found: dict[str, str] = {}
    for columns in data:
        for name in columns.receipt:
            column = columns.table.c[name]
            for (value,) in session.execute(select(column).distinct().where(column.is_not(None))):
                if not is_pseudonym(value) and (p := pseudonymize(value)) in wanted:
                    found[value] = p
    replace_text = Replacer(found)
    rows: dict[str, int] = {}
    if found:
        for columns in (*data, OUTBOX):
            changed = _erase_table(session, columns, {}, found, replace_text)
            if changed:
                rows[columns.table.name] = rows.get(columns.table.name, 0) + changed
    insert_ignore(session, _erased, [{"service": service, "pseudonym": p, "kind": RECEIPT, "erasure_id": report.erasure_id,
                                      "erased_at": utcnow()} for p in wanted])
    return rows, replace_text


def _erase_table(session: Session, columns: CustomerColumns, customers: Mapping[str, str],
                 receipts: Mapping[str, str], replace_text: Replacer) -> int:
    table = columns.table
    key = list(table.primary_key.columns)
    changed: set[tuple] = set()
    for names, values in ((columns.customer, customers), (columns.receipt, receipts)):
        for name in names:
            column = table.c[name]
            for value, pseudonym in values.items():
                where = column == value
                changed.update(tuple(row) for row in session.execute(select(*key).where(where)))
                session.execute(update(table).where(where).values({name: pseudonym}))
    for name in columns.text:
        column = table.c[name]
        for part in chunks(replace_text.forms, 50):
            hits = session.execute(select(*key, column).where(
                or_(*(column.icontains(form, autoescape=True) for form in part)))).all()
            for row in hits:
                old = row[-1]
                new = replace_text(old)
                if new != old:
                    session.execute(update(table).where(*(c == v for c, v in zip(key, row[:-1], strict=True)))
                                    .values({name: new}))
                    changed.add(tuple(row[:-1]))
    return len(changed)


def erased_among(session: Session, service: str, pseudonyms: Iterable[str]) -> dict[str, str]:
    """Which of these pseudonyms name values this service erased: pseudonym -> customer | receipt.
    Straight through the driver: once something was erased, every batch asks."""
    wanted, found = sorted(set(pseudonyms)), dict[str, str]()
    for part in chunks(wanted):
        found.update(driver_rows(session, f"SELECT pseudonym, kind FROM erased_values WHERE service = ? AND pseudonym "
                                          f"IN ({', '.join('?' * len(part))})", [service, *part]))
    return found


def anything_erased(session: Session, service: str) -> bool:
    return session.execute(select(_erased.c.pseudonym).where(_erased.c.service == service).limit(1)).first() is not None


def _named(event: Event, fields: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(name, value) for name in fields
            if isinstance(value := getattr(event.data, name, None), str) and not is_pseudonym(value)]


def pseudonymize_arrivals(session: Session, service: str, events: list[Event],
                          pseudonymize: Pseudonymize) -> list[Event]:
    """The events, those naming an erased customer or receipt rewritten as if published after the
    erasure. A customer's erasure covers the receipt of a purchase that arrives late: it is
    remembered as erased too. One query per batch while nothing was erased here, two after."""
    if not events or not anything_erased(session, service):
        return events
    named = {id(e): (_named(e, CUSTOMER_FIELDS), _named(e, RECEIPT_FIELDS)) for e in events}
    values = {value for customers, receipts in named.values() for _, value in (*customers, *receipts)}
    if not values:
        return events
    pseudonyms = {value: pseudonymize(value) for value in values}
    erased = erased_among(session, service, pseudonyms.values())
    if not erased:
        return events
    out: list[Event] = []
    newly_erased: list[str] = []
    for event in events:
        customers, receipts = named[id(event)]
        customer_erased = any(pseudonyms[v] in erased for _, v in customers)
        hits = {v: pseudonyms[v] for _, v in (*customers, *receipts)
                if customer_erased or pseudonyms[v] in erased}
        if not hits:
            out.append(event)
            continue
        if customer_erased:
            newly_erased.extend(pseudonyms[v] for _, v in receipts if pseudonyms[v] not in erased)
        out.append(_rewritten(event, Replacer(hits)))
    if newly_erased:
        now = utcnow()
        insert_ignore(session, _erased, [{"service": service, "pseudonym": p, "kind": RECEIPT,
                                          "erasure_id": "arrival", "erased_at": now} for p in set(newly_erased)])
    return out


def _rewritten(event: Event, replace_text: Replacer) -> Event:
    """The event with its text fields (ids and prose alike) passed through ``replace_text``. Only plain
    strings and lists of them: enums, ranges and numbers are never customers' data."""
    changed: dict[str, Any] = {}
    for name in type(event.data).model_fields:
        value = getattr(event.data, name)
        if type(value) is str:
            new: Any = replace_text(value)
        elif isinstance(value, list) and all(type(v) is str for v in value):
            new = [replace_text(v) for v in value]
        else:
            continue
        if new != value:
            changed[name] = new
    new_data = event.data.model_copy(update=changed)
    # A decoded entry's envelope holds the typed data itself (shared/envelope.py), a made one its JSON.
    held = event.envelope.data
    envelope = event.envelope.model_copy(update={"data": new_data if held is event.data else {**held, **changed}})
    return replace(event, envelope=envelope, data=new_data)


class DeadLetterRewriter:
    """A service's dead-letter stream without the values it erased. Uses the service's writer user
    (shared/acl.py: XRANGE, XADD, XDEL on its dead-letter stream), synchronously: it runs inside the
    batch's apply, in the consumer's worker thread."""

    def __init__(self, client, stream: str):
        self.client = client  # a sync redis.Redis
        self.stream = stream

    def rewrite(self, replace_text: Replacer, erasure_id: str) -> int:
        rewritten = 0
        after = "-"
        while True:
            entries = self.client.xrange(self.stream, min=after, max="+", count=500)
            if not entries:
                return rewritten
            for entry_id, raw in entries:
                fields = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
                new = {k: replace_text(v) for k, v in fields.items()}
                if new != fields:  # the copy lands at the end, is read again below and left as it is
                    self.client.xadd(self.stream, {**new, "erasure_id": erasure_id})
                    self.client.xdel(self.stream, entry_id)
                    rewritten += 1
            last = entries[-1][0]
            after = "(" + (last.decode() if isinstance(last, bytes) else last)


class DeadLetterScrubber:
    """``StreamConsumer.scrub_dead_letters``: a dead letter about to be written, without the values this
    service erased. Every string of the original entry (its envelope's values, parsed where it is
    JSON) is a candidate; their pseudonyms are looked up in ``erased_values``. Costs one query per
    dead-lettered batch while nothing was erased, two after."""

    def __init__(self, engine: Engine, service: str, pseudonymize: Pseudonymize):
        self.engine = engine
        self.service = service
        self.pseudonymize = pseudonymize

    def __call__(self, letters: list[dict[str, str]]) -> list[dict[str, str]]:
        with Session(self.engine) as session:
            if not anything_erased(session, self.service):
                return letters
            strings = [[v for v in _strings_in(letter.get("original", "")) if 0 < len(v) <= 64 and not is_pseudonym(v)]
                       for letter in letters]
            pseudonyms = {value: self.pseudonymize(value) for values in strings for value in values}
            erased = erased_among(session, self.service, pseudonyms.values())
        if not erased:
            return letters
        scrubbed = []
        for letter, values in zip(letters, strings, strict=True):
            hits = {v: pseudonyms[v] for v in values if pseudonyms[v] in erased}
            if any(erased[p] == CUSTOMER for p in hits.values()):
                # The erased customer's entry: its receipt is theirs, even one no service has seen yet.
                hits.update((r, self.pseudonymize(r)) for r in _receipts_in(letter.get("original", "")))
            scrubbed.append({k: Replacer(hits)(v) for k, v in letter.items()} if hits else letter)
        return scrubbed


def _receipts_in(original: str) -> list[str]:
    """The receipt fields of the event in a dead letter's ``original`` (an entry's fields, JSON)."""
    try:
        data = json.loads(json.loads(original)[ENTRY_FIELD]).get("data")
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    if not isinstance(data, dict):
        return []
    return [v for name in RECEIPT_FIELDS if isinstance(v := data.get(name), str) and not is_pseudonym(v)]


def _strings_in(text: str) -> list[str]:
    """Every string value in ``text`` read as JSON, and in JSON strings nested in it (a dead letter's
    ``original`` holds the entry's ``event`` field, itself JSON); ``text`` itself if it is not JSON."""
    try:
        value = json.loads(text)
    except ValueError:
        return [text]
    found: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            found.append(item)
            if item[:1] in "{[":
                found.extend(_strings_in(item))
        elif isinstance(item, list):
            for v in item:
                walk(v)
        elif isinstance(item, dict):
            for v in item.values():
                walk(v)

    walk(value)
    return found


def completion_event(service: str, request: Event, report: Report) -> Event:
    data = request.data
    assert isinstance(data, CustomerErasureRequested)
    return make_event(
        CustomerErasureCompleted(erasure_id=data.erasure_id, service=service, pseudonym=report.pseudonym,
                                 receipts=len(report.receipts), receipt_pseudonyms=report.receipts, rows=report.rows,
                                 dead_letters=report.dead_letters, already_erased=report.already_erased),
        source=f"serialtrack/{service}",
        # Deterministic: the same request applied again after a crash reports under the same id.
        id=str(uuid.uuid5(_IDS, f"{service}/{request.source}/{request.id}")))


def applier(service: str, data: Sequence[CustomerColumns], apply: Callable[[Session, list[Event]], None],
            pseudonymize: Pseudonymize, dead_letters: DeadLetterRewriter | None = None
            ) -> Callable[[Session, list[Event]], None]:
    """The service's batch handler with erasure: arrivals pseudonymized, then the batch applied, then
    each erasure request of the batch (so a sale in the same batch as its customer's erasure is
    erased too), each reported through the outbox."""

    def apply_with_erasure(session: Session, events: list[Event]) -> None:
        # Events made inside the batch (a void's corrected event, shared/voids.py) arrive this way too.
        session.info[PREPARE_ARRIVALS] = lambda made: pseudonymize_arrivals(session, service, made, pseudonymize)
        requests = [e for e in events if e.type == ERASURE_REQUESTED]
        reported = [e for e in events if e.type == ERASURE_COMPLETED]
        others = [e for e in events if e.type not in ERASURE_TYPES] if requests or reported else events
        if others:
            apply(session, pseudonymize_arrivals(session, service, others, pseudonymize))
        for request in requests:
            assert isinstance(request.data, CustomerErasureRequested)
            report, replace_text = erase(session, service, data, request.data, pseudonymize)
            if dead_letters is not None:
                report.dead_letters = dead_letters.rewrite(replace_text, request.data.erasure_id)
            add_to_outbox(session, service, [completion_event(service, request, report)])
            # The pseudonym and counts only: logs never hold a customer id.
            log.info("%s: erasure %s applied to %s: %d receipts, rows %s, %d dead letters rewritten%s", service,
                     request.data.erasure_id, report.pseudonym, len(report.receipts), report.rows,
                     report.dead_letters, " (erased before)" if report.already_erased else "")
        for event in reported:  # a service that reads other services' reports (theft): their receipts
            assert isinstance(event.data, CustomerErasureCompleted)
            if event.data.service == service or not event.data.receipt_pseudonyms:
                continue
            rows, replace_text = erase_receipts_reported(session, service, data, event.data, pseudonymize)
            letters = dead_letters.rewrite(replace_text, event.data.erasure_id) if dead_letters and rows else 0
            if rows or letters:
                log.info("%s: erasure %s (reported by %s): rows %s, %d dead letters rewritten", service,
                         event.data.erasure_id, event.data.service, rows, letters)

    return apply_with_erasure

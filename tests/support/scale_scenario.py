"""The issue-16 scenario: one shuffled multi-stream event set over every service, and what every
service ends with per unit. The replica test (tests/integration/test_replicas.py) applies it with
one, two and three processes per service; the order test (tests/service/test_arrival_order.py)
applies it in process in other arrival orders. Both compare ``outcomes``: the final state must not
depend on how many processes ran or on the order events arrived in."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from functools import cache

from sqlalchemy import Connection, select

from services.inventory import store as inventory_store
from services.recalls import store as recalls_store
from services.registry import load
from services.theft import store as theft_store
from services.warranty import store as warranty_store
from shared.contracts import (
    RecallAmended,
    RecallRemedyCompleted,
    ReturnRequested,
    TheftReported,
    WarrantyClaimSubmitted,
    WarrantyPolicySet,
)
from shared.envelope import make_event
from shared.store import table_of
from tests.support import factories as f
from tests.support.service_layer import ServiceStore, template

SERVICES = ("inventory", "warranty", "theft", "recalls")
UNITS = 120


@cache
def scenario(seed: int = 16) -> list:
    """The event set, in publishing order: shuffled, with duplicates and late events at the end. Made
    once: every run publishes the same envelopes (ids included)."""
    rng = random.Random(seed)
    events: list = []
    late: list = []
    makers = ("acme", "globex")
    serials = {m: [f"{m[0].upper()}{n:05d}" for n in range(UNITS // 2)] for m in makers}
    for m in makers:
        events.append(make_event(WarrantyPolicySet(policy_id=f"P-{m}", manufacturer=m, coverage_days=365,
                                                   return_window_days=30, effective_from=f.at(-60 * 24)),
                                 source="test/maker", time=f.at(-60 * 24)))
    for m, units in serials.items():
        for n, sn in enumerate(units):
            customer, store = f"C{rng.randrange(25)}", f"store-{rng.randrange(4)}"
            story = [f.received(m, sn, minutes=n % 7, location="dc")]
            if rng.random() < 0.5:
                story.append(f.transferred(m, sn, minutes=10, from_location="dc", to_location=store))
            receipt = f"R-{m}-{n // 2}"  # two units per receipt: a late sale changes the other's return
            story.append(f.sold(m, sn, minutes=20, location=store, receipt_id=receipt, customer_id=customer))
            roll = rng.random()
            if roll < 0.3:
                story.append(f.returned(m, sn, minutes=30, location=store, receipt_id=receipt, condition="damaged"))
            elif roll < 0.45:
                story.append(f.returned(m, sn, minutes=30, location=store, receipt_id=receipt, condition="open_box"))
                story.append(f.sold(m, sn, minutes=40, location=store, customer_id=customer))
            elif roll < 0.55:
                story.append(f.sold(m, sn, minutes=35, location="store-9"))  # sold twice
            if rng.random() < 0.25:
                story.append(f.theft_reported(m, sn, minutes=15 + rng.random() * 40, case_number=f"K-{sn}"))
                if rng.random() < 0.4:
                    story.append(f.theft_recovered(m, sn, minutes=70, case_number=f"K-{sn}"))
            if rng.random() < 0.15:
                story.append(f.adjusted(m, sn, rng.choice(["lost", "stolen", "damaged"]), minutes=45 + rng.random()))
            if rng.random() < 0.35:
                story.append(make_event(WarrantyClaimSubmitted(
                    claim_id=f"CL-{sn}", manufacturer=m, serial=sn, customer_id=customer, issue="no picture",
                    location=store), source="test/desk", time=f.at(50 + rng.random() * 30)))
            if rng.random() < 0.2:
                story.append(make_event(ReturnRequested(
                    request_id=f"RQ-{sn}", manufacturer=m, serial=sn, receipt_id=receipt, location=store,
                    customer_id=customer), source="test/pos", time=f.at(25 + rng.random() * 10)))
            # A fifth of the units: one of their events arrives after everything else (a late feed).
            (late if rng.random() < 0.2 else events).extend(story[-1:])
            events.extend(story[:-1])
    # A police report over a range of acme serials (some received, some never), and a recall of
    # globex's TV-55 with an amendment that narrows it, and remedies.
    events.append(make_event(TheftReported(
        manufacturer="acme", serial_range={"prefix": "A", "first": 20, "last": 100, "width": 5},
        agency="metro-pd", case_number="K-RANGE"), source="test/police", time=f.at(33)))
    events.append(f.recall_issued("globex", minutes=25, recall_id="RC-16", skus=["TV-55"]))
    events.append(make_event(RecallAmended(recall_id="RC-16", manufacturer="globex",
                                           serial_ranges=[{"prefix": "G", "first": 0, "last": 40, "width": 5}]),
                             source="test/maker", time=f.at(55)))
    for sn in serials["globex"][:30:3]:
        events.append(make_event(RecallRemedyCompleted(recall_id="RC-16", manufacturer="globex", serial=sn,
                                                       remedy="repair"), source="test/desk", time=f.at(90)))
    rng.shuffle(events)
    duplicates = rng.sample(events, len(events) // 20)
    rng.shuffle(late)
    return events + duplicates + late



def outcomes(connect: Callable[[str], Connection]) -> dict[str, object]:
    """What every service ends with, per unit: what must not depend on how many processes ran, or
    on arrival order. ``connect(service)``: a connection to that service's store."""
    found: dict[str, object] = {}

    def rows(service, query) -> list[tuple]:
        with connect(service) as conn:
            return sorted(tuple(r) for r in conn.execute(query))

    units = table_of(inventory_store.UnitRow)
    found["inventory units"] = rows("inventory", select(*[c for c in units.c if c.name != "updated_at"]))
    anomalies = table_of(inventory_store.AnomalyRow)
    found["inventory open anomalies"] = rows("inventory", select(
        anomalies.c.manufacturer, anomalies.c.serial, anomalies.c.kind, anomalies.c.event_source,
        anomalies.c.event_id).where(anomalies.c.status == "open"))
    alerts = table_of(theft_store.AlertRow)
    found["theft open alerts"] = rows("theft", select(
        alerts.c.alert_id, alerts.c.kind, alerts.c.manufacturer, alerts.c.serial, alerts.c.case_number,
        alerts.c.seen_at, alerts.c.sightings).where(alerts.c.status == "open"))
    for kind, model, key in (("claims", warranty_store.ClaimRow, "claim_id"),
                             ("returns", warranty_store.ReturnRow, "request_id")):
        table = table_of(model)
        found[f"warranty {kind}"] = rows("warranty", select(table.c[key], table.c.status, table.c.reasons,
                                                            table.c.facts))
    notices = table_of(warranty_store.RecallNoticeRow)
    found["warranty recall notices"] = rows("warranty", select(notices.c.recall_id, notices.c.manufacturer,
                                                               notices.c.serial, notices.c.outcome))
    affected = table_of(recalls_store.AffectedRow)
    # Not when rows were written or notices sent (warranty stamps a notice with the moment it sends
    # it), nor how many times inventory revised a hold: only what they say.
    sent = ("matched_at", "notified_at", "owner_unknown_at", "quarantine_revision")
    found["recalls campaign rows"] = rows("recalls", select(*[c for c in affected.c if c.name not in sent]))
    progress = table_of(recalls_store.ProgressRow)
    found["recalls progress"] = rows("recalls", select(progress).where(progress.c.units != 0))
    recall_units = table_of(recalls_store.UnitRow)
    found["recalls units"] = rows("recalls", select(recall_units.c.manufacturer, recall_units.c.serial,
                                                    recall_units.c.sku, recall_units.c.stock,
                                                    recall_units.c.stock_order))
    return found


def apply_in_order(directory, seed: int | None, urls: dict[str, str] | None = None) -> dict[str, object]:
    """The scenario through the four stores. ``seed`` None: publishing order, batches of 20, outgoing
    events last; otherwise a shuffled arrival order, random batch sizes and random relay delays.
    ``urls``: the services' databases, migrated (default: SQLite files in ``directory``)."""
    rng = random.Random(seed)
    stores: dict[str, ServiceStore] = {}
    for service in SERVICES:
        path = directory / f"{service}-{seed}.db"
        if urls is None:
            shutil.copy(template(service, directory), path)
        stores[service] = ServiceStore(load(service), path, urls[service] if urls else None)
    try:
        events = list(scenario())
        if seed is not None:
            rng.shuffle(events)
        queues: dict[str, list] = {s: [e for e in events if e.type in stores[s].definition.event_types] for s in SERVICES}
        while any(queues.values()):
            for service, store in stores.items():
                size = 20 if seed is None else rng.randint(1, 20)
                batch, queues[service] = queues[service][:size], queues[service][size:]
                if not batch:
                    continue
                store.apply(batch)
                for event in store.publish_outbox():
                    for reader in SERVICES:
                        if event.type in stores[reader].definition.event_types:
                            queue = queues[reader]
                            queue.insert(len(queue) if seed is None else rng.randint(0, len(queue)), event)
        return outcomes(lambda service: stores[service].engine.connect())
    finally:
        for store in stores.values():
            store.close()

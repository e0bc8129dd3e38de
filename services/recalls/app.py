"""Wiring: the recalls service as a ServiceDefinition (run it with `serialtrack serve recalls`)."""

from pathlib import Path

from shared import voids
from shared.erasure import CustomerColumns
from shared.service import ServiceDefinition
from shared.store import table_of

from . import api, handlers, store

definition = ServiceDefinition(
    name=handlers.SERVICE,
    description="Manufacturer recall campaigns: which known units each recall covers, whether they are "
                "quarantined, sold with the owner notified or unknown, or remedied, and the campaign's progress.",
    event_types=handlers.EVENT_TYPES,
    tables=store.TABLES,
    # Voids (event.voided, shared/voids.py) around the service's own handler.
    apply=voids.applier(handlers.SERVICE, handlers.EVENT_TYPES, handlers.apply_events, handlers.apply_voided),
    read_api=api.read_api,
    lookup_path="/units/{manufacturer}/{serial}/recalls",
    migrations_dir=Path(__file__).parent / "migrations",
    # Owners' notices are counted here, not kept: only inventory's anomaly details may quote a receipt.
    customer_data=(CustomerColumns(table_of(store.SaleAttemptRow), text=("detail",)),),
)

"""Wiring: the inventory service as a ServiceDefinition (run it with `serialtrack serve inventory`)."""

from pathlib import Path

from shared import voids
from shared.erasure import CustomerColumns
from shared.service import ServiceDefinition
from shared.store import table_of

from . import api, handlers, store

definition = ServiceDefinition(
    name=handlers.SERVICE,
    description="Every unit's status, location and condition, from receipt to sale, return, transfer, "
                "quarantine or loss, with its full history and the anomalies seen on the way.",
    event_types=handlers.EVENT_TYPES,
    tables=store.TABLES,
    # Voids (event.voided, shared/voids.py) around the service's own handler.
    apply=voids.applier(handlers.SERVICE, handlers.EVENT_TYPES, handlers.apply_events, handlers.apply_voided),
    read_api=api.read_api,
    lookup_path="/units/{manufacturer}/{serial}",
    migrations_dir=Path(__file__).parent / "migrations",
    housekeeping=handlers.housekeeping,  # manifests whose deadline passed (missing_in_transit)
    customer_data=(
        CustomerColumns(table_of(store.HistoryRow), customer=("customer_id",), receipt=("receipt_id",), text=("note",)),
        CustomerColumns(table_of(store.AnomalyRow), text=("detail",)),
    ),
)

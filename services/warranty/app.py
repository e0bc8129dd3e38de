"""Wiring: the warranty service as a ServiceDefinition (run it with `serialtrack serve warranty`)."""

from pathlib import Path

from shared import voids
from shared.erasure import CustomerColumns
from shared.service import ServiceDefinition
from shared.store import table_of

from . import api, handlers, store

definition = ServiceDefinition(
    name=handlers.SERVICE,
    description="Warranty coverage from the sale, owner registration, and decisions on warranty claims and "
                "return requests verified against each unit's real history (sales, returns, stolen reports, "
                "recalls), with fraud signals; recall notices to owners; a synchronous path for the counter.",
    event_types=handlers.EVENT_TYPES,
    tables=store.TABLES,
    # Voids (event.voided, shared/voids.py) around the service's own handler.
    apply=voids.applier(handlers.SERVICE, handlers.EVENT_TYPES, handlers.apply_events, handlers.apply_voided),
    read_api=api.read_api,
    lookup_path="/warranties/{manufacturer}/{serial}",
    migrations_dir=Path(__file__).parent / "migrations",
    customer_data=(
        CustomerColumns(table_of(store.FactRow), customer=("customer_id",), receipt=("receipt_id",)),
        CustomerColumns(table_of(store.ClaimRow), customer=("customer_id",),
                        text=("issue", "issue_key", "facts", "reasons")),
        CustomerColumns(table_of(store.ReturnRow), customer=("customer_id",), receipt=("receipt_id",),
                        text=("reason", "facts", "reasons")),
        CustomerColumns(table_of(store.DecisionRow), text=("facts", "reasons")),
        CustomerColumns(table_of(store.RecallNoticeRow), customer=("customer_id",)),
    ),
    locks=store.LOCKS,
)

"""Wiring: the warranty service as a ServiceDefinition (run it with `serialtrack serve warranty`)."""

from pathlib import Path

from shared.service import ServiceDefinition

from . import api, handlers, store

definition = ServiceDefinition(
    name=handlers.SERVICE,
    description="Warranty coverage from the sale, owner registration, and decisions on warranty claims and "
                "return requests verified against each unit's real history (sales, returns, stolen reports, "
                "recalls), with fraud signals; recall notices to owners; a synchronous path for the counter.",
    event_types=handlers.EVENT_TYPES,
    tables=store.TABLES,
    apply=handlers.apply_events,
    read_api=api.read_api,
    lookup_path="/warranties/{manufacturer}/{serial}",
    migrations_dir=Path(__file__).parent / "migrations",
    locks=store.LOCKS,
)

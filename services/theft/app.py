"""Wiring: the theft-watch service as a ServiceDefinition (run it with `serialtrack serve theft`)."""

from pathlib import Path

from shared import voids
from shared.erasure import CustomerColumns
from shared.service import ServiceDefinition
from shared.store import table_of

from . import api, handlers, store

definition = ServiceDefinition(
    name=handlers.SERVICE,
    description="A stolen-serial registry (law-enforcement reports and the retailer's own lost/stolen "
                "findings) and real-time alerts wherever a reported unit shows up: receipts, sales, returns, "
                "transfers, warranty claims, return requests. Bulk checks and exports for law enforcement.",
    event_types=handlers.EVENT_TYPES,
    tables=store.TABLES,
    # Voids (event.voided, shared/voids.py) around the service's own handler.
    apply=voids.applier(handlers.SERVICE, handlers.EVENT_TYPES, handlers.apply_events, handlers.apply_voided),
    locks=handlers.LOCKS,  # units, and the normalized serials near misses pair (handlers.near_lock_keys)
    read_api=api.read_api,
    lookup_path="/stolen/{manufacturer}/{serial}",
    migrations_dir=Path(__file__).parent / "migrations",
    # No customer ids here: a sighting's reference is a receipt (or a claim or request id), erased
    # when the request names it, or when inventory's or warranty's report of the erasure names its
    # pseudonym (they tie receipts to customers; theft reads their customer.erasure.completed).
    customer_data=(
        CustomerColumns(table_of(store.SightingRow), receipt=("reference",)),
        CustomerColumns(table_of(store.AlertRow), text=("sightings",)),
    ),
)

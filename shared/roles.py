"""Who may publish which event type: producer roles, and the types only services publish.

This is the one table the signing policy (``shared/signing.py``, key registry checks), the AsyncAPI
document (``shared/asyncapi.py``) and the Redis ACLs (one user per role and per service) all read.

Every type in the contracts registry (``shared.contracts.EVENT_TYPES``) is exactly one of:

- **inbound**: facts from outside (stores, warehouses, agencies, manufacturers), published by
  producers with a role below;
- **internal**: what a service publishes itself through its outbox (alerts, decisions, quarantine
  reports, its own bookmarks). Only that service's Redis user may write their streams, so they are
  authenticated by the ACLs, not by signatures.

Checked when this module is imported: a contract added to the registry without being classified
here stops every service from starting, instead of quietly being publishable by nobody (or by
anybody).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from types import MappingProxyType

from .contracts import EVENT_TYPES

# Roles of producers outside the system and the inbound types each may publish.
_PRODUCER_TYPES: dict[str, tuple[str, ...]] = {
    # event.voided: a till or a warehouse withdraws a fact it published (shared/voids.py checks that the
    # key may publish the voided type and speaks for the voided event's source).
    "pos": ("unit.sold", "unit.returned", "return.requested", "event.voided"),
    # A retailer's DC also ships transfers to its stores with a manifest.
    "warehouse": ("unit.received", "unit.transferred", "unit.adjusted", "shipment.dispatched", "event.voided"),
    # A store's cycle count (its receipts and adjustments go through its warehouse-role systems).
    "store": ("stock.counted",),
    # A distributor between manufacturers and retailers: its advance ship notices.
    "distributor": ("shipment.dispatched",),
    # A claim is taken at a service desk, and so is the remedy of a recalled unit.
    "service-desk": ("warranty.claim.submitted", "recall.remedy.completed"),
    "owner-registry": ("warranty.owner.registered",),
    "law-enforcement": ("theft.reported", "theft.recovered"),
    "manufacturer": ("recall.issued", "recall.amended", "recall.closed", "warranty.policy.set",
                     "shipment.dispatched"),
}
# Inbound types only the operator publishes (the CLI; the warranty service on behalf of a
# customer-service token, shared/acl.py HTTP_SUBMISSIONS): no till or feed may erase a customer.
OPERATOR_ONLY_TYPES: tuple[str, ...] = ("customer.erasure.requested",)

# Every service reports each erasure it applied (shared/erasure.py), under one type.
REPORTED_BY_EVERY_SERVICE: tuple[str, ...] = ("customer.erasure.completed",)

# What each service publishes (through its outbox; services/<name>/handlers.py). The warranty
# service's HTTP API also publishes the inbound types warranty.claim.submitted and return.requested
# on behalf of the counter: those stay inbound (a service desk or POS may publish them as well).
SERVICE_TYPES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType({
    "inventory": ("unit.quarantined", "unit.quarantine.withdrawn", "inventory.recall.continues",
                  "inventory.anomaly.detected", "inventory.anomaly.withdrawn", *REPORTED_BY_EVERY_SERVICE),
    "warranty": ("warranty.claim.decided", "return.decided", "warranty.stolen_unit_presented",
                 "recall.owner_notified", "recall.owner_unknown", *REPORTED_BY_EVERY_SERVICE),
    "theft": ("theft.alert", "theft.alert.withdrawn", *REPORTED_BY_EVERY_SERVICE),
    "recalls": REPORTED_BY_EVERY_SERVICE,  # otherwise listens and counts only
})

INBOUND_TYPES: frozenset[str] = frozenset(
    [*(t for types in _PRODUCER_TYPES.values() for t in types), *OPERATOR_ONLY_TYPES])
INTERNAL_TYPES: frozenset[str] = frozenset(t for types in SERVICE_TYPES.values() for t in types)

OPERATOR = "operator"
# role -> the types its keys (and its Redis users) may publish. ``operator`` may publish any inbound
# type (imports, replays, the CLI on the embedded default, erasures) but no internal one: nobody
# outside a service speaks for it.
ROLE_TYPES: MappingProxyType[str, frozenset[str]] = MappingProxyType({
    **{role: frozenset(types) for role, types in _PRODUCER_TYPES.items()},
    OPERATOR: INBOUND_TYPES,
})
ROLES: tuple[str, ...] = tuple(ROLE_TYPES)

# The data field whose value a key of the role speaks for: a law-enforcement key is bound to one
# agency (``data.agency`` must equal it), a manufacturer key to one manufacturer.
ROLE_DATA_FIELD: MappingProxyType[str, str] = MappingProxyType({
    "law-enforcement": "agency",
    "manufacturer": "manufacturer",
})

# Inbound types (shared/roles.py) whose envelopes must be signed: the ones that change what the
# system believes about other people's property (stolen, recalled, covered, owned).
REQUIRED_PATTERNS: tuple[str, ...] = (
    "theft.reported",
    "theft.recovered",
    "recall.*",
    "warranty.policy.set",
    "warranty.owner.registered",
    "event.voided",  # withdraws what a till or warehouse said: who voids must be provable
)


def signature_required(event_type: str, require_all: bool = False) -> bool:
    """Whether an envelope of ``event_type`` must be signed.

    Only inbound types are ever required: internal types come from services, whose streams only
    their own Redis user may write (ACLs), and services hold no signing key. ``require_all``
    (SERIALTRACK_REQUIRE_SIGNATURES) requires a signature on every inbound type. Unknown types are
    not required here; decoding dead-letters them as ``unknown_type``. A set look-up: consumers ask
    for every event they read."""
    return event_type in (INBOUND_TYPES if require_all else _REQUIRED)


_REQUIRED: frozenset[str] = frozenset(
    t for t in INBOUND_TYPES if any(fnmatchcase(t, pattern) for pattern in REQUIRED_PATTERNS))


def types_for_role(role: str) -> frozenset[str]:
    """The types a role may publish. KeyError for an unknown role."""
    try:
        return ROLE_TYPES[role]
    except KeyError:
        raise KeyError(f"unknown role {role!r}; roles: {', '.join(ROLES)}") from None


def roles_for_type(event_type: str) -> tuple[str, ...]:
    """The producer roles that may publish ``event_type`` (empty for internal and unknown types)."""
    return tuple(role for role, types in ROLE_TYPES.items() if event_type in types)


def service_for_type(event_type: str) -> str | None:
    """The service that publishes an internal type ("inventory, warranty, theft, recalls" for a type
    every service publishes), else None."""
    services = [service for service, types in SERVICE_TYPES.items() if event_type in types]
    return ", ".join(services) or None


def _check_against_contracts() -> None:
    unknown = sorted((INBOUND_TYPES | INTERNAL_TYPES) - EVENT_TYPES.keys())
    if unknown:
        raise RuntimeError(f"shared/roles.py names types the contracts registry does not have: {', '.join(unknown)}")
    both = sorted(INBOUND_TYPES & INTERNAL_TYPES)
    if both:
        raise RuntimeError(f"types both inbound and internal in shared/roles.py: {', '.join(both)}")
    unclassified = sorted(EVENT_TYPES.keys() - INBOUND_TYPES - INTERNAL_TYPES)
    if unclassified:
        raise RuntimeError(f"contract types with no publisher in shared/roles.py (give each a role or a service): "
                           f"{', '.join(unclassified)}")
    published_twice = [t for t in INTERNAL_TYPES - set(REPORTED_BY_EVERY_SERVICE)
                       if sum(t in types for types in SERVICE_TYPES.values()) > 1]
    if published_twice:
        raise RuntimeError(f"internal types claimed by two services: {', '.join(sorted(published_twice))}")


_check_against_contracts()

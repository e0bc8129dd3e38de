"""Customers' rights: erasure on request, and each service's report of it (README, "Erasure on request")."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from .base import Code, EventData, Note

# The services that apply an erasure and report it (services/registry.py installs the same four).
ERASING_SERVICES = "inventory, warranty, theft and recalls"


class CustomerErasureRequested(EventData):
    """A customer asked to be erased: every service replaces ``customer_id`` (and the receipt ids of
    that customer's purchases) by its pseudonym in its store, its history and its dead letters, and
    does the same to events naming them that arrive later. Units, sales and decisions keep their
    shape. Published by the operator (`serialtrack erase`) or by the warranty service for a
    customer-service token (`POST /erasures`)."""

    event_type: ClassVar[str] = "customer.erasure.requested"
    erasure_id: Code  # the request's reference: each service's report names it
    customer_id: Code
    # Receipts of the customer's purchases the requester knows (POST /erasures names every one the
    # warranty service knows): erased too, also where a service stores a receipt without its customer
    # (theft's sightings). Each service adds the receipts its own rows tie to the customer, and theft
    # those the other services' reports name.
    receipt_ids: list[Code] = Field(default_factory=list, max_length=1000)
    note: Note = ""  # why, or the ticket of the request; never the customer's identity


class CustomerErasureCompleted(EventData):
    """One service applied an erasure: how many rows of each of its tables it changed, and how many
    of its dead letters it rewrote. Names the customer by pseudonym only."""

    event_type: ClassVar[str] = "customer.erasure.completed"
    published_by: ClassVar[str | None] = ERASING_SERVICES
    erasure_id: Code
    service: Code
    pseudonym: Code  # anon-<16 hex>: the value that replaced the customer id everywhere
    receipts: int = Field(ge=0)  # receipt ids of the customer's purchases pseudonymized with it
    # Their pseudonyms: a service that keeps receipts without customers (theft) erases the receipts
    # whose pseudonyms these are when it reads this report (shared/erasure.py).
    receipt_pseudonyms: list[Code] = Field(default_factory=list, max_length=10_000)
    rows: dict[str, int]  # table -> rows changed
    dead_letters: int = Field(ge=0)  # dead-letter entries rewritten
    already_erased: bool  # this customer was erased here before (a repeated request changes what is left)

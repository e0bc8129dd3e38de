"""Migrations of the inbox and the outbox (see shared/schema.py)."""

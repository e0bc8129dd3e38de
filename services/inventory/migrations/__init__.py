"""Migrations of the inventory service's tables (see shared/schema.py)."""

"""Migrations of the theft service's tables (see shared/schema.py)."""

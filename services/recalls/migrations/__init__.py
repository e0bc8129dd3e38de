"""Migrations of the recalls service's tables (see shared/schema.py)."""

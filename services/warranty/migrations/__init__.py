"""Migrations of the warranty service's tables (see shared/schema.py)."""

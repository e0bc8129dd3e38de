"""Checks on the recalls service's store shared by its tests."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.recalls import store as recalls_store
from shared.store import make_engine


def counts_match_rows(engine, *recall_ids):
    """The progress counts the service maintains batch by batch equal a full count of the rows."""
    with Session(engine) as session:
        maintained = recalls_store.status_counts(session, list(recall_ids))
        assert maintained == recalls_store.status_counts_scanned(session, list(recall_ids))
    return maintained


def assert_counts_match_rows(settings, *recall_ids):
    engine = make_engine(settings.database_url("recalls"))
    try:
        return counts_match_rows(engine, *recall_ids)
    finally:
        engine.dispose()

"""A database created by an older serialtrack is refused at start with the missing columns named."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.recalls import store as recalls_store
from shared.store import OutdatedSchema, create_tables, make_engine


def test_a_table_missing_a_column_is_refused_with_its_name(settings):
    engine = make_engine(settings.database_url("recalls"))
    try:
        create_tables(engine, recalls_store.TABLES)
        create_tables(engine, recalls_store.TABLES)  # up to date: starting again is fine
        with engine.begin() as connection:  # as the previous version created it
            connection.execute(text("ALTER TABLE recalls_affected DROP COLUMN counted_as"))
        with pytest.raises(OutdatedSchema, match=r"missing column\(s\) recalls_affected\.counted_as"):
            create_tables(engine, recalls_store.TABLES)
    finally:
        engine.dispose()

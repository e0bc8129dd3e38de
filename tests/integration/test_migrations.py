"""Migrations: a new database migrated to the heads is exactly what the models declare, on SQLite
and PostgreSQL; a database behind is migrated at start or refused; processes migrate once."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text

from services.registry import INSTALLED, load
from shared.schema import OutdatedSchema, SchemaError, migrate, prepare, state
from shared.store import PLUMBING_TABLES, make_engine


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("service", INSTALLED)
def test_a_new_database_migrated_to_the_heads_is_what_the_models_declare(engine, service):
    """Fails when a model changes without its migration (the diff names what is missing)."""
    definition = load(service)
    migrate(engine, definition.migrations)
    expected = MetaData()
    for table in [*PLUMBING_TABLES, *definition.tables]:
        table.to_metadata(expected)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = [d for d in compare_metadata(context, expected)
                       if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert differences == []
    assert state(engine, definition.migrations).up_to_date


def test_migrating_again_changes_nothing_and_each_branch_is_recorded(engine):
    migrations = load("recalls").migrations
    before, after = migrate(engine, migrations)
    assert before.current == () and not before.legacy
    assert set(after.current) == set(after.heads)
    assert {head.split("_")[0] for head in after.heads} == {"plumbing", "recalls"}
    again_before, again_after = migrate(engine, migrations)
    assert again_before.current == again_after.current == after.current


def test_a_database_missing_a_column_is_refused_at_start_with_its_name(engine):
    migrations = load("recalls").migrations
    prepare(engine, migrations)
    with engine.begin() as conn:  # a migration this build lacks: the column is not there
        conn.execute(text("ALTER TABLE recalls_affected DROP COLUMN counted_as"))
    with pytest.raises(SchemaError, match=r"recalls_affected\.counted_as"):
        prepare(engine, migrations)


def test_with_migrations_off_a_database_behind_is_refused_and_one_at_the_heads_starts(engine):
    migrations = load("theft").migrations
    with pytest.raises(OutdatedSchema, match="serialtrack migrate theft"):
        prepare(engine, migrations, run_migrations=False)
    migrate(engine, migrations)
    prepare(engine, migrations, run_migrations=False)


def test_a_database_of_another_service_is_refused(engine):
    migrate(engine, load("inventory").migrations)
    with pytest.raises(SchemaError, match="belongs to another service"):
        migrate(engine, load("warranty").migrations)


def test_processes_starting_together_migrate_once(engine):
    migrations = load("warranty").migrations
    results, errors = [], []

    def start():
        try:
            results.append(migrate(engine, migrations))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(1 for before, _ in results if before.current == ()) == 1  # the others found it done
    assert all(after.up_to_date for _, after in results)


def test_a_downgrade_and_the_upgrade_after_it_keep_every_row(engine):
    """plumbing_0002 (the inbox digest) undone and redone on a store with rows in it."""
    definition = load("inventory")
    migrate(engine, definition.migrations)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO inbox (service, event_id, source, event_type, event_time, processed_at, digest) "
                          "VALUES ('inventory', 'e-1', 'pos/1', 'unit.sold', :t, :t, 'abc')"),
                     {"t": "2026-11-01 10:00:00"})
    migrate(engine, definition.migrations, to="plumbing_0001")
    assert "plumbing_0001" in state(engine, definition.migrations).current
    with engine.connect() as conn:
        assert conn.execute(text("SELECT event_id FROM inbox")).scalars().all() == ["e-1"]
    migrate(engine, definition.migrations)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT event_id, digest FROM inbox")).all() == [("e-1", None)]
    with pytest.raises(SchemaError, match="drop every table"):
        migrate(engine, definition.migrations, to="base")


def test_plumbing_0003_adds_the_erased_values_and_keeps_every_row(engine):
    """plumbing_0003 (erasure on request) on a store at plumbing_0002 with rows in it: the inbox and
    outbox rows stay; the new table starts empty; undone, it takes only its own table with it."""
    definition = load("warranty")
    migrate(engine, definition.migrations)
    migrate(engine, definition.migrations, to="plumbing_0002")
    assert "erased_values" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO inbox (service, event_id, source, event_type, event_time, processed_at, digest) "
                          "VALUES ('warranty', 'e-1', 'pos/1', 'unit.sold', :t, :t, 'abc')"), {"t": "2026-11-01 10:00:00"})
        conn.execute(text("INSERT INTO outbox (service, event_type, event_source, event_id, envelope, created_at) "
                          "VALUES ('warranty', 'return.decided', 's', 'o-1', '{}', :t)"), {"t": "2026-11-01 10:00:00"})
    migrate(engine, definition.migrations, to="plumbing_0003")
    assert "plumbing_0003" in state(engine, definition.migrations).current
    with engine.begin() as conn:
        assert conn.execute(text("SELECT event_id, digest FROM inbox")).all() == [("e-1", "abc")]
        assert conn.execute(text("SELECT event_id FROM outbox")).scalars().all() == ["o-1"]
        assert conn.execute(text("SELECT count(*) FROM erased_values")).scalar_one() == 0
        conn.execute(text("INSERT INTO erased_values (service, pseudonym, kind, erasure_id, erased_at) "
                          "VALUES ('warranty', 'anon-0123456789abcdef', 'customer', 'erasure-1', :t)"),
                     {"t": "2026-11-02 10:00:00"})
    migrate(engine, definition.migrations, to="plumbing_0002")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT event_id FROM inbox")).scalars().all() == ["e-1"]
    assert "erased_values" not in inspect(engine).get_table_names()


def test_the_voids_revisions_add_their_table_and_indexes_and_keep_every_row(engine):
    """plumbing_0004 (the voids table) and recalls_0002 (unit facts) on a store with rows: the rows
    stay, the new tables start empty; undone, each takes only its own table with it. inventory_0004,
    warranty_0003 and theft_0002 only add an index (checked against the models by the schema test)."""
    definition = load("recalls")
    migrate(engine, definition.migrations)
    migrate(engine, definition.migrations, to="plumbing_0003")
    migrate(engine, definition.migrations, to="recalls_0001")
    names = inspect(engine).get_table_names()
    assert "voids" not in names and "recalls_unit_facts" not in names
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO inbox (service, event_id, source, event_type, event_time, processed_at, digest) "
                          "VALUES ('recalls', 'e-1', 'pos/1', 'unit.sold', :t, :t, 'abc')"), {"t": "2026-11-01 10:00:00"})
        conn.execute(text("INSERT INTO recalls_units (manufacturer, serial, sku, stock, location, stock_order, "
                          "stock_at, first_seen, updated_at) VALUES ('acme', 'SN1', 'TV', 'sold', 'store-1', 'o', "
                          ":t, :t, :t)"), {"t": "2026-11-01 10:00:00"})
    migrate(engine, definition.migrations)
    assert set(state(engine, definition.migrations).current) == {"plumbing_0004", "recalls_0003"}
    with engine.begin() as conn:
        assert conn.execute(text("SELECT event_id FROM inbox")).scalars().all() == ["e-1"]
        assert conn.execute(text("SELECT serial FROM recalls_units")).scalars().all() == ["SN1"]
        assert conn.execute(text("SELECT count(*) FROM voids")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM recalls_unit_facts")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM recalls_receipt_ranges")).scalar_one() == 0
    migrate(engine, definition.migrations, to="plumbing_0003")
    migrate(engine, definition.migrations, to="recalls_0001")
    names = inspect(engine).get_table_names()
    assert not {"voids", "recalls_unit_facts", "recalls_receipt_ranges"} & set(names) and "recalls_units" in names
    with engine.connect() as conn:
        assert conn.execute(text("SELECT serial FROM recalls_units")).scalars().all() == ["SN1"]

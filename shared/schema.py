"""A service's database schema: Alembic migrations that keep every row.

Each service owns its database, and its migration history has two branches, both recorded in the
database's ``alembic_version`` table:

- ``plumbing`` (``shared/migrations/``): the inbox and the outbox every service keeps;
- the service's own (``services/<name>/migrations/``): its tables.

A migration is a plain Alembic revision file; its id starts with its branch (``inventory_0002``).
Migrations run when a service starts (``SERIALTRACK_MIGRATE=false`` turns that off: the service
then refuses to start on a database that is behind) and with ``serialtrack migrate``. They run in
one transaction that holds the database's migration lock (PostgreSQL: an advisory lock; SQLite:
the write lock), so processes of one service starting together migrate once. On SQLite, table
changes use Alembic's batch mode (copy, then swap), since SQLite cannot alter most of a table.

A database made by release 0.1.0 (tables, no ``alembic_version``) is recognised and stamped at the
baselines (``plumbing_0001``, ``<service>_0001``: the 0.1.0 schema) before upgrading.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, Table, inspect, text

from .store import PLUMBING_TABLES, for_writing

log = logging.getLogger("serialtrack.schema")
# Alembic says "Context impl SQLiteImpl" and such at INFO on every start; our own line says what changed.
logging.getLogger("alembic").setLevel(logging.WARNING)

PLUMBING_MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"


class SchemaError(RuntimeError):
    """The database cannot be brought to (or is not at) the schema this build needs."""


class OutdatedSchema(SchemaError):
    """The database is behind this build and migrations were not allowed to run."""


@dataclass(frozen=True)
class Migrations:
    """One service's migration history: the plumbing branch and its own."""

    service: str
    directory: Path  # services/<name>/migrations
    tables: Sequence[Table]  # what the code expects once migrated

    @property
    def script(self) -> ScriptDirectory:
        return _script_directory(str(self.directory))

    @property
    def baselines(self) -> tuple[str, str]:
        return ("plumbing_0001", f"{self.service}_0001")


_SCRIPTS: dict[str, ScriptDirectory] = {}


def _script_directory(directory: str) -> ScriptDirectory:
    # Parsed once per process: tests build many apps, and every revision file is imported to read it.
    script = _SCRIPTS.get(directory)
    if script is None:
        script = _SCRIPTS[directory] = ScriptDirectory(
            str(PLUMBING_MIGRATIONS), version_locations=[str(PLUMBING_MIGRATIONS), directory])
    return script


@dataclass(frozen=True)
class SchemaState:
    service: str
    current: tuple[str, ...]  # revisions recorded in the database (empty: new, or made by 0.1.0)
    heads: tuple[str, ...]  # the revisions of this build
    legacy: bool  # made by release 0.1.0: tables without a version table

    @property
    def up_to_date(self) -> bool:
        return set(self.current) == set(self.heads)

    def as_dict(self) -> dict:
        return {"service": self.service, "current": list(self.current), "heads": list(self.heads),
                "legacy_0_1_0": self.legacy, "up_to_date": self.up_to_date}


def state(engine: Engine, migrations: Migrations) -> SchemaState:
    with engine.connect() as conn:
        return _state(conn, migrations)


def _state(conn: Connection, migrations: Migrations) -> SchemaState:
    tables = set(inspect(conn).get_table_names())
    current: tuple[str, ...] = ()
    if VERSION_TABLE in tables:
        current = tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
    legacy = not current and "inbox" in tables
    return SchemaState(migrations.service, current, tuple(sorted(migrations.script.get_heads())), legacy)


def migrate(engine: Engine, migrations: Migrations, to: str | None = None) -> tuple[SchemaState, SchemaState]:
    """Bring the database to ``to`` (default: this build's heads; an older revision downgrades).
    Returns the state before and after."""
    script = migrations.script
    if to == "base":
        raise SchemaError("refused: migrating to base would drop every table (restore a backup instead)")
    with for_writing(engine).connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            # Held until this transaction ends: a second process waits, then finds the work done.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                         {"key": zlib.crc32(f"serialtrack:{migrations.service}".encode())})
        before = _state(conn, migrations)
        _refuse_foreign(before, script)
        context = MigrationContext.configure(conn, opts={
            "version_table": VERSION_TABLE,
            "render_as_batch": conn.dialect.name == "sqlite",
            "fn": _steps(script, before, to or "heads"),
        })
        if before.legacy:
            _check_legacy(conn, migrations)
            for baseline in migrations.baselines:
                context.stamp(script, baseline)
            log.info("%s: database made by 0.1.0, stamped at its baseline", migrations.service)
        with Operations.context(context):
            context.run_migrations()
        after = _state(conn, migrations)
    if after.current != before.current:
        log.info("%s: schema %s -> %s", migrations.service, ", ".join(before.current) or "(none)",
                 ", ".join(after.current))
    return before, after


def _steps(script: ScriptDirectory, before: SchemaState, target: str):
    """Alembic's step function: the revisions to run from the current ones towards ``target``."""
    if target != "heads" and _is_below(script, target, before):
        return lambda rev, _context: script._downgrade_revs(target, rev)
    return lambda rev, _context: script._upgrade_revs(target, rev)


def _is_below(script: ScriptDirectory, target: str, before: SchemaState) -> bool:
    """Is ``target`` already applied (an ancestor of, or one of, the current revisions)?"""
    try:
        wanted = script.get_revision(target)
    except CommandError as exc:
        raise SchemaError(f"unknown revision {target!r}: {exc}") from None
    if wanted is None:
        return True
    applied = {rev.revision for head in before.current for rev in script.iterate_revisions(head, "base")}
    return wanted.revision in applied and wanted.revision not in before.current


def _refuse_foreign(current: SchemaState, script: ScriptDirectory) -> None:
    known = {rev.revision for rev in script.walk_revisions()}
    foreign = [rev for rev in current.current if rev not in known]
    if foreign:
        raise SchemaError(
            f"{current.service}: the database is at revision(s) {', '.join(foreign)}, which this build does not "
            "know: it belongs to another service (each service needs its own database) or was migrated by a "
            "newer serialtrack")


def _check_legacy(conn: Connection, migrations: Migrations) -> None:
    """A 0.1.0 database is stamped at the baselines only if it has the baselines' tables."""
    present = set(inspect(conn).get_table_names())
    expected = {"inbox", "outbox", *_baseline_tables(migrations)}
    missing = sorted(expected - present)
    if missing:
        raise SchemaError(
            f"{migrations.service}: the database has serialtrack tables but no schema version, and lacks "
            f"{', '.join(missing)}: it was not made by release 0.1.0 for this service (each service needs its "
            "own database)")


def _baseline_tables(migrations: Migrations) -> set[str]:
    module = migrations.script.get_revision(migrations.baselines[1]).module
    return set(module.TABLES)


def check_columns(engine: Engine, tables: Sequence[Table]) -> None:
    """After migrating: every column the code uses exists (a missing migration fails at start, naming
    the columns, instead of on the first event)."""
    inspector = inspect(engine)
    missing = []
    for table in [*PLUMBING_TABLES, *tables]:
        if not inspector.has_table(table.name):
            missing.append(table.name)
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing.extend(f"{table.name}.{column.name}" for column in table.c if column.name not in present)
    if missing:
        raise SchemaError(f"the migrated database lacks {', '.join(missing)}: a migration is missing from this build")


def prepare(engine: Engine, migrations: Migrations, run_migrations: bool = True) -> None:
    """At service start: migrate (or refuse a database that is behind), then check the columns."""
    if run_migrations:
        migrate(engine, migrations)
    else:
        current = state(engine, migrations)
        if not current.up_to_date:
            raise OutdatedSchema(
                f"{migrations.service}: the database is at {', '.join(current.current) or 'release 0.1.0 or empty'}, "
                f"this build needs {', '.join(current.heads)}; run `serialtrack migrate {migrations.service}` "
                "(or unset SERIALTRACK_MIGRATE=false to migrate at start)")
    check_columns(engine, migrations.tables)

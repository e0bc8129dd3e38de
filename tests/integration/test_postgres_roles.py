"""deploy/postgres-init.sql run by psql against a real PostgreSQL, as the postgres image runs it:
each service's role is no superuser, migrates and uses its own database, and cannot even connect
to another service's. Names get a per-test prefix (roles are cluster-wide on a shared server)."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from services.registry import load
from shared.schema import prepare
from shared.settings import SERVICES
from shared.store import make_engine

pytestmark = pytest.mark.postgres
INIT = Path(__file__).parents[2] / "deploy" / "postgres-init.sql"


def _url(admin_url: str, user: str, password: str, database: str) -> str:
    rest = admin_url.split("://", 1)[1].split("@", 1)[-1]
    host = rest.split("/", 1)[0]
    return f"postgresql://{user}:{password}@{host}/{database}"


def test_each_service_owns_its_database_and_nothing_else(postgres_admin):
    if postgres_admin is None:
        pytest.skip("no PostgreSQL: set TEST_POSTGRES_URL")
    if shutil.which("psql") is None:
        pytest.skip("no psql")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    script = INIT.read_text()
    for name in (*SERVICES, "serialtrack"):
        script = re.sub(rf"(?<![\w']){name}(?![\w'])", f"{prefix}_{name}", script)
    admin = create_engine("postgresql+psycopg://" + postgres_admin.admin_url.split("://", 1)[1],
                          isolation_level="AUTOCOMMIT")
    passwords = {s: f"pw-{uuid.uuid4().hex[:8]}" for s in SERVICES}
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{prefix}_serialtrack"'))  # POSTGRES_DB, made by the image
    try:
        result = subprocess.run(
            ["psql", "-v", "ON_ERROR_STOP=1", "-X", "-q", "-d", postgres_admin.admin_url, "-f", "-"],
            input=script, capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": "/usr/bin:/bin", **{f"{s.upper()}_DB_PASSWORD": p for s, p in passwords.items()}})
        assert result.returncode == 0, result.stderr
        with admin.connect() as conn:
            roles = dict(conn.execute(text("SELECT rolname, rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles "
                                           "WHERE rolname LIKE :p"), {"p": f"{prefix}_%"}).all())
            owners = dict(conn.execute(text("SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
                                            "WHERE datname LIKE :p"), {"p": f"{prefix}_%"}).all())
        assert roles == {f"{prefix}_{s}": False for s in SERVICES}
        assert all(owners[f"{prefix}_{s}"] == f"{prefix}_{s}" for s in SERVICES)

        service, other = "inventory", "warranty"
        role = f"{prefix}_{service}"
        own = make_engine(_url(postgres_admin.admin_url, role, passwords[service], role))
        try:
            prepare(own, load(service).migrations)  # the service migrates its own store as itself
            with own.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM inventory_units")).scalar() == 0
                assert conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar() \
                    is False
        finally:
            own.dispose()
        foreign = create_engine(_url(postgres_admin.admin_url, role, passwords[service], f"{prefix}_{other}")
                                .replace("postgresql://", "postgresql+psycopg://"))
        with pytest.raises(OperationalError, match="permission denied|not permitted"), foreign.connect():
            pass
        foreign.dispose()
    finally:
        with admin.connect() as conn:
            for name in (*SERVICES, "serialtrack"):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{prefix}_{name}" WITH (FORCE)'))
            for name in SERVICES:
                conn.execute(text(f'DROP ROLE IF EXISTS "{prefix}_{name}"'))
        admin.dispose()

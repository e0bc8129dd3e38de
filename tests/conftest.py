"""Fixtures: a real Redis, real databases (SQLite and PostgreSQL), settings isolated per test."""

from __future__ import annotations

import uuid

import pytest

from serialtrack.redis_server import free_port
from shared.settings import SERVICES, Settings
from tests.support.infra import start_postgres, start_redis

# skip_policy: PostgreSQL variants may not skip while TEST_POSTGRES_URL is set; pytester: its own test.
pytest_plugins = ["tests.support.skip_policy", "pytester"]


@pytest.fixture(scope="session")
def redis_handle(tmp_path_factory):
    handle = start_redis(tmp_path_factory.mktemp("redis"))
    yield handle
    handle.close()


@pytest.fixture(scope="session")
def postgres_admin():
    admin = start_postgres()
    yield admin
    if admin:
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path, postgres_admin):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    if postgres_admin is None:
        pytest.skip("no PostgreSQL: set TEST_POSTGRES_URL (admin URL) or make a Docker engine reachable")
    url = postgres_admin.create_database()
    yield url
    postgres_admin.drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_urls(request, postgres_admin):
    """Each service's own database, as in production: {} means SQLite files in the data dir."""
    if request.param == "sqlite":
        yield {}
        return
    if postgres_admin is None:
        pytest.skip("no PostgreSQL: set TEST_POSTGRES_URL (admin URL) or make a Docker engine reachable")
    urls = {service: postgres_admin.create_database() for service in SERVICES}
    yield urls
    for url in urls.values():
        postgres_admin.drop_database(url)


def make_settings(redis_url: str, database_urls: dict[str, str], data_dir, **overrides) -> Settings:
    """Settings of one test: its own streams and ports; a service not in ``database_urls`` keeps its
    SQLite file in ``data_dir`` (each service owns its database, as in production)."""
    values = dict(
        redis_url=redis_url,
        stream_prefix=f"t-{uuid.uuid4().hex[:10]}",  # streams of one test never meet another's
        data_dir=data_dir,
        claim_idle_ms=500,
        max_deliveries=3,
        poll_ms=20,
        batch_size=200,
        **{f"{service}_database_url": url for service, url in database_urls.items()},
        **{f"{service}_port": free_port() for service in SERVICES},
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(redis_handle, database_urls, tmp_path) -> Settings:
    """Settings for one test, on both SQLite and PostgreSQL."""
    return make_settings(redis_handle.url, database_urls, tmp_path)


@pytest.fixture
def sqlite_settings(redis_handle, tmp_path) -> Settings:
    """Settings for tests whose subject is delivery, not the store: SQLite only."""
    return make_settings(redis_handle.url, {}, tmp_path)

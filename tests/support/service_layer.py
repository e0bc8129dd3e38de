"""The service-layer tier: a service's batch handler run directly on its own SQLite store.

No Redis, no consumer, no polling: ``apply`` is what the consumer's writer does with one batch
(``EventProcessor.process``: inbox claim, the service's change, its outbox rows, one transaction),
and the results are read through the store or the service's read API mounted on a bare FastAPI app.
Reconcile logic (late events, refolds, withdrawn anomalies, superseded decisions) is tested here
in milliseconds; delivery (acks, pending entries, crashes) stays with the Redis-backed tests in
tests/integration.

Stores are SQLite files, not ``:memory:``: make_engine's in-memory databases are one per thread
(SQLAlchemy's SingletonThreadPool), and TestClient serves the read API from another thread, which
would see an empty database. Each service's schema is migrated once per session into a template
file that every test copies (a copy costs well under a millisecond, a migration ~30 ms).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.registry import load
from shared.auth import Auth
from shared.consumer import Applied, EventProcessor
from shared.envelope import Event, decode_envelope_bytes
from shared.erasure import applier
from shared.http import install as install_http_edge
from shared.pseudonyms import Pseudonyms
from shared.schema import migrate
from shared.service import ServiceDefinition
from shared.store import OutboxRow, for_reading, for_writing, forget_outbox, make_engine, table_of
from shared.tokens import ensure_admin_token

_TEMPLATES: dict[str, Path] = {}


def template(service: str, directory: Path) -> Path:
    """A database file of ``service`` migrated to this build's heads (made once per session)."""
    path = _TEMPLATES.get(service)
    if path is None or not path.exists():
        path = directory / f"{service}-template.db"
        engine = make_engine(f"sqlite:///{path}")
        try:
            migrate(engine, load(service).migrations)
            with engine.connect() as conn:  # one file, no -wal beside it: a plain copy is complete
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            engine.dispose()
        _TEMPLATES[service] = path
    return path


class ServiceStore:
    """One service's store, fed batch by batch as its consumer would feed it."""

    def __init__(self, definition: ServiceDefinition, path: Path, url: str | None = None):
        """``path``: the SQLite file (its folder keeps the pseudonym key); ``url``: another database,
        migrated already, instead of the file."""
        self.definition = definition
        self.name = definition.name
        self.engine = make_engine(url or f"sqlite:///{path}")
        self.directory = path.parent
        # As build_app runs it: the service's handler inside erasure on request (shared/erasure.py).
        self.processor = EventProcessor(self.name, for_writing(self.engine), applier(
            self.name, definition.customer_data, definition.apply, Pseudonyms(self.directory / "tokens")), definition.locks,
            housekeeping=definition.housekeeping)
        self._client: TestClient | None = None

    def apply(self, *events: Event | Iterable[Event]) -> Applied:
        """One batch, as one delivery hands it over (duplicates included)."""
        batch: list[Event] = []
        for item in events:
            batch.extend([item] if isinstance(item, Event) else item)
        return self.processor.process(batch)

    def apply_each(self, events: Iterable[Event]) -> list[Applied]:
        """Each event in its own batch, in the order given (the order of arrival)."""
        return [self.processor.process([event]) for event in events]

    def session(self) -> Session:
        return Session(self.engine)

    def outbox(self) -> list[Event]:
        """The outgoing events committed and not yet published, oldest first."""
        table = table_of(OutboxRow)
        with self.session() as session:
            rows = session.execute(select(table.c.envelope).where(table.c.service == self.name)
                                   .order_by(table.c.seq)).scalars().all()
        return [decode_envelope_bytes(row.encode()) for row in rows]

    def publish_outbox(self) -> list[Event]:
        """What the relay does: take the rows, and forget them once "published" (returned)."""
        table = table_of(OutboxRow)
        with self.session() as session, session.begin():
            rows = session.execute(select(table.c.seq, table.c.envelope).where(table.c.service == self.name)
                                   .order_by(table.c.seq)).all()
            forget_outbox(session, [seq for seq, _ in rows])
        return [decode_envelope_bytes(envelope.encode()) for _, envelope in rows]

    @property
    def api(self) -> TestClient:
        """The service's read API alone, on this store (no consumers, no /healthz)."""
        if self._client is None:
            app = FastAPI()
            app.state.auth = Auth(self.directory / "tokens")
            install_http_edge(app)  # the body cap and the 422 shape, as build_app gives every service
            app.include_router(self.definition.read_api(for_reading(self.engine)))
            token = ensure_admin_token(self.directory, self.directory / "tokens")  # an admin sees everything
            self._client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
            self._client.__enter__()
        return self._client

    def get(self, path: str, expect: int = 200, **params):
        response = self.api.get(path, params=params or None)
        assert response.status_code == expect, f"GET {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def close(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
        self.engine.dispose()


class Services:
    """Several services' stores, with the outbox relay played by hand: ``deliver`` hands events to every
    service that reads their type and then passes what they published on, until nothing is left."""

    def __init__(self, stores: Sequence[ServiceStore]):
        self.stores = {store.name: store for store in stores}

    def __getitem__(self, name: str) -> ServiceStore:
        return self.stores[name]

    def deliver(self, *events: Event | Iterable[Event], rounds: int = 20) -> list[Event]:
        """Apply ``events`` as one batch per service, then relay derived events until quiet.
        Returns every event the services published meanwhile."""
        batch: list[Event] = []
        for item in events:
            batch.extend([item] if isinstance(item, Event) else item)
        published: list[Event] = []
        for _ in range(rounds):
            for store in self.stores.values():
                wanted = [e for e in batch if e.type in store.definition.event_types]
                if wanted:
                    store.apply(wanted)
            batch = [e for store in self.stores.values() for e in store.publish_outbox()]
            if not batch:
                return published
            published.extend(batch)
        raise AssertionError(f"still publishing after {rounds} rounds: {[e.type for e in batch][:10]}")


# Fixtures (imported by tests/service/conftest.py) ---------------------------------------------


@pytest.fixture(scope="session")
def store_templates(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store-templates")


@pytest.fixture
def make_store(tmp_path, store_templates):
    """``make_store("warranty")``: that service's store, migrated, empty, on its own file."""
    made: list[ServiceStore] = []

    def make(service: str) -> ServiceStore:
        path = tmp_path / f"{service}.db"
        shutil.copy(template(service, store_templates), path)
        made.append(ServiceStore(load(service), path))
        return made[-1]

    yield make
    for store in made:
        store.close()

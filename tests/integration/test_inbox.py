"""The inbox: one row per (service, source, id), claimed in the transaction that applies the event."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import shared.store as store
from shared.contracts import UnitSold
from shared.envelope import make_event
from shared.store import InboxRow, claim_inbox, create_tables, for_writing, make_engine


def _sale(serial: str, source: str = "pos/store-1/till-1", id: str | None = None):
    return make_event(UnitSold(manufacturer="acme", serial=serial, sku="TV-55", location="store-1",
                               terminal_id="till-1", receipt_id=f"R-{serial}"), source=source, id=id)


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    create_tables(engine, [])
    yield for_writing(engine)
    engine.dispose()


def _claim(engine, service: str, events) -> list[tuple[str, str]]:
    with Session(engine) as session, session.begin():
        return [event.key for event in claim_inbox(session, service, events)]


def _inbox_rows(engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(InboxRow))


def test_claim_returns_only_events_not_applied_before(engine):
    first, second, third = _sale("SN1"), _sale("SN2"), _sale("SN3")
    same_id_other_source = _sale("SN4", source="pos/store-2/till-1", id=first.id)

    assert _claim(engine, "inventory", [first, second, first]) == [first.key, second.key]  # a repeat in the batch
    assert _claim(engine, "inventory", [second, third, first, same_id_other_source]) == [
        third.key, same_id_other_source.key]
    assert _claim(engine, "warranty", [first]) == [first.key]  # each service has its own inbox
    assert _inbox_rows(engine) == 5


def test_an_sqlite_without_insert_returning_is_refused_with_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(store.sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(store.sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(RuntimeError, match=r"needs SQLite 3\.35 or newer; this Python uses 3\.31\.1"):
        make_engine(f"sqlite:///{tmp_path}/old.db")


def test_a_rolled_back_claim_leaves_the_event_to_apply(engine):
    sale = _sale("SN1")
    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        assert claim_inbox(session, "inventory", [sale]) == [sale]
        raise RuntimeError("the handler failed: nothing of the batch commits")
    assert _claim(engine, "inventory", [sale]) == [sale.key]
    assert _inbox_rows(engine) == 1

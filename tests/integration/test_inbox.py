"""The inbox: one row per (service, source, id), claimed in the transaction that applies the event."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from services.inventory.app import definition as inventory
from shared import store
from shared.contracts import UnitSold
from shared.envelope import make_event
from shared.schema import migrate
from shared.store import InboxRow, claim_inbox, for_writing, make_engine


def _sale(serial: str, source: str = "pos/store-1/till-1", id: str | None = None):
    return make_event(UnitSold(manufacturer="acme", serial=serial, sku="TV-55", location="store-1",
                               terminal_id="till-1", receipt_id=f"R-{serial}"), source=source, id=id)


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    migrate(engine, inventory.migrations)
    yield for_writing(engine)
    engine.dispose()


def _claim(engine, service: str, events) -> list[tuple[str, str]]:
    with Session(engine) as session, session.begin():
        return [event.key for event in claim_inbox(session, service, events).fresh]


def _inbox_rows(engine) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(InboxRow)).scalar_one()


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
        assert claim_inbox(session, "inventory", [sale]).fresh == [sale]
        raise RuntimeError("the handler failed: nothing of the batch commits")
    assert _claim(engine, "inventory", [sale]) == [sale.key]
    assert _inbox_rows(engine) == 1


def test_the_same_key_with_other_content_is_a_conflict_and_the_same_content_is_not(engine):
    sale = _sale("SN1", id="R-1")
    replay = make_event(sale.data, source=sale.source, id=sale.id, time=sale.time)  # same content, made anew
    forged = _sale("SN9", id="R-1")  # a guessed (source, id) that says something else
    with Session(engine) as session, session.begin():
        assert claim_inbox(session, "inventory", [sale]).fresh == [sale]
    with Session(engine) as session, session.begin():
        claim = claim_inbox(session, "inventory", [replay, forged])
    assert claim.fresh == []
    assert [conflict.event for conflict in claim.conflicts] == [forged]
    assert "already applied with other content" in claim.conflicts[0].describe()


def test_two_contents_under_one_key_in_one_batch_apply_the_first_and_refuse_the_second(engine):
    first, second = _sale("SN1", id="R-7"), _sale("SN2", id="R-7")
    with Session(engine) as session, session.begin():
        claim = claim_inbox(session, "inventory", [first, second, first])
    assert claim.fresh == [first]
    assert [conflict.event for conflict in claim.conflicts] == [second]


def test_rows_from_before_digests_never_conflict(engine):
    sale = _sale("SN1", id="R-1")
    with Session(engine) as session, session.begin():
        claim_inbox(session, "inventory", [sale])
        session.execute(text("UPDATE inbox SET digest = NULL"))  # as 0.1.0 left them
    with Session(engine) as session, session.begin():
        claim = claim_inbox(session, "inventory", [_sale("SN9", id="R-1")])
    assert claim.fresh == [] and claim.conflicts == []

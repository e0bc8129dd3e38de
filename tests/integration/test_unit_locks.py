"""shared/unit_locks.py on a real PostgreSQL: a batch of a unit waits for another process's batch of
that unit, and sees its commit; a batch of another unit does not wait; a range event waits for
every per-unit batch of its manufacturer. Two EventProcessors with their own connections play the
two processes; the first one is held inside its transaction until the test lets it go."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from services.inventory.app import definition as inventory
from shared import unit_locks
from shared.consumer import EventProcessor
from shared.schema import migrate
from shared.store import for_writing, make_engine
from tests.support import factories as f
from tests.support.running import wait_for

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(postgres_admin):
    if postgres_admin is None:
        pytest.skip("needs PostgreSQL (TEST_POSTGRES_URL)")
    url = postgres_admin.create_database()
    engine = make_engine(url)
    migrate(engine, inventory.migrations)
    yield engine
    engine.dispose()
    postgres_admin.drop_database(url)


class HeldBatch:
    """A batch applied in a thread that stops inside its transaction (locks taken, writes done)
    until ``release``."""

    def __init__(self, engine, events):
        self.inside, self.go = threading.Event(), threading.Event()

        def apply_and_hold(session, batch):
            inventory.apply(session, batch)
            self.inside.set()
            assert self.go.wait(60)

        self.thread = threading.Thread(target=EventProcessor("inventory", for_writing(engine), apply_and_hold).process,
                                       args=(events,))
        self.thread.start()
        assert self.inside.wait(60)

    def release(self):
        self.go.set()
        self.thread.join(60)


def waiting_on_advisory_locks(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock' AND wait_event = 'advisory'")).scalar_one()


def apply_in_thread(engine, events) -> threading.Thread:
    thread = threading.Thread(target=EventProcessor("inventory", for_writing(engine), inventory.apply).process,
                              args=(events,))
    thread.start()
    return thread


async def test_a_batch_of_a_unit_waits_for_another_processs_batch_of_it_and_folds_onto_it(engine):
    sn = f.serial()
    held = HeldBatch(engine, [f.received("acme", sn, minutes=0)])
    second = apply_in_thread(engine, [f.sold("acme", sn, minutes=5)])
    try:
        await wait_for(lambda: waiting_on_advisory_locks(engine) == 1, message="the sale waits for the receipt")
    finally:
        held.release()
    second.join(60)
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM inventory_units WHERE serial = :s"), {"s": sn}).scalar_one()
        anomalies = conn.execute(text("SELECT count(*) FROM inventory_anomalies WHERE serial = :s"),
                                 {"s": sn}).scalar_one()
    assert status == "sold" and anomalies == 0  # the sale saw the receipt: no "sold, never received"


async def test_batches_of_other_units_do_not_wait(engine):
    held = HeldBatch(engine, [f.received("acme", f.serial(), minutes=0)])
    try:
        other = apply_in_thread(engine, [f.received("acme", f.serial(), minutes=0)])
        other.join(60)
        assert not other.is_alive(), "a batch of another unit waited"
        assert waiting_on_advisory_locks(engine) == 0
    finally:
        held.release()


async def test_a_range_event_waits_for_per_unit_batches_of_its_manufacturer(engine):
    held = HeldBatch(engine, [f.received("acme", f.serial("R"), minutes=0)])
    report = f.received("acme", selection={"serial_range": {"prefix": "Q", "first": 1, "last": 5, "width": 3}},
                        minutes=1)
    other_maker = apply_in_thread(engine, [f.received("globex", selection={
        "serial_range": {"prefix": "Q", "first": 1, "last": 5, "width": 3}}, minutes=1)])
    ranged = apply_in_thread(engine, [report])
    try:
        other_maker.join(60)
        assert not other_maker.is_alive(), "a range event of another manufacturer waited"
        await wait_for(lambda: waiting_on_advisory_locks(engine) == 1, message="the range waits for the unit")
    finally:
        held.release()
    ranged.join(60)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM inventory_units WHERE manufacturer = 'acme' "
                                 "AND serial LIKE 'Q%'")).scalar_one() == 5


def test_the_plan_takes_levels_in_order_and_a_manufacturer_whole_for_a_range():
    locks = unit_locks.units_of([
        f.sold("acme", "SN2", minutes=0), f.sold("acme", "SN1", minutes=0), f.sold("globex", "SN1", minutes=0),
        f.received("globex", selection={"serial_range": {"prefix": "Q", "first": 1, "last": 9, "width": 3}},
                   minutes=0),
    ])
    plan = locks.plan()
    assert plan[0][1] is True  # the store, shared
    makers = plan[1:3]
    assert sorted(shared for _, shared in makers) == [False, True]  # globex whole, acme shared
    units = plan[3:]
    assert len(units) == 2 and all(not shared for _, shared in units)  # acme's two units; globex's none
    assert [lock_id for lock_id, _ in units] == sorted(lock_id for lock_id, _ in units)


def test_a_batch_naming_too_many_units_takes_their_manufacturer_whole(monkeypatch):
    monkeypatch.setattr(unit_locks, "MAX_KEYS", 3)
    plan = unit_locks.units_of([f.sold("acme", f"SN{n}", minutes=0) for n in range(4)]).plan()
    assert len(plan) == 2 and plan[1][1] is False  # the store shared, acme exclusive, no unit locks

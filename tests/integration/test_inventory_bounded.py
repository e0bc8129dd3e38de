"""Issue 12, faults 1 and 3, on inventory over a real Redis and real stores (SQLite and PostgreSQL):
a stolen report over a range is one row whatever its size, and reaches a unit when an event names
it (received after the report, or known before it); receipts are matched against many open recalls
through the index. Assertions are on rows stored and states, never on time (figures: bench/)."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.inventory import store as inventory_store
from services.inventory.app import definition as inventory
from shared.contracts import TheftRecovered, TheftReported
from shared.envelope import make_event
from shared.store import make_engine, table_of
from tests.support import factories as f
from tests.support.running import http, inbox_count, publish_events, running, wait_for


def rows(settings, model) -> int:
    engine = make_engine(settings.database_url("inventory"))
    try:
        with Session(engine) as session:
            return session.execute(select(func.count()).select_from(table_of(model))).scalar_one()
    finally:
        engine.dispose()


async def unit(client, serial, maker="acme"):
    response = await client.get(f"/units/{maker}/{serial}")
    return response.json() if response.status_code == 200 else None


def open_kinds(view) -> list[str]:
    return sorted(a["kind"] for a in view["anomalies"] if a["status"] == "open")


def range_report(event_type, prefix, *, minutes, first=1, last=1_000_000, case_number="C-RANGE"):
    model = TheftReported if event_type == "theft.reported" else TheftRecovered
    return make_event(model(manufacturer="acme", agency="metro-pd", case_number=case_number,
                            serial_range={"prefix": prefix, "first": first, "last": last, "width": 7}),
                      source="test/police", time=f.at(minutes))


async def test_a_million_serial_range_report_is_one_row_and_reaches_the_known_units_and_later_ones_on_arrival(settings):
    prefix = f"RG{secrets.token_hex(3).upper()}-"
    known, known_early, later = f"{prefix}0000005", f"{prefix}0000007", f"{prefix}0500000"
    outside = f"{prefix}1000001"  # just past the range
    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, [f.received("acme", known, minutes=0), f.received("acme", known_early, minutes=0),
                                        f.received("acme", outside, minutes=0)])
        await wait_for(lambda: inbox_count(settings, "inventory") == 3, message="the receipts applied")
        await publish_events(settings, [range_report("theft.reported", prefix, minutes=10)])
        await wait_for(lambda: inbox_count(settings, "inventory") == 4, message="the report applied")
        # One row for 1,000,000 serials: nothing expanded (0.1.0 wrote 1,000,000 unit and history rows).
        assert rows(settings, inventory_store.TheftSelectionRow) == 1
        # The two known units of the range have it in their history, found by index, not by serial.
        assert rows(settings, inventory_store.UnitRow) == 3 and rows(settings, inventory_store.HistoryRow) == 3 + 2
        view = await unit(client, known)
        assert view["stolen"] and view["theft_cases"] == ["metro-pd:C-RANGE"]
        assert [h["type"] for h in view["history"]] == ["unit.received", "theft.reported"]
        assert not (await unit(client, outside))["stolen"]

        await publish_events(settings, [
            f.sold("acme", known, minutes=20),  # a known unit sold after the report
            f.sold("acme", known_early, minutes=5),  # sold before the report: no anomaly
            f.received("acme", later, minutes=30),  # first seen after the report: flagged on arrival
            f.sold("acme", outside, minutes=20),
        ])
        await wait_for(lambda: inbox_count(settings, "inventory") == 8, message="the unit events applied")
        assert open_kinds(await unit(client, known)) == ["sold_while_stolen"]
        assert open_kinds(await unit(client, known_early)) == []
        assert open_kinds(await unit(client, outside)) == []
        arrived = await unit(client, later)
        assert arrived["stolen"] and [h["type"] for h in arrived["history"]] == ["theft.reported", "unit.received"]
        assert rows(settings, inventory_store.HistoryRow) == 3 + 2 + 4 + 1  # and the unit received after it

        # A recovery of the range clears the known units at once; a sale after it is no anomaly.
        await publish_events(settings, [range_report("theft.recovered", prefix, minutes=40),
                                        f.sold("acme", later, minutes=50)])
        await wait_for(lambda: inbox_count(settings, "inventory") == 10, message="the recovery applied")
        assert rows(settings, inventory_store.TheftSelectionRow) == 2
        sold = await unit(client, later)
        assert not sold["stolen"] and open_kinds(sold) == []
        assert [h["type"] for h in sold["history"]] == ["theft.reported", "unit.received", "theft.recovered",
                                                        "unit.sold"]
        assert not (await unit(client, known))["stolen"]
        assert rows(settings, inventory_store.HistoryRow) == 3 + 2 + 4 + 1 + 3 + 1  # the recovery, for all 3 known
        assert rows(settings, inventory_store.UnitRow) == 4  # never one per serial of the range


async def test_a_list_report_is_one_row_and_a_redelivered_report_stays_one(settings):
    serials = [f.serial("LS") for _ in range(3)]
    report = make_event(TheftReported(manufacturer="acme", agency="metro-pd", case_number="C-LIST", serials=serials),
                        source="test/police", time=f.at(10))
    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, [report, report, f.received("acme", serials[1], minutes=20)])
        await wait_for(lambda: inbox_count(settings, "inventory") == 2, message="applied")
        assert rows(settings, inventory_store.TheftSelectionRow) == 1
        assert (await unit(client, serials[1]))["stolen"]
        assert await unit(client, serials[0]) is None  # known only from the report: no inventory row


async def test_receipts_under_many_open_recalls_are_matched_through_the_index(settings):
    """Twenty open recalls of many single-serial ranges each for one manufacturer (issue 12, fault 3;
    100 ranges here, 1,000 in bench/inventory_bounded.py: each broadcast queries the store once per
    range): the units they cover are quarantined on arrival, the others not, the matcher built once."""
    maker, prefix = f"zeta-{secrets.token_hex(3)}", "Z"
    recalls = [f.recall_issued(maker, minutes=0, recall_id=f"RC-{maker}-{n}",
                               serial_ranges=[{"prefix": prefix, "first": n * 100_000 + k * 10,
                                               "last": n * 100_000 + k * 10, "width": 7} for k in range(100)])
               for n in range(20)]
    covered = [f"{prefix}{n * 100_000 + k * 10:07d}" for n, k in ((0, 0), (7, 50), (19, 99))]
    uncovered = [f"{prefix}{n * 100_000 + k * 10 + 1:07d}" for n, k in ((0, 0), (7, 50))] + [f"{prefix}9999999"]
    async with running(inventory, settings) as app, http(app) as client:
        await publish_events(settings, recalls)
        await wait_for(lambda: inbox_count(settings, "inventory") == 20, timeout=60, message="recalls applied")
        await publish_events(settings, [f.received(maker, s, minutes=10) for s in covered + uncovered])
        await wait_for(lambda: inbox_count(settings, "inventory") == 26, message="receipts applied")
        for serial, n in zip(covered, (0, 7, 19), strict=True):
            view = await unit(client, serial, maker)
            assert view["status"] == "quarantined" and view["recalls"] == [f"RC-{maker}-{n}"]
        for serial in uncovered:
            view = await unit(client, serial, maker)
            assert view["status"] == "in_stock" and view["recalls"] == []
    cached = [key for key in inventory_store._recall_cache if key[1] == maker]
    assert len(cached) == 1  # one index for the manufacturer's 20 recalls, reused by every batch

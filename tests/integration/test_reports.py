"""The sell-through report (warranty) and stock aging (inventory) over a real Redis and real stores
(SQLite and PostgreSQL): events published out of order and twice, the reports read over HTTP by the
roles that may, refused to the others (403; 404 for another manufacturer's token), bad parameters
422/400, CSV content."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from services.inventory.app import definition as inventory
from services.warranty.app import definition as warranty
from shared.tokens import create_token
from tests.support.reports import AgingStory, SellThroughStory
from tests.support.running import http, publish_events, running, wait_for

OTHER_ROLES = ("customer-service", "store", "investigator", "auditor")


def token(settings, role: str, manufacturer: str | None = None) -> str:
    name = f"t-{role}-{manufacturer or 'all'}"
    return create_token(settings.tokens_dir, role, name=name, manufacturer=manufacturer)[0]


async def test_sell_through_from_events_out_of_order_and_twice_read_by_the_manufacturer_only(settings):
    story = SellThroughStory()
    events = story.events()
    async with running(warranty, settings) as app, http(app) as admin:
        # Newest first, then everything again: every sale before its receipt, registrations before their
        # sales, each event delivered twice.
        await publish_events(settings, list(reversed(events)))
        await publish_events(settings, events)
        path = "/manufacturers/acme/sell-through"

        async def complete():
            body = (await admin.get(path, params=story.params())).json()
            return body if body["totals"] == story.expected_totals and len(body["units"]) == 9 else None
        await wait_for(complete, timeout=40, message="the story applied")

        async with http(app, token(settings, "manufacturer", "acme")) as acme:
            body = (await acme.get(path, params=story.params())).json()
            assert body["units"] == story.expected_units()
            assert body["counts"] == story.expected_counts and body["totals"] == story.expected_totals
            response = await acme.get(path, params=story.params(format="csv"))
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(response.text)))
            assert [(r["kind"], r["serial"], r["sku"], r["location"], r["channel"], r["owner_registered"],
                     r["owner_via"]) for r in rows] == [
                (u["kind"], u["serial"], u["sku"], u["location"], u["channel"], str(u["owner_registered"]).lower(),
                 u["owner_via"] or "") for u in story.expected_units()]
            assert "SECRET" not in response.text
            counts = await acme.get(path, params=story.params(format="csv", view="counts", sku="TV-55"))
            assert counts.text.splitlines() == ["sku,location,sold,returned,net,sold_with_owner",
                                                "TV-55,store-1,3,2,1,2", "TV-55,store-2,2,0,2,1"]
            # Bad parameters: 422 for a malformed one, 400 for a backwards period; nothing else answers.
            assert (await acme.get(path, params={"since": "last week"})).status_code == 422
            assert (await acme.get(path, params={"format": "pdf"})).status_code == 422
            assert (await acme.get(path, params={"since": "2026-11-09", "until": "2026-11-02"})).status_code == 400
            # Its own manufacturer only: zeta's report is "not found", as for anything of another's.
            assert (await acme.get("/manufacturers/zeta/sell-through")).status_code == 404
        async with http(app, token(settings, "manufacturer", "zeta")) as zeta:
            assert (await zeta.get(path)).status_code == 404
            assert (await zeta.get("/manufacturers/zeta/sell-through")).json()["totals"]["sold"] == 1
        for role in OTHER_ROLES:
            async with http(app, token(settings, role)) as other:
                response = await other.get(path)
                assert response.status_code == 403, role
                assert "may not call" in response.json()["detail"]
        async with http(app, token="") as anonymous:
            assert (await anonymous.get(path)).status_code == 401


async def test_stock_aging_from_events_out_of_order_and_twice(settings):
    story = AgingStory(datetime.now(UTC))
    events = story.events()
    async with running(inventory, settings) as app, http(app) as admin:
        await publish_events(settings, list(reversed(events)))
        await publish_events(settings, events[::2])  # half of them again

        async def complete():
            body = (await admin.get("/stock/aging", params={"manufacturer": "acme"})).json()
            return body if body["totals"]["total"] == 8 and body["returns"] == story.expected_returns else None
        body = await wait_for(complete, timeout=40, message="the story applied")
        await wait_for(lambda: _unit_in_stock(admin, story.u6), message="u6 restocked")
        body = (await admin.get("/stock/aging", params={"manufacturer": "acme"})).json()
        assert body["bands"] == story.expected_bands()
        assert body["totals"] == AgingStory.band(d0=2, d31=2, d91=2, d181=1, unknown=1)

        async with http(app, token(settings, "manufacturer", "zeta")) as zeta:
            mine = (await zeta.get("/stock/aging")).json()
            assert [u["serial"] for u in mine["units"]["items"]] == [story.z]  # its own units only
            assert (await zeta.get("/stock/aging", params={"manufacturer": "acme"})).status_code == 404
        for role in ("store", "customer-service", "investigator", "auditor"):
            async with http(app, token(settings, role)) as reader:
                old = await reader.get("/stock/aging", params={"older_than_days": 90, "manufacturer": "acme",
                                                               "format": "csv"})
                assert old.status_code == 200, role
                rows = list(csv.DictReader(io.StringIO(old.text)))
                assert [(r["serial"], r["days_in_stock"]) for r in rows] == [
                    (story.u4, "200"), (story.u6, "120"), (story.u3, "100")], role
        assert (await admin.get("/stock/aging", params={"older_than_days": "-3"})).status_code == 422
        assert (await admin.get("/stock/aging", params={"limit": 5000})).status_code == 422


async def _unit_in_stock(client, serial: str) -> bool:
    response = await client.get(f"/units/acme/{serial}")
    return response.status_code == 200 and response.json()["status"] == "in_stock"


def test_a_long_sell_through_streams_in_time_order_across_parts(database_url, tmp_path):
    """More lines than one part (1,000) of each read, sales and returns interleaved in time: the two
    server-side cursors are merged in order on both stores, while each part's ownership facts are read
    on the same connection."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from shared.auth import Auth
    from shared.consumer import EventProcessor
    from shared.schema import migrate
    from shared.store import for_reading, for_writing, make_engine
    from shared.tokens import ensure_admin_token
    from tests.support import factories as f
    from tests.support.reports import registered

    engine = make_engine(database_url)
    migrate(engine, warranty.migrations)
    processor = EventProcessor("warranty", for_writing(engine), warranty.apply)
    serials = [f"LS{n:05d}" for n in range(1500)]
    events = []
    for n, sn in enumerate(serials):
        events.append(f.sold("acme", sn, minutes=n, sku=f"SKU-{n % 3}", location=f"store-{n % 4}",
                             customer_id="C-1" if n % 5 == 0 else None))
        if n % 2:
            events.append(f.returned("acme", sn, minutes=n + 600.5))  # interleaved with later sales
        if n % 7 == 0:
            events.append(registered("acme", sn, f"C-{n}", minutes=n + 1))
    for start in range(0, len(events), 500):
        processor.process(events[start:start + 500])
    app = FastAPI()
    app.state.auth = Auth(tmp_path / "tokens")
    app.include_router(warranty.read_api(for_reading(engine)))
    token = ensure_admin_token(tmp_path, tmp_path / "tokens")
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
            body = client.get("/manufacturers/acme/sell-through").json()
            rows = list(csv.DictReader(io.StringIO(client.get("/manufacturers/acme/sell-through",
                                                              params={"format": "csv", "sku": "SKU-1"}).text)))
    finally:
        engine.dispose()
    units = body["units"]
    assert len(units) == 1500 + 750 and [u["time"] for u in units] == sorted(u["time"] for u in units)
    assert body["totals"] == {"sold": 1500, "returned": 750, "net": 750,
                              "sold_with_owner": sum(1 for n in range(1500) if n % 5 == 0 or n % 7 == 0)}
    assert all(u["sold_at"] < u["time"] and u["sku"] == f"SKU-{int(u['serial'][2:]) % 3}"
               for u in units if u["kind"] == "returned")
    assert len(rows) == 500 + 250 and {r["sku"] for r in rows} == {"SKU-1"}

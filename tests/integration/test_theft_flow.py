"""Theft watch over a real Redis and a real store (SQLite and PostgreSQL): registry, alerts, fan-out
with inventory, bulk checks, exports. Retroactive matches and order tolerance (rules, not delivery) are
tested without Redis in tests/service/test_theft.py."""

from __future__ import annotations

import csv
import io

import redis.asyncio as aioredis

from services.inventory.app import definition as inventory
from services.theft.app import definition as theft
from shared.contracts import ReturnRequested, TheftRecovered, TheftReported, WarrantyClaimSubmitted
from shared.envelope import decode_entry, make_event
from tests.support import factories as f
from tests.support.running import http, publish_events, running, wait_for
from tests.support.streams import raw_entries


async def stream_events(settings, event_type: str) -> list:
    client = aioredis.from_url(settings.redis_url)
    try:
        entries = await raw_entries(client, settings.streams.for_type(event_type))
        return [decode_entry(fields, entry_id.decode()) for entry_id, fields in entries]
    finally:
        await client.aclose()


async def stolen(client, manufacturer, serial) -> dict:
    response = await client.get(f"/stolen/{manufacturer}/{serial}")
    assert response.status_code == 200, response.text
    return response.json()


async def alerts_of(client, serial, count, status="open"):
    """The unit's alerts once there are ``count`` of them in ``status``."""
    unit = await stolen(client, "acme", serial)
    found = [a for a in unit["alerts"] if a["status"] == status]
    return found if len(found) >= count else None


def return_requested(serial, *, minutes, location="store-7", request_id="RQ-1"):
    return make_event(ReturnRequested(request_id=request_id, manufacturer="acme", serial=serial, receipt_id="R-9",
                                      location=location, terminal_id=f"{location}/desk-1"),
                      source="test/pos", time=f.at(minutes))


def claim_submitted(serial, *, minutes, claim_id="CL-1"):
    return make_event(WarrantyClaimSubmitted(claim_id=claim_id, manufacturer="acme", serial=serial, customer_id="C-1",
                                             issue="no picture", location="service-desk-2"),
                      source="test/warranty", time=f.at(minutes))


async def test_report_fans_out_to_inventory_and_theft_and_a_sale_twice_gives_one_alert(settings):
    sn = f.serial()
    report = f.theft_reported("acme", sn, minutes=5, agency="metro-pd", case_number="C-17")
    sale = f.sold("acme", sn, minutes=30, location="store-12")
    async with running(inventory, settings) as inv_app, running(theft, settings) as app, \
            http(inv_app) as inv, http(app) as client:
        await publish_events(settings, [report])

        async def flagged():
            response = await inv.get(f"/units/acme/{sn}")
            return response.status_code == 200 and response.json()["stolen"]

        await wait_for(flagged, message="inventory flags the unit")
        unit = await wait_for(lambda: _stolen_now(client, sn), message="theft registry has the report")
        assert unit["open_cases"] == ["metro-pd:C-17"]
        assert unit["reports"][0]["case_number"] == "C-17" and unit["reports"][0]["status"] == "open"

        await publish_events(settings, [sale, sale])  # the sale is delivered twice
        [alert] = await wait_for(lambda: alerts_of(client, sn, 1), message="alert on the sale")
        assert alert["kind"] == "sighting"
        assert (alert["agency"], alert["case_number"], alert["location"]) == ("metro-pd", "C-17", "store-12")
        assert alert["terminal_id"] == "store-12/till-1"
        assert alert["event_type"] == "unit.sold" and alert["event_source"] == "test/pos"

        published = await wait_for(lambda: stream_events(settings, "theft.alert"), message="alert published")
        assert len(published) == 1
        assert published[0].id == alert["alert_id"] and published[0].data.serial == sn
        assert published[0].data.sightings[0].reference == sale.data.receipt_id
        # Another sighting event raises its own alert; the duplicate never did.
        await publish_events(settings, [return_requested(sn, minutes=40)])
        await wait_for(lambda: alerts_of(client, sn, 2), message="second sighting")
        assert len((await stolen(client, "acme", sn))["alerts"]) == 2
        await wait_for(lambda: _count_at_least(stream_events(settings, "theft.alert"), 2), message="2 published")
        assert len(await stream_events(settings, "theft.alert")) == 2


async def _count_at_least(awaitable, count):
    found = await awaitable
    return found if len(found) >= count else None


async def _stolen_now(client, serial):
    unit = await stolen(client, "acme", serial)
    return unit if unit["stolen"] else None


async def _sightings(client, serial, count):
    unit = await stolen(client, "acme", serial)
    return unit if len(unit["last_sightings"]) >= count else None


async def test_range_report_matches_each_unit_and_bulk_check_answers_many(settings):
    prefix = f.serial("RG")
    other = f.serial()
    async with running(theft, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.received("acme", selection={"serial_range": {"prefix": prefix, "first": 1, "last": 20, "width": 3}},
                       minutes=0),
            make_event(TheftReported(manufacturer="acme", agency="metro-pd", case_number="C-R",
                                         serial_range={"prefix": prefix, "first": 5, "last": 9, "width": 3}),
                         source="test/police", time=f.at(10)),
            f.theft_reported("acme", other, minutes=10, agency="state-police", case_number="SP-1"),
        ])
        await wait_for(lambda: _stolen_now(client, other), message="reports applied")
        # The range report came after the receipt: each of the 5 units gets a retroactive alert.
        page = await wait_for(lambda: _alerts_page(client, {"agency": "metro-pd"}, 5), message="5 alerts")
        assert sorted(a["serial"] for a in page["items"]) == [f"{prefix}{n:03d}" for n in range(5, 10)]
        assert {a["kind"] for a in page["items"]} == {"retroactive"}
        assert (await stolen(client, "acme", f"{prefix}007"))["reports"][0]["selection"] == f"{prefix}005..{prefix}009"
        assert not (await stolen(client, "acme", f"{prefix}010"))["stolen"]

        items = [{"manufacturer": "ACME", "serial": f"{prefix}{n:03d}".lower()} for n in range(1, 21)]
        items += [{"manufacturer": "acme", "serial": other}, {"manufacturer": "acme", "serial": "bad serial"}]
        response = await client.post("/checks", json={"items": items})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["checked"], body["stolen"], body["invalid"]) == (22, 6, 1)
        hits = [r for r in body["results"] if r["stolen"]]
        assert [r["serial"] for r in hits] == [*(f"{prefix}{n:03d}" for n in range(5, 10)), other]
        assert hits[-1]["cases"] == [{"origin": "agency", "agency": "state-police", "case_number": "SP-1"}]
        assert body["results"][-1]["stolen"] is None and "serial" in body["results"][-1]["error"]

        # A bulk receipt (serial list) naming a stolen unit is a live hit.
        await publish_events(settings, [f.received("acme", selection={"serials": [other, f.serial()]}, minutes=15,
                                                   location="dock-4")])
        [received_hit] = await wait_for(lambda: alerts_of(client, other, 1), message="bulk receipt hit")
        assert (received_hit["kind"], received_hit["event_type"], received_hit["location"]) == (
            "sighting", "unit.received", "dock-4")

        # A recovery of the whole range clears every unit in it.
        await publish_events(settings, [make_event(
            TheftRecovered(manufacturer="acme", agency="metro-pd", case_number="C-R",
                             serial_range={"prefix": prefix, "first": 5, "last": 9, "width": 3}),
            source="test/police", time=f.at(20))])

        async def cleared():
            unit = await stolen(client, "acme", f"{prefix}005")
            return not unit["stolen"] and unit["reports"][0]["status"] == "recovered"

        await wait_for(cleared, message="range recovered")
        # A sale after the recovery is no hit.
        await publish_events(settings, [f.sold("acme", f"{prefix}006", minutes=30)])
        await wait_for(lambda: _sightings(client, f"{prefix}006", 2), message="sale recorded")
        assert [a["kind"] for a in (await stolen(client, "acme", f"{prefix}006"))["alerts"]] == ["retroactive"]


async def _alerts_page(client, params, count):
    page = (await client.get("/alerts", params=params)).json()
    return page if page["total"] >= count else None


async def test_retailer_reports_alert_and_export_with_alert_exports_filtered(settings):
    lost, stolen_sn, police = f.serial(), f.serial(), f.serial()
    async with running(theft, settings) as app, http(app) as client:
        await publish_events(settings, [
            f.received("acme", lost, minutes=0), f.received("acme", stolen_sn, minutes=0),
            f.adjusted("acme", lost, "lost", minutes=10, location="store-1", note="not found at count"),
            f.adjusted("acme", stolen_sn, "stolen", minutes=2000, location="store-2", note="=cut from display"),
            f.adjusted("acme", stolen_sn, "damaged", minutes=2001),  # nothing for the theft watch
            f.theft_reported("acme", police, minutes=0, agency="metro-pd", case_number="C-5"),
        ])
        await wait_for(lambda: _stolen_now(client, stolen_sn), message="retailer reports applied")
        unit = await stolen(client, "acme", lost)
        assert unit["stolen"] and unit["reports"][0]["origin"] == "retailer"
        assert unit["reports"][0]["disposition"] == "lost" and unit["alerts"] == []  # no retroactive for retailer

        await publish_events(settings, [
            return_requested(lost, minutes=20), f.sold("acme", police, minutes=3000, location="store-9"),
            f.adjusted("acme", lost, "found", minutes=25), return_requested(lost, minutes=30, request_id="RQ-2"),
        ])
        await wait_for(lambda: alerts_of(client, police, 1), message="police hit")
        await wait_for(lambda: _sightings(client, lost, 3), message="all sightings applied")
        await wait_for(lambda: _report_status(client, lost, "found"), message="found applied")
        # Found at t=25: the request at t=20 is a hit, the one at t=30 is not (whatever the arrival order).
        [hit] = [a for a in (await stolen(client, "acme", lost))["alerts"] if a["status"] == "open"]
        assert (hit["origin"], hit["agency"], hit["event_type"]) == ("retailer", "retailer", "return.requested")
        assert hit["sightings"][0]["reference"] == "RQ-1" and hit["terminal_id"] == "store-7/desk-1"

        response = await client.get("/exports/retailer-reports.csv")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        by_serial = {r["serial"]: r for r in rows}
        assert by_serial[lost]["status"] == "found" and by_serial[lost]["disposition"] == "lost"
        assert by_serial[lost]["closed_at"].startswith("2026-11-01T09:25")
        assert by_serial[stolen_sn]["status"] == "open" and by_serial[stolen_sn]["location"] == "store-2"
        assert by_serial[stolen_sn]["description"] == "'=cut from display"  # no spreadsheet formulas
        assert by_serial[stolen_sn]["reported_by"] == "test/wms"
        recent = (await client.get("/exports/retailer-reports.json", params={"since": "2026-11-02T00:00:00Z"})).json()
        assert [r["serial"] for r in recent] == [stolen_sn]

        alerts_csv = await client.get("/exports/alerts.csv", params={"agency": "metro-pd"})
        rows = list(csv.DictReader(io.StringIO(alerts_csv.text)))
        assert [(r["serial"], r["case_number"], r["location"]) for r in rows] == [(police, "C-5", "store-9")]
        dated = (await client.get("/exports/alerts.json", params={"until": "2026-11-02T00:00:00"})).json()
        assert [a["serial"] for a in dated] == [lost]
        later = (await client.get("/exports/alerts.json", params={"since": "2026-11-03T00:00:00Z"})).json()
        assert [a["serial"] for a in later] == [police]
        assert (await client.get("/exports/alerts.json", params={"since": "2026-11-04T00:00:00Z"})).json() == []


async def _report_status(client, serial, status):
    unit = await stolen(client, "acme", serial)
    return unit["reports"] and unit["reports"][0]["status"] == status


async def test_read_api_gives_clear_errors(settings):
    async with running(theft, settings) as app, http(app) as client:
        clean = await client.get("/stolen/acme/NEVER-REPORTED-1")
        assert clean.status_code == 200 and clean.json()["stolen"] is False and clean.json()["reports"] == []
        bad = await client.get("/stolen/acme/bad%20serial")
        assert bad.status_code == 400 and "serial" in bad.json()["detail"]
        assert (await client.post("/checks", json={"items": []})).status_code == 422
        too_many = [{"manufacturer": "acme", "serial": f"S{n}"} for n in range(10_001)]
        assert (await client.post("/checks", json={"items": too_many})).status_code == 422
        assert (await client.post("/checks", json={"serials": ["A"]})).status_code == 422
        backwards = await client.get("/alerts", params={"since": "2026-11-02T00:00:00Z", "until": "2026-11-01"})
        assert backwards.status_code == 400 and "until" in backwards.json()["detail"]
        assert (await client.get("/exports/alerts.xml")).status_code == 422
        assert (await client.get("/alerts", params={"status": "maybe"})).status_code == 422
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"


async def test_ranges_with_long_serial_numbers_are_stored_and_matched(settings):
    """Serial numbers past 32 bits (13 digits here) fit the registry on both stores."""
    report = make_event(TheftReported(manufacturer="acme", agency="metro-pd", case_number="C-BIG",
                                      serial_range={"prefix": "P", "first": 1234567890001, "last": 1234567890010,
                                                    "width": 13}),
                        source="test/police", time=f.at(0))
    async with running(theft, settings) as app, http(app) as api:
        await publish_events(settings, [report, f.sold("acme", "P1234567890004", minutes=10)])

        async def alerted():
            return (await api.get("/stolen/acme/P1234567890004")).json()["alerts"] or None

        [alert] = await wait_for(alerted, message="alert on a long-numbered range")
        assert alert["case_number"] == "C-BIG"
        assert (await api.get("/stolen/acme/P1234567890011")).json()["stolen"] is False

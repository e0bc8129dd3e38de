"""Near-miss serials end to end over a real Redis and a real store (SQLite and PostgreSQL): the sale
arrives before the report (out of order) and twice, the possible match is raised once and published,
a late recovery withdraws it, and POST /checks answers it with "fuzzy": true. The rules case by case
are tests/service/test_theft_near.py."""

from __future__ import annotations

from services.theft.app import definition as theft
from tests.integration.test_theft_flow import stolen, stream_events
from tests.support import factories as f
from tests.support.running import http, publish_events, running, wait_for


async def _alerts(client, serial, status, count=1):
    found = [a for a in (await stolen(client, "acme", serial))["alerts"] if a["status"] == status]
    return found if len(found) >= count else None


async def _published(settings, event_type, count):
    found = await stream_events(settings, event_type)
    return found if len(found) >= count else None


async def test_a_misread_sale_before_the_report_raises_one_possible_match_withdrawn_by_a_late_recovery(settings):
    reported = f.serial()  # SN + 10 hex characters
    misread = reported[:-1] + ("X" if reported[-1] != "X" else "Y")  # one character changed
    sale = f.sold("acme", misread, minutes=30, location="store-12")
    async with running(theft, settings) as app, http(app) as client:
        await publish_events(settings, [sale, sale])  # before the report, and twice
        await publish_events(settings, [f.theft_reported("acme", reported, minutes=5, case_number="C-N")])
        [alert] = await wait_for(lambda: _alerts(client, misread, "open"), message="possible match")
        assert (alert["kind"], alert["priority"], alert["case_number"], alert["location"]) == (
            "possible_match", "low", "C-N", "store-12")
        assert alert["near_matches"] == [{"serial": reported, "reason": "changed_character"}]
        [event] = await wait_for(lambda: _published(settings, "theft.alert", 1), message="published")
        assert (event.id, event.data.kind, event.data.priority) == (alert["alert_id"], "possible_match", "low")

        body = {"items": [{"manufacturer": "acme", "serial": s} for s in (reported, misread, "SN-UNRELATED-1")]}
        plain = (await client.post("/checks", json=body)).json()
        fuzzy = (await client.post("/checks", json={**body, "fuzzy": True})).json()
        assert (plain["stolen"], plain["possible"], fuzzy["stolen"], fuzzy["possible"]) == (1, 0, 1, 1)
        assert [m["serial"] for m in fuzzy["results"][1]["possible_matches"]] == [reported]
        bad = await client.post("/checks", json={**body, "fuzzy": "yes"})
        assert bad.status_code == 422

        page = (await client.get("/alerts", params={"kind": "possible_match"})).json()
        assert [a["alert_id"] for a in page["items"]] == [alert["alert_id"]]

        await publish_events(settings, [f.theft_recovered("acme", reported, minutes=20, case_number="C-N")])
        await wait_for(lambda: _alerts(client, misread, "withdrawn"), message="withdrawn")
        [withdrawal] = await wait_for(lambda: _published(settings, "theft.alert.withdrawn", 1), message="withdrawal")
        assert withdrawal.data.alert_id == alert["alert_id"]
        assert len(await stream_events(settings, "theft.alert")) == 1  # the duplicate sale raised nothing more

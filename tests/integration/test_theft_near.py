"""Near-miss serials end to end over a real Redis and a real store (SQLite and PostgreSQL): the sale
arrives before the report (out of order) and twice, the possible match is raised once and published,
a late recovery withdraws it, and POST /checks answers it with "fuzzy": true. The rules case by case
are tests/service/test_theft_near.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import uvicorn

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


async def _cli(settings, *args):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.endswith("_DATABASE_URL")}
    env.update(SERIALTRACK_DATA_DIR=str(settings.data_dir), THEFT_PORT=str(settings.port("theft")))
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "serialtrack.cli", *args], env=env,
                                   capture_output=True, text=True, timeout=120, check=False)


async def test_the_cli_lists_possible_matches_after_exact_alerts_and_checks_fuzzily(sqlite_settings):
    """`serialtrack theft alerts` and `theft check --fuzzy`, as separate processes, against the theft
    service serving HTTP on its port."""
    settings = sqlite_settings
    reported, other = f.serial(), f.serial()
    doubled = reported[:6] + reported[5] + reported[6:]
    async with running(theft, settings) as app, http(app) as client:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port("theft"), log_level="error",
                                               lifespan="off"))
        serving = asyncio.create_task(server.serve())
        try:
            await wait_for(lambda: server.started, message="theft serves HTTP")
            await publish_events(settings, [f.theft_reported("acme", reported, minutes=5),
                                            f.theft_reported("acme", other, minutes=5, case_number="C-2")])
            await publish_events(settings, [f.sold("acme", doubled, minutes=20), f.sold("acme", other, minutes=10)])
            await wait_for(lambda: _alerts(client, doubled, "open"), message="possible match")
            await wait_for(lambda: _alerts(client, other, "open"), message="exact alert")

            listed = await _cli(settings, "theft", "alerts")
            assert listed.returncode == 0, listed.stderr
            lines = listed.stdout.splitlines()
            assert lines[0].startswith("HIGH") and f"acme/{other}" in lines[0]  # exact first, though older
            assert lines[1].startswith("low") and "possible_match" in lines[1] and f"acme/{doubled}" in lines[1]
            assert f"resembles {reported} (extra character)" in lines[1]
            as_json = json.loads((await _cli(settings, "theft", "alerts", "--kind", "possible_match", "--json")).stdout)
            assert [(a["serial"], a["priority"]) for a in as_json["items"]] == [(doubled, "low")]

            checked = await _cli(settings, "theft", "check", "acme", doubled, "SN-NOTHING-1", "--fuzzy")
            assert checked.returncode == 1  # a possible match
            assert f"acme/{doubled}: possible match of {reported}" in checked.stdout
            assert "acme/SN-NOTHING-1: not reported" in checked.stdout
            plain = await _cli(settings, "theft", "check", "acme", doubled)
            assert plain.returncode == 0 and "not reported" in plain.stdout
            bad = await _cli(settings, "theft", "alerts", "--kind", "maybe")
            assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
        finally:
            server.should_exit = True
            await serving

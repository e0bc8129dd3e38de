"""The reports of issue 14 through the CLI against `serialtrack up` (real processes, embedded Redis,
SQLite): `serialtrack sell-through` (table, CSV, JSON, refused to the wrong token) and
`serialtrack stock-aging` (table, CSV)."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.test_cli import cli, system  # noqa: F401 - the fixture, used by name
from tests.support.reports import AgingStory

pytestmark = pytest.mark.e2e


def test_sell_through_and_stock_aging_from_the_cli(system, tmp_path):  # noqa: F811 - the fixture
    env = system.env
    story = AgingStory(datetime.now(UTC))
    feed = tmp_path / "story.jsonl"
    feed.write_text("".join(json.dumps(e.envelope.model_dump(mode="json", exclude_none=True)) + "\n"
                            for e in story.events()))
    cli(env, "publish", "--file", str(feed))

    deadline = time.monotonic() + 60
    while True:
        aging = json.loads(cli(env, "stock-aging", "--manufacturer", "acme", "--json").stdout)
        sales = json.loads(cli(env, "sell-through", "acme", "--json").stdout)
        if aging["totals"]["total"] == 8 and aging["returns"] == story.expected_returns and \
                sales["totals"] == {"sold": 4, "returned": 3, "net": 1, "sold_with_owner": 0}:
            break
        assert time.monotonic() < deadline, (aging["totals"], sales["totals"])
        time.sleep(0.5)

    table = cli(env, "stock-aging", "--manufacturer", "acme").stdout
    assert "180+" in table and "restocked" in table and story.u4 in table.split("oldest")[1].splitlines()[1]
    old = list(csv.DictReader(io.StringIO(cli(env, "stock-aging", "--manufacturer", "acme", "--csv",
                                              "--older-than-days", "90").stdout)))
    assert [(r["serial"], r["days_in_stock"]) for r in old] == [(story.u4, "200"), (story.u6, "120"), (story.u3, "100")]

    since = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    recent = list(csv.DictReader(io.StringIO(cli(env, "sell-through", "acme", "--since", since, "--csv").stdout)))
    assert [(r["kind"], r["serial"], r["location"]) for r in recent] == [
        ("returned", story.u5, "store-2"), ("sold", story.u7, "store-1")]
    out = tmp_path / "counts.csv"
    cli(env, "sell-through", "acme", "--counts", "--csv", "--output", str(out))
    assert out.read_text().splitlines() == ["sku,location,sold,returned,net,sold_with_owner",
                                            "TV-55,store-1,4,2,2,0", "TV-55,store-2,0,1,-1,0"]
    assert "total" in cli(env, "sell-through", "acme").stdout

    def token(role: str, *extra: str) -> str:  # named after its role and manufacturer
        made = json.loads(cli(env, "tokens", "create", "--role", role, "--name", f"cli-{role}-{len(extra) and extra[-1]}", *extra,
                              "--json").stdout)
        return made["token"]

    acme = {**env, "SERIALTRACK_TOKEN": token("manufacturer", "--manufacturer", "acme")}
    assert "TV-55" in cli(acme, "sell-through", "acme", "--counts", "--csv").stdout
    zeta = {**env, "SERIALTRACK_TOKEN": token("manufacturer", "--manufacturer", "zeta")}
    refused = cli(zeta, "sell-through", "acme", check=False)
    assert refused.returncode == 1 and "404" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    desk = {**env, "SERIALTRACK_TOKEN": token("customer-service")}
    forbidden = cli(desk, "sell-through", "acme", "--csv", check=False)
    assert forbidden.returncode == 2 and "403" in forbidden.stderr and forbidden.stdout == ""
    bad = cli(env, "sell-through", "acme", "--since", "yesterday", check=False)
    assert bad.returncode == 1 and "422" in bad.stderr and "since" in bad.stderr
    bad_days = cli(env, "stock-aging", "--older-than-days", "-1", check=False)
    assert bad_days.returncode == 2

"""Trust on the bus through the CLI, as an agency's feed and an attacker would meet it on a running
`serialtrack up`: credentials and keys made with the CLI, a signed report applied, unsigned and
misbound ones refused by the CLI, a forged entry that reached Redis dead-lettered and shown by
`serialtrack deadletters`, and Redis itself refusing a role outside its streams."""

from __future__ import annotations

import json
import time

import pytest

from shared.envelope import ENTRY_FIELD
from tests.e2e.test_cli import cli, redis_as, system, wait_for_unit  # noqa: F401 - system is a fixture

pytestmark = pytest.mark.e2e


def test_credentials_and_keys_sign_a_feed_and_forgeries_are_refused(system, tmp_path):  # noqa: F811 - the fixture
    env = system.env
    cli(env, "publish", "unit.received", "--data",
        '{"manufacturer": "acme", "serial": "TRUST-1", "sku": "TV-55", "location": "dc"}', "--source", "wms/dc")
    wait_for_unit(env, "acme", "TRUST-1", 1)

    cli(env, "keys", "create", "metro-pd", "--role", "law-enforcement", "--agency", "metro-pd",
        "--source-prefix", "police/metro-pd")
    made = json.loads(cli(env, "credentials", "create", "law-enforcement", "metro-pd", "--json").stdout)
    assert made["types"] == ["theft.recovered", "theft.reported"]
    report = '{"manufacturer": "acme", "serial": "TRUST-1", "agency": "metro-pd", "case_number": "C-77"}'

    unsigned = cli(env, "publish", "theft.reported", "--data", report, "--source", "police/metro-pd/feed",
                   "--credential", made["file"], check=False)
    assert unsigned.returncode != 0 and "theft.reported must be signed" in unsigned.stderr
    other_agency = cli(env, "publish", "theft.reported", "--data", report.replace('"metro-pd"', '"county"'),
                       "--source", "police/metro-pd/feed", "--credential", made["file"], "--sign-with", "metro-pd",
                       check=False)
    assert other_agency.returncode != 0 and "speaks for agency 'metro-pd'" in other_agency.stderr
    wrong_type = cli(env, "publish", "unit.sold", "--credential", made["file"], "--data",
                     '{"manufacturer": "acme", "serial": "TRUST-1", "sku": "TV-55", "location": "s", '
                     '"terminal_id": "t", "receipt_id": "R"}', check=False)
    assert wrong_type.returncode != 0 and "refused by Redis" in wrong_type.stderr  # NOPERM from Redis itself

    cli(env, "publish", "theft.reported", "--data", report, "--source", "police/metro-pd/feed",
        "--credential", made["file"], "--sign-with", "metro-pd")
    unit = wait_for_unit(env, "acme", "TRUST-1", 2)
    assert unit["stolen"] is True and unit["theft_cases"] == ["metro-pd:C-77"]

    # Someone with the agency's Redis credential but not its private key forges a recovery.
    forged = {"specversion": "1.0", "id": "forged-1", "source": "police/metro-pd/feed", "type": "theft.recovered",
              "time": "2026-11-27T10:00:00Z", "data": {"manufacturer": "acme", "serial": "TRUST-1",
                                                      "agency": "metro-pd", "case_number": "C-77"}}
    police = redis_as(env, made["user"])
    police.xadd("serialtrack:theft.recovered", {ENTRY_FIELD: json.dumps(forged)})
    letters: dict = {}
    for _ in range(100):
        letters = json.loads(cli(env, "deadletters", "--json").stdout)
        if letters["entries"] and {"inventory", "theft"} <= {r["service"] for r in letters["entries"][0]["refused_by"]}:
            break
        time.sleep(0.3)
    [entry] = letters["entries"]
    assert "forged-1" in entry["original"]
    assert {r["reason"] for r in entry["refused_by"]} == {"unsigned"}
    assert json.loads(cli(env, "lookup", "acme", "TRUST-1", "--json").stdout)["inventory"]["stolen"] is True

"""`serialtrack erase` on a running `serialtrack up`, as the operator would use it: the embedded Redis
with its users (the CLI publishes as operator, reads the reports as operator-reader; each service
rewrites its dead letters as its writer), a customer's sale and a dead-lettered entry naming them,
then the erasure and what `lookup`, `deadletters` and the logs show afterwards."""

from __future__ import annotations

import json
import time

import pytest

from services.registry import INSTALLED
from shared.envelope import ENTRY_FIELD
from tests.e2e import test_cli
from tests.e2e.test_cli import cli, redis_as, wait_for_unit

pytestmark = pytest.mark.e2e
system = test_cli.system  # the fixture: `serialtrack up` on a fresh data dir

CUSTOMER, RECEIPT = "C-E2E-ERASE-7", "R-E2E-ERASE-7"


def test_erase_pseudonymizes_a_customer_everywhere_and_reports_per_service(system):
    env = system.env
    sale = {"manufacturer": "acme", "serial": "ERASE-1", "sku": "TV-55", "location": "store-1",
            "terminal_id": "store-1/till-1", "receipt_id": RECEIPT, "customer_id": CUSTOMER}
    cli(env, "publish", "unit.received", "--data", json.dumps({k: sale[k] for k in ("manufacturer", "serial", "sku",
                                                                                      "location")}))
    cli(env, "publish", "unit.sold", "--data", json.dumps(sale))
    poison = {"specversion": "1.0", "id": "poison-erase-1", "source": "pos/store-1/till-1", "type": "unit.sold",
              "time": "2026-11-01T10:00:00Z", "data": {k: v for k, v in sale.items() if k != "location"}}
    operator = redis_as(env, "operator")
    operator.xadd("serialtrack:unit.sold", {ENTRY_FIELD: json.dumps(poison)})
    operator.close()
    wait_for_unit(env, "acme", "ERASE-1", 2)
    deadline = time.monotonic() + 30
    while CUSTOMER not in cli(env, "deadletters", "--json").stdout and time.monotonic() < deadline:
        time.sleep(0.3)

    result = cli(env, "erase", CUSTOMER, "--note", "ticket 4711")
    assert CUSTOMER not in result.stdout and "the customer is now anon-" in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(lines) == set(INSTALLED), result.stdout
    # Each rewrote the dead letter naming the customer (twice if it was reclaimed while being dead-lettered).
    assert all("dead letters rewritten" in line and "; 0 dead letters" not in line for line in lines.values()), lines
    report = json.loads(cli(env, "erase", CUSTOMER, "--json").stdout)  # again: nothing left to change
    assert report["missing"] == [] and all(r["already_erased"] for r in report["reports"])
    pseudonym = report["reports"][0]["pseudonym"]

    unit = json.loads(cli(env, "lookup", "acme", "ERASE-1", "--json").stdout)
    sold = [fact for fact in unit["inventory"]["history"] if fact["type"] == "unit.sold"]
    assert [(f["customer_id"], f["receipt_id"] != RECEIPT) for f in sold] == [(pseudonym, True)]
    assert unit["warranty"]["owner"]["customer_id"] == pseudonym
    letters = cli(env, "deadletters", "--json").stdout
    assert CUSTOMER not in letters and RECEIPT not in letters and pseudonym in letters

    assert system.stop() == 0
    assert CUSTOMER not in system.output and RECEIPT not in system.output

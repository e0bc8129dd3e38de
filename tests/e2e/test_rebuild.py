"""Retention under `serialtrack up`, through the CLI: with a retention window of a second the archiver
child archives and trims what every service acked; events published after the trim about units
whose history is now only in the archive still apply; and `serialtrack rebuild SERVICE --compare`
builds every service's store anew from the archive plus the live streams, equal to the live one."""

from __future__ import annotations

import json
import re
import time

import pytest

from serialtrack.redis_server import free_port
from services.registry import INSTALLED
from shared.retention import Archive
from shared.streams import Streams
from tests.e2e.test_cli import System, cli, cli_env, redis_as

pytestmark = pytest.mark.e2e

STREAMS = Streams()


def _unsettled(env) -> list:
    """What is not done yet: groups with entries undelivered or unacked, outboxes not empty."""
    report = json.loads(cli(env, "status", "--json", check=False).stdout)
    behind = [(s["stream"], g["group"], g["lag"], g["pending"]) for s in report["streams"] for g in s["groups"]
              if g["group"] in INSTALLED and (g["lag"] or g["pending"])]
    unpublished = [(name, o["unpublished"]) for name, o in report["outbox"].items() if o["unpublished"] != 0]
    return behind + unpublished


def wait_settled(env, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    calm = 0
    while time.monotonic() < deadline:
        left = _unsettled(env)
        calm = 0 if left else calm + 1
        if calm == 2:  # twice in a row: a relay may publish between two looks
            return
        time.sleep(0.5)
    raise AssertionError(f"the services did not catch up: {left}")


def wait_trimmed(env, archive: Archive, stream: str, timeout: float = 60) -> int:
    reader = redis_as(env, "operator-reader")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        archived = archive.state(stream).entries
        if archived and reader.xlen(stream) == 0:
            return archived
        time.sleep(0.3)
    raise AssertionError(f"{stream} was not archived and trimmed")


# The whole system through the demo, a trim, then four rebuilds: about a minute on a quiet machine,
# several when six test suites share two cores.
@pytest.mark.timeout(600)
def test_a_rebuild_after_a_trim_equals_every_live_store(tmp_path):
    ports = {"redis": free_port(), **{s: free_port() for s in INSTALLED}}
    env = cli_env(tmp_path / "data", ports)
    env.update(SERIALTRACK_RETENTION_SECONDS="1", SERIALTRACK_ARCHIVE_INTERVAL_SECONDS="0.5",
               SERIALTRACK_DEADLETTER_RETENTION_SECONDS="1")
    archive = Archive(tmp_path / "data" / "archive")
    system = System(env)
    system.start()
    try:
        assert "archiver" in system.output
        first = json.loads(cli(env, "demo", "--json").stdout)
        received = STREAMS.for_type("unit.received")
        wait_settled(env)
        archived = wait_trimmed(env, archive, received)
        assert archived > 0

        # After the trim: events about the story's units, whose earlier history Redis no longer holds.
        first_serial, second_serial = first["serials"][:2]
        cli(env, "publish", "unit.sold", "--data", json.dumps(
            {"manufacturer": "acme", "serial": first_serial, "sku": "TV-55-OLED", "location": "store-12",
             "terminal_id": "store-1/till-9", "receipt_id": "R-after-trim", "customer_id": "C-after"}))
        cli(env, "publish", "unit.transferred", "--data", json.dumps(
            {"manufacturer": "acme", "serial": second_serial, "from_location": "store-1", "to_location": "store-9"}))
        redis_as(env, "pos").xadd(STREAMS.for_type("unit.sold"), {"event": "{broken"})  # dead-lettered
        wait_settled(env)

        for service in (s for s in INSTALLED if s != "inventory"):
            result = cli(env, "rebuild", service, "--compare", "--json", check=False)
            report = json.loads(result.stdout)
            different = [t for t in report["comparison"]["tables"] if not t["equal"]]
            if different:  # the whole difference beside the test's data, the start of it in the message
                (tmp_path / f"{service}-differences.json").write_text(json.dumps(different, indent=1))
            assert result.returncode == 0 and not different, json.dumps(different)[:3000]
            assert sum(s["archived"] for s in report["streams"].values()) > 0, service  # it crossed the trim
            assert report["applied"] > 0
            assert any(t["live_rows"] > 0 for t in report["comparison"]["tables"] if t["table"] != "inbox")
        # The text form: what was replayed, each table's verdict, and what it does not compare.
        result = cli(env, "rebuild", "inventory", "--compare", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"rebuilt inventory into .*: [1-9]\d* archived \+ \d+ live entries", result.stdout)
        assert re.search(r"inventory_history: live [1-9]\d*, rebuilt [1-9]\d*: equal \(ignoring id, recorded_at\)",
                         result.stdout)
        assert re.search(r"inventory_anomalies: live \d+, rebuilt \d+: equal .*rows with status withdrawn are left "
                         r"out: an anomaly raised because a later event arrived first", result.stdout)
    finally:
        if system.process and system.process.poll() is None:
            system.stop()

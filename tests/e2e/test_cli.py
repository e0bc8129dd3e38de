"""The system started and used through the CLI, as a user would: `serialtrack up`, publish,
lookup, demo, deadletters, Ctrl-C, and a restart that keeps every bit of data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from serialtrack.redis_server import free_port
from services.registry import INSTALLED

pytestmark = pytest.mark.e2e


def cli_env(data_dir, ports) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.endswith("_DATABASE_URL")}
    env["SERIALTRACK_DATA_DIR"] = str(data_dir)
    env["SERIALTRACK_EMBEDDED_REDIS_PORT"] = str(ports["redis"])
    env["SERIALTRACK_CLAIM_IDLE_MS"] = "1000"
    for service in INSTALLED:
        env[f"{service.upper()}_PORT"] = str(ports[service])
    return env


def redis_as(env, user: str):
    """A client of the running system's Redis as one of its users (credentials in the data dir): the
    default user is off, and each user may do only what its role may (shared/acl.py)."""
    from shared.redis_clients import sync_client

    return sync_client((Path(env["SERIALTRACK_DATA_DIR"]) / "credentials" / f"{user}.url").read_text().strip())


def cli(env, *args, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "serialtrack.cli", *args], env=env, input=stdin,
                            capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"serialtrack {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


class System:
    def __init__(self, env):
        self.env = env
        self.process = None
        self.output = ""

    def start(self, timeout: float = 90) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "up"], env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError("serialtrack up exited:\n" + "".join(lines))
            lines.append(line)
            if "serialtrack is up" in line:
                self.output = "".join(lines)
                return
        raise AssertionError("serialtrack up did not come up:\n" + "".join(lines))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)  # Ctrl-C
        code = self.process.wait(60)
        self.output += self.process.stdout.read()
        return code


@pytest.fixture
def system(tmp_path):
    ports = {"redis": free_port(), **{s: free_port() for s in INSTALLED}}
    running = System(cli_env(tmp_path / "data", ports))
    running.ports = ports
    running.start()
    yield running
    if running.process.poll() is None:
        running.stop()


def wait_for_unit(env, manufacturer, serial, history_length, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cli(env, "lookup", manufacturer, serial, "--json", check=False)
        if result.returncode == 0:
            unit = json.loads(result.stdout)["inventory"]
            if unit and len(unit["history"]) >= history_length:
                return unit
        time.sleep(0.3)
    raise AssertionError(f"{manufacturer}/{serial} did not reach {history_length} facts")


def _hours_from_now(hours: int) -> str:
    """A time after the receipt published now, and within the day of slack event times may be ahead."""
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_up_publish_lookup_stop_restart_keeps_everything(system, tmp_path):
    env = system.env
    assert "redis" in system.output and "(embedded" in system.output
    for service in INSTALLED:
        assert f"http://127.0.0.1:{system.ports[service]}" in system.output

    published = json.loads(cli(env, "publish", "unit.received", "--json", "--data",
                               '{"manufacturer": "Acme", "serial": "e2e-1", "sku": "TV-55", "location": "dc"}',
                               "--source", "wms/dc-1", "--id", "rcv-1").stdout)
    assert published["published"] == 1 and published["lines"][0]["id"] == "rcv-1"

    lines = [
        {"type": "unit.transferred", "data": {"manufacturer": "acme", "serial": "E2E-1", "from_location": "dc",
                                              "to_location": "store-12"}, "time": _hours_from_now(1)},
        "this is not json",
        {"type": "unit.sold", "data": {"manufacturer": "acme", "serial": "E2E-1"}},
        {"specversion": "1.0", "id": "sale-77", "source": "pos/store-12/till-3", "type": "unit.sold",
         "time": _hours_from_now(2),
         "data": {"manufacturer": "acme", "serial": "E2E-1", "sku": "TV-55", "location": "store-12",
                  "terminal_id": "till-3", "receipt_id": "R-77"}},
        {"type": "unit.sold", "data": {"manufacturer": "acme", "serial": "E2E 1", "sku": "TV-55", "location": "x",
                                       "terminal_id": "t", "receipt_id": "r"}},
        {"type": "unit.sold", "data": {"manufacturer": "acme", "serial": "E2E-2", "sku": "TV-55", "location": "x",
                                       "terminal_id": "t", "receipt_id": "r", "colour": "red"}},
    ]
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    result = cli(env, "publish", "--file", str(events_file), "--json", check=False)
    assert result.returncode == 1  # some lines were bad...
    report = json.loads(result.stdout)
    assert report["published"] == 2  # ...and the good ones were published anyway
    published_ids = {e["line"]: e["id"] for e in report["lines"] if e["status"] == "published"}
    assert published_ids[4] == "sale-77"  # a replayed envelope keeps its id
    errors = {e["line"]: e["error"] for e in report["lines"] if e["status"] == "rejected"}
    assert set(errors) == {2, 3, 5, 6}
    assert "JSON" in errors[2] and "receipt_id" in errors[3]
    assert "serial" in errors[5] and "spaces" in errors[5]
    assert "unknown field(s) colour" in errors[6]

    unit = wait_for_unit(env, "acme", "e2e-1", 3)
    assert unit["status"] == "sold" and unit["location"] == "store-12"
    assert unit["history"][0]["id"] == "rcv-1"
    text_view = cli(env, "lookup", "acme", "E2E-1").stdout
    assert "sold" in text_view and "store-12" in text_view

    assert system.stop() == 0
    assert "stopped" in system.output

    # A data dir from before Redis users: no ACL file, no credentials. The next start makes them.
    data = Path(env["SERIALTRACK_DATA_DIR"])
    (data / "run" / "users.acl").unlink()
    for credential in (data / "credentials").iterdir():
        credential.unlink()
    system.start()  # same data dir: Redis AOF and SQLite files are reused
    assert (data / "run" / "users.acl").stat().st_mode & 0o777 == 0o600
    assert (data / "credentials" / "operator.url").stat().st_mode & 0o777 == 0o600
    recorded = (data / "run" / "redis.url").read_text()
    assert "@" not in recorded  # the address only, no credential in it
    unit = wait_for_unit(env, "acme", "e2e-1", 3, timeout=10)
    assert unit["status"] == "sold"
    rejected = cli(env, "publish", "unit.returned", "--data", json.dumps(
        {"manufacturer": "acme", "serial": "E2E-1", "location": "store-12", "receipt_id": "R-77",
         "reason": "too big", "when": "x"}), check=False)
    assert rejected.returncode == 2 and "unknown field(s) when" in rejected.stderr
    cli(env, "publish", "unit.returned", "--time", _hours_from_now(3), "--data", json.dumps(
        {"manufacturer": "acme", "serial": "E2E-1", "location": "store-12", "receipt_id": "R-77",
         "reason": "too big"}))
    unit = wait_for_unit(env, "acme", "e2e-1", 4)
    assert unit["status"] == "returned"


def test_demo_tells_its_story_and_bad_input_is_dead_lettered(system):
    env = system.env
    demo = json.loads(cli(env, "demo", "--json").stdout)
    units = {serial: report["inventory"] for serial, report in demo["units"].items()}
    first, second, third, old, claimed, swapped, late = demo["serials"]
    assert units[first]["status"] == "in_stock"  # returned, held for the recall, repaired
    assert units[swapped]["status"] == "quarantined" and units[late]["status"] == "quarantined"
    assert units[third]["stolen"] is True
    open_kinds = {a["kind"] for a in units[third]["anomalies"] if a["status"] == "open"}
    assert "sold_while_stolen" in open_kinds
    assert "sold_twice" in {a["kind"] for a in units[second]["anomalies"] if a["status"] == "open"}
    by_serial = {s: demo["units"][s]["warranty"]["requests"][0] for s in (old, claimed, swapped)}
    assert by_serial[claimed]["status"] == "approved"
    assert by_serial[old]["status"] == "rejected" and "outside_coverage" in by_serial[old]["reasons"]
    assert by_serial[swapped]["status"] == "rejected" and "serial_not_on_receipt" in by_serial[swapped]["reasons"]
    progress = demo["recall"]["progress"]
    assert (progress["affected"], progress["quarantined"], progress["remedied"]) == (7, 2, 1)
    assert (progress["sold_owner_notified"], progress["sold_owner_unknown"]) == (2, 2)
    alerts = demo["units"][third]["theft"]["alerts"]
    assert {a["kind"] for a in alerts} == {"sighting", "retroactive"}
    # the diversion (issue 14): a unit shipped to another retailer's outlet, received at store-12
    diverted = demo["diverted_shipment"]
    assert diverted["counts"]["diverted"] == 1 and diverted["diverted"][0]["location"] == "store-12"
    shown = cli(env, "shipments", "show", diverted["shipment_id"]).stdout
    assert "diverted 1" in shown and f"diverted   acme/{diverted['diverted'][0]['serial']} at store-12" in shown
    _a_count_through_the_cli(env, in_stock=[first, swapped], sold=second)
    # The till's mistaken sale of the swapped unit, voided: kept in its history, marked; the sale of the
    # claimed unit is the correction the void carried.
    voided = [(h["type"], h["voided"]["reason"]) for h in units[swapped]["history"] if h["voided"]]
    assert voided == [("unit.sold", "scanned the shelf label, not the box")]
    assert next(h["id"] for h in units[claimed]["history"] if h["type"] == "unit.sold").endswith("corrected-sale")

    client = redis_as(env, "pos")  # garbage from a till: its role may write unit.sold
    client.xadd("serialtrack:unit.sold", {"event": "{broken"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        letters = json.loads(cli(env, "deadletters", "--json").stdout)
        if letters["entries"]:
            break
        time.sleep(0.3)
    assert {r["reason"] for r in letters["entries"][0]["refused_by"]} == {"not_json"}
    health = httpx.get(f"http://127.0.0.1:{system.ports['inventory']}/healthz", timeout=5).json()
    assert health["status"] == "ok"  # still up after poison

    # Each service ran as its own two users, and Redis refused none of them anything.
    admin = redis_as(env, "admin")
    connected = {c["user"] for c in admin.client_list()}
    assert {f"{s}-{side}" for s in INSTALLED for side in ("reader", "writer") if (s, side) != ("recalls", "writer")
            } <= connected  # recalls publishes nothing: its writer connects only to dead-letter
    assert "default" not in connected
    assert admin.acl_log() == []


def _a_count_through_the_cli(env, in_stock, sold):
    """A stock count at store-12 published with `serialtrack publish`, read with `serialtrack counts show`."""
    count_id = f"CNT-{in_stock[0]}"
    data = {"count_id": count_id, "location": "store-12", "counted_at": datetime.now(UTC).isoformat(),
            "units": [{"manufacturer": "acme", "serial": s} for s in (in_stock[0], sold)]}
    cli(env, "publish", "stock.counted", "--data", json.dumps(data))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        view = json.loads(cli(env, "counts", "show", count_id, "--json").stdout)
        if view["status"] == "complete":
            break
        time.sleep(0.3)
    results = {u["serial"]: u["result"] for u in view["units"]["items"]}
    assert results[in_stock[0]] == "matched" and results[sold] == "unexpected"
    assert results[in_stock[1]] == "missing"  # quarantined at store-12 (on hand), not seen
    report = cli(env, "counts", "show", count_id, "--csv").stdout.splitlines()
    assert report[0].startswith("count_id,location,counted_at") and len(report) == 1 + view["units"]["total"]
    unknown = cli(env, "counts", "show", "no-such-count", check=False)
    assert unknown.returncode == 1 and "not known to inventory" in unknown.stderr


def test_a_sale_voided_from_the_cli_and_a_void_the_key_may_not_publish(system):
    env = system.env
    at = _hours_from_now(1)
    cli(env, "publish", "unit.received", "--data", json.dumps(
        {"manufacturer": "acme", "serial": "E2E-V1", "sku": "TV-55", "location": "store-12"}))
    cli(env, "publish", "unit.sold", "--source", "pos/store-12/till-9", "--id", "till9-0001", "--time", at,
        "--data", json.dumps({"manufacturer": "acme", "serial": "E2E-V1", "sku": "TV-55", "location": "store-12",
                              "terminal_id": "store-12/till-9", "receipt_id": "R-V1"}))
    assert wait_for_unit(env, "acme", "e2e-v1", 2)["status"] == "sold"
    cli(env, "keys", "create", "dock-12", "--role", "warehouse", "--source-prefix", "wms/store-12")
    refused = cli(env, "void", "pos/store-12/till-9", "till9-0001", "--type", "unit.sold", "--manufacturer", "acme",
                  "--reason", "wrong serial", "--sign-with", "dock-12", "--source", "wms/store-12", check=False)
    assert refused.returncode == 2 and "(warehouse) may not void a unit.sold" in refused.stderr
    assert refused.stderr.count("\n") == 1  # one line
    done = json.loads(cli(env, "void", "pos/store-12/till-9", "till9-0001", "--type", "unit.sold",
                          "--manufacturer", "acme", "--reason", "wrong serial", "--json").stdout)
    assert done["lines"][0]["status"] == "published"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        unit = json.loads(cli(env, "lookup", "acme", "E2E-V1", "--json").stdout)
        if unit["inventory"]["status"] == "in_stock" and unit["warranty"]["status"] == "in_stock":
            break
        time.sleep(0.3)
    sale = next(h for h in unit["inventory"]["history"] if h["type"] == "unit.sold")
    assert sale["voided"]["reason"] == "wrong serial" and unit["inventory"]["status"] == "in_stock"


def test_cli_errors_are_clear(tmp_path):
    env = cli_env(tmp_path / "nothing-here", {"redis": free_port(), **{s: free_port() for s in INSTALLED}})
    no_redis = cli(env, "publish", "unit.received", "--data", json.dumps(
        {"manufacturer": "acme", "serial": "SN1", "sku": "TV-55", "location": "dc"}), check=False)
    assert no_redis.returncode == 2 and "REDIS_URL" in no_redis.stderr and "serialtrack up" in no_redis.stderr
    both = cli(env, "publish", "unit.sold", "--file", "x.jsonl", check=False)
    assert both.returncode == 2 and "either" in both.stderr
    bad_serial = cli(env, "lookup", "acme", "bad serial", check=False)
    assert bad_serial.returncode == 2 and "serial" in bad_serial.stderr
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    unknown_type = cli(env, "publish", "unit.melted", "--data", "{}", check=False)
    assert unknown_type.returncode == 2 and "unknown event type" in unknown_type.stderr
    down = cli(env, "lookup", "acme", "SN1", check=False)
    assert down.returncode == 2 and "not reachable" in down.stderr
    assert "publish" in cli(env, "--help").stdout


def test_a_tills_credential_publishes_its_roles_types_only_until_it_is_revoked(system, tmp_path):
    env = system.env
    made = json.loads(cli(env, "credentials", "create", "pos", "store-12-till-3", "--json").stdout)
    assert made["user"] == "pos.store-12-till-3" and made["url"].startswith("redis://pos.store-12-till-3:")
    credential = Path(made["file"])
    assert credential.stat().st_mode & 0o777 == 0o600 and credential.read_text().strip() == made["url"]
    listed = json.loads(cli(env, "credentials", "list", "--json").stdout)["users"]
    assert {"user": "pos.store-12-till-3", "role": "pos", "kind": "credential"}.items() <= next(
        u for u in listed if u["user"] == "pos.store-12-till-3").items()
    assert made["url"].split("@")[0].split(":")[-1] not in json.dumps(listed)  # no password in the list

    sale = {"manufacturer": "acme", "serial": "TILL-1", "sku": "TV-55", "location": "store-12",
            "terminal_id": "till-3", "receipt_id": "R-1"}
    cli(env, "publish", "unit.sold", "--credential", str(credential), "--source", "pos/store-12/till-3",
        "--data", json.dumps(sale))
    assert wait_for_unit(env, "acme", "TILL-1", 1)["status"] == "sold"

    # A type of another role (a warehouse receipt; unsigned is fine for it): Redis itself refuses it.
    receipt = cli(env, "publish", "unit.received", "--credential", str(credential), "--data", json.dumps(
        {"manufacturer": "acme", "serial": "TILL-9", "sku": "TV-55", "location": "dc"}), check=False)
    assert receipt.returncode == 1 and receipt.stdout == ""
    assert len(receipt.stderr.strip().splitlines()) == 1
    assert "unit.received" in receipt.stderr and "refused by Redis" in receipt.stderr and "NOPERM" in receipt.stderr

    assert "revoked pos.store-12-till-3" in cli(env, "credentials", "revoke", "store-12-till-3").stdout
    kept = tmp_path / "till.url"  # the till still has its copy of the URL
    kept.write_text(made["url"])
    after = cli(env, "publish", "unit.sold", "--credential", str(kept), "--data", json.dumps(
        {**sale, "serial": "TILL-2"}), check=False)
    assert after.returncode != 0 and len(after.stderr.strip().splitlines()) == 1
    assert "refused the credential" in after.stderr and made["url"].split("@")[0].split(":")[-1] not in after.stderr
    builtin = cli(env, "credentials", "revoke", "operator", check=False)
    assert builtin.returncode == 1 and "built-in" in builtin.stderr


def test_the_supervisor_restarts_a_killed_service_and_it_applies_what_was_published_meanwhile(system):
    """README "Command line": `serialtrack up` restarts a service that dies. SIGKILL inventory's process
    under it: a new process (another pid) answers, and applies the event published while none ran."""
    url = f"http://127.0.0.1:{system.ports['inventory']}/healthz"
    before = httpx.get(url, timeout=5).json()
    assert before["service"] == "inventory"
    os.kill(before["pid"], signal.SIGKILL)
    cli(system.env, "publish", "unit.received", "--data",
        '{"manufacturer": "acme", "serial": "SUPERVISED-1", "sku": "TV-55", "location": "dc"}')
    deadline, after = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        try:
            after = httpx.get(url, timeout=1).json()
            if after.get("status") == "ok" and after["pid"] != before["pid"]:
                break
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    assert after and after["pid"] != before["pid"], f"inventory was not restarted: {after}"
    assert wait_for_unit(system.env, "acme", "SUPERVISED-1", 1)["status"] == "in_stock"
    assert system.stop() == 0
    assert "inventory was killed by SIGKILL; restarting in 1 s" in system.output
    assert "inventory restarted (pid" in system.output

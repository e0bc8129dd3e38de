"""The first hour of a new user, through real `serialtrack` processes against a running system:
each snag issue 13 found, fixed. One system serves the module (starting one takes a while)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serialtrack.redis_server import free_port
from services.registry import INSTALLED
from tests.e2e.test_cli import System, cli, cli_env, redis_as

pytestmark = pytest.mark.e2e

SALE = {"manufacturer": "acme", "sku": "TV-55", "location": "store-12", "terminal_id": "till-1"}


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    ports = {"redis": free_port(), **{s: free_port() for s in INSTALLED}}
    system = System(cli_env(tmp_path_factory.mktemp("first-hour") / "data", ports))
    system.ports = ports
    system.start()
    yield system
    system.stop()


def wait_for(check, message: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {message}")


def lookup_json(env, serial: str) -> dict | None:
    result = cli(env, "lookup", "acme", serial, "--json", check=False)
    return json.loads(result.stdout) if result.stdout.strip() else None


def stream_length(running, event_type: str) -> int:
    return redis_as(running.env, "operator-reader").xlen(f"serialtrack:{event_type}")


def test_rerunning_a_corrected_file_reports_the_lines_already_published(running, tmp_path):
    env = running.env
    lines = [{"type": "unit.received", "data": {"manufacturer": "acme", "serial": f"RERUN-{n}", "sku": "TV-55",
                                                "location": "dc"}} for n in range(1, 5)]
    bad = {"type": "unit.received", "data": {"manufacturer": "acme", "serial": "RERUN 5", "sku": "TV-55",
                                             "location": "dc"}}
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(line) for line in [*lines, bad]) + "\n")
    before = stream_length(running, "unit.received")
    first = cli(env, "publish", "--file", str(events), check=False)
    assert first.returncode == 1 and "4 published, 0 already published, 1 rejected" in first.stdout

    bad["data"]["serial"] = "RERUN-5"  # the user corrects the bad line and runs the file again
    events.write_text("\n".join(json.dumps(line) for line in [*lines, bad]) + "\n")
    second = cli(env, "publish", "--file", str(events), "--json")
    report = json.loads(second.stdout)
    assert (report["published"], report["already_published"], report["rejected"]) == (1, 4, 0)
    assert [line["status"] for line in report["lines"]] == ["already_published"] * 4 + ["published"]
    assert stream_length(running, "unit.received") == before + 5  # one entry per line, not nine

    unit = wait_for(lambda: (lookup_json(env, "RERUN-1") or {}).get("inventory"), "RERUN-1 in inventory")
    time.sleep(1)  # a second receipt, had one been published, would have been applied by now
    unit = lookup_json(env, "RERUN-1")["inventory"]
    assert [h["type"] for h in unit["history"]] == ["unit.received"] and unit["anomalies"] == []

    text = cli(env, "publish", "--file", str(events)).stdout
    assert "0 published, 5 already published" in text and "not published again" in text


def test_the_same_line_twice_in_a_file_is_one_event(running, tmp_path):
    line = json.dumps({"type": "unit.received", "data": {"manufacturer": "acme", "serial": "TWICE-1",
                                                         "sku": "TV-55", "location": "dc"}})
    events = tmp_path / "twice.jsonl"
    events.write_text(f"{line}\n{line}\n")
    report = json.loads(cli(running.env, "publish", "--file", str(events), "--json").stdout)
    assert [(r["status"], r["error"]) for r in report["lines"]] == [("published", None),
                                                                    ("duplicate", "repeats line 1")]


def test_theft_import_takes_semicolons_and_dates_and_reports_a_second_import(running, tmp_path):
    env = running.env
    feed = tmp_path / "feed.csv"  # as a spreadsheet in many locales saves it
    feed.write_text("agency;case_number;manufacturer;serial;reported_at\n"
                    "metro-pd;C-SEMI-1;acme;SEMI-1;2026-11-01\n"
                    "metro-pd;C-SEMI-2;acme;SEMI-2;2026-11-02T08:00:00Z\n"
                    "metro-pd;C-SEMI-3;acme;SEMI-3;01/11/2026\n", encoding="utf-8")
    unsigned = json.loads(cli(env, "theft", "import", str(feed), "--json", check=False).stdout)
    assert unsigned["published"] == 0 and "theft.reported must be signed" in unsigned["lines"][0]["error"]
    cli(env, "keys", "create", "metro-pd", "--role", "law-enforcement", "--agency", "metro-pd")
    first = cli(env, "theft", "import", str(feed), "--sign-with", "metro-pd", "--json", check=False)
    assert first.returncode == 1
    report = json.loads(first.stdout)
    assert (report["format"], report["published"], report["rejected"]) == ("csv", 2, 1)
    assert "reported_at '01/11/2026'" in report["lines"][2]["error"]

    client = redis_as(running.env, "operator-reader")
    published = {json.loads(fields[b"event"])["data"]["serial"]: json.loads(fields[b"event"])
                 for _, fields in client.xrange("serialtrack:theft.reported")}
    assert published["SEMI-1"]["data"]["reported_at"] == "2026-11-01T00:00:00Z"  # a date: midnight UTC
    assert published["SEMI-1"]["time"] == "2026-11-01T00:00:00Z"

    assert published["SEMI-1"]["signature"]["kid"].startswith("metro-pd-")
    again = json.loads(cli(env, "theft", "import", str(feed), "--sign-with", "metro-pd", "--json", check=False).stdout)
    assert (again["published"], again["already_published"]) == (0, 2)


def test_lookup_of_an_unknown_unit_says_so_and_fails(running):
    result = cli(running.env, "lookup", "acme", "NOBODY-KNOWS-1", check=False)
    assert result.returncode == 1
    assert f"acme/NOBODY-KNOWS-1 is not known to {', '.join(INSTALLED)}" in result.stderr
    assert cli(running.env, "lookup", "acme", "NOBODY-KNOWS-1", "--json", check=False).returncode == 1


def test_the_demo_hint_is_a_command_that_works_and_lookup_is_not_cut_to_80_columns(running):
    venv_bin = str(Path(sys.executable).parent)
    # A shell that has not activated the virtual environment: `serialtrack` alone is not found.
    env = {**running.env, "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                                  if p != venv_bin)}
    demo = subprocess.run([sys.executable, "-m", "serialtrack.cli", "demo"], env=env, capture_output=True,
                          text=True, timeout=120, check=True, cwd=Path(__file__).resolve().parents[2])
    [hint] = [line.removeprefix("try: ") for line in demo.stdout.splitlines() if line.startswith("try: ")]
    assert "activate" in demo.stdout  # how to type just `serialtrack` next time
    shown = subprocess.run(shlex.split(hint), check=False, env=env, capture_output=True, text=True, timeout=60,
                           cwd=Path(__file__).resolve().parents[2])
    assert shown.returncode == 0, shown.stderr
    serial = hint.split()[-1]
    assert f"acme/{serial}" in shown.stdout and "REPORTED STOLEN" in shown.stdout
    # Not a terminal: nothing is cut to 80 columns (rich would end cut cells with an ellipsis).
    assert "…" not in shown.stdout
    assert re.search(r"metro-pd:2026-[0-9A-F]{4}", shown.stdout)
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ?", shown.stdout)


def test_lookup_separates_withdrawn_anomalies_and_explains_a_revised_decision(running):
    env, serial = running.env, "LATE-1"
    day = "2026-01-0{}T10:00:00Z"  # past days: event times may not be ahead of the clock
    # Arrival order differs from time order: the claim and the sale come before the receipt.
    cli(env, "publish", "warranty.claim.submitted", "--time", day.format(6), "--data", json.dumps(
        {"claim_id": "CL-LATE-1", "manufacturer": "acme", "serial": serial, "customer_id": "C-1",
         "issue": "no sound"}))
    wait_for(lambda: ((lookup_json(env, serial) or {}).get("warranty") or {}).get("requests"), "first decision")
    cli(env, "publish", "unit.sold", "--time", day.format(2), "--data", json.dumps(
        {**SALE, "serial": serial, "receipt_id": "R-LATE-1", "customer_id": "C-1"}))
    wait_for(lambda: (lookup_json(env, serial).get("inventory") or {}).get("anomalies"), "the sale's anomaly")
    cli(env, "publish", "unit.received", "--time", day.format(1), "--data", json.dumps(
        {"manufacturer": "acme", "serial": serial, "sku": "TV-55", "location": "store-12"}))

    def settled():
        report = lookup_json(env, serial)
        anomalies = report["inventory"]["anomalies"]
        revised = report["warranty"]["requests"][0]["version"] > 1
        return report if revised and anomalies and all(a["status"] == "withdrawn" for a in anomalies) else None

    report = wait_for(settled, "withdrawn anomaly and revised decision")
    text = cli(env, "lookup", "acme", serial).stdout
    assert "anomalies (open)" not in text
    withdrawn = text.index("anomalies withdrawn")
    assert report["inventory"]["anomalies"][0]["kind"] in text[withdrawn:]
    assert f"(revised: decision {report['warranty']['requests'][0]['version']})" in text
    assert "revised: a fact that arrived after the first decision" in text


def test_deadletters_covers_every_service_groups_an_entry_and_refuses_unknown_names(running):
    env = running.env
    redis_as(env, "pos").xadd("serialtrack:unit.sold", {"event": "{broken"})

    def grouped():
        letters = json.loads(cli(env, "deadletters", "--json").stdout)
        broken = [e for e in letters["entries"] if e["original"] and "{broken" in e["original"]]
        return letters if broken and len(broken[0]["refused_by"]) >= 2 else None

    letters = wait_for(grouped, "the entry dead-lettered by the services reading unit.sold")
    assert letters["services"] == list(INSTALLED)
    [broken] = [e for e in letters["entries"] if "{broken" in e["original"]]
    readers = {r["service"] for r in broken["refused_by"]}
    assert {"inventory", "warranty"} <= readers and {r["reason"] for r in broken["refused_by"]} == {"not_json"}
    text = cli(env, "deadletters").stdout
    assert text.count("{broken") == 1 and f"refused by {', '.join(s for s in INSTALLED if s in readers)}" in text

    typo = cli(env, "deadletters", "--service", "invntory", check=False)
    assert typo.returncode == 2
    assert f"unknown service 'invntory'; one of: {', '.join(INSTALLED)}" in typo.stderr


def test_event_types_are_discoverable_and_misspellings_get_a_suggestion(running):
    env = running.env
    listing = cli(env, "types").stdout
    assert "unit.sold" in listing and "required: manufacturer, serial, sku, location, terminal_id, receipt_id" in listing
    assert "theft.alert" not in listing  # only the theft service publishes it
    example = cli(env, "types", "unit.sold").stdout
    command = example.split("example:", 1)[1].strip()
    assert shlex.split(command)[:2] == ["serialtrack", "publish"]

    typo = cli(env, "publish", "unit.sol", "--data", "{}", check=False)
    assert typo.returncode == 2 and "did you mean unit.sold?" in typo.stderr
    service_only = cli(env, "publish", "theft.alert", "--data", "{}", check=False)
    assert service_only.returncode == 2 and "published only by the theft service" in service_only.stderr
    both = cli(env, "publish", "unit.received", "--data", json.dumps(
        {"manufacturer": "acme", "serial": "A1", "serials": ["A2"], "sku": "TV-55", "location": "dc"}), check=False)
    assert both.returncode == 2 and "give exactly one of serial, serials or serial_range" in both.stderr
    assert "Value error" not in both.stderr


def test_api_docs_are_served_without_a_cdn(running):
    base = f"http://127.0.0.1:{running.ports['inventory']}"
    page = httpx.get(f"{base}/docs", timeout=10)
    assert page.status_code == 200 and "cdn" not in page.text.lower()
    assets = re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))["']""", page.text)
    assert assets and all(asset.startswith("/") for asset in assets)
    for asset in assets:
        assert httpx.get(base + asset, timeout=10).status_code == 200, asset


def test_help_lists_every_command_with_a_whole_sentence(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}  # wide: every description fits on its row
    help_text = subprocess.run([sys.executable, "-m", "serialtrack.cli", "--help"], env=env, capture_output=True,
                               text=True, timeout=60, check=True).stdout
    rows = [line.strip("│ ").strip() for line in help_text.splitlines() if re.match(r"^│ [a-z]+ ", line)]
    assert len(rows) >= 8
    for row in rows:
        name, description = row.split(None, 1)
        assert description.endswith("."), f"{name}: {description!r} stops mid-sentence"


def test_expected_failures_are_one_line_without_a_traceback(tmp_path):
    env = cli_env(tmp_path / "data", {"redis": free_port(), **{s: free_port() for s in INSTALLED}})
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("agency,case,manufacturer,serial\nmetro-pd,C-1,acme,SN-1\n")
    attempts = [
        ("publish", "unit.received", "--data", json.dumps({"manufacturer": "acme", "serial": "A1", "sku": "s",
                                                           "location": "dc"})),
        ("publish", "--file", str(tmp_path / "missing.jsonl")),
        ("theft", "import", str(tmp_path / "missing.csv")),
        ("theft", "import", str(bad_header)),
        ("deadletters",),
        ("serve", "invntory"),
        ("lookup", "acme", "bad serial"),
        ("publish", "unit.sold", "--data", "{not json"),
    ]
    for args in attempts:
        result = cli(env, *args, check=False)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert result.stderr.startswith("error: "), (args, result.stderr)

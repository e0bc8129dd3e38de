"""`serialtrack status` sees a stuck consumer within seconds: every service runs as its own process,
one is stopped, events are published, and status (a real subprocess) reports its growing lag and
exits 1; once the service is started again it catches up and status exits 0."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import pytest
import redis

from services.registry import INSTALLED
from tests.conftest import make_settings
from tests.support import factories as f
from tests.support.running import inbox_count, publish_events, settings_env, start_service_process, wait_healthy

pytestmark = pytest.mark.e2e


def status(settings, *args: str) -> tuple[int, Any]:
    done = subprocess.run([sys.executable, "-m", "serialtrack.cli", "status", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode in (0, 1), f"status failed: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.returncode, json.loads(done.stdout) if "--json" in args else done.stdout


def group(report: dict, stream: str, name: str) -> dict:
    [found] = [s for s in report["streams"] if s["stream"] == stream]
    [row] = [g for g in found["groups"] if g["group"] == name]
    return row


def wait_status(settings, healthy: bool, timeout: float = 40.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, report = status(settings, "--json")
        if report["healthy"] == healthy and code == (0 if healthy else 1):
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"status not {'healthy' if healthy else 'unhealthy'}: {report['problems']}")
        time.sleep(0.5)


def test_a_stopped_service_shows_its_growing_lag_and_status_fails_until_it_is_back(redis_handle, tmp_path):
    settings = make_settings(redis_handle.url, {}, tmp_path)  # each service its own SQLite file
    received = settings.streams.for_type("unit.received")
    processes = {name: start_service_process(name, settings, tmp_path / f"{name}.log") for name in INSTALLED}
    try:
        for name, process in processes.items():
            wait_healthy(settings, name, process)
        report = wait_status(settings, healthy=True)
        assert {s["status"] for s in report["services"].values()} == {"ok"}
        assert report["redis"]["reachable"] and report["redis"]["used_memory_bytes"] > 0

        processes["inventory"].terminate()
        processes["inventory"].wait(60)
        asyncio.run(publish_events(settings, [f.received("acme", f.serial(), minutes=0) for _ in range(5)]))
        code, report = status(settings, "--json")
        assert code == 1 and not report["healthy"]
        assert report["services"]["inventory"]["status"] == "down"
        assert any(p.startswith("inventory is down") for p in report["problems"])
        stuck = group(report, received, "inventory")
        assert (stuck["group_exists"], stuck["lag"], stuck["lag_exact"]) == (True, 5, True)

        asyncio.run(publish_events(settings, [f.received("acme", f.serial(), minutes=1) for _ in range(3)]))
        time.sleep(1.2)
        code, report = status(settings, "--json", "--max-lag-seconds", "1")
        assert code == 1
        grown = group(report, received, "inventory")
        assert grown["lag"] == 8 and grown["lag_seconds"] > 1
        assert any(p.startswith(f"group inventory on {received} is") for p in report["problems"])
        # The running services kept up: only the stopped one is behind.
        assert all(group(report, received, name)["lag"] == 0 for name in INSTALLED if name != "inventory")

        code, text = status(settings)  # the screen a person reads
        assert code == 1 and "UNHEALTHY" in text and "inventory is down" in text

        processes["inventory"] = start_service_process("inventory", settings, tmp_path / "inventory-2.log")
        wait_healthy(settings, "inventory", processes["inventory"])
        report = wait_status(settings, healthy=True)
        back = group(report, received, "inventory")
        assert (back["lag"], back["pending"], report["problems"]) == (0, 0, [])
        assert inbox_count(settings, "inventory") == 8
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            process.wait(60)


def test_watch_prints_one_whole_document_per_refresh_until_ctrl_c(sqlite_settings):
    import signal

    process = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "status", "--watch", "--json",
                                "--interval", "0.3"], env=settings_env(sqlite_settings), stdout=subprocess.PIPE,
                               text=True)
    try:
        first = process.stdout.readline()  # the first document is out: the loop is running
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    documents = [json.loads(line) for line in [first, *rest.splitlines()]]  # none cut off by Ctrl-C
    assert documents and all(not d["healthy"] for d in documents)  # no service runs in this test
    assert process.returncode == 1


def test_a_stream_no_service_reads_is_shown_with_its_length(sqlite_settings):
    """Issue 12: an entry XADDed to a stream nobody reads (a typo) disappeared without a trace."""
    settings = sqlite_settings
    client = redis.Redis.from_url(settings.redis_url)
    typo = f"{settings.streams.prefix}:foo.bar"
    for n in range(2):
        client.xadd(typo, {"event": f'{{"n": {n}}}'})
    client.close()
    _, report = status(settings, "--json")  # no service runs: unhealthy, but the streams are read
    assert {"stream": typo, "length": 2, "known_type": False} in report["unread_streams"]
    assert any(w.startswith(f"{typo} holds 2 entries no service reads") for w in report["warnings"])
    _, text = status(settings)
    assert "streams no service reads" in text and "foo.bar" in text

"""Tokens against a service running as its own OS process (`serialtrack serve`), as in production:
secure by default without a registry, a token created by the CLI works at once, a revoked one
stops working within seconds, and neither tokens nor customer ids reach the service's log."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx

from tests.support import factories as f
from tests.support.running import publish_events, start_service_process, wait_healthy

CUSTOMER = "C-LOGGED-NEVER-4711"


def tokens_cli(settings, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serialtrack.cli", "tokens", *args,
                           "--data-dir", str(settings.data_dir)], capture_output=True, text=True, timeout=60, check=False)


def test_a_revoked_token_stops_working_within_seconds_and_logs_keep_no_secrets(sqlite_settings, tmp_path):
    settings = sqlite_settings
    log_path = tmp_path / "inventory.log"
    process = start_service_process("inventory", settings, log_path)
    sn = f.serial()
    try:
        wait_healthy(settings, "inventory", process)
        url = settings.service_url("inventory")
        # No registry file: everything but the open endpoints is refused.
        assert httpx.get(f"{url}/units", timeout=5).status_code == 401
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200

        created = tokens_cli(settings, "create", "--role", "customer-service", "--name", "desk-1", "--json")
        assert created.returncode == 0, created.stderr
        token = json.loads(created.stdout)["token"]
        headers = {"Authorization": f"Bearer {token}"}
        # A token created a moment ago works at once (an unknown token id makes the service look).
        assert httpx.get(f"{url}/units", headers=headers, timeout=5).status_code == 200

        asyncio.run(publish_events(settings, [f.received("acme", sn, minutes=0),
                                              f.sold("acme", sn, minutes=5, customer_id=CUSTOMER)]))
        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/units/acme/{sn}", headers=headers, timeout=5).json().get("status") != "sold":
            assert time.monotonic() < deadline, "sale not applied"
            time.sleep(0.1)
        unit = httpx.get(f"{url}/units/acme/{sn}", headers=headers, timeout=5).json()
        assert CUSTOMER in json.dumps(unit)  # customer service sees it: the log must not

        revoked = tokens_cli(settings, "revoke", "desk-1")
        assert revoked.returncode == 0 and revoked.stdout.startswith("revoked desk-1 at "), revoked.stderr
        started = time.monotonic()
        while httpx.get(f"{url}/units", headers=headers, timeout=5).status_code != 401:
            assert time.monotonic() - started < 5, "a revoked token still worked after 5 s"
            time.sleep(0.05)
        refused_after = time.monotonic() - started
        assert refused_after < 5
        # A bearer header of garbage, and a query that names a customer: nothing of either is logged.
        httpx.get(f"{url}/units", headers={"Authorization": f"Bearer {token}x"}, timeout=5)
        httpx.get(f"{url}/units", params={"location": CUSTOMER}, headers=headers, timeout=5)
    finally:
        process.terminate()
        process.wait(30)
    log = log_path.read_text()
    assert f"no token registry at {settings.tokens_dir / 'registry.json'}" in log  # where it looked
    assert "token registry reloaded" in log
    assert token not in log and token.split("_")[-1] not in log
    assert CUSTOMER not in log

"""Upgrading a data dir of release 0.1.0 as an operator would: `serialtrack migrate --check`, a
service that refuses to start behind when told not to migrate, `serialtrack migrate`, then
`serialtrack up` on the upgraded data and a lookup of a unit the old release knew."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from serialtrack.redis_server import free_port
from services.registry import INSTALLED
from tests.e2e.test_cli import System, cli, cli_env

pytestmark = pytest.mark.e2e

RELEASE = Path(__file__).parents[1] / "fixtures" / "release-0.1.0"


@pytest.fixture
def old_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for service in INSTALLED:
        shutil.copy(RELEASE / "sqlite" / f"{service}.db", data_dir / f"{service}.db")
    return data_dir


def test_a_0_1_0_data_dir_is_checked_migrated_and_served(old_data_dir):
    env = cli_env(old_data_dir, {"redis": free_port(), **{s: free_port() for s in INSTALLED}})

    check = cli(env, "migrate", "--check", check=False)
    assert check.returncode == 1
    assert "inventory: at release 0.1.0; behind" in check.stdout

    refused = subprocess.run([sys.executable, "-m", "serialtrack.cli", "serve", "theft"], check=False,
                             env={**env, "SERIALTRACK_MIGRATE": "false", "REDIS_URL": "redis://127.0.0.1:1/0"},
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "run `serialtrack migrate theft`" in refused.stdout + refused.stderr

    bad = cli(env, "migrate", "inventory", "--to", "inventory_9999", check=False)
    assert bad.returncode != 0 and "unknown revision 'inventory_9999'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1  # one line, no traceback

    done = json.loads(cli(env, "migrate", "--json").stdout)
    assert [(r["service"], r["legacy_0_1_0"], r["changed"]) for r in done["services"]] == [
        (service, True, True) for service in INSTALLED]
    assert cli(env, "migrate", "--check").returncode == 0
    again = cli(env, "migrate").stdout
    assert all(f"{service}: already at" in again for service in INSTALLED)

    system = System(env)
    system.start()
    try:
        unit = json.loads(cli(env, "lookup", "zeta", "LT-REL1-0102", "--json").stdout)
        assert unit["inventory"]["status"] == "in_stock" and unit["inventory"]["stolen"] is True
        assert unit["theft"]["open_cases"] == ["metro-pd:2026-REL1-L"]
    finally:
        system.stop()

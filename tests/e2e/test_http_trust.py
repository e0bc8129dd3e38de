"""What a user of the CLI sees of trust at the HTTP edge: `serialtrack up` keeps its data dir private
and its admin token where the CLI finds it, prints no password, and `serialtrack tokens` manages
tokens with one-line errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import httpx
import pytest

from serialtrack.redis_server import find_redis_server, free_port
from services.registry import INSTALLED
from tests.e2e.test_cli import System, cli, cli_env

pytestmark = pytest.mark.e2e


def _modes(directory) -> dict[str, int]:
    modes = {}
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            modes[os.path.relpath(path, directory)] = stat.S_IMODE(os.lstat(path).st_mode)
    return modes


def test_up_makes_the_data_dir_private_and_the_cli_uses_its_admin_token(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    old = data / "notes.txt"  # left by an older version, readable by everyone
    old.write_text("x")
    os.chmod(old, 0o644)
    ports = {"redis": free_port(), **{s: free_port() for s in INSTALLED}}
    env = cli_env(data, ports)
    system = System(env)
    system.start()
    try:
        cli(env, "publish", "unit.received", "--data", json.dumps(
            {"manufacturer": "acme", "serial": "PRIV-1", "sku": "TV", "location": "store-1"}))
        deadline = time.monotonic() + 30
        while cli(env, "lookup", "acme", "PRIV-1", "--json", check=False).returncode != 0:
            assert time.monotonic() < deadline, "lookup never found the unit"
            time.sleep(0.3)
        # The services answer nobody else: the CLI sent the data dir's admin token.
        url = f"http://127.0.0.1:{ports['inventory']}/units/acme/PRIV-1"
        assert httpx.get(url, timeout=5).status_code == 401
        token = (data / "credentials" / "admin.token").read_text().strip()
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200
        modes = _modes(data)  # while running: SQLite files, WAL, Redis AOF, tokens
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        assert {"inventory.db", "credentials/admin.token", "tokens/registry.json", "run/redis.url"} <= set(modes)
        assert any(path.startswith("redis/") for path in modes)
        loose = {path: oct(mode) for path, mode in modes.items() if mode & 0o077}
        assert loose == {}, loose
        assert token not in system.output
    finally:
        system.stop()
    # Restarted: the same token still works (it is reused, not replaced).
    system.start()
    try:
        assert (data / "credentials" / "admin.token").read_text().strip() == token
        assert cli(env, "lookup", "acme", "PRIV-1", "--json").returncode == 0
    finally:
        system.stop()


def test_up_prints_no_redis_password(tmp_path):
    port = free_port()
    redis = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--requirepass", "pw-not-for-eyes"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ports = {"redis": free_port(), **{s: free_port() for s in INSTALLED}}
        env = {**cli_env(tmp_path / "data", ports), "REDIS_URL": f"redis://:pw-not-for-eyes@127.0.0.1:{port}/0"}
        system = System(env)
        system.start()
        system.stop()
        assert "pw-not-for-eyes" not in system.output
        assert f"redis://:***@127.0.0.1:{port}/0" in system.output
    finally:
        redis.terminate()
        redis.wait(10)


def test_tokens_cli_creates_lists_and_revokes_with_one_line_errors(tmp_path):
    env = {**os.environ, "SERIALTRACK_DATA_DIR": str(tmp_path / "data")}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "serialtrack.cli", "tokens", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    text = run("create", "--role", "store", "--name", "till-12")
    assert text.returncode == 0, text.stderr
    token = next(line.split()[-1] for line in text.stdout.splitlines() if line.startswith("token:"))
    assert token.startswith("st_") and "shown once" in text.stderr
    made = json.loads(run("create", "--role", "manufacturer", "--manufacturer", "ACME", "--expires", "30",
                          "--json").stdout)
    assert made["role"] == "manufacturer" and made["manufacturer"] == "acme" and made["expires"]
    assert made["state"] == "active" and made["token"].startswith("st_")

    registry = tmp_path / "data" / "tokens" / "registry.json"
    stored = registry.read_text()
    assert token not in stored and made["token"] not in stored  # hashes only
    assert stat.S_IMODE(registry.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data" / "tokens" / "pseudonym.key").stat().st_mode) == 0o600

    listed = json.loads(run("list", "--json").stdout)["tokens"]
    assert {(t["name"], t["role"], t["state"]) for t in listed} == {
        ("till-12", "store", "active"), (made["name"], "manufacturer", "active")}
    assert all("token" not in t and "sha256" not in t for t in listed)
    table = run("list").stdout
    assert table.splitlines()[0].split() == ["NAME", "ROLE", "MANUFACTURER", "STATE", "CREATED", "EXPIRES"]

    revoked = run("revoke", "till-12")
    assert revoked.returncode == 0 and revoked.stdout.startswith("revoked till-12 at ")
    assert {t["name"]: t["state"] for t in json.loads(run("list", "--json").stdout)["tokens"]}["till-12"] == "revoked"

    for args, code, message in [
        (("create", "--role", "janitor"), 2, "unknown role 'janitor'"),
        (("create", "--role", "manufacturer"), 2, "give --manufacturer"),
        (("create", "--role", "store", "--manufacturer", "acme"), 2, "--manufacturer is for manufacturer tokens"),
        (("create", "--role", "store", "--name", "till-12"), 1, "a token named 'till-12' exists"),
        (("create", "--role", "store", "--name", "bad name!"), 2, "token name 'bad name!' is not valid"),
        (("create", "--role", "store", "--expires", "0"), 2, "--expires"),
        (("revoke", "nobody"), 1, "no token named 'nobody'"),
    ]:
        result = run(*args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, result.stderr)
        assert "Traceback" not in result.stderr

    registry.write_text("{not json")
    broken = run("list")
    assert broken.returncode == 1 and broken.stderr.count("\n") == 1 and "not JSON" in broken.stderr

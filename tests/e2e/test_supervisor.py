"""`serialtrack up` heals (issue 12, fault 5), with real processes: the embedded Redis killed under it
comes back with its data, a service that keeps dying is backed off with its last error, a second
`up` on the data dir is refused, a SIGKILLed `up` takes its children along and a new one starts
cleanly, and what an earlier one left running is stopped. And the CLI's failures are one line each
(fault 6). One running system serves the module's tests in order (each start costs seconds)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from serialtrack.redis_server import RedisServerProcess, free_port
from serialtrack.runner import CHILDREN_FILE, stop_leftovers
from services.registry import INSTALLED
from tests.e2e.test_cli import System, cli, cli_env, redis_as

# Generous: each test starts or kills real systems, and the host may be busy (a stall, not a hang).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

BACKOFF_CAP_S = 4  # SERIALTRACK_RESTART_BACKOFF_MAX_S here: the crash loop reaches it in a few deaths


def receipt(serial: str) -> str:
    return json.dumps({"manufacturer": "acme", "serial": serial, "sku": "TV-55", "location": "dc"})


class WatchedSystem(System):
    """`serialtrack up` whose output is read as it comes (a test waits for a line; a pipe nobody reads
    would stall the supervisor once full)."""

    ports: dict[str, int]
    lines: list[str]

    def start(self, timeout: float = 90) -> None:
        super().start(timeout)
        self.lines = self.output.splitlines()
        self.reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stdout) -> None:
        for line in stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, needle: str, timeout: float = 120, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines[start:] if needle in line]
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no line with {needle!r} in `serialtrack up`'s output:\n" + "\n".join(
            line for line in self.lines if " INFO " not in line)[-4000:])

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(60)
        self.reader.join(10)
        self.output = "\n".join(self.lines)
        return code

    @property
    def children(self) -> dict[str, int]:
        recorded = json.loads((Path(self.env["SERIALTRACK_DATA_DIR"]) / CHILDREN_FILE).read_text())
        return {name: child["pid"] for name, child in recorded["children"].items()}


def new_system(data_dir: Path) -> WatchedSystem:
    ports = {"redis": free_port(), **{s: free_port() for s in INSTALLED}}
    env = cli_env(data_dir, ports)
    env["SERIALTRACK_RESTART_BACKOFF_MAX_S"] = str(BACKOFF_CAP_S)
    system = WatchedSystem(env)
    system.ports = ports
    return system


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    running = new_system(tmp_path_factory.mktemp("supervisor") / "data")
    running.start()
    yield running
    if running.process.poll() is None:
        running.stop()


def health(system, service: str) -> dict | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{system.ports[service]}/healthz", timeout=2)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def wait_all_healthy(system, timeout: float = 120) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reports = {s: health(system, s) for s in INSTALLED}
        if all(r and r["status"] == "ok" for r in reports.values()):
            return reports  # type: ignore[return-value]
        time.sleep(0.3)
    raise AssertionError(f"not every service healthy: {reports}")


def wait_in_stock(system, serial: str, timeout: float = 120) -> None:
    """Until inventory holds the unit as in stock: asked over HTTP (a `lookup` process per poll would
    cost a second each on a busy host)."""
    token = (Path(system.env["SERIALTRACK_DATA_DIR"]) / "credentials" / "admin.token").read_text().strip()
    url = f"http://127.0.0.1:{system.ports['inventory']}/units/acme/{serial}"
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
            if last.status_code == 200 and last.json()["status"] == "in_stock":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{serial} not in stock in inventory: {last and last.text}")


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")  # a zombie holds nothing


def test_a_second_up_on_the_data_dir_is_refused_and_the_first_keeps_everything(system):
    before = system.children
    url_file = Path(system.env["SERIALTRACK_DATA_DIR"]) / "run" / "redis.url"
    recorded = url_file.read_text()
    second = cli(system.env, "up", check=False)
    assert f"another `serialtrack up` (pid {system.process.pid}) is running" in one_line(second)
    assert second.returncode == 1
    assert url_file.read_text() == recorded and system.children == before
    cli(system.env, "publish", "unit.received", "--data", receipt("SECOND-UP-1"))
    wait_in_stock(system, "SECOND-UP-1")
    assert {s: r["pid"] for s, r in wait_all_healthy(system).items()} == {s: before[s] for s in INSTALLED}


def test_the_embedded_redis_killed_comes_back_with_its_data_and_the_services_heal(system):
    env = system.env
    cli(env, "publish", "unit.received", "--data", receipt("REDIS-KILL-1"))
    wait_in_stock(system, "REDIS-KILL-1")
    reports = wait_all_healthy(system)
    memory = reports["inventory"]["redis_memory"]  # bounded, loudly (issue 12, fault 4)
    assert memory["policy"] == "noeviction" and 0 < memory["used_bytes"] < memory["maxmemory_bytes"]
    status = json.loads(cli(env, "status", "--json", check=False).stdout)["redis"]
    assert status["maxmemory_policy"] == "noeviction" and status["maxmemory_bytes"] == memory["maxmemory_bytes"]
    old_redis, mark = system.children["redis"], len(system.lines)

    os.kill(old_redis, signal.SIGKILL)
    failures = []
    deadline = time.monotonic() + 120
    while True:  # the CLI during the gap: one line each time, then published once Redis is back
        result = cli(env, "publish", "unit.received", "--data", receipt("REDIS-KILL-2"), check=False)
        if result.returncode == 0:
            break
        failures.append(one_line(result))
        assert time.monotonic() < deadline, failures
    assert all("Redis" in failure for failure in failures), failures

    assert "redis was killed by SIGKILL; restarting in" in system.wait_line("redis was killed", start=mark)
    system.wait_line("redis restarted", start=mark)
    assert system.children["redis"] != old_redis
    wait_in_stock(system, "REDIS-KILL-2")  # applied after the restart
    wait_in_stock(system, "REDIS-KILL-1")  # the AOF kept the rest
    assert redis_as(env, "operator-reader").xlen("serialtrack:unit.received") >= 2
    wait_all_healthy(system)  # every service reconnected by itself, none was restarted
    assert not [line for line in system.lines[mark:] if "restarted" in line and not line.startswith("redis")]


def test_a_service_that_keeps_dying_is_backed_off_with_its_last_error(system):
    pid, mark = system.children["inventory"], len(system.lines)
    port = system.ports["inventory"]
    with socket.socket() as squatter:  # the port taken, as by an orphan of an earlier run
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                squatter.bind(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        squatter.listen()
        capped = system.wait_line(f"restarting in {BACKOFF_CAP_S} s", timeout=180, start=mark)
        assert capped.startswith("inventory exited with code ") and "times in a row" in capped
        assert "address already in use" in capped  # its last error, from its stderr
        deaths = [line for line in system.lines[mark:] if line.startswith("inventory ") and "restarting in" in line]
        delays = [int(line.split("restarting in ")[1].split(" s")[0]) for line in deaths]
        assert delays == sorted(delays) and len(deaths) <= 5, deaths  # backed off: not 20 restarts in 25 s
    # The port free again: the next restart stays up.
    deadline = time.monotonic() + 120
    while not ((report := health(system, "inventory")) and report["pid"] != pid and report["status"] == "ok"):
        assert time.monotonic() < deadline, "inventory did not come back"
        time.sleep(0.3)
    assert {s: (health(system, s) or {}).get("pid") for s in INSTALLED if s != "inventory"} == {
        s: system.children[s] for s in INSTALLED if s != "inventory"}


def test_cli_failures_are_one_line_and_debug_shows_the_traceback(system, tmp_path):
    env = system.env
    refused_token = cli({**env, "SERIALTRACK_TOKEN": "st_not-a-token"}, "lookup", "acme", "SN1", check=False)
    assert "refused" in one_line(refused_token)
    assert "No such option: --colour" in one_line(cli(env, "publish", "--colour", check=False))
    assert "no such file" in one_line(cli(env, "publish", "--file", str(tmp_path / "nope.jsonl"), check=False))
    wrong_password = cli(env, "publish", "unit.received", "--data", receipt("X-1"), "--credential",
                         str(_write(tmp_path / "bad.url", f"redis://operator:wrong@127.0.0.1:{system.ports['redis']}/0")),
                         check=False)
    assert "refused the credential" in one_line(wrong_password)
    not_a_dir = _write(tmp_path / "a-file", "")
    assert "Not a directory" in one_line(cli(env, "up", "--data-dir", str(not_a_dir), check=False))
    debug = cli(env, "--debug", "up", "--data-dir", str(not_a_dir), check=False)
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert system.stop() == 0  # the last test on this system


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_killed_up_takes_its_children_along_and_a_new_one_starts_cleanly(tmp_path):
    first = new_system(tmp_path / "data")
    first.start()
    children = first.children
    first.process.kill()  # SIGKILL: no chance to stop anything itself
    first.process.wait()
    deadline = time.monotonic() + 120
    while [pid for pid in children.values() if alive(pid)]:
        assert time.monotonic() < deadline, {n: p for n, p in children.items() if alive(p)}
        time.sleep(0.2)

    # Redis is gone with it: the CLI says so in one line (issue 12, fault 6).
    down = cli(first.env, "publish", "unit.received", "--data", receipt("ORPHAN-1"), check=False)
    assert "cannot reach Redis" in one_line(down) and down.returncode == 2

    second = WatchedSystem(first.env)
    second.ports = first.ports
    second.start()
    try:
        cli(second.env, "publish", "unit.received", "--data", receipt("ORPHAN-1"))
        wait_in_stock(second, "ORPHAN-1")
        assert not [line for line in second.lines if "restarting in" in line]  # no crash loop on held ports
    finally:
        assert second.stop() == 0


def test_leftovers_of_a_killed_up_are_stopped_at_the_next_start_and_nothing_else(tmp_path):
    """What `up` does first (serialtrack/runner.py): a recorded child still running is stopped when its
    command line shows it is ours; a recorded pid now used by another program is left alone."""
    data_dir = tmp_path / "data"
    leftover = RedisServerProcess(data_dir / "redis").start()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (data_dir / "run").mkdir(parents=True)
        (data_dir / CHILDREN_FILE).write_text(json.dumps({"supervisor": 1, "children": {
            "redis": {"pid": leftover.process.pid, "markers": ["redis-server", f":{leftover.port}"]},
            "inventory": {"pid": stranger.pid, "markers": ["serialtrack.cli", "serve", "inventory", str(data_dir)]},
        }}))
        said: list[str] = []
        assert stop_leftovers(data_dir, said.append) == ["redis"]
        assert leftover.process.wait(5) == 0  # SIGTERM: Redis wrote its AOF and exited
        assert stranger.poll() is None
        assert said == [f"redis: stopping pid {leftover.process.pid}, left running by an earlier "
                        + "`serialtrack up` on this data dir"]
        assert not (data_dir / CHILDREN_FILE).exists()
    finally:
        stranger.kill()
        stranger.wait()
        leftover.kill()

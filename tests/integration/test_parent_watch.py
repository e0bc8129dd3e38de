"""A service started by `serialtrack up` stops when its supervisor is gone, without the Linux
parent-death signal too (issue 12: orphans held the ports): the check that works elsewhere
(shared/parent_watch.py), shown with a real `serialtrack serve` whose parent exits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from shared.parent_watch import SUPERVISOR_PID_ENV
from tests.support.running import settings_env, wait_healthy

# A stand-in supervisor: starts the service telling it its own pid (no parent-death signal), then
# waits for a line on stdin and exits, leaving the service an orphan.
PARENT = f"""
import os, subprocess, sys
env = dict(os.environ, {SUPERVISOR_PID_ENV}=str(os.getpid()))
child = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "serve", "inventory"], env=env,
                         stdout=subprocess.DEVNULL, stderr=open(sys.argv[1], "ab"))
print(child.pid, flush=True)
sys.stdin.readline()
"""


def running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_service_whose_supervisor_is_gone_stops_itself(sqlite_settings, tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "inventory.log")],
                              env=settings_env(sqlite_settings), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdin is not None
    service = int(parent.stdout.readline())
    try:
        wait_healthy(sqlite_settings, "inventory", service, timeout=60)
        time.sleep(1.5)  # it keeps running while its parent lives
        assert running(service)
        parent.stdin.close()  # the supervisor exits
        parent.wait(10)
        deadline = time.monotonic() + 30
        while running(service):
            assert time.monotonic() < deadline, "the orphaned service did not stop"
            time.sleep(0.1)
        assert "the supervisor (pid" in (tmp_path / "inventory.log").read_text()  # it said why
    finally:
        if running(service):
            subprocess.run(["kill", "-9", str(service)], check=False)

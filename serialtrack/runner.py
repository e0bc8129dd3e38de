"""`serialtrack up`: the whole system on one machine, nothing pre-installed, and a supervisor that heals.

- **One per data dir.** A lock (``flock`` on ``run/up.lock``, holding the pid) refuses a second `up` on
  the same data dir, naming the running one's pid; the refused one touches nothing of the first.
- **Leftovers.** The pids of what it starts are recorded in ``run/children.json``. A supervisor that
  was SIGKILLed cannot stop its children; the next `up` on the data dir finds those still alive whose
  command line shows they are ours (a pid may have been reused by now) and stops them first.
- **Children die with it.** On Linux each child gets a parent-death signal (SIGTERM); every service
  also watches its parent's pid and stops when it is gone (shared/parent_watch.py).
- **Restarts with backoff.** An embedded Redis or a service that dies is started again, on the same
  port and data: after 1 s, doubling with each death in a row up to SERIALTRACK_RESTART_BACKOFF_MAX_S
  (a child that ran ``STABLE_AFTER_S`` counts afresh), each time reported with its last error (a
  service's last stderr line, Redis's last log line). Meanwhile the others keep running: services
  retry Redis by themselves, and the CLI fails with one line until Redis is back.
- **The archiver** (`serialtrack archive`: archive, then trim, what every service acked;
  shared/retention.py) runs as one more supervised child, with its own Redis user.
- **Stop** on Ctrl-C / SIGTERM: services first, Redis last.

A ``Supervised`` child is anything started by a function returning a Popen; ``System.supervise_command``
adds one more program (a service-like process) in three lines.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from services.registry import INSTALLED
from shared import acl
from shared.parent_watch import SUPERVISOR_PID_ENV, die_with_parent
from shared.redact import mask_url
from shared.settings import CREDENTIALS_DIR, REDIS_URL_FILE, Settings
from shared.tokens import admin_token_path, ensure_admin_token

from .console.process import announce as announce_console
from .console.process import console_args, console_port
from .console.process import forget as forget_console
from .credentials import EmbeddedUsers, prepare_embedded
from .private import make_private
from .redis_server import RedisServerProcess, free_port, maxmemory_bytes, port_is_free

LOCK_FILE = "run/up.lock"
CHILDREN_FILE = "run/children.json"
FIRST_RESTART_DELAY_S = 1.0
ARCHIVER = acl.ARCHIVER  # a child that is not a service: no HTTP port, its own Redis user
CONSOLE = "console"  # the web console: a client of the services' HTTP APIs (serialtrack/console/)
STABLE_AFTER_S = 30.0  # a child that ran this long before it died starts its backoff afresh
LAST_LINES = 200  # of a child's stderr, per run: its error and the shutdown that followed
LEFTOVER_STOP_TIMEOUT_S = 15.0
_ERROR = re.compile(r"error|exception|refused|denied|failed|cannot|no such", re.IGNORECASE)
_LOGGED_ERROR = re.compile(r" (ERROR|CRITICAL) |\"level\": ?\"(ERROR|CRITICAL)\"")  # text or JSON log lines (shared/logs.py)


class AlreadyRunning(RuntimeError):
    pass


class DataDirLock:
    """One `serialtrack up` per data dir: an exclusive ``flock`` held as long as the process lives (the
    kernel drops it when the process dies, however it dies), and the holder's pid in the file."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = self.path.open("a+")  # not "w": that would empty the running one's pid first
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "?"
            lock_file.close()
            raise AlreadyRunning(f"another `serialtrack up` (pid {holder}) is running on the data dir "
                                 f"{self.data_dir.resolve()}; stop it first (Ctrl-C in its terminal, or "
                                 f"kill {holder})") from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._file = lock_file

    def release(self) -> None:
        if self._file is not None:  # the file stays: removing it would let two processes lock two files
            self._file.close()
            self._file = None


def command_line(pid: int) -> str | None:
    """The command line of a live process, None when there is none (or it is a zombie)."""
    proc = Path("/proc")
    if proc.is_dir():
        try:
            text = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            return None
        return text.strip() or None
    result = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return result.stdout.strip() or None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's: not ours
        return True
    return command_line(pid) is not None  # a zombie waits for its parent, it holds nothing


def stop_leftovers(data_dir: Path, say: Callable[[str], None]) -> list[str]:
    """Stop the children an earlier `serialtrack up` on this data dir left running (it was SIGKILLed):
    those in ``run/children.json`` whose command line still holds every recorded marker. Services
    first, Redis last. Returns the names of those stopped."""
    path = data_dir / CHILDREN_FILE
    try:
        recorded = json.loads(path.read_text())["children"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    ours = []
    for name, child in sorted(recorded.items(), key=lambda item: item[0] == "redis"):
        try:
            pid, markers = int(child["pid"]), [str(m) for m in child["markers"]]
        except (KeyError, TypeError, ValueError):
            continue
        line = command_line(pid)
        if pid != os.getpid() and line is not None and all(marker in line for marker in markers):
            ours.append((name, pid))
    stopped = []
    for name, pid in ours:
        say(f"{name}: stopping pid {pid}, left running by an earlier `serialtrack up` on this data dir")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + LEFTOVER_STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped.append(name)
    path.unlink(missing_ok=True)
    return stopped


@dataclass
class Supervised:
    """A child `serialtrack up` keeps running: started by ``launch`` (which returns its process, or
    raises RuntimeError/OSError when it could not start), restarted with a growing delay while it keeps
    dying. ``markers``: strings its command line holds, by which a later `up` recognises it as a
    leftover. ``last_error``: why it stopped, for a child that does not write to a pipe we read."""

    name: str
    launch: Callable[[], subprocess.Popen]
    markers: list[str]
    last_error: Callable[[], str] | None = None
    process: subprocess.Popen | None = None
    restarts: int = 0
    deaths_in_a_row: int = 0
    started_at: float = 0.0
    restart_at: float | None = None  # when dead: the time to start it again
    last_lines: deque[str] = field(default_factory=lambda: deque(maxlen=LAST_LINES))
    _partial: bytes = b""

    def error_line(self) -> str:
        """Why its last run ended, from what it wrote: the first line logged at ERROR (what follows is
        often the shutdown it caused), else the last line that reads like an error (a traceback ends
        with one), else its last line."""
        if self.last_error is not None:
            return self.last_error()
        lines = [line.strip() for line in self.last_lines if line.strip() and not line[:1].isspace()]
        logged = [line for line in lines if _LOGGED_ERROR.search(line)]
        if logged:
            return logged[0]
        return next((line for line in reversed(lines) if _ERROR.search(line)), lines[-1] if lines else "")


class System:
    def __init__(self, settings: Settings, say: Callable[[str], None] = print):
        self.settings = settings
        self.say = say
        self.redis: RedisServerProcess | None = None
        self.users: EmbeddedUsers | None = None
        self.children: list[Supervised] = []
        self._stopping = False
        self._output = selectors.DefaultSelector()
        self._parent_death = die_with_parent()
        self._redis_url = ""

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    def _env(self, service: str) -> dict[str, str]:
        env = dict(os.environ)
        if self.users is not None and service == ARCHIVER:
            env["REDIS_URL"] = self.users.url(ARCHIVER)
        elif self.users is not None and service == CONSOLE:
            pass  # its System page reads Redis as the operator-reader, from the data dir's credentials
        elif self.users is not None:  # embedded: the service's own two users (shared/acl.py)
            env["REDIS_URL"] = self.users.url(acl.reader(service))
            env["REDIS_WRITER_URL"] = self.users.url(acl.writer(service))
        else:
            env["REDIS_URL"] = self._redis_url
        env["SERIALTRACK_DATA_DIR"] = str(self.data_dir)
        env["SERIALTRACK_STREAM_PREFIX"] = self.settings.stream_prefix
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        return env

    def start(self, timeout: float = 60.0) -> None:
        data_dir = self.settings.data_dir
        make_private(data_dir)  # 0700, files 0600: for us, the services and the embedded Redis
        stop_leftovers(self.data_dir, self.say)
        url_file = data_dir / REDIS_URL_FILE
        if self.settings.redis_url:
            redis_url = self.settings.redis_url
            self.say(f"redis      {mask_url(redis_url)} (REDIS_URL)")
        else:
            redis_url = self._start_embedded_redis()
            url_file.parent.mkdir(parents=True, exist_ok=True)
            # The address only: whoever reads it still needs a credential (credentials/<user>.url).
            url_file.write_text(redis_url + "\n")
        self._redis_url = redis_url
        # The services refuse requests without a token: the CLI on this machine (lookup, demo)
        # sends this one, so a new user types nothing extra.
        ensure_admin_token(data_dir, self.settings.tokens_dir)
        self.say(f"api token  {admin_token_path(data_dir).resolve()} (admin; the CLI sends it, "
                 "`serialtrack tokens create` makes others)")
        services = [self._service(name) for name in INSTALLED]
        deadline = time.monotonic() + timeout
        for name, child in zip(INSTALLED, services, strict=True):
            url = self.settings.service_url(name)
            self._wait_healthy(child, url, deadline)
            self.say(f"{name:<10} {url}  (API docs: {url}/docs)")
        port = console_port(self.settings)
        console = self.supervise_command(CONSOLE, console_args(self.settings, port), self._env(CONSOLE))
        announce_console(self.settings, port, self.say, running=lambda: console.process is not None)
        self.supervise_command(ARCHIVER, ["archive", "--quiet", "--data-dir", str(self.data_dir)], self._env(ARCHIVER))
        self.say(f"{ARCHIVER:<10} every {self.settings.archive_interval_seconds:g}s: archives to "
                 f"{self.settings.archive_dir.resolve()}, then trims, what every service acked and is older than "
                 f"{self.settings.retention_seconds:g}s")
        self.say(f"data       {data_dir.resolve()}")

    def _start_embedded_redis(self) -> str:
        data_dir = self.settings.data_dir
        port = self.settings.embedded_redis_port
        if not port_is_free(port):
            port = free_port()
        # One Redis user per service (reader and writer), per producer role, the operator and an
        # admin, each with its own random password; the default user is off.
        self.users = prepare_embedded(data_dir, self.settings.streams, port)
        try:
            limit = maxmemory_bytes(self.settings.redis_maxmemory)
        except ValueError as exc:
            raise RuntimeError(f"SERIALTRACK_REDIS_MAXMEMORY: {exc}") from None
        redis = self.redis = RedisServerProcess(
            data_dir / "redis", port, aclfile=self.users.acl_file, probe_url=self.users.url(acl.OPERATOR_READER),
            maxmemory=limit, preexec_fn=self._parent_death)

        def start_redis() -> subprocess.Popen:
            process = redis.start().process
            assert process is not None  # start() returns once it answers, else raises
            return process

        # Restarted on the same port and AOF: the recorded address and every credential stay valid.
        child = Supervised("redis", start_redis, ["redis-server", f":{port}"], last_error=redis.last_log_line)
        self.children.append(child)
        self._start(child)
        if child.process is None:
            raise RuntimeError(f"the embedded Redis did not start: {child.error_line()}")
        self.say(f"redis      {mask_url(redis.url)} (embedded, AOF in {redis.directory.resolve()}, maxmemory "
                 f"{limit / 2**30:.1f} GiB noeviction; users in {self.users.acl_file.resolve()}, credentials in "
                 f"{(data_dir / CREDENTIALS_DIR).resolve()})")
        return redis.url

    def _service(self, name: str) -> Supervised:
        # --data-dir on the command line: how a later `up` knows a leftover process is ours.
        return self.supervise_command(name, ["serve", name, "--data-dir", str(self.data_dir)], self._env(name))

    def supervise_command(self, name: str, cli_args: list[str], env: dict[str, str]) -> Supervised:
        """Start ``serialtrack CLI_ARGS`` as a supervised child (its stderr passed through, its last lines
        kept), and keep it running."""
        argv = [sys.executable, "-m", "serialtrack.cli", *cli_args]

        def launch() -> subprocess.Popen:
            process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE,
                                       start_new_session=True,  # we forward signals ourselves, in order
                                       preexec_fn=self._parent_death)  # noqa: PLW1509 - no threads here
            assert process.stderr is not None
            os.set_blocking(process.stderr.fileno(), False)
            self._output.register(process.stderr, selectors.EVENT_READ, child)
            return process

        child = Supervised(name, launch, ["serialtrack.cli", *cli_args])
        self.children.append(child)
        self._start(child)
        return child

    def _start(self, child: Supervised) -> None:
        child.restart_at = None
        child.last_lines.clear()  # the last error of this run, not of an earlier one
        child.started_at = time.monotonic()
        try:
            child.process = child.launch()
        except (RuntimeError, OSError) as exc:
            child.last_lines.append(str(exc))
            self._schedule_restart(child, "could not start")
            return
        self._record_children()

    def _record_children(self) -> None:
        """What a later `up` stops if this one is SIGKILLed and its children outlive it."""
        children = {c.name: {"pid": c.process.pid, "markers": c.markers} for c in self.children if c.process}
        path = self.settings.data_dir / CHILDREN_FILE
        path.write_text(json.dumps({"supervisor": os.getpid(), "children": children}, indent=1) + "\n")

    def _schedule_restart(self, child: Supervised, what: str, show_error: bool = True) -> None:
        now = time.monotonic()
        ran = now - child.started_at
        child.deaths_in_a_row = 1 if ran >= STABLE_AFTER_S else child.deaths_in_a_row + 1
        delay = min(FIRST_RESTART_DELAY_S * 2 ** (child.deaths_in_a_row - 1), self.settings.restart_backoff_max_s)
        child.process = None
        child.restart_at = now + delay
        in_a_row = f" ({child.deaths_in_a_row} times in a row)" if child.deaths_in_a_row > 1 else ""
        error = child.error_line() if show_error else ""
        self.say(f"{child.name} {what}{in_a_row}; restarting in {delay:.0f} s"
                 + (f"; last error: {error}" if error else ""))

    def _drain(self, child: Supervised) -> None:
        """Read what a dead child wrote last, and stop watching its pipe."""
        assert child.process is not None
        if child.process.stderr is not None and not child.process.stderr.closed:
            self._read_output(child, child.process.stderr, until_end=True)
            self._close_output(child.process.stderr)

    def _close_output(self, stream) -> None:
        if not stream.closed:
            self._output.unregister(stream)
            stream.close()

    def _died(self, child: Supervised) -> None:
        assert child.process is not None
        code = child.process.returncode
        self._drain(child)
        if code < 0:  # killed (by the OOM killer, by hand): what it wrote last says nothing about why
            self._schedule_restart(child, f"was killed by {signal.Signals(-code).name}", show_error=False)
        else:
            self._schedule_restart(child, f"exited with code {code}")

    def _pump(self, timeout: float) -> None:
        """Pass the children's stderr through to ours, line by line, keeping each one's last lines;
        or just wait ``timeout`` when nothing is written."""
        if not self._output.get_map():
            time.sleep(timeout)
            return
        for key, _events in self._output.select(timeout):
            self._read_output(key.data, key.fileobj, until_end=False)

    def _read_output(self, child: Supervised, stream, until_end: bool) -> None:
        while True:
            try:
                chunk = os.read(stream.fileno(), 65536)
            except BlockingIOError:
                return
            if not chunk:  # the end: it exited (its exit code is read by the supervise loop)
                if child._partial:
                    self._emit(child, child._partial)
                    child._partial = b""
                self._close_output(stream)
                return
            *lines, child._partial = (child._partial + chunk).split(b"\n")
            for line in lines:
                self._emit(child, line)
            if not until_end:
                return

    def _emit(self, child: Supervised, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        child.last_lines.append(text)
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def _wait_healthy(self, child: Supervised, url: str, deadline: float) -> None:
        """Until the child itself answers healthy: another process on its port (the pid differs) does not count."""
        while time.monotonic() < deadline:
            if child.process is None or child.process.poll() is not None:
                how = "could not start"
                if child.process is not None:
                    self._drain(child)
                    how = f"exited with code {child.process.returncode} at start"
                raise RuntimeError(f"{child.name} {how}: {child.error_line() or 'no error shown'}")
            try:
                response = httpx.get(f"{url}/healthz", timeout=1)
                if response.status_code == 200 and response.json().get("pid") == child.process.pid:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            self._pump(0.2)
        raise RuntimeError(f"{child.name} did not become healthy at {url}")

    def supervise(self) -> None:
        """Until asked to stop: restart what died, once its backoff has passed."""
        while not self._stopping:
            self._pump(0.2)
            for child in self.children:
                if self._stopping:
                    break
                if child.process is not None and child.process.poll() is not None:
                    self._died(child)
                if child.process is None and child.restart_at is not None and time.monotonic() >= child.restart_at:
                    child.restarts += 1
                    self._start(child)
                    if child.process is not None:
                        self.say(f"{child.name} restarted (pid {child.process.pid}, restart #{child.restarts})")

    def request_stop(self, *_args) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        forget_console(self.settings)
        services = [c for c in self.children if c.name != "redis" and c.process is not None]
        for child in services:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and any(c.process and c.process.poll() is None for c in services):
            self._pump(0.1)  # their last words pass through: a full pipe would hold them up
        for child in services:
            if child.process:
                if child.process.poll() is None:
                    child.process.kill()
                    child.process.wait()
                self._drain(child)
        if self.redis:
            self.redis.stop()
            (self.settings.data_dir / REDIS_URL_FILE).unlink(missing_ok=True)
        (self.settings.data_dir / CHILDREN_FILE).unlink(missing_ok=True)
        self.say("stopped")


def run_system(settings: Settings, say: Callable[[str], None] = print) -> None:
    lock = DataDirLock(settings.data_dir)
    lock.acquire()  # refused: nothing of the running one is touched (its run/redis.url, its children)
    try:
        system = System(settings, say)
        signal.signal(signal.SIGTERM, system.request_stop)
        signal.signal(signal.SIGINT, system.request_stop)
        try:
            system.start()
            say("serialtrack is up; Ctrl-C stops it")
            system.supervise()
        finally:
            system.stop()
    finally:
        lock.release()

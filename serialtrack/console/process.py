"""The console as a child of `serialtrack up`: serialtrack/runner.py starts it with
``System.supervise_command`` (restarts with backoff, parent death, leftovers, like every child),
then calls ``announce`` once the services are healthy and ``forget`` when it stops. The console is a
convenience: if it does not answer, the system runs on without it and says so."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from shared.settings import Settings

from ..redis_server import free_port, port_is_free
from .signin import CODE_LIFETIME_S, CONSOLE_URL_FILE, issue_code


def console_port(settings: Settings) -> int:
    """The configured port, or a free one if another program (or system) has it, like the embedded Redis."""
    return settings.console_port if port_is_free(settings.console_port) else free_port()


def console_args(settings: Settings, port: int) -> list[str]:
    """`serialtrack` arguments that run the console (--data-dir: how a later `up` knows a leftover is ours)."""
    return ["console", "--port", str(port), "--data-dir", str(settings.data_dir.resolve())]


def announce(settings: Settings, port: int, say: Callable[[str], None], running: Callable[[], bool],
             timeout: float = 60.0) -> bool:
    """Once it answers: record its address and print it with a one-time sign-in link."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while running() and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                recorded = settings.data_dir / CONSOLE_URL_FILE
                recorded.parent.mkdir(parents=True, exist_ok=True)
                recorded.write_text(url + "\n")
                code = issue_code(settings.data_dir)
                say(f"console    {url}  (sign in as admin, once, within {CODE_LIFETIME_S // 60} "
                    f"minutes: {url}/signin?code={code})")
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    say(f"console    did not answer at {url}; the services run without it (see its output above)")
    return False


def forget(settings: Settings) -> None:
    """The console stopped: `serialtrack console --link` must not point at it any more."""
    (settings.data_dir / CONSOLE_URL_FILE).unlink(missing_ok=True)

"""Children of `serialtrack up` die with it, even when it is SIGKILLed (issue 12: orphans held the ports).

Two mechanisms, because one alone is not enough:

- Linux: the kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG)``), set in the child between
  fork and exec (``die_with_parent``, a ``preexec_fn``). It reaches any program, Redis too, at the
  moment the supervisor dies.
- Everywhere: a service started by the supervisor is told its pid (``SUPERVISOR_PID_ENV``) and
  watches it (``watch_parent``): when its parent is no longer that pid (it was re-parented to init),
  it stops itself cleanly. On macOS this is the only mechanism; the next `serialtrack up` stops what
  is left anyway (serialtrack/runner.py: leftovers).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable

log = logging.getLogger("serialtrack.parent_watch")

SUPERVISOR_PID_ENV = "SERIALTRACK_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_CHECK_S = 1.0


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when the process that spawns it dies
    (Linux), None elsewhere. libc is loaded here, before the fork: the child only makes the call.
    The spawning process must not run threads of its own (``preexec_fn`` after a fork in a threaded
    process can deadlock): the supervisor does not."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: the signal will never come
            os._exit(1)

    return set_parent_death_signal


def supervisor_pid() -> int | None:
    """The pid of the `serialtrack up` that started this process, if one did."""
    value = os.environ.get(SUPERVISOR_PID_ENV, "")
    return int(value) if value.isdigit() else None


async def watch_parent(expected: int, on_orphaned: Callable[[], None], interval: float = PARENT_CHECK_S) -> None:
    """Until cancelled: once the parent is no longer ``expected`` (it died: the process was re-parented),
    call ``on_orphaned`` once and return."""
    while os.getppid() == expected:
        await asyncio.sleep(interval)
    log.warning("the supervisor (pid %d) is gone: stopping", expected)
    on_orphaned()


def stop_this_process() -> None:
    """What a server does when its supervisor is gone: SIGTERM to itself, the clean shutdown path
    (uvicorn stops accepting, the consumer finishes its batch, the relay stops)."""
    os.kill(os.getpid(), signal.SIGTERM)

"""A registry file that services re-read when it changes, without a restart: the signing keys
(shared/keys.py) and the API tokens (shared/tokens.py). Standard library only.

``current()`` on every batch or request costs a clock read, and a ``stat`` at most every
``interval`` seconds; the file is read again only when the stat differs (new inode, mtime, ctime or
size). ``fresh()`` looks at once: for an id the loaded registry does not know, which may have been
registered a moment ago.

At start, a file that cannot be read raises the loader's error: a service must not run with a
registry it cannot read. Later, a broken file (a hand edit gone wrong) is logged and the last good
registry kept, so revocations already loaded stay in force, and the next valid file is picked up as
usual; ``error`` holds the message while the file on disk is broken.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

Registry = TypeVar("Registry")

DEFAULT_POLL_SECONDS = 2.0


def file_identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    # A rename gives a new inode; mtime, ctime and size catch an editor that rewrites in place.
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


class WatchedFile(Generic[Registry]):
    def __init__(self, path: Path, load: Callable[[Path], Registry], broken: type[Exception], *, what: str,
                 describe: Callable[[Registry], str], log: logging.Logger,
                 interval: float = DEFAULT_POLL_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.interval = interval
        self._load, self._broken, self._what, self._describe, self._log = load, broken, what, describe, log
        self._clock = clock
        self._identity = file_identity(self.path)
        self._registry = load(self.path)
        self._checked_at = clock()
        self.error: str | None = None

    def current(self) -> Registry:
        now = self._clock()
        if now - self._checked_at >= self.interval:
            self._checked_at = now
            self._reload_if_changed()
        return self._registry

    def fresh(self) -> Registry:
        self._checked_at = self._clock()
        self._reload_if_changed()
        return self._registry

    def _reload_if_changed(self) -> None:
        identity = file_identity(self.path)
        if identity == self._identity:
            return
        try:
            registry = self._load(self.path)
        except self._broken as exc:
            if self.error != str(exc):
                self._log.error("%s not reloaded, keeping %s loaded before: %s", self._what,
                                self._describe(self._registry), exc)
            self.error = str(exc)
            self._identity = identity  # the same broken file is not read again until it changes
            return
        self._identity, self._registry, self.error = identity, registry, None
        self._log.info("%s reloaded: %s", self._what, self._describe(registry))

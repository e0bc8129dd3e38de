"""Signing in to the web console.

Two ways in, both ending in a session (an HttpOnly, SameSite=Strict cookie holding a random
session id; the token stays in the console's memory, never in the browser):

- a token, pasted into the sign-in form: whoever holds a token of the services' registry
  (`serialtrack tokens create`), in the role of that token;
- the one-time link `serialtrack up` prints (``/signin?code=...``): a random code, valid for
  ``CODE_LIFETIME_S`` and for one use, whose SHA-256 is kept in ``<data dir>/run/console-signin.json``
  (0600). Redeeming it signs in with the data dir's admin token (the one the CLI sends), so a new
  user opens the link and is in without setup. The token itself never appears in a URL, a log or
  a browser. `serialtrack console --link` prints a new link.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from shared.tokens import private_dir, write_private_file

SIGNIN_FILE = "run/console-signin.json"
CONSOLE_URL_FILE = "run/console.url"  # where `serialtrack up` runs the console: `serialtrack console --link` reads it
CODE_LIFETIME_S = 15 * 60
SESSION_LIFETIME_S = 12 * 3600
COOKIE = "serialtrack_session"


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def issue_code(data_dir: Path, clock=time.time) -> str:
    """A new one-time code (the previous one, if unused, stops working)."""
    code = secrets.token_urlsafe(24)
    path = Path(data_dir) / SIGNIN_FILE
    private_dir(path.parent)
    write_private_file(path, json.dumps({"sha256": _digest(code), "expires": clock() + CODE_LIFETIME_S}).encode())
    return code


def redeem_code(data_dir: Path, code: str, clock=time.time) -> bool:
    """True once for the current code while it is valid. The file is renamed away before it is
    trusted, so two browsers racing with one code cannot both get in."""
    path = Path(data_dir) / SIGNIN_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not (isinstance(record, dict) and hmac.compare_digest(str(record.get("sha256", "")), _digest(code))):
        return False  # a wrong code leaves the right one usable
    claimed = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return False  # redeemed a moment ago
    try:
        record = json.loads(claimed.read_text())  # the file we took, not a newer one written meanwhile
    finally:
        claimed.unlink(missing_ok=True)
    return hmac.compare_digest(str(record.get("sha256", "")), _digest(code)) and clock() < float(record["expires"])


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    name: str
    role: str
    manufacturer: str | None
    expires: float


class Sessions:
    """Sessions in memory: a console restart signs everyone out (they sign in again)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._by_id: dict[str, Session] = {}

    def open(self, token: str, name: str, role: str, manufacturer: str | None) -> str:
        now = self._clock()
        self._by_id = {k: s for k, s in self._by_id.items() if s.expires > now}  # forget expired ones
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = Session(token, name, role, manufacturer, now + SESSION_LIFETIME_S)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is None or session.expires <= self._clock():
            return None
        return session

    def close(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)

"""HTTP API tokens: who may call the services' read APIs, in which role.

One JSON file, ``<tokens dir>/registry.json`` (the tokens dir is ``<data_dir>/tokens`` unless
SERIALTRACK_TOKENS_DIR names another, e.g. a mounted secret)::

    {
      "version": 1,
      "tokens": [
        {
          "token_id": "3f9c0a1b2c3d4e5f",        # public: the part of a token that finds its record
          "name": "counter-store-12",              # unique for ever, revoked tokens included
          "role": "store",                         # ROLES below; what each may call: shared/auth.py
          "manufacturer": null,                    # manufacturer tokens only: the one it may see
          "sha256": "<hex of SHA-256 of the whole token>",
          "created": "2026-11-26T10:00:00Z",
          "expires": null,                         # or the time it stops working
          "revoked": null                          # or the time it was revoked
        }
      ]
    }

A token is ``st_<token_id>_<secret>``: 16 hex characters, then 32 random bytes in base64url. Only
its SHA-256 is stored: a plain hash is enough for a secret of 256 random bits (nobody can guess
it, so a slow password hash would only cost every request), and the digests are compared in
constant time. The token itself is printed once, by ``serialtrack tokens create``.

Writers hold an exclusive lock on ``registry.lock`` while they read, change and atomically
replace the file (temp file + rename, mode 0600); services read it through ``TokenWatcher``, which
notices a replaced file within its interval (2 s): a revoked token stops working within seconds.

Standard library only: the CLI imports this without FastAPI.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .watched_file import DEFAULT_POLL_SECONDS, WatchedFile

log = logging.getLogger("serialtrack.tokens")

ADMIN = "admin"
MANUFACTURER = "manufacturer"
# What each may call is in shared/auth.py; the README has the table.
ROLES: tuple[str, ...] = (ADMIN, "customer-service", "store", "investigator", MANUFACTURER, "auditor")

REGISTRY_VERSION = 1
TOKENS_DIR = "tokens"
REGISTRY_FILE = "registry.json"
PSEUDONYM_KEY_FILE = "pseudonym.key"
CREDENTIALS_DIR = "credentials"
ADMIN_TOKEN_FILE = "admin.token"
LOCAL_ADMIN = "local-admin"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_TOKEN_RE = re.compile(r"^st_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_MANUFACTURER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class TokensError(Exception):
    """Base of this module's errors; the message is one line for the CLI."""


class TokenRegistryError(TokensError):
    """The registry file cannot be read or is not valid."""


class TokenConflict(TokensError):
    """A change the registry refuses: a name taken, an unknown name."""


class InvalidTokenInput(TokensError):
    """A role, name, manufacturer or expiry given by a user that is not valid."""


def tokens_dir(data_dir: Path, override: Path | None = None) -> Path:
    return Path(override) if override else Path(data_dir) / TOKENS_DIR


def registry_path(directory: Path) -> Path:
    return Path(directory) / REGISTRY_FILE


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _utc(text: str | None, where: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise TokenRegistryError(f"{where}: not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise TokenRegistryError(f"{where}: time without a timezone: {text!r}")
    return value.astimezone(UTC)


def _text(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    name: str
    role: str
    sha256: str
    created: datetime
    manufacturer: str | None = None
    expires: datetime | None = None
    revoked: datetime | None = None

    def state(self, now: datetime) -> str:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "name": self.name, "role": self.role, "manufacturer": self.manufacturer,
                "sha256": self.sha256, "created": _text(self.created), "expires": _text(self.expires),
                "revoked": _text(self.revoked)}

    def describe(self, now: datetime | None = None) -> dict[str, Any]:
        """What `tokens list` shows: everything but the digest."""
        out = {k: v for k, v in self.to_json().items() if k != "sha256"}
        return {**out, "state": self.state(now or datetime.now(UTC))}

    @classmethod
    def from_json(cls, raw: Any, where: str) -> TokenRecord:
        if not isinstance(raw, dict):
            raise TokenRegistryError(f"{where}: not an object")
        try:
            token_id, name, role, sha = raw["token_id"], raw["name"], raw["role"], raw["sha256"]
        except KeyError as exc:
            raise TokenRegistryError(f"{where}: missing {exc.args[0]!r}") from None
        if not isinstance(token_id, str) or not re.fullmatch(r"[0-9a-f]{16}", token_id):
            raise TokenRegistryError(f"{where}: token_id must be 16 hex characters")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise TokenRegistryError(f"{where}: invalid name {name!r}")
        if role not in ROLES:
            raise TokenRegistryError(f"{where}: unknown role {role!r}; roles: {', '.join(ROLES)}")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise TokenRegistryError(f"{where}: sha256 must be 64 hex characters")
        manufacturer = raw.get("manufacturer")
        if (role == MANUFACTURER) != (manufacturer is not None):
            raise TokenRegistryError(f"{where}: a manufacturer token, and only one, names its manufacturer")
        created = _utc(raw.get("created"), f"{where}.created")
        if created is None:
            raise TokenRegistryError(f"{where}: missing 'created'")
        return cls(token_id=token_id, name=name, role=role, sha256=sha, created=created, manufacturer=manufacturer,
                   expires=_utc(raw.get("expires"), f"{where}.expires"),
                   revoked=_utc(raw.get("revoked"), f"{where}.revoked"))


class TokenRegistry:
    def __init__(self, records: list[TokenRecord] | None = None):
        self._by_id = {r.token_id: r for r in records or ()}
        self._by_name = {r.name: r for r in records or ()}

    def records(self) -> list[TokenRecord]:
        return list(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def by_name(self, name: str) -> TokenRecord | None:
        return self._by_name.get(name)

    def has_id(self, token_id: str) -> bool:
        return token_id in self._by_id

    def verify(self, token: str, now: datetime | None = None) -> TokenRecord | None:
        """The record of an active token, else None (malformed, unknown, wrong secret, expired, revoked)."""
        match = _TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
        if match is None:
            return None
        record = self._by_id.get(match.group(1))
        if record is None or not hmac.compare_digest(digest(token), record.sha256):
            return None
        return record if record.state(now or datetime.now(UTC)) == "active" else None

    def to_json(self) -> dict[str, Any]:
        return {"version": REGISTRY_VERSION, "tokens": [r.to_json() for r in self._by_id.values()]}


def parse_registry(text: str, where: str) -> TokenRegistry:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise TokenRegistryError(f"{where}: not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("version") != REGISTRY_VERSION or not isinstance(raw.get("tokens"), list):
        raise TokenRegistryError(f"{where}: expected {{\"version\": {REGISTRY_VERSION}, \"tokens\": [...]}}")
    records = [TokenRecord.from_json(r, f"{where}: tokens[{i}]") for i, r in enumerate(raw["tokens"])]
    ids, names = [r.token_id for r in records], [r.name for r in records]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise TokenRegistryError(f"{where}: a token_id or name appears twice")
    return TokenRegistry(records)


def load_registry(path: Path) -> TokenRegistry:
    """The registry at ``path``; an empty one when there is no file (no token works then)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return TokenRegistry()
    except OSError as exc:
        raise TokenRegistryError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_registry(text, str(path))


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (created if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private_file(path: Path, content: bytes) -> None:
    """Atomically replace ``path`` with ``content``, mode 0600 from the first byte on."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked_registry(directory: Path) -> Iterator[tuple[TokenRegistry, list[TokenRegistry]]]:
    """The registry under an exclusive lock; a registry appended to the list is written on exit."""
    private_dir(directory)
    lock_path = directory / "registry.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        registry = load_registry(registry_path(directory))
        changed: list[TokenRegistry] = []
        yield registry, changed
        if changed:
            text = json.dumps(changed[-1].to_json(), indent=2) + "\n"
            write_private_file(registry_path(directory), text.encode("utf-8"))
    finally:
        os.close(fd)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidTokenInput(f"token name {name!r} is not valid: use 1-64 characters of A-Z, a-z, 0-9, '_', '-' "
                                "starting with a letter or digit")
    return name


def _check_manufacturer(role: str, manufacturer: str | None) -> str | None:
    if role not in ROLES:
        raise InvalidTokenInput(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if manufacturer is not None:
        from .identity import IdentityError, normalize_manufacturer

        try:
            manufacturer = normalize_manufacturer(manufacturer)
        except IdentityError as exc:
            raise InvalidTokenInput(str(exc)) from None
    if role == MANUFACTURER and manufacturer is None:
        raise InvalidTokenInput("a manufacturer token sees one manufacturer's data: give --manufacturer")
    if role != MANUFACTURER and manufacturer is not None:
        raise InvalidTokenInput(f"--manufacturer is for manufacturer tokens, not {role}")
    return manufacturer


def create_token(directory: Path, role: str, *, name: str | None = None, manufacturer: str | None = None,
                 expires_days: float | None = None, now: datetime | None = None) -> tuple[str, TokenRecord]:
    """A new token: returns it (the only time it exists in clear) and its record."""
    manufacturer = _check_manufacturer(role, manufacturer)
    if expires_days is not None and not expires_days > 0:
        raise InvalidTokenInput("--expires is a number of days greater than 0")
    token_id = secrets.token_hex(8)
    token = f"st_{token_id}_{secrets.token_urlsafe(32)}"
    created = (now or datetime.now(UTC)).replace(microsecond=0)
    name = check_name(name or f"{role}-{token_id[:8]}")
    expires = created + timedelta(days=expires_days) if expires_days is not None else None
    record = TokenRecord(token_id=token_id, name=name, role=role, sha256=digest(token), created=created,
                         manufacturer=manufacturer, expires=expires)
    with _locked_registry(Path(directory)) as (registry, changed):
        if registry.by_name(name) is not None:
            raise TokenConflict(f"a token named {name!r} exists (names are never reused, revoked tokens "
                                "included): choose another --name")
        changed.append(TokenRegistry([*registry.records(), record]))
    # The pseudonym key lives beside the registry: made here too, so that a registry made for a
    # mounted secret (compose) carries it and no service has to write it there (shared/pseudonyms.py).
    pseudonym_key(Path(directory))
    return token, record


def revoke_token(directory: Path, name: str, *, at: datetime | None = None) -> TokenRecord:
    """Revoke by name; revoking twice keeps the first time."""
    with _locked_registry(Path(directory)) as (registry, changed):
        record = registry.by_name(name)
        if record is None:
            raise TokenConflict(f"no token named {name!r} (see `serialtrack tokens list`)")
        if record.revoked is not None:
            return record
        revoked = replace(record, revoked=(at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0))
        changed.append(TokenRegistry([revoked if r.name == name else r for r in registry.records()]))
    return revoked


# --- the embedded default: an admin token the CLI finds by itself -------------------------------------

def admin_token_path(data_dir: Path) -> Path:
    return Path(data_dir) / CREDENTIALS_DIR / ADMIN_TOKEN_FILE


def ensure_admin_token(data_dir: Path, directory: Path | None = None) -> str:
    """The local admin token of a data dir: the one in ``credentials/admin.token`` if it still works,
    else a new admin token written there (0600). `serialtrack up` calls it, so the CLI on the same
    machine (lookup, demo) needs nothing typed."""
    directory = tokens_dir(data_dir, directory)
    path = admin_token_path(data_dir)
    try:
        existing = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        existing = None
    if existing and load_registry(registry_path(directory)).verify(existing) is not None:
        return existing
    registry = load_registry(registry_path(directory))
    n = 1
    while registry.by_name(name := LOCAL_ADMIN if n == 1 else f"{LOCAL_ADMIN}-{n}") is not None:
        n += 1
    token, _ = create_token(directory, ADMIN, name=name)
    private_dir(path.parent)
    write_private_file(path, (token + "\n").encode("ascii"))
    return token


def client_token(data_dir: Path, env: dict[str, str] | None = None) -> str | None:
    """The token the CLI sends: $SERIALTRACK_TOKEN, else the file $SERIALTRACK_TOKEN_FILE, else the
    data dir's local admin token, else None (the services will answer 401)."""
    env = dict(os.environ) if env is None else env
    if env.get("SERIALTRACK_TOKEN"):
        return env["SERIALTRACK_TOKEN"].strip()
    path = Path(env["SERIALTRACK_TOKEN_FILE"]) if env.get("SERIALTRACK_TOKEN_FILE") else admin_token_path(data_dir)
    try:
        return path.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def client_headers(data_dir: Path) -> dict[str, str]:
    token = client_token(data_dir)
    return {"Authorization": f"Bearer {token}"} if token else {}


# --- pseudonyms for auditors ---------------------------------------------------------------------------

def pseudonym_key(directory: Path) -> bytes:
    """The installation's secret for pseudonyms (``<tokens dir>/pseudonym.key``, 32 bytes, 0600),
    created once. Several services may start at once: the key is written to a temp file and linked
    into place, so the first one wins and the others read it."""
    path = Path(directory) / PSEUDONYM_KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        private_dir(path.parent)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".pseudonym.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temp, path)  # fails if another process linked its key first
            except FileExistsError:
                pass
        finally:
            Path(temp).unlink(missing_ok=True)
        key = path.read_bytes()
    if len(key) < 16:
        raise TokensError(f"{path}: a pseudonym key is at least 16 bytes")
    return key


# --- services: picking up changes without a restart ----------------------------------------------------

class TokenWatcher(WatchedFile[TokenRegistry]):
    """The token registry of ``path`` for a service (shared/watched_file.py): re-read within
    ``interval`` seconds of a change. No file: no token works (every request but the open ones is
    401). A broken file keeps the last good registry and its revocations."""

    def __init__(self, path: Path, interval: float = DEFAULT_POLL_SECONDS, clock=time.monotonic):
        super().__init__(path, load_registry, TokenRegistryError, what="token registry", log=log,
                         interval=interval, clock=clock, describe=lambda registry: f"{len(registry)} tokens")

    def verify(self, token: str) -> TokenRecord | None:
        """A token id the loaded registry does not know makes it look at once (a stat), so a token
        created a moment ago works at once."""
        registry = self.current()
        match = _TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
        if match is not None and not registry.has_id(match.group(1)):
            registry = self.fresh()
        return registry.verify(token)

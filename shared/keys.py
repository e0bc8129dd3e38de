"""The key registry: which public keys may sign envelopes, and what each may speak for.

One JSON file, ``<data_dir>/keys/registry.json``::

    {
      "version": 1,
      "keys": [
        {
          "kid": "metro-pd-2026-Jx3vQ0c1LkqA",    # what a signature names (see make_kid)
          "name": "metro-pd-2026",                  # unique among all keys, revoked ones too
          "role": "law-enforcement",                # shared/roles.py: the types it may sign
          "alg": "Ed25519",
          "public_key": "<32 raw bytes, base64url without padding>",
          "source_prefix": "police/metro-pd",       # or null: any source
          "agency": "metro-pd",                     # law-enforcement keys only: data.agency must equal it
          "manufacturer": null,                     # manufacturer keys only: data.manufacturer must equal it
          "created": "2026-11-26T10:00:00Z",
          "revoked": null,                          # or the time it was revoked
          "transfers_ownership": false              # owner-registry/operator keys only: see TRANSFER_ROLES
        }
      ]
    }

The types a key may sign are not stored: they follow from its role (``shared.roles``), so a change
of the role table applies to every key. Several keys may share a role, source prefix and agency or
manufacturer: that is how a producer rotates (add the new key, switch the producer, revoke the old).

``transfers_ownership`` marks a key the warranty service trusts for ownership transfers (the store's
after-sales desk, say): a ``warranty.owner.registered`` it signed replaces a unit's owner, where the
same registration signed by any other key only becomes a pending change for a person to review
(docs/warranty.md, "Owners"). A registry written before the flag existed reads as ``false``.

Writers (``create_key``, ``add_key``, ``revoke_key``) hold an exclusive lock on
``keys/registry.lock`` while they read, change and replace the file, and replace it atomically
(temp file + rename), so a reader never sees half a file. Services read it through
``RegistryWatcher``, which notices a replaced file within its interval (2 s by default).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.signing import VerifyKey

from .identity import IdentityError, normalize_manufacturer
from .roles import ROLE_DATA_FIELD, ROLE_TYPES, ROLES
from .watched_file import DEFAULT_POLL_SECONDS, WatchedFile

log = logging.getLogger("serialtrack.keys")

ALG = "Ed25519"
REGISTRY_VERSION = 1
KEYS_DIR = "keys"
REGISTRY_FILE = "registry.json"
PRIVATE_DIR = "private"

# Names become file names (private/<name>.key) and the start of a kid: keep them plain.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_KID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_SOURCE_PREFIX_RE = re.compile(r"^[\x21-\x7e]{1,256}$")  # what an envelope source may hold
_CODE_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")  # the contracts' Code, stripped

# Roles whose keys may be trusted for ownership transfers: the ones that may sign a
# warranty.owner.registered at all. A flag on any other key would be a promise nobody could use.
TRANSFER_ROLES: tuple[str, ...] = ("owner-registry", "operator")


class KeysError(Exception):
    """Base of this module's errors."""


class RegistryError(KeysError):
    """The registry file cannot be read or is not valid: the message says where."""


class KeyRegistryConflict(KeysError):
    """A change the registry refuses: a name or public key already registered, an unknown kid."""


class InvalidKeyInput(KeysError):
    """A key, role or binding given by a user that is not valid."""


def b64url_encode(raw: bytes) -> str:
    """Base64url (RFC 4648 section 5) without padding, as JOSE uses it."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")


def b64url_decode(text: object) -> bytes:
    """Strict inverse of b64url_encode: no padding, no other alphabet, no whitespace, and only the
    canonical encoding (the unused low bits of the last character are zero). ValueError otherwise."""
    if not isinstance(text, str) or not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(raw) != text:
        raise ValueError("not the canonical base64url encoding")
    return raw


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def thumbprint(public_key: bytes) -> str:
    """RFC 7638 JWK thumbprint of an Ed25519 public key (RFC 8037 OKP form), base64url."""
    # Members in lexicographic order, no whitespace: the form RFC 7638 hashes.
    jwk = '{"crv":"Ed25519","kty":"OKP","x":"' + b64url_encode(public_key) + '"}'
    return b64url_encode(hashlib.sha256(jwk.encode("ascii")).digest())


def make_kid(name: str, public_key: bytes) -> str:
    """``<name>-<first 12 characters of the key's RFC 7638 thumbprint>``: readable in logs and
    dead letters, and tied to the key itself (the same name with another key is another kid)."""
    return f"{name}-{thumbprint(public_key)[:12]}"


def _utc(text: str, where: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)  # 3.11+ reads "Z"
    except (TypeError, ValueError, AttributeError):
        raise RegistryError(f"{where}: not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise RegistryError(f"{where}: time without a timezone: {text!r}")
    return value.astimezone(UTC)


def _time_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidKeyInput(f"key name {name!r} is not valid: use 1-64 characters of A-Z, a-z, 0-9, '_', '-' "
                              "starting with a letter or digit")
    return name


def check_binding(role: str, source_prefix: str | None, agency: str | None,
                  manufacturer: str | None) -> tuple[str | None, str | None, str | None]:
    """A role's key and what it is bound to, normalized; InvalidKeyInput says what is wrong.

    A law-enforcement key must name its agency and a manufacturer key its manufacturer: a key that
    could speak for every agency would let one police feed close another's cases."""
    if role not in ROLE_TYPES:
        raise InvalidKeyInput(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if source_prefix is not None and not _SOURCE_PREFIX_RE.fullmatch(source_prefix):
        raise InvalidKeyInput(f"source prefix {source_prefix!r} is not valid: 1-256 printable ASCII characters, "
                              "no spaces (like an envelope source)")
    bound = ROLE_DATA_FIELD.get(role)
    if agency is not None:
        agency = agency.strip()
        if not _CODE_RE.fullmatch(agency):
            raise InvalidKeyInput(f"agency {agency!r} is not valid: 1-64 characters, no control characters")
    if manufacturer is not None:
        try:
            manufacturer = normalize_manufacturer(manufacturer)
        except IdentityError as exc:
            raise InvalidKeyInput(str(exc)) from None
    if bound == "agency" and agency is None:
        raise InvalidKeyInput("a law-enforcement key speaks for one agency: give --agency")
    if bound == "manufacturer" and manufacturer is None:
        raise InvalidKeyInput("a manufacturer key speaks for one manufacturer: give --manufacturer")
    if agency is not None and bound != "agency":
        raise InvalidKeyInput(f"--agency is for law-enforcement keys, not {role}")
    if manufacturer is not None and bound != "manufacturer":
        raise InvalidKeyInput(f"--manufacturer is for manufacturer keys, not {role}")
    return source_prefix, agency, manufacturer


def check_transfers_ownership(role: str, transfers_ownership: Any) -> bool:
    """The ``transfers_ownership`` flag of a key of ``role``; InvalidKeyInput when not a bool or when
    the role cannot sign owner registrations."""
    if not isinstance(transfers_ownership, bool):
        raise InvalidKeyInput(f"transfers_ownership must be true or false, not {transfers_ownership!r}")
    if transfers_ownership and role not in TRANSFER_ROLES:
        raise InvalidKeyInput(f"--transfers-ownership is for {' and '.join(TRANSFER_ROLES)} keys, not {role}")
    return transfers_ownership


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One registered public key and what it may speak for."""

    kid: str
    name: str
    role: str
    public_key: str  # raw Ed25519 public key, base64url without padding
    created: datetime
    source_prefix: str | None = None  # None: any source
    agency: str | None = None
    manufacturer: str | None = None
    revoked: datetime | None = None
    transfers_ownership: bool = False  # trusted by warranty for ownership transfers (TRANSFER_ROLES only)
    # The key object, built once: verification is on every event's path. libsodium (PyNaCl) verifies
    # in about half the time of OpenSSL through `cryptography` here (61 against 109 us of CPU), and
    # releases the GIL while it does, so a consumer verifies on one core while it applies on the
    # other (docs/benchmarks.md, "Signatures"). Keys are still made and read with `cryptography`.
    verifier: VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            raw = b64url_decode(self.public_key)
        except ValueError as exc:
            raise RegistryError(f"key {self.kid}: public_key: {exc}") from None
        if len(raw) != 32:
            raise RegistryError(f"key {self.kid}: public_key is {len(raw)} bytes; an Ed25519 public key is 32")
        object.__setattr__(self, "verifier", VerifyKey(raw))

    @property
    def types(self) -> frozenset[str]:
        """The event types this key may sign: its role's."""
        return ROLE_TYPES[self.role]

    @property
    def is_revoked(self) -> bool:
        return self.revoked is not None

    def allows_source(self, source: str) -> bool:
        """Path-segment prefix: ``pos/store-12`` allows ``pos/store-12`` and ``pos/store-12/till-3``
        but not ``pos/store-123``. A prefix that ends with ``/`` allows what follows it."""
        prefix = self.source_prefix
        if prefix is None:
            return True
        if prefix.endswith("/"):
            return source.startswith(prefix)
        return source == prefix or source.startswith(prefix + "/")

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid, "name": self.name, "role": self.role, "alg": ALG, "public_key": self.public_key,
            "source_prefix": self.source_prefix, "agency": self.agency, "manufacturer": self.manufacturer,
            "created": _time_text(self.created), "revoked": _time_text(self.revoked) if self.revoked else None,
            "transfers_ownership": self.transfers_ownership,
        }

    @classmethod
    def from_json(cls, item: Any, where: str) -> KeyRecord:
        if not isinstance(item, dict):
            raise RegistryError(f"{where}: expected an object")
        missing = sorted({"kid", "name", "role", "public_key", "created"} - item.keys())
        if missing:
            raise RegistryError(f"{where}: missing {', '.join(missing)}")
        kid = item["kid"]
        if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
            raise RegistryError(f"{where}: kid {kid!r} is not valid")
        if item.get("alg", ALG) != ALG:
            raise RegistryError(f"{where}: alg {item.get('alg')!r} is not supported; only {ALG}")
        try:
            check_name(item["name"])
            source_prefix, agency, manufacturer = check_binding(
                item["role"], item.get("source_prefix"), item.get("agency"), item.get("manufacturer"))
            transfers_ownership = check_transfers_ownership(item["role"], item.get("transfers_ownership", False))
        except InvalidKeyInput as exc:
            raise RegistryError(f"{where} ({kid}): {exc}") from None
        revoked = item.get("revoked")
        return cls(
            kid=kid, name=item["name"], role=item["role"], public_key=item["public_key"],
            created=_utc(item["created"], f"{where}.created"),
            source_prefix=source_prefix, agency=agency, manufacturer=manufacturer,
            revoked=_utc(revoked, f"{where}.revoked") if revoked is not None else None,
            transfers_ownership=transfers_ownership,
        )


class KeyRegistry(Mapping[str, KeyRecord]):
    """kid -> KeyRecord, immutable. Revoked keys stay in it (a signature by one is ``revoked_key``,
    not ``unknown_key``, and its name is never reused)."""

    def __init__(self, keys: list[KeyRecord] | tuple[KeyRecord, ...] = ()):
        by_kid: dict[str, KeyRecord] = {}
        names: set[str] = set()
        for key in keys:
            if key.kid in by_kid:
                raise RegistryError(f"kid {key.kid} is registered twice")
            if key.name in names:
                raise RegistryError(f"key name {key.name} is registered twice")
            by_kid[key.kid] = key
            names.add(key.name)
        self._keys = by_kid

    def __getitem__(self, kid: str) -> KeyRecord:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def records(self) -> list[KeyRecord]:
        return list(self._keys.values())

    def by_name(self, name: str) -> KeyRecord | None:
        return next((k for k in self._keys.values() if k.name == name), None)

    def by_public_key(self, public_key: bytes) -> KeyRecord | None:
        encoded = b64url_encode(public_key)
        return next((k for k in self._keys.values() if k.public_key == encoded), None)

    def to_json(self) -> dict[str, Any]:
        return {"version": REGISTRY_VERSION, "keys": [k.to_json() for k in self._keys.values()]}

    @classmethod
    def from_json(cls, document: Any) -> KeyRegistry:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise RegistryError('expected {"version": 1, "keys": [...]}')
        if document.get("version") != REGISTRY_VERSION:
            raise RegistryError(f"registry version {document.get('version')!r} is not supported; "
                                f"this build reads version {REGISTRY_VERSION}")
        return cls([KeyRecord.from_json(item, f"keys[{i}]") for i, item in enumerate(document["keys"])])


# --- files -------------------------------------------------------------------------------------------

def keys_dir(data_dir: Path) -> Path:
    return Path(data_dir) / KEYS_DIR


def registry_path(data_dir: Path) -> Path:
    return keys_dir(data_dir) / REGISTRY_FILE


def private_key_path(data_dir: Path, name: str) -> Path:
    return keys_dir(data_dir) / PRIVATE_DIR / f"{check_name(name)}.key"


def load_registry(path: Path) -> KeyRegistry:
    """The registry in ``path``; an empty one if the file does not exist (no key registered yet)."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        return KeyRegistry()
    except OSError as exc:
        raise RegistryError(f"{path}: {exc.strerror}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise RegistryError(f"{path}: not valid JSON: {exc}") from None
    try:
        return KeyRegistry.from_json(document)
    except RegistryError as exc:
        raise RegistryError(f"{path}: {exc}") from None


def _write_atomically(path: Path, content: bytes, mode: int) -> None:
    """Write a temp file beside ``path`` and rename it over ``path``: a reader sees the old file or
    the new one, never a part. fsync'd, so a crash does not leave an empty registry behind."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def _locked_registry(data_dir: Path) -> Iterator[tuple[KeyRegistry, list[KeyRegistry]]]:
    """The registry under an exclusive lock; put the changed registry in the list to write it."""
    directory = keys_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "registry.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        path = registry_path(data_dir)
        changed: list[KeyRegistry] = []
        yield load_registry(path), changed
        if changed:
            body = json.dumps(changed[-1].to_json(), indent=2, ensure_ascii=False) + "\n"
            _write_atomically(path, body.encode("utf-8"), 0o644)  # public keys only: readable by services


def _register(data_dir: Path, name: str, role: str, public_key: bytes, source_prefix: str | None,
              agency: str | None, manufacturer: str | None, transfers_ownership: bool = False,
              before_write=None) -> KeyRecord:
    check_name(name)
    source_prefix, agency, manufacturer = check_binding(role, source_prefix, agency, manufacturer)
    check_transfers_ownership(role, transfers_ownership)
    with _locked_registry(data_dir) as (registry, changed):
        if registry.by_name(name) is not None:
            raise KeyRegistryConflict(f"a key named {name!r} is already registered (names are never reused, "
                                      "revoked keys included): choose another name, e.g. with a date")
        same = registry.by_public_key(public_key)
        if same is not None:
            raise KeyRegistryConflict(f"this public key is already registered as {same.kid}")
        record = KeyRecord(kid=make_kid(name, public_key), name=name, role=role,
                           public_key=b64url_encode(public_key), created=datetime.now(UTC).replace(microsecond=0),
                           source_prefix=source_prefix, agency=agency, manufacturer=manufacturer,
                           transfers_ownership=transfers_ownership)
        if before_write is not None:
            before_write()  # the private key is on disk before its public key is trusted
        changed.append(KeyRegistry([*registry.records(), record]))
    return record


def create_key(data_dir: Path, name: str, role: str, *, source_prefix: str | None = None,
               agency: str | None = None, manufacturer: str | None = None,
               transfers_ownership: bool = False) -> tuple[KeyRecord, Path]:
    """A new Ed25519 key pair: the private key to ``keys/private/<name>.key`` (PKCS#8 PEM, mode
    0600, never overwritten) and the public key into the registry. Returns the record and the path."""
    private_key = Ed25519PrivateKey.generate()
    path = private_key_path(data_dir, name)
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())

    def write_private_key() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        try:
            # O_EXCL: an existing key file (perhaps of a key that was revoked) is never replaced.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyRegistryConflict(f"{path} already exists: choose another name") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())

    record = _register(data_dir, name, role, raw_public_key(private_key.public_key()), source_prefix, agency,
                       manufacturer, transfers_ownership, before_write=write_private_key)
    return record, path


def read_public_key(content: bytes) -> bytes:
    """A partner's Ed25519 public key as 32 raw bytes, from a PEM (SubjectPublicKeyInfo) file, the
    base64url or base64 text of the 32 bytes, or the 32 bytes themselves. InvalidKeyInput otherwise."""
    stripped = content.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped)
        except ValueError as exc:
            raise InvalidKeyInput(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidKeyInput(f"the PEM holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 public key")
        return raw_public_key(key)
    if len(content) == 32:
        return content
    try:
        text = stripped.decode("ascii")
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text)
                               else None, validate=True)
    except (UnicodeDecodeError, ValueError):
        raise InvalidKeyInput("not an Ed25519 public key: expected PEM, base64url of 32 bytes, or 32 raw bytes") from None
    if len(raw) != 32:
        raise InvalidKeyInput(f"the key is {len(raw)} bytes; an Ed25519 public key is 32")
    return raw


def add_key(data_dir: Path, name: str, role: str, public_key: bytes, *, source_prefix: str | None = None,
            agency: str | None = None, manufacturer: str | None = None,
            transfers_ownership: bool = False) -> KeyRecord:
    """Register a public key a partner generated (32 raw bytes; see read_public_key)."""
    if len(public_key) != 32:
        raise InvalidKeyInput(f"the key is {len(public_key)} bytes; an Ed25519 public key is 32")
    try:
        Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as exc:
        raise InvalidKeyInput(f"not an Ed25519 public key: {exc}") from None
    return _register(data_dir, name, role, public_key, source_prefix, agency, manufacturer, transfers_ownership)


def revoke_key(data_dir: Path, kid: str, *, at: datetime | None = None) -> KeyRecord:
    """Mark a key revoked. From then on every envelope it signed is refused (``revoked_key``), older
    ones replayed included: a revoked key may be in someone else's hands, who can date an envelope
    as they like. Revoking a revoked key keeps its first revocation time."""
    with _locked_registry(data_dir) as (registry, changed):
        record = registry.get(kid)
        if record is None:
            raise KeyRegistryConflict(f"no key with kid {kid!r} (see `serialtrack keys list`)")
        if record.is_revoked:
            return record
        revoked = replace(record, revoked=(at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0))
        changed.append(KeyRegistry([revoked if k.kid == kid else k for k in registry.records()]))
    return revoked


# --- services: picking up changes without a restart ----------------------------------------------------

class RegistryWatcher(WatchedFile[KeyRegistry]):
    """The key registry of ``path`` for a service (shared/watched_file.py): re-read within
    ``interval`` seconds of a change; a broken file keeps the last good keys and their revocations."""

    def __init__(self, path: Path, interval: float = DEFAULT_POLL_SECONDS, clock=time.monotonic):
        super().__init__(path, load_registry, RegistryError, what="key registry", log=log, interval=interval,
                         clock=clock, describe=lambda registry: f"{len(registry)} keys "
                                                                f"({sum(k.is_revoked for k in registry.values())} revoked)")

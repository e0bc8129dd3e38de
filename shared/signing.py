"""Envelope signatures: who sent an event, and whether that sender may say what it says.

The scheme (README, "Signed envelopes"; docs/signing.md) so that a producer in any language can sign:

1. Take the envelope as the JSON object you will send, without a ``signature`` member.
2. Canonicalize it with RFC 8785 (JSON Canonicalization Scheme): members sorted by their UTF-16 code
   units, no whitespace, strings with minimal escaping in UTF-8, numbers as ECMAScript prints them.
3. Sign those bytes with Ed25519 (RFC 8032, pure, no pre-hash).
4. Add ``"signature": {"alg": "Ed25519", "kid": "<registered kid>", "sig": "<base64url of the
   64-byte signature, no padding>"}`` and send the object.

A consumer verifies the envelope **as it arrived**: the object parsed from the entry's JSON, not a
model rebuilt from it (the contracts normalize values: ``"Acme"`` becomes ``"acme"``, times become
UTC, and re-serializing would change the bytes). So a signature covers exactly what the producer
sent, numbers and strings as JCS reads them from the JSON, and verification comes before anything
is trusted or applied.

Policy: ``signature_required``. Checks and the reason each failure is dead-lettered with:
``SignatureRejected.reason`` (``REASONS``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError

from .identity import IdentityError, normalize_manufacturer
from .keys import (
    ALG,
    InvalidKeyInput,
    KeyRecord,
    KeyRegistry,
    RegistryError,
    b64url_decode,
    b64url_encode,
    load_registry,
    private_key_path,
    raw_public_key,
    registry_path,
)
from .roles import INBOUND_TYPES, ROLE_DATA_FIELD, signature_required

if TYPE_CHECKING:
    from .envelope import Envelope

SIGNATURE_FIELD = "signature"
SIGNATURE_LENGTH = 64  # bytes of an Ed25519 signature
MAX_KID_LENGTH = 128

# Every reason a signature check can fail with; the dead-letter ``reason`` field carries it.
UNSIGNED = "unsigned"  # no signature where the policy requires one
BAD_SIGNATURE = "bad_signature"  # malformed signature member, not canonicalizable, or does not verify
UNKNOWN_KEY = "unknown_key"  # the kid is not in the registry
REVOKED_KEY = "revoked_key"  # the kid was revoked
TYPE_NOT_ALLOWED = "type_not_allowed"  # the key's role may not publish this type
SOURCE_NOT_ALLOWED = "source_not_allowed"  # the source is outside the key's source prefix
DATA_NOT_ALLOWED = "data_not_allowed"  # data names an agency/manufacturer the key does not speak for
VOID_NOT_ALLOWED = "void_not_allowed"  # an event.voided the key may not publish (shared/voids.py)
REASONS: tuple[str, ...] = (UNSIGNED, BAD_SIGNATURE, UNKNOWN_KEY, REVOKED_KEY, TYPE_NOT_ALLOWED,
                            SOURCE_NOT_ALLOWED, DATA_NOT_ALLOWED, VOID_NOT_ALLOWED)


class SignatureRejected(ValueError):
    """An envelope that fails the signature policy: dead-letter it with ``reason``, apply nothing."""

    def __init__(self, reason: str, detail: str, kid: str | None = None):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.kid = kid  # the kid the envelope named, if it named one


class SigningError(ValueError):
    """An envelope that cannot be signed (not plain JSON values, or already carries a signature)."""


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """The registered key an envelope was verified with."""

    kid: str
    name: str
    role: str
    # The registry trusts this key for ownership transfers (KeyRecord.transfers_ownership): the
    # warranty service lets a registration it signed replace a unit's owner instead of pending.
    transfers_ownership: bool = False


REQUIRED_TYPES: frozenset[str] = frozenset(t for t in INBOUND_TYPES if signature_required(t))


def canonical_form(envelope: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: RFC 8785 canonical JSON of the envelope without ``signature``.

    CanonicalizationError (a ValueError) for values JSON cannot carry exactly: integers beyond
    +-(2**53 - 1), NaN and infinities, non-JSON types."""
    unsigned = {name: value for name, value in envelope.items() if name != SIGNATURE_FIELD}
    if _plain(unsigned):
        # For strings, safe integers, booleans, null, lists and objects with ASCII member names,
        # RFC 8785 is exactly what the C encoder writes with sorted keys, no spaces and no ASCII
        # escaping (the same escapes: \" \\ \b \f \n \r \t, \u00xx for other controls).
        # A tenth of the pure-Python canonicalizer's cost, on every signed event a consumer reads;
        # tests/unit/test_signing.py checks the two agree. Floats (ECMAScript number form) and
        # non-ASCII member names (sorted by UTF-16 code units) take the general path.
        return json.dumps(unsigned, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    return rfc8785.dumps(unsigned)


_SAFE_INTEGER = 2**53 - 1


def _plain(value: Any) -> bool:
    """Only values whose canonical form the standard encoder writes exactly (see canonical_form)."""
    if isinstance(value, str) or value is None or value is True or value is False:
        return True
    if type(value) is int:
        return -_SAFE_INTEGER <= value <= _SAFE_INTEGER
    if isinstance(value, dict):
        return all(type(key) is str and key.isascii() and _plain(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return False


def sign_envelope(envelope: Mapping[str, Any], kid: str, private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``envelope`` (its JSON form: str, int, float, bool, None, list, dict) with a
    ``signature`` member. Send this object as JSON, by any serializer: the receiver canonicalizes
    what it parses, so whitespace and member order on the wire do not matter."""
    if SIGNATURE_FIELD in envelope:
        raise SigningError("the envelope already has a signature")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise SigningError(f"kid must be 1-{MAX_KID_LENGTH} characters")
    try:
        message = canonical_form(envelope)
    except rfc8785.CanonicalizationError as exc:  # a datetime or Decimal left in data, a huge integer
        raise SigningError(f"the envelope has no canonical JSON form: {exc}") from None
    signature = private_key.sign(message)
    return {**envelope, SIGNATURE_FIELD: {"alg": ALG, "kid": kid, "sig": b64url_encode(signature)}}


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        counts = Counter(name for name, _ in pairs)
        dupes = sorted(name for name, count in counts.items() if count > 1)
        raise ValueError(f"duplicate member name(s) {', '.join(map(repr, dupes))}: the JSON is not I-JSON "
                         "(RFC 7493), which RFC 8785 canonicalization requires")
    return result


def parse_envelope_json(raw: bytes | str) -> dict[str, Any]:
    """An entry's envelope JSON -> the dict to verify, as received.

    ValueError if it is not JSON, not an object, or repeats a member name (parsers disagree about
    which repeated value counts, so such an envelope has no single signed meaning). The consumer
    dead-letters those as it does any undecodable entry."""
    document = json.loads(raw, object_pairs_hook=_no_duplicate_members)
    if not isinstance(document, dict):
        # ValueError like json's own: callers treat every undecodable entry the same way.
        raise ValueError(f"an envelope is a JSON object, got {type(document).__name__}")  # noqa: TRY004 - see above
    return document


def _signature_member(envelope: Mapping[str, Any]) -> tuple[str, bytes]:
    """(kid, signature bytes) of a present signature member, or bad_signature saying what is wrong."""
    member = envelope[SIGNATURE_FIELD]
    if not isinstance(member, Mapping):
        raise SignatureRejected(BAD_SIGNATURE, 'signature must be an object {"alg", "kid", "sig"}')
    kid = member.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise SignatureRejected(BAD_SIGNATURE, f"signature.kid must be a string of 1-{MAX_KID_LENGTH} characters")
    if member.get("alg") != ALG:
        raise SignatureRejected(BAD_SIGNATURE, f"signature.alg must be {ALG!r}, got {member.get('alg')!r}", kid)
    sig = member.get("sig")
    try:
        signature = b64url_decode(sig)
    except ValueError as exc:
        raise SignatureRejected(BAD_SIGNATURE, f"signature.sig: {exc}", kid) from None
    if len(signature) != SIGNATURE_LENGTH:
        raise SignatureRejected(BAD_SIGNATURE, f"signature.sig is {len(signature)} bytes; Ed25519 gives "
                                               f"{SIGNATURE_LENGTH}", kid)
    return kid, signature


def verify(envelope: Mapping[str, Any], registry: KeyRegistry, *, require_all: bool = False) -> VerifiedKey | None:
    """Check an envelope, as received (``parse_envelope_json``), against the signature policy.

    Returns the key that signed it, or None for an unsigned envelope whose type does not require a
    signature. Raises SignatureRejected, checking in this order:

    - ``unsigned``: no signature, and ``signature_required(type, require_all)``;
    - ``bad_signature``: the signature member is malformed, the envelope has no canonical form, or
      the Ed25519 signature does not verify (OpenSSL's verify: strict, no early exit on the data);
    - ``unknown_key`` / ``revoked_key``: the kid is not registered / was revoked;
    - ``type_not_allowed``: the key's role may not publish the envelope's type;
    - ``source_not_allowed``: the envelope's source is outside the key's source prefix;
    - ``data_not_allowed``: a law-enforcement key's agency or a manufacturer key's manufacturer is
      not the one the data names (compared as the contracts normalize them).
    """
    event_type = envelope.get("type")
    if SIGNATURE_FIELD not in envelope or envelope[SIGNATURE_FIELD] is None:
        if isinstance(event_type, str) and signature_required(event_type, require_all):
            raise SignatureRejected(UNSIGNED, f"{event_type} must be signed")
        return None
    kid, signature = _signature_member(envelope)
    key = registry.get(kid)
    if key is None:
        raise SignatureRejected(UNKNOWN_KEY, f"no registered key {kid!r}", kid)
    if key.is_revoked:
        raise SignatureRejected(REVOKED_KEY, f"key {kid} was revoked at {key.revoked:%Y-%m-%dT%H:%M:%SZ}", kid)
    try:
        message = canonical_form(envelope)
    except rfc8785.CanonicalizationError as exc:
        raise SignatureRejected(BAD_SIGNATURE, f"the envelope has no canonical JSON form: {exc}", kid) from None
    try:
        key.verifier.verify(message, signature)
    except BadSignatureError:
        raise SignatureRejected(BAD_SIGNATURE, f"the signature does not verify with key {kid}", kid) from None
    # Authentic: now whether this sender may say this.
    if not isinstance(event_type, str) or event_type not in key.types:
        raise SignatureRejected(TYPE_NOT_ALLOWED, f"key {kid} ({key.role}) may not publish {event_type!r}", kid)
    source = envelope.get("source")
    if not isinstance(source, str) or not key.allows_source(source):
        raise SignatureRejected(SOURCE_NOT_ALLOWED,
                                f"key {kid} may publish from sources under {key.source_prefix!r}, not {source!r}", kid)
    _check_data(envelope.get("data"), key.role, key.agency, key.manufacturer, kid)
    return VerifiedKey(kid=key.kid, name=key.name, role=key.role, transfers_ownership=key.transfers_ownership)


def _check_data(data: Any, role: str, agency: str | None, manufacturer: str | None, kid: str) -> None:
    bound = ROLE_DATA_FIELD.get(role)
    if bound is None:
        return
    value = data.get(bound) if isinstance(data, Mapping) else None
    allowed = agency if bound == "agency" else manufacturer
    if not isinstance(value, str):
        raise SignatureRejected(DATA_NOT_ALLOWED, f"key {kid} speaks for {bound} {allowed!r}; data has no {bound}", kid)
    # Normalized as the contract will normalize it, so the value checked is the value applied.
    try:
        normalized = normalize_manufacturer(value) if bound == "manufacturer" else value.strip()
    except IdentityError:
        normalized = None
    if normalized != allowed:
        raise SignatureRejected(DATA_NOT_ALLOWED, f"key {kid} speaks for {bound} {allowed!r}, not {value!r}", kid)


# --- producers -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Signer:
    """A registered key's private half, ready to sign (``load_signer``)."""

    key: KeyRecord  # the registry's record of its public half, at load time
    private_key: Ed25519PrivateKey

    @property
    def kid(self) -> str:
        return self.key.kid

    def sign(self, envelope: Mapping[str, Any], *, check: bool = True) -> dict[str, Any]:
        """``envelope`` (JSON form) signed. With ``check`` (the default), raise SignatureRejected if
        consumers would refuse it for this key (type, source or data it may not speak for): a
        producer is strict, so the mistake shows at the producer instead of in a dead-letter stream."""
        signed = sign_envelope(envelope, self.kid, self.private_key)
        if check:
            verify(signed, KeyRegistry([self.key]))
            if signed.get("type") == "event.voided":  # and whether the key may withdraw what it names
                from .contracts import EventVoided
                from .voids import check_publisher

                check_publisher(EventVoided.model_validate(signed.get("data")), self.key)
        return signed

    def entry_body(self, envelope: Envelope, *, check: bool = True) -> str:
        """The JSON to XADD for a model-built envelope (``make_event``/``build_envelope``), signed.
        Publish this string as the entry's ``event`` field (``shared.publishing.publish_raw``): it
        is the object that was signed, serialized once."""
        return json.dumps(self.sign(envelope.model_dump(mode="json", exclude_none=True), check=check),
                          ensure_ascii=False, separators=(",", ":"))


def _read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read private key {path}: {exc.strerror}") from None
    if content.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(content, password=None)
        except (ValueError, TypeError) as exc:  # TypeError: the PEM is encrypted
            raise SigningError(f"{path}: not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningError(f"{path}: holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 private key")
        return key
    if len(content) == 32:  # a raw 32-byte seed, as some libraries store it
        return Ed25519PrivateKey.from_private_bytes(content)
    raise SigningError(f"{path}: not an Ed25519 private key (expected PKCS#8 PEM or a 32-byte raw seed)")


def load_signer(name_or_path: str | Path, data_dir: Path) -> Signer:
    """The signer for ``--sign-with``: a key name (``<data_dir>/keys/private/<name>.key``) or the
    path of a private key file. Its public key must be registered and not revoked. SigningError
    otherwise, with a message for the user."""
    text = str(name_or_path)
    as_path = Path(text)
    if "/" in text or as_path.suffix in (".key", ".pem"):
        path = as_path
        if not path.is_file():
            raise SigningError(f"no private key file {path}")
    else:
        try:
            path = private_key_path(data_dir, text)
        except InvalidKeyInput as exc:
            raise SigningError(str(exc)) from None
        if not path.is_file():
            raise SigningError(f"no private key named {text!r} (looked for {path}; `serialtrack keys create` makes one)")
    private_key = _read_private_key(path)
    try:
        registry = load_registry(registry_path(data_dir))
    except RegistryError as exc:
        raise SigningError(str(exc)) from None
    record = registry.by_public_key(raw_public_key(private_key.public_key()))
    if record is None:
        raise SigningError(f"the key in {path} is not registered in {registry_path(data_dir)}")
    if record.is_revoked:
        raise SigningError(f"key {record.kid} ({path}) was revoked: create a new one")
    return Signer(key=record, private_key=private_key)


OPERATOR_KEY = "operator"


def operator_signer(data_dir: Path) -> Signer:
    """The data dir's own operator key (made on first use): signs whatever an operator may publish.
    For the tools that publish on the operator's behalf on the embedded default (tests, benchmarks);
    producers in the field have keys of their own role."""
    from .keys import KeyRegistryConflict, create_key  # writers of the registry are needed only here

    if load_registry(registry_path(data_dir)).by_name(OPERATOR_KEY) is None:
        try:
            create_key(data_dir, OPERATOR_KEY, "operator")
        except KeyRegistryConflict:
            pass  # another process made it meanwhile
    return load_signer(OPERATOR_KEY, data_dir)

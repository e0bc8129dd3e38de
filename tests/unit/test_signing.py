"""Envelope signatures: the scheme, every rejection reason, rotation, and who may sign what."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.contracts import EVENT_TYPES, TheftReported, UnitSold
from shared.envelope import Signature, decode_envelope_bytes, make_event
from shared.keys import (
    KeyRegistry,
    add_key,
    b64url_decode,
    b64url_encode,
    create_key,
    load_registry,
    private_key_path,
    raw_public_key,
    registry_path,
    revoke_key,
)
from shared.roles import INBOUND_TYPES, INTERNAL_TYPES, ROLES
from shared.signing import (
    REASONS,
    REQUIRED_TYPES,
    SignatureRejected,
    SigningError,
    canonical_form,
    load_signer,
    parse_envelope_json,
    sign_envelope,
    signature_required,
    verify,
)

# RFC 8032 section 7.1, test 1: a published key, so anyone can reproduce the signatures below.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def theft_envelope(**changes) -> dict:
    envelope = {
        "specversion": "1.0", "id": "case-4711-1", "source": "police/metro-pd/feed", "type": "theft.reported",
        "time": "2026-11-26T10:00:00Z", "subject": "acme/SN1", "datacontenttype": "application/json",
        "data": {"manufacturer": "acme", "serial": "SN1", "agency": "metro-pd", "case_number": "4711",
                 "description": "Café window, 2 units"},
    }
    envelope.update(changes)
    return envelope


def wire(envelope: dict) -> bytes:
    """What a producer XADDs, as another serializer might write it: other member order, spaces,
    non-ASCII escaped."""
    return json.dumps(dict(reversed(list(envelope.items()))), indent=1, ensure_ascii=True).encode()


def received(envelope: dict) -> dict:
    return parse_envelope_json(wire(envelope))


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def police(data_dir):
    """A law-enforcement key for metro-pd with its private half."""
    record, path = create_key(data_dir, "metro-pd-2026", "law-enforcement", source_prefix="police/metro-pd",
                              agency="metro-pd")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return record, key


def registry_of(data_dir) -> KeyRegistry:
    return load_registry(registry_path(data_dir))


def rejected(envelope: dict, registry: KeyRegistry, **options) -> SignatureRejected:
    with pytest.raises(SignatureRejected) as caught:
        verify(envelope, registry, **options)
    return caught.value


# --- the scheme ---------------------------------------------------------------------------------------

def test_sign_verify_round_trip_through_json_as_another_producer_would_write_it(data_dir, police):
    record, key = police
    signed = sign_envelope(theft_envelope(), record.kid, key)
    assert set(signed["signature"]) == {"alg", "kid", "sig"} and signed["signature"]["alg"] == "Ed25519"
    assert len(b64url_decode(signed["signature"]["sig"])) == 64 and "=" not in signed["signature"]["sig"]
    verified = verify(received(signed), registry_of(data_dir))
    assert (verified.kid, verified.name, verified.role) == (record.kid, "metro-pd-2026", "law-enforcement")
    assert verified.transfers_ownership is False


def test_the_verified_key_says_whether_the_registry_trusts_it_for_ownership_transfers(data_dir):
    """What the warranty service reads from Event.signed_by: the flag as registered, per key."""
    registration = {"specversion": "1.0", "id": "reg-1", "source": "store/desk", "type": "warranty.owner.registered",
                    "time": "2026-11-26T10:00:00Z",
                    "data": {"manufacturer": "acme", "serial": "SN1", "customer_id": "C-2"}}
    outcomes = {}
    for name, trusted in (("desk", True), ("web", False)):
        record, path = create_key(data_dir, name, "owner-registry", transfers_ownership=trusted)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        outcomes[name] = verify(received(sign_envelope(registration, record.kid, key)), registry_of(data_dir))
    assert (outcomes["desk"].transfers_ownership, outcomes["web"].transfers_ownership) == (True, False)


def test_the_signature_covers_the_jcs_form_of_the_envelope_without_signature():
    key = Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)
    signed = sign_envelope(theft_envelope(), "k1", key)
    canonical = canonical_form(signed)
    assert canonical == canonical_form(theft_envelope())  # the signature member is left out
    # Members sorted at every level, no insignificant whitespace, UTF-8 without escapes.
    assert canonical == (
        b'{"data":{"agency":"metro-pd","case_number":"4711","description":"Caf\xc3\xa9 window, 2 units",'
        b'"manufacturer":"acme","serial":"SN1"},"datacontenttype":"application/json","id":"case-4711-1",'
        b'"source":"police/metro-pd/feed","specversion":"1.0","subject":"acme/SN1","time":"2026-11-26T10:00:00Z",'
        b'"type":"theft.reported"}'
    )
    key.public_key().verify(b64url_decode(signed["signature"]["sig"]), canonical)  # raises if not


def test_numbers_and_strings_are_compared_as_jcs_reads_them(data_dir, police):
    """The canonical form is of the JSON values received: 365.0 and 365 are one number, \\u00e9 and é
    one string, so a producer's serializer does not matter; a different value does."""
    record, key = police
    envelope = theft_envelope(type="theft.reported")
    envelope["data"] = {**envelope["data"], "count_hint": 365}
    signed = sign_envelope(envelope, record.kid, key)
    body = json.dumps(signed, ensure_ascii=False).replace('"count_hint": 365', '"count_hint": 365.0')
    assert "365.0" in body and "é" in body
    assert verify(parse_envelope_json(body), registry_of(data_dir)).kid == record.kid
    changed = body.replace('"count_hint": 365.0', '"count_hint": 365.5')
    assert rejected(parse_envelope_json(changed), registry_of(data_dir)).reason == "bad_signature"


def test_one_changed_byte_anywhere_in_data_is_a_bad_signature(data_dir, police):
    record, key = police
    body = bytearray(wire(sign_envelope(theft_envelope(), record.kid, key)))
    registry = registry_of(data_dir)
    start = body.index(b'"data"')
    end = body.index(b"}", start)
    tried = 0
    for position in range(start, end):
        if body[position] not in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
            continue  # a flipped quote or brace is no longer JSON: that is decoding's business
        changed = bytearray(body)
        changed[position] ^= 0x01  # 'a' <-> '`', '1' <-> '0', ...: still a one-byte change
        try:
            document = parse_envelope_json(bytes(changed))
        except ValueError:
            continue
        tried += 1
        with pytest.raises(SignatureRejected) as caught:
            verify(document, registry)
        # A renamed member ("agency" -> "agencx") is also a bad signature: the signature comes first.
        assert caught.value.reason == "bad_signature", (position, bytes(changed[start:end]))
    assert tried > 40


def test_a_signed_envelope_built_from_a_model_decodes_and_verifies(data_dir, police):
    record, _ = police
    signer = load_signer("metro-pd-2026", data_dir)
    event = make_event(TheftReported(manufacturer="Acme", serial="sn-7", agency="metro-pd", case_number="9"),
                       source="police/metro-pd/feed", id="r-1", time=datetime(2026, 11, 26, 10, tzinfo=UTC))
    body = signer.entry_body(event.envelope)
    assert verify(parse_envelope_json(body), registry_of(data_dir)).kid == record.kid
    decoded = decode_envelope_bytes(body.encode())
    assert decoded.envelope.signature == Signature(alg="Ed25519", kid=record.kid,
                                                   sig=json.loads(body)["signature"]["sig"])
    assert decoded.data.serial == "SN-7"


def test_signer_refuses_what_consumers_would_refuse(data_dir, police):
    signer = load_signer("metro-pd-2026", data_dir)
    with pytest.raises(SignatureRejected) as caught:
        signer.sign(theft_envelope(data={**theft_envelope()["data"], "agency": "county-sheriff"}))
    assert caught.value.reason == "data_not_allowed"
    with pytest.raises(SigningError):
        signer.sign(sign_envelope(theft_envelope(), signer.kid, signer.private_key))  # signed twice
    with pytest.raises(SigningError, match="canonical"):
        signer.sign(theft_envelope(time=datetime.now(UTC)))  # a datetime is not a JSON value


def test_parse_refuses_duplicate_members_and_non_objects():
    with pytest.raises(ValueError, match="duplicate"):
        parse_envelope_json(b'{"type": "theft.reported", "data": {"agency": "a", "agency": "b"}}')
    for raw in (b"[1]", b"42", b"not json"):
        with pytest.raises(ValueError):
            parse_envelope_json(raw)


# --- every reason ---------------------------------------------------------------------------------------

def test_unsigned_is_refused_only_where_required(data_dir):
    registry = registry_of(data_dir)
    assert rejected(theft_envelope(), registry).reason == "unsigned"
    assert rejected(theft_envelope(signature=None), registry).reason == "unsigned"
    sale = theft_envelope(type="unit.sold", source="pos/store-1/till-1")
    assert verify(sale, registry) is None
    assert rejected(sale, registry, require_all=True).reason == "unsigned"
    notice = theft_envelope(type="recall.owner_notified", source="serialtrack/warranty")
    assert verify(notice, registry, require_all=True) is None  # internal: the ACLs vouch for it


@pytest.mark.parametrize("signature, words", [
    ("c2lnbmVk", "must be an object"),
    ({"alg": "Ed25519", "sig": "x"}, "kid"),
    ({"alg": "HS256", "kid": "K", "sig": "x"}, "alg"),
    ({"alg": "Ed25519", "kid": "K", "sig": b64url_encode(bytes(64)) + "=="}, "base64url"),
    ({"alg": "Ed25519", "kid": "K", "sig": b64url_encode(bytes(64)).replace("A", "+", 1)}, "base64url"),
    ({"alg": "Ed25519", "kid": "K", "sig": b64url_encode(bytes(63))}, "63 bytes"),
])
def test_a_malformed_signature_member_is_a_bad_signature(data_dir, police, signature, words):
    record, _ = police
    if isinstance(signature, dict) and signature.get("kid") == "K":
        signature = {**signature, "kid": record.kid}
    error = rejected(theft_envelope(signature=signature), registry_of(data_dir))
    assert error.reason == "bad_signature" and words in error.detail


def test_a_signature_by_another_key_naming_a_registered_kid_is_a_bad_signature(data_dir, police):
    record, _ = police
    forged = sign_envelope(theft_envelope(), record.kid, Ed25519PrivateKey.generate())
    error = rejected(received(forged), registry_of(data_dir))
    assert (error.reason, error.kid) == ("bad_signature", record.kid)


def test_a_value_jcs_cannot_carry_is_a_bad_signature(data_dir, police):
    record, key = police
    signed = sign_envelope(theft_envelope(), record.kid, key)
    body = json.dumps(signed).replace('"4711"', str(2**60))  # beyond IEEE 754 doubles' exact integers
    assert rejected(parse_envelope_json(body), registry_of(data_dir)).reason == "bad_signature"


def test_unknown_and_revoked_keys(data_dir, police):
    record, key = police
    stranger = sign_envelope(theft_envelope(), "metro-pd-2026-AAAAAAAAAAAA", key)
    assert rejected(received(stranger), registry_of(data_dir)).reason == "unknown_key"
    signed = sign_envelope(theft_envelope(), record.kid, key)
    revoke_key(data_dir, record.kid)
    error = rejected(received(signed), registry_of(data_dir))
    assert (error.reason, error.kid) == ("revoked_key", record.kid)


def test_type_source_and_data_the_key_may_not_speak_for(data_dir, police):
    record, key = police
    registry = registry_of(data_dir)

    def reason_for(**changes) -> str:
        return rejected(received(sign_envelope(theft_envelope(**changes), record.kid, key)), registry).reason

    assert reason_for(type="recall.issued") == "type_not_allowed"
    assert reason_for(type="theft.alert") == "type_not_allowed"  # internal: nobody's key may sign it
    assert reason_for(source="pos/store-12/till-3") == "source_not_allowed"
    assert reason_for(source="police/metro-pd-east") == "source_not_allowed"  # a prefix is whole segments
    assert reason_for(source=42) == "source_not_allowed"
    data = theft_envelope()["data"]
    assert reason_for(data={**data, "agency": "county-sheriff"}) == "data_not_allowed"
    assert reason_for(data={k: v for k, v in data.items() if k != "agency"}) == "data_not_allowed"
    # What the contract will apply is what is compared: " metro-pd " is metro-pd once stripped.
    assert verify(received(sign_envelope(theft_envelope(data={**data, "agency": " metro-pd "}), record.kid, key)),
                  registry).kid == record.kid
    assert verify(received(sign_envelope(theft_envelope(source="police/metro-pd"), record.kid, key)), registry)


def test_a_manufacturer_key_speaks_for_its_manufacturer_as_normalized(data_dir):
    record, path = create_key(data_dir, "acme-recalls", "manufacturer", manufacturer="ACME")
    assert record.manufacturer == "acme"
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    registry = registry_of(data_dir)
    recall = {"specversion": "1.0", "id": "rc-1", "source": "acme/recalls", "type": "recall.issued",
              "time": "2026-11-26T10:00:00Z", "data": {"recall_id": "RC-1", "manufacturer": "Acme ",
                                                       "skus": ["TV-1"], "hazard": "overheats", "remedy": "refund"}}
    assert verify(received(sign_envelope(recall, record.kid, key)), registry).role == "manufacturer"
    other = {**recall, "data": {**recall["data"], "manufacturer": "globex"}}
    assert rejected(received(sign_envelope(other, record.kid, key)), registry).reason == "data_not_allowed"
    bad = {**recall, "data": {**recall["data"], "manufacturer": "not a/maker"}}
    assert rejected(received(sign_envelope(bad, record.kid, key)), registry).reason == "data_not_allowed"


def test_a_void_is_refused_to_a_key_that_could_not_have_published_what_it_voids(data_dir):
    """event.voided (shared/voids.py): the key's role must be one that may publish the voided type,
    and its source prefix must cover the voided event's source; the producer refuses it before it
    sends (Signer.sign), every consumer after it verified the signature (shared/trust.py)."""
    create_key(data_dir, "till-12", "pos", source_prefix="pos/store-12")
    create_key(data_dir, "ops", "operator")
    till, ops = load_signer("till-12", data_dir), load_signer("ops", data_dir)

    def void(voided_type: str, voided_source: str) -> dict:
        return {"specversion": "1.0", "id": "v-1", "source": "pos/store-12/till-1", "type": "event.voided",
                "time": "2026-11-26T10:00:00Z",
                "data": {"manufacturer": "acme", "voided_source": voided_source, "voided_id": "s-1",
                         "voided_type": voided_type, "reason": "scanned the wrong box"}}

    till.sign(void("unit.sold", "pos/store-12/till-3"))  # its own store's sale
    ops.sign(void("unit.received", "wms/anywhere"))  # the operator may void anything voidable
    with pytest.raises(SignatureRejected, match="may not void a unit.received") as role:
        till.sign(void("unit.received", "pos/store-12/till-3"))
    with pytest.raises(SignatureRejected, match="not for 'pos/store-13/till-1'") as source:
        till.sign(void("unit.sold", "pos/store-13/till-1"))
    assert role.value.reason == source.value.reason == "void_not_allowed"
    signed = till.sign(void("unit.sold", "pos/store-13/till-1"), check=False)  # as a forger would send it
    assert verify(received(signed), registry_of(data_dir)).role == "pos"  # the signature itself is fine


def test_every_reason_is_produced_by_the_tests_above():
    # The reasons are part of the dead-letter contract (README): a new one needs a test and a line there.
    assert REASONS == ("unsigned", "bad_signature", "unknown_key", "revoked_key", "type_not_allowed",
                       "source_not_allowed", "data_not_allowed", "void_not_allowed")


# --- rotation ---------------------------------------------------------------------------------------------

def test_rotation_two_keys_valid_during_the_overlap_then_the_old_one_is_refused(data_dir, police):
    old_record, old_key = police
    new_record, new_path = create_key(data_dir, "metro-pd-2027", "law-enforcement",
                                      source_prefix="police/metro-pd", agency="metro-pd")
    new_key = serialization.load_pem_private_key(new_path.read_bytes(), password=None)
    by_old = received(sign_envelope(theft_envelope(id="a"), old_record.kid, old_key))
    by_new = received(sign_envelope(theft_envelope(id="b"), new_record.kid, new_key))
    overlap = registry_of(data_dir)
    assert verify(by_old, overlap).kid == old_record.kid and verify(by_new, overlap).kid == new_record.kid
    revoke_key(data_dir, old_record.kid)
    after = registry_of(data_dir)
    assert rejected(by_old, after).reason == "revoked_key"
    assert verify(by_new, after).kid == new_record.kid
    with pytest.raises(SigningError, match="revoked"):
        load_signer("metro-pd-2026", data_dir)


# --- policy -------------------------------------------------------------------------------------------------

# The brief's table, written out here so that a change to shared/roles.py has to change it too.
EXPECTED_ROLE_TYPES = {
    "pos": {"unit.sold", "unit.returned", "return.requested", "event.voided"},
    "warehouse": {"unit.received", "unit.transferred", "unit.adjusted", "shipment.dispatched", "event.voided"},
    "store": {"stock.counted"},
    "distributor": {"shipment.dispatched"},
    "service-desk": {"warranty.claim.submitted", "recall.remedy.completed"},
    "owner-registry": {"warranty.owner.registered"},
    "law-enforcement": {"theft.reported", "theft.recovered"},
    "manufacturer": {"recall.issued", "recall.amended", "recall.closed", "warranty.policy.set", "shipment.dispatched"},
}
# The operator publishes every inbound type, and alone erasure requests.
EXPECTED_ROLE_TYPES["operator"] = set().union(*EXPECTED_ROLE_TYPES.values()) | {"customer.erasure.requested"}


def test_signatures_are_required_for_exactly_these_types():
    assert REQUIRED_TYPES == {"theft.reported", "theft.recovered", "recall.issued", "recall.amended", "recall.closed",
                              "recall.remedy.completed", "warranty.policy.set", "warranty.owner.registered",
                              "event.voided"}
    for event_type in EVENT_TYPES:
        assert signature_required(event_type) == (event_type in REQUIRED_TYPES)
        assert signature_required(event_type, require_all=True) == (event_type in INBOUND_TYPES)
    assert not signature_required("recall.owner_notified") and "recall.owner_notified" in INTERNAL_TYPES
    assert not signature_required("no.such.type", require_all=True)


@pytest.fixture(scope="module")
def key_per_role(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("roles")
    keys = {}
    for role in ROLES:
        seed = bytes([ROLES.index(role) + 1]) * 32
        private = Ed25519PrivateKey.from_private_bytes(seed)
        record = add_key(data_dir, f"{role}-key", role, raw_public_key(private.public_key()),
                         agency="metro-pd" if role == "law-enforcement" else None,
                         manufacturer="acme" if role == "manufacturer" else None)
        keys[role] = (record.kid, private)
    return registry_of(data_dir), keys


@pytest.mark.parametrize("role", sorted(EXPECTED_ROLE_TYPES))
def test_policy_matrix_every_role_by_every_type(key_per_role, role):
    registry, keys = key_per_role
    kid, private = keys[role]
    outcomes = {}
    for event_type in sorted(EVENT_TYPES):
        envelope = {"specversion": "1.0", "id": "m-1", "source": f"{role}/somewhere", "type": event_type,
                    "time": "2026-11-26T10:00:00Z", "data": {"manufacturer": "acme", "agency": "metro-pd"}}
        try:
            verify(received(sign_envelope(envelope, kid, private)), registry)
            outcomes[event_type] = "allowed"
        except SignatureRejected as exc:
            outcomes[event_type] = exc.reason
    assert {t for t, o in outcomes.items() if o == "allowed"} == EXPECTED_ROLE_TYPES[role]
    assert {o for o in outcomes.values() if o != "allowed"} == {"type_not_allowed"}
    assert all(outcomes[t] == "type_not_allowed" for t in INTERNAL_TYPES)


def test_private_key_files_are_where_load_signer_finds_them(data_dir, police):
    record, _ = police
    path = private_key_path(data_dir, "metro-pd-2026")
    assert load_signer(str(path), data_dir).kid == record.kid
    assert load_signer("metro-pd-2026", data_dir).key.agency == "metro-pd"
    with pytest.raises(SigningError, match="no private key named"):
        load_signer("nobody", data_dir)
    stray = data_dir / "stray.key"
    stray.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(SigningError, match="not registered"):
        load_signer(str(stray), data_dir)
    raw_seed = data_dir / "seed.key"
    raw_seed.write_bytes(RFC8032_SECRET)
    add_key(data_dir, "rfc-8032", "pos", RFC8032_PUBLIC)
    assert load_signer(str(raw_seed), data_dir).key.name == "rfc-8032"


def test_sale_unaffected_by_signing_models(data_dir):
    """Unsigned envelopes still encode without a signature member (the wire format is unchanged)."""
    event = make_event(UnitSold(manufacturer="acme", serial="S1", sku="X", location="s", terminal_id="t",
                                receipt_id="r"), source="pos/s/t")
    assert "signature" not in event.envelope.model_dump_json(exclude_none=True)


def _random_json(rng, depth: int = 0):
    """Values an envelope may carry: strings with escapes, controls, non-ASCII and astral characters,
    integers at and beyond the safe range, floats, booleans, null, nested lists and objects."""
    alphabet = ['a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\t', '\x00', '\x1f', '\x7f', 'é', '€', '\u2028', '😀', '\ufeff']
    kinds = ["str", "int", "bool", "null", "float"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
    if kind == "int":
        return rng.choice([0, -1, 7, 2**53 - 1, -(2**53 - 1), rng.randint(-10**6, 10**6)])
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "null":
        return None
    if kind == "float":
        return rng.choice([0.5, 1e21, 365.0, -0.0, 1.5e-7, 123.456])
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["a", "b", "Z", "é", "😀", "\u20ac", "type", "data", "10", "1"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_the_fast_canonical_form_is_exactly_rfc_8785():
    """canonical_form writes plain envelopes with the C encoder: it must agree with the RFC 8785
    implementation byte for byte, on values chosen to find where the two could differ."""
    import random

    import rfc8785

    from shared.signing import canonical_form

    rng = random.Random(8785)
    for _ in range(3000):
        document = {"type": "unit.sold", "data": _random_json(rng), "x": _random_json(rng)}
        assert canonical_form(document) == rfc8785.dumps(document), document

"""The key registry file, its writers, the watcher services poll, and the role table."""

from __future__ import annotations

import ast
import base64
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.contracts import EVENT_TYPES
from shared.keys import (
    InvalidKeyInput,
    KeyRegistryConflict,
    RegistryError,
    RegistryWatcher,
    add_key,
    b64url_decode,
    b64url_encode,
    create_key,
    load_registry,
    make_kid,
    raw_public_key,
    read_public_key,
    registry_path,
    revoke_key,
    thumbprint,
)
from shared.roles import (
    INBOUND_TYPES,
    INTERNAL_TYPES,
    OPERATOR_ONLY_TYPES,
    REPORTED_BY_EVERY_SERVICE,
    ROLE_TYPES,
    SERVICE_TYPES,
    roles_for_type,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def test_create_writes_a_private_key_only_its_owner_can_read_and_registers_the_public_half(data_dir):
    record, path = create_key(data_dir, "store-12-till-3", "pos", source_prefix="pos/store-12")
    assert path == data_dir / "keys" / "private" / "store-12-till-3.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    public = raw_public_key(private.public_key())
    document = json.loads(registry_path(data_dir).read_text())
    assert document["version"] == 1
    [entry] = document["keys"]
    assert entry == {
        "kid": make_kid("store-12-till-3", public), "name": "store-12-till-3", "role": "pos", "alg": "Ed25519",
        "public_key": b64url_encode(public), "source_prefix": "pos/store-12", "agency": None, "manufacturer": None,
        "created": entry["created"], "revoked": None, "transfers_ownership": False,
    }
    assert entry["kid"].startswith("store-12-till-3-") and entry["created"].endswith("Z")
    assert load_registry(registry_path(data_dir))[record.kid] == record


def test_only_owner_registry_and_operator_keys_may_be_trusted_for_ownership_transfers(data_dir):
    desk, _ = create_key(data_dir, "after-sales-desk", "owner-registry", transfers_ownership=True)
    operator = add_key(data_dir, "ops", "operator", raw_public_key(Ed25519PrivateKey.generate().public_key()),
                       transfers_ownership=True)
    web, _ = create_key(data_dir, "web-registrations", "owner-registry")
    assert (desk.transfers_ownership, operator.transfers_ownership, web.transfers_ownership) == (True, True, False)
    # Persisted in the registry file and read back as written.
    registry = load_registry(registry_path(data_dir))
    assert {k.name: k.transfers_ownership for k in registry.values()} == {
        "after-sales-desk": True, "ops": True, "web-registrations": False}
    # Any other role cannot sign an owner registration at all: the flag on it is refused, not ignored.
    for role, extra in (("pos", {}), ("law-enforcement", {"agency": "metro-pd"})):
        with pytest.raises(InvalidKeyInput, match="--transfers-ownership is for owner-registry and operator"):
            create_key(data_dir, f"k-{role}", role, transfers_ownership=True, **extra)
    assert not (data_dir / "keys" / "private" / "k-pos.key").exists()


def test_a_registry_without_the_transfer_flag_reads_as_untrusted_and_a_bad_flag_says_where(data_dir):
    create_key(data_dir, "desk", "owner-registry", transfers_ownership=True)
    path = registry_path(data_dir)
    document = json.loads(path.read_text())
    del document["keys"][0]["transfers_ownership"]  # a registry written before the flag existed
    path.write_text(json.dumps(document))
    assert load_registry(path).by_name("desk").transfers_ownership is False
    for role, value, words in (("owner-registry", "yes", "must be true or false"),
                               ("pos", True, "not pos")):
        document["keys"][0].update(role=role, transfers_ownership=value)
        path.write_text(json.dumps(document))
        with pytest.raises(RegistryError, match=words):
            load_registry(path)


def test_kid_is_the_name_and_the_rfc7638_thumbprint():
    # RFC 8037 appendix A.3: the thumbprint of the RFC 8032 test key.
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert thumbprint(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert make_kid("rfc", public) == "rfc-kPrK_qmxVWaY"


def test_names_and_public_keys_are_never_registered_twice(data_dir):
    record, _ = create_key(data_dir, "pd-1", "law-enforcement", agency="metro-pd")
    revoke_key(data_dir, record.kid)
    with pytest.raises(KeyRegistryConflict, match="already registered"):
        create_key(data_dir, "pd-1", "law-enforcement", agency="metro-pd")  # not even after revocation
    public = base64.urlsafe_b64decode(record.public_key + "=")
    with pytest.raises(KeyRegistryConflict, match=record.kid):
        add_key(data_dir, "pd-1-again", "law-enforcement", public, agency="metro-pd")
    assert len(load_registry(registry_path(data_dir))) == 1


@pytest.mark.parametrize("role, options, words", [
    ("law-enforcement", {}, "--agency"),
    ("manufacturer", {}, "--manufacturer"),
    ("pos", {"agency": "metro-pd"}, "--agency is for law-enforcement"),
    ("law-enforcement", {"agency": "pd", "manufacturer": "acme"}, "--manufacturer is for manufacturer"),
    ("manufacturer", {"manufacturer": "not valid!"}, "not valid"),
    ("janitor", {}, "unknown role"),
    ("pos", {"source_prefix": "has space"}, "source prefix"),
])
def test_bindings_a_role_needs_and_refuses(data_dir, role, options, words):
    with pytest.raises(InvalidKeyInput, match=words):
        create_key(data_dir, "k", role, **options)
    assert not (data_dir / "keys" / "private" / "k.key").exists()  # nothing written for a refused key


def test_bad_names_are_refused(data_dir):
    for name in ("../evil", "", "a b", "-lead", "x" * 65):
        with pytest.raises(InvalidKeyInput):
            create_key(data_dir, name, "pos")


def test_a_partner_key_is_read_from_pem_base64url_base64_or_raw_bytes(data_dir):
    private = Ed25519PrivateKey.generate()
    raw = raw_public_key(private.public_key())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    for content in (pem, b64url_encode(raw).encode() + b"\n", base64.b64encode(raw), raw):
        assert read_public_key(content) == raw
    for junk in (b"hello", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", base64.b64encode(raw[:31])):
        with pytest.raises(InvalidKeyInput):
            read_public_key(junk)
    record = add_key(data_dir, "partner", "warehouse", raw, source_prefix="wh/")
    assert record.kid == make_kid("partner", raw) and record.types == ROLE_TYPES["warehouse"]
    assert not (data_dir / "keys" / "private").exists()  # nothing private for a partner's key


def test_revoke_marks_the_time_once_and_unknown_kids_are_an_error(data_dir):
    record, _ = create_key(data_dir, "k1", "pos")
    first = revoke_key(data_dir, record.kid)
    assert first.is_revoked and first.revoked is not None
    assert revoke_key(data_dir, record.kid).revoked == first.revoked
    assert load_registry(registry_path(data_dir))[record.kid].revoked == first.revoked
    with pytest.raises(KeyRegistryConflict, match="no key"):
        revoke_key(data_dir, "nope")


def test_source_prefixes_are_whole_path_segments(data_dir):
    record = add_key(data_dir, "a", "pos", raw_public_key(Ed25519PrivateKey.generate().public_key()),
                     source_prefix="pos/store-12")
    assert record.allows_source("pos/store-12") and record.allows_source("pos/store-12/till-3")
    assert not record.allows_source("pos/store-123") and not record.allows_source("pos/store-1")
    slash = add_key(data_dir, "b", "pos", raw_public_key(Ed25519PrivateKey.generate().public_key()),
                    source_prefix="pos/")
    assert slash.allows_source("pos/anything") and not slash.allows_source("posx/a")


def test_a_missing_registry_is_empty_and_a_broken_one_says_where(data_dir):
    path = registry_path(data_dir)
    assert len(load_registry(path)) == 0
    path.parent.mkdir(parents=True)
    for content, words in [
        ("{", "not valid JSON"),
        ('{"version": 2, "keys": []}', "version 2"),
        ('{"version": 1, "keys": [{"kid": "x"}]}', "missing"),
        (json.dumps({"version": 1, "keys": [{"kid": "x", "name": "x", "role": "pos", "public_key": "AAAA",
                                              "created": "2026-01-01T00:00:00Z"}]}), "3 bytes"),
        (json.dumps({"version": 1, "keys": [{"kid": "x", "name": "x", "role": "law-enforcement", "public_key": "AAAA",
                                              "created": "2026-01-01T00:00:00Z"}]}), "agency"),
    ]:
        path.write_text(content)
        with pytest.raises(RegistryError, match=words):
            load_registry(path)
    with pytest.raises(RegistryError):
        create_key(data_dir, "k", "pos")  # a writer does not overwrite a registry it cannot read


def test_b64url_is_strict():
    assert b64url_decode(b64url_encode(b"\xff\xfe\xfd")) == b"\xff\xfe\xfd"
    assert b64url_decode("_w") == b"\xff"
    for text in ("//79", "__79=", "_x", " __79", "A"):  # "_x" sets an unused low bit
        with pytest.raises(ValueError):
            b64url_decode(text)


def test_concurrent_writers_lose_no_key(data_dir):
    """Each writer reads, changes and replaces the file under the lock: ten at once keep ten keys."""
    errors = []

    def create(i):
        try:
            create_key(data_dir, f"till-{i}", "pos")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(k.name for k in load_registry(registry_path(data_dir)).values()) == sorted(
        f"till-{i}" for i in range(10))
    leftovers = [p.name for p in (data_dir / "keys").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


# --- the watcher services poll --------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_watcher_picks_up_a_change_at_its_next_check_and_not_before(data_dir):
    first, _ = create_key(data_dir, "k1", "pos")
    clock = FakeClock()
    watcher = RegistryWatcher(registry_path(data_dir), interval=2.0, clock=clock)
    assert set(watcher.current()) == {first.kid}
    second, _ = create_key(data_dir, "k2", "pos")
    clock.now += 1.9
    assert set(watcher.current()) == {first.kid}  # within the interval: not even a stat
    clock.now += 0.1
    assert set(watcher.current()) == {first.kid, second.kid}
    revoke_key(data_dir, first.kid)
    clock.now += 2
    assert watcher.current()[first.kid].is_revoked


def test_the_watcher_keeps_the_last_good_registry_while_the_file_is_broken(data_dir, caplog):
    first, _ = create_key(data_dir, "k1", "pos")
    clock = FakeClock()
    watcher = RegistryWatcher(registry_path(data_dir), clock=clock)
    good = registry_path(data_dir).read_text()
    registry_path(data_dir).write_text(good[:-20])  # a hand edit gone wrong, in place
    clock.now += 2
    assert set(watcher.current()) == {first.kid} and "not valid JSON" in watcher.error
    assert "not reloaded" in caplog.text
    registry_path(data_dir).write_text(good.replace('"revoked": null', '"revoked": "2026-11-26T10:00:00Z"'))
    clock.now += 2
    assert watcher.current()[first.kid].is_revoked and watcher.error is None


def test_the_watcher_refuses_to_start_on_a_broken_registry_and_sees_a_deleted_one_as_empty(data_dir):
    create_key(data_dir, "k1", "pos")
    clock = FakeClock()
    watcher = RegistryWatcher(registry_path(data_dir), clock=clock)
    registry_path(data_dir).unlink()
    clock.now += 2
    assert len(watcher.current()) == 0  # no file, no trusted key: fail closed
    registry_path(data_dir).write_text("[]")
    with pytest.raises(RegistryError):
        RegistryWatcher(registry_path(data_dir))


def test_the_watcher_on_the_real_clock(data_dir):
    create_key(data_dir, "k1", "pos")
    watcher = RegistryWatcher(registry_path(data_dir), interval=0.05)
    second, _ = create_key(data_dir, "k2", "pos")
    deadline = time.monotonic() + 5
    while second.kid not in watcher.current():
        assert time.monotonic() < deadline, "the change was not picked up"
        time.sleep(0.01)


def test_the_watcher_costs_a_clock_read_between_checks(data_dir, monkeypatch):
    create_key(data_dir, "k1", "pos")
    clock = FakeClock()
    watcher = RegistryWatcher(registry_path(data_dir), clock=clock)
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: calls.append(a) or real_stat(*a, **k))
    for _ in range(1000):
        watcher.current()
    assert calls == []
    clock.now += 2
    watcher.current()
    assert len(calls) == 1


# --- the role table --------------------------------------------------------------------------------------

def test_every_contract_type_is_inbound_or_internal_and_inbound_ones_have_a_role():
    assert INBOUND_TYPES | INTERNAL_TYPES == set(EVENT_TYPES)
    assert not INBOUND_TYPES & INTERNAL_TYPES
    # A manifest comes from whoever ships: the manufacturer, a distributor, the retailer's DC.
    # Types several roles publish: advance ship notices (manufacturer, distributor, the retailer's DC);
    # a void (every role whose facts may be voided: a till, a warehouse).
    shared_by = {"shipment.dispatched": 3, "event.voided": 2}
    for event_type in INBOUND_TYPES:
        others = 0 if event_type in OPERATOR_ONLY_TYPES else shared_by.get(event_type, 1)  # erasure: the operator alone
        assert "operator" in roles_for_type(event_type) and len(roles_for_type(event_type)) == 1 + others, event_type
    for event_type in INTERNAL_TYPES:
        assert roles_for_type(event_type) == ()


def _contract_classes_published_in(path: Path) -> set[str]:
    """Event types whose contract class a service module instantiates or hands to make_trusted_event."""
    by_class = {model.__name__: event_type for event_type, model in EVENT_TYPES.items()}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            names = [node.func] + (node.args[:1] if getattr(node.func, "id", None) == "make_trusted_event" else [])
            found.update(by_class[n.id] for n in names if isinstance(n, ast.Name) and n.id in by_class)
    return found


@pytest.mark.parametrize("service", sorted(SERVICE_TYPES))
def test_internal_types_are_those_each_service_publishes(service):
    """Checked against the services' code: the internal types a service builds are the ones the
    table gives it (the Redis ACL work trusts this table to let only that service write them)."""
    # Each service's erasure report is built once for all of them, around its handler.
    built = _contract_classes_published_in(ROOT / "shared" / "erasure.py")
    assert built == set(REPORTED_BY_EVERY_SERVICE)
    for path in (ROOT / "services" / service).glob("*.py"):
        if path.name != "api.py":  # the HTTP API publishes requests: inbound types (see shared/roles.py)
            built |= _contract_classes_published_in(path)
    assert built & INTERNAL_TYPES == set(SERVICE_TYPES[service])

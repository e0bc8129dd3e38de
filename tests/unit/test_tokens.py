"""The token registry, the pseudonyms and the redaction helpers, on real files."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import APIRouter

from shared.auth import Principal, Pseudonyms, Shaper, allow, check_every_route_is_gated
from shared.redact import mask_url, redact
from shared.tokens import (
    InvalidTokenInput,
    TokenConflict,
    TokenWatcher,
    client_token,
    create_token,
    ensure_admin_token,
    load_registry,
    pseudonym_key,
    registry_path,
    revoke_token,
)


def test_a_token_verifies_only_while_active_and_only_with_its_secret(tmp_path):
    now = datetime(2026, 11, 1, tzinfo=UTC)
    token, record = create_token(tmp_path, "store", name="till-1", expires_days=2, now=now)
    registry = load_registry(registry_path(tmp_path))
    assert registry.verify(token, now + timedelta(days=1)) == record
    assert registry.verify(token, now + timedelta(days=2)) is None  # expired
    assert registry.verify(token[:-1] + ("A" if token[-1] != "A" else "B"), now) is None  # same id, other secret
    assert registry.verify("st_" + "0" * 16 + "_" + "A" * 43, now) is None
    assert registry.verify("", now) is None and registry.verify("Bearer x", now) is None
    revoke_token(tmp_path, "till-1", at=now)
    assert load_registry(registry_path(tmp_path)).verify(token, now + timedelta(hours=1)) is None
    assert token not in registry_path(tmp_path).read_text()
    assert stat.S_IMODE(registry_path(tmp_path).stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700


def test_names_are_never_reused_and_inputs_are_checked(tmp_path):
    create_token(tmp_path, "auditor", name="audit-2026")
    revoke_token(tmp_path, "audit-2026")
    with pytest.raises(TokenConflict, match="never reused"):
        create_token(tmp_path, "auditor", name="audit-2026")
    with pytest.raises(InvalidTokenInput, match="unknown role"):
        create_token(tmp_path, "operator")  # a bus role, not an HTTP one
    with pytest.raises(InvalidTokenInput, match="give --manufacturer"):
        create_token(tmp_path, "manufacturer")
    _, maker = create_token(tmp_path, "manufacturer", manufacturer=" ACME ")
    assert maker.manufacturer == "acme" and maker.name.startswith("manufacturer-")


def test_the_watcher_sees_a_revocation_within_its_interval_and_keeps_the_last_good_registry(tmp_path):
    clock = [0.0]
    token, _ = create_token(tmp_path, "admin", name="a")
    watcher = TokenWatcher(registry_path(tmp_path), interval=2.0, clock=lambda: clock[0])
    assert watcher.verify(token) is not None
    revoke_token(tmp_path, "a")
    clock[0] = 1.0
    assert watcher.verify(token) is not None  # not looked at yet: at most `interval` late
    clock[0] = 2.5
    assert watcher.verify(token) is None
    # A new token is known at once: an unknown id makes the watcher look.
    fresh, _ = create_token(tmp_path, "store", name="b")
    assert watcher.verify(fresh) is not None
    # A broken file: logged, the last good registry (with its revocation) stays in force.
    registry_path(tmp_path).write_text("{broken")
    clock[0] = 10.0
    assert watcher.verify(token) is None and watcher.verify(fresh) is not None
    assert "not JSON" in watcher.error


def test_no_registry_file_means_no_token_works(tmp_path):
    watcher = TokenWatcher(registry_path(tmp_path / "nowhere"))
    assert len(watcher.current()) == 0 and watcher.verify("st_" + "0" * 16 + "_" + "A" * 43) is None


def test_the_local_admin_token_is_reused_while_it_works_and_replaced_when_revoked(tmp_path):
    first = ensure_admin_token(tmp_path)
    assert ensure_admin_token(tmp_path) == first
    path = tmp_path / "credentials" / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    revoke_token(tmp_path / "tokens", "local-admin")
    second = ensure_admin_token(tmp_path)
    assert second != first and path.read_text().strip() == second
    assert load_registry(registry_path(tmp_path / "tokens")).by_name("local-admin-2").role == "admin"
    assert client_token(tmp_path, env={}) == second
    assert client_token(tmp_path, env={"SERIALTRACK_TOKEN": "st_x"}) == "st_x"


def test_pseudonyms_are_stable_keyed_and_not_the_value(tmp_path):
    key = pseudonym_key(tmp_path)
    assert pseudonym_key(tmp_path) == key and len(key) == 32
    assert stat.S_IMODE((tmp_path / "pseudonym.key").stat().st_mode) == 0o600
    same, other = Pseudonyms(tmp_path), Pseudonyms(tmp_path / "elsewhere")
    assert same("C-1") == Pseudonyms(tmp_path)("C-1") != same("C-2")
    assert same("C-1") != other("C-1")  # another installation's key: other pseudonyms
    assert same("C-1").startswith("anon-") and "C-1" not in same("C-1")


def test_the_shaper_hides_pseudonymizes_and_rewrites_free_text(tmp_path):
    fields = {"customer_id": "customer", "receipt_id": "receipt", "contact": "contact"}
    data = {"customer_id": "C-9", "receipt_id": "R-1", "nested": [{"contact": "555", "note": "3 claims by C-9"}]}
    pseudonyms = Pseudonyms(tmp_path)
    store = Shaper(fields, Principal("t", "store"), pseudonyms)(data)
    assert store == {"customer_id": None, "receipt_id": None,
                     "nested": [{"contact": None, "note": "3 claims by [hidden]"}]}
    audit = Shaper(fields, Principal("t", "auditor"), pseudonyms)(data)
    assert audit["customer_id"] == pseudonyms("C-9") and audit["nested"][0]["note"] == f"3 claims by {pseudonyms('C-9')}"
    investigator = Shaper(fields, Principal("t", "investigator"), pseudonyms)(data)
    assert investigator["receipt_id"] == "R-1" and investigator["nested"][0]["contact"] == "555"
    assert investigator["customer_id"] is None
    # Only prose is rewritten, and never by a value so short it would garble other text.
    short = Shaper(fields, Principal("t", "store"), pseudonyms)({"customer_id": "7", "detail": "day 7",
                                                                "at": "2026-07-07", "receipt_id": "R-1"})
    assert short == {"customer_id": None, "detail": "day 7", "at": "2026-07-07", "receipt_id": None}
    assert Principal("t", "admin").sees_everything() and not Principal("t", "customer-service").sees_everything()


def test_a_route_without_allow_stops_the_service_from_starting():
    router = APIRouter()

    @router.get("/gated", dependencies=[allow("store")])
    def gated():
        return {}

    check_every_route_is_gated(router.routes)

    @router.get("/forgotten")
    def forgotten():
        return {}

    with pytest.raises(RuntimeError, match="/forgotten"):
        check_every_route_is_gated(router.routes)


def test_urls_and_log_lines_lose_their_secrets():
    assert mask_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert mask_url("postgresql://inventory:pw@db:5432/inventory") == "postgresql://inventory:***@db:5432/inventory"
    assert mask_url("redis://127.0.0.1:6390/0") == "redis://127.0.0.1:6390/0"
    token = "st_0123456789abcdef_" + "x" * 43
    line = redact(f"GET /units Authorization: Bearer {token} and {token}")
    assert token not in line and "x" * 43 not in line
    assert json.dumps(redact("Bearer abc.def")) == '"Bearer [redacted]"'

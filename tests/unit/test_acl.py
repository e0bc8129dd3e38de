"""The ACL file `serialtrack up` writes (serialtrack/credentials.py, rules from shared/acl.py), without a
server: what it keeps across starts and what it rewrites. The rules' effect on a real Redis is in
tests/integration/test_redis_acl.py."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from serialtrack.credentials import ACL_FILE, prepare_embedded
from shared.acl import (
    ADMIN,
    AclError,
    credential_user,
    parse_acl_file,
    password_hash,
    producer_rules,
    reader,
    role_of,
    writer,
)
from shared.roles import ROLES
from shared.streams import Streams

CONSUMED = {"inventory": ("unit.sold",), "recalls": ("recall.issued",)}


def test_a_data_dir_without_users_gets_them_all_with_private_files(tmp_path):
    users = prepare_embedded(tmp_path, Streams(), 7001, consumed=CONSUMED)
    acl = parse_acl_file((tmp_path / ACL_FILE).read_text())
    assert acl["default"].on is False and acl["default"].secrets == ()
    expected = {ADMIN, *ROLES, "operator-reader", "archiver", reader("inventory"), writer("inventory"), reader("recalls"),
                writer("recalls")}
    assert set(users.urls) == expected and set(acl) == expected | {"default"}
    for name, url in users.urls.items():
        parts = urlsplit(url)
        assert (parts.username, parts.port) == (name, 7001)
        assert acl[name].secrets == (password_hash(parts.password),)  # only the hash is in the ACL file
        assert parts.password not in (tmp_path / ACL_FILE).read_text()
        assert (tmp_path / "credentials" / f"{name}.url").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ACL_FILE).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "credentials").stat().st_mode & 0o777 == 0o700
    assert len({urlsplit(u).password for u in users.urls.values()}) == len(users.urls)  # one password each


def test_a_restart_keeps_passwords_and_credentials_and_rewrites_rules_and_ports(tmp_path):
    first = prepare_embedded(tmp_path, Streams(), 7001, consumed=CONSUMED)
    till = credential_user("pos", "till-1")
    acl_path = tmp_path / ACL_FILE
    stale_rules = "~serialtrack:unit.sold resetchannels -@all +xadd"  # as an older build saved it
    acl_path.write_text(acl_path.read_text()
                        + f"user {till} off {password_hash('t')} {stale_rules}\n"
                        + f"user by-hand on {password_hash('h')} ~x +get\n")
    (tmp_path / "credentials" / f"{till}.url").write_text("redis://pos.till-1:t@127.0.0.1:7001/0\n")
    second = prepare_embedded(tmp_path, Streams(), 7002, consumed=CONSUMED)
    assert {n: urlsplit(u).password for n, u in second.urls.items()} == {
        n: urlsplit(u).password for n, u in first.urls.items()}
    assert all(urlsplit(u).port == 7002 for u in second.urls.values())
    acl = parse_acl_file(acl_path.read_text())
    assert acl[till].on is False and acl[till].secrets == (password_hash("t"),)  # revoked-off stays off
    assert acl[till].rules == producer_rules("pos", Streams())  # this build's rules for its role
    assert acl["by-hand"].rules == ("~x", "+get")  # a user this build does not know: kept as it was
    assert (tmp_path / "credentials" / f"{till}.url").read_text().strip() == "redis://pos.till-1:t@127.0.0.1:7002/0"


def test_rules_follow_the_prefix_and_escape_its_glob_characters():
    rules = producer_rules("pos", Streams("shop[1]*"))
    assert r"~shop\[1\]\*:unit.sold" in rules and "-@all" in rules and "+xadd" in rules
    assert not any(rule.startswith("~") and rule.endswith("*") for rule in rules)


def test_credential_names_go_into_urls_as_they_are():
    assert credential_user("law-enforcement", "metro-pd") == "law-enforcement.metro-pd"
    assert role_of("law-enforcement.metro-pd") == "law-enforcement" and role_of("inventory-reader") is None
    for bad in ("Till", "till_1", "-till", "till:1", "a" * 65, ""):
        with pytest.raises(AclError):
            credential_user("pos", bad)
    with pytest.raises(AclError):
        credential_user("cashier", "till-1")

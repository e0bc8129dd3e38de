"""`serialtrack keys ...` run as a user runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.keys import RegistryWatcher, registry_path
from shared.signing import SignatureRejected, load_signer, parse_envelope_json, verify

pytestmark = pytest.mark.e2e

SCRIPT = shutil.which("serialtrack", path=str(Path(sys.executable).parent)) or shutil.which("serialtrack")


def serialtrack(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERIALTRACK_")}
    env["SERIALTRACK_DATA_DIR"] = str(data_dir)
    assert SCRIPT is not None, "no serialtrack script next to this Python or on PATH"
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def ok(data_dir: Path, *args: str) -> str:
    result = serialtrack(data_dir, *args)
    assert result.returncode == 0, f"serialtrack {' '.join(args)}: {result.returncode}\n{result.stderr}"
    return result.stdout


def refused(data_dir: Path, *args: str, code: int) -> str:
    """A refused command: the exit code, nothing on stdout, one line on stderr (returned)."""
    result = serialtrack(data_dir, *args)
    assert (result.returncode, result.stdout) == (code, ""), result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


THEFT = {
    "specversion": "1.0", "id": "c-1", "source": "police/metro-pd/feed", "type": "theft.reported",
    "time": "2026-11-26T10:00:00Z", "data": {"manufacturer": "acme", "serial": "SN1", "agency": "metro-pd",
                                            "case_number": "C-1"},
}


def test_create_list_sign_rotate_revoke(tmp_path):
    assert SCRIPT, "the serialtrack console script is not installed"
    data = tmp_path / "data"
    created = json.loads(ok(data, "keys", "create", "metro-pd-2026", "--role", "law-enforcement",
                            "--agency", "metro-pd", "--source-prefix", "police/metro-pd", "--json"))
    assert created["role"] == "law-enforcement" and created["types"] == ["theft.recovered", "theft.reported"]
    private = Path(created["private_key_file"])
    assert private == data / "keys" / "private" / "metro-pd-2026.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600

    # A service watching the registry, as the consumers will.
    watcher = RegistryWatcher(registry_path(data), interval=0.05)
    signed = load_signer("metro-pd-2026", data).sign(THEFT)
    assert verify(parse_envelope_json(json.dumps(signed)), watcher.current()).kid == created["kid"]

    # Rotation: a second key for the same agency, then the first is revoked.
    text = ok(data, "keys", "create", "metro-pd-2027", "--role", "law-enforcement", "--agency", "metro-pd",
              "--source-prefix", "police/metro-pd")
    assert "metro-pd-2027-" in text and "private key:" in text
    listed = json.loads(ok(data, "keys", "list", "--json"))["keys"]
    assert [k["name"] for k in listed] == ["metro-pd-2026", "metro-pd-2027"]
    assert ok(data, "keys", "revoke", created["kid"]).startswith(f"revoked {created['kid']} at ")
    deadline = time.monotonic() + 5
    while not watcher.current()[created["kid"]].is_revoked:
        assert time.monotonic() < deadline, "the revocation was not picked up"
        time.sleep(0.02)
    with pytest.raises(SignatureRejected) as caught:
        verify(parse_envelope_json(json.dumps(signed)), watcher.current())
    assert caught.value.reason == "revoked_key"
    new_signed = load_signer("metro-pd-2027", data).sign(THEFT)
    assert verify(new_signed, watcher.current()).name == "metro-pd-2027"

    table = ok(data, "keys", "list").splitlines()
    assert table[0].split() == ["KID", "ROLE", "SOURCE", "PREFIX", "SPEAKS", "FOR", "OWNERSHIP", "CREATED",
                                "REVOKED"]
    revoked_row = next(line for line in table if line.startswith(created["kid"]))
    assert revoked_row.split()[-1] != "-" and "agency:metro-pd" in revoked_row


def test_a_key_trusted_for_ownership_transfers(tmp_path):
    """`--transfers-ownership`: persisted, listed, carried into what verify returns; refused for roles
    that cannot sign an owner registration."""
    data = tmp_path / "data"
    text = ok(data, "keys", "create", "after-sales", "--role", "owner-registry", "--transfers-ownership",
              "--source-prefix", "store/after-sales")
    assert "ownership:     transfers" in text
    ok(data, "keys", "create", "web-registrations", "--role", "owner-registry", "--source-prefix", "web")
    listed = {k["name"]: k for k in json.loads(ok(data, "keys", "list", "--json"))["keys"]}
    assert (listed["after-sales"]["transfers_ownership"], listed["web-registrations"]["transfers_ownership"]) == (
        True, False)
    table = ok(data, "keys", "list").splitlines()
    column = table[0].index("OWNERSHIP")
    # kid = name + "-" + 12 characters of base64url thumbprint, which may itself hold a "-"
    rows = {line.split()[0][:-13]: line[column:].split()[0] for line in table[1:]}
    assert rows == {"after-sales": "transfers", "web-registrations": "-"}

    registration = {"specversion": "1.0", "id": "reg-1", "source": "store/after-sales/desk-1",
                    "type": "warranty.owner.registered", "time": "2026-11-26T10:00:00Z",
                    "data": {"manufacturer": "acme", "serial": "SN1", "customer_id": "C-2", "channel": "store"}}
    from shared.keys import load_registry

    signed = load_signer("after-sales", data).sign(registration)
    assert verify(parse_envelope_json(json.dumps(signed)), load_registry(registry_path(data))).transfers_ownership

    error = refused(data, "keys", "create", "till", "--role", "pos", "--transfers-ownership", code=2)
    assert "--transfers-ownership is for owner-registry and operator keys, not pos" in error
    assert "till" not in ok(data, "keys", "list")


def test_a_partner_key_is_registered_from_its_public_key_file(tmp_path):
    data = tmp_path / "data"
    partner = Ed25519PrivateKey.generate()
    pem = tmp_path / "acme.pub.pem"
    pem.write_bytes(partner.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    added = json.loads(ok(data, "keys", "add", "acme-recalls", "--public-key", str(pem), "--role", "manufacturer",
                          "--manufacturer", "ACME", "--source-prefix", "acme/", "--json"))
    assert added["manufacturer"] == "acme" and "private_key_file" not in added
    assert not (data / "keys" / "private").exists()
    # The partner signs on their side with their own private key: the registry accepts it.
    from shared.keys import load_registry
    from shared.signing import sign_envelope

    recall = {"specversion": "1.0", "id": "rc-1", "source": "acme/recalls", "type": "recall.issued",
              "time": "2026-11-26T10:00:00Z", "data": {"recall_id": "RC-1", "manufacturer": "acme", "skus": ["TV"],
                                                       "hazard": "overheats", "remedy": "refund"}}
    signed = sign_envelope(recall, added["kid"], partner)
    assert verify(parse_envelope_json(json.dumps(signed)), load_registry(registry_path(data))).role == "manufacturer"


def test_errors_are_one_line_on_stderr_with_a_non_zero_exit(tmp_path):
    data = tmp_path / "data"
    assert "--agency" in refused(data, "keys", "create", "pd", "--role", "law-enforcement", code=2)
    assert "unknown role" in refused(data, "keys", "create", "pd", "--role", "janitor", code=2)
    assert "--manufacturer is for manufacturer" in refused(
        data, "keys", "create", "pd", "--role", "law-enforcement", "--agency", "a", "--manufacturer", "m", code=2)
    assert "not valid" in refused(data, "keys", "create", "../pd", "--role", "pos", code=2)
    ok(data, "keys", "create", "till-1", "--role", "pos")
    assert "already registered" in refused(data, "keys", "create", "till-1", "--role", "pos", code=1)
    assert "no key with kid" in refused(data, "keys", "revoke", "nope", code=1)
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    assert str(junk) in refused(data, "keys", "add", "p", "--public-key", str(junk), "--role", "pos", code=2)
    assert "cannot read" in refused(data, "keys", "add", "p", "--public-key", str(tmp_path / "missing"),
                                    "--role", "pos", code=2)
    registry_path(data).write_text("{broken")
    assert "not valid JSON" in refused(data, "keys", "list", code=1)
    assert "no keys registered" in ok(tmp_path / "empty", "keys", "list")

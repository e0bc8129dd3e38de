"""docs/signing.md and the README's signing section are followed by real producers: their numbers
must be right and their examples must run."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.keys import KeyRegistry, b64url_encode, make_kid, raw_public_key
from shared.roles import ROLE_TYPES
from shared.signing import REASONS, canonical_form, parse_envelope_json, sign_envelope, verify

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "signing.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def field(pattern: str) -> str:
    match = re.search(pattern, DOC)
    assert match, f"docs/signing.md lacks {pattern}"
    return match.group(1)


SEED = field(r"private key \(32-byte seed, hex\) \| `([0-9a-f]{64})`")
PUBLIC = field(r"public key \(base64url\) \| `([A-Za-z0-9_-]+)`")
KID = field(r"\| kid \| `([^`]+)`")
ENVELOPE = json.loads(blocks(DOC, "json")[1])
CANONICAL, SIG = (b.strip() for b in blocks(DOC, "text")[:2])


def test_the_worked_example_numbers_are_what_the_code_computes():
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SEED))
    public = raw_public_key(key.public_key())
    assert PUBLIC == b64url_encode(public)
    assert KID == make_kid("metro-pd-2026", public)
    assert canonical_form(ENVELOPE) == CANONICAL.encode("utf-8")
    signed = sign_envelope(ENVELOPE, KID, key)
    assert signed["signature"] == {"alg": "Ed25519", "kid": KID, "sig": SIG}
    registry = KeyRegistry.from_json(json.loads(blocks(DOC, "json")[2]))  # the registry file shown
    assert verify(parse_envelope_json(json.dumps(signed)), registry).kid == KID


def test_the_python_example_prints_the_documented_signature():
    [code] = blocks(DOC, "python")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "docs/signing.md", "exec"), {})  # noqa: S102 - our own documentation
    assert printed.getvalue().strip() == SIG


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_javascript_example_prints_the_documented_signature():
    [code] = blocks(DOC, "javascript")
    result = subprocess.run(["node", "-e", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == SIG


def test_the_readme_shows_the_same_example_and_every_reason_and_role():
    for text in (DOC, README):
        assert SIG in text and KID in text and CANONICAL in text
        for reason in REASONS:
            assert f"| `{reason}` |" in text, reason
        for role, types in ROLE_TYPES.items():
            if role == "operator":
                continue
            row = next(line for line in text.splitlines() if line.startswith(f"| `{role}` |"))
            assert set(re.findall(r"`([a-z_.]+)`", row.split("|")[2])) == set(types), role

"""The one pseudonym scheme: ``anon-`` and 16 hex digits of an HMAC-SHA256 with the installation's key.

Two users, one definition:
- the auditor's view of customers' data (``shared/auth.py``): values are replaced in the answer;
- erasure on request (``shared/erasure.py``): values are replaced in the stores, for good.

Both give the same pseudonym for the same value, and a pseudonym is never pseudonymized again, so a
customer erased from the stores still has the pseudonym an auditor saw before. The key
(``<tokens dir>/pseudonym.key``, 0600, made on first use by whichever process needs it first) is
what makes a pseudonym irreversible: whoever holds it can test a guessed id, nobody else can.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from .tokens import pseudonym_key

PREFIX = "anon-"
_PSEUDONYM = re.compile(r"^anon-[0-9a-f]{16}$")


def is_pseudonym(value: str) -> bool:
    # The prefix first: called for every customer id and receipt of every batch once something was erased.
    return value.startswith(PREFIX) and bool(_PSEUDONYM.match(value))


def pseudonym(key: bytes, value: str) -> str:
    """``value``'s pseudonym; a pseudonym stays as it is (erased data seen by an auditor)."""
    if is_pseudonym(value):
        return value
    # hmac.digest: OpenSSL's one-shot HMAC, no Python object per call (a batch may need a thousand).
    return PREFIX + hmac.digest(key, value.encode("utf-8"), hashlib.sha256).hex()[:16]


class Pseudonyms:
    """``pseudonyms(value)`` with the key of a tokens directory, read on first use (raises OSError or
    shared.tokens.TokensError when it cannot be read or made)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._key: bytes | None = None

    def __call__(self, value: str) -> str:
        if self._key is None:
            self._key = pseudonym_key(self.directory)
        return pseudonym(self._key, value)

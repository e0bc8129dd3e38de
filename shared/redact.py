"""Secrets out of what people read: passwords in URLs, API tokens in log lines."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# An API token (shared/tokens.py) or whatever follows "Bearer": never written to a log.
_SECRETS = re.compile(r"\bst_[0-9a-f]{16}_[A-Za-z0-9_-]+|(?<=Bearer )[^\s'\",]+", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://:***@host:6379/0``; URLs without a password unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redact(text: str) -> str:
    return _SECRETS.sub("[redacted]", text)

"""Redis clients that send only commands our ACL users may run (shared/acl.py).

redis-py 8 sends ``CLIENT SETINFO`` (library name and version) and, on RESP3, ``CLIENT
MAINT_NOTIFICATIONS`` on every new connection. Neither is needed, and neither can be granted in one
rule set for Redis 6.2 and 7.0 (6.2 would need all of CLIENT, which includes CLIENT KILL and CLIENT
PAUSE; 7.0 refuses a rule naming SETINFO, which it does not have). Refused, they are harmless to the
connection but fill ACL LOG, where an operator looks for real refusals. So every client of this
project is made here, without them. FastStream adds its own driver info to every connection it
makes, hence a connection class that drops it.

Imports only redis: the CLI uses it in commands that must answer quickly.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.maint_notifications import MaintNotificationsConfig


def client_options() -> dict[str, Any]:
    """Keyword arguments for redis-py clients and pools (sync and asyncio)."""
    return {"driver_info": None, "maint_notifications_config": MaintNotificationsConfig(enabled=False)}


class QuietConnection(aioredis.Connection):
    """An asyncio connection without CLIENT SETINFO, whatever driver info its pool passes (FastStream
    passes its own)."""

    def __init__(self, **kwargs: Any):
        kwargs["driver_info"] = None
        kwargs.pop("lib_name", None)
        kwargs.pop("lib_version", None)
        super().__init__(**kwargs)


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    return redis.Redis.from_url(url, **client_options(), **kwargs)


def async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    return aioredis.from_url(url, **client_options(), **kwargs)


def user_of(url: str) -> str | None:
    """The user a redis:// URL authenticates as (None: the default user)."""
    return urlsplit(url).username or None


def without_password(url: str) -> str:
    """The URL to show in messages and logs: the password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{user}:***@{host}{port}").geturl()

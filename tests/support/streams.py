"""Stream entries as the tests read them, typed.

redis-py types every XRANGE entry as (bytes | str | None, dict | None), whichever way the client
decodes: these say which it is (a client's decode_responses decides), and that XRANGE returns
an empty list, not None, for a missing stream."""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

RawEntry = tuple[bytes, dict[bytes, bytes]]
TextEntry = tuple[str, dict[str, str]]


async def raw_entries(client: aioredis.Redis, stream: str) -> list[RawEntry]:
    """XRANGE of a client made with decode_responses=False (the default)."""
    return cast(list[RawEntry], await client.xrange(stream) or [])


async def text_entries(client: aioredis.Redis, stream: str) -> list[TextEntry]:
    """XRANGE of a client made with decode_responses=True."""
    return cast(list[TextEntry], await client.xrange(stream) or [])

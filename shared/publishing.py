"""Writing envelopes to their streams: plain XADD of the documented wire format, pipelined.

No MAXLEN on purpose: approximate trimming ignores whether consumer groups
have read an entry, so a stopped service would silently lose events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from .envelope import ENTRY_FIELD, Envelope
from .roles import signature_required
from .streams import Streams

if TYPE_CHECKING:
    from .signing import Signer

PIPELINE_SIZE = 1000


async def publish_raw(redis: aioredis.Redis, entries: Sequence[tuple[str, str | bytes]]) -> list[str]:
    """(stream, envelope JSON) pairs -> stream entry ids, in order."""
    ids: list[str] = []
    for start in range(0, len(entries), PIPELINE_SIZE):
        pipe = redis.pipeline(transaction=False)
        for stream, body in entries[start:start + PIPELINE_SIZE]:
            pipe.xadd(stream, {ENTRY_FIELD: body})
        ids.extend(i.decode() if isinstance(i, bytes) else i for i in await pipe.execute())
    return ids


async def publish(redis: aioredis.Redis, streams: Streams, envelopes: Iterable[Envelope],
                  signer: Signer | None = None) -> list[str]:
    """Envelopes to their streams; those whose type must be signed are signed by ``signer``."""
    return await publish_raw(redis, [
        (streams.for_type(e.type),
         signer.entry_body(e) if signer and signature_required(e.type) else e.model_dump_json(exclude_none=True))
        for e in envelopes
    ])

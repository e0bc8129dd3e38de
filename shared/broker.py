"""The one broker factory and the one Redis client factory."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from faststream.redis import RedisBroker


def make_broker(redis_url: str) -> RedisBroker:
    # Per-message consume logs at DEBUG: at tens of thousands of events/s INFO logging
    # would cost more than the work. graceful_timeout lets in-flight batches commit on stop.
    return RedisBroker(redis_url, log_level=logging.DEBUG, graceful_timeout=30)


def make_redis(redis_url: str) -> aioredis.Redis:
    return aioredis.from_url(redis_url, health_check_interval=10, socket_keepalive=True)

"""The one broker factory and the one Redis client factory."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from faststream.redis import RedisBroker, RedisClusterBroker

from .redis_clients import QuietConnection, async_client, client_options, cluster_url


def make_broker(redis_url: str) -> RedisBroker:
    # FastStream logs every message and every task callback at INFO: at tens of thousands of
    # events/s that costs more than the work. Its warnings and errors still show.
    logger = logging.getLogger("serialtrack.faststream")
    logger.setLevel(logging.WARNING)
    # graceful_timeout lets in-flight batches commit on stop. apply_types=False: our handlers take
    # the raw batch and need no dependency injection, whose message look-up ran in a worker
    # thread for every batch (a thread hop per batch).
    # QuietConnection and client_options(): no commands the service's Redis user may not run
    # (shared/redis_clients.py).
    plain = cluster_url(redis_url)
    if plain is not None:  # a Redis Cluster: each stream's commands go to the node that holds it
        return RedisClusterBroker(plain, logger=logger, log_level=logging.DEBUG, graceful_timeout=30,
                                  apply_types=False, **client_options())
    return RedisBroker(redis_url, logger=logger, log_level=logging.DEBUG, graceful_timeout=30, apply_types=False,
                       connection_class=QuietConnection, **client_options())


def make_redis(redis_url: str) -> aioredis.Redis:
    return async_client(redis_url, health_check_interval=10, socket_keepalive=True)

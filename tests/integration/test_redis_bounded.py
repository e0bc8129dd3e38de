"""Redis bounded, loudly (issue 12, fault 4): `serialtrack up` runs its Redis with a maxmemory and
``noeviction``. At the limit a real redis-server refuses the write and keeps every entry it had; the
CLI says so in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis

from serialtrack.redis_server import RedisServerProcess, maxmemory_bytes, physical_memory
from shared.stream_stats import redis_memory


@pytest.mark.parametrize(("setting", "expected"), [
    ("4gb", 4 * 1024**3), ("512MB", 512 * 1024**2), ("2g", 2 * 1000**3), ("1000000", 1_000_000), ("64 kb", 65536)])
def test_a_size_is_read_as_redis_reads_it(setting, expected):
    assert maxmemory_bytes(setting) == expected


def test_a_share_is_of_this_machines_memory_and_nonsense_is_refused():
    assert maxmemory_bytes("25%") == physical_memory() // 4
    for bad in ("0%", "150%", "lots", "-1gb", "1tb"):
        with pytest.raises(ValueError):
            maxmemory_bytes(bad)


def test_at_maxmemory_writes_are_refused_and_nothing_is_evicted(tmp_path):
    server = RedisServerProcess(tmp_path / "redis", maxmemory=3 * 1024**2).start()
    try:
        client = redis.Redis.from_url(server.url)
        memory = redis_memory(client.info("memory"))
        assert memory["maxmemory_bytes"] == 3 * 1024**2 and memory["policy"] == "noeviction"
        added, refusal = 0, None
        payload = "x" * 2000
        while refusal is None and added < 10_000:
            try:
                client.xadd("serialtrack:unit.received", {"event": payload})
                added += 1
            except redis.exceptions.OutOfMemoryError as exc:  # -OOM command not allowed ...
                refusal = exc
        assert refusal is not None and "maxmemory" in str(refusal)
        assert client.xlen("serialtrack:unit.received") == added  # every entry it took, it kept

        env = {**os.environ, "REDIS_URL": server.url, "SERIALTRACK_DATA_DIR": str(tmp_path / "data")}
        result = subprocess.run([sys.executable, "-m", "serialtrack.cli", "publish", "unit.received", "--data",
                                 json.dumps({"manufacturer": "acme", "serial": "FULL-1", "sku": "TV-55",
                                             "location": "dc"})],
                                env=env, capture_output=True, text=True, timeout=60, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert "Redis is full" in lines[0] and "SERIALTRACK_REDIS_MAXMEMORY" in lines[0]
        client.close()
    finally:
        server.stop()

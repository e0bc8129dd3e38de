"""The one settings object. Every value comes from an environment variable (names below).

| variable | default | meaning |
| --- | --- | --- |
| REDIS_URL | (embedded) | Redis server, and the user a service reads, acks and claims as; unset: `serialtrack up` starts an embedded one, with one Redis user per service and role (README: Redis users and credentials); `redis-cluster://host:port` names a Redis Cluster (shared/redis_clients.py) |
| REDIS_WRITER_URL | REDIS_URL | the user a service publishes (outbox, HTTP submissions) and dead-letters as |
| SERIALTRACK_DATA_DIR | ./serialtrack-data | SQLite files, embedded Redis AOF, runtime files |
| SERIALTRACK_STREAM_PREFIX | serialtrack | prefix of every stream name |
| <SERVICE>_DATABASE_URL | sqlite in the data dir | e.g. INVENTORY_DATABASE_URL=postgresql://user@host/inventory |
| <SERVICE>_PORT | 8001 inventory, 8002 warranty, 8003 theft, 8004 recalls | HTTP read API port |
| SERIALTRACK_HTTP_HOST | 127.0.0.1 | HTTP bind address (0.0.0.0 in containers) |
| SERIALTRACK_BATCH_SIZE | 500 | entries per XREADGROUP |
| SERIALTRACK_POLL_MS | 100 | XREADGROUP block time |
| SERIALTRACK_CLAIM_IDLE_MS | 60000 | an entry pending this long is reclaimed (crashed consumer); keep above the slowest batch |
| SERIALTRACK_MAX_DELIVERIES | 5 | deliveries of an entry whose handler fails before it is dead-lettered |
| SERIALTRACK_WORKER_ID | 0 | distinguishes processes of one service on one host; the consumer name is <service>-<host>-<worker id> (docs/scaling.md) |
| SERIALTRACK_EMBEDDED_REDIS_PORT | 6390 | port of the embedded Redis started by `serialtrack up` |
| SERIALTRACK_REDIS_MAXMEMORY | 25% | memory limit of the embedded Redis (`maxmemory`, with `noeviction`: at the limit it refuses writes instead of dropping entries): a share of this machine's RAM (`25%`) or a size (`4gb`, `512mb`, bytes) |
| SERIALTRACK_RESTART_BACKOFF_MAX_S | 60 | `serialtrack up`: longest wait before restarting a child (a service, the embedded Redis) that keeps dying; the wait doubles from 1 s with each death in a row |
| SERIALTRACK_MIGRATE | true | migrate the service's database at start; false: refuse to start on a database that is behind (run `serialtrack migrate`) |
| SERIALTRACK_REQUIRE_SIGNATURES | false | require a valid signature on every inbound type, not only theft, recall, policy and owner events |
| SERIALTRACK_LOG_FORMAT | text | service log lines: `text`, or `json` (one object per line: time, level, service, logger, message, trace_id) |
| SERIALTRACK_LINGER_MS | 5 | after a read that was not full, wait this long before the next read of that stream |
| SERIALTRACK_TOKENS_DIR | <data dir>/tokens | HTTP API token registry (registry.json) and pseudonym key; e.g. a mounted secret |
| SERIALTRACK_RETENTION_SECONDS | 604800 (7 days) | an event stream's entry is archived and trimmed from Redis once every group that reads it acked it and it is older than this (docs/retention.md) |
| SERIALTRACK_DEADLETTER_RETENTION_SECONDS | 2592000 (30 days) | the same for dead-letter streams (no group reads them) |
| SERIALTRACK_ARCHIVE_DIR | <data dir>/archive | where trimmed entries are archived (compressed JSONL per stream and UTC day) |
| SERIALTRACK_ARCHIVE_INTERVAL_SECONDS | 60 | seconds between two passes of the archiver (`serialtrack archive`, run by `serialtrack up`) |
| SERIALTRACK_CONSOLE_PORT | 8000 | the web console's port (serialtrack/console); `serialtrack up` takes a free one if it is taken |
| SERIALTRACK_TOKEN | (none) | CLI: the API token to send; else $SERIALTRACK_TOKEN_FILE, else <data dir>/credentials/admin.token |
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .streams import DEFAULT_PREFIX, Streams

SERVICES = ("inventory", "warranty", "theft", "recalls")
DEFAULT_PORTS = {"inventory": 8001, "warranty": 8002, "theft": 8003, "recalls": 8004}
REDIS_URL_FILE = "run/redis.url"  # the embedded Redis's address (no credential in it): `serialtrack up` is running
CREDENTIALS_DIR = "credentials"  # <user>.url, mode 0600: the embedded Redis's users (serialtrack/credentials.py)


class NoRedisConfigured(RuntimeError):
    pass


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    redis_writer_url: str | None = Field(default=None, validation_alias="REDIS_WRITER_URL")
    data_dir: Path = Field(default=Path("serialtrack-data"), validation_alias="SERIALTRACK_DATA_DIR")
    stream_prefix: str = Field(default=DEFAULT_PREFIX, validation_alias="SERIALTRACK_STREAM_PREFIX")
    http_host: str = Field(default="127.0.0.1", validation_alias="SERIALTRACK_HTTP_HOST")

    inventory_database_url: str | None = Field(default=None, validation_alias="INVENTORY_DATABASE_URL")
    warranty_database_url: str | None = Field(default=None, validation_alias="WARRANTY_DATABASE_URL")
    theft_database_url: str | None = Field(default=None, validation_alias="THEFT_DATABASE_URL")
    recalls_database_url: str | None = Field(default=None, validation_alias="RECALLS_DATABASE_URL")

    inventory_port: int = Field(default=DEFAULT_PORTS["inventory"], validation_alias="INVENTORY_PORT")
    warranty_port: int = Field(default=DEFAULT_PORTS["warranty"], validation_alias="WARRANTY_PORT")
    theft_port: int = Field(default=DEFAULT_PORTS["theft"], validation_alias="THEFT_PORT")
    recalls_port: int = Field(default=DEFAULT_PORTS["recalls"], validation_alias="RECALLS_PORT")

    batch_size: int = Field(default=500, ge=1, le=10_000, validation_alias="SERIALTRACK_BATCH_SIZE")
    poll_ms: int = Field(default=100, ge=1, validation_alias="SERIALTRACK_POLL_MS")
    linger_ms: int = Field(default=5, ge=0, le=1000, validation_alias="SERIALTRACK_LINGER_MS")
    # How often an idle service runs its housekeeping (ServiceDefinition.housekeeping: inventory checks
    # the manifests whose deadline passed); a busy one does it in its batches.
    housekeeping_s: float = Field(default=30.0, gt=0, le=3600, validation_alias="SERIALTRACK_HOUSEKEEPING_S")
    claim_idle_ms: int = Field(default=60_000, ge=10, validation_alias="SERIALTRACK_CLAIM_IDLE_MS")
    max_deliveries: int = Field(default=5, ge=1, validation_alias="SERIALTRACK_MAX_DELIVERIES")
    worker_id: str = Field(default="0", validation_alias="SERIALTRACK_WORKER_ID")
    embedded_redis_port: int = Field(default=6390, validation_alias="SERIALTRACK_EMBEDDED_REDIS_PORT")
    redis_maxmemory: str = Field(default="25%", pattern=r"(?i)^\s*\d+(\.\d+)?\s*(%|b|k|kb|m|mb|g|gb)?\s*$",
                                 validation_alias="SERIALTRACK_REDIS_MAXMEMORY")
    restart_backoff_max_s: float = Field(default=60.0, ge=1.0, validation_alias="SERIALTRACK_RESTART_BACKOFF_MAX_S")
    migrate: bool = Field(default=True, validation_alias="SERIALTRACK_MIGRATE")
    require_signatures: bool = Field(default=False, validation_alias="SERIALTRACK_REQUIRE_SIGNATURES")
    log_format: Literal["text", "json"] = Field(default="text", validation_alias="SERIALTRACK_LOG_FORMAT")
    tokens_dir_override: Path | None = Field(default=None, validation_alias="SERIALTRACK_TOKENS_DIR")
    retention_seconds: float = Field(default=7 * 86400, gt=0, validation_alias="SERIALTRACK_RETENTION_SECONDS")
    deadletter_retention_seconds: float = Field(default=30 * 86400, gt=0,
                                                validation_alias="SERIALTRACK_DEADLETTER_RETENTION_SECONDS")
    archive_dir_override: Path | None = Field(default=None, validation_alias="SERIALTRACK_ARCHIVE_DIR")
    archive_interval_seconds: float = Field(default=60, gt=0, validation_alias="SERIALTRACK_ARCHIVE_INTERVAL_SECONDS")
    console_port: int = Field(default=8000, validation_alias="SERIALTRACK_CONSOLE_PORT")

    @property
    def streams(self) -> Streams:
        return Streams(self.stream_prefix)

    def database_url(self, service: str) -> str:
        url = getattr(self, f"{service}_database_url")
        return url or f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    @property
    def tokens_dir(self) -> Path:
        """Where the HTTP API token registry and the pseudonym key are (shared/tokens.py)."""
        return self.tokens_dir_override or self.data_dir / "tokens"

    @property
    def archive_dir(self) -> Path:
        """Where the archiver keeps what it trimmed from Redis (shared/retention.py)."""
        return self.archive_dir_override or self.data_dir / "archive"

    def port(self, service: str) -> int:
        return getattr(self, f"{service}_port")

    def service_url(self, service: str) -> str:
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
        return f"http://{host}:{self.port(service)}"

    def consumer_name(self, service: str) -> str:
        # Stable across restarts of one process slot, unique per process.
        return f"{service}-{socket.gethostname()}-{self.worker_id}"

    def credential_file(self, user: str) -> Path:
        return self.data_dir / CREDENTIALS_DIR / f"{user}.url"

    def resolve_redis_url(self, user: str = "operator") -> str:
        """REDIS_URL, else the URL of ``user`` on the embedded Redis of a running `serialtrack up`
        (its credential in the data dir: ``operator`` publishes, ``operator-reader`` reads)."""
        if self.redis_url:
            return self.redis_url
        recorded = self.data_dir / REDIS_URL_FILE
        if not recorded.is_file():
            raise NoRedisConfigured(
                f"no Redis to talk to: set REDIS_URL, or start the system with `serialtrack up` "
                f"(it records its embedded Redis in {recorded})"
            )
        credential = self.credential_file(user)
        if not credential.is_file():
            raise NoRedisConfigured(f"the embedded Redis is running but there is no credential {credential}; "
                                    "restart `serialtrack up` to create it, or set REDIS_URL")
        return credential.read_text().strip()

    def service_redis_urls(self, service: str) -> tuple[str, str]:
        """(reader, writer) URLs of a service: REDIS_URL and REDIS_WRITER_URL (default: REDIS_URL, for a
        Redis without ACLs), else the service's two users on the embedded Redis."""
        if self.redis_url:
            return self.redis_url, self.redis_writer_url or self.redis_url
        return self.resolve_redis_url(f"{service}-reader"), self.resolve_redis_url(f"{service}-writer")

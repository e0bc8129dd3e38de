"""What every benchmark needs: a fresh Redis, a fresh store, the service as its own process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from serialtrack.redis_server import RedisServerProcess, free_port
from shared.settings import Settings
from shared.store import InboxRow, OutboxRow, make_engine


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


@contextmanager
def environment(database_url: str | None = None, **overrides):
    """Redis (AOF everysec, like `serialtrack up`) and settings pointing at a fresh SQLite file."""
    with tempfile.TemporaryDirectory(prefix="serialtrack-bench-") as tmp:
        redis = RedisServerProcess(Path(tmp) / "redis").start()
        try:
            url = database_url or f"sqlite:///{tmp}/inventory.db"
            settings = Settings(redis_url=redis.url, data_dir=Path(tmp), inventory_database_url=url,
                                inventory_port=free_port(), **overrides)
            yield settings
        finally:
            redis.stop()


@contextmanager
def service_process(service: str, settings: Settings, worker: int = 0, start_timeout: float = 60):
    """`serialtrack serve SERVICE` as worker ``worker`` of its consumer group; workers after the first
    get their own HTTP port (two processes cannot listen on one)."""
    if worker:
        settings = settings.model_copy(update={f"{service}_port": free_port()})
    env = dict(os.environ)
    env["SERIALTRACK_WORKER_ID"] = str(worker)
    env.update({
        "REDIS_URL": settings.resolve_redis_url(), "SERIALTRACK_DATA_DIR": str(settings.data_dir),
        f"{service.upper()}_DATABASE_URL": settings.database_url(service),
        f"{service.upper()}_PORT": str(settings.port(service)),
        "SERIALTRACK_BATCH_SIZE": str(settings.batch_size), "SERIALTRACK_CLAIM_IDLE_MS": str(settings.claim_idle_ms),
    })
    process = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "serve", service], env=env)
    try:
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(settings.service_url(service) + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{service} did not start")
        yield process
    finally:
        process.terminate()
        process.wait(60)


def applied(engine, service: str) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(InboxRow)
                               .where(col(InboxRow.service) == service)).scalar_one()


def has_applied(engine, service: str, event) -> bool:
    """Whether ``service`` committed ``event`` (a primary-key probe: cheap enough to poll)."""
    with Session(engine) as session:
        return session.get(InboxRow, (service, event.id, event.source)) is not None


def outbox_empty(engine) -> bool:
    with Session(engine) as session:
        return session.scalar(select(col(OutboxRow.seq)).limit(1)) is None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def store_engine(settings: Settings, service: str):
    return make_engine(settings.database_url(service))

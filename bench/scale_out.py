"""Scale-out: every service (inventory, warranty, theft, recalls) as N `serialtrack serve` processes,
each service on its own PostgreSQL database, draining a backlog of a point-of-sale mix
(docs/scaling.md).

    .venv/bin/python -m bench.scale_out --events 100000 --workers 1
    .venv/bin/python -m bench.scale_out --events 100000 --workers 2
    .venv/bin/python -m bench.scale_out --events 20000 --workers 2 --mix hot-units   # worst case

--admin-url names a PostgreSQL server and a user that may create databases (default: the local
trust one); four databases are created for the run and dropped after it.

Mixes:
- pos (default): per unit, a receipt, a sale (to one of 5,000 customers), and for some units a
  return (10%) with a resale (5%), a transfer before the sale (10%), a warranty claim (3%) or a
  police theft report (1%), in time order, units interleaved; all published before the services
  start (a backlog), on their own streams.
- hot-units: the same kinds of events, all on ``--hot-units`` units (default 20): every batch of
  every process wants the same few unit locks.

Reported: seconds from the first commit to the last (inbox times, every service), events/s, CPU
per event of each service (all its processes), Redis memory per published event, and per event
the bytes each service's database grew and PostgreSQL's WAL (server-wide: other work on the
server counts too).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import redis
import redis.asyncio as aioredis
from sqlalchemy import Engine, create_engine, text

from bench.harness import cpu_seconds, machine
from serialtrack.redis_server import RedisServerProcess, free_port
from services.registry import INSTALLED, load
from shared.contracts import (
    EventData,
    TheftReported,
    UnitReceived,
    UnitReturned,
    UnitSold,
    UnitTransferred,
    WarrantyClaimSubmitted,
)
from shared.envelope import make_event
from shared.publishing import publish
from shared.settings import Settings
from shared.signing import operator_signer
from shared.streams import group_for


def pos_mix(total: int, hot_units: int | None, seed: int = 7) -> list:
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=1)
    events: list = []
    n = 0
    while len(events) < total:
        unit = n % hot_units if hot_units else n
        serial, t = f"P{unit:09d}", start + timedelta(milliseconds=len(events))
        customer, store = f"C{rng.randrange(5000)}", f"store-{rng.randrange(50)}"
        story: list[EventData] = [UnitReceived(manufacturer="acme", serial=serial, sku="TV-55", location="dc-1")]
        if rng.random() < 0.10:
            story.append(UnitTransferred(manufacturer="acme", serial=serial, from_location="dc-1", to_location=store))
        story.append(UnitSold(manufacturer="acme", serial=serial, sku="TV-55", location=store, terminal_id="till-1",
                              receipt_id=f"R-{n}", customer_id=customer))
        roll = rng.random()
        if roll < 0.10:
            story.append(UnitReturned(manufacturer="acme", serial=serial, location=store, receipt_id=f"R-{n}",
                                      condition="open_box", reason="changed mind"))
            if roll < 0.05:
                story.append(UnitSold(manufacturer="acme", serial=serial, sku="TV-55", location=store,
                                      terminal_id="till-2", receipt_id=f"R2-{n}"))
        if rng.random() < 0.03:
            story.append(WarrantyClaimSubmitted(claim_id=f"CL-{n}", manufacturer="acme", serial=serial,
                                                customer_id=customer, issue="no picture", location=store))
        if rng.random() < 0.01:
            story.append(TheftReported(manufacturer="acme", serial=serial, agency="metro-pd", case_number=f"K-{n}"))
        for k, data in enumerate(story):
            events.append(make_event(data, source="bench/pos", time=t + timedelta(microseconds=k)))
        n += 1
    return events[:total]


def drained(client: redis.Redis, settings: Settings, urls: dict[str, str]) -> bool:
    for service in INSTALLED:
        for event_type in load(service).event_types:
            stream = settings.streams.for_type(event_type)
            if not client.exists(stream):
                continue
            last = client.xinfo_stream(stream)["last-generated-id"]
            group = {g["name"].decode(): g for g in client.xinfo_groups(stream)}.get(group_for(service))
            if group is None or group["pending"] or group["last-delivered-id"] != last:
                return False
    for url in urls.values():
        with _engine(url).connect() as conn:
            if conn.execute(text("SELECT count(*) FROM outbox")).scalar_one():
                return False
    return True


_ENGINES: dict[str, Engine] = {}


def _engine(url: str):
    if url not in _ENGINES:
        _ENGINES[url] = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    return _ENGINES[url]


def scalar(url: str, sql: str):
    with _engine(url).connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def start_all(settings: Settings, workers: int, stack: ExitStack) -> dict[str, list[subprocess.Popen]]:
    """Every process of every service at once (on a busy host each takes a while to start), then
    wait until each answers /healthz."""
    processes: dict[str, list[subprocess.Popen]] = {s: [] for s in INSTALLED}
    ports = []
    envs: dict[int, dict[str, str]] = {}
    for worker in range(workers):
        for service in INSTALLED:
            port = free_port()
            env = dict(os.environ, SERIALTRACK_WORKER_ID=str(worker), REDIS_URL=settings.resolve_redis_url(),
                       SERIALTRACK_DATA_DIR=str(settings.data_dir), SERIALTRACK_BATCH_SIZE=str(settings.batch_size),
                       **{f"{service.upper()}_DATABASE_URL": settings.database_url(service),
                          f"{service.upper()}_PORT": str(port)})
            envs[port] = env
            process = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "serve", service], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(_stop, process)
            processes[service].append(process)
            ports.append((service, port, process))
    for service, port, process in ports:
        if not _healthy(port, process, 180):
            # FastStream gives each subscriber 3 s to start consuming, which a crowded host can miss:
            # start it again, as a supervisor would.
            _stop(process)
            worker = processes[service].index(process)
            processes[service][worker] = process = subprocess.Popen(process.args, env=envs[port],
                                                                     stdout=subprocess.DEVNULL,
                                                                     stderr=subprocess.DEVNULL)
            stack.callback(_stop, process)
            if not _healthy(port, process, 180):
                raise RuntimeError(f"{service} (port {port}) did not start")
    return processes


def _healthy(port: int, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1, help="processes per service")
    parser.add_argument("--mix", choices=("pos", "hot-units"), default="pos")
    parser.add_argument("--hot-units", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    admin = create_engine(args.admin_url.replace("postgresql://", "postgresql+psycopg://"),
                          isolation_level="AUTOCOMMIT")
    base = args.admin_url.rsplit("/", 1)[0]
    names = {s: f"scale_bench_{s}_{uuid.uuid4().hex[:8]}" for s in INSTALLED}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    urls = {s: f"{base}/{name}" for s, name in names.items()}
    events = pos_mix(args.events, args.hot_units if args.mix == "hot-units" else None)
    try:
        with tempfile.TemporaryDirectory(prefix="serialtrack-scale-") as tmp, ExitStack() as stack:
            server = RedisServerProcess(Path(tmp) / "redis").start()
            stack.callback(server.stop)
            overrides: dict = {f"{s}_database_url": u for s, u in urls.items()}
            overrides.update({f"{s}_port": free_port() for s in INSTALLED})
            settings = Settings(redis_url=server.url, data_dir=Path(tmp), batch_size=args.batch_size, **overrides)
            client = redis.Redis.from_url(server.url)
            memory_before = int(client.info("memory")["used_memory"])
            asyncio.run(_publish(settings, events))
            redis_per_event = (int(client.info("memory")["used_memory"]) - memory_before) / len(events)
            wal_before = int(scalar(args.admin_url, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
            processes = start_all(settings, args.workers, stack)
            cpu_before = {s: sum(cpu_seconds(p.pid) for p in ps) for s, ps in processes.items()}
            while not drained(client, settings, urls):
                time.sleep(0.5)
            cpu = {s: sum(cpu_seconds(p.pid) for p in ps) - cpu_before[s] for s, ps in processes.items()}
            wal = int(scalar(args.admin_url, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")) - wal_before
            first = min(scalar(u, "SELECT extract(epoch FROM min(processed_at)) FROM inbox") for u in urls.values())
            last = max(scalar(u, "SELECT extract(epoch FROM max(processed_at)) FROM inbox") for u in urls.values())
            applied = {s: scalar(u, "SELECT count(*) FROM inbox") for s, u in urls.items()}
            sizes = {s: scalar(u, "SELECT sum(pg_total_relation_size(relid)) FROM pg_stat_user_tables")
                     for s, u in urls.items()}
            client.close()
    finally:
        for engine in _ENGINES.values():
            engine.dispose()
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    elapsed = float(last - first)
    print(f"machine: {machine()}; PostgreSQL per service, {args.workers} process(es) per service, "
          f"batch size {args.batch_size}")
    print(f"events: {len(events)} published (mix {args.mix}"
          f"{f', {args.hot_units} units' if args.mix == 'hot-units' else ''}), drained as a backlog")
    print(f"first to last commit: {elapsed:.1f} s = {len(events) / elapsed:,.0f} published events/s")
    for s in INSTALLED:
        print(f"  {s:9} applied {applied[s]:>7,} events, CPU {cpu[s]:6.1f} s = {cpu[s] / applied[s] * 1e6:5.0f} us per "
              f"applied event; database {sizes[s] / len(events):,.0f} bytes per published event")
    print(f"Redis memory {redis_per_event:,.0f} bytes per published event; PostgreSQL WAL {wal / len(events):,.0f} "
          "bytes per published event (server-wide)")


async def _publish(settings: Settings, events: list) -> None:
    client = aioredis.Redis.from_url(settings.resolve_redis_url())
    try:
        for start in range(0, len(events), 5000):
            await publish(client, settings.streams, [e.envelope for e in events[start:start + 5000]],
                          operator_signer(settings.data_dir))
    finally:
        await client.aclose()


if __name__ == "__main__":
    main()

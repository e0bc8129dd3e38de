"""Inventory throughput and latency: N unit.received + unit.sold events through a real Redis into
`serialtrack serve inventory` (its own process) on SQLite (or --database-url).

    .venv/bin/python -m bench.inventory_throughput --events 200000
    .venv/bin/python -m bench.inventory_throughput --events 30000 --rate 5000   # paced: latency
    .venv/bin/python -m bench.inventory_throughput --mix same-units              # worst case
    .venv/bin/python -m bench.inventory_throughput --mix hot-units --backlog --workers 2  # contention
    .venv/bin/python -m bench.inventory_throughput --backlog --workers 2         # drain a backlog
    .venv/bin/python -m bench.inventory_throughput --backlog --random-ids        # UUIDv4 event ids
    .venv/bin/python -m bench.inventory_throughput --backlog --signed            # every event signed
    .venv/bin/python -m bench.inventory_throughput --backlog --erased 1000       # after 1,000 erasures

Mixes:
- steady (default): half receipts of new units, half sales of units received before the run
  (one bulk receipt, not timed), as in a store: what is sold now arrived earlier.
- same-units: each sale's receipt is published 1 ms before it. Receipts and sales travel on
  different streams, so under a backlog many sales are applied before their receipts and every
  such unit is refolded (and its "sold, never received" anomaly withdrawn): the worst case.
- hot-units: every event is a transfer of one of ``--hot-units`` units (received before the run),
  one stream, in time order: processes sharing the group contend for the same few unit locks
  (docs/scaling.md), and a batch that waited for another process's may find itself late.

Events/s = events fully applied (committed) / seconds from the first publish to the last commit.
Latency = commit time minus the event's time (set when it is published), p50/p99 over all events.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from sqlmodel import col

from bench.harness import applied, cpu_seconds, environment, machine, percentile, service_process, store_engine
from shared.contracts import UnitReceived, UnitSold, UnitTransferred
from shared.envelope import make_event
from shared.publishing import publish_raw
from shared.store import InboxRow, as_utc


def events_for(serials: list[str], kind: str, random_ids: bool = False, customers: bool = False) -> list:
    # A sale happens after its receipt (1 ms later): in-order history, as in a real store.
    now = datetime.now(UTC) + (timedelta(milliseconds=1) if kind == "sold" else timedelta())

    def new_id():  # None: make_event's time-ordered UUIDv7
        return str(uuid.uuid4()) if random_ids else None

    if kind == "received":
        return [make_event(UnitReceived(manufacturer="acme", serial=s, sku="TV-55", location="dc-1"),
                           source="bench/wms", time=now, id=new_id()) for s in serials]
    return [make_event(UnitSold(manufacturer="acme", serial=s, sku="TV-55", location="store-1",
                                terminal_id="till-1", receipt_id=f"R-{s}", customer_id=f"C-{s}" if customers else None),
                       source="bench/pos", time=now, id=new_id())
            for s in serials]


def erase_others(engine, count: int) -> None:
    """``count`` customers (none of the run's) erased before the run, as their pseudonyms."""
    from shared.store import ErasedRow, insert_rows, table_of, utcnow

    rows = [{"service": "inventory", "pseudonym": f"anon-{n:016x}", "kind": "customer", "erasure_id": "bench",
             "erased_at": utcnow()} for n in range(count)]
    with Session(engine) as session, session.begin():
        insert_rows(session, table_of(ErasedRow), rows)


async def publish_stock(settings, count: int, prefix: str = "S") -> None:
    """Units on the shelf before the run: one bulk receipt, applied before timing starts."""
    client = aioredis.from_url(settings.redis_url)
    stock = make_event(UnitReceived(manufacturer="acme", serial_range={"prefix": prefix, "first": 0,
                                                                       "last": count - 1, "width": 9},
                                    sku="TV-55", location="store-1"),
                       source="bench/wms", time=datetime.now(UTC) - timedelta(days=1))
    await publish_raw(client, [(settings.streams.for_type(stock.type), stock.envelope.model_dump_json())])
    await client.aclose()


def bench_signers(settings) -> dict[str, object]:
    """Keys of the bench's warehouse and tills, registered in its data dir: type -> Signer."""
    from shared.keys import create_key
    from shared.signing import load_signer

    create_key(settings.data_dir, "bench-wms", "warehouse", source_prefix="bench/wms")
    create_key(settings.data_dir, "bench-pos", "pos", source_prefix="bench/pos")
    return {"unit.received": load_signer("bench-wms", settings.data_dir),
            "unit.sold": load_signer("bench-pos", settings.data_dir)}


async def publish_transfers(client, streams, total: int, units: int, chunk: int, body) -> None:
    """``total`` transfers of ``units`` units between two stores, 1 ms apart, round robin."""
    start = datetime.now(UTC)
    stores = ("store-1", "store-2")
    for first in range(0, total, chunk):
        batch = [make_event(UnitTransferred(manufacturer="acme", serial=f"H{n % units:09d}",
                                            from_location=stores[(n // units) % 2],
                                            to_location=stores[(n // units + 1) % 2]),
                            source="bench/wms", time=start + timedelta(milliseconds=n))
                 for n in range(first, min(total, first + chunk))]
        await publish_raw(client, [(streams.for_type(e.type), body(e)) for e in batch])


async def publish_all(settings, total: int, rate: float | None, mix: str, chunk: int = 1000,
                      random_ids: bool = False, signers: dict | None = None, customers: bool = False,
                      hot_units: int = 20) -> float:
    client = aioredis.from_url(settings.redis_url)
    streams = settings.streams

    def body(event) -> str:
        if signers:
            return signers[event.type].entry_body(event.envelope, check=False)
        return event.envelope.model_dump_json(exclude_none=True)

    started = time.perf_counter()
    if mix == "hot-units":
        await publish_transfers(client, streams, total, hot_units, chunk, body)
        await client.aclose()
        return started
    sent = 0
    half = total // 2
    new_units = [f"B{n:09d}" for n in range(half)]
    sold_units = new_units if mix == "same-units" else [f"S{n:09d}" for n in range(half)]
    for start in range(0, half, chunk // 2):
        batch = (events_for(new_units[start:start + chunk // 2], "received", random_ids)
                 + events_for(sold_units[start:start + chunk // 2], "sold", random_ids, customers))
        await publish_raw(client, [(streams.for_type(e.type), body(e)) for e in batch])
        sent += len(batch)
        if rate:
            ahead = sent / rate - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    await client.aclose()
    return started


def redis_memory(settings) -> int:
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def wal_position(engine) -> int | None:
    """PostgreSQL's WAL insert position in bytes (server-wide); None on SQLite."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")).scalar_one())


def store_bytes(engine) -> int:
    """Bytes of the store's tables and indexes (PostgreSQL), or of the SQLite file and its WAL."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT sum(pg_total_relation_size(relid)) FROM pg_stat_user_tables"))
                       .scalar_one())
    path = Path(engine.url.database or "")
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def latencies(engine, since: datetime) -> list[float]:
    with Session(engine) as session:
        rows = session.execute(select(col(InboxRow.event_time), col(InboxRow.processed_at))
                               .where(col(InboxRow.event_time) >= since))
        return [(as_utc(done) - as_utc(happened)).total_seconds() * 1000 for happened, done in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=None, help="events/s to pace the publisher (default: flat out)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--mix", choices=("steady", "same-units", "hot-units"), default="steady")
    parser.add_argument("--hot-units", type=int, default=20, help="units of the hot-units mix")
    parser.add_argument("--backlog", action="store_true",
                        help="publish everything first, then time how fast the service drains it "
                             "(the publisher's CPU is then not shared with the service)")
    parser.add_argument("--workers", type=int, default=1, help="service processes sharing the consumer group")
    parser.add_argument("--random-ids", action="store_true",
                        help="publish with random UUIDv4 event ids instead of time-ordered UUIDv7 "
                             "(as a producer that does not follow the README's advice)")
    parser.add_argument("--signed", action="store_true",
                        help="sign every event (a warehouse key for receipts, a POS key for sales): "
                             "what verifying signatures costs the service")
    parser.add_argument("--erased", type=int, default=0,
                        help="sales carry customer ids, and the service has erased this many other customers "
                             "before the run: what pseudonymizing on arrival costs (shared/erasure.py)")
    args = parser.parse_args()

    with environment(args.database_url, batch_size=args.batch_size) as settings:
        engine = store_engine(settings, "inventory")
        signers = bench_signers(settings) if args.signed else None
        with ExitStack() as stack:
            first = stack.enter_context(service_process("inventory", settings))
            if args.mix in ("steady", "hot-units"):
                stock = args.hot_units if args.mix == "hot-units" else args.events // 2
                asyncio.run(publish_stock(settings, stock, "H" if args.mix == "hot-units" else "S"))
                while applied(engine, "inventory") < 1:
                    time.sleep(0.05)
            baseline = applied(engine, "inventory")
            if args.erased:
                erase_others(engine, args.erased)
            wall_clock_start = datetime.now(UTC) - timedelta(seconds=1)
            if args.backlog:  # stop the service, publish everything, start the services again
                stack.close()
                published_in = time.perf_counter()
                redis_before = redis_memory(settings)
                asyncio.run(publish_all(settings, args.events, None, args.mix, random_ids=args.random_ids,
                                        signers=signers, customers=bool(args.erased), hot_units=args.hot_units))
                published_in = time.perf_counter() - published_in
                redis_per_event = (redis_memory(settings) - redis_before) / args.events
                services = [stack.enter_context(service_process("inventory", settings, worker=n))
                            for n in range(args.workers)]
                started = time.perf_counter()
                cpu_before = sum(cpu_seconds(p.pid) for p in services)
                wal_before = wal_position(engine)
            else:
                wal_before = None
                services = [first] + [stack.enter_context(service_process("inventory", settings, worker=n))
                                      for n in range(1, args.workers)]
                cpu_before = sum(cpu_seconds(p.pid) for p in services)
                # Paced: small bursts (1/100 s of traffic each), as many tills would send them.
                chunk = max(2, int(args.rate // 100)) if args.rate else 1000
                started = asyncio.run(publish_all(settings, args.events, args.rate, args.mix, chunk, args.random_ids,
                                                  signers, bool(args.erased), args.hot_units))
                published_in = time.perf_counter() - started
            while applied(engine, "inventory") < args.events + baseline:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            service_cpu = sum(cpu_seconds(p.pid) for p in services) - cpu_before
            wal_after = wal_position(engine)
            wal_per_event = ((wal_after - wal_before) / args.events
                             if args.backlog and wal_after is not None and wal_before is not None else None)
        store_per_event = store_bytes(engine) / (args.events + baseline)
        lat = latencies(engine, since=wall_clock_start)
        engine.dispose()
    print(f"machine: {machine()}; store: {'sqlite' if not args.database_url else args.database_url.split(':')[0]}")
    kinds = (f"unit.transferred of {args.hot_units} units" if args.mix == "hot-units"
             else f"{args.events // 2} unit.received + {args.events // 2} unit.sold")
    print(f"events: {args.events} ({kinds}, mix {args.mix}), "
          f"batch size {args.batch_size}, publisher {f'paced at {args.rate:.0f}/s' if args.rate else 'flat out'}, "
          f"event ids {'random (UUIDv4)' if args.random_ids else 'time-ordered (UUIDv7)'}, "
          f"{'every event signed (Ed25519)' if args.signed else 'unsigned'}"
          + (f", sales with customer ids, {args.erased} customers erased before" if args.erased else ""))
    mode = f"backlog drained by {args.workers} process(es)" if args.backlog else f"{args.workers} process(es), live"
    print(f"{mode}: published in {published_in:.2f}s; all applied {elapsed:.2f}s after "
          f"{'the services started' if args.backlog else 'the first publish'}")
    print(f"throughput: {args.events / elapsed:,.0f} events/s applied; service CPU "
          f"{service_cpu / args.events * 1e6:.0f} us/event ({args.events / service_cpu:,.0f} events per CPU-second)")
    if args.backlog:
        wal = f"; PostgreSQL WAL {wal_per_event:,.0f} bytes/event (the server's, others' writes included)" \
            if wal_per_event else ""
        print(f"Redis memory {redis_per_event:,.0f} bytes/event (stream entries); store "
              f"{store_per_event:,.0f} bytes/event (tables and indexes){wal}")
    print(f"latency publish->commit: p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms, "
          f"max {max(lat):.1f} ms")


if __name__ == "__main__":
    main()

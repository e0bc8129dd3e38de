"""Recalls benchmarks. Two figures:

1. ``matcher``: the in-memory matcher alone (services.recalls.domain.RecallIndex): 10,000 open
   recalls of 20 manufacturers (serial ranges over 200 prefixes and 3 widths, explicit serial
   lists, sku-only and sku+range recalls), then unit events (manufacturer, serial, sku; about half
   of them covered) matched one by one. No Redis, no database: the lookup cost only.

2. ``broadcast``: end to end. A real Redis (embedded redis-server), inventory and recalls (and
   warranty when services/warranty/app.py exists) running in this process with their real
   consumers and stores. 100,000 units are received (one range receipt) and 20% of them sold; then
   one recall.issued covers all of them. Measured: from publishing the recall until the recalls
   service counts every unit (in-stock ones quarantined by inventory and reported back; sold ones
   answered by warranty when it runs).

    .venv/bin/python bench/recalls_matching.py matcher [--recalls 10000] [--events 200000]
    .venv/bin/python bench/recalls_matching.py broadcast [--units 100000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.recalls.domain import Recall, RecallIndex  # noqa: E402
from shared.identity import SerialRange  # noqa: E402

# ---------------------------------------------------------------------------------------------
# 1. matcher


def make_recalls(count: int, rnd: random.Random) -> list[Recall]:
    makers = [f"maker-{i}" for i in range(20)]
    prefixes = [f"{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}{i % 10}" for i in range(200)]
    recalls = []
    for n in range(count):
        maker = rnd.choice(makers)
        kind = rnd.random()
        rid = f"RC-{n}"
        if kind < 0.6 or kind >= 0.9:
            width = rnd.choice([6, 7, 8])
            first = rnd.randrange(0, 10 ** width - 100_000)
            span = SerialRange(prefix=rnd.choice(prefixes), first=first, last=first + rnd.randrange(10, 100_000),
                               width=width)
            skus = frozenset({f"SKU-{rnd.randrange(50)}"}) if kind >= 0.9 else frozenset()
            recalls.append(Recall(rid, maker, skus=skus, ranges=(span,)))
        elif kind < 0.8:
            serials = frozenset(f"X{rnd.randrange(10 ** 9):09d}" for _ in range(10))
            recalls.append(Recall(rid, maker, serials=serials))
        else:
            recalls.append(Recall(rid, maker, skus=frozenset({f"SKU-{rnd.randrange(500)}"})))
    return recalls


def make_units(recalls: list[Recall], count: int, rnd: random.Random) -> list[tuple[str, str, str]]:
    units = []
    ranged = [r for r in recalls if r.ranges]
    for _ in range(count):
        if rnd.random() < 0.5:
            recall = rnd.choice(ranged)
            span = recall.ranges[0]
            serial = f"{span.prefix}{rnd.randint(span.first, span.last):0{span.width}d}"
            sku = next(iter(recall.skus)) if recall.skus else f"SKU-{rnd.randrange(500)}"
            units.append((recall.manufacturer, serial, sku))
        else:
            units.append((f"maker-{rnd.randrange(20)}", f"ZZ{rnd.randrange(10 ** 8):08d}", f"SKU-{rnd.randrange(500)}"))
    return units


def bench_matcher(args) -> None:
    rnd = random.Random(42)
    recalls = make_recalls(args.recalls, rnd)
    started = time.perf_counter()
    index = RecallIndex(recalls)
    built = time.perf_counter() - started
    units = make_units(recalls, args.events, rnd)
    match = index.match
    started = time.perf_counter()
    hits = 0
    for maker, serial, sku in units:
        if match(maker, serial, sku):
            hits += 1
    elapsed = time.perf_counter() - started
    # spot check against the brute-force definition, so the figure is of a correct matcher
    for maker, serial, sku in units[:300]:
        expected = sorted(r.recall_id for r in recalls if r.manufacturer == maker and r.covers(serial, sku))
        assert sorted(match(maker, serial, sku)) == expected, (maker, serial, sku)
    print(f"matcher: {len(recalls):,} open recalls indexed in {built * 1000:.0f} ms; "
          f"{len(units):,} unit events matched in {elapsed:.2f} s = {len(units) / elapsed:,.0f} events/s "
          f"({elapsed / len(units) * 1e6:.1f} us/event, {hits:,} matched at least one recall)")


# ---------------------------------------------------------------------------------------------
# 2. broadcast


@asynccontextmanager
async def serving(definition, settings):
    from shared.service import build_app

    app = build_app(definition, settings)
    async with app.router.lifespan_context(app):
        yield app


async def bench_broadcast(args) -> None:
    import httpx
    import redis.asyncio as aioredis
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from serialtrack.redis_server import RedisServerProcess
    from services.inventory.app import definition as inventory
    from services.recalls.app import definition as recalls
    from services.recalls.store import UnitRow
    from shared.contracts import RecallIssued, RecallOwnerNotified, UnitQuarantined, UnitReceived, UnitSold
    from shared.envelope import make_event
    from shared.publishing import publish
    from shared.settings import Settings
    from shared.store import make_engine

    definitions = [inventory, recalls]
    if args.only_recalls:
        definitions = [recalls]
    else:
        try:
            from services.warranty.app import definition as warranty

            definitions.append(warranty)
        except Exception as exc:  # noqa: BLE001 - not built yet (or broken): measured without it
            print(f"(warranty not included: {type(exc).__name__}: {exc})")
    names = [d.name for d in definitions]

    work = Path(tempfile.mkdtemp(prefix="recalls-bench-"))
    redis_server = RedisServerProcess(work / "redis").start()
    database = {}
    if args.database_url:
        database = {f"{name}_database_url": args.database_url for name in names}
    settings = Settings(redis_url=redis_server.url, data_dir=work, stream_prefix=f"bench-{uuid.uuid4().hex[:8]}",
                        batch_size=args.batch_size, poll_ms=20, **database)
    t0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    prefix = f"B{uuid.uuid4().hex[:5].upper()}"
    n_units, n_sold = args.units, args.units // 5
    span = {"prefix": prefix, "first": 1, "last": n_units, "width": 7}
    redis = aioredis.from_url(settings.redis_url)
    recalls_engine = make_engine(settings.database_url("recalls"))
    rid = f"RC-{uuid.uuid4().hex[:8]}"
    try:
        async with AsyncExitStack() as stack:
            apps = {d.name: await stack.enter_async_context(serving(d, settings)) for d in definitions}
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=apps["recalls"]), base_url="http://recalls"))
            setup = time.perf_counter()
            events = [make_event(UnitReceived(manufacturer="acme", serial_range=span, sku="TV-55", location="s-1"),
                                 source="bench/wms", time=t0)]
            events += [
                make_event(UnitSold(manufacturer="acme", serial=f"{prefix}{n:07d}", sku="TV-55", location="s-1",
                                    terminal_id="t-1", receipt_id=f"R-{n}", customer_id=f"C-{n}"),
                           source="bench/pos", time=t0 + timedelta(minutes=10))
                for n in range(1, n_units + 1, 5)
            ]
            await publish(redis, settings.streams, [e.envelope for e in events])

            def recalls_units() -> int:
                with Session(recalls_engine) as session:
                    return session.scalar(select(func.count()).select_from(UnitRow).where(
                        UnitRow.stock == "sold", UnitRow.manufacturer == "acme"))

            async def backlog() -> int:
                pending = 0
                for app in apps.values():
                    consumer = app.state.runtime.consumer
                    for stream in consumer.stream_names:
                        last = (await redis.xinfo_stream(stream))["last-generated-id"]
                        for group in await redis.xinfo_groups(stream):
                            if group["name"].decode() == consumer.group:
                                pending += int(group["pending"]) + (group["last-delivered-id"] != last)
                return pending

            while await backlog() or await asyncio.to_thread(recalls_units) < n_sold:
                await asyncio.sleep(0.2)
            print(f"setup: {n_units:,} units received, {n_sold:,} sold, applied by {', '.join(names)} "
                  f"in {time.perf_counter() - setup:.1f} s")

            started = time.perf_counter()
            recall = make_event(RecallIssued(recall_id=rid, manufacturer="acme", skus=["TV-55"],
                                             serial_ranges=[span], hazard="battery overheating", remedy="replace"),
                                source="bench/maker", time=t0 + timedelta(hours=1))
            await publish(redis, settings.streams, [recall.envelope])
            with_warranty = "warranty" in apps or args.only_recalls
            if args.only_recalls:  # the answers inventory and warranty would give, published at once
                answers = [
                    make_event(UnitQuarantined(recall_id=rid, manufacturer="acme", serial=f"{prefix}{n:07d}",
                                               location="s-1"), source="bench/inventory", time=t0 + timedelta(hours=1))
                    if n % 5 != 1 else
                    make_event(RecallOwnerNotified(recall_id=rid, manufacturer="acme", serial=f"{prefix}{n:07d}",
                                                   customer_id=f"C-{n}", hazard="battery overheating", remedy="replace"),
                               source="bench/warranty", time=t0 + timedelta(hours=1))
                    for n in range(1, n_units + 1)
                ]
                await publish(redis, settings.streams, [e.envelope for e in answers])
            marks: dict[str, float] = {}
            while True:
                response = await client.get(f"/recalls/{rid}")
                if response.status_code == 200:
                    p = response.json()["progress"]
                    now = time.perf_counter() - started
                    if p["affected"] == n_units:
                        marks.setdefault("all affected units counted", now)
                    if p["quarantined"] == n_units - n_sold:
                        marks.setdefault("all in-stock units quarantined and counted", now)
                    answered = p["sold_owner_notified"] + p["sold_owner_unknown"]
                    if with_warranty and answered == n_sold:
                        marks.setdefault("all sold units' owners answered and counted", now)
                    if await redis.xlen(settings.streams.for_type("unit.quarantined")) >= n_units - n_sold:
                        marks.setdefault("(inventory has published every unit.quarantined)", now)
                    if with_warranty and await redis.xlen(settings.streams.for_type("recall.owner_notified")) \
                            + await redis.xlen(settings.streams.for_type("recall.owner_unknown")) >= n_sold:
                        marks.setdefault("(warranty has published every owner answer)", now)
                    if len(marks) == (5 if with_warranty else 3):
                        break
                    if now > args.timeout:
                        print(f"TIMEOUT after {now:.0f} s: {p}")
                        break
                await asyncio.sleep(0.05)
            logging.getLogger("serialtrack.faststream").setLevel(logging.CRITICAL)  # shutdown noise
            for label, seconds in sorted(marks.items(), key=lambda kv: kv[1]):
                print(f"broadcast: {label}: {seconds:.2f} s")
            print(f"broadcast: {n_units:,} units, recall to completion: {max(v for k, v in marks.items() if k[0] != '('):.2f} s "
                  f"({', '.join(names)}; {'PostgreSQL' if args.database_url else 'SQLite'}; "
                  f"batch size {args.batch_size}); progress: {p}")
    finally:
        await redis.aclose()
        recalls_engine.dispose()
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    m = sub.add_parser("matcher")
    m.add_argument("--recalls", type=int, default=10_000)
    m.add_argument("--events", type=int, default=200_000)
    b = sub.add_parser("broadcast")
    b.add_argument("--units", type=int, default=100_000)
    b.add_argument("--batch-size", type=int, default=500)
    b.add_argument("--database-url", default=None, help="one database for all services (default: SQLite files)")
    b.add_argument("--timeout", type=float, default=300)
    b.add_argument("--only-recalls", action="store_true",
                   help="run recalls alone; publish the answers inventory and warranty would give (recalls' own share)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.which == "matcher":
        bench_matcher(args)
    else:
        asyncio.run(bench_broadcast(args))


if __name__ == "__main__":
    main()

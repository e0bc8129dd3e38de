"""A stock count of N units in parts of 10,000 through a real Redis into `serialtrack serve inventory`
on SQLite (or --database-url): seconds from publishing the parts until the count is judged.

The location holds N units (one bulk receipt); the count sees all but the last 1% of them and 100
units recorded at another location; 100 units are sold after ``counted_at`` (during the count), before
the count is published.

    .venv/bin/python -m bench.stock_count --units 100000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta

import httpx
import redis.asyncio as aioredis

from bench.harness import applied, cpu_seconds, environment, machine, service_process, store_engine
from shared.contracts import StockCounted, UnitReceived, UnitSold
from shared.envelope import make_event
from shared.publishing import publish
from shared.store import utcnow
from shared.tokens import ensure_admin_token

PART = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    n = args.units
    start = utcnow() - timedelta(hours=3)
    counted_at = start + timedelta(hours=1)
    serials = [f"CNT{i:08d}" for i in range(1, n + 1)]
    stock = [make_event(UnitReceived(manufacturer="acme", sku="TV-55", location="store-1",
                                     serial_range={"prefix": "CNT", "first": 1, "last": n, "width": 8}),
                        source="bench/wms", time=start),
             make_event(UnitReceived(manufacturer="acme", sku="TV-55", location="store-2",
                                     serial_range={"prefix": "ELS", "first": 1, "last": 100, "width": 8}),
                        source="bench/wms", time=start)]
    sales = [make_event(UnitSold(manufacturer="acme", serial=s, sku="TV-55", location="store-1", terminal_id="t1",
                                 receipt_id=f"R-{s}"), source="bench/pos", time=counted_at + timedelta(minutes=5))
             for s in serials[:100]]
    seen = serials[: n - n // 100] + [f"ELS{i:08d}" for i in range(1, 101)]
    parts = [seen[i:i + PART] for i in range(0, len(seen), PART)]
    count = [make_event(StockCounted(count_id="CNT-BENCH", location="store-1", counted_at=counted_at, part=k + 1,
                                     final=k == len(parts) - 1,
                                     units=[{"manufacturer": "acme", "serial": s} for s in part]),
                        source="bench/store", time=counted_at) for k, part in enumerate(parts)]
    with environment(args.database_url) as settings:
        engine = store_engine(settings, "inventory")
        headers = {"Authorization": f"Bearer {ensure_admin_token(settings.data_dir, settings.tokens_dir)}"}
        url = f"{settings.service_url('inventory')}/counts/CNT-BENCH"
        with service_process("inventory", settings) as service:

            async def send(events):
                client = aioredis.from_url(settings.redis_url)
                await publish(client, settings.streams, [e.envelope for e in events])
                await client.aclose()

            asyncio.run(send(stock + sales))
            while applied(engine, "inventory") < len(stock) + len(sales):
                time.sleep(0.05)
            cpu_before = cpu_seconds(service.pid)
            started = time.perf_counter()
            asyncio.run(send(count))
            while True:
                view = httpx.get(url, headers=headers, params={"limit": 1})
                if view.status_code == 200 and view.json()["status"] == "complete":
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(service.pid) - cpu_before
            totals = view.json()["totals"]
            csv_started = time.perf_counter()
            report = httpx.get(url + "/report.csv", headers=headers, timeout=120).text
            csv_seconds = time.perf_counter() - csv_started
        engine.dispose()
    expected = {"matched": n - n // 100, "missing": n // 100, "unexpected": 100}
    assert totals == expected, (totals, expected)
    assert report.count("\n") == 1 + n + 100
    print(f"machine: {machine()}; store: {'sqlite' if not args.database_url else args.database_url.split(':')[0]}")
    print(f"stock count of {len(seen):,} units seen in {len(parts)} parts against {n:,} on hand: judged "
          f"{elapsed:.1f}s after publishing (service CPU {cpu:.1f}s); {totals}; report.csv of {n + 100:,} rows "
          f"in {csv_seconds:.1f}s")


if __name__ == "__main__":
    main()

"""A recall broadcast as production runs it: inventory, warranty and recalls each in its own
`serialtrack serve` process (SQLite each), one Redis. 100,000 known units (80% in stock, 20% sold
to customers); one recall.issued covers them all. Measured: from publishing the recall until the
recalls service counts every unit quarantined (reported by inventory) or its owner notified
(reported by warranty).

    .venv/bin/python -m bench.recall_broadcast --units 100000

"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.harness import (
    applied,
    cpu_seconds,
    has_applied,
    machine,
    outbox_empty,
    percentile,
    service_process,
    store_engine,
)
from serialtrack.redis_server import RedisServerProcess, free_port
from shared.contracts import RecallIssued, UnitReceived, UnitSold
from shared.envelope import make_event
from shared.publishing import publish
from shared.settings import Settings
from shared.signing import operator_signer
from shared.tokens import ensure_admin_token

SERVICES = ("inventory", "warranty", "recalls")
POLL_S = 0.2  # how often progress is read: the polling itself costs CPU the services share


async def send(settings: Settings, events) -> None:
    client = aioredis.from_url(settings.resolve_redis_url())
    try:
        await publish(client, settings.streams, [e.envelope for e in events], operator_signer(settings.data_dir))
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100_000)
    args = parser.parse_args()
    sold = args.units // 5
    start = datetime.now(UTC) - timedelta(days=30)
    receipt = make_event(UnitReceived(manufacturer="acme", sku="TV-55", location="dc-1",
                                      serial_range={"prefix": "RB", "first": 1, "last": args.units, "width": 7}),
                         source="bench/wms", time=start)
    sales = [make_event(UnitSold(manufacturer="acme", serial=f"RB{n:07d}", sku="TV-55", location="store-1",
                                 terminal_id="till-1", receipt_id=f"R-{n}", customer_id=f"C-{n}"),
                        source="bench/pos", time=start + timedelta(days=1)) for n in range(1, sold + 1)]
    recall = make_event(RecallIssued(recall_id="RC-BENCH", manufacturer="acme", skus=["TV-55"], hazard="overheating",
                                     remedy="repair", serial_ranges=[{"prefix": "RB", "first": 1,
                                                                       "last": args.units, "width": 7}]),
                        source="bench/maker", time=start + timedelta(days=2))

    with tempfile.TemporaryDirectory(prefix="serialtrack-bench-") as tmp, ExitStack() as stack:
        redis = RedisServerProcess(Path(tmp) / "redis").start()
        assert redis.process is not None  # start() spawned it
        stack.callback(redis.stop)
        ports: dict[str, Any] = {f"{s}_port": free_port() for s in SERVICES}
        settings = Settings(redis_url=redis.url, data_dir=Path(tmp), **ports)
        processes = {service: stack.enter_context(service_process(service, settings)) for service in SERVICES}
        engines = {s: store_engine(settings, s) for s in SERVICES}
        asyncio.run(send(settings, [receipt, *sales]))
        setup = time.perf_counter()
        while any(applied(engines[s], s) < 1 + sold for s in SERVICES):
            time.sleep(0.1)
        print(f"setup: {args.units:,} units received, {sold:,} sold, applied by every service in "
              f"{time.perf_counter() - setup:.1f} s")

        cpu_before = {s: cpu_seconds(p.pid) for s, p in processes.items()}
        cpu_before["redis"], cpu_before["this benchmark (polling)"] = cpu_seconds(redis.process.pid), cpu_seconds(os.getpid())
        token = ensure_admin_token(settings.data_dir, settings.tokens_dir)
        http = stack.enter_context(httpx.Client(timeout=10, headers={"Authorization": f"Bearer {token}"}))  # one connection
        started = time.perf_counter()
        asyncio.run(send(settings, [recall]))
        url = f"{settings.service_url('recalls')}/recalls/RC-BENCH"
        progress: dict = {}
        milestones: dict[str, float] = {}
        query_times: list[float] = []

        def reached(name: str, done: bool) -> None:
            if done and name not in milestones:
                milestones[name] = time.perf_counter() - started

        while True:
            reached("inventory applied the recall", has_applied(engines["inventory"], "inventory", recall))
            reached("warranty applied the recall", has_applied(engines["warranty"], "warranty", recall))
            reached("inventory published every unit.quarantined",
                    "inventory applied the recall" in milestones and outbox_empty(engines["inventory"]))
            asked = time.perf_counter()
            response = http.get(url)
            query_times.append(time.perf_counter() - asked)
            if response.status_code == 200:
                progress = response.json()["progress"]
                reached("recalls knew every affected unit", progress["affected"] == args.units)
                reached("recalls counted every owner notice", progress["sold_owner_notified"] == sold)
                reached("recalls counted every quarantine", progress["quarantined"] == args.units - sold)
                if progress["quarantined"] == args.units - sold and progress["sold_owner_notified"] == sold:
                    break
            time.sleep(POLL_S)
        elapsed = time.perf_counter() - started
        cpu = {s: cpu_seconds(p.pid) - cpu_before[s] for s, p in processes.items()}
        cpu["redis"] = cpu_seconds(redis.process.pid) - cpu_before["redis"]
        cpu["this benchmark (polling)"] = cpu_seconds(os.getpid()) - cpu_before["this benchmark (polling)"]
    print(f"machine: {machine()}; SQLite; one process per service")
    print(f"broadcast over {args.units:,} known units: all quarantines and owner notices counted after "
          f"{elapsed:.1f} s (affected {progress['affected']:,}, quarantined {progress['quarantined']:,}, "
          f"owners notified {progress['sold_owner_notified']:,})")
    print(f"progress queried {len(query_times)} times while it ran: GET /recalls/RC-BENCH p50 "
          f"{1000 * percentile(query_times, 50):.0f} ms, max {1000 * max(query_times):.0f} ms")
    for name, at in sorted(milestones.items(), key=lambda m: m[1]):
        print(f"  {at:5.1f} s  {name}")
    print(f"CPU used meanwhile ({2 * elapsed:.1f} core-seconds available): "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items()))


if __name__ == "__main__":
    main()

"""A bulk receipt of N serials (one unit.received with a serial range) through a real Redis into
`serialtrack serve inventory` on SQLite (or --database-url): seconds from publish until the
whole receipt is committed and readable.

    .venv/bin/python -m bench.bulk_receipt --serials 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
import redis.asyncio as aioredis

from bench.harness import applied, cpu_seconds, environment, machine, service_process, store_engine
from shared.contracts import UnitReceived
from shared.envelope import make_event
from shared.publishing import publish
from shared.tokens import ensure_admin_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serials", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    receipt = make_event(UnitReceived(manufacturer="acme", sku="LAPTOP-13", location="dc-1",
                                      serial_range={"prefix": "BULK", "first": 1, "last": args.serials, "width": 8}),
                         source="bench/wms")
    with environment(args.database_url) as settings:
        engine = store_engine(settings, "inventory")
        with service_process("inventory", settings) as service:
            cpu_before = cpu_seconds(service.pid)
            started = time.perf_counter()

            async def send():
                client = aioredis.from_url(settings.redis_url)
                await publish(client, settings.streams, [receipt.envelope])
                await client.aclose()

            asyncio.run(send())
            while applied(engine, "inventory") < 1:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            service_cpu = cpu_seconds(service.pid) - cpu_before
            headers = {"Authorization": f"Bearer {ensure_admin_token(settings.data_dir, settings.tokens_dir)}"}
            last = httpx.get(f"{settings.service_url('inventory')}/units/acme/BULK{args.serials:08d}",
                             headers=headers).json()
            total = httpx.get(f"{settings.service_url('inventory')}/units", params={"sku": "LAPTOP-13", "limit": 1},
                              headers=headers).json()["total"]
        engine.dispose()
    assert last["status"] == "in_stock" and total == args.serials, (last, total)
    print(f"machine: {machine()}; store: {'sqlite' if not args.database_url else args.database_url.split(':')[0]}")
    print(f"bulk receipt of {args.serials:,} serials (one unit.received, serial_range): committed and readable "
          f"after {elapsed:.1f}s ({args.serials / elapsed:,.0f} units/s; service CPU {service_cpu:.1f}s)")


if __name__ == "__main__":
    main()

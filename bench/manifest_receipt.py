"""What manifests cost inventory (issue 14, part 1), through a real Redis into `serialtrack serve
inventory` on SQLite (or --database-url). In one service process, each step timed from publish until
committed:

1. a bulk receipt of N serials at a location that takes no manifests (the bulk receipt as it was);
2. a manifest (shipment.dispatched) of N serials as one range: stored as one row;
3. the receipt of those N serials at the manifest's destination: reconciled unit by unit;
4. a second manifest of N serials, its deadline long past, never received: the deadline check
   (housekeeping) finds N units missing_in_transit, records and publishes them.

    .venv/bin/python -m bench.manifest_receipt --serials 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import date

import httpx
import redis.asyncio as aioredis

from bench.harness import applied, cpu_seconds, environment, machine, service_process, store_engine
from shared.contracts import ShipmentDispatched, UnitReceived
from shared.envelope import Event, make_event
from shared.publishing import publish
from shared.tokens import ensure_admin_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serials", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    n = args.serials
    future = date(2099, 1, 1)

    def receipt(prefix: str, location: str) -> Event:
        return make_event(UnitReceived(manufacturer="acme", sku="TV-55", location=location,
                                       serial_range={"prefix": prefix, "first": 1, "last": n, "width": 8}),
                          source="bench/wms")

    def manifest(shipment_id: str, prefix: str, arrival: date) -> Event:
        return make_event(ShipmentDispatched(shipment_id=shipment_id, manufacturer="acme", from_location="acme-dc",
                                             to_location="store-1", expected_arrival=arrival,
                                             serial_ranges=[{"prefix": prefix, "first": 1, "last": n, "width": 8}]),
                          source="bench/edi")

    os.environ["SERIALTRACK_HOUSEKEEPING_S"] = "0.5"  # the service process inherits it
    results: list[tuple[str, float, float]] = []
    with environment(args.database_url) as settings:
        engine = store_engine(settings, "inventory")
        headers = {"Authorization": f"Bearer {ensure_admin_token(settings.data_dir, settings.tokens_dir)}"}
        base = settings.service_url("inventory")
        with service_process("inventory", settings) as service:

            def step(label: str, event: Event, done) -> None:
                cpu_before = cpu_seconds(service.pid)
                count_before = applied(engine, "inventory")
                started = time.perf_counter()

                async def send():
                    client = aioredis.from_url(settings.redis_url)
                    await publish(client, settings.streams, [event.envelope])
                    await client.aclose()

                asyncio.run(send())
                while applied(engine, "inventory") <= count_before or not done():
                    time.sleep(0.02)
                results.append((label, time.perf_counter() - started, cpu_seconds(service.pid) - cpu_before))

            def shipment(shipment_id: str) -> dict:
                response = httpx.get(f"{base}/shipments/{shipment_id}", headers=headers, params={"limit": 1})
                return response.json() if response.status_code == 200 else {}

            step(f"bulk receipt of {n:,} serials, no manifest (as before)", receipt("PLAIN", "dc-1"), lambda: True)
            step(f"manifest of {n:,} serials (one range) stored", manifest("ASN-1", "SHIP", future), lambda: True)
            step(f"receipt of those {n:,} at the destination, reconciled", receipt("SHIP", "store-1"),
                 lambda: True)
            view = shipment("ASN-1")
            assert view["counts"]["received"] == n and view["counts"]["outstanding"] == 0, view["counts"]
            step(f"manifest of {n:,} never received, deadline past: {n:,} missing_in_transit",
                 manifest("ASN-2", "LOST", date(2026, 1, 1)),
                 lambda: shipment("ASN-2").get("counts", {}).get("missing") == n)
        engine.dispose()
    print(f"machine: {machine()}; store: {'sqlite' if not args.database_url else args.database_url.split(':')[0]}")
    for label, seconds, cpu in results:
        print(f"{label}: {seconds:.2f}s ({n / seconds:,.0f} units/s; service CPU {cpu:.1f}s)")


if __name__ == "__main__":
    main()

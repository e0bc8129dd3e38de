"""A stolen report over a large range, as production runs it: inventory, warranty, recalls and theft
each in its own `serialtrack serve` process (SQLite each), one Redis (issue 12, fault 1).

One unit of the range is received first (so the sale below is of a known unit). Then one
``theft.reported`` over ``--serials`` serials is published and, 1 s later, a ``unit.sold`` of that
unit. Measured: the time until each service applied the report, the latency of the sale in each
service that reads sales (from its publication until applied), each service's peak RSS (VmHWM) and
the growth of each store (database file plus its WAL).

    .venv/bin/python -m bench.range_report --serials 1000000
    .venv/bin/python -m bench.range_report --serials 10000000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.harness import has_applied, machine, service_process, store_engine
from serialtrack.redis_server import RedisServerProcess, free_port
from shared.contracts import TheftReported, UnitReceived, UnitSold
from shared.envelope import make_event
from shared.publishing import publish
from shared.settings import Settings
from shared.signing import operator_signer

SERVICES = ("inventory", "warranty", "recalls", "theft")
READS_SALES = ("inventory", "warranty", "recalls", "theft")
POLL_S = 0.05


async def send(settings: Settings, events) -> None:
    client = aioredis.from_url(settings.resolve_redis_url())
    try:
        await publish(client, settings.streams, [e.envelope for e in events], operator_signer(settings.data_dir))
    finally:
        await client.aclose()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def store_bytes(data_dir: Path, service: str) -> int:
    return sum(p.stat().st_size for p in data_dir.glob(f"{service}.db*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serials", type=int, default=1_000_000)
    args = parser.parse_args()
    start = datetime.now(UTC) - timedelta(hours=2)
    serial_range = {"prefix": "TR", "first": 1, "last": args.serials, "width": 8}
    known = f"TR{args.serials // 2:08d}"
    receipt = make_event(UnitReceived(manufacturer="acme", serial=known, sku="TV-55", location="store-1"),
                         source="bench/wms", time=start)
    report = make_event(TheftReported(manufacturer="acme", agency="metro-pd", case_number="C-PALLET",
                                      serial_range=serial_range), source="bench/police", time=start + timedelta(hours=1))

    with tempfile.TemporaryDirectory(prefix="serialtrack-bench-") as tmp, ExitStack() as stack:
        data_dir = Path(tmp)
        redis = RedisServerProcess(data_dir / "redis").start()
        stack.callback(redis.stop)
        ports: dict[str, Any] = {f"{s}_port": free_port() for s in SERVICES}
        settings = Settings(redis_url=redis.url, data_dir=data_dir, **ports)
        # A generous start: on the shared 2-core machine four services starting at once took over 60 s.
        processes = {service: stack.enter_context(service_process(service, settings, start_timeout=600))
                     for service in SERVICES}
        engines = {s: store_engine(settings, s) for s in SERVICES}
        asyncio.run(send(settings, [receipt]))
        while not all(has_applied(engines[s], s, receipt) for s in SERVICES if s != "recalls"):
            time.sleep(0.1)
        before = {s: store_bytes(data_dir, s) for s in SERVICES}

        started = time.perf_counter()
        asyncio.run(send(settings, [report]))
        sale = make_event(UnitSold(manufacturer="acme", serial=known, sku="TV-55", location="store-1",
                                   terminal_id="till-1", receipt_id="R-1"), source="bench/pos",
                          time=datetime.now(UTC) + timedelta(seconds=1))
        sale_sent: float | None = None
        report_applied: dict[str, float] = {}
        sale_applied: dict[str, float] = {}
        readers = [s for s in SERVICES if s != "recalls"]  # recalls does not read theft reports
        while len(report_applied) < len(readers) or len(sale_applied) < len(READS_SALES):
            now = time.perf_counter()
            if sale_sent is None and now - started >= 1.0:  # the sale, 1 s after the report
                asyncio.run(send(settings, [sale]))
                sale_sent = time.perf_counter()
            for s in readers:
                if s not in report_applied and has_applied(engines[s], s, report):
                    report_applied[s] = now - started
            for s in READS_SALES:
                if sale_sent is not None and s not in sale_applied and has_applied(engines[s], s, sale):
                    sale_applied[s] = now - sale_sent
            if now - started > 900:
                raise SystemExit(f"not applied after 900 s: report {report_applied}, sale {sale_applied}")
            time.sleep(POLL_S)
        rss = {s: peak_rss_mib(p.pid) for s, p in processes.items()}
        growth = {s: store_bytes(data_dir, s) - before[s] for s in SERVICES}
    print(f"machine: {machine()}; SQLite; one process per service; {args.serials:,}-serial theft.reported range")
    for s in SERVICES:
        print(f"  {s:9s} report applied after {report_applied.get(s, float('nan')):6.2f} s | sale published 1 s "
              f"later applied after {sale_applied[s]:5.2f} s | peak RSS {rss[s]:6.0f} MiB | "
              f"store +{growth[s] / 1024:,.0f} KiB")


if __name__ == "__main__":
    main()

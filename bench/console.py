"""The web console against the whole system as `serialtrack up` runs it, with --units units in
inventory (bulk receipts of 10,000 serials per event) and the demo's story:

- the unit lookup page: p50/p95 of ``GET /unit/acme/SERIAL`` (the page a serial with its
  manufacturer opens: four API calls and the timeline) and of ``GET /?q=SERIAL`` (the serial
  alone: the exact-serial search across manufacturers, then that page), over demo units (the
  whole story) and seeded ones;
- live alerts: from publishing the sale of a stolen unit (XADD) to its row arriving on the theft
  desk's event stream (``/theft/live``), --alerts times.

    .venv/bin/python -m bench.console --units 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import machine
from serialtrack.publishing import build_envelope
from serialtrack.redis_server import free_port
from services.registry import INSTALLED
from shared.redis_clients import sync_client

SEED_MAKER, SEED_SKU, PER_RECEIPT = "globex", "BENCH-TV", 10_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_system(data_dir: Path) -> tuple[subprocess.Popen, dict[str, str], str]:
    ports = {"redis": free_port(), "console": free_port(), **{s: free_port() for s in INSTALLED}}
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.endswith("_DATABASE_URL")}
    env.update(SERIALTRACK_DATA_DIR=str(data_dir), SERIALTRACK_EMBEDDED_REDIS_PORT=str(ports["redis"]),
               SERIALTRACK_CONSOLE_PORT=str(ports["console"]),
               **{f"{s.upper()}_PORT": str(ports[s]) for s in INSTALLED})
    process = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "up"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if "serialtrack is up" in line:
            break
    else:
        raise RuntimeError("serialtrack up did not start")
    return process, env, f"http://127.0.0.1:{ports['console']}"


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "serialtrack.cli", *args], env=env, capture_output=True, text=True,
                          check=True, timeout=300).stdout


def seed(env: dict[str, str], units: int) -> float:
    """Bulk receipts of PER_RECEIPT serials each; seconds until inventory has them all."""
    redis = sync_client((Path(env["SERIALTRACK_DATA_DIR"]) / "credentials" / "operator.url").read_text().strip())
    started = time.perf_counter()
    for first in range(1, units + 1, PER_RECEIPT):
        last = min(units, first + PER_RECEIPT - 1)
        envelope = build_envelope("unit.received", {
            "manufacturer": SEED_MAKER, "sku": SEED_SKU, "location": f"dc-{first % 7}",
            "serial_range": {"prefix": "GX", "first": first, "last": last, "width": 7}}, source="bench/wms")
        redis.xadd("serialtrack:unit.received", {"event": envelope.model_dump_json(exclude_none=True)})
    token = (Path(env["SERIALTRACK_DATA_DIR"]) / "credentials" / "admin.token").read_text().strip()
    url = f"http://127.0.0.1:{env['INVENTORY_PORT']}/units"
    while True:
        total = httpx.get(url, params={"sku": SEED_SKU, "limit": 1}, headers={"Authorization": f"Bearer {token}"},
                          timeout=60).json()["total"]
        if total >= units:
            return time.perf_counter() - started
        time.sleep(2)


def timed(client: httpx.Client, path: str, expect: str) -> float:
    started = time.perf_counter()
    response = client.get(path, follow_redirects=True)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and expect in response.text, (path, response.status_code)
    return elapsed


async def alert_latencies(console: str, cookies: httpx.Cookies, env: dict[str, str], stolen: str,
                          times: int) -> list[float]:
    redis = sync_client((Path(env["SERIALTRACK_DATA_DIR"]) / "credentials" / "operator.url").read_text().strip())
    latencies: list[float] = []
    async with (httpx.AsyncClient(base_url=console, cookies=cookies, timeout=None) as client,
                client.stream("GET", "/theft/live") as stream):
        lines = stream.aiter_lines()
        async for line in lines:  # the stream is live once it says so
            if line == "data: live":
                break
        for n in range(times):
            envelope = build_envelope("unit.sold", {
                "manufacturer": "acme", "serial": stolen, "sku": "TV-55-OLED", "location": f"store-{n}",
                "terminal_id": f"store-{n}/till-1", "receipt_id": f"R-BENCH-{n}"}, source="bench/pos")
            published = time.perf_counter()
            redis.xadd("serialtrack:unit.sold", {"event": envelope.model_dump_json(exclude_none=True)})
            async for line in lines:
                if line.startswith("data: ") and f"store-{n} (store-{n}/till-1)" in json.loads(line[6:]):
                    latencies.append(time.perf_counter() - published)
                    break
            await asyncio.sleep(0.3)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=200, help="page loads per kind")
    parser.add_argument("--alerts", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serialtrack-console-bench-") as tmp:
        process, env, console = start_system(Path(tmp) / "data")
        try:
            seeded_in = seed(env, args.units)
            demo = json.loads(cli(env, "demo", "--json"))
            link = cli(env, "console", "--link").strip()
            with httpx.Client(base_url=console, timeout=60) as client:
                client.get(link.removeprefix(console))  # the session cookie
                assert "Unit lookup" in client.get("/").text
                rng = random.Random(7)
                serials = [("acme", s) for s in demo["serials"]] * 5
                serials += [(SEED_MAKER, f"GX{rng.randint(1, args.units):07d}") for _ in range(len(serials))]
                results = {}
                for kind, path in (("with manufacturer", "/unit/{m}/{s}"), ("serial only", "/?q={s}")):
                    picks = [rng.choice(serials) for _ in range(args.lookups)]
                    for m, s in picks[:10]:  # warm-up
                        timed(client, path.format(m=m, s=s), "Timeline")
                    results[kind] = [timed(client, path.format(m=m, s=s), "Timeline") for m, s in picks]
                cookies = client.cookies
            latencies = asyncio.run(alert_latencies(console, cookies, env, demo["serials"][2], args.alerts))
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(90)
    print(f"machine: {machine()} (shared with other work while measured); store: SQLite; "
          f"{args.units:,} seeded units in inventory (+ the demo), seeded in {seeded_in:.0f} s")
    for kind, values in results.items():
        ms = [v * 1000 for v in values]
        print(f"unit lookup page, {kind}: p50 {percentile(ms, 0.5):.0f} ms, p95 {percentile(ms, 0.95):.0f} ms, "
              f"max {max(ms):.0f} ms over {len(ms)} loads")
    ms = [v * 1000 for v in latencies]
    print(f"stolen sale published -> alert row on the theft desk's stream: p50 {statistics.median(ms):.0f} ms, "
          f"p95 {percentile(ms, 0.95):.0f} ms, max {max(ms):.0f} ms over {len(ms)} sales")


if __name__ == "__main__":
    main()

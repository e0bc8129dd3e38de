"""The sell-through export of a large period (issue 14, part 4): time and memory of the warranty
service streaming it, as production runs it (`serialtrack serve warranty`, its own process).

The store is seeded directly (migrated, then rows inserted in bulk): ``--sales`` sales of acme over
``--days`` days, one return per ``--return-every`` sales and one owner registration per
``--register-every``, plus 100,000 sales of another manufacturer that the report must not read. Then
the report is fetched over HTTP as JSON and as CSV, for the whole period and for a tenth of it. The
service's peak RSS (VmHWM) is reset before each export (``/proc/<pid>/clear_refs``), so each figure
is that export's own peak: constant memory means the same peak for a tenth and for all of it.

    nice -n 10 .venv/bin/python -m bench.sell_through --sales 1000000
    nice -n 10 .venv/bin/python -m bench.sell_through --sales 1000000 --database-url postgresql://...
    nice -n 10 .venv/bin/python -m bench.sell_through --sales 1000000 --heap

``--heap`` instead runs the report's generator in this process under ``tracemalloc`` (no HTTP) and
prints the peak of the Python heap for a tenth of the period and for all of it: what the report
itself holds, apart from the process's allocator and the HTTP server.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.harness import machine, service_process
from serialtrack.redis_server import RedisServerProcess, free_port
from services.registry import load
from services.warranty.store import FactRow
from shared.schema import migrate
from shared.settings import Settings
from shared.store import insert_tuples, make_engine, table_of
from shared.tokens import ensure_admin_token

START = datetime(2026, 1, 1, tzinfo=UTC)
SAMPLE_BYTES = 12 * 2**20  # about a tenth of a 1,000,000-sale CSV
COLUMNS = ("manufacturer", "serial", "event_time", "event_type", "event_source", "event_id", "sku", "location",
           "receipt_id", "customer_id", "terminal_id", "recorded_at", "trusted_transfer")


def seed(url: str, sales: int, days: int, return_every: int, register_every: int) -> float:
    engine = make_engine(url)
    migrate(engine, load("warranty").migrations)
    table = table_of(FactRow)
    step = days * 86400 / sales
    now = datetime.now(UTC)
    started = time.perf_counter()

    def rows(maker: str, count: int):
        for i in range(count):
            at = START + timedelta(seconds=i * step)
            serial, store = f"SN{i:09d}", f"store-{i % 50}"
            yield (maker, serial, at, "unit.sold", "bench/pos", f"s{i}", f"SKU-{i % 20}", store, f"R{i}",
                   f"C{i}" if i % 2 else None, f"{store}/till-{i % 4}", now, False)
            if maker == "acme" and i % return_every == 0:
                yield (maker, serial, at + timedelta(days=3), "unit.returned", "bench/pos", f"r{i}", None, store,
                       f"R{i}", None, None, now, False)
            if maker == "acme" and i % register_every == 1:
                yield (maker, serial, at + timedelta(days=1), "warranty.owner.registered", "bench/web", f"g{i}", None,
                       "web", None, f"C{i}", None, now, False)

    for maker, count in (("acme", sales), ("zeta", 100_000)):
        batch: list[tuple] = []
        with engine.begin() as conn:
            from sqlalchemy.orm import Session

            session = Session(bind=conn)
            for row in rows(maker, count):
                batch.append(row)
                if len(batch) == 20_000:
                    insert_tuples(session, table, COLUMNS, batch)
                    batch.clear()
            insert_tuples(session, table, COLUMNS, batch)
    if url.startswith("postgresql"):
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE warranty_facts")
    engine.dispose()
    return time.perf_counter() - started


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def memory_mib(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def export(client: httpx.Client, pid: int, params: dict) -> tuple[float, int, int, float, float, list[float]]:
    """(seconds to the last byte, bytes, lines, RSS before, peak RSS during, RSS every 10% of the bytes
    of the full CSV)."""
    before, _ = memory_mib(pid)
    reset_peak(pid)
    started = time.perf_counter()
    size = lines = 0
    samples: list[float] = []
    with client.stream("GET", "/manufacturers/acme/sell-through", params=params) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")  # CSV: one line per sale or return, after the header
            if size >= (len(samples) + 1) * SAMPLE_BYTES:
                samples.append(memory_mib(pid)[0])
    elapsed = time.perf_counter() - started
    return elapsed, size, lines - 1 if params.get("format") == "csv" else 0, before, memory_mib(pid)[1], samples


def heap_peaks(url: str, days: int) -> list[tuple[str, int, float, float]]:
    """(label, bytes of CSV, seconds, peak of the Python heap in MiB) for a tenth and for all."""
    import tracemalloc

    from sqlalchemy.orm import Session

    from services.warranty import sell_through

    engine = make_engine(url)
    found = []
    for label, until in (("a tenth, CSV", START + timedelta(days=days / 10)), ("all, CSV", None)):
        tracemalloc.start()
        started, size = time.perf_counter(), 0
        with Session(engine) as session:
            lines = sell_through.lines(session, "acme", since=START if until else None, until=until, sku=None)
            for chunk in sell_through.csv_text(lines, sell_through.UNIT_COLUMNS):
                size += len(chunk)
        elapsed = time.perf_counter() - started
        found.append((label, size, elapsed, tracemalloc.get_traced_memory()[1] / 2**20))
        tracemalloc.stop()
    engine.dispose()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sales", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=300)
    parser.add_argument("--return-every", type=int, default=20)
    parser.add_argument("--register-every", type=int, default=10)
    parser.add_argument("--database-url", help="a fresh PostgreSQL database (default: SQLite in a temp dir)")
    parser.add_argument("--heap", action="store_true", help="measure the Python heap in process instead")
    args = parser.parse_args()
    if args.heap:
        with tempfile.TemporaryDirectory(prefix="serialtrack-bench-") as tmp:
            url = args.database_url or f"sqlite:///{tmp}/warranty.db"
            seed(url, args.sales, args.days, args.return_every, args.register_every)
            print(f"machine: {machine()}; {args.sales:,} acme sales; the report's generator in process, tracemalloc")
            for label, size, elapsed, peak in heap_peaks(url, args.days):
                print(f"  {label:13s} {size / 2**20:6.1f} MiB of CSV in {elapsed:5.1f} s | Python heap peak {peak:5.1f} MiB")
        return
    with tempfile.TemporaryDirectory(prefix="serialtrack-bench-") as tmp, ExitStack() as stack:
        data_dir = Path(tmp)
        url = args.database_url or f"sqlite:///{data_dir}/warranty.db"
        seeded = seed(url, args.sales, args.days, args.return_every, args.register_every)
        redis = RedisServerProcess(data_dir / "redis").start()
        stack.callback(redis.stop)
        settings = Settings(redis_url=redis.url, data_dir=data_dir, warranty_database_url=url,
                            warranty_port=free_port())
        token = ensure_admin_token(data_dir, settings.tokens_dir)
        process = stack.enter_context(service_process("warranty", settings, start_timeout=300))
        client = stack.enter_context(httpx.Client(base_url=settings.service_url("warranty"), timeout=None,
                                                  headers={"Authorization": f"Bearer {token}"}))
        tenth = {"since": START.isoformat(), "until": (START + timedelta(days=args.days / 10)).isoformat()}
        runs = [("a tenth, CSV", {**tenth, "format": "csv"}), ("all, CSV", {"format": "csv"}), ("all, JSON", {})]
        results = [(label, export(client, process.pid, params)) for label, params in runs]
    kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"machine: {machine()}; {kind}; warranty as its own process; {args.sales:,} acme sales over {args.days} "
          f"days, a return per {args.return_every}, a registration per {args.register_every}, 100,000 zeta sales; "
          f"seeded in {seeded:.0f} s")
    for label, (elapsed, size, lines, before, peak, samples) in results:
        what = f"{lines:>9,} lines ({lines / elapsed:>6,.0f}/s)" if lines else f"{'':>24}"
        print(f"  {label:13s} {what} {size / 2**20:6.1f} MiB in {elapsed:5.1f} s | "
              f"service RSS before {before:5.0f} MiB, peak during {peak:5.0f} MiB")
        if len(samples) > 1:
            print(f"  {'':13s} RSS every 12 MiB sent: {' '.join(f'{m:.0f}' for m in samples)}")


if __name__ == "__main__":
    main()

"""Benchmark: the near-miss (fuzzy) stolen check next to the exact one, 10,000 serials against a
registry of 1,000,000 reports plus range reports.

Builds the registry with set-based inserts over 20 manufacturers: ``--registry random`` (the
default) gives 12-character serials drawn at random from A-Z and 0-9, like most manufacturers'
serials; ``--registry sequential`` gives bench/theft_bulk_check.py's SN000000000.. serials, where
every serial is one edit away from about a dozen reported ones of its manufacturer (a stress case,
not a likely registry). Adds range reports (by default 1,000 ranges of 1,000 serials, half of them
under the "SN" prefix), fills the near-miss index the way migration theft_0003 does (INSERT ...
SELECT per character position), then times ``POST /checks`` with ``"fuzzy": false`` and ``"fuzzy":
true`` through the ASGI app, and the store function ``check_units``, on the same 10,000 serials: a
quarter reported, a quarter misread (a homoglyph), a quarter with a character dropped, a quarter
reported nowhere.

    .venv/bin/python bench/theft_fuzzy_check.py                       # SQLite in a temp dir
    .venv/bin/python bench/theft_fuzzy_check.py --database-url postgresql://postgres@127.0.0.1:5432/bench
    .venv/bin/python bench/theft_fuzzy_check.py --registry sequential
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy.exc
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bench.theft_bulk_check import T0, build_registry, time_http
from services.theft import api, store
from services.theft.app import definition
from services.theft.migrations.theft_0003_near_misses import backfill
from shared.schema import migrate
from shared.store import insert_rows, make_engine, table_of

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def random_serials(count: int, seed: int = 14) -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choices(ALPHABET, k=12)) for _ in range(count)]


def build_random_registry(engine, serials: list[str], chunk: int = 50_000) -> float:
    started = time.perf_counter()
    table = table_of(store.RegistryRow)
    with Session(engine) as session, session.begin():
        for start in range(0, len(serials), chunk):
            insert_rows(session, table, [{
                "kind": "reported", "origin": "agency", "agency": f"pd-{n % 50}", "case_number": f"C-{n}",
                "manufacturer": f"maker-{n % 20}", "serial": serials[n], "event_time": T0 + timedelta(seconds=n),
                "event_type": "theft.reported", "event_source": "bench/feed", "event_id": f"r-{n}",
                "description": None, "contact": None, "location": None, "disposition": None, "recorded_at": T0,
            } for n in range(start, min(start + chunk, len(serials)))])
    return time.perf_counter() - started


def build_ranges(engine, ranges: int, size: int = 1_000) -> float:
    started = time.perf_counter()
    rows = []
    for n in range(ranges):
        prefix, base = ("SN", 2_000_000_000) if n % 2 == 0 else ("RG", 0)
        first = base + n * size * 2
        rows.append({
            "kind": "reported", "origin": "agency", "agency": f"pd-{n % 50}", "case_number": f"R-{n}",
            "manufacturer": f"maker-{n % 20}", "range_prefix": prefix, "range_first": first,
            "range_last": first + size - 1, "range_width": 9 if prefix == "RG" else 10,
            "event_time": T0 + timedelta(seconds=n), "event_type": "theft.reported", "event_source": "bench/feed",
            "event_id": f"rg-{n}", "description": None, "contact": None, "location": None, "disposition": None,
            "recorded_at": T0,
        })
    with Session(engine) as session, session.begin():
        insert_rows(session, table_of(store.RegistryRangeRow), rows)
    return time.perf_counter() - started


def build_keys(engine) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        backfill(conn, "theft_registry_keys", "theft_registry", "kind = 'reported'")
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("ANALYZE theft_registry"))
            conn.execute(text("ANALYZE theft_registry_keys"))
            conn.execute(text("ANALYZE theft_registry_ranges"))
            conn.commit()
    return time.perf_counter() - started


MISREAD = dict(zip("0158OISB", "OISB0158", strict=True))


def misread(serial: str) -> str:
    """The serial with its first confusable character read as its look-alike (O for 0, 1 for I ...)."""
    for i, c in enumerate(serial):
        if c in MISREAD:
            return serial[:i] + MISREAD[c] + serial[i + 1:]
    return serial[:-1] + ("O" if serial[-1] != "O" else "0")


def check_items(serials: list[str], count: int) -> list[dict]:
    """count serials spread over the registry: reported, misread, one character dropped, unrelated."""
    step = max(1, len(serials) // count)
    others = random_serials(count, seed=41)
    items = []
    for i in range(count):
        n = (i * step) % len(serials)
        serial = serials[n]
        variant = (serial, misread(serial), serial[:4] + serial[5:], others[i])[i % 4]
        items.append({"manufacturer": f"maker-{n % 20}", "serial": variant})
    return items


def time_store(engine, items: list[dict], runs: int, fuzzy: bool) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of the store function (CPU time: what the check costs on a loaded host)."""
    models = [api.CheckItem(**i) for i in items]
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        with Session(engine) as session:
            api.check_units(session, models, fuzzy)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return wall, cpu


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temp dir")
    parser.add_argument("--reports", type=int, default=1_000_000)
    parser.add_argument("--ranges", type=int, default=1_000)
    parser.add_argument("--serials", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--registry", choices=("random", "sequential"), default="random")
    parser.add_argument("--keep", action="store_true",
                        help="keep the database (with --database-url) and time against it again next run, unbuilt")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/theft-bench.db"
        engine = make_engine(url)
        serials = random_serials(args.reports) if args.registry == "random" else [
            f"SN{n:09d}" for n in range(args.reports)]
        if args.keep and _registry_size(engine) == args.reports:
            built = keyed = 0.0
            print(f"store: {engine.dialect.name}; the registry kept from the last run", flush=True)
        else:
            migrate(engine, definition.migrations)
            for model in (store.RegistryKeyRow, store.RegistryRangeRow, store.RegistryRow):
                with engine.begin() as conn:
                    conn.execute(table_of(model).delete())
            print(f"store: {engine.dialect.name}; building a registry of {args.reports:,} {args.registry} reports "
                  f"and {args.ranges:,} ranges ...", flush=True)
            built = (build_random_registry(engine, serials) if args.registry == "random"
                     else build_registry(engine, args.reports))
            built += build_ranges(engine, args.ranges)
            keyed = build_keys(engine)
        with Session(engine) as session:
            keys = session.execute(select(func.count()).select_from(table_of(store.RegistryKeyRow))).scalar_one()
        print(f"  registry in {built:.1f} s; near-miss index: {keys:,} keys in {keyed:.1f} s (INSERT ... SELECT)")

        items = check_items(serials, args.serials)
        results = {}
        for fuzzy in (False, True):
            http_times, body = asyncio.run(time_http(engine, items, args.runs, fuzzy))
            store_wall, store_cpu = time_store(engine, items, args.runs, fuzzy)
            results[fuzzy] = http_times
            print(f"POST /checks fuzzy={str(fuzzy).lower()} with {args.serials:,} serials: stolen {body['stolen']:,}, "
                  f"possible {body['possible']:,}; ASGI {ms(http_times)}; check_units() {ms(store_wall)}, "
                  f"CPU {ms(store_cpu)}", flush=True)
        verdict = "PASS" if max(results[True]) < 1.0 else "FAIL"
        print(f"{verdict}: target < 1000 ms for every fuzzy POST /checks run")
        if args.database_url and not args.keep:
            for model in (store.RegistryKeyRow, store.RegistryRangeRow, store.RegistryRow):
                with engine.begin() as conn:
                    conn.execute(table_of(model).delete())
        engine.dispose()


def _registry_size(engine) -> int:
    try:
        with Session(engine) as session:
            return session.execute(select(func.count()).select_from(table_of(store.RegistryRow))).scalar_one()
    except sqlalchemy.exc.SQLAlchemyError:  # no table yet
        return -1


if __name__ == "__main__":
    main()

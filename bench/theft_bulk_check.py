"""Benchmark: a bulk stolen check of 10,000 serials against a registry of 1,000,000 reports.

Builds the registry with set-based inserts (executemany in chunks, one transaction), then times
``POST /checks`` through the ASGI app (the theft read API, in-process over httpx) and the store
function it calls (``check_units``). Half the checked serials are in the registry.

    .venv/bin/python bench/theft_bulk_check.py                       # SQLite in a temp dir
    .venv/bin/python bench/theft_bulk_check.py --database-url postgresql://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from services.theft import api, store
from services.theft.app import definition
from shared.auth import Auth
from shared.schema import migrate
from shared.store import insert_rows, make_engine, table_of
from shared.tokens import create_token

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def build_registry(engine, reports: int, chunk: int = 50_000) -> float:
    started = time.perf_counter()
    table = table_of(store.RegistryRow)
    with Session(engine) as session, session.begin():
        for start in range(0, reports, chunk):
            rows = [{
                "kind": "reported", "origin": "agency", "agency": f"pd-{n % 50}", "case_number": f"C-{n}",
                "manufacturer": f"maker-{n % 20}", "serial": f"SN{n:09d}", "event_time": T0 + timedelta(seconds=n),
                "event_type": "theft.reported", "event_source": "bench/feed", "event_id": f"r-{n}",
                "description": None, "contact": None, "location": None, "disposition": None, "recorded_at": T0,
            } for n in range(start, min(start + chunk, reports))]
            insert_rows(session, table, rows)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("ANALYZE theft_registry"))
            conn.commit()
    return time.perf_counter() - started


def check_items(reports: int, count: int) -> list[dict]:
    """count serials: even positions in the registry (spread over it), odd ones not."""
    step = max(1, reports // count)
    items = []
    for i in range(count):
        n = (i * step) % reports
        if i % 2 == 0:
            items.append({"manufacturer": f"maker-{n % 20}", "serial": f"SN{n:09d}"})
        else:
            items.append({"manufacturer": f"maker-{n % 20}", "serial": f"XX{n:09d}"})
    return items


async def time_http(engine, items: list[dict], runs: int, fuzzy: bool = False) -> tuple[list[float], dict]:
    app = FastAPI()
    tokens = Path(tempfile.mkdtemp(prefix="bench-tokens-"))
    app.state.auth = Auth(tokens)  # the read API alone, called with a token as in production
    app.include_router(api.read_api(engine))
    token, _ = create_token(tokens, "store", name="bench-desk")
    timings, body = [], {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        for _ in range(runs):
            started = time.perf_counter()
            response = await client.post("/checks", json={"items": items, "fuzzy": fuzzy})
            timings.append(time.perf_counter() - started)
            response.raise_for_status()
            body = response.json()
    return timings, body


def time_store(engine, items: list[dict], runs: int) -> list[float]:
    models = [api.CheckItem(**i) for i in items]
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        with Session(engine) as session:
            api.check_units(session, models)
        timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temp dir")
    parser.add_argument("--reports", type=int, default=1_000_000)
    parser.add_argument("--serials", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/theft-bench.db"
        engine = make_engine(url)
        table_of(store.RegistryRow).drop(engine, checkfirst=True)
        migrate(engine, definition.migrations)
        print(f"store: {engine.dialect.name}; building a registry of {args.reports:,} reports ...", flush=True)
        built = build_registry(engine, args.reports)
        with Session(engine) as session:
            stored = session.execute(select(func.count()).select_from(table_of(store.RegistryRow))).scalar_one()
        print(f"  {stored:,} rows in {built:.1f} s ({stored / built:,.0f} rows/s, set-based inserts)")

        items = check_items(args.reports, args.serials)
        http_times, body = asyncio.run(time_http(engine, items, args.runs))
        assert body["checked"] == args.serials and body["stolen"] == (args.serials + 1) // 2, body["stolen"]
        store_times = time_store(engine, items, args.runs)
        print(f"POST /checks with {args.serials:,} serials ({body['stolen']:,} stolen), ASGI in-process, "
              f"{args.runs} runs: first {http_times[0]*1000:.0f} ms, median {statistics.median(http_times)*1000:.0f} ms, "
              f"max {max(http_times)*1000:.0f} ms")
        print(f"check_units() store function, {args.runs} runs: median {statistics.median(store_times)*1000:.0f} ms, "
              f"max {max(store_times)*1000:.0f} ms")
        verdict = "PASS" if max(http_times) < 1.0 else "FAIL"
        print(f"{verdict}: target < 1000 ms for every POST /checks run")
        if args.database_url:
            table_of(store.RegistryRow).drop(engine, checkfirst=True)
        engine.dispose()


if __name__ == "__main__":
    main()

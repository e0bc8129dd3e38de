"""Benchmark: warranty decisions over a real Redis and a real store, through the whole path.

The warranty service runs in-process with its real consumers and outbox relay (the app's lifespan);
HTTP goes through the ASGI app over httpx (no socket). Measured:

1. seeding: a policy, one range receipt and N sales, published and applied (events/s);
2. the counter's synchronous path: sequential ``POST /claims/decisions`` and ``POST /returns/decisions``
   (publish the request as its event, wait for the committed decision): p50 / p99 / max latency, with
   authentication (a ``store`` token: HTTPBearer, registry lookup, SHA-256, role check) against without
   (the same routes with the token check overridden by a fixed ``store`` caller, so the response
   shaping is the same), interleaved in blocks of 25 requests in the same run;
3. asynchronous throughput: M claims published at once until all are decided (claims/s);
4. a receipt of 1,000,000 serials by range: publish until a serial in it reads ``in_stock``
   (``--range-only`` runs this part alone: the figure tests/integration/test_warranty_flow.py used to
   assert as a time limit).

    .venv/bin/python bench/warranty_decisions.py                      # embedded Redis, SQLite in a temp dir
    .venv/bin/python bench/warranty_decisions.py --database-url postgresql://postgres@127.0.0.1:5432/bench
    .venv/bin/python bench/warranty_decisions.py --range-only       # part 4 alone, 5 runs, median
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis.asyncio as aioredis
from fastapi import Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from serialtrack.redis_server import RedisServerProcess
from services.warranty import store
from services.warranty.app import definition
from shared.auth import Gate, Principal, api_routes
from shared.contracts import UnitReceived, UnitSold, WarrantyClaimSubmitted, WarrantyPolicySet
from shared.envelope import make_event
from shared.publishing import publish
from shared.service import build_app
from shared.settings import Settings
from shared.signing import operator_signer
from shared.store import InboxRow
from shared.tokens import create_token

# The counter decides at the server's clock: the story ends now (sales 19 days ago, 90 days of
# coverage, 30 days to return), so the counter's requests are all inside coverage and the window.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
AUTH_BLOCK = 25
MAKER, SKU = "acme", "TV-55"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def count(engine, query) -> int:
    with Session(engine) as session:
        return session.scalar(query) or 0


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.02)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}")


def gates(app) -> list[Gate]:
    def walk(dependant):
        for dep in dependant.dependencies:
            yield dep.call
            yield from walk(dep)
    return [call for route in api_routes(app.routes) for call in walk(route.dependant) if isinstance(call, Gate)]


def without_authentication(app, caller: Principal) -> None:
    """Every route's token check replaced by a fixed caller (what the API cost before tokens)."""
    def fixed(request: Request) -> Principal:
        request.state.principal = caller  # the shaping step still sees the caller's role
        return caller
    for gate in gates(app):
        app.dependency_overrides[gate] = fixed


async def run(settings: Settings, units: int, sync_requests: int, async_claims: int, range_runs: int = 0) -> None:
    """All four parts; with ``range_runs``, part 4 alone that many times."""
    token, record = create_token(settings.tokens_dir, "store", name="bench-counter")
    caller = Principal.of(record)
    app = build_app(definition, settings)
    runtime = app.state.runtime
    engine = runtime.engine
    redis = aioredis.from_url(settings.resolve_redis_url())
    inbox = select(func.count()).select_from(InboxRow).where(col(InboxRow.service) == "warranty")
    serials = [f"BW{n:07d}" for n in range(units)]

    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://warranty", timeout=30,
            headers={"Authorization": f"Bearer {token}"}) as client:
        if range_runs:
            times = [await range_receipt(settings, redis, client) for _ in range(range_runs)]
            rows = count(engine, select(func.count()).select_from(store.RangeRow))
            print(f"range receipt of 1,000,000 serials, {range_runs} runs: applied and readable in median "
                  f"{statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f}); "
                  f"{rows} range rows stored for {range_runs} receipts")
            await redis.aclose()
            return
        # 1. seeding
        seed = [
            make_event(WarrantyPolicySet(policy_id="P-1", manufacturer=MAKER, coverage_days=365,
                                         effective_from=T0 - timedelta(days=10)), source="bench/maker", time=T0),
            make_event(UnitReceived(manufacturer=MAKER, sku=SKU, location="dc-1",
                                    serial_range={"prefix": "BW", "first": 0, "last": units - 1, "width": 7}),
                       source="bench/wms", time=T0),
            *(make_event(UnitSold(manufacturer=MAKER, serial=s, sku=SKU, location=f"store-{n % 40}",
                                  terminal_id="till-1", receipt_id=f"R-{s}", customer_id=f"C-{n}"),
                         source="bench/pos", time=T0 + timedelta(days=1, seconds=n)) for n, s in enumerate(serials)),
        ]
        started = time.perf_counter()
        await publish(redis, settings.streams, [e.envelope for e in seed], operator_signer(settings.data_dir))
        await wait_until(lambda: count(engine, inbox) >= len(seed), 300, "seeding")
        seeding = time.perf_counter() - started
        print(f"seeding: {len(seed)} events (1 policy, 1 range receipt, {units} sales) applied in {seeding:.2f} s "
              f"= {len(seed) / seeding:,.0f} events/s")

        # 2. synchronous counter path, with and without authentication, interleaved
        latency: dict[tuple[str, str], list[float]] = {
            (kind, mode): [] for kind in ("claim", "return") for mode in ("auth", "no auth")}
        statuses: dict[str, int] = {}

        async def ask(kind: str, n: int, mode: str) -> None:
            if kind == "claim":
                s = serials[n]
                path, body = "/claims/decisions", {
                    "claim_id": f"SYNC-{n}", "manufacturer": MAKER, "serial": s, "customer_id": f"C-{n}",
                    "issue": "no picture", "location": f"store-{n % 40}"}
            else:
                s = serials[sync_requests + n]
                path, body = "/returns/decisions", {"request_id": f"SYNC-R-{n}", "manufacturer": MAKER, "serial": s,
                                                    "receipt_id": f"R-{s}", "location": "store-1"}
            t = time.perf_counter()
            response = await client.post(path, json=body)
            latency[(kind, mode)].append((time.perf_counter() - t) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{kind} {n} ({mode}): {response.status_code} {response.text}")
            statuses[response.json()["status"]] = statuses.get(response.json()["status"], 0) + 1

        for kind in ("claim", "return"):
            for start in range(0, sync_requests, AUTH_BLOCK):
                mode = "auth" if (start // AUTH_BLOCK) % 2 == 0 else "no auth"
                if mode == "no auth":
                    without_authentication(app, caller)
                for n in range(start, min(start + AUTH_BLOCK, sync_requests)):
                    await ask(kind, n, mode)
                app.dependency_overrides.clear()
        for (kind, mode), values in latency.items():
            path = "/claims/decisions" if kind == "claim" else "/returns/decisions"
            print(f"sync POST {path} {mode:>7}: n={len(values)} p50={statistics.median(values):.2f} ms "
                  f"p99={percentile(values, 99):.2f} ms max={max(values):.1f} ms")
        print(f"sync outcomes: {statuses}")
        started = time.perf_counter()
        for _ in range(2000):
            app.state.auth.tokens.verify(token)
        print(f"token check alone (registry lookup + SHA-256 + constant-time compare): "
              f"{(time.perf_counter() - started) / 2000 * 1e6:.1f} us")

        # 3. asynchronous throughput
        claims = [make_event(WarrantyClaimSubmitted(
            claim_id=f"ASYNC-{n}", manufacturer=MAKER, serial=serials[n % units], customer_id=f"C-{n % units}",
            issue=f"issue {n % 7}", location=f"store-{n % 40}"), source="bench/desk",
            time=T0 + timedelta(days=19, seconds=n)) for n in range(async_claims)]
        decided = select(func.count()).select_from(store.ClaimRow).where(
            col(store.ClaimRow.claim_id).like("ASYNC-%"), col(store.ClaimRow.status).is_not(None))
        started = time.perf_counter()
        await publish(redis, settings.streams, [e.envelope for e in claims])
        await wait_until(lambda: count(engine, decided) >= async_claims, 600, "async claims")
        elapsed = time.perf_counter() - started
        print(f"async: {async_claims} claims published at once, all decided in {elapsed:.2f} s "
              f"= {async_claims / elapsed:,.0f} claims/s")

        # 4. a million serials by range
        elapsed = await range_receipt(settings, redis, client)
        print(f"range receipt of 1,000,000 serials: applied and readable in {elapsed:.0f} ms")
    await redis.aclose()


async def range_receipt(settings: Settings, redis, client) -> float:
    """Milliseconds from publishing a receipt of 1,000,000 serials by range to its last serial reading
    ``in_stock``."""
    prefix = f"M{uuid.uuid4().hex[:6].upper()}"
    started = time.perf_counter()
    await publish(redis, settings.streams, [make_event(UnitReceived(
        manufacturer=MAKER, sku=SKU, location="dc-1",
        serial_range={"prefix": prefix, "first": 1, "last": 1_000_000, "width": 7}),
        source="bench/wms", time=T0 + timedelta(days=100)).envelope])
    while True:
        response = await client.get(f"/warranties/{MAKER}/{prefix}0999999")
        if response.status_code == 200 and response.json()["status"] == "in_stock":
            return (time.perf_counter() - started) * 1000
        await asyncio.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="default: SQLite in a temp dir")
    parser.add_argument("--redis-url", help="default: an embedded redis-server in a temp dir")
    parser.add_argument("--units", type=int, default=5000)
    parser.add_argument("--sync", type=int, default=300, help="synchronous requests of each kind")
    parser.add_argument("--claims", type=int, default=5000, help="claims for the async throughput run")
    parser.add_argument("--range-only", action="store_true", help="only part 4 (the 1,000,000-serial range "
                        "receipt), 5 runs, median")
    args = parser.parse_args()
    if args.units < 2 * args.sync:
        parser.error("--units must be at least twice --sync")
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        redis_url = args.redis_url
        if not redis_url:
            server = RedisServerProcess(Path(tmp) / "redis").start()
            redis_url = server.url
        try:
            settings = Settings(redis_url=redis_url, data_dir=Path(tmp), stream_prefix=f"bench-{uuid.uuid4().hex[:8]}",
                                warranty_database_url=args.database_url)
            print(f"store: {settings.database_url('warranty').split('@')[-1]}; batch size {settings.batch_size}")
            asyncio.run(run(settings, args.units, args.sync, args.claims, 5 if args.range_only else 0))
        finally:
            if server:
                server.stop()


if __name__ == "__main__":
    main()

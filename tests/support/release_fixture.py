"""The stores of a past release, for the upgrade tests: a story told to that release, its databases,
and what its HTTP APIs answered afterwards.

`python -m tests.support.release_fixture make DIR [sqlite] [postgresql]` (run on the release's own commit) starts a
redis-server and the four services as processes, each on its own database (SQLite files, then
PostgreSQL databases when TEST_POSTGRES_URL is set), publishes the story, waits until every
service has applied it, records the answers of every read in ``reads-<store>.json`` and keeps
the databases: SQLite files as they are, PostgreSQL databases as ``pg_dump --inserts`` scripts.

The upgrade test (tests/integration/test_upgrade.py) loads a copy, migrates it with the current
code, and asks every recorded read again.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from serialtrack.demo import Step, story
from serialtrack.publishing import build_envelope
from serialtrack.redis_server import RedisServerProcess, free_port
from shared.publishing import publish
from shared.settings import SERVICES, Settings

BATCH = "REL1"
STORY_START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # fixed: the reads recorded must not depend on the day
LAPTOP, LAPTOP_SKU = "zeta", "LAPTOP-14"


def laptop(n: int) -> str:
    return f"LT-{BATCH}-{n:04d}"


def _without_voids(steps: list[Step]) -> list[tuple[str, dict, datetime]]:
    """0.1.0 knew no voids (the fixture was recorded from the demo's story before it had one): a voided
    event is left out, and its correction stands at its time."""
    corrections = {step.data["voided_id"]: step.data.get("corrected") for step in steps if step.type == "event.voided"}
    events = []
    for step in steps:
        if step.type == "event.voided":
            continue
        fix = corrections.get(step.id or "")
        kind, data = (fix["type"], fix["data"]) if fix else (step.type, step.data)
        events.append((kind, data, STORY_START + step.offset))
    return events


def story_events() -> list[tuple[str, dict, datetime]]:
    """(type, data, time) of the whole story: the demo's, then a laptop line with a range receipt,
    sales, returns, an owner registration, a theft over a range and its partial recovery, a recall
    over a range with remedies, and warranty claims."""
    steps, _, _ = story(BATCH)
    events = _without_voids(steps)
    t = STORY_START + timedelta(days=5)
    hour = timedelta(hours=1)
    events.append(("warranty.policy.set", {
        "policy_id": "ZETA-LT-365", "manufacturer": LAPTOP, "sku": LAPTOP_SKU, "coverage_days": 365,
        "return_window_days": 14, "effective_from": "2020-01-01T00:00:00Z"}, t))
    events.append(("unit.received", {
        "manufacturer": LAPTOP, "sku": LAPTOP_SKU, "location": "warehouse-2",
        "serial_range": {"prefix": f"LT-{BATCH}-", "first": 1, "last": 120, "width": 4}}, t + hour))
    for n in range(1, 21):
        events.append(("unit.transferred", {"manufacturer": LAPTOP, "serial": laptop(n),
                                            "from_location": "warehouse-2", "to_location": "store-7"},
                       t + 2 * hour + timedelta(minutes=n)))
    for n in range(1, 16):
        sale = {"manufacturer": LAPTOP, "serial": laptop(n), "sku": LAPTOP_SKU, "location": "store-7",
                "terminal_id": f"store-7/till-{n % 3 + 1}", "receipt_id": f"R-{BATCH}-L{n}", "price": "1299.00"}
        if n % 4:
            sale["customer_id"] = f"C-{BATCH}-L{n}"
        events.append(("unit.sold", sale, t + 4 * hour + timedelta(minutes=n)))
    events.append(("unit.returned", {"manufacturer": LAPTOP, "serial": laptop(2), "location": "store-7",
                                     "receipt_id": f"R-{BATCH}-L2", "reason": "changed mind",
                                     "condition": "open_box"}, t + 30 * hour))
    events.append(("unit.adjusted", {"manufacturer": LAPTOP, "serial": laptop(30), "disposition": "damaged",
                                     "note": "dropped by forklift", "location": "warehouse-2"}, t + 31 * hour))
    events.append(("warranty.owner.registered", {"manufacturer": LAPTOP, "serial": laptop(4),
                                                 "customer_id": f"C-{BATCH}-GIFT", "channel": "web"}, t + 32 * hour))
    events.append(("theft.reported", {
        "manufacturer": LAPTOP, "agency": "metro-pd", "case_number": f"2026-{BATCH}-L",
        "serial_range": {"prefix": f"LT-{BATCH}-", "first": 100, "last": 110, "width": 4},
        "description": "pallet taken from the dock", "contact": "det. Ruiz, +1 555 0100"}, t + 33 * hour))
    events.append(("theft.recovered", {"manufacturer": LAPTOP, "agency": "metro-pd",
                                       "case_number": f"2026-{BATCH}-L", "serials": [laptop(100), laptop(101)]},
                   t + 40 * hour))
    events.append(("unit.sold", {"manufacturer": LAPTOP, "serial": laptop(105), "sku": LAPTOP_SKU,
                                 "location": "store-7", "terminal_id": "store-7/till-1",
                                 "receipt_id": f"R-{BATCH}-L105"}, t + 41 * hour))
    events.append(("recall.issued", {
        "recall_id": f"RC-{BATCH}-L", "manufacturer": LAPTOP, "skus": [LAPTOP_SKU],
        "hazard": "battery may swell", "remedy": "replace", "instructions": "stop using it",
        "serial_ranges": [{"prefix": f"LT-{BATCH}-", "first": 1, "last": 40, "width": 4}]}, t + 42 * hour))
    for n in (1, 3):
        events.append(("recall.remedy.completed", {"recall_id": f"RC-{BATCH}-L", "manufacturer": LAPTOP,
                                                   "serial": laptop(n), "remedy": "replace",
                                                   "location": "store-7"}, t + 44 * hour + timedelta(minutes=n)))
    for n, issue in ((5, "keyboard dead"), (6, "screen flickers"), (9, "fan noise")):
        events.append(("warranty.claim.submitted", {
            "claim_id": f"CL-{BATCH}-L{n}", "manufacturer": LAPTOP, "serial": laptop(n),
            "customer_id": f"C-{BATCH}-L{n}", "issue": issue, "location": "store-7"}, t + 46 * hour))
    events.append(("return.requested", {
        "request_id": f"RQ-{BATCH}-L7", "manufacturer": LAPTOP, "serial": laptop(7),
        "receipt_id": f"R-{BATCH}-L7", "location": "store-7", "customer_id": f"C-{BATCH}-L7",
        "reason": "too heavy"}, t + 47 * hour))
    return events


def reads(story_serials: list[tuple[str, str]], claims: list[str], returns: list[str],
          recalls: list[str]) -> list[tuple[str, str]]:
    """(service, GET path) of every read the upgrade test repeats."""
    paths: list[tuple[str, str]] = []
    for manufacturer, serial in story_serials:
        paths += [("inventory", f"/units/{manufacturer}/{serial}"),
                  ("warranty", f"/warranties/{manufacturer}/{serial}"),
                  ("theft", f"/stolen/{manufacturer}/{serial}"),
                  ("recalls", f"/units/{manufacturer}/{serial}/recalls")]
    paths += [("inventory", "/units?limit=500"), ("inventory", "/anomalies?limit=500"),
              ("warranty", "/claims?limit=500"), ("theft", "/alerts?limit=500"),
              ("theft", "/exports/alerts.json"), ("recalls", "/recalls?limit=500")]
    paths += [("warranty", f"/claims/{claim}") for claim in claims]
    paths += [("warranty", f"/returns/{request}") for request in returns]
    for recall in recalls:
        paths += [("recalls", f"/recalls/{recall}"), ("recalls", f"/recalls/{recall}/units?limit=500"),
                  ("recalls", f"/recalls/{recall}/report.json")]
    return paths


def story_reads() -> list[tuple[str, str]]:
    events = story_events()
    serials = sorted({(data["manufacturer"], data["serial"]) for _, data, _ in events if "serial" in data})
    serials += [(LAPTOP, laptop(n)) for n in (50, 99, 102, 110, 120)]  # in ranges only
    claims = [data["claim_id"] for kind, data, _ in events if kind == "warranty.claim.submitted"]
    requests = [data["request_id"] for kind, data, _ in events if kind == "return.requested"]
    recalls = [data["recall_id"] for kind, data, _ in events if kind == "recall.issued"]
    return reads(serials, claims, requests, recalls)


def _env(settings: Settings) -> dict[str, str]:
    from tests.support.running import settings_env

    return settings_env(settings)


def _settled(settings: Settings) -> bool:
    """Every group has read its stream to the end and acked it, and no outbox holds anything."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(settings.resolve_redis_url(), decode_responses=True)
    try:
        for stream in client.scan_iter(f"{settings.stream_prefix}:*", _type="stream"):
            last = client.xinfo_stream(stream)["last-generated-id"]
            for group in client.xinfo_groups(stream):
                if group["pending"] or group["last-delivered-id"] != last:
                    return False
    finally:
        client.close()
    for service in SERVICES:
        if httpx.get(settings.service_url(service) + "/healthz", timeout=5).json().get("outbox_unpublished"):
            return False
    return True


def make(directory: Path, store: str, database_urls: dict[str, str]) -> None:
    """Tell the story to this checkout's services on one kind of store, and keep what it left."""
    work = Path(tempfile.mkdtemp(prefix="serialtrack-release-"))
    redis = RedisServerProcess(work / "redis").start()
    per_service: dict[str, Any] = {**{f"{s}_database_url": url for s, url in database_urls.items()},
                                   **{f"{s}_port": free_port() for s in SERVICES}}
    settings = Settings(redis_url=redis.url, data_dir=work, stream_prefix="serialtrack", **per_service)
    processes = []
    try:
        for service in SERVICES:
            log = open(work / f"{service}.log", "ab")  # noqa: SIM115 - lives as long as the process
            processes.append(subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "serve", service],
                                              env=_env(settings), stdout=log, stderr=subprocess.STDOUT))
        for service in SERVICES:
            _wait(lambda s=service: httpx.get(settings.service_url(s) + "/healthz", timeout=1).status_code == 200)
        envelopes = [build_envelope(kind, data, source="release-fixture/story", id=f"story-{n:03d}", time=at)
                     for n, (kind, data, at) in enumerate(story_events())]

        async def send():
            client = aioredis.from_url(redis.url)
            try:
                await publish(client, settings.streams, envelopes)
            finally:
                await client.aclose()

        asyncio.run(send())
        for _ in range(3):  # derived events go round: settled three times over, a second apart
            time.sleep(1)
            _wait(lambda: _settled(settings), timeout=60)
        _no_dead_letters(settings)
        answers = {}
        for service, path in story_reads():
            response = httpx.get(settings.service_url(service) + path, timeout=10)
            answers[f"{service} {path}"] = {"status": response.status_code, "body": response.json()}
        (directory / f"reads-{store}.json").write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        redis.stop()
    for service, url in database_urls.items():
        if store == "sqlite":
            target = directory / "sqlite" / f"{service}.db"
            target.parent.mkdir(parents=True, exist_ok=True)
            source = sqlite3.connect(url.split("///", 1)[1])
            source.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            source.execute(f"VACUUM INTO '{target}'")
            source.close()
        else:
            target = directory / "postgresql" / f"{service}.sql"
            target.parent.mkdir(parents=True, exist_ok=True)
            dump = subprocess.run(["pg_dump", "--inserts", "--no-owner", "--no-privileges", url],
                                  check=True, capture_output=True, text=True).stdout
            # psql's \restrict meta-commands (pg_dump 15.14+) are not SQL: the test runs the script itself
            target.write_text("".join(line for line in dump.splitlines(keepends=True)
                                      if not line.startswith(("\\restrict ", "\\unrestrict "))))
    shutil.rmtree(work, ignore_errors=True)


def _no_dead_letters(settings: Settings) -> None:
    import redis as sync_redis

    client = sync_redis.Redis.from_url(settings.resolve_redis_url())
    try:
        for service in SERVICES:
            if client.xlen(settings.streams.dead_letters(service)):
                raise RuntimeError(f"{service} dead-lettered part of the story: fix the story")
    finally:
        client.close()


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the services did not settle")


def main() -> None:
    import os

    directory = Path(sys.argv[2])
    directory.mkdir(parents=True, exist_ok=True)
    stores = sys.argv[3:] or ["sqlite", "postgresql"]
    if "sqlite" in stores:
        work = Path(tempfile.mkdtemp(prefix="serialtrack-sqlite-"))
        make(directory, "sqlite", {s: f"sqlite:///{work}/{s}.db" for s in SERVICES})
    admin = os.environ.get("TEST_POSTGRES_URL")
    if admin and "postgresql" in stores:
        from tests.support.infra import PostgresAdmin

        postgres = PostgresAdmin(admin)
        urls = {s: postgres.create_database() for s in SERVICES}
        try:
            make(directory, "postgresql", urls)
        finally:
            for url in urls.values():
                postgres.drop_database(url)


if __name__ == "__main__" and sys.argv[1:2] == ["make"]:
    main()

"""Soak: many events through the whole system (`serialtrack up`: embedded Redis, the four services, the
archiver) with a short retention window. Redis's ``used_memory`` is sampled all along; at the end
the archive must hold every event that left Redis (archived + still in Redis = published, per
stream) and `serialtrack rebuild SERVICE --compare` must reproduce each live store.

    .venv/bin/python -m bench.retention_soak --events 2000000 --retention 30 --out soak.json

Events: for each unit a ``unit.received`` and, one chunk later, its ``unit.sold`` (both read by all four
services). The publisher keeps at most ``--backlog`` entries undelivered to the slowest group, so the
figure is about retention, not about how far a publisher can outrun the services. Progress lines go
to stdout; the summary to ``--out`` (JSON) as well.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import machine
from serialtrack.redis_server import free_port
from services.registry import INSTALLED
from shared.redis_clients import sync_client
from shared.retention import Archive, parse_id
from shared.streams import Streams

STREAMS = Streams()
RECEIVED, SOLD = STREAMS.for_type("unit.received"), STREAMS.for_type("unit.sold")


def say(message: str) -> None:
    print(f"{datetime.now(UTC).strftime('%H:%M:%S')} {message}", flush=True)


def envelope(event_type: str, n: int, run: str, data: dict) -> str:
    return json.dumps({"specversion": "1.0", "id": f"{run}-{n:09d}-{event_type}", "source": "bench/soak",
                       "type": event_type, "time": datetime.now(UTC).isoformat(), "data": data},
                      separators=(",", ":"))


def received(n: int, run: str) -> str:
    return envelope("unit.received", n, run, {"manufacturer": "acme", "serial": f"SK{run.upper()}{n:09d}",
                                              "sku": "TV-55", "location": "store-1"})


def sold(n: int, run: str) -> str:
    return envelope("unit.sold", n, run, {"manufacturer": "acme", "serial": f"SK{run.upper()}{n:09d}",
                                          "sku": "TV-55", "location": "store-1", "terminal_id": "store-1/till-1",
                                          "receipt_id": f"R{n}"})


class MemorySampler(threading.Thread):
    def __init__(self, client, every: float = 2.0):
        super().__init__(daemon=True)
        self.client, self.every = client, every
        self.samples: list[tuple[float, int]] = []
        self.missed = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.samples.append((round(time.monotonic() - started, 1), int(self.client.info("memory")["used_memory"])))
            except Exception:  # noqa: BLE001 - a missed sample is not a failure of the system: counted
                self.missed += 1
            self.stopping.wait(self.every)


def slowest_delivered(reader, stream: str) -> tuple[int, int]:
    """The lowest last-delivered id over the groups of ``stream`` (every service's group exists)."""
    groups = reader.xinfo_groups(stream)
    if len(groups) < len(INSTALLED):
        return (0, 0)
    return min(parse_id(g["last-delivered-id"]) for g in groups)


def caught_up(reader) -> bool:
    for stream in (RECEIVED, SOLD):
        last = reader.xrevrange(stream, count=1)
        for group in reader.xinfo_groups(stream):
            if int(group["pending"]) or (last and parse_id(group["last-delivered-id"]) < parse_id(last[0][0])):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--retention", type=float, default=30.0, help="SERIALTRACK_RETENTION_SECONDS")
    parser.add_argument("--interval", type=float, default=5.0, help="SERIALTRACK_ARCHIVE_INTERVAL_SECONDS")
    parser.add_argument("--chunk", type=int, default=10_000, help="events per publishing step")
    parser.add_argument("--backlog", type=int, default=40_000, help="most entries undelivered to the slowest group")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a new temporary directory")
    parser.add_argument("--no-rebuild", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="serialtrack-soak-")) / "data"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.endswith("_DATABASE_URL")}
    env.update(SERIALTRACK_DATA_DIR=str(data_dir), SERIALTRACK_EMBEDDED_REDIS_PORT=str(free_port()),
               SERIALTRACK_RETENTION_SECONDS=str(args.retention),
               SERIALTRACK_ARCHIVE_INTERVAL_SECONDS=str(args.interval), SERIALTRACK_LOG_FORMAT="text")
    for service in INSTALLED:
        env[f"{service.upper()}_PORT"] = str(free_port())
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / "up.log"
    say(f"data dir {data_dir}; `serialtrack up` log {log_path}; {machine()}")
    log = open(log_path, "ab")  # noqa: SIM115 - closed at the end
    up = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    summary: dict = {"events": args.events, "retention_seconds": args.retention, "archive_interval_seconds": args.interval,
                     "backlog_limit": args.backlog, "machine": machine(), "started_at": datetime.now(UTC).isoformat()}
    try:
        deadline = time.monotonic() + 180
        while b"serialtrack is up" not in log_path.read_bytes():
            if up.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serialtrack up did not come up; see {log_path}")
            time.sleep(0.5)
        credentials = data_dir / "credentials"
        producer = sync_client((credentials / "operator.url").read_text().strip())
        reader = sync_client((credentials / "operator-reader.url").read_text().strip(), decode_responses=True)
        sampler = MemorySampler(sync_client((credentials / "operator-reader.url").read_text().strip()))
        sampler.start()
        run = os.urandom(3).hex()
        units = args.events // 2
        published = {RECEIVED: 0, SOLD: 0}
        started = time.monotonic()
        last_ids: list[tuple[int, int]] = []
        half = args.chunk // 2
        for first in range(0, units + half, half):
            pipe = producer.pipeline(transaction=False)
            for n in range(first, min(first + half, units)):
                pipe.xadd(RECEIVED, {"event": received(n, run)})
                published[RECEIVED] += 1
            for n in range(max(first - half, 0), min(first, units)):  # the units of the step before
                pipe.xadd(SOLD, {"event": sold(n, run)})
                published[SOLD] += 1
            ids = pipe.execute()
            if ids:
                last_ids.append(parse_id(ids[-1]))
            # Backpressure: the slowest group must have been delivered what was published
            # ``backlog`` entries ago.
            keep = max(1, args.backlog // args.chunk)
            if len(last_ids) > keep:
                target = last_ids[-keep - 1]
                while min(slowest_delivered(reader, RECEIVED), slowest_delivered(reader, SOLD)) < target:
                    time.sleep(0.2)
            total = sum(published.values())
            if total and total % (args.chunk * 20) < args.chunk:
                peak = max((m for _, m in sampler.samples), default=0)
                say(f"published {total:,} in {time.monotonic() - started:.0f}s; Redis used_memory now "
                    f"{sampler.samples[-1][1] / 2**20 if sampler.samples else 0:.1f} MiB, peak {peak / 2**20:.1f} MiB; "
                    f"lengths {reader.xlen(RECEIVED):,} / {reader.xlen(SOLD):,}")
        publish_seconds = time.monotonic() - started
        say(f"published {sum(published.values()):,} events in {publish_seconds:.0f}s; waiting for the services")
        while not caught_up(reader):
            time.sleep(1)
        applied_seconds = time.monotonic() - started
        say(f"every group delivered and acked everything after {applied_seconds:.0f}s; waiting for the trim")
        while reader.xlen(RECEIVED) or reader.xlen(SOLD):
            time.sleep(1)
        sampler.stopping.set()
        sampler.join()
        archive = Archive(data_dir / "archive")
        counts = {}
        for stream in (RECEIVED, SOLD):
            ids = [entry.id for entry in archive.read(stream)]
            counts[stream] = {"published": published[stream], "archived": len(ids), "distinct": len(set(ids)),
                              "in_redis": reader.xlen(stream), "archive_bytes": sum(p.stat().st_size for p in archive.files(stream))}
        memory = [m for _, m in sampler.samples]
        summary.update({
            "published": sum(published.values()), "publish_seconds": round(publish_seconds, 1),
            "applied_seconds": round(applied_seconds, 1),
            "events_per_second_through_all_services": round(sum(published.values()) / applied_seconds),
            "used_memory_peak_bytes": max(memory), "used_memory_last_bytes": memory[-1],
            "used_memory_samples": len(memory), "used_memory_samples_missed": sampler.missed, "used_memory_timeline_mib": [
                (t, round(m / 2**20, 1)) for t, m in sampler.samples[:: max(1, len(sampler.samples) // 40)]],
            "archive": counts,
            "archive_holds_every_event": all(c["archived"] == c["distinct"] == c["published"] for c in counts.values()),
        })
        say(f"archive: {json.dumps(counts)}; Redis used_memory peak {max(memory) / 2**20:.1f} MiB")
        if not args.no_rebuild:
            summary["rebuild"] = {}
            for service in INSTALLED:
                began = time.monotonic()
                done = subprocess.run([sys.executable, "-m", "serialtrack.cli", "rebuild", service, "--compare", "--json"],
                                      env=env, capture_output=True, text=True, check=False)
                try:
                    report = json.loads(done.stdout)
                    result = {"equal": report["comparison"]["equal"], "applied": report["applied"],
                              "seconds": round(time.monotonic() - began, 1),
                              "tables": {t["table"]: [t["live_rows"], t["rebuilt_rows"]] for t in report["comparison"]["tables"]}}
                except (ValueError, KeyError):
                    result = {"error": done.stderr[-2000:], "code": done.returncode}
                summary["rebuild"][service] = result
                say(f"rebuild {service}: {result}")
    finally:
        summary["finished_at"] = datetime.now(UTC).isoformat()
        up.send_signal(signal.SIGINT)
        try:
            up.wait(120)
        except subprocess.TimeoutExpired:
            up.kill()
        log.close()
        text = json.dumps(summary, indent=1)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Redis restart under load (issue 12): `serialtrack up` on a fresh data dir, a feed of N receipts
published with `serialtrack publish --file`, and the embedded Redis SIGKILLed once K entries are in.
The supervisor restarts Redis on the same port and AOF; the feed's publish fails with one line and is
run again (it publishes only what is missing). Then: what the stores hold (nothing lost, nothing
applied twice) and how long after the restart every service had drained its backlog.

    .venv/bin/python -m bench.redis_restart --events 200000 --kill-at 60000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import machine
from serialtrack.redis_server import free_port
from serialtrack.runner import CHILDREN_FILE
from services.registry import INSTALLED
from shared.redis_clients import sync_client
from shared.streams import group_for


def cli(env, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serialtrack.cli", *args], env=env, capture_output=True, text=True,
                          check=False, **kwargs)


def count(db: Path, sql: str, *params) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
            return connection.execute(sql, params).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--kill-at", type=int, default=60_000, help="SIGKILL Redis once the stream holds this many")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serialtrack-bench-restart-") as tmp:
        data = Path(tmp) / "data"
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.endswith("_DATABASE_URL")}
        env.update({"SERIALTRACK_DATA_DIR": str(data), "SERIALTRACK_EMBEDDED_REDIS_PORT": str(free_port())})
        env.update({f"{s.upper()}_PORT": str(free_port()) for s in INSTALLED})
        feed = Path(tmp) / "feed.jsonl"
        with feed.open("w") as out:
            for n in range(args.events):
                out.write(json.dumps({"type": "unit.received", "id": f"rr-{n}", "data": {
                    "manufacturer": "acme", "serial": f"RR{n:08d}", "sku": "TV-55", "location": "dc-1"}}) + "\n")

        log = (Path(tmp) / "up.log").open("w+")
        up = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "up"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "serialtrack is up" not in Path(log.name).read_text():
                if up.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("serialtrack up did not start:\n" + Path(log.name).read_text())
                time.sleep(0.2)
            reader_url = (data / "credentials" / "operator-reader.url").read_text().strip()
            stream = "serialtrack:unit.received"

            started = time.monotonic()
            feeding = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "publish", "--file", str(feed)],
                                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            client = sync_client(reader_url)
            while client.xlen(stream) < args.kill_at:
                time.sleep(0.05)
            redis_pid = json.loads((data / CHILDREN_FILE).read_text())["children"]["redis"]["pid"]
            os.kill(redis_pid, signal.SIGKILL)
            killed = time.monotonic()
            client.close()
            feed_error = feeding.communicate(timeout=600)[1].strip()

            while True:  # back: the supervisor restarted it on the same port and AOF
                try:
                    client = sync_client(reader_url)
                    in_stream_after_restart = client.xlen(stream)
                    break
                except Exception:  # noqa: BLE001 - not back yet
                    time.sleep(0.05)
            back = time.monotonic()
            stores = {s: data / f"{s}.db" for s in INSTALLED}

            def applied_counts() -> dict[str, int]:
                return {s: count(db, "SELECT count(*) FROM inbox WHERE service = ?", s) for s, db in stores.items()}

            at_back = applied_counts()
            # The feed again, while the services catch up: when had every service applied what the
            # stream held at the restart, and when everything?
            report_file = (Path(tmp) / "again.json").open("w+")  # a file: a full pipe would hold the CLI up
            again = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "publish", "--file", str(feed),
                                      "--json"], env=env, stdout=report_file, stderr=subprocess.DEVNULL, text=True)
            caught_up = republished = drained = None
            while time.monotonic() - started < args.timeout:
                if republished is None and client.xlen(stream) >= args.events:  # the feed's last event is in
                    republished = time.monotonic()
                applied = applied_counts()
                if caught_up is None and all(n >= in_stream_after_restart for n in applied.values()):
                    caught_up = time.monotonic()
                if all(n >= args.events for n in applied.values()):
                    drained = time.monotonic()
                    break
                time.sleep(0.5)
            # Entries delivered before the kill whose XACK was lost stay pending until the reclaimer takes
            # them (SERIALTRACK_CLAIM_IDLE_MS) and finds them applied: the last of the backlog.
            settled = None
            while time.monotonic() - started < args.timeout:
                pending = sum(int(client.xpending(stream, group_for(s))["pending"]) for s in INSTALLED)
                if not pending:
                    settled = time.monotonic()
                    break
                time.sleep(0.5)
            stream_length = client.xlen(stream)
            client.close()
            again.wait(900)
            republished = republished or time.monotonic()
            report_file.seek(0)
            report = json.load(report_file)
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(120)
            log.seek(0)
            supervisor = re.compile(rf"^({'|'.join(['redis', *INSTALLED])}) (was|exited|restarted|could)")
            restarts = [line.strip() for line in log if supervisor.match(line)]

        inventory = stores["inventory"]
        print(f"machine: {machine()}")
        print(f"feed: {args.events} unit.received through `serialtrack up` (4 services, SQLite); Redis SIGKILLed "
              f"at {args.kill_at} entries, {killed - started:.1f} s into the feed")
        print(f"feed's publish after the kill: {feed_error}")
        print(f"supervisor: {' | '.join(restarts)}")
        print(f"Redis back {back - killed:.1f} s after the kill, holding {in_stream_after_restart} entries")
        print(f"publish again: {report['published']} published, {report['already_published']} already published, "
              f"{report['rejected']} rejected (the last in the stream {republished - back:.1f} s after Redis was back)")
        print(f"stream length {stream_length} (events {args.events})")
        print("applied (inbox rows): " + ", ".join(f"{s} {n}" for s, n in applied.items()))
        print(f"inventory: {count(inventory, 'SELECT count(*) FROM inventory_units')} units, "
              f"{count(inventory, 'SELECT count(*) FROM inventory_history')} history rows")
        print("applied when Redis was back: " + ", ".join(f"{s} {n}" for s, n in at_back.items()))
        print(f"every service had applied what the stream held at the restart {caught_up - back:.1f} s after Redis "
              "was back" if caught_up else "")
        print(f"no entry pending {settled - back:.1f} s after Redis was back" if settled else
              f"{pending} entries still pending after {args.timeout} s")
        print(f"backlog drained {drained - back:.1f} s after Redis was back, {drained - republished:.1f} s after the "
              f"feed's last event was published ({drained - started:.1f} s after the feed began)" if drained else
              f"NOT drained within {args.timeout} s")


if __name__ == "__main__":
    main()

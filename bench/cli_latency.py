"""Benchmark: how long the CLI takes to answer, measured like hyperfine (each run a fresh process).

Times `serialtrack --help` and `serialtrack publish TYPE --data ...` against a throwaway
redis-server this script starts (REDIS_URL points at it), and prints median, min and max wall
time of N runs after a warm-up run (which fills the OS file cache and Python's bytecode cache).

    .venv/bin/python bench/cli_latency.py            # 20 runs of each
    .venv/bin/python bench/cli_latency.py --runs 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serialtrack.redis_server import RedisServerProcess

# The installed entry point, as a user runs it; `python -m serialtrack.cli` where it is not installed.
_SCRIPT = Path(sys.executable).with_name("serialtrack")
SERIALTRACK = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "serialtrack.cli"]

SOLD = {"manufacturer": "acme", "serial": "BENCH-1", "sku": "TV-55", "location": "store-12",
        "terminal_id": "till-1", "receipt_id": "R-1"}


def time_command(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall seconds of each run; the first (warm-up) run is not counted. A failing run aborts."""
    timings = []
    for n in range(runs + 1):
        started = time.perf_counter()
        result = subprocess.run(argv, check=False, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
        if n:
            timings.append(elapsed)
    return timings


def summary(name: str, timings: list[float]) -> str:
    return (f"{name:<30} median {statistics.median(timings) * 1000:6.0f} ms   "
            f"min {min(timings) * 1000:6.0f} ms   max {max(timings) * 1000:6.0f} ms   ({len(timings)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"command: {' '.join(SERIALTRACK)}")
    with tempfile.TemporaryDirectory(prefix="serialtrack-cli-bench-") as tmp:
        redis = RedisServerProcess(Path(tmp) / "redis").start()
        try:
            env = {**os.environ, "REDIS_URL": redis.url, "SERIALTRACK_DATA_DIR": tmp}
            print(summary("serialtrack --help", time_command([*SERIALTRACK, "--help"], env, args.runs)))
            publish = [*SERIALTRACK, "publish", "unit.sold", "--data", json.dumps(SOLD)]
            print(summary("serialtrack publish unit.sold", time_command(publish, env, args.runs)))
        finally:
            redis.stop()


if __name__ == "__main__":
    main()

"""Recalls: one bulk receipt applied by the recalls service's handler, in-process on SQLite (no Redis):
what a range receipt costs that service (its unit rows, and since recalls_0002 its unit facts).

    PYTHONPATH=. .venv/bin/python -m bench.recalls_receipt --serials 1000000

Run it with PYTHONPATH pointing at another checkout to compare two versions of the code.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from services.registry import load
from tests.support import factories as f
from tests.support.service_layer import ServiceStore, template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serials", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = directory / "recalls.db"
        shutil.copy(template("recalls", directory), path)
        store = ServiceStore(load("recalls"), path)
        receipt = f.received("acme", minutes=0, selection={
            "serial_range": {"prefix": "RB", "first": 1, "last": args.serials, "width": 8}})
        started, cpu = time.perf_counter(), time.process_time()
        store.apply(receipt)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        store.close()
    print(f"recalls: a receipt of {args.serials:,} serials applied in {seconds:.1f}s "
          f"({args.serials / seconds:,.0f} units/s; CPU {cpu_seconds:.1f}s)")


if __name__ == "__main__":
    main()

"""Receipts under many open recalls (issue 12, fault 3): inventory as its own `serialtrack serve`
process (SQLite), one Redis. Twenty open recalls of 1,000 single-serial ranges each for one
manufacturer ("zeta"); then 500 single-unit receipts of another manufacturer ("other") and 500 of
zeta (a tenth of them covered by a recall), 500 more of zeta (none covered), each set timed from publication until inventory applied
all of it, in the same run. Before the index (0.1.0), inventory checked every open recall for every
unit: zeta's receipts took 6.7 s against 0.19 s for the other manufacturer's.

    .venv/bin/python -m bench.recall_index
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

from bench.harness import applied, environment, machine, service_process, store_engine
from bench.range_report import send
from shared.contracts import RecallIssued, UnitReceived
from shared.envelope import make_event


def receipts(maker: str, numbers, start: datetime):
    return [make_event(UnitReceived(manufacturer=maker, serial=f"Z{n:07d}", sku="TV-55", location="dc-1"),
                       source="bench/wms", time=start + timedelta(seconds=i)) for i, n in enumerate(numbers)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recalls", type=int, default=20)
    parser.add_argument("--ranges", type=int, default=1000)
    parser.add_argument("--receipts", type=int, default=500)
    args = parser.parse_args()
    start = datetime.now(UTC) - timedelta(days=1)
    recalls = [make_event(RecallIssued(
        recall_id=f"RC-{n}", manufacturer="zeta", hazard="overheating", remedy="repair",
        serial_ranges=[{"prefix": "Z", "first": n * 100_000 + k * 10, "last": n * 100_000 + k * 10, "width": 7}
                       for k in range(args.ranges)]), source="bench/maker", time=start) for n in range(args.recalls)]
    # Every tenth zeta receipt is a unit a recall covers (quarantined on arrival), the rest are not.
    zeta = [(i // 10) * 10 if i % 10 == 0 else i * 10 + 1 for i in range(args.receipts)]
    zeta_uncovered = [args.receipts * 10 + i * 10 + 3 for i in range(args.receipts)]  # ends in 3: no recall's
    with environment() as settings, service_process("inventory", settings, start_timeout=600):
        engine = store_engine(settings, "inventory")
        asyncio.run(send(settings, recalls))
        setup = time.perf_counter()
        while applied(engine, "inventory") < len(recalls):
            time.sleep(0.1)
        print(f"setup: {args.recalls} recalls of {args.ranges:,} ranges applied in {time.perf_counter() - setup:.1f} s")
        results: dict[str, list[float]] = {}
        done = len(recalls)
        for maker, numbers in (("other", range(args.receipts)), ("zeta", zeta), ("zeta", zeta_uncovered),
                               ("other", range(args.receipts, 2 * args.receipts))):
            events = receipts(maker, numbers, start + timedelta(hours=1))
            started = time.perf_counter()
            asyncio.run(send(settings, events))
            done += len(events)
            while applied(engine, "inventory") < done:
                time.sleep(0.02)
            results.setdefault(maker, []).append(time.perf_counter() - started)
    print(f"machine: {machine()}; SQLite; inventory as its own process; zeta's first set has every tenth unit "
          "covered by a recall (quarantined on arrival, reported in unit.quarantined), its second none")
    for maker, times in results.items():
        print(f"  {args.receipts} receipts of {maker:5s} ({'under' if maker == 'zeta' else 'without'} "
              f"{args.recalls} open recalls): " + ", ".join(f"{t:.2f} s ({args.receipts / t:,.0f}/s)" for t in times))


if __name__ == "__main__":
    main()

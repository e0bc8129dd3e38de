"""Recalls matcher benchmark.

``matcher``: the in-memory matcher alone (services.recalls.domain.RecallIndex): 10,000 open
   recalls of 20 manufacturers (serial ranges over 200 prefixes and 3 widths, explicit serial
   lists, sku-only and sku+range recalls), then unit events (manufacturer, serial, sku; about half
   of them covered) matched one by one. No Redis, no database: the lookup cost only.

(The end-to-end broadcast benchmark, one process per service, is bench/recall_broadcast.py.)

    .venv/bin/python bench/recalls_matching.py matcher [--recalls 10000] [--events 200000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.recalls.domain import Recall, RecallIndex
from shared.identity import SerialRange

# ---------------------------------------------------------------------------------------------
# the matcher


def make_recalls(count: int, rnd: random.Random) -> list[Recall]:
    makers = [f"maker-{i}" for i in range(20)]
    prefixes = [f"{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}{i % 10}" for i in range(200)]
    recalls = []
    for n in range(count):
        maker = rnd.choice(makers)
        kind = rnd.random()
        rid = f"RC-{n}"
        if kind < 0.6 or kind >= 0.9:
            width = rnd.choice([6, 7, 8])
            first = rnd.randrange(0, 10 ** width - 100_000)
            span = SerialRange(prefix=rnd.choice(prefixes), first=first, last=first + rnd.randrange(10, 100_000),
                               width=width)
            skus = frozenset({f"SKU-{rnd.randrange(50)}"}) if kind >= 0.9 else frozenset()
            recalls.append(Recall(rid, maker, skus=skus, ranges=(span,)))
        elif kind < 0.8:
            serials = frozenset(f"X{rnd.randrange(10 ** 9):09d}" for _ in range(10))
            recalls.append(Recall(rid, maker, serials=serials))
        else:
            recalls.append(Recall(rid, maker, skus=frozenset({f"SKU-{rnd.randrange(500)}"})))
    return recalls


def make_units(recalls: list[Recall], count: int, rnd: random.Random) -> list[tuple[str, str, str]]:
    units = []
    ranged = [r for r in recalls if r.ranges]
    for _ in range(count):
        if rnd.random() < 0.5:
            recall = rnd.choice(ranged)
            span = recall.ranges[0]
            serial = f"{span.prefix}{rnd.randint(span.first, span.last):0{span.width}d}"
            sku = next(iter(recall.skus)) if recall.skus else f"SKU-{rnd.randrange(500)}"
            units.append((recall.manufacturer, serial, sku))
        else:
            units.append((f"maker-{rnd.randrange(20)}", f"ZZ{rnd.randrange(10 ** 8):08d}", f"SKU-{rnd.randrange(500)}"))
    return units


def bench_matcher(args) -> None:
    rnd = random.Random(42)
    recalls = make_recalls(args.recalls, rnd)
    started = time.perf_counter()
    index = RecallIndex(recalls)
    built = time.perf_counter() - started
    units = make_units(recalls, args.events, rnd)
    match = index.match
    started = time.perf_counter()
    hits = 0
    for maker, serial, sku in units:
        if match(maker, serial, sku):
            hits += 1
    elapsed = time.perf_counter() - started
    # spot check against the brute-force definition, so the figure is of a correct matcher
    for maker, serial, sku in units[:300]:
        expected = sorted(r.recall_id for r in recalls if r.manufacturer == maker and r.covers(serial, sku))
        assert sorted(match(maker, serial, sku)) == expected, (maker, serial, sku)
    print(f"matcher: {len(recalls):,} open recalls indexed in {built * 1000:.0f} ms; "
          f"{len(units):,} unit events matched in {elapsed:.2f} s = {len(units) / elapsed:,.0f} events/s "
          f"({elapsed / len(units) * 1e6:.1f} us/event, {hits:,} matched at least one recall)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    m = sub.add_parser("matcher")
    m.add_argument("--recalls", type=int, default=10_000)
    m.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    bench_matcher(args)


if __name__ == "__main__":
    main()

"""Benchmark: what the near-miss check adds to the theft service's apply of sales.

Builds a registry of ``--reports`` random 12-character serials (set-based inserts, and the near-miss
index as migration theft_0003 fills it, when this build has it), then applies ``--sales`` sales of
other random serials (every tenth a misread reported one, ``--misread-every``) through the service's batch handler
(``EventProcessor.process``, as the consumer calls it: inbox, apply, outbox, one transaction) in
batches of ``--batch``, and prints events/s. Run it on a build without the near-miss check for the
baseline (``--repo`` a checkout of it: its modules are imported instead of this one's).

    .venv/bin/python bench/theft_sale_apply.py
    .venv/bin/python bench/theft_sale_apply.py --repo /tmp/serialtrack-before   # the baseline
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
parser.add_argument("--reports", type=int, default=200_000)
parser.add_argument("--sales", type=int, default=20_000)
parser.add_argument("--batch", type=int, default=200)
parser.add_argument("--misread-every", type=int, default=10, help="every Nth sale is a misread reported serial "
                                                                   "(0: none)")
args = parser.parse_args()
sys.path.insert(0, str(args.repo))

from sqlalchemy.orm import Session

from services.registry import load
from shared.contracts import UnitSold
from shared.envelope import make_event
from shared.schema import migrate
from shared.store import for_writing, insert_rows, make_engine, table_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def main() -> None:
    from services.theft import store
    from shared.consumer import EventProcessor

    rnd = random.Random(3)
    serials = ["".join(rnd.choices(ALPHABET, k=12)) for _ in range(args.reports)]
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/theft.db")
        definition = load("theft")
        migrate(engine, definition.migrations)
        with Session(engine) as session, session.begin():
            insert_rows(session, table_of(store.RegistryRow), [{
                "kind": "reported", "origin": "agency", "agency": "pd", "case_number": f"C-{n}", "manufacturer": "acme",
                "serial": s, "event_time": T0, "event_type": "theft.reported", "event_source": "bench/feed",
                "event_id": f"r-{n}", "description": None, "contact": None, "location": None, "disposition": None,
                "recorded_at": T0} for n, s in enumerate(serials)])
        migration = args.repo / "services/theft/migrations/theft_0003_near_misses.py"
        near_index = migration.exists()
        if near_index:
            spec = importlib.util.spec_from_file_location("theft_0003", migration)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            with engine.begin() as conn:
                module.backfill(conn, "theft_registry_keys", "theft_registry", "kind = 'reported'")
        sales = []
        for n in range(args.sales):
            serial = "".join(rnd.choices(ALPHABET, k=12))
            if args.misread_every and n % args.misread_every == 0:  # a misread reported serial
                reported = serials[n]
                serial = reported[:-1] + ("O" if reported[-1] != "O" else "0")
            sales.append(make_event(UnitSold(manufacturer="acme", serial=serial, sku="TV-55", location="store-1",
                                             terminal_id="store-1/till-1", receipt_id=f"R-{n}"),
                                    source="bench/pos", time=T0 + timedelta(minutes=1, seconds=n)))
        processor = EventProcessor("theft", for_writing(engine), definition.apply)
        started = time.perf_counter()
        for start in range(0, len(sales), args.batch):
            processor.process(sales[start:start + args.batch])
        took = time.perf_counter() - started
        misread = f"every {args.misread_every}th misread" if args.misread_every else "none misread"
        print(f"{'with' if near_index else 'without'} the near-miss check: {args.sales:,} sales ({misread}) applied in "
              f"batches of {args.batch} against {args.reports:,} reports in {took:.1f} s: "
              f"{args.sales / took:,.0f} events/s")


if __name__ == "__main__":
    main()

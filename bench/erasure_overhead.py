"""What erasure on request costs every batch (shared/erasure.py), in-process on a migrated SQLite
inventory store: ``pseudonymize_arrivals`` for a batch of sales with customer ids, while nothing
was erased (one query) and after N erasures (a pseudonym per customer and receipt, one more query).

    .venv/bin/python -m bench.erasure_overhead --batches 200 --erased 1000

Prints microseconds of CPU per event (time.process_time), to set against the ~100 us an event costs
the inventory service (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy.orm import Session

from services.registry import load
from shared.contracts import UnitSold
from shared.envelope import make_event
from shared.erasure import pseudonymize_arrivals
from shared.pseudonyms import Pseudonyms
from shared.schema import migrate
from shared.store import ErasedRow, insert_rows, make_engine, table_of, utcnow


def per_event_us(engine, batches: list, pseudonyms: Pseudonyms) -> float:
    started = time.process_time()
    for batch in batches:
        with Session(engine) as session, session.begin():
            pseudonymize_arrivals(session, "inventory", batch, pseudonyms)
    return (time.process_time() - started) / sum(len(b) for b in batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--erased", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serialtrack-bench-") as tmp:
        engine = make_engine(f"sqlite:///{tmp}/inventory.db")
        migrate(engine, load("inventory").migrations)
        pseudonyms = Pseudonyms(Path(tmp) / "tokens")
        batches = [[make_event(UnitSold(manufacturer="acme", serial=f"SN{b}X{n}", sku="TV-55", location="store-1",
                                        terminal_id="till-1", receipt_id=f"R-{b}-{n}", customer_id=f"C-{b}-{n}"),
                               source="bench/pos") for n in range(args.batch_size)] for b in range(args.batches)]
        nothing = per_event_us(engine, batches, pseudonyms)
        with Session(engine) as session, session.begin():
            insert_rows(session, table_of(ErasedRow), [
                {"service": "inventory", "pseudonym": pseudonyms(f"C-erased-{n}"), "kind": "customer",
                 "erasure_id": "bench", "erased_at": utcnow()} for n in range(args.erased)])
        after = per_event_us(engine, batches, pseudonyms)
        started = time.process_time()
        for n in range(100_000):
            pseudonyms(f"C-{n}")
        one = (time.process_time() - started) * 10
        engine.dispose()
    print(f"{args.batches} batches of {args.batch_size} sales with customer ids, SQLite")
    print(f"nothing erased: {nothing:.2f} us of CPU per event; after {args.erased} erasures: {after:.2f} us per event "
          f"(one pseudonym: {one:.2f} us, same run)")


if __name__ == "__main__":
    main()

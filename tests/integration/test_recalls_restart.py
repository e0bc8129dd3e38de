"""Crash and restart of the recalls service (a real OS process, SIGKILL) in the middle of a broadcast,
inside a batch (committed, not acked), on SQLite and PostgreSQL: the counts end exact, nothing stays
pending."""

from __future__ import annotations

import subprocess

import httpx

from services.recalls.app import definition as recalls
from shared.contracts import UnitQuarantined
from shared.envelope import make_event
from shared.store import make_engine
from tests.support import factories as f
from tests.support.recalls import assert_counts_match_rows, counts_match_rows
from tests.support.running import (
    auth_headers,
    kill_mid_batch,
    publish_events,
    start_service_process,
    wait_for,
    wait_healthy,
)

UNITS = 2000  # several batches: the consumer's test hook, not the volume, puts the kill inside one

def start(settings, log_path) -> subprocess.Popen:
    return start_service_process("recalls", settings, log_path)


def progress_in_store(settings, rid) -> dict | None:
    """The campaign's counts read from the store (the process is dead: no API to ask)."""
    engine = make_engine(settings.database_url("recalls"))
    try:
        return counts_match_rows(engine, rid).get(rid)
    finally:
        engine.dispose()


def progress(settings, rid) -> dict | None:
    try:
        response = httpx.get(f"{settings.service_url('recalls')}/recalls/{rid}", timeout=2,
                             headers=auth_headers(settings))
    except httpx.HTTPError:
        return None
    return response.json()["progress"] if response.status_code == 200 else None


async def test_sigkill_during_a_broadcast_leaves_exact_counts(settings, tmp_path):
    prefix, rid = f.serial("K"), f"RC-{f.serial()}"
    span = {"prefix": prefix, "first": 1, "last": UNITS, "width": 5}
    reports = [
        make_event(UnitQuarantined(recall_id=rid, manufacturer="acme", units=[{"serial": f"{prefix}{n:05d}", "location": "s-1"}]),
                   source="test/inventory", id=f"q-{n}", time=f.at(10))
        for n in range(1, UNITS + 1)
    ]
    await publish_events(settings, [
        f.received("acme", selection={"serial_range": span}, minutes=0),
        f.recall_issued("acme", minutes=5, recall_id=rid, serial_ranges=[span]),
    ])
    # every report twice: inventory's relay may publish a row again after its own crash
    await publish_events(settings, reports + reports[: UNITS // 2])

    # SIGKILL inside a batch: committed, not acked (the consumer's test hook holds that window open).
    process = start_service_process("recalls", settings, tmp_path / "recalls-1.log", hold_ack_ms=1500)
    window = await kill_mid_batch(settings, "recalls", process, recalls.event_types)
    window.assert_mid_batch(2 + UNITS)
    seen = progress_in_store(settings, rid)
    assert seen is None or seen.get("quarantined", 0) < UNITS, "the crash came too late to test anything"

    process = start(settings, tmp_path / "recalls-2.log")
    try:
        wait_healthy(settings, "recalls", process)
        final = await wait_for(lambda: (p := progress(settings, rid)) and p["quarantined"] == UNITS and p,
                               timeout=60, message="every unit quarantined after the restart")
        assert final["affected"] == UNITS and final["in_stock_not_quarantined"] == 0

        async def drained():
            async with httpx.AsyncClient(timeout=2) as client:
                health = (await client.get(f"{settings.service_url('recalls')}/healthz")).json()
            return health["pending_entries"] == 0

        await wait_for(drained, timeout=30, message="pending list empty")
        assert progress(settings, rid)["quarantined"] == UNITS
        assert assert_counts_match_rows(settings, rid)[rid] == {"quarantined": UNITS}
    finally:
        process.terminate()
        process.wait(timeout=30)

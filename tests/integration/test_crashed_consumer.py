"""Issue 12, fault 2: an entry whose apply kills the process (the OOM killer, a segfault) raises no
exception, so the failure budget never saw it and the entry crash-looped the service forever. The
consumer checks the delivery count before applying: a real `serialtrack serve inventory` process is
SIGKILLed while applying a marked event (the consumer's test hook), restarted, killed again... until
the entry's next delivery is over the limit, which dead-letters it as ``crashed_consumer``; the
events around it are applied once and nothing stays pending."""

from __future__ import annotations

import asyncio
import json
import signal
import time

from services.inventory.app import definition as inventory
from tests.integration.test_delivery_guarantees import count, dead_letters, pending_total, unit_states
from tests.support import factories as f
from tests.support.running import inbox_count, publish_events, start_service_process, wait_for, wait_healthy

MAX_DELIVERIES = 3


def test_an_entry_that_kills_the_process_is_dead_lettered_after_the_limit(sqlite_settings, tmp_path):
    settings = sqlite_settings.model_copy(update={"claim_idle_ms": 200, "max_deliveries": MAX_DELIVERIES})
    before = [f.received("acme", f.serial(), minutes=0) for _ in range(5)]
    poison = f.received("acme", f.serial("KILL"), minutes=1)
    after = [f.received("acme", f.serial(), minutes=2) for _ in range(5)]
    asyncio.run(publish_events(settings, [*before, poison, *after]))

    log = tmp_path / "inventory.log"
    kills = 0
    process = start_service_process("inventory", settings, log, crash_on_event_id=poison.id)
    deadline = time.monotonic() + 120
    try:
        while not asyncio.run(dead_letters(settings)):  # what `serialtrack up` does: start a dead service again
            assert time.monotonic() < deadline, f"not dead-lettered after {kills} kills"
            status = process.poll()
            if status is None:
                time.sleep(0.1)
                continue
            assert status == -signal.SIGKILL, f"the service ended otherwise than by the hook's SIGKILL: {status}"
            kills += 1
            assert kills <= MAX_DELIVERIES, "killed more often than the limit allows: the entry was not dead-lettered"
            process = start_service_process("inventory", settings, log, crash_on_event_id=poison.id)
        wait_healthy(settings, "inventory", process)
        asyncio.run(wait_for(lambda: inbox_count(settings, "inventory") == len(before) + len(after), timeout=60,
                             message="every other event applied"))
        asyncio.run(wait_for(lambda: _none_pending(settings), timeout=30, message="pending list empty"))
        letters = asyncio.run(dead_letters(settings))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)

    assert kills == MAX_DELIVERIES  # deliveries 1..3 each killed the process; the 4th was not applied
    assert len(letters) == 1, letters
    letter = letters[0]
    assert letter["reason"] == "crashed_consumer" and letter["deliveries"] == str(MAX_DELIVERIES + 1)
    assert f"delivered {MAX_DELIVERIES + 1} times" in letter["error"]
    assert json.loads(json.loads(letter["original"])["event"])["id"] == poison.id
    states = unit_states(settings)
    assert ("acme", poison.data.serial) not in states  # never applied: its transaction died each time
    assert len(states) == len(before) + len(after)
    assert count(settings, inventory_history()) == len(before) + len(after)  # each applied once


def inventory_history():
    from services.inventory.store import HistoryRow
    from shared.store import table_of
    return table_of(HistoryRow)


async def _none_pending(settings) -> bool:
    return await pending_total(settings, inventory.event_types) == 0

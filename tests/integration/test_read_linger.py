"""After a read that was not full, a stream's reader waits SERIALTRACK_LINGER_MS before reading again."""

from __future__ import annotations

import time

from services.inventory.app import definition as inventory
from tests.conftest import make_settings
from tests.support import factories as f
from tests.support.running import inbox_count, publish_events, running, wait_for


async def test_a_trickle_waits_the_linger_before_the_next_read(redis_handle, tmp_path):
    settings = make_settings(redis_handle.url, {}, tmp_path, linger_ms=600)
    async with running(inventory, settings):
        await publish_events(settings, [f.received("acme", f.serial(), minutes=0)])
        await wait_for(lambda: inbox_count(settings, "inventory") == 1, message="the first receipt applied")
        published = time.monotonic()
        await publish_events(settings, [f.received("acme", f.serial(), minutes=1)])  # same stream
        await wait_for(lambda: inbox_count(settings, "inventory") == 2, interval=0.01, message="the second receipt")
        waited = time.monotonic() - published
    # The first read (one entry, not full) was followed by the linger: the second entry waited for it.
    assert waited >= 0.3

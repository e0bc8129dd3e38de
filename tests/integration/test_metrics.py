"""A service's /metrics against a real Redis and real stores: what it counts once events are applied,
dead-lettered, delivered twice, published through the outbox and read over HTTP; and how lag is
found on the Redis the tests run (6.2: no `lag` in XINFO GROUPS)."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from services.inventory.app import definition as inventory
from shared.envelope import ENTRY_FIELD
from shared.stream_stats import LAG_COUNT_LIMIT, group_stats
from tests.support import factories as f
from tests.support.running import http, inbox_count, publish_events, running, wait_for


def metric(text: str, name: str, **labels) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def scrape(client) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def _dead_letter_count(settings) -> int:
    client = aioredis.from_url(settings.redis_url)
    try:
        return await client.xlen(settings.streams.dead_letters("inventory"))
    finally:
        await client.aclose()


async def test_metrics_count_applied_dead_lettered_duplicate_published_and_http(settings):
    received = [f.received("acme", f.serial(), minutes=0) for _ in range(3)]
    sale_never_received = f.sold("acme", f.serial(), minutes=5)  # an anomaly: one outgoing event
    bad_data = sale_never_received.envelope.model_dump(mode="json") | {"id": "bad-data"}
    bad_data["data"] = {"manufacturer": "acme"}
    raw = aioredis.from_url(settings.redis_url)
    sold_stream = settings.streams.for_type("unit.sold")
    await raw.xadd(sold_stream, {ENTRY_FIELD: b"{not json"})
    await raw.xadd(sold_stream, {ENTRY_FIELD: json.dumps(bad_data)})
    await raw.aclose()
    await publish_events(settings, [*received, sale_never_received])

    async with running(inventory, settings) as app, http(app) as client:
        await wait_for(lambda: inbox_count(settings, "inventory") == 4, message="4 events applied")
        await wait_for(lambda: _when(_dead_letter_count(settings), lambda n: n == 2), message="both dead-lettered")
        await publish_events(settings, [received[0]])  # the same envelope again: a duplicate
        text = await wait_for(lambda: _when(scrape(client), lambda t: metric(
            t, "serialtrack_events_duplicate_total") == 1), message="the duplicate counted")
        text = await wait_for(lambda: _when(scrape(client), lambda t: metric(
            t, "serialtrack_outbox_published_events_total") == 1), message="the anomaly published")
        unit = received[1].data
        assert (await client.get(f"/units/{unit.manufacturer}/{unit.serial}")).status_code == 200
        assert (await client.get("/units/acme/NO-SUCH-UNIT")).status_code == 404
        text = await scrape(client)

    assert metric(text, "serialtrack_events_applied_total", service="inventory", type="unit.received") == 3
    assert metric(text, "serialtrack_events_applied_total", service="inventory", type="unit.sold") == 1
    assert metric(text, "serialtrack_events_dead_lettered_total", reason="not_json") == 1
    assert metric(text, "serialtrack_events_dead_lettered_total", reason="bad_data") == 1
    # Every delivered good entry went through a batch, the duplicate included; lag per new event.
    assert metric(text, "serialtrack_batch_size_events_sum") == 5
    assert metric(text, "serialtrack_batch_apply_duration_seconds_count") == metric(
        text, "serialtrack_batch_size_events_count") >= 1
    assert metric(text, "serialtrack_event_lag_seconds_count") == 4
    assert metric(text, "serialtrack_event_lag_seconds_bucket", le="+Inf") == 4
    # Gauges read on scrape: caught up, nothing pending, outbox empty.
    received_stream = settings.streams.for_type("unit.received")
    assert metric(text, "serialtrack_stream_length", stream=received_stream) == 4  # the duplicate too
    assert metric(text, "serialtrack_stream_length", stream=sold_stream) == 3
    assert metric(text, "serialtrack_consumer_group_lag", stream=received_stream) == 0
    assert metric(text, "serialtrack_consumer_group_lag", stream=sold_stream) == 0
    assert metric(text, "serialtrack_consumer_group_pending", stream=sold_stream) == 0
    assert metric(text, "serialtrack_outbox_backlog") == 0
    assert metric(text, "serialtrack_metrics_refresh_errors_total") == 0
    # HTTP by route template, not by path.
    route = "/units/{manufacturer}/{serial}"
    assert metric(text, "serialtrack_http_requests_total", route=route, status="200", method="GET") == 1
    assert metric(text, "serialtrack_http_requests_total", route=route, status="404") == 1
    assert metric(text, "serialtrack_http_request_duration_seconds_count", route=route) == 2
    assert 'unit="' not in text and received[1].data.serial not in text


async def _when(awaitable, predicate):
    value = await awaitable
    return value if predicate(value) else None


async def test_two_services_in_one_process_keep_their_own_metrics(sqlite_settings):
    from services.theft.app import definition as theft

    settings = sqlite_settings
    async with running(inventory, settings) as inv, running(theft, settings) as thf:
        await publish_events(settings, [f.received("acme", f.serial(), minutes=0)])
        await wait_for(lambda: inbox_count(settings, "inventory") == 1 and inbox_count(settings, "theft") == 1,
                       message="applied by both")
        async with http(inv) as a, http(thf) as b:
            inv_text, theft_text = await scrape(a), await scrape(b)
    assert metric(inv_text, "serialtrack_events_applied_total", service="inventory", type="unit.received") == 1
    assert metric(inv_text, "serialtrack_events_applied_total", service="theft") == 0
    assert metric(theft_text, "serialtrack_events_applied_total", service="theft", type="unit.received") == 1
    assert metric(theft_text, "serialtrack_events_applied_total", service="inventory") == 0


async def test_group_lag_on_redis_without_lag_in_xinfo(redis_handle, sqlite_settings):
    """Counted after the group's last-delivered id, exact up to LAG_COUNT_LIMIT, then a floor."""
    settings = sqlite_settings
    stream, group = settings.streams.for_type("unit.sold"), "inventory"
    client = aioredis.from_url(settings.redis_url)
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
        before = await group_stats(client, stream, group)
        assert (before.lag, before.lag_exact, before.lag_seconds, before.pending) == (0, True, 0.0, 0)

        for n in range(10):
            await client.xadd(stream, {"n": n})
        await client.xreadgroup(group, "reader", {stream: ">"}, count=4)  # delivered, not acked
        stats = await group_stats(client, stream, group)
        assert (stats.length, stats.lag, stats.lag_exact, stats.pending) == (10, 6, True, 4)
        assert stats.lag_seconds >= 0 and stats.oldest_pending_idle_seconds is not None

        pipe = client.pipeline(transaction=False)
        for n in range(LAG_COUNT_LIMIT + 5):
            pipe.xadd(stream, {"n": n})
        await pipe.execute()
        capped = await group_stats(client, stream, group)
        assert (capped.lag, capped.lag_exact) == (LAG_COUNT_LIMIT, False)

        missing = await group_stats(client, stream, "nobody-yet")  # its service never started
        assert (missing.group_exists, missing.lag, missing.lag_exact) == (False, LAG_COUNT_LIMIT + 15, True)
    finally:
        await client.aclose()

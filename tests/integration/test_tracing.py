"""Trace context through a service: an event's `traceparent` reaches the events its apply publishes,
the log lines of its batch, and (with the OpenTelemetry SDK) a span around the apply; without
OpenTelemetry installed, the trace still goes on. Real Redis, real stores, real processes."""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.inventory.app import definition as inventory
from shared.envelope import Event
from shared.logs import JsonFormatter, TextFormatter
from tests.support import factories as f
from tests.support.running import inbox_count, publish_events, running, settings_env, wait_for, wait_healthy
from tests.support.streams import raw_entries

ROOT = Path(__file__).resolve().parents[2]


def traced(event: Event, traceparent: str) -> Event:
    return Event(event.envelope.model_copy(update={"traceparent": traceparent}), event.data)


def new_traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


_exporter = None


def span_exporter():
    """The OpenTelemetry SDK, recording spans in memory (a process has one tracer provider)."""
    global _exporter
    if _exporter is None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        _exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    return _exporter


async def _anomalies(settings) -> dict[str, dict]:
    """inventory.anomaly.detected envelopes published so far, by serial."""
    client = aioredis.from_url(settings.redis_url)
    try:
        entries = await raw_entries(client, settings.streams.for_type("inventory.anomaly.detected"))
    finally:
        await client.aclose()
    envelopes = [json.loads(fields[b"event"]) for _, fields in entries]
    return {e["data"]["serial"]: e for e in envelopes}


async def test_a_traced_event_gives_its_trace_to_what_it_causes_and_to_its_span_and_logs(sqlite_settings, caplog):
    settings = sqlite_settings
    exporter = span_exporter()
    traceparent, trace_id, parent_id = new_traceparent()
    traced_sale = traced(f.sold("acme", f.serial(), minutes=1), traceparent)  # never received: an anomaly
    plain_sale = f.sold("acme", f.serial(), minutes=1)  # the same, untraced, in the same batch
    caplog.set_level(logging.INFO, logger="serialtrack.consumer")
    async with running(inventory, settings):
        await publish_events(settings, [traced_sale, plain_sale])
        published = await wait_for(lambda: _two(_anomalies(settings)), message="both anomalies published")

    carried = published[traced_sale.data.serial]["traceparent"]
    assert carried.split("-")[1] == trace_id
    # The untraced sale's anomaly is not put in the traced one's trace (its apply started a trace of its own).
    assert published[plain_sale.data.serial].get("traceparent", "").split("-")[1:2] != [trace_id]

    spans = [s for s in exporter.get_finished_spans()
             if s.name == "inventory apply" and f"{s.context.trace_id:032x}" == trace_id]
    assert len(spans) == 1
    span = spans[0]
    assert f"{span.parent.span_id:016x}" == parent_id  # a child of the producer's span
    assert carried.split("-")[2] == f"{span.context.span_id:016x}"  # what it published is the span's child
    assert span.attributes["serialtrack.events"] == 1

    batch_lines = [r for r in caplog.records if r.name == "serialtrack.consumer" and "applied" in r.getMessage()]
    traced_lines = [r for r in batch_lines if trace_id in getattr(r, "trace_ids", [])]
    assert traced_lines, [r.getMessage() for r in batch_lines]
    assert TextFormatter("inventory").format(traced_lines[0]).endswith(f"trace_id={trace_id}")
    line = json.loads(JsonFormatter("inventory").format(traced_lines[0]))
    assert line["trace_id"] == trace_id and line["service"] == "inventory" and line["batch"]["new"] >= 1


async def _two(awaitable):
    value = await awaitable
    return value if len(value) >= 2 else None


WITHOUT_OTEL = """
import sys
sys.modules[sys.argv[3]] = None  # as if it were not installed: importing it fails
from sqlalchemy.orm import Session
from pathlib import Path
from services.inventory import handlers, store
from shared.consumer import EventProcessor
from shared.envelope import Event
from shared.schema import Migrations, migrate
from shared.store import for_writing, make_engine, take_outbox
from shared.tracing import otel_available
from tests.support import factories as f

assert otel_available() == (sys.argv[3] != "opentelemetry")
engine = make_engine(sys.argv[1])
migrate(engine, Migrations("inventory", Path("services/inventory/migrations"), store.TABLES))  # not app.py: it imports FastAPI
sale = f.sold("acme", f.serial(), minutes=1)
sale = Event(sale.envelope.model_copy(update={"traceparent": sys.argv[2]}), sale.data)
applied = EventProcessor("inventory", for_writing(engine), handlers.apply_events).process([sale])
with Session(engine) as session:
    rows = take_outbox(session, "inventory", 10)
import json
print(json.dumps({"new": applied.new_events, "traces": applied.trace_ids,
                  "outgoing": [json.loads(body).get("traceparent") for _, _, body in rows]}))
"""


@pytest.mark.parametrize("missing", ["opentelemetry.sdk", "opentelemetry"])
def test_without_the_opentelemetry_sdk_the_trace_still_goes_on(tmp_path, missing):
    """FastAPI brings the OpenTelemetry API; without the SDK (or without both, as with an older
    FastAPI) no span is recorded and the published events carry the incoming traceparent."""
    traceparent, trace_id, _ = new_traceparent()
    done = subprocess.run([sys.executable, "-c", WITHOUT_OTEL, f"sqlite:///{tmp_path}/store.db", traceparent, missing],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"new": 1, "traces": [trace_id], "outgoing": [traceparent]}


def test_a_service_process_logs_json_with_the_trace_id(sqlite_settings, tmp_path):
    settings = sqlite_settings
    traceparent, trace_id, _ = new_traceparent()
    log_path = tmp_path / "inventory.log"
    env = settings_env(settings) | {"SERIALTRACK_LOG_FORMAT": "json"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "serve", "inventory"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_healthy(settings, "inventory", process)
        import asyncio

        asyncio.run(publish_events(settings, [f.received("acme", f.serial(), minutes=0),
                                              traced(f.sold("acme", f.serial(), minutes=1), traceparent)]))
        deadline = time.monotonic() + 30
        while inbox_count(settings, "inventory") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert inbox_count(settings, "inventory") == 2
    finally:
        process.terminate()
        process.wait(60)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "service", "logger", "message"} <= r.keys() for r in records)
    assert any(r["logger"] == "serialtrack.service" and "consuming" in r["message"] for r in records)
    traced_lines = [r for r in records if r.get("trace_id") == trace_id or trace_id in r.get("trace_ids", [])]
    assert traced_lines and all(r["logger"] == "serialtrack.consumer" for r in traced_lines)
    assert "applied" in traced_lines[0]["message"]

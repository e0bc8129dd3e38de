"""Trace context of the events a service applies (the CloudEvents distributed-tracing extension).

An envelope may carry a W3C ``traceparent`` (and ``tracestate``). While a service applies such an
event:

- log lines written meanwhile carry its trace id (``current_trace_id``, read by the log
  formatter in shared/logs.py);
- the events the apply adds to the outbox carry the trace on (shared/store.py ``add_to_outbox``
  reads the ``TRACEPARENT`` key of the session's info);
- with OpenTelemetry installed (the ``otel`` extra) a span covers the apply, as a child of the
  event's trace; the published events name that span as their parent. Without it, they carry the
  incoming traceparent unchanged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger("serialtrack.tracing")

TRACEPARENT = "serialtrack_traceparent"  # session.info key: the trace the outbox rows being added belong to
current_trace_id: ContextVar[str | None] = ContextVar("serialtrack_trace_id", default=None)

try:  # the OpenTelemetry API comes with the optional `otel` extra (opentelemetry-sdk)
    from opentelemetry import trace as _otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover - exercised by the test that runs without the extra
    _otel_trace = None  # type: ignore[assignment]  # optional extra absent: None, checked before every use
    _propagator = None  # type: ignore[assignment]  # optional extra absent: None, checked before every use


def trace_id_of(traceparent: str) -> str:
    """'00-<trace id>-<parent id>-<flags>' -> the 32 hex digits of the trace id."""
    return traceparent[3:35]


def otel_available() -> bool:
    return _otel_trace is not None


@contextmanager
def apply_span(service: str, traceparent: str | None, tracestate: str | None, events: int) -> Iterator[str | None]:
    """Covers one apply (the events of one trace, or the untraced events of a batch).

    Yields the traceparent that events published because of this apply carry (None: untraced)."""
    token = current_trace_id.set(trace_id_of(traceparent) if traceparent else None)
    try:
        if _otel_trace is None:
            yield traceparent
            return
        carrier = {"traceparent": traceparent} if traceparent else {}
        if traceparent and tracestate:
            carrier["tracestate"] = tracestate
        context = _propagator.extract(carrier) if carrier else None
        tracer = _otel_trace.get_tracer("serialtrack")
        with tracer.start_as_current_span(f"{service} apply", context=context, kind=_otel_trace.SpanKind.CONSUMER,
                                          attributes={"serialtrack.service": service,
                                                      "serialtrack.events": events}) as span:
            if span.is_recording():  # an SDK is configured: outgoing events are this span's children
                ctx = span.get_span_context()
                yield f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
            else:  # the API alone: the span is not real, the incoming traceparent goes on unchanged
                yield traceparent
    finally:
        current_trace_id.reset(token)


def configure_tracing(service: str) -> None:
    """`serialtrack serve`: with the OpenTelemetry SDK installed and OTEL_TRACES_EXPORTER set to
    `console` or `otlp`, export this service's spans (OTEL_SERVICE_NAME defaults to
    serialtrack-<service>). Otherwise leave OpenTelemetry as it is: nothing is exported."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not exporter_name or exporter_name == "none":
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_TRACES_EXPORTER=%s but opentelemetry-sdk is not installed (pip install "
                    "'serialtrack[otel]'); no spans are exported", exporter_name)
        return
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http; no spans are exported")
            return
        exporter = OTLPSpanExporter()
    else:
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported here (console, otlp); no spans are exported",
                    exporter_name)
        return
    name = os.environ.get("OTEL_SERVICE_NAME") or f"serialtrack-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _otel_trace.set_tracer_provider(provider)

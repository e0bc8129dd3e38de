"""Prometheus metrics of one service process, served on its /metrics (README: "Metrics").

Each app has its own CollectorRegistry, not prometheus-client's global one: tests run several
services in one process, and each service's /metrics shows its own figures only.

The consumer applies thousands of events per second, so counting happens per batch: events are
counted per type once a batch committed (one increment per type, the label children cached), and
the event-time lag of a whole batch goes into ``BatchHistogram`` in one call. Gauges that need
Redis or the store (consumer-group lag, pending entries, outbox backlog) are read when /metrics
is scraped, not kept up to date on the hot path.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Iterable
from time import perf_counter

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from .stream_stats import group_stats, stream_info

# Events per transaction: from a trickle of one to a bulk drain of SERIALTRACK_BATCH_SIZE x streams.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
APPLY_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Event time -> committed: milliseconds when live, hours for a backlog or a late feed.
LAG_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)
HTTP_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class BatchHistogram:
    """A histogram fed a batch of values in one call (prometheus-client's takes one value per call,
    each under a lock). Written and collected from the event loop's thread only."""

    def __init__(self, name: str, documentation: str, service: str, buckets: Iterable[float],
                 registry: CollectorRegistry):
        self.name, self.documentation, self.service = name, documentation, service
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last slot: above every bound (+Inf)
        self.sum = 0.0
        registry.register(self)

    def observe_many(self, values: list[float]) -> None:
        counts, bounds = self.counts, self.bounds
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # first bound >= value: Prometheus' "le"
        self.sum += sum(values)

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=["service"])
        cumulative, buckets = 0, []
        for bound, count in zip(self.bounds, self.counts, strict=False):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        buckets.append(("+Inf", cumulative + self.counts[-1]))
        family.add_metric([self.service], buckets, sum_value=self.sum)
        yield family

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation, labels=["service"])]


class ServiceMetrics:
    def __init__(self, service: str):
        self.service = service
        self.registry = registry = CollectorRegistry()
        s = ["service"]
        self.events_applied = Counter(
            "serialtrack_events_applied", "Events applied (committed for the first time), by type.",
            s + ["type"], registry=registry)
        self.events_duplicate = Counter(
            "serialtrack_events_duplicate", "Events delivered again after they were applied, and skipped.",
            s, registry=registry)
        self.events_dead_lettered = Counter(
            "serialtrack_events_dead_lettered", "Entries moved to the dead-letter stream, by reason.",
            s + ["reason"], registry=registry)
        self.apply_failures = Counter(
            "serialtrack_apply_failures",
            "Failed applies: kind=store_unavailable (retried, not counted against the event) or "
            "kind=handler (the event is retried up to SERIALTRACK_MAX_DELIVERIES).",
            s + ["kind"], registry=registry)
        self.apply_retries = Counter(
            "serialtrack_apply_retries",
            "Batches retried at once after losing a race to another process of the service: kind=deadlock, "
            "serialization or integrity (shared/consumer.py, EventProcessor).",
            s + ["kind"], registry=registry)
        self.entries_reclaimed = Counter(
            "serialtrack_entries_reclaimed", "Entries taken over from a consumer that left them pending (XAUTOCLAIM).",
            s + ["stream"], registry=registry)
        self.batch_size = Histogram(
            "serialtrack_batch_size_events", "Events per applied transaction.",
            s, buckets=BATCH_SIZE_BUCKETS, registry=registry)
        self.apply_duration = Histogram(
            "serialtrack_batch_apply_duration_seconds", "Time to apply and commit one transaction.",
            s, buckets=APPLY_SECONDS_BUCKETS, registry=registry)
        self.event_lag = BatchHistogram(
            "serialtrack_event_lag_seconds", "From an event's time (envelope `time`) to its commit here.",
            service, LAG_SECONDS_BUCKETS, registry)
        self.outbox_published = Counter(
            "serialtrack_outbox_published_events", "Outgoing events the outbox relay published.",
            s, registry=registry)

        # Read on scrape (refresh()).
        g = s + ["stream"]
        self.stream_length = Gauge("serialtrack_stream_length", "Entries in a stream this service reads.",
                                   g, registry=registry)
        self.group_lag = Gauge(
            "serialtrack_consumer_group_lag",
            "Entries not yet delivered to this service's group (Redis 6.2: counted up to 1000).",
            g, registry=registry)
        self.group_lag_seconds = Gauge(
            "serialtrack_consumer_group_lag_seconds",
            "Age of the oldest entry not yet delivered to this service's group; 0 when none.",
            g, registry=registry)
        self.group_pending = Gauge(
            "serialtrack_consumer_group_pending", "Entries delivered to this service's group and not yet acked.",
            g, registry=registry)
        self.group_pending_idle = Gauge(
            "serialtrack_consumer_group_oldest_pending_idle_seconds",
            "Time since the oldest pending entry was last delivered; 0 when none is pending.",
            g, registry=registry)
        self.outbox_backlog = Gauge("serialtrack_outbox_backlog", "Outgoing events committed, not yet published.",
                                    s, registry=registry)
        self.outbox_oldest_age = Gauge(
            "serialtrack_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row; 0 when none.",
            s, registry=registry)
        self.scrape_errors = Counter(
            "serialtrack_metrics_refresh_errors", "Scrapes whose Redis or store figures could not be read.",
            s + ["part"], registry=registry)

        self.http_requests = Counter(
            "serialtrack_http_requests", "HTTP requests, by route template and status.",
            s + ["method", "route", "status"], registry=registry)
        self.http_duration = Histogram(
            "serialtrack_http_request_duration_seconds", "HTTP request latency, by route template.",
            s + ["method", "route"], buckets=HTTP_SECONDS_BUCKETS, registry=registry)

        self._applied_by_type: dict[str, Counter] = {}
        self._dead_by_reason: dict[str, Counter] = {}
        self._reclaimed_by_stream: dict[str, Counter] = {}
        self._duplicate = self.events_duplicate.labels(service)
        self._batch_size = self.batch_size.labels(service)
        self._apply_duration = self.apply_duration.labels(service)
        self._outbox_published = self.outbox_published.labels(service)

    # The consumer's hooks: once per batch.

    def batch_applied(self, delivered: int, by_type: dict[str, int], event_times: list[float], seconds: float) -> None:
        for event_type, count in by_type.items():
            child = self._applied_by_type.get(event_type)
            if child is None:
                child = self._applied_by_type[event_type] = self.events_applied.labels(self.service, event_type)
            child.inc(count)
        applied = sum(by_type.values())
        if delivered > applied:
            self._duplicate.inc(delivered - applied)
        self._batch_size.observe(delivered)
        self._apply_duration.observe(seconds)
        if event_times:
            now = time.time()
            self.event_lag.observe_many([now - t for t in event_times])

    def dead_lettered(self, reasons: Iterable[str]) -> None:
        for reason in reasons:
            child = self._dead_by_reason.get(reason)
            if child is None:
                child = self._dead_by_reason[reason] = self.events_dead_lettered.labels(self.service, reason)
            child.inc()

    def reclaimed(self, stream: str, count: int) -> None:
        child = self._reclaimed_by_stream.get(stream)
        if child is None:
            child = self._reclaimed_by_stream[stream] = self.entries_reclaimed.labels(self.service, stream)
        child.inc(count)

    def failed(self, kind: str) -> None:
        self.apply_failures.labels(self.service, kind).inc()

    def retried(self, kind: str) -> None:
        """Called from the consumer's worker thread (prometheus-client's counters are thread-safe)."""
        self.apply_retries.labels(self.service, kind).inc()

    def published(self, count: int) -> None:
        self._outbox_published.inc(count)

    def http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(self.service, method, route, str(status)).inc()
        self.http_duration.labels(self.service, method, route).observe(seconds)

    # On scrape.

    async def refresh(self, redis, streams: list[str], group: str, outbox) -> None:
        """``outbox``: a blocking callable -> (unpublished rows, age of the oldest in seconds or None)."""
        try:
            for stream in streams:
                stats = await group_stats(redis, stream, group, await stream_info(redis, stream))
                self.stream_length.labels(self.service, stream).set(stats.length)
                self.group_lag.labels(self.service, stream).set(stats.lag)
                self.group_lag_seconds.labels(self.service, stream).set(stats.lag_seconds)
                self.group_pending.labels(self.service, stream).set(stats.pending)
                self.group_pending_idle.labels(self.service, stream).set(stats.oldest_pending_idle_seconds or 0)
        except Exception:  # noqa: BLE001 - Redis down: the scrape still returns the counters
            self.scrape_errors.labels(self.service, "redis").inc()
        try:
            backlog, oldest = await asyncio.to_thread(outbox)
            self.outbox_backlog.labels(self.service).set(backlog)
            self.outbox_oldest_age.labels(self.service).set(oldest or 0)
        except Exception:  # noqa: BLE001 - the store is down
            self.scrape_errors.labels(self.service, "store").inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class HttpMetricsMiddleware:
    """Counts each HTTP request by its route template (``/units/{manufacturer}/{serial}``, not the
    path: one series per route, not per unit) and status, with its latency. Plain ASGI, so a
    request costs two counter updates and nothing else."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # an exception that escaped the app answers 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http(scope["method"], template, status, perf_counter() - started)

"""Log configuration of a service process: text (default) or one JSON object per line
(SERIALTRACK_LOG_FORMAT=json), each carrying the trace id of the event being applied, if any.

A record gets its trace from ``extra={"trace_ids": [...]}`` (the consumer's per-batch line names
every trace of the batch) or else from shared.tracing.current_trace_id (lines written while a
traced event is applied).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from .redact import redact
from .tracing import current_trace_id


def _trace_ids(record: logging.LogRecord) -> list[str]:
    explicit = getattr(record, "trace_ids", None)
    if explicit:
        return list(explicit)
    current = current_trace_id.get()
    return [current] if current else []


class TextFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__(f"%(asctime)s {service} %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))  # an API token never reaches a log, whoever logs it
        traces = _trace_ids(record)
        return f"{line} trace_id={','.join(traces)}" if traces else line


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        traces = _trace_ids(record)
        if len(traces) == 1:
            entry["trace_id"] = traces[0]
        elif traces:
            entry["trace_ids"] = traces
        for key in ("batch",):  # structured fields some lines carry (see shared/consumer.py)
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(service: str, log_format: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

"""What `serialtrack publish` does: strict validation of events typed or read from a file."""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from shared.contracts import EVENT_TYPES, unknown_fields
from shared.envelope import (
    Envelope,
    InvalidEvent,
    describe_validation_error,
    new_event_id,
    subject_of,
    validate_data,
)


def default_source() -> str:
    return f"cli/{getpass.getuser()}@{socket.gethostname()}"


def build_envelope(event_type: str, data: Any, *, source: str, id: str | None = None,
                   time: datetime | str | None = None) -> Envelope:
    """A new envelope, validated as strictly as a producer must be. Raises InvalidEvent."""
    if not isinstance(data, dict):
        raise InvalidEvent("bad_data", f"data must be a JSON object, got {type(data).__name__}")
    model = validate_data(event_type, data)
    extra = unknown_fields(EVENT_TYPES[event_type], data)
    if extra:
        raise InvalidEvent("bad_data", f"{event_type}: unknown field(s) {', '.join(extra)}; "
                                       f"allowed: {', '.join(EVENT_TYPES[event_type].model_fields)}")
    try:
        return Envelope(
            id=id or new_event_id(), source=source, type=event_type, time=time or datetime.now(UTC),
            subject=subject_of(model), data=model.model_dump(mode="json", exclude_none=True),
        )
    except ValidationError as exc:
        raise InvalidEvent("bad_envelope", describe_validation_error(exc)) from None


_ENVELOPE_KEYS = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data", "signature"}
_SHORT_KEYS = {"type", "data", "source", "id", "time"}


def envelope_from_document(document: Any, *, source: str) -> Envelope:
    """One line of an events file: ``{"type", "data"}`` (optionally ``source``/``id``/``time``),
    or a complete envelope, whose id, source and time are kept so a feed can be replayed."""
    if not isinstance(document, dict):
        raise InvalidEvent("bad_envelope", f"expected a JSON object, got {type(document).__name__}")
    if "type" not in document or "data" not in document:
        raise InvalidEvent("bad_envelope", 'each line needs {"type": ..., "data": {...}} or a complete envelope')
    complete = "specversion" in document or {"id", "source", "time"} <= document.keys()
    allowed = _ENVELOPE_KEYS if complete else _SHORT_KEYS
    extra = sorted(set(document) - allowed)
    if extra:
        raise InvalidEvent("bad_envelope", f"unknown key(s) {', '.join(extra)}")
    if complete and document.get("specversion", "1.0") != "1.0":
        raise InvalidEvent("bad_envelope", f"specversion must be '1.0', got {document['specversion']!r}")
    return build_envelope(document["type"], document["data"], source=document.get("source") or source,
                          id=document.get("id"), time=document.get("time"))


@dataclass
class LineResult:
    line: int
    envelope: Envelope | None = None
    error: str | None = None


def read_events(stream: Iterable[str], *, source: str) -> Iterator[LineResult]:
    """Each non-blank line of a JSONL file, validated. Bad lines carry a clear error."""
    for number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            yield LineResult(number, error=f"not valid JSON: {str(exc)[:200]}")
            continue
        try:
            yield LineResult(number, envelope=envelope_from_document(document, source=source))
        except InvalidEvent as exc:
            yield LineResult(number, error=exc.detail)

"""Importing a law-enforcement stolen-property feed (CSV or JSONL) as ``theft.reported`` /
``theft.recovered`` events, with progress and a per-line report. The CLI wraps this function.

CSV: a header row, then one report per row. Column names are case-insensitive.

| column | required | meaning |
| --- | --- | --- |
| agency | yes | reporting agency, e.g. ``metro-pd`` |
| case_number | yes | the agency's case number |
| manufacturer | yes | e.g. ``acme`` |
| serial | yes | the serial; with ``serial_last``, the first serial of a range |
| serial_last | no | last serial of consecutive serials (``SN000001`` .. ``SN000500``) |
| action | no | ``reported`` (default) or ``recovered`` |
| description | no | what was stolen |
| reported_at | no | when the theft was reported, ISO 8601 with zone |
| contact | no | whom to call |
| id | no | the event id; default: derived from the line's content, so importing a feed twice is harmless |
| time | no | the event time, ISO 8601 with zone; default: ``reported_at``, else now |

JSONL: one JSON object per line with the same keys; ``serials`` (a list) or ``serial_range``
(``{"prefix", "first", "last", "width"}``) may replace ``serial``.

Good lines are published in batches while bad ones are reported with their line number and the
reason; a line repeating an earlier one (same event id) is reported as a duplicate, not published.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from shared.contracts import TheftRecovered, TheftReported
from shared.envelope import Envelope, describe_validation_error, make_event

from .domain import split_range

Publish = Callable[[list[Envelope]], Awaitable[Any] | Any]
Progress = Callable[[int, int], None]

CSV_COLUMNS = ("agency", "case_number", "manufacturer", "serial", "serial_last", "action", "description",
               "reported_at", "contact", "id", "time")
REQUIRED_COLUMNS = ("agency", "case_number", "manufacturer", "serial")
JSONL_KEYS = frozenset(CSV_COLUMNS) | {"serials", "serial_range"}
ACTIONS = {"reported": TheftReported, "theft.reported": TheftReported,
           "recovered": TheftRecovered, "theft.recovered": TheftRecovered}
DEFAULT_SOURCE = "feed/import"
_IDS = uuid.UUID("3b0a4f7e-91d2-4c55-8f0b-6a7e2d1c9e84")
_TIME = TypeAdapter(datetime)


class FeedError(ValueError):
    """The file as a whole cannot be imported (unknown format, bad CSV header)."""


@dataclass(slots=True)
class LineResult:
    line: int
    status: Literal["published", "rejected", "duplicate"]
    type: str | None = None
    id: str | None = None
    error: str | None = None


@dataclass(slots=True)
class FeedReport:
    path: str
    format: str
    lines: list[LineResult] = field(default_factory=list)

    @property
    def published(self) -> int:
        return sum(r.status == "published" for r in self.lines)

    @property
    def rejected(self) -> int:
        return sum(r.status == "rejected" for r in self.lines)

    @property
    def duplicates(self) -> int:
        return sum(r.status == "duplicate" for r in self.lines)

    @property
    def errors(self) -> list[LineResult]:
        return [r for r in self.lines if r.status == "rejected"]

    def to_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "published": self.published, "rejected": self.rejected,
                "duplicates": self.duplicates, "lines": [asdict(r) for r in self.lines]}


class _LineError(ValueError):
    pass


def detect_format(path: Path, head: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if head.lstrip().startswith("{") else "csv"


def _csv_rows(handle: io.TextIOBase) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        return
    names = [h.strip().lower() for h in header]
    unknown = [h for h in names if h not in CSV_COLUMNS]
    if unknown:
        raise FeedError(f"unknown CSV column(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(CSV_COLUMNS)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise FeedError(f"the CSV header lacks required column(s) {', '.join(missing)} "
                        f"(required: {', '.join(REQUIRED_COLUMNS)})")
    if len(set(names)) != len(names):
        raise FeedError("the CSV header names a column twice")
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            yield reader.line_num, {"__error__": f"expected {len(names)} fields, got {len(row)}"}
            continue
        yield reader.line_num, {k: v.strip() for k, v in zip(names, row, strict=True) if v.strip() != ""}


def _jsonl_rows(handle: io.TextIOBase) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            yield number, {"__error__": f"not valid JSON: {str(exc)[:200]}"}
            continue
        if not isinstance(document, dict):
            yield number, {"__error__": f"expected a JSON object, got {type(document).__name__}"}
            continue
        unknown = sorted(set(document) - JSONL_KEYS)
        if unknown:
            yield number, {"__error__": f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(JSONL_KEYS))}"}
            continue
        yield number, document


def _parse_time(name: str, value: Any) -> datetime:
    try:
        parsed = _TIME.validate_python(value)
    except ValidationError:
        raise _LineError(f"{name} {value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise _LineError(f"{name} {value!r} needs a time zone (e.g. 2026-11-01T09:00:00Z)")
    return parsed.astimezone(UTC)


def build_event(row: dict[str, Any], *, source: str, now: datetime) -> Envelope:
    """One feed line -> a validated envelope, or _LineError with the reason."""
    row = dict(row)
    action = str(row.pop("action", "reported")).strip().lower()
    model = ACTIONS.get(action)
    if model is None:
        raise _LineError(f"action {action!r} is not one of: reported, recovered")
    event_id = row.pop("id", None)
    event_time = row.pop("time", None)
    last = row.pop("serial_last", None)
    if last is not None:
        if "serial" not in row:
            raise _LineError("serial_last needs serial (the first serial of the range)")
        try:
            first = str(row.pop("serial")).strip().upper()
            prefix, lo, hi, width = split_range(first, str(last).strip().upper())
        except ValueError as exc:
            raise _LineError(str(exc)) from None
        row["serial_range"] = {"prefix": prefix, "first": lo, "last": hi, "width": width}
    if model is TheftRecovered:
        extra = sorted({"description", "reported_at", "contact"} & set(row))
        if extra:
            raise _LineError(f"a recovery takes no {', '.join(extra)}")
    if "reported_at" in row:
        row["reported_at"] = _parse_time("reported_at", row["reported_at"])
    try:
        data = model.model_validate(row)
    except ValidationError as exc:
        raise _LineError(describe_validation_error(exc)) from None
    when = _parse_time("time", event_time) if event_time else getattr(data, "reported_at", None) or now
    if not event_id:
        # Derived from the content: the same feed imported twice publishes the same ids, which
        # consumers drop.
        event_id = str(uuid.uuid5(_IDS, f"{data.event_type}\n{data.model_dump_json()}"))
    try:
        return make_event(data, source=source, id=str(event_id), time=when).envelope
    except ValidationError as exc:
        raise _LineError(describe_validation_error(exc)) from None


async def import_feed(path: str | Path, publish: Publish, progress: Progress | None = None, *,
                      source: str = DEFAULT_SOURCE, batch_size: int = 500,
                      format: Literal["csv", "jsonl"] | None = None) -> FeedReport:
    """Read ``path``, publish its good lines through ``publish(envelopes)`` (sync or async) in
    batches of ``batch_size``, call ``progress(bytes_read, bytes_total)`` as it goes, and return the
    per-line report. Raises FeedError when the file as a whole is unusable (nothing is published
    then) and whatever ``publish`` raises (lines already published stay published; importing again
    is harmless because ids are stable)."""
    path = Path(path)
    if not path.is_file():
        raise FeedError(f"no such file: {path}")
    total = path.stat().st_size
    now = datetime.now(UTC)
    seen: dict[str, int] = {}
    batch: list[tuple[LineResult, Envelope]] = []

    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        head = handle.read(512)
        handle.seek(0)
        fmt = format or detect_format(path, head)
        report = FeedReport(str(path), fmt)
        rows = _csv_rows(handle) if fmt == "csv" else _jsonl_rows(handle)

        async def flush() -> None:
            if batch:
                outcome = publish([envelope for _, envelope in batch])
                if inspect.isawaitable(outcome):
                    await outcome
                for result, _ in batch:
                    result.status = "published"
                batch.clear()
            if progress:
                progress(_position(handle, total), total)

        for number, row in rows:
            result = LineResult(number, "rejected")
            report.lines.append(result)
            if "__error__" in row:
                result.error = row["__error__"]
                continue
            try:
                envelope = build_event(row, source=source, now=now)
            except _LineError as exc:
                result.error = str(exc)
                continue
            result.type, result.id = envelope.type, envelope.id
            if envelope.id in seen:
                result.status, result.error = "duplicate", f"repeats line {seen[envelope.id]}"
                continue
            seen[envelope.id] = number
            batch.append((result, envelope))
            if len(batch) >= batch_size:
                await flush()
        await flush()
    if progress:
        progress(total, total)
    return report


def _position(handle, total: int) -> int:
    try:
        return min(handle.buffer.tell(), total)
    except (OSError, AttributeError, ValueError):
        return 0

"""Reading a law-enforcement stolen-property feed (CSV or JSONL) as ``theft.reported`` /
``theft.recovered`` envelopes, line by line. `serialtrack theft import` publishes them through the
CLI's one file path (serialtrack/publishing.py: batches, progress, per-line report).

CSV: a header row, then one report per row. Column names are case-insensitive. The separator is
the one the header uses: comma, semicolon (spreadsheets in many locales) or tab.

| column | required | meaning |
| --- | --- | --- |
| agency | yes | reporting agency, e.g. ``metro-pd`` |
| case_number | yes | the agency's case number |
| manufacturer | yes | e.g. ``acme`` |
| serial | yes | the serial; with ``serial_last``, the first serial of a range |
| serial_last | no | last serial of consecutive serials (``SN000001`` .. ``SN000500``) |
| action | no | ``reported`` (default) or ``recovered`` |
| description | no | what was stolen |
| reported_at | no | when the theft was reported: ISO 8601 with zone, or a date (``2026-11-01``) meaning midnight UTC |
| contact | no | whom to call |
| id | no | the event id; default: derived from the line's content, so importing a feed twice is harmless |
| time | no | the event time, ISO 8601 with zone; default: ``reported_at``, else now |

JSONL: one JSON object per line with the same keys; ``serials`` (a list) or ``serial_range``
(``{"prefix", "first", "last", "width"}``) may replace ``serial``.
"""

from __future__ import annotations

import csv
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import IO, Any

from pydantic import TypeAdapter, ValidationError

from shared.contracts import TheftRecovered, TheftReported
from shared.envelope import Envelope, describe_validation_error, make_event

from .domain import split_range

CSV_COLUMNS = ("agency", "case_number", "manufacturer", "serial", "serial_last", "action", "description",
               "reported_at", "contact", "id", "time")
REQUIRED_COLUMNS = ("agency", "case_number", "manufacturer", "serial")
CSV_SEPARATORS = (",", ";", "\t")
JSONL_KEYS = frozenset(CSV_COLUMNS) | {"serials", "serial_range"}
ACTIONS: dict[str, type[TheftReported | TheftRecovered]] = {
    "reported": TheftReported, "theft.reported": TheftReported,
    "recovered": TheftRecovered, "theft.recovered": TheftRecovered}
DEFAULT_SOURCE = "feed/import"
_IDS = uuid.UUID("3b0a4f7e-91d2-4c55-8f0b-6a7e2d1c9e84")
_TIME = TypeAdapter(datetime)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# One line of the feed: its number and its envelope, or why it cannot be published.
FeedLine = tuple[int, Envelope | str]


class FeedError(ValueError):
    """The file as a whole cannot be imported (unknown format, bad CSV header)."""


class _LineError(ValueError):
    pass


def detect_format(path: Path, head: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if head.lstrip().startswith("{") else "csv"


def csv_separator(header_line: str) -> str:
    """The separator whose split of the header names only known columns; else the most frequent
    one, so the error then names the columns as the file's author wrote them."""
    for separator in CSV_SEPARATORS:
        names = [h.strip().strip('"').lower() for h in header_line.split(separator)]
        if len(names) > 1 and all(n in CSV_COLUMNS for n in names):
            return separator
    return max(CSV_SEPARATORS, key=header_line.count)


def _csv_rows(handle: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    header_line = handle.readline()
    if not header_line.strip():
        return
    handle.seek(0)
    reader = csv.reader(handle, delimiter=csv_separator(header_line))
    names = [h.strip().lower() for h in next(reader)]
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


def _jsonl_rows(handle: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
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


def _parse_time(name: str, value: Any, *, date_is_midnight: bool = False) -> datetime:
    if date_is_midnight and isinstance(value, str) and _DATE_ONLY.match(value.strip()):
        # Feeds often give only the day a theft was reported: that day's start in UTC.
        try:
            return datetime.combine(date.fromisoformat(value.strip()), time(), tzinfo=UTC)
        except ValueError:
            raise _LineError(f"{name} {value!r} is not a date") from None
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
        row["reported_at"] = _parse_time("reported_at", row["reported_at"], date_is_midnight=True)
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


def feed_lines(handle: IO[str], path: Path, *, source: str = DEFAULT_SOURCE,
               format: str | None = None) -> tuple[str, Iterator[FeedLine]]:
    """The feed's format and its lines as envelopes or errors, read lazily from ``handle`` (open
    with ``newline=""`` and seekable). Iterating raises FeedError when the file as a whole is
    unusable, before any line is yielded."""
    head = handle.read(512)
    handle.seek(0)
    fmt = format or detect_format(path, head)
    now = datetime.now(UTC)

    def lines() -> Iterator[FeedLine]:
        for number, row in (_csv_rows(handle) if fmt == "csv" else _jsonl_rows(handle)):
            if "__error__" in row:
                yield number, row["__error__"]
                continue
            try:
                yield number, build_event(row, source=source, now=now)
            except _LineError as exc:
                yield number, str(exc)

    return fmt, lines()

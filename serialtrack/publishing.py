"""What `serialtrack publish` and `serialtrack theft import` do with events: strict validation, and
the one path both take for a file: lines -> validated envelopes -> batched publish with progress ->
a per-line report.

Events published here go through a ledger in Redis (hash ``<prefix>:published-by-cli``, field
``<source> <id>``, value the stream entry id): XADD and the ledger entry happen in one Lua script,
so a line whose (source, id) was published before is reported as already published and not added
to its stream again. The services would drop a second copy anyway (they deduplicate on (source,
id)); the ledger lets the CLI say so. It costs about a fifth of what the stream keeps per event.
"""

from __future__ import annotations

import difflib
import getpass
import json
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import redis
from pydantic import ValidationError
from redis.exceptions import NoPermissionError

from shared.contracts import EVENT_TYPES, EventData, unknown_fields
from shared.envelope import (
    ENTRY_FIELD,
    Envelope,
    InvalidEvent,
    check_event_time,
    describe_validation_error,
    new_event_id,
    subject_of,
)
from shared.streams import Streams

if TYPE_CHECKING:
    from shared.signing import Signer

# Namespace of the ids derived from a {"type", "data"} line's content (see content_id).
_LINE_IDS = uuid.UUID("8e4c1f52-2d7a-4b0e-9a63-5f1d0c7b2e19")


def default_source() -> str:
    return f"cli/{getpass.getuser()}@{socket.gethostname()}"


def contract_for(event_type: str) -> type[EventData]:
    """The contract of a type this CLI may publish, or InvalidEvent saying why not."""
    model = EVENT_TYPES.get(event_type)
    if model is None:
        close = difflib.get_close_matches(event_type, list(EVENT_TYPES), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise InvalidEvent("unknown_type", f"unknown event type {event_type!r}; {hint}"
                                           "`serialtrack types` lists them with their fields")
    if model.published_by:
        raise InvalidEvent("unknown_type", f"{event_type} is published only by the {model.published_by} service "
                                           "(from its outbox); it cannot be published from outside")
    return model


def build_envelope(event_type: str, data: Any, *, source: str, id: str | None = None,
                   time: datetime | str | None = None, id_from_content: bool = False) -> Envelope:
    """A new envelope, validated as strictly as a producer must be. Raises InvalidEvent.

    Without ``id``: a fresh id, or with ``id_from_content`` one derived from the validated data and
    the given time, so the same line published twice carries the same id."""
    model = contract_for(event_type)
    if not isinstance(data, dict):
        raise InvalidEvent("bad_data", f"data must be a JSON object, got {type(data).__name__}")
    extra = unknown_fields(model, data)
    if extra:
        raise InvalidEvent("bad_data", f"{event_type}: unknown field(s) {', '.join(extra)}; "
                                       f"allowed: {', '.join(model.model_fields)}")
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent("bad_data", f"{event_type}: {describe_validation_error(exc)}") from None
    if not id and id_from_content:
        id = content_id(validated, time)
    try:
        envelope = Envelope(
            id=id or new_event_id(), source=source, type=event_type, time=time or datetime.now(UTC),
            subject=subject_of(validated), data=validated.model_dump(mode="json", exclude_none=True),
        )
    except ValidationError as exc:
        raise InvalidEvent("bad_envelope", describe_validation_error(exc)) from None
    check_event_time(envelope)  # consumers would dead-letter it: say so now
    return envelope


def content_id(data: EventData, time: datetime | str | None) -> str:
    """An id that depends only on what a line says: the validated data (so ``Acme`` and ``acme``
    give one id) and its time when it names one."""
    return str(uuid.uuid5(_LINE_IDS, f"{data.event_type}\n{time or ''}\n{data.model_dump_json()}"))


_ENVELOPE_KEYS = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data", "signature"}
_SHORT_KEYS = {"type", "data", "source", "id", "time"}


def envelope_from_document(document: Any, *, source: str) -> Envelope:
    """One line of an events file: ``{"type", "data"}`` (optionally ``source``/``id``/``time``;
    without ``id``, the id comes from the line's content), or a complete envelope, whose id, source
    and time are kept so a feed can be replayed."""
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
                          id=document.get("id"), time=document.get("time"), id_from_content=True)


# One line of a file, read: its number and its envelope, or why it cannot be published.
ParsedLine = tuple[int, Envelope | str]


def jsonl_lines(handle: Iterable[str], *, source: str) -> Iterator[ParsedLine]:
    """Each non-blank line of an events file (JSONL), validated."""
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            yield number, f"not valid JSON: {str(exc)[:200]}"
            continue
        try:
            yield number, envelope_from_document(document, source=source)
        except InvalidEvent as exc:
            yield number, exc.detail


Status = Literal["published", "already_published", "duplicate", "rejected"]


@dataclass(slots=True)
class LineResult:
    line: int
    status: Status
    type: str | None = None
    source: str | None = None
    id: str | None = None
    entry_id: str | None = None  # the stream entry: new, or the one an earlier run added
    error: str | None = None


@dataclass(slots=True)
class FileReport:
    path: str
    format: str
    lines: list[LineResult] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.lines)

    @property
    def rejected(self) -> list[LineResult]:
        return [r for r in self.lines if r.status == "rejected"]

    def to_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "published": self.count("published"),
                "already_published": self.count("already_published"), "duplicates": self.count("duplicate"),
                "rejected": self.count("rejected"), "lines": [asdict(r) for r in self.lines]}


# The JSON an envelope is published as (signed or not); InvalidEvent if it may not be published.
EntryBody = Callable[[Envelope], str]
# Publishes a batch of (envelope, its JSON); for each (in order): (added now, stream entry id), or
# the error of a Redis that refused it (NOPERM: the credential's role may not publish that type).
PublishBatch = Callable[[Sequence[tuple[Envelope, str]]], list[tuple[bool, str] | Exception]]


def entry_bodies(signer: Signer | None, *, require_all: bool = False) -> EntryBody:
    """Each envelope's entry JSON, signed by ``signer`` when one is given. A producer is strict: an
    envelope whose type must be signed, with no signer, or one the signer's key may not speak for,
    is refused here with the reason, instead of being dead-lettered by every service later."""
    from shared.roles import signature_required

    def unsigned(envelope: Envelope) -> str:
        if signature_required(envelope.type, require_all):
            raise InvalidEvent("unsigned", f"{envelope.type} must be signed: add --sign-with NAME "
                                           "(`serialtrack keys list` shows the keys)")
        return envelope.model_dump_json(exclude_none=True)

    if signer is None:
        return unsigned

    from shared.signing import SignatureRejected

    def signed(envelope: Envelope) -> str:
        try:
            return signer.entry_body(envelope)
        except SignatureRejected as exc:
            raise InvalidEvent(exc.reason, f"--sign-with {signer.key.name}: {exc.detail}") from None

    return signed


def publish_lines(parsed: Iterable[ParsedLine], publish: PublishBatch, *, report: FileReport,
                  body_of: EntryBody, on_batch: Callable[[], None] | None = None,
                  batch_size: int = 500) -> FileReport:
    """Publish the good lines in batches (a line repeating an earlier one of the file is reported
    as a duplicate, not published; one ``body_of`` refuses is rejected), record every line's
    outcome in ``report``, call ``on_batch`` after each batch (progress). Whatever ``parsed`` or
    ``publish`` raise propagates; lines already published stay published, and running the file
    again is harmless because ids are stable."""
    seen: dict[tuple[str, str], int] = {}
    batch: list[tuple[LineResult, Envelope, str]] = []

    def flush() -> None:
        if batch:
            outcomes = publish([(envelope, body) for _, envelope, body in batch])
            for (result, _, _), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    result.error = (f"refused by Redis (NOPERM: {outcome}): this credential's role may not "
                                    f"publish {result.type}")
                    continue
                added, entry_id = outcome
                result.status, result.entry_id = ("published" if added else "already_published"), entry_id
            batch.clear()
        if on_batch:
            on_batch()

    for number, outcome in parsed:
        if isinstance(outcome, str):
            report.lines.append(LineResult(number, "rejected", error=outcome))
            continue
        result = LineResult(number, "rejected", type=outcome.type, source=outcome.source, id=outcome.id)
        report.lines.append(result)
        if outcome.key in seen:
            result.status, result.error = "duplicate", f"repeats line {seen[outcome.key]}"
            continue
        try:
            body = body_of(outcome)
        except InvalidEvent as exc:
            result.error = exc.detail
            continue
        seen[outcome.key] = number
        batch.append((result, outcome, body))
        if len(batch) >= batch_size:
            flush()
    flush()
    return report


# KEYS: ledger hash, stream. ARGV: ledger field, envelope JSON. Atomic, so an XADD is never left
# without its ledger entry (a retry would add the event twice) nor the other way round (it would
# never be added).
_PUBLISH_ONCE = f"""
local prior = redis.call('HGET', KEYS[1], ARGV[1])
if prior then return {{0, prior}} end
local entry = redis.call('XADD', KEYS[2], '*', '{ENTRY_FIELD}', ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], entry)
return {{1, entry}}
"""


class LedgerPublisher:
    """Adds each envelope to its stream unless the ledger says its (source, id) was published.

    ``ledger=False``: plain XADD, every envelope reported as added. For producer credentials
    (shared/acl.py): their Redis user may XADD to its role's streams and nothing else, so it can
    neither read nor write the ledger. The services still drop a repeated (source, id)."""

    def __init__(self, client: redis.Redis, streams: Streams, pipeline_size: int = 1000, *, ledger: bool = True):
        self.client = client
        self.streams = streams
        self.pipeline_size = pipeline_size
        self.ledger = ledger
        self.script = client.register_script(_PUBLISH_ONCE) if ledger else None

    def __call__(self, entries: Sequence[tuple[Envelope, str]]) -> list[tuple[bool, str] | Exception]:
        if self.script is not None and isinstance(self.client, redis.RedisCluster):
            return [self._publish_once_on_a_cluster(envelope, body) for envelope, body in entries]
        ledger = self.streams.published_ledger()
        outcomes: list[tuple[bool, str] | Exception] = []
        for start in range(0, len(entries), self.pipeline_size):
            pipe = self.client.pipeline(transaction=False)
            for envelope, body in entries[start:start + self.pipeline_size]:
                if self.script is None:
                    pipe.xadd(self.streams.for_type(envelope.type), {ENTRY_FIELD: body})
                    continue
                self.script(keys=[ledger, self.streams.for_type(envelope.type)],
                            args=[f"{envelope.source} {envelope.id}", body], client=pipe)
            for result in pipe.execute(raise_on_error=False):
                if isinstance(result, NoPermissionError):  # this line only: Redis refused its stream
                    outcomes.append(result)
                elif isinstance(result, Exception):
                    raise result
                elif self.script is None:
                    outcomes.append((True, result.decode() if isinstance(result, bytes) else result))
                else:
                    outcomes.append(_added(result))
        return outcomes

    def _publish_once_on_a_cluster(self, envelope: Envelope, body: str) -> tuple[bool, str] | Exception:
        """A Redis Cluster runs a script only on keys of one slot, and redis-py's cluster pipelines
        refuse scripts: one call per event, with the stream's own ledger (Streams.published_ledger)."""
        assert self.script is not None
        stream = self.streams.for_type(envelope.type)
        try:
            return _added(self.script(keys=[self.streams.published_ledger(stream), stream],
                                      args=[f"{envelope.source} {envelope.id}", body]))
        except NoPermissionError as exc:
            return exc


def _added(result) -> tuple[bool, str]:
    """(added now, entry id) from the ledger script's answer."""
    added, entry_id = result
    return bool(added), entry_id.decode() if isinstance(entry_id, bytes) else entry_id

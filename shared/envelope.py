"""The event envelope and its wire format on Redis Streams.

Every stream entry has exactly one field, ``event``, holding the envelope as
UTF-8 JSON with CloudEvents 1.0 attribute names::

    XADD serialtrack:unit.sold * event '{"specversion":"1.0","id":"r-991","source":"pos/store-12/till-3",
        "type":"unit.sold","time":"2026-11-26T10:00:00Z","subject":"acme/SN1",
        "datacontenttype":"application/json","data":{...}}'

So a POS terminal in any language publishes with a plain XADD; no FastStream
framing is involved. ``(source, id)`` identifies an event: consumers
deduplicate on it, so a producer that retries must reuse the id.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from time import time_ns
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
)

from .contracts import EVENT_TYPES, EventData, UnitSelection
from .identity import unit_subject
from .time_window import event_time_problem

ENTRY_FIELD = "event"
MAX_ENTRY_BYTES = 1_000_000

_Printable = r"^[\x21-\x7e]+$"  # ids and sources are ASCII without spaces: they go into keys and logs
# W3C Trace Context traceparent: version-traceid-parentid-flags, lower-case hex.
TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


# CloudEvents' String type: Unicode without control characters or noncharacters (lone surrogates
# cannot reach here: they are not valid UTF-8 JSON).
_CLOUDEVENTS_STRING = r"^[^\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]*$"
MAX_SUBJECT_LENGTH = 1024


def _time_as_text(value: object) -> object:
    """The envelope time is an RFC 3339 string (CloudEvents Timestamp). pydantic would also take a
    number as Unix seconds (``"time": 1`` as 1970): a unit mix-up, refused. A datetime is what a
    producer in this process passes (make_event)."""
    if isinstance(value, (str, datetime)):
        return value
    raise ValueError(f"time must be an RFC 3339 string, got {type(value).__name__}")


class Signature(BaseModel):
    """The producer's signature (shared/signing.py): Ed25519 over the RFC 8785 canonical form of the
    envelope without this member, as the producer sent it.

    Tolerant like the envelope: only its shape is checked here, with bounds. Whether it is valid, and
    whether the key may speak for this event, is for ``shared.signing.verify``, which consumers run
    on the envelope as received before decoding it, so a malformed signature is reported as
    ``bad_signature`` there rather than as a bad envelope here. Producers do not build it by hand:
    ``shared.signing.sign_envelope`` writes it, always with ``alg`` Ed25519."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    alg: str = Field(max_length=32)
    kid: str = Field(min_length=1, max_length=128)
    sig: str = Field(min_length=1, max_length=256)  # base64url without padding; 86 characters for Ed25519


class Envelope(BaseModel):
    # Unknown extension attributes are ignored: consumers are tolerant.
    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_Printable)]
    source: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=_Printable)]
    type: str
    time: Annotated[AwareDatetime, BeforeValidator(_time_as_text)]
    # Informational (CloudEvents): any non-empty string without control characters. No service reads
    # it: the unit is taken from ``data``, so a producer may put the raw manufacturer name there.
    subject: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SUBJECT_LENGTH,
                                              pattern=_CLOUDEVENTS_STRING)] | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]
    signature: Signature | None = None
    # CloudEvents distributed-tracing extension: W3C Trace Context. A service that applies a traced
    # event logs its trace id and gives the events it publishes because of it the same trace.
    traceparent: Annotated[str, StringConstraints(pattern=TRACEPARENT_PATTERN)] | None = None
    tracestate: Annotated[str, StringConstraints(max_length=512, pattern=r"^[\x20-\x7e]*$")] | None = None

    @field_validator("traceparent")
    @classmethod
    def _real_trace(cls, value: str | None) -> str | None:
        # W3C: version ff is invalid, and all-zero trace or parent ids mean "no trace".
        if value is not None and (value.startswith("ff-") or value[3:35] == "0" * 32 or value[36:52] == "0" * 16):
            raise ValueError("traceparent has an invalid version or an all-zero trace/parent id")
        return value

    @field_validator("time")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is UTC:
            return value
        if not value.utcoffset():  # "Z" parses to pydantic's own UTC tzinfo: swap it, do not convert
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:  # year 1 with a negative offset, year 9999 with a positive one
            raise ValueError(f"time {value.isoformat()} is out of range") from None

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.id)


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded, validated event: the envelope plus its typed ``data``.

    Read the data from ``data``: the envelope of a decoded entry holds the typed data too, the
    envelope of a made one (``make_event``) its JSON form."""

    envelope: Envelope
    data: EventData
    entry_id: str | None = None  # the stream entry it came from, if any
    # The registered key whose signature the consumer verified (shared.signing.VerifiedKey), or None
    # for an unsigned event. Handlers that weigh who said something (ownership transfers) read it.
    signed_by: Any = None

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def time(self) -> datetime:
        return self.envelope.time

    @property
    def source(self) -> str:
        return self.envelope.source

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def key(self) -> tuple[str, str]:
        return (self.envelope.source, self.envelope.id)


def content_digest(event: Event) -> str:
    """What an event says, as 32 hex digits: its type, time and typed data (defaults included, nulls
    left out), whatever the producer's JSON spelling, key order or signature. Two deliveries of one
    ``(source, id)`` with different digests are two different events under one name."""
    data = event.data.__pydantic_serializer__.to_json(event.data, exclude_none=True)
    content = b"%s\n%s\n%s" % (event.envelope.type.encode(), event.envelope.time.isoformat().encode(), data)
    return hashlib.blake2b(content, digest_size=16).hexdigest()


class InvalidEvent(ValueError):
    """An entry that can never be applied: it goes to the dead-letter stream at once."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # machine-readable: too_large, not_json, bad_envelope, bad_time, unknown_type, bad_data
        self.detail = detail


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        # A ValueError raised by a validator reads "Value error, <our message>": the prefix says
        # nothing to whoever wrote the event.
        message = err["msg"].removeprefix("Value error, ") if err["type"] == "value_error" else err["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def validate_data(event_type: str, data: dict[str, Any]) -> EventData:
    model = EVENT_TYPES.get(event_type)
    if model is None:
        raise InvalidEvent("unknown_type", f"unknown event type {event_type!r}; known: {', '.join(sorted(EVENT_TYPES))}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent("bad_data", f"{event_type}: {describe_validation_error(exc)}") from None


def decode_entry(fields: dict[bytes, bytes], entry_id: str | None = None) -> Event:
    """Stream entry fields -> validated Event, or InvalidEvent with a clear reason."""
    raw = fields.get(ENTRY_FIELD.encode())
    if raw is None or len(fields) != 1:
        # Exactly one field: anything beside it would be ignored, and a producer who put meaning
        # there (a second event, a signature) must learn that it was not read.
        names = ", ".join(sorted(k.decode("utf-8", "replace")[:64] for k in fields)[:10]) or "none"
        problem = f"no '{ENTRY_FIELD}' field" if raw is None else f"fields other than '{ENTRY_FIELD}'"
        raise InvalidEvent("bad_envelope", f"entry has {problem} (fields: {names}); exactly one, '{ENTRY_FIELD}'")
    return decode_envelope_bytes(raw, entry_id)


def _typed_envelope(event_type: str, data_type: type[EventData]) -> type[Envelope]:
    return create_model(f"{data_type.__name__}Envelope", __base__=Envelope,
                        type=(Literal[event_type], ...),  # type: ignore[arg-type]  # a Literal made at run time
                        data=(data_type, ...))


@cache
def _known_envelopes() -> TypeAdapter:
    """Every known type's envelope with its data typed, chosen by "type": a valid entry is validated
    in one pass over its JSON, with no intermediate dict (a quarter of the cost of decoding). An
    entry it refuses is decoded again in two steps (envelope, then data), which name what is wrong.
    Built on first use, not at import: only consumers decode, and building it costs a CLI command
    that merely publishes a fifth of its start-up."""
    return TypeAdapter(Annotated[  # type: ignore[arg-type]  # a Union of models made at run time
        Union[tuple(_typed_envelope(t, model) for t, model in EVENT_TYPES.items())],  # noqa: UP007 - made from a tuple
        Field(discriminator="type"),
    ])


def decode_envelope_bytes(raw: bytes, entry_id: str | None = None) -> Event:
    if len(raw) > MAX_ENTRY_BYTES:
        raise InvalidEvent("too_large", f"envelope is {len(raw)} bytes; the limit is {MAX_ENTRY_BYTES}")
    try:
        envelope = _known_envelopes().validate_json(raw)
    except ValidationError:
        return _decode_in_two_steps(raw, entry_id)
    check_event_time(envelope)
    return Event(envelope, envelope.data, entry_id)


def check_event_time(envelope: Envelope) -> None:
    """A time outside the window of believable event times (shared/time_window.py) is refused."""
    problem = event_time_problem(envelope.time)
    if problem:
        raise InvalidEvent("bad_time", problem)


def _decode_in_two_steps(raw: bytes, entry_id: str | None) -> Event:
    try:
        envelope = Envelope.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise InvalidEvent("not_json", f"envelope is not valid UTF-8 JSON: {errors[0]['msg'][:200]}") from None
        if errors and errors[0]["type"] == "model_type":
            raise InvalidEvent("bad_envelope", "envelope must be a JSON object") from None
        if errors and all(err["loc"][:1] == ("time",) for err in errors):
            raise InvalidEvent("bad_time", describe_validation_error(exc)) from None
        raise InvalidEvent("bad_envelope", describe_validation_error(exc)) from None
    check_event_time(envelope)
    return Event(envelope, validate_data(envelope.type, envelope.data), entry_id)


def new_event_id() -> str:
    """A fresh event id: a UUID version 7 (RFC 9562), whose leading 48 bits are the Unix time in
    milliseconds. Ids made later sort later, so every consumer's inbox (keyed by event id) grows at
    its end instead of at a random place: a random id dirties one index page of its own per
    event, which at 10,000 events/s was most of what the stores wrote."""
    millis = time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")  # 74 of these 80 bits are used
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | random_bits
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return str(uuid.UUID(int=value))


def subject_of(data: EventData) -> str | None:
    if isinstance(data, UnitSelection):
        return unit_subject(data.manufacturer, data.serial) if data.serial else None
    manufacturer, serial = getattr(data, "manufacturer", None), getattr(data, "serial", None)
    return unit_subject(manufacturer, serial) if manufacturer and serial else None


def make_event(
    data: EventData,
    *,
    source: str,
    id: str | None = None,
    time: datetime | None = None,
) -> Event:
    """Wrap contract data in a new envelope (the producer side)."""
    envelope = Envelope(
        id=id or new_event_id(),
        source=source,
        type=data.event_type,
        time=time or datetime.now(UTC),
        subject=subject_of(data),
        data=data.model_dump(mode="json", exclude_none=True),
    )
    return Event(envelope, data)


def make_trusted_event(data_type: type[EventData], data: dict[str, Any], *, source: str, id: str,
                       time: datetime) -> Event:
    """Like make_event for ``data`` a service builds in bulk from values it stored after validating
    them (a recall's 100,000 unit keys): the contract is not checked again, which would cost more
    than everything else about the event. ``data`` must already be in its JSON form."""
    envelope = Envelope(id=id, source=source, type=data_type.event_type, time=time, data=data)
    return Event(envelope, data_type.model_construct(**data))


def encode_envelope(envelope: Envelope) -> dict[bytes, bytes]:
    """Envelope -> stream entry fields."""
    return {ENTRY_FIELD.encode(): envelope.model_dump_json(exclude_none=True).encode()}

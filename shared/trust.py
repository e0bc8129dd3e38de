"""What a consumer checks before it believes an event: that it came through the stream of its type,
and that its signature (where the policy wants one) is valid for what it says.

Redis ACLs decide which role may write a stream (README, "Redis users"); they cannot tell which
store, agency or manufacturer wrote an entry. The signature does (``shared/signing.py``): an event
whose type must be signed, or that carries a signature, is verified against the key registry on
the envelope as it arrived. A failure is an ``InvalidEvent`` with the reason, so the consumer
dead-letters it at once like any entry that can never apply; nothing of it is applied.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .contracts import EventVoided
from .envelope import ENTRY_FIELD, Event, InvalidEvent
from .keys import RegistryWatcher
from .roles import signature_required
from .signing import UNKNOWN_KEY, SignatureRejected, parse_envelope_json, verify
from .streams import Streams
from .voids import check_publisher


class Trust:
    def __init__(self, streams: Streams, key_registry: Path, require_all: bool = False):
        self.streams = streams
        self.registry = RegistryWatcher(key_registry)  # re-read within seconds of a change
        self.require_all = require_all
        self._stream_of: dict[str, str] = {}  # type -> its stream name, built as types are seen

    def check(self, stream: str, event: Event, fields: dict[bytes, bytes]) -> Event:
        """The event, with ``signed_by`` set when it was signed; InvalidEvent when it must not apply."""
        expected = self._stream_of.get(event.type)
        if expected is None:
            expected = self._stream_of[event.type] = self.streams.for_type(event.type)
        if expected != stream:
            # An envelope's type picks its handler: one XADDed to another type's stream would be
            # applied as what it claims, by a producer whose Redis user may only write that stream.
            raise InvalidEvent("type_stream_mismatch", f"a {event.type} envelope on the stream {stream}")
        if event.envelope.signature is None and not signature_required(event.type, self.require_all):
            return event  # the common case (a POS sale): nothing to verify
        try:
            envelope = parse_envelope_json(fields[ENTRY_FIELD.encode()])
        except ValueError as exc:  # duplicate member names: no single signed meaning
            raise InvalidEvent("bad_envelope", str(exc)) from None
        try:
            try:
                signed_by = verify(envelope, self.registry.current(), require_all=self.require_all)
            except SignatureRejected as exc:
                if exc.reason != UNKNOWN_KEY:
                    raise
                # A key registered a moment ago: look again now rather than at the next poll.
                signed_by = verify(envelope, self.registry.fresh(), require_all=self.require_all)
            if signed_by is not None and isinstance(event.data, EventVoided):
                # A void withdraws someone's fact: its key must be able to speak for that fact too.
                key = self.registry.current().get(signed_by.kid) or self.registry.fresh().get(signed_by.kid)
                assert key is not None  # it just verified the signature
                check_publisher(event.data, key)
        except SignatureRejected as exc:
            raise InvalidEvent(exc.reason, exc.detail) from None
        return dataclasses.replace(event, signed_by=signed_by)

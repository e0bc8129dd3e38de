import json
import time
import uuid

import pytest

from shared.contracts import EVENT_TYPES, RecallIssued, UnitReceived
from shared.envelope import InvalidEvent, decode_entry, encode_envelope, make_event, new_event_id

GOOD = {
    "specversion": "1.0", "id": "e-1", "source": "pos/store-1/till-2", "type": "unit.sold",
    "time": "2026-11-01T10:00:00-05:00",
    "data": {"manufacturer": "Acme", "serial": "sn1", "sku": "TV", "location": "store-1", "terminal_id": "t",
             "receipt_id": "r", "price": "19.99", "some_future_field": "ignored"},
}


def entry(document) -> dict:
    return {b"event": json.dumps(document).encode()}


def test_decode_normalizes_identity_and_time_and_tolerates_new_fields():
    event = decode_entry(entry(GOOD), "1-0")
    assert event.data.manufacturer == "acme" and event.data.serial == "SN1"
    assert event.time.isoformat() == "2026-11-01T15:00:00+00:00"
    assert event.key == ("pos/store-1/till-2", "e-1") and event.entry_id == "1-0"


@pytest.mark.parametrize("mutate, reason, words", [
    (lambda d: d | {"time": "2026-11-01T10:00:00"}, "bad_time", "timezone"),
    (lambda d: d | {"time": 1}, "bad_time", "RFC 3339 string"),  # not taken as Unix seconds (1970)
    (lambda d: d | {"time": 1.5e9}, "bad_time", "RFC 3339 string"),
    (lambda d: d | {"time": "9999-12-31T00:00:00Z"}, "bad_time", "ahead of the clock"),
    (lambda d: d | {"time": "0001-01-01T00:00:00Z"}, "bad_time", "before 2000-01-01"),
    (lambda d: d | {"time": "0001-01-01T00:00:00+01:00"}, "bad_time", "out of range"),
    (lambda d: d | {"subject": "tab\there"}, "bad_envelope", "subject"),
    (lambda d: d | {"data": {**d["data"], "serial": "\u017fn-9"}}, "bad_data", "non-ASCII"),
    (lambda d: d | {"data": {**d["data"], "serial": "\ufb01x1"}}, "bad_data", "non-ASCII"),
    (lambda d: d | {"data": {**d["data"], "manufacturer": "\u212acme"}}, "bad_data", "non-ASCII"),
    (lambda d: d | {"specversion": "0.3"}, "bad_envelope", "specversion"),
    (lambda d: d | {"id": ""}, "bad_envelope", "id"),
    (lambda d: d | {"source": "has space"}, "bad_envelope", "source"),
    (lambda d: d | {"type": "unit.exploded"}, "unknown_type", "unit.exploded"),
    (lambda d: d | {"data": {**d["data"], "price": "-1"}}, "bad_data", "price"),
    (lambda d: d | {"data": {**d["data"], "serial": ["SN1"]}}, "bad_data", "serial"),
    (lambda d: {k: v for k, v in d.items() if k != "data"}, "bad_envelope", "data"),
])
def test_decode_rejections_say_what_is_wrong(mutate, reason, words):
    with pytest.raises(InvalidEvent) as caught:
        decode_entry(entry(mutate(GOOD)))
    assert caught.value.reason == reason
    assert words in str(caught.value)


def test_decode_rejects_non_json_oversized_and_foreign_entries():
    for fields, reason in [
        ({b"event": b"\xff\xfe"}, "not_json"),
        ({b"event": b"[" * 50_000 + b"]" * 50_000}, "not_json"),
        ({b"event": b" " * 1_000_001}, "too_large"),
        ({b"event": b"42"}, "bad_envelope"),
        ({b"__data__": b"faststream framing"}, "bad_envelope"),
        ({b"event": json.dumps(GOOD).encode(), b"extra": b"x"}, "bad_envelope"),  # exactly one field
    ]:
        with pytest.raises(InvalidEvent) as caught:
            decode_entry(fields)
        assert caught.value.reason == reason


def test_subject_is_informational_any_cloudevents_string():
    # What the CloudEvents SDK sends when a producer puts the raw manufacturer name there.
    event = decode_entry(entry(GOOD | {"subject": "Zeta Corp/ce-1 \u00e9"}))
    assert event.envelope.subject == "Zeta Corp/ce-1 \u00e9"
    assert (event.data.manufacturer, event.data.serial) == ("acme", "SN1")  # the unit comes from data


def test_round_trip_through_the_wire_format():
    event = make_event(UnitReceived(manufacturer="acme", serials=["A1", "A2"], sku="X", location="dc"),
                       source="wms/dc-1")
    decoded = decode_entry(encode_envelope(event.envelope))
    assert decoded.data == event.data
    assert decoded.envelope.model_dump(mode="json", exclude_none=True) == event.envelope.model_dump(
        mode="json", exclude_none=True)
    assert decoded.envelope.subject is None  # several units: no single subject


def test_bulk_receipt_needs_exactly_one_selection():
    with pytest.raises(ValueError, match="exactly one"):
        UnitReceived(manufacturer="acme", serial="A1", serials=["A2"], sku="X", location="dc")
    with pytest.raises(ValueError, match="exactly one"):
        UnitReceived(manufacturer="acme", sku="X", location="dc")
    dupes = UnitReceived(manufacturer="acme", serials=["A1", "a1", "A2"], sku="X", location="dc")
    assert list(dupes.iter_serials()) == ["A1", "A2"] and dupes.unit_count == 2


def test_recall_scope_matching():
    recall = RecallIssued(recall_id="R1", manufacturer="acme", skus=["TV"], hazard="fire", remedy="repair",
                          serial_ranges=[{"prefix": "S", "first": 1, "last": 5, "width": 2}], serials=["X9"])
    assert recall.covers("acme", "S03", "TV") and recall.covers("acme", "X9", "TV")
    assert not recall.covers("acme", "S06", "TV")
    assert not recall.covers("acme", "S03", "RADIO")
    assert not recall.covers("other", "S03", "TV")
    with pytest.raises(ValueError, match="at least one"):
        RecallIssued(recall_id="R2", manufacturer="acme", hazard="fire", remedy="repair")


def test_every_contract_names_a_past_tense_fact():
    for event_type in EVENT_TYPES:
        assert event_type == event_type.lower() and "." in event_type


def test_new_event_ids_are_uuid7_ordered_by_time():
    earlier = new_event_id()
    time.sleep(0.002)
    later = new_event_id()
    parsed = uuid.UUID(later)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) - time.time_ns() // 1_000_000) < 1000  # its first 48 bits: now, in ms
    assert earlier < later  # made later, sorts later: inboxes keyed by id grow at their end
    assert len({new_event_id() for _ in range(10_000)}) == 10_000


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_traceparent_is_kept_and_travels_with_the_envelope():
    event = decode_entry(entry(GOOD | {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}))
    assert event.envelope.traceparent == TRACEPARENT and event.envelope.tracestate == "vendor=1"
    assert json.loads(encode_envelope(event.envelope)[b"event"])["traceparent"] == TRACEPARENT
    assert decode_entry(entry(GOOD)).envelope.traceparent is None


@pytest.mark.parametrize("traceparent", [
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # no trace
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # no parent
])
def test_an_invalid_traceparent_is_a_bad_envelope(traceparent):
    with pytest.raises(InvalidEvent) as caught:
        decode_entry(entry(GOOD | {"traceparent": traceparent}))
    assert caught.value.reason == "bad_envelope" and "traceparent" in caught.value.detail


def test_a_receipt_range_is_capped_per_role_and_a_stolen_range_is_not():
    from shared.contracts import TheftReported
    with pytest.raises(ValueError, match="at most 1000000 per unit.received"):
        UnitReceived(manufacturer="acme", sku="X", location="dc", serial_range={"prefix": "A", "first": 1,
                                                                                "last": 1_000_001})
    big = TheftReported(manufacturer="acme", agency="pd", case_number="C",
                        serial_range={"prefix": "A", "first": 1, "last": 10_000_000})
    assert big.unit_count == 10_000_000  # kept as a range in every service

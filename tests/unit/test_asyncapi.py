"""The AsyncAPI document is valid AsyncAPI 3.0, names every type, and its schemas fit real envelopes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7

from shared.asyncapi import build_asyncapi
from shared.contracts import EVENT_TYPES
from shared.keys import create_key
from shared.roles import INBOUND_TYPES, INTERNAL_TYPES, roles_for_type
from shared.settings import SERVICES
from shared.signing import REQUIRED_TYPES, load_signer
from tests.support import factories

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "asyncapi-3.0.0.json").read_text())


def _no_network(uri: str):
    """Every $ref must resolve inside the vendored file."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs __init__ hidden by a wrapper (see OFFLINE)


# referencing wraps attrs' @frozen in its own decorator, so mypy's attrs plugin does not see the
# generated __init__ (retrieve=, ref=).
OFFLINE = Registry(retrieve=_no_network)  # type: ignore[call-arg]  # attrs __init__ hidden by a wrapper


def _validator(schema: dict) -> Draft7Validator:
    # The bundle holds each definition (and the draft-07 meta-schema) under its own $id: crawling
    # registers them all, and the retriever refuses anything else.
    resource = Resource.from_contents(schema, default_specification=DRAFT7)
    return Draft7Validator(schema, registry=(resource @ OFFLINE).crawl())


ASYNCAPI = _validator(SCHEMA)


@pytest.fixture(scope="module")
def document():
    return build_asyncapi()


def errors_of(document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in ASYNCAPI.iter_errors(document)]


def test_the_document_is_valid_asyncapi_3(document):
    assert document["asyncapi"] == "3.0.0"
    assert errors_of(document) == []


@pytest.mark.parametrize("break_it", [
    lambda d: d["operations"]["publish.unit.sold"].update(action="publish"),  # 2.x word, not 3.0
    lambda d: d["channels"]["unit.sold"].update(subscribe={}),
    lambda d: d["components"]["schemas"]["UnitSold"].update(type=5),  # payload schemas are checked too
    lambda d: d.pop("info"),
])
def test_the_validator_does_refuse_broken_documents(document, break_it):
    broken = copy.deepcopy(document)
    break_it(broken)
    assert errors_of(broken) != []


def test_every_type_and_stream_is_named_with_who_publishes_it_and_the_signing_rule(document):
    assert set(document["components"]["messages"]) == set(EVENT_TYPES) | {"deadletter"}
    channels = document["channels"]
    for event_type in EVENT_TYPES:
        assert channels[event_type]["address"] == f"serialtrack:{event_type}"
        message = document["components"]["messages"][event_type]
        assert message["x-serialtrack-publishers"] == list(roles_for_type(event_type))
        expected = ("required" if event_type in REQUIRED_TYPES else "verified-if-present"
                    if event_type in INBOUND_TYPES else "not-signed")
        assert message["x-serialtrack-signature"] == expected, event_type
        operation = ("publish." if event_type in INBOUND_TYPES else "read.") + event_type
        assert document["operations"][operation]["action"] == ("send" if event_type in INBOUND_TYPES else "receive")
    for event_type in INTERNAL_TYPES:
        assert document["components"]["messages"][event_type]["x-serialtrack-published-by-service"]
    assert {channels[f"deadletter.{s}"]["address"] for s in SERVICES} == {f"serialtrack:deadletter:{s}"
                                                                          for s in SERVICES}
    assert build_asyncapi("other")["channels"]["unit.sold"]["address"] == "other:unit.sold"


def _payload_validator(document, event_type: str) -> Draft7Validator:
    """The message payload schema, with #/components/... refs resolved inside the document."""
    resource = Resource.from_contents(document, default_specification=DRAFT7)
    registry = OFFLINE.with_resource("urn:serialtrack:bus", resource)
    payload = {"$ref": "urn:serialtrack:bus" + document["components"]["messages"][event_type]["payload"]["$ref"]}
    return Draft7Validator(payload, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER)


def test_the_payload_schemas_fit_real_envelopes_signed_or_not(document, tmp_path):
    create_key(tmp_path, "pd", "law-enforcement", agency="metro-pd")
    signer = load_signer("pd", tmp_path)
    samples = [
        factories.sold("acme", "SN1", minutes=1, price="19.99"), factories.received("acme", "SN1"),
        factories.recall_issued("acme", minutes=2, serials=["SN1"]),
    ]
    for event in samples:
        body = json.loads(event.envelope.model_dump_json(exclude_none=True))
        assert list(_payload_validator(document, event.type).iter_errors(body)) == [], event.type
    theft = factories.theft_reported("acme", "SN1", minutes=3)
    signed = json.loads(signer.entry_body(theft.envelope))
    assert list(_payload_validator(document, "theft.reported").iter_errors(signed)) == []
    wrong = {**signed, "data": {k: v for k, v in signed["data"].items() if k != "agency"}}
    assert list(_payload_validator(document, "theft.reported").iter_errors(wrong)) != []
    assert list(_payload_validator(document, "unit.sold").iter_errors(signed)) != []  # type is a const


def test_the_command_prints_the_same_document(tmp_path):
    result = subprocess.run([sys.executable, "-m", "serialtrack.cli", "asyncapi"], capture_output=True, text=True,
                            timeout=60, check=True)
    assert json.loads(result.stdout) == json.loads(json.dumps(build_asyncapi()))
    out = tmp_path / "bus.json"
    subprocess.run([sys.executable, "-m", "serialtrack.cli", "asyncapi", "-o", str(out), "--stream-prefix", "x"],
                   capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.read_text())["channels"]["unit.sold"]["address"] == "x:unit.sold"

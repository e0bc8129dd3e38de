"""The bus as an AsyncAPI 3.0 document, generated from the contracts registry and the role table.

For producers and consumers in other languages: every stream is a channel (its Redis key is the
channel ``address``), every event type a message whose payload is the envelope with that type's
``data`` schema (from the pydantic contracts), and each message says who may publish it and whether
it must be signed (``x-serialtrack-*`` extensions). ``serialtrack asyncapi`` prints it.

Operations are described from the point of view of an application outside the services: it
``send``s inbound types (with the credentials and key of a role that may publish them) and may
``receive`` what the services publish and the dead letters. FastStream could generate AsyncAPI
from subscribers, but ours take raw batches: the registry is the source of truth here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .contracts import EVENT_TYPES
from .envelope import ENTRY_FIELD, Envelope
from .roles import INBOUND_TYPES, REQUIRED_PATTERNS, roles_for_type, service_for_type, signature_required
from .settings import SERVICES
from .signing import REASONS
from .streams import DEFAULT_PREFIX, Streams

ASYNCAPI_VERSION = "3.0.0"
SCHEMA_REF = "#/components/schemas/{model}"

# How each message states its signing requirement (x-serialtrack-signature).
REQUIRED = "required"
IF_PRESENT = "verified-if-present"  # required too when SERIALTRACK_REQUIRE_SIGNATURES is on
NOT_SIGNED = "not-signed"  # internal: published by a service, vouched for by the Redis ACLs

_SIGNING_TEXT = (
    "Signed envelopes carry `signature: {\"alg\": \"Ed25519\", \"kid\": ..., \"sig\": ...}`: Ed25519 over the "
    "RFC 8785 (JCS) canonical form of the envelope JSON object without `signature`, `sig` in base64url without "
    "padding. Signatures are required for " + ", ".join(f"`{p}`" for p in REQUIRED_PATTERNS)
    + " (inbound types only), verified when present on other inbound types, and required on every inbound type "
    "when SERIALTRACK_REQUIRE_SIGNATURES is on. A refused envelope is dead-lettered with one of the reasons "
    + ", ".join(f"`{r}`" for r in REASONS) + ". See docs/signing.md."
)


def _package_version() -> str:
    try:
        return version("serialtrack")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "0.0.0"


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n\n")[0].replace("\n", " ").strip()


def _schemas() -> tuple[dict[str, str], dict[str, Any]]:
    """(event type -> schema name of its data, every schema by name): all models in one namespace,
    so a model used by several contracts is one schema and two models never share a name."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Envelope, "validation"), *((model, "validation") for model in EVENT_TYPES.values())]
    keys, document = models_json_schema(models, ref_template=SCHEMA_REF)
    names = {event_type: keys[(model, "validation")]["$ref"].rsplit("/", 1)[1]
             for event_type, model in EVENT_TYPES.items()}
    return names, document["$defs"]


def _envelope_schema(event_type: str, data_schema: str) -> dict[str, Any]:
    return {
        "title": f"{event_type} envelope",
        "allOf": [
            {"$ref": SCHEMA_REF.format(model="Envelope")},
            {"type": "object", "required": ["type", "data"],
             "properties": {"type": {"const": event_type}, "data": {"$ref": SCHEMA_REF.format(model=data_schema)}}},
        ],
    }


def _signature_rule(event_type: str) -> str:
    if event_type not in INBOUND_TYPES:
        return NOT_SIGNED
    return REQUIRED if signature_required(event_type) else IF_PRESENT


def _dead_letter_schema() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "title": "dead letter",
        "description": "A stream entry a service could not apply. Unlike events, these entries have one field per "
                       "property (not one JSON field). `original` is the JSON of the entry's fields as read.",
        "type": "object",
        "required": ["stream", "entry_id", "group", "reason", "error", "deliveries", "failed_at", "original"],
        "properties": {
            "stream": text, "entry_id": text, "group": text,
            "reason": {"type": "string", "description": "machine-readable; the signature reasons are "
                                                        + ", ".join(REASONS)},
            "error": text, "deliveries": text, "failed_at": {"type": "string", "format": "date-time"},
            "original": text,
        },
    }


def build_asyncapi(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of this build's bus, for streams named with ``prefix``."""
    streams = Streams(prefix)
    data_schemas, schemas = _schemas()
    schemas["DeadLetter"] = _dead_letter_schema()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    for event_type in sorted(EVENT_TYPES):
        model = EVENT_TYPES[event_type]
        publishers = list(roles_for_type(event_type))
        service = service_for_type(event_type)
        envelope_name = f"{data_schemas[event_type]}Envelope"
        if envelope_name in schemas:  # a contract model named like this would be overwritten silently
            raise RuntimeError(f"schema name {envelope_name} is taken; rename the model")
        schemas[envelope_name] = _envelope_schema(event_type, data_schemas[event_type])
        messages[event_type] = {
            "name": event_type,
            "title": event_type,
            "summary": _first_line(model.__doc__) or event_type,
            "contentType": "application/json",
            "payload": {"$ref": SCHEMA_REF.format(model=envelope_name)},
            "x-serialtrack-publishers": publishers,
            "x-serialtrack-published-by-service": service,
            "x-serialtrack-signature": _signature_rule(event_type),
        }
        who = (f"Published by producers with role {', '.join(publishers)}." if publishers
               else f"Internal: published only by the {service} service.")
        channels[event_type] = {
            "address": streams.for_type(event_type),
            "title": f"{event_type} stream",
            "description": f"Redis stream of `{event_type}` envelopes, one per entry in its `{ENTRY_FIELD}` field "
                           f"(UTF-8 JSON). {who} Signature: {_signature_rule(event_type)}.",
            "messages": {event_type: {"$ref": f"#/components/messages/{event_type}"}},
        }
        operation = {
            "action": "send" if publishers else "receive",
            "channel": {"$ref": f"#/channels/{event_type}"},
            "messages": [{"$ref": f"#/channels/{event_type}/messages/{event_type}"}],
            "x-serialtrack-publishers": publishers,
            "x-serialtrack-signature": _signature_rule(event_type),
        }
        if publishers:
            operation["summary"] = f"Publish {event_type} (XADD {streams.for_type(event_type)} * {ENTRY_FIELD} <json>)"
            operations[f"publish.{event_type}"] = operation
        else:
            operation["summary"] = f"Read {event_type}, published by the {service} service"
            operations[f"read.{event_type}"] = operation

    messages["deadletter"] = {
        "name": "deadletter", "title": "dead letter", "summary": "An entry a service could not apply, and why.",
        "payload": {"$ref": SCHEMA_REF.format(model="DeadLetter")},
    }
    for service in SERVICES:
        channel_id = f"deadletter.{service}"
        channels[channel_id] = {
            "address": streams.dead_letters(service),
            "title": f"{service} dead letters",
            "description": f"Entries the {service} service refused or could not apply: nothing of them was applied.",
            "messages": {"deadletter": {"$ref": "#/components/messages/deadletter"}},
        }
        operations[f"read.{channel_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/deadletter"}],
            "summary": f"Read what the {service} service dead-lettered",
        }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:serialtrack:bus",
        "info": {
            "title": "serialtrack event bus",
            "version": _package_version(),
            "description": (
                "Events about serialized units on Redis Streams: one stream per event type, each entry one field "
                f"`{ENTRY_FIELD}` holding the envelope as UTF-8 JSON (CloudEvents 1.0 attribute names). "
                "`(source, id)` identifies an event; a producer that retries reuses the id. Operations are from the "
                "view of an application outside the services: it sends inbound types with a role that may publish "
                "them, and may read what the services publish. " + _SIGNING_TEXT
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "redis": {
                "host": "localhost:6390",
                "protocol": "redis",
                "description": "The embedded Redis of `serialtrack up` (SERIALTRACK_EMBEDDED_REDIS_PORT); "
                               "deployments set REDIS_URL. Each producer role has its own Redis user.",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }

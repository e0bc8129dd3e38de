"""A property-based fuzzer (schemathesis) over every service's OpenAPI document, against the service's
real app: its lifespan running (consumers, relay) over real Redis and its SQLite store, seeded
with real events through the bus, and an admin token.

Every operation gets schemathesis's coverage cases (each parameter at and past its documented
bounds, missing, of the wrong type: deterministic), then generated requests, schema-valid and
schema-violating, and schema-valid ones with the seeded unit and recall in the path so that the
answers carrying data are checked too. Each answer must be documented: no 5xx, a status the
operation lists, the content type, headers and body schema it declares.

Two of schemathesis's checks are left out on purpose. ``positive_data_acceptance``: the API refuses
some schema-valid values for reasons JSON Schema cannot state (a counter claim's time within 5
minutes of the server's clock; ``until`` after ``since``), with a documented 400 or 422.
``negative_data_rejection``: identities are normalized leniently (" ACME " is acme), so a value
outside the documented pattern may still be answered 200.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, reject
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.registry import load
from shared.contracts import WarrantyClaimSubmitted
from shared.envelope import make_event
from shared.service import build_app
from tests.support import factories as f
from tests.support.running import admin_token, publish_events

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 8, schemathesis.GenerationMode.NEGATIVE: 5}
SEEDED = {"manufacturer": "acme", "serial": "SN000001", "recall_id": "RC-FUZZ-1", "claim_id": "CL-FUZZ-1"}


def seed_events():
    """A unit's life in every service: received, sold to a customer, reported stolen, recalled, claimed."""
    sn = SEEDED["serial"]
    return [
        f.received("acme", sn, minutes=0),
        f.sold("acme", sn, minutes=60, customer_id="C-FUZZ", receipt_id="R-FUZZ"),
        f.theft_reported("acme", sn, minutes=120, case_number="K-FUZZ"),
        f.sold("acme", sn, minutes=180, location="store-2"),  # a sighting of the stolen unit: an alert
        f.recall_issued("acme", minutes=200, recall_id=SEEDED["recall_id"], serials=[sn]),
        make_event(WarrantyClaimSubmitted(claim_id=SEEDED["claim_id"], manufacturer="acme", serial=sn,
                                          customer_id="C-FUZZ", issue="no picture"),
                   source="test/desk", time=f.at(240)),
    ]


def applied(client, service: str, headers: dict) -> bool:
    path = {"inventory": "/units/acme/SN000001", "warranty": f"/claims/{SEEDED['claim_id']}",
            "theft": "/alerts", "recalls": f"/recalls/{SEEDED['recall_id']}"}[service]
    response = client.get(path, headers=headers)
    return response.status_code == 200 and (service != "theft" or response.json()["total"] > 0)


@pytest.mark.parametrize("service", ["inventory", "warranty", "theft", "recalls"])
def test_every_answer_is_documented(service, sqlite_settings):
    headers = {"Authorization": f"Bearer {admin_token(sqlite_settings)}"}
    app = build_app(load(service), sqlite_settings)
    # Loading the document starts the app's lifespan on schemathesis's own event loop, where every
    # later request runs too; it ends with shutdown_lifespans.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    try:
        asyncio.run(publish_events(sqlite_settings, seed_events()))
        with get_client(app) as client:
            deadline = time.monotonic() + 30
            while not applied(client, service, headers):
                assert time.monotonic() < deadline, f"{service}: the seeded events were not applied in 30 s"
                time.sleep(0.1)
        for result in schema.get_all_operations():
            operation = result.ok()
            coverage = schema.iter_coverage_cases(operation, generation_modes=list(schemathesis.GenerationMode),
                                                  generation_config=schema.config.generation_for(operation=operation))
            for case in coverage:
                failures += check(case, headers, "coverage")
            if not list(operation.iter_parameters()) and not operation.body:  # /healthz, /metrics: one request
                runs = [(schemathesis.GenerationMode.POSITIVE, {}, 1)]
            else:
                runs = [(mode, {}, count) for mode, count in EXAMPLES.items()]
            seeded = {p.name: SEEDED[p.name] for p in operation.path_parameters if p.name in SEEDED}
            if seeded:
                runs.append((schemathesis.GenerationMode.POSITIVE, seeded, 3))
            for mode, path_parameters, count in runs:
                failures += fuzz(operation, mode, path_parameters, count, headers)
    finally:
        shutdown_lifespans()
    assert not failures, "\n\n".join(failures)


def check(case, headers: dict, phase: str) -> list[str] | None:
    """What is wrong with the answer to ``case`` (nothing: []); None when it cannot be sent."""
    try:
        response = case.call(headers=headers)
    except UnicodeEncodeError:
        return None  # a generated header that HTTP cannot carry: the request never leaves the client
    except Exception as exc:  # noqa: BLE001 - the app raised: a 500 behind a real server
        return [f"{case.operation.label} ({phase}): the app raised {type(exc).__name__}: {exc}"[:3000]]
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, the run goes on
        return [f"{case.operation.label} ({phase}): {type(exc).__name__}: {exc}"[:3000]]
    return []


def fuzz(operation, mode, path_parameters: dict, count: int, headers: dict) -> list[str]:
    failures: list[str] = []

    @hypothesis_settings(max_examples=count, deadline=None, database=None, derandomize=False,
                         suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters or None))
    def run(case):
        found = check(case, headers, mode)
        if found is None:
            reject()
        failures.extend(found)

    try:
        run()
    except Exception as exc:  # noqa: BLE001 - reported with the others
        failures.append(f"{operation.label} ({mode}): {type(exc).__name__}: {exc}"[:3000])
    return failures

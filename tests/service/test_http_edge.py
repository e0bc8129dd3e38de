"""The HTTP edge's bounds (shared/http.py), on each service's read API over its real SQLite store:
the cases a careless client found (issue 11), each answered 4xx as documented, never 500."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest
from sqlalchemy import update

from services.warranty.store import FactRow
from shared.http import MAX_BODY_BYTES, MAX_OFFSET
from tests.support import factories as f

HUGE = "99999999999999999999"  # past 64 bits


def validation_schema(api) -> dict:
    """The documented 422 body (HTTPValidationError), resolvable on its own."""
    document = api.app.openapi()
    return {**document["components"]["schemas"]["HTTPValidationError"],
            "components": document["components"]}


def assert_documented_422(api, response, loc: list) -> None:
    assert response.status_code == 422, response.text
    jsonschema.validate(response.json(), validation_schema(api))
    assert loc in [e["loc"] for e in response.json()["detail"]]


@pytest.mark.parametrize(("service", "path"), [("inventory", "/units"), ("warranty", "/claims"), ("theft", "/alerts"),
                                               ("recalls", "/recalls"), ("recalls", "/recalls/RC-EDGE/units"),
                                               ("inventory", "/anomalies")])
def test_offsets_and_limits_outside_their_bounds_are_422(make_store, service, path):
    store = make_store(service)
    if service == "recalls":
        store.apply(f.recall_issued("acme", minutes=0, recall_id="RC-EDGE", serials=["SN1"]))
    for params in ({"offset": HUGE}, {"offset": MAX_OFFSET + 1}, {"offset": -1}, {"limit": 0}, {"limit": 1001}):
        response = store.api.get(path, params=params)
        assert_documented_422(store.api, response, ["query", next(iter(params))])
    at_the_bound = store.get(path, offset=MAX_OFFSET, limit=1000)
    assert at_the_bound["items"] == [] and at_the_bound["offset"] == MAX_OFFSET


@pytest.mark.parametrize("path", ["/alerts", "/exports/alerts.json", "/exports/retailer-reports.csv"])
def test_time_filters_outside_the_documented_range_or_not_iso_are_422(make_store, path):
    theft = make_store("theft")
    for value in ("0001-01-01", "9999-12-31", "9999-12-31T23:59:00-23:59", "1969-12-31T23:59:59Z", "2200-01-01",
                  "0.5", "1700000000", "yesterday", "2026-13-01"):
        for name in ("since", "until"):
            response = theft.api.get(path, params={name: value})
            assert_documented_422(theft.api, response, ["query", name])
            assert len(response.text) < 1000
    # Inside the range, with or without a zone, lower-case t and z: answered.
    for value in ("1970-01-01", "2026-11-01", "2026-11-01T09:00:00Z", "2026-11-01t09:00:00z", "2199-12-31T23:00:00+02:00"):
        assert theft.api.get(path, params={"until": value}).status_code == 200, value
    backwards = theft.api.get(path, params={"since": "2026-11-02", "until": "2026-11-01"})
    assert backwards.status_code == 400 and "until" in backwards.json()["detail"]


def test_a_stored_sale_dated_9999_or_year_1_does_not_break_the_warranty_view(make_store):
    """Versions before the event-time window accepted such sales; the view still answers, with the
    coverage ending at the latest time there is."""
    warranty = make_store("warranty")
    late, early = f.serial(), f.serial()
    for sn in (late, early):
        warranty.apply(f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=10, customer_id="C-1"))
    with warranty.session() as session, session.begin():
        for sn, when in ((late, datetime(9999, 12, 31, 12, tzinfo=UTC)), (early, datetime(1, 1, 1, tzinfo=UTC))):
            session.execute(update(FactRow).where(FactRow.serial == sn, FactRow.event_type == "unit.sold")
                            .values(event_time=when))
    view = warranty.get(f"/warranties/acme/{late}")
    assert view["sale"]["sold_at"].startswith("9999-12-31T12:00:00")
    assert view["coverage"]["ends"].startswith("9999-12-31T23:59:59") and view["coverage"]["status"] == "active"
    assert warranty.get(f"/warranties/acme/{early}")["coverage"]["status"] == "expired"


def test_the_counter_refuses_a_time_outside_the_event_window(make_store):
    warranty = make_store("warranty")
    claim = {"claim_id": "CL-EDGE", "manufacturer": "acme", "serial": "SN1", "customer_id": "C-1", "issue": "x"}
    for value, says in (("0001-01-01T00:00:00Z", "before 2000"), ("9999-12-31T23:59:59-23:59", "ahead of the clock"),
                        ("2026-07-01T00:00:00Z", "within 5 minutes")):
        response = warranty.api.post("/claims/decisions", json={**claim, "time": value})
        assert_documented_422(warranty.api, response, ["body", "time"])
        assert says in response.json()["detail"][0]["msg"]
    long_issue = warranty.api.post("/claims/decisions", json={**claim, "issue": "x" * 5000})
    assert_documented_422(warranty.api, long_issue, ["body", "issue"])
    assert len(long_issue.text) < 1000  # the 5,000-character issue is not echoed
    bad_serial = warranty.api.post("/claims/decisions", json={**claim, "serial": "bad/serial"})
    assert_documented_422(warranty.api, bad_serial, ["body", "serial"])  # the contract's check, the same shape


def test_checks_are_capped_and_a_422_never_echoes_the_body(make_store):
    theft = make_store("theft")
    too_many = [{"manufacturer": "acme", "serial": f"SERIAL-{n:06d}"} for n in range(10_001)]
    response = theft.api.post("/checks", json={"items": too_many})
    assert_documented_422(theft.api, response, ["body", "items"])
    assert "10000" in response.json()["detail"][0]["msg"] and "SERIAL-" not in response.text
    assert len(response.text) < 1000
    # Many invalid items: the list of errors is cut short.
    wrong = theft.api.post("/checks", json={"items": [{"serial": n} for n in range(500)]})
    assert wrong.status_code == 422 and len(wrong.json()["detail"]) == 21
    assert wrong.json()["detail"][-1]["type"] == "too_many_errors"
    # The most a call may hold, with the longest names there are, fits under the body cap.
    longest = [{"manufacturer": "m" * 64, "serial": f"{n:064d}"} for n in range(10_000)]
    assert len(json.dumps({"items": longest})) < MAX_BODY_BYTES
    assert theft.api.post("/checks", json={"items": longest}).json()["checked"] == 10_000


def test_a_body_over_the_cap_is_413_before_it_is_parsed(make_store):
    theft = make_store("theft")
    # ~2.3 MiB of otherwise valid JSON: refused for its size, declared by Content-Length.
    big = json.dumps({"items": [{"manufacturer": "acme", "serial": f"S{n:07d}"} for n in range(60_000)]})
    assert len(big) > MAX_BODY_BYTES
    response = theft.api.post("/checks", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "2 MiB" in response.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams
        for start in range(0, len(big), 64 * 1024):
            yield big[start:start + 64 * 1024].encode()

    streamed = theft.api.post("/checks", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and "2 MiB" in streamed.json()["detail"]
    assert theft.api.get("/alerts").status_code == 200  # and the service answers as before


def test_the_openapi_documents_say_every_status_and_the_identity_rules(make_store):
    for service in ("inventory", "warranty", "theft", "recalls"):
        document = make_store(service).api.app.openapi()
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                where = f"{service}: {method.upper()} {path}"
                statuses = set(operation["responses"])
                assert {"401", "403", "413"} <= statuses, where
                if operation.get("parameters") or "requestBody" in operation:
                    assert "422" in statuses, where
                for code, response in operation["responses"].items():
                    if code not in ("200", "202", "422"):
                        assert response["content"]["application/json"]["schema"] == {
                            "$ref": "#/components/schemas/ErrorOut"}, (where, code)
                for parameter in operation.get("parameters", []):
                    schema = parameter["schema"]
                    if parameter["name"] in ("manufacturer", "serial"):
                        patterns = [s.get("pattern") for s in schema.get("anyOf", [schema])] + [schema.get("pattern")]
                        assert r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$" in patterns, (where, parameter)
                    if parameter["name"] == "offset":
                        assert schema["maximum"] == MAX_OFFSET, where
                    if "{manufacturer}" in path and parameter["name"] == "manufacturer":
                        assert "400" in statuses and "404" in statuses, where

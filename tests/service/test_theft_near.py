"""Near-miss serials at the theft watch (issue 14, part 6): a sale, return or claim of a serial that is
not reported but nearly matches a reported one of the same manufacturer raises a low-priority
``possible_match`` alert; late facts withdraw it like any alert; ``POST /checks`` answers it with
``"fuzzy": true``. Run on SQLite and PostgreSQL (the batch handler as the consumer calls it; delivery
through Redis is tests/integration/test_theft_near.py)."""

from __future__ import annotations

import csv
import io
import json
import secrets

import pytest

from services.registry import load
from shared.consumer import EventProcessor
from shared.erasure import applier
from shared.pseudonyms import Pseudonyms
from shared.schema import migrate
from shared.store import for_writing, make_engine
from tests.integration.test_theft_flow import claim_submitted, return_requested
from tests.support import factories as f
from tests.support.service_layer import ServiceStore


class UrlStore(ServiceStore):
    """ServiceStore on any database URL (SQLite or PostgreSQL), migrated to this build's heads."""

    def __init__(self, url: str, directory):
        definition = load("theft")
        self.definition, self.name, self.directory = definition, definition.name, directory
        self.engine = make_engine(url)
        migrate(self.engine, definition.migrations)
        self.processor = EventProcessor(self.name, for_writing(self.engine), applier(
            self.name, definition.customer_data, definition.apply, Pseudonyms(directory / "tokens")),
            definition.locks)
        self._client = None


@pytest.fixture
def theft(database_url, tmp_path):
    store = UrlStore(database_url, tmp_path)
    yield store
    store.close()


def stem(length: int = 10) -> str:
    """A random serial of digits after "SN" without homoglyph letters in its random part."""
    return "SN" + "".join(secrets.choice("0123456789") for _ in range(length - 2))


def alerts(theft, serial, manufacturer="acme"):
    return theft.get(f"/stolen/{manufacturer}/{serial}")["alerts"]


def near_alert(theft, seen, stolen, reason, *, case="C-1"):
    [alert] = alerts(theft, seen)
    assert (alert["kind"], alert["priority"], alert["status"], alert["case_number"]) == (
        "possible_match", "low", "open", case)
    assert alert["near_matches"] == [{"serial": stolen, "reason": reason}]
    return alert


def swap(s, i):
    return s[:i] + s[i + 1] + s[i] + s[i + 2:]


@pytest.mark.parametrize(("letter", "digit"), [("O", "0"), ("I", "1"), ("L", "1"), ("S", "5"), ("B", "8"),
                                               ("Z", "2")])
def test_each_homoglyph_raises_a_possible_match(theft, letter, digit):
    stolen = stem(9) + digit
    seen = stolen[:-1] + letter
    theft.apply(f.theft_reported("acme", stolen, minutes=5))
    theft.apply(f.sold("acme", seen, minutes=20))
    alert = near_alert(theft, seen, stolen, "homoglyph")
    [event] = theft.publish_outbox()
    assert (event.type, event.id, event.data.kind, event.data.priority, event.data.serial) == (
        "theft.alert", alert["alert_id"], "possible_match", "low", seen)
    assert [(n.serial, n.reason) for n in event.data.near_matches] == [(stolen, "homoglyph")]
    assert alerts(theft, stolen) == []  # the reported unit itself was not seen


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda s: swap(s, 4), "swapped_characters"),
    (lambda s: s[:5] + s[6:], "dropped_character"),
    (lambda s: s[:6] + s[6] + s[6:], "extra_character"),  # doubled
    (lambda s: s[:7] + ("1" if s[7] != "1" else "2") + s[8:], "changed_character"),
])
def test_one_edit_on_long_serials_raises_a_possible_match_at_a_sale_a_return_and_a_claim(theft, edit, reason):
    stolen = stem(10)
    while stolen[4] == stolen[5]:
        stolen = stem(10)
    seen = edit(stolen)
    theft.apply(f.theft_reported("acme", stolen, minutes=5))
    theft.apply(f.sold("acme", seen, minutes=20), f.returned("acme", seen, minutes=30),
                claim_submitted(seen, minutes=40), return_requested(seen, minutes=50))
    found = alerts(theft, seen)
    assert sorted(a["event_type"] for a in found) == [
        "return.requested", "unit.returned", "unit.sold", "warranty.claim.submitted"]
    assert {(a["kind"], a["near_matches"][0]["reason"]) for a in found} == {("possible_match", reason)}


def test_short_serials_match_by_homoglyph_only(theft):
    stolen = "AB12345"  # 7 characters: a mistyped digit is another unit, not a near miss
    theft.apply(f.theft_reported("acme", stolen, minutes=5))
    theft.apply(f.sold("acme", "AB12346", minutes=20), f.sold("acme", "AB1234", minutes=21),
                f.sold("acme", "AB123455", minutes=22))
    assert alerts(theft, "AB12346") == alerts(theft, "AB1234") == alerts(theft, "AB123455") == []
    theft.apply(f.sold("acme", "A812345", minutes=23))
    near_alert(theft, "A812345", stolen, "homoglyph")


def test_another_manufacturer_and_a_receipt_raise_nothing(theft):
    stolen = stem(10)
    seen = stolen[:-1] + ("1" if stolen[-1] != "1" else "2")
    theft.apply(f.theft_reported("acme", stolen, minutes=5))
    theft.apply(f.sold("globex", seen, minutes=20), f.sold("globex", stolen, minutes=21),
                f.received("acme", seen, minutes=22), f.transferred("acme", seen, minutes=23,
                                                                     from_location="store-1", to_location="store-2"))
    assert alerts(theft, seen, "globex") == alerts(theft, stolen, "globex") == alerts(theft, seen) == []
    assert theft.outbox() == []


def test_an_exact_match_stays_an_exact_alert(theft):
    stolen, other = stem(10), None
    other = stolen[:-1] + ("1" if stolen[-1] != "1" else "2")  # reported too, and one edit away
    theft.apply(f.theft_reported("acme", stolen, minutes=5),
                f.theft_reported("acme", other, minutes=5, case_number="C-2"))
    theft.apply(f.sold("acme", stolen, minutes=20))
    [alert] = alerts(theft, stolen)
    assert (alert["kind"], alert["priority"], alert["near_matches"]) == ("sighting", "high", [])
    assert theft.get("/alerts", kind="possible_match")["total"] == 0
    assert theft.get("/alerts", kind="sighting")["total"] == 1


def test_duplicates_and_a_sale_before_the_report_end_with_the_same_alert(theft):
    stolen = stem(10)
    seen = stolen[:3] + stolen[4:]  # dropped character
    sale = f.sold("acme", seen, minutes=20)
    theft.apply(sale, sale)  # delivered twice, before any report
    assert alerts(theft, seen) == []
    report = f.theft_reported("acme", stolen, minutes=5)  # reported at t=5, arriving after the sale at t=20
    theft.apply(report)
    theft.apply(report, sale)  # both again
    first = near_alert(theft, seen, stolen, "dropped_character")
    published = theft.publish_outbox()
    assert [(e.type, e.id) for e in published] == [("theft.alert", first["alert_id"])]

    # in time order, on another unit, the same alert (same rule, same id scheme)
    stolen2 = stem(10)
    seen2 = stolen2[:3] + stolen2[4:]
    theft.apply(f.theft_reported("acme", stolen2, minutes=5))
    theft.apply(f.sold("acme", seen2, minutes=20))
    near_alert(theft, seen2, stolen2, "dropped_character")


def test_a_sale_before_the_report_time_raises_no_possible_match(theft):
    stolen = stem(10)
    seen = swap(stolen, 5) if stolen[5] != stolen[6] else stolen[:-1]
    theft.apply(f.sold("acme", seen, minutes=20))
    theft.apply(f.theft_reported("acme", stolen, minutes=30))
    assert alerts(theft, seen) == []


def test_a_late_recovery_or_a_late_report_of_the_unit_itself_withdraws_the_possible_match(theft):
    stolen = stem(10)
    seen = stolen + "7"
    theft.apply(f.theft_reported("acme", stolen, minutes=5))
    theft.apply(f.sold("acme", seen, minutes=20))
    near_alert(theft, seen, stolen, "extra_character")
    theft.publish_outbox()
    theft.apply(f.theft_recovered("acme", stolen, minutes=10))  # recovered before the sale
    [alert] = alerts(theft, seen)
    assert alert["status"] == "withdrawn"
    [withdrawal] = theft.publish_outbox()
    assert withdrawal.type == "theft.alert.withdrawn" and withdrawal.data.alert_id == alert["alert_id"]
    assert "similar serial" in withdrawal.data.reason

    stolen2 = stem(10)
    seen2 = stolen2 + "7"
    theft.apply(f.theft_reported("acme", stolen2, minutes=5))
    theft.apply(f.sold("acme", seen2, minutes=20))
    theft.apply(f.theft_reported("acme", seen2, minutes=6, case_number="C-9"))  # the unit itself, late
    by_kind = {(a["kind"], a["status"]) for a in alerts(theft, seen2)}
    assert by_kind == {("possible_match", "withdrawn"), ("sighting", "open")}


def test_ranges_are_matched_as_ranges_in_either_order(theft):
    first, last = 1000, 1999
    report = f.make_event(f.TheftReported(manufacturer="acme", agency="metro-pd", case_number="C-R",
                                          serial_range={"prefix": "TVS", "first": first, "last": last, "width": 8}),
                          source="test/police", time=f.at(5))
    homoglyph, dropped, not_near = "TV500001500", "TVS0001500", "TVS00035000"
    theft.apply(report)
    theft.apply(f.sold("acme", homoglyph, minutes=20), f.sold("acme", not_near, minutes=20))
    [alert] = alerts(theft, homoglyph)
    assert alert["kind"] == "possible_match" and alert["case_number"] == "C-R"
    # the member it is a misreading of first; in a dense range other members are one edit away too
    assert alert["near_matches"][0] == {"serial": "TVS00001500", "reason": "homoglyph"}
    assert len(alert["near_matches"]) == 10  # named at most (domain.NAMED_NEAR_SERIALS)
    assert alerts(theft, not_near) == []

    theft.apply(f.sold("acme", dropped, minutes=30))  # a member with one 0 dropped: ten members are near
    [alert] = alerts(theft, dropped)
    assert {n["reason"] for n in alert["near_matches"]} == {"dropped_character"}
    assert "TVS00001500" in {n["serial"] for n in alert["near_matches"]}

    # the reverse order: sales first, the range report (timed before them) last
    late = f.make_event(f.TheftReported(manufacturer="acme", agency="metro-pd", case_number="C-S",
                                        serial_range={"prefix": "TVX", "first": first, "last": last, "width": 8}),
                        source="test/police", time=f.at(6))
    swapped, doubled = "TVX00010500", "TVXX00001500"
    theft.apply(f.sold("acme", swapped, minutes=20), f.sold("acme", doubled, minutes=20))
    theft.apply(late)
    assert {a["case_number"] for a in alerts(theft, swapped)} == {"C-S"}
    assert [n["reason"] for n in alerts(theft, doubled)[0]["near_matches"]] == ["extra_character"]


def test_checks_answer_possible_matches_only_when_asked(theft):
    stolen, closed = stem(10), stem(10)
    theft.apply(f.theft_reported("acme", stolen, minutes=5), f.theft_reported("acme", closed, minutes=5,
                                                                              case_number="C-2"))
    theft.apply(f.theft_recovered("acme", closed, minutes=6, case_number="C-2"))
    near, near_closed = stolen[:4] + stolen[5:], closed + "1"  # a dropped and an extra character
    items = [{"manufacturer": "acme", "serial": s} for s in (stolen, near, near_closed, "nothing-1")]
    items.append({"manufacturer": "acme", "serial": "bad serial"})

    plain = theft.api.post("/checks", json={"items": items}).json()
    assert (plain["stolen"], plain["possible"], plain["invalid"]) == (1, 0, 1)
    assert all(r["possible_matches"] == [] for r in plain["results"])

    fuzzy = theft.api.post("/checks", json={"items": items, "fuzzy": True}).json()
    assert (fuzzy["checked"], fuzzy["stolen"], fuzzy["possible"], fuzzy["invalid"]) == (5, 1, 1, 1)
    exact, hit, recovered, nothing, bad = fuzzy["results"]
    assert exact["stolen"] is True and exact["possible_matches"] == []
    assert hit["stolen"] is False and [m["serial"] for m in hit["possible_matches"]] == [stolen]
    assert hit["possible_matches"][0]["cases"] == [{"origin": "agency", "agency": "metro-pd", "case_number": "C-1"}]
    assert recovered["possible_matches"] == [] and nothing["possible_matches"] == []
    assert bad["stolen"] is None and bad["error"]


@pytest.mark.parametrize("body", [
    {"items": [{"manufacturer": "acme", "serial": "SN1"}], "fuzzy": "yes"},
    {"items": [{"manufacturer": "acme", "serial": "SN1"}], "fuzzy": 1},
    {"items": [{"manufacturer": "acme", "serial": "SN1"}], "fuzzy": None},
    {"items": [], "fuzzy": True},
])
def test_checks_refuse_bad_input_with_422(theft, body):
    response = theft.api.post("/checks", json=body)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


def test_alert_list_filters_by_kind_and_refuses_an_unknown_kind(theft):
    stolen = stem(10)
    theft.apply(f.theft_reported("acme", stolen, minutes=5))
    theft.apply(f.sold("acme", stolen + "5", minutes=20), f.sold("acme", stolen, minutes=21))
    page = theft.get("/alerts", kind="possible_match")
    assert [(a["kind"], a["priority"]) for a in page["items"]] == [("possible_match", "low")]
    assert {a["priority"] for a in theft.get("/alerts")["items"]} == {"high", "low"}
    theft.get("/alerts", expect=422, kind="maybe")
    exported = theft.api.get("/exports/alerts.csv")
    rows = {r["serial"]: r for r in csv.DictReader(io.StringIO(exported.text))}
    assert (rows[stolen]["kind"], rows[stolen]["priority"], rows[stolen]["near_matches"]) == ("sighting", "high", "[]")
    assert rows[stolen + "5"]["priority"] == "low"
    assert json.loads(rows[stolen + "5"]["near_matches"]) == [{"serial": stolen, "reason": "extra_character"}]

"""The web console's pure parts: the one-time sign-in code, sessions, one unit's merged timeline,
and what a person may type in the lookup box. The pages themselves are tested in a browser
(tests/e2e/test_console.py)."""

from __future__ import annotations

import pytest

from serialtrack.console.app import parse_query
from serialtrack.console.signin import SIGNIN_FILE, Sessions, issue_code, redeem_code
from serialtrack.console.story import timeline
from shared.identity import IdentityError


def test_a_sign_in_code_works_once_and_a_wrong_code_does_not_burn_it(tmp_path):
    code = issue_code(tmp_path)
    assert code not in (tmp_path / SIGNIN_FILE).read_text()  # only its digest is kept
    assert not redeem_code(tmp_path, code + "x")
    assert redeem_code(tmp_path, code)
    assert not redeem_code(tmp_path, code)


def test_a_sign_in_code_expires_and_a_newer_one_replaces_it(tmp_path):
    old = issue_code(tmp_path, clock=lambda: 1000.0)
    assert not redeem_code(tmp_path, old, clock=lambda: 1000.0 + 15 * 60 + 1)
    first, second = issue_code(tmp_path), issue_code(tmp_path)
    assert not redeem_code(tmp_path, first) and redeem_code(tmp_path, second)


def test_sessions_expire_and_close():
    now = [0.0]
    sessions = Sessions(clock=lambda: now[0])
    sid = sessions.open("st_token", "ann", "store", None)
    assert sessions.get(sid).role == "store" and sessions.get("forged") is None and sessions.get(None) is None
    now[0] += 12 * 3600 + 1
    assert sessions.get(sid) is None
    other = sessions.open("st_token", "ann", "store", None)
    sessions.close(other)
    assert sessions.get(other) is None


def test_the_lookup_box_takes_a_serial_with_or_without_its_manufacturer():
    assert parse_query("  tv1a2b003 ") == (None, "TV1A2B003")
    assert parse_query("acme/tv-9") == ("acme", "TV-9")
    assert parse_query("ACME  sn1") == ("acme", "SN1")
    with pytest.raises(IdentityError):
        parse_query("one two three")
    with pytest.raises(IdentityError):
        parse_query("acme sn#1")


def _event(source, id_, type_, time, **fields):
    return {"source": source, "id": id_, "type": type_, "time": time, **fields}


def test_an_event_several_services_applied_is_one_entry_naming_them_and_decisions_alerts_join_in_time_order():
    sale = _event("pos/1", "s1", "unit.sold", "2026-01-02T10:00:00Z", location="store-12", terminal_id="till-3")
    inventory = {"history": [_event("wms", "r1", "unit.received", "2026-01-01T09:00:00Z", location="dc"), sale],
                 "anomalies": [{"event_time": "2026-01-03T00:00:00Z", "kind": "sold_twice", "detail": "again",
                                "status": "withdrawn"}]}
    warranty = {"history": [{**sale, "receipt_id": "R-1"}],
                "requests": [{"kind": "claim", "reference": "CL-1", "at": "2026-01-04T00:00:00Z",
                              "status": "rejected", "reasons": ["reported_stolen"], "version": 2}]}
    theft = {"reports": [], "alerts": [{"seen_at": "2026-01-02T10:00:00Z", "kind": "sighting", "location": "store-12",
                                        "agency": "pd", "case_number": "7", "terminal_id": "till-3",
                                        "event_source": "pos/1", "event_type": "unit.sold", "status": "open"}]}
    recalls = {"recalls": [{"recall_id": "RC-1", "owner_notified_at": "2026-01-05T00:00:00Z"}]}
    entries = timeline(inventory, warranty, theft, recalls)
    assert [e.title for e in entries] == [
        "Received at dc", "Sold at store-12", "Theft alert (sighting): seen at store-12", "Anomaly: sold twice",
        "Warranty claim CL-1: rejected (revised, decision 2)", "Recall RC-1: owner notified"]
    sold = entries[1]
    assert sold.services == ["inventory", "warranty"] and "receipt R-1" in sold.details and "till till-3" in sold.details
    assert entries[3].withdrawn and "reason reported stolen" in entries[4].details


def test_a_voided_event_stays_in_the_timeline_marked_and_struck_through():
    void = {"source": "pos/store-12/till-3", "id": "v-1", "time": "2026-11-01T10:05:00Z",
            "reason": "scanned the wrong box"}
    sale = {"time": "2026-11-01T10:00:00Z", "type": "unit.sold", "source": "pos/store-12/till-3", "id": "s-1",
            "location": "store-12", "voided": void}
    receipt = {"time": "2026-11-01T09:00:00Z", "type": "unit.received", "source": "wms", "id": "r-1",
               "location": "store-12", "voided": None}
    entries = timeline({"history": [receipt, sale], "anomalies": []}, {"history": [sale], "requests": []}, None, None)
    [voided] = [e for e in entries if e.kind == "sale"]
    assert voided.voided and voided.title == "Voided: Sold at store-12" and voided.services == ["inventory", "warranty"]
    assert "voided: scanned the wrong box" in voided.details
    assert not next(e for e in entries if e.kind == "receipt").voided

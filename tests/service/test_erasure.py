"""Erasure on request at the service layer (shared/erasure.py around each service's handler): the
order of a batch, decisions that stay what they were, a repeated request, every service's columns.
The delivery side (dead letters, reports, the CLI, PostgreSQL) is tests/integration/test_erasure.py."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.theft.store import SightingRow
from shared.contracts import CustomerErasureCompleted, CustomerErasureRequested, WarrantyOwnerRegistered
from shared.envelope import make_event
from shared.pseudonyms import Pseudonyms
from shared.store import ErasedRow, table_of
from tests.integration.test_warranty_flow import DAY, claim
from tests.support import factories as f


def erasure(customer: str, erasure_id: str = "erasure-1", receipts: tuple[str, ...] = (), minutes: float = 0):
    return make_event(CustomerErasureRequested(erasure_id=erasure_id, customer_id=customer, receipt_ids=list(receipts)),
                      source="test/operator", time=f.at(minutes))


def reports(store):
    return [e.data for e in store.outbox() if e.type == "customer.erasure.completed"]


@pytest.fixture
def warranty(make_store):
    return make_store("warranty")


def test_a_sale_in_the_same_batch_as_its_customers_erasure_is_erased(warranty):
    sn = f.serial()
    warranty.apply(f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=10, customer_id="C-SAME",
                                                              receipt_id="R-SAME"), erasure("C-SAME", minutes=5))
    pseudonym = Pseudonyms(warranty.directory / "tokens")
    unit = warranty.get(f"/warranties/acme/{sn}")
    assert unit["sale"]["customer_id"] == pseudonym("C-SAME") and unit["sale"]["receipt_id"] == pseudonym("R-SAME")
    [report] = reports(warranty)
    assert (report.service, report.receipts, report.rows, report.already_erased) == (
        "warranty", 1, {"warranty_facts": 1}, False)
    with warranty.session() as session:  # pseudonyms only, never the values
        kept = session.execute(select(table_of(ErasedRow).c.pseudonym, table_of(ErasedRow).c.kind)).all()
    assert sorted(kept) == sorted([(pseudonym("C-SAME"), "customer"), (pseudonym("R-SAME"), "receipt")])


def test_a_decision_refolded_after_the_erasure_keeps_its_version(warranty):
    """A late registration by the erased owner re-decides their claim: pseudonymized on arrival, it
    names the owner (by pseudonym) and changes nothing, so no new version. In clear it would read as
    an ownership change pending and send the claim to review."""
    sn = f.serial()
    warranty.apply_each([f.received("acme", sn, minutes=0),
                         f.sold("acme", sn, minutes=10, customer_id="C-OWNER", receipt_id="R-OWNER"),
                         claim(sn, minutes=5 * DAY, customer="C-OWNER", claim_id="CL-OWNER",
                               issue="no picture since C-OWNER moved it")])
    before = warranty.get("/claims/CL-OWNER")
    assert (before["status"], before["version"]) == ("approved", 1)
    warranty.apply(erasure("C-OWNER"))
    erased = warranty.get("/claims/CL-OWNER")
    pseudonym = Pseudonyms(warranty.directory / "tokens")("C-OWNER")
    assert erased["customer_id"] == erased["facts"]["owner_customer_id"] == pseudonym
    assert erased["issue"] == f"no picture since {pseudonym} moved it"
    assert (erased["status"], erased["version"], erased["decision_id"]) == ("approved", 1, before["decision_id"])

    warranty.apply(make_event(WarrantyOwnerRegistered(manufacturer="acme", serial=sn, customer_id="C-OWNER"),
                              source="test/web", time=f.at(DAY)))
    after = warranty.get("/claims/CL-OWNER")
    assert (after["status"], after["reasons"], after["version"]) == ("approved", [], 1)
    assert warranty.get(f"/warranties/acme/{sn}")["registrations"][0]["customer_id"] == pseudonym


def test_erasing_again_changes_nothing_and_says_so(warranty):
    sn = f.serial()
    warranty.apply_each([f.received("acme", sn, minutes=0), f.sold("acme", sn, minutes=10, customer_id="C-TWICE")])
    warranty.apply(erasure("C-TWICE", "erasure-1"))
    warranty.apply(erasure("C-TWICE", "erasure-2"))
    first, second = reports(warranty)
    assert (first.rows, first.already_erased) == ({"warranty_facts": 1}, False)
    assert (second.rows, second.receipts, second.already_erased, second.pseudonym) == ({}, 0, True, first.pseudonym)


def test_a_customer_id_inside_a_longer_one_is_not_erased(warranty):
    """C-7 erased, C-77 kept: values are replaced as whole tokens, never as substrings."""
    a, b = f.serial(), f.serial()
    warranty.apply_each([f.received("acme", a, minutes=0), f.received("acme", b, minutes=0),
                         f.sold("acme", a, minutes=10, customer_id="C-7", receipt_id="R-7"),
                         f.sold("acme", b, minutes=10, customer_id="C-77", receipt_id="R-77"),
                         claim(b, minutes=DAY, customer="C-77", claim_id="CL-77", issue="C-77 says: not C-7")])
    warranty.apply(erasure("C-7"))
    pseudonym = Pseudonyms(warranty.directory / "tokens")("C-7")
    assert warranty.get(f"/warranties/acme/{b}")["sale"]["customer_id"] == "C-77"
    assert warranty.get("/claims/CL-77")["issue"] == f"C-77 says: not {pseudonym}"


def test_theft_erases_the_receipts_the_request_names(make_store):
    """Theft keeps receipts (sightings, alerts) but never customers: it erases what the request names."""
    theft = make_store("theft")
    sn = f.serial()
    theft.apply_each([f.sold("acme", sn, minutes=10, customer_id="C-T", receipt_id="R-T"),
                      f.theft_reported("acme", sn, minutes=20, case_number="CASE-T")])
    theft.apply(erasure("C-T", receipts=("R-T",)))
    [report] = reports(theft)
    # The alert not published yet (no relay here) is erased in the outbox too.
    assert report.rows == {"theft_sightings": 1, "theft_alerts": 1, "outbox": 1}
    pseudonym = Pseudonyms(theft.directory / "tokens")("R-T")
    assert theft.get("/alerts")["items"][0]["sightings"][0]["reference"] == pseudonym
    [alert] = [e.data for e in theft.outbox() if e.type == "theft.alert"]
    assert "R-T" not in alert.model_dump_json() and pseudonym in alert.model_dump_json()


def test_theft_erases_the_receipts_another_services_report_names(make_store):
    """`serialtrack erase` names no receipts: theft finds the customer's receipts from the pseudonyms
    in inventory's or warranty's report, pseudonymizing each receipt it keeps to compare."""
    theft = make_store("theft")
    sn, other = f.serial(), f.serial()
    theft.apply_each([f.sold("acme", sn, minutes=10, customer_id="C-R", receipt_id="R-R"),
                      f.sold("acme", other, minutes=10, customer_id="C-KEEP", receipt_id="R-KEEP"),
                      f.theft_reported("acme", sn, minutes=20, case_number="CASE-R")])
    theft.publish_outbox()
    pseudonym = Pseudonyms(theft.directory / "tokens")
    theft.apply(make_event(CustomerErasureCompleted(
        erasure_id="erasure-r", service="warranty", pseudonym=pseudonym("C-R"), receipts=1,
        receipt_pseudonyms=[pseudonym("R-R")], rows={}, dead_letters=0, already_erased=False),
        source="serialtrack/warranty"))
    assert theft.get("/alerts")["items"][0]["sightings"][0]["reference"] == pseudonym("R-R")
    with theft.session() as session:
        references = set(session.execute(select(table_of(SightingRow).c.reference)).scalars())
    assert references == {pseudonym("R-R"), "R-KEEP"}
    # A later return on that receipt arrives pseudonymized.
    theft.apply(f.returned("acme", sn, minutes=30, receipt_id="R-R"))
    with theft.session() as session:
        assert "R-R" not in set(session.execute(select(table_of(SightingRow).c.reference)).scalars())

"""Upgrading in place: the stores release 0.1.0 left after a realistic story (tests/fixtures/release-0.1.0)
are migrated by this build with every row kept, every read answers as 0.1.0 answered, and new
events apply on top. On SQLite (the files `serialtrack up` keeps) and PostgreSQL (the dumps)."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from services.registry import INSTALLED, load
from shared.auth import Auth
from shared.consumer import EventProcessor
from shared.contracts import (
    EventVoided,
    RecallAmended,
    RecallRemedyCompleted,
    TheftReported,
    UnitQuarantineWithdrawn,
    UnitSold,
    WarrantyClaimSubmitted,
    WarrantyOwnerRegistered,
)
from shared.envelope import make_event
from shared.schema import prepare, state
from shared.store import for_reading, for_writing, make_engine
from shared.tokens import ensure_admin_token

RELEASE = Path(__file__).parents[1] / "fixtures" / "release-0.1.0"
LAPTOP = "zeta"
AFTER_UPGRADE = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def release_stores(request, tmp_path, postgres_admin):
    """{service: database URL} of a copy of the 0.1.0 stores; and which kind they are."""
    if request.param == "sqlite":
        urls = {}
        for service in INSTALLED:
            shutil.copy(RELEASE / "sqlite" / f"{service}.db", tmp_path / f"{service}.db")
            urls[service] = f"sqlite:///{tmp_path}/{service}.db"
        yield request.param, urls
        return
    if postgres_admin is None:
        pytest.skip("no PostgreSQL: set TEST_POSTGRES_URL (admin URL) or make a Docker engine reachable")
    urls = {service: postgres_admin.create_database() for service in INSTALLED}
    for service, url in urls.items():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute((RELEASE / "postgresql" / f"{service}.sql").read_text())
    yield request.param, urls
    for url in urls.values():
        postgres_admin.drop_database(url)


def all_rows(engine) -> dict[str, list[dict]]:
    """Every row of every table, in a stable order."""
    metadata = MetaData()
    metadata.reflect(engine)
    rows = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name == "alembic_version":
                continue
            columns = list(table.c)
            result = conn.execute(select(*columns).order_by(*columns))
            rows[table.name] = [dict(row._mapping) for row in result]
    return rows


def kept(old, new, where: str = "") -> list[str]:
    """What of ``old`` (a 0.1.0 answer) is not in ``new``: fields may be added, none changed or lost."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [f"{where}: was an object, now {new!r}"]
        return [diff for key, value in old.items()
                for diff in (kept(value, new[key], f"{where}.{key}") if key in new else [f"{where}.{key}: gone"])]
    if isinstance(old, list):
        if not isinstance(new, list) or len(new) != len(old):
            return [f"{where}: {len(old)} items, now {new!r:.200}"]
        return [diff for n, (a, b) in enumerate(zip(old, new, strict=True)) for diff in kept(a, b, f"{where}[{n}]")]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def read_client(service: str, engine) -> TestClient:
    """The service's read API alone (no consumers: the test applies events itself), called as an admin."""
    directory = Path(tempfile.mkdtemp(prefix="upgrade-tokens-"))
    app = FastAPI()
    app.state.auth = Auth(directory / "tokens")
    app.include_router(load(service).read_api(for_reading(engine)))
    token = ensure_admin_token(directory, directory / "tokens")
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def test_a_release_0_1_0_store_upgrades_in_place_keeping_every_row_and_every_answer(release_stores):
    kind, urls = release_stores
    recorded = json.loads((RELEASE / f"reads-{kind}.json").read_text())
    engines = {service: make_engine(url) for service, url in urls.items()}
    try:
        for service, engine in engines.items():
            migrations = load(service).migrations
            before = all_rows(engine)
            assert state(engine, migrations).legacy
            prepare(engine, migrations)
            assert state(engine, migrations).up_to_date
            after = all_rows(engine)
            assert set(before) <= set(after)
            for table, rows in before.items():
                assert len(after[table]) == len(rows), table
                lost = [diff for old, new in zip(rows, after[table], strict=True) for diff in kept(old, new, table)]
                assert lost == [], lost[:5]
            assert sum(len(rows) for rows in before.values()) > 100  # the fixture really holds a story

        for key, answer in recorded.items():
            service, path = key.split(" ", 1)
            with read_client(service, engines[service]) as client:
                response = client.get(path)
            assert response.status_code == answer["status"], key
            differences = kept(answer["body"], response.json(), key)
            assert differences == [], differences[:5]

        check_registrations_kept_their_meaning(engines["warranty"])
        check_reports_on_the_upgraded_stores(engines)
        apply_new_events(engines)
    finally:
        for engine in engines.values():
            engine.dispose()


def check_registrations_kept_their_meaning(engine) -> None:
    """The fixture's one registration: LT-REL1-0004 registered to C-REL1-GIFT the day after its sale.
    That sale named no customer (every fourth laptop of the story is sold without one), so under the
    ownership rule the first registration is the owner: C-REL1-GIFT still owns it, as 0.1.0 said, and
    nothing is pending. (Had the sale named C-REL1-L4, the unsigned registration would now read as a
    pending change: 0.1.0 verified no signature, so no stored registration is a trusted transfer.)"""
    with read_client("warranty", engine) as client:
        view = client.get(f"/warranties/{LAPTOP}/LT-REL1-0004").json()
    assert view["sale"]["customer_id"] is None
    assert (view["owner"]["customer_id"], view["owner"]["via"]) == ("C-REL1-GIFT", "registration")
    assert view["pending_ownership_changes"] == []
    assert [(r["customer_id"], r["outcome"], r["signed_by"]) for r in view["registrations"]] == [
        ("C-REL1-GIFT", "owner", None)]
    assert [(o["customer_id"], o["via"]) for o in view["owner_history"]] == [("C-REL1-GIFT", "registration")]


def check_reports_on_the_upgraded_stores(engines) -> None:
    """inventory_0005 filled each unit's stocked_at and times_returned from its history as the fold
    computes them; warranty_0004's sell-through reads 0.1.0's sales, whose tills 0.1.0 did not keep."""
    from sqlalchemy.orm import Session

    from services.inventory import store as inventory_store
    from services.inventory.domain import fold

    with Session(engines["inventory"]) as session:
        keys = [(r.manufacturer, r.serial) for r in session.execute(select(inventory_store._units))]
        states = inventory_store.load_units(session, keys)
        histories = inventory_store.load_histories(session, keys)
    assert len(keys) > 100
    refolded = {key: fold(key[0], key[1], histories.get(key, []))[0] for key in keys}
    assert {k: (s.stocked_at, s.times_returned) for k, s in states.items()} == {
        k: (s.stocked_at, s.times_returned) for k, s in refolded.items()}
    assert any(s.times_returned for s in states.values()) and all(s.stocked_at for s in states.values()
                                                                    if s.ever_received)
    with read_client("inventory", engines["inventory"]) as client:
        aging = client.get("/stock/aging").json()
        on_hand = client.get("/stock").json()["by_status"]
    assert aging["totals"]["total"] == sum(c["count"] for c in on_hand
                                           if c["key"] in ("in_stock", "returned", "quarantined", "damaged"))
    with read_client("warranty", engines["warranty"]) as client:
        report = client.get("/manufacturers/acme/sell-through").json()
    assert report["totals"]["sold"] > 0 and all(u["channel"] is None for u in report["units"] if u["kind"] == "sold")


def apply_new_events(engines) -> None:
    """Events applied by this build on the upgraded stores change what the reads say."""
    laptop = "LT-REL1-{:04d}".format

    def process(service: str, data) -> None:
        definition = load(service)
        EventProcessor(service, for_writing(engines[service]), definition.apply).process(
            [make_event(data, source="test/after-upgrade", time=AFTER_UPGRADE)])

    process("inventory", UnitSold(manufacturer=LAPTOP, serial=laptop(60), sku="LAPTOP-14", location="store-7",
                                  terminal_id="store-7/till-1", receipt_id="R-NEW-60", customer_id="C-NEW-60"))
    with read_client("inventory", engines["inventory"]) as client:
        assert client.get(f"/units/{LAPTOP}/{laptop(60)}").json()["status"] == "sold"

    # A sale 0.1.0 applied (TVREL1003, sold while stolen) is voided on the upgraded store: found through the
    # index inventory_0004 built on the old history, folded again without it, kept in the history, marked.
    with read_client("inventory", engines["inventory"]) as client:
        unit = client.get("/units/acme/TVREL1003").json()
    [sale] = [h for h in unit["history"] if h["type"] == "unit.sold"]
    assert unit["status"] == "sold" and "sold_while_stolen" in {a["kind"] for a in unit["anomalies"]}
    process("inventory", EventVoided(manufacturer="acme", voided_source=sale["source"], voided_id=sale["id"],
                                     voided_type="unit.sold", reason="rung up by mistake"))
    with read_client("inventory", engines["inventory"]) as client:
        unit = client.get("/units/acme/TVREL1003").json()
    # back on hand at the warehouse, and so held for the recall that covers it
    assert (unit["status"], unit["location"], unit["stolen"]) == ("quarantined", "warehouse-1", True)
    assert {a["kind"]: a["status"] for a in unit["anomalies"]}["sold_while_stolen"] == "withdrawn"
    assert [h["voided"]["reason"] for h in unit["history"] if h["voided"]] == ["rung up by mistake"]

    process("theft", TheftReported(manufacturer=LAPTOP, serial=laptop(115), agency="metro-pd", case_number="NEW-1"))
    with read_client("theft", engines["theft"]) as client:
        stolen = client.get(f"/stolen/{LAPTOP}/{laptop(115)}").json()
    assert stolen["stolen"] and stolen["open_cases"] == ["metro-pd:NEW-1"]
    # theft_0003 indexed the reports 0.1.0 stored: a misread of TVREL1003 (stolen) sold now is a possible match
    process("theft", UnitSold(manufacturer="acme", serial="TVREL1OO3", sku="TV-55", location="store-7",
                              terminal_id="store-7/till-1", receipt_id="R-NEW-OO3"))
    with read_client("theft", engines["theft"]) as client:
        [alert] = client.get("/stolen/acme/TVREL1OO3").json()["alerts"]
    assert (alert["kind"], alert["priority"], alert["case_number"], alert["near_matches"]) == (
        "possible_match", "low", "2026-REL1", [{"serial": "TVREL1003", "reason": "homoglyph"}])

    with read_client("recalls", engines["recalls"]) as client:
        remedied = client.get("/recalls/RC-REL1-L").json()["progress"]["remedied"]
    process("recalls", RecallRemedyCompleted(recall_id="RC-REL1-L", manufacturer=LAPTOP, serial=laptop(5),
                                             remedy="replace"))
    with read_client("recalls", engines["recalls"]) as client:
        assert client.get("/recalls/RC-REL1-L").json()["progress"]["remedied"] == remedied + 1

    # A narrowing amendment after the upgrade: inventory knows the recall's scope from its one stored
    # version (inventory_0006), and lets go of the units the new scope leaves out.
    process("inventory", RecallAmended(recall_id="RC-REL1-L", manufacturer=LAPTOP, skus=["LAPTOP-14"],
                                       serial_ranges=[{"prefix": "LT-REL1-", "first": 1, "last": 20, "width": 4}]))
    with read_client("inventory", engines["inventory"]) as client:
        kept_held, let_go = (client.get(f"/units/{LAPTOP}/{laptop(n)}").json() for n in (20, 30))
    assert (kept_held["status"], kept_held["recalls"]) == ("quarantined", ["RC-REL1-L"])
    assert (let_go["status"], let_go["recalls"]) != ("quarantined", ["RC-REL1-L"])
    # Inventory takes a hold back (recalls_0003): the campaign no longer counts the unit as held.
    with read_client("recalls", engines["recalls"]) as client:
        held = client.get("/recalls/RC-REL1-L").json()["progress"]["quarantined"]
    process("recalls", UnitQuarantineWithdrawn(manufacturer=LAPTOP, recall_id="RC-REL1-L",
                                               units=[{"serial": laptop(30), "revision": 1}]))
    with read_client("recalls", engines["recalls"]) as client:
        assert client.get("/recalls/RC-REL1-L").json()["progress"]["quarantined"] == held - 1

    # A stranger registers TVREL1005 (sold to C-REL1-2077), dated before its approved claim CL-REL1-1: the
    # claim is decided again on the upgraded store, and the new version sends it to a person.
    with read_client("warranty", engines["warranty"]) as client:
        before = client.get("/claims/CL-REL1-1").json()
    assert (before["status"], before["reasons"]) == ("approved", [])
    definition = load("warranty")
    EventProcessor("warranty", for_writing(engines["warranty"]), definition.apply).process([make_event(
        WarrantyOwnerRegistered(manufacturer="acme", serial="TVREL1005", customer_id="C-STRANGER", channel="web"),
        source="test/after-upgrade", time=datetime(2026, 11, 22, 12, 0, tzinfo=UTC))])
    with read_client("warranty", engines["warranty"]) as client:
        after = client.get("/claims/CL-REL1-1").json()
        unit = client.get("/warranties/acme/TVREL1005").json()
    assert (after["status"], after["reasons"], after["version"]) == (
        "needs_review", ["ownership_change_pending"], before["version"] + 1)
    assert after["versions"][-1]["supersedes"] == before["decision_id"]
    assert unit["owner"]["customer_id"] == "C-REL1-2077"
    assert [p["customer_id"] for p in unit["pending_ownership_changes"]] == ["C-STRANGER"]

    process("warranty", WarrantyClaimSubmitted(claim_id="CL-NEW-8", manufacturer=LAPTOP, serial=laptop(8),
                                               customer_id="C-REL1-L8", issue="hinge cracked"))
    with read_client("warranty", engines["warranty"]) as client:
        claim = client.get("/claims/CL-NEW-8")
    assert claim.status_code == 200 and claim.json()["claim_id"] == "CL-NEW-8"

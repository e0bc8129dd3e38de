"""Trust at the HTTP edge, over the four real services and real stores (SQLite and PostgreSQL):
who may call what (401 / 403 / 404 / 200 for every route and every role), what of customers'
data each role sees, and the counter's clock and source."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from services.inventory.app import definition as inventory
from services.recalls.app import definition as recalls
from services.theft.app import definition as theft
from services.warranty.app import definition as warranty
from shared.auth import api_routes, is_gated
from shared.contracts import (
    ReturnRequested,
    ShipmentDispatched,
    StockCounted,
    TheftReported,
    WarrantyClaimSubmitted,
    WarrantyPolicySet,
)
from shared.envelope import make_event
from shared.tokens import create_token
from tests.support import factories as f
from tests.support.running import http, publish_events, running, wait_for
from tests.support.streams import raw_entries

DAY = 24 * 60
CUSTOMER = "C-SECRET-77"
RECEIPT = "R-SECRET-9"
CONTACT = "det. Ray, 555-0100"
ROLES = ("admin", "customer-service", "store", "investigator", "manufacturer", "auditor")


def minutes_ago(days: float) -> float:
    """f.at's minutes for ``days`` before now: the counter decides at the server's clock."""
    return (datetime.now(UTC) - f.T0).total_seconds() / 60 - days * DAY


class Story:
    """acme's unit SN: sold 200 days ago (90 days of coverage), reported stolen, under two open
    recalls, three claims and a return; zeta's unit ZSN under zeta's recall."""

    def __init__(self):
        self.sn, self.zsn = f.serial("AU"), f.serial("ZU")
        self.rc_a1, self.rc_a2, self.rc_z = f"RC-A1-{self.sn}", f"RC-A2-{self.sn}", f"RC-Z-{self.zsn}"

    def events(self):
        sn, zsn = self.sn, self.zsn
        claims = [make_event(WarrantyClaimSubmitted(claim_id=f"CL-{n}-{sn}", manufacturer="acme", serial=sn,
                                                    customer_id=CUSTOMER, issue="no picture", location="store-1"),
                             source="test/desk", time=f.at(minutes_ago(3 - n))) for n in range(3)]
        return [
            make_event(WarrantyPolicySet(policy_id=f"P-{sn}", manufacturer="acme", sku="TV-55", coverage_days=90,
                                         return_window_days=30, effective_from=f.at(minutes_ago(400))),
                       source="test/maker", time=f.at(minutes_ago(400))),
            f.received("acme", sn, minutes=minutes_ago(300)),
            f.received("zeta", zsn, minutes=minutes_ago(300)),
            f.sold("acme", sn, minutes=minutes_ago(200), customer_id=CUSTOMER, receipt_id=RECEIPT),
            make_event(TheftReported(manufacturer="acme", serial=sn, agency="metro-pd", case_number=f"K-{sn}",
                                     contact=CONTACT), source="test/police", time=f.at(minutes_ago(10))),
            f.recall_issued("acme", minutes=minutes_ago(5), recall_id=self.rc_a1, serials=[sn]),
            f.recall_issued("acme", minutes=minutes_ago(5), recall_id=self.rc_a2, serials=[sn]),
            f.recall_issued("zeta", minutes=minutes_ago(5), recall_id=self.rc_z, serials=[zsn]),
            *claims,
            make_event(ReturnRequested(request_id=f"RQ-{sn}", manufacturer="acme", serial=sn, receipt_id=RECEIPT,
                                       location="store-1", customer_id=CUSTOMER),
                       source="test/pos", time=f.at(minutes_ago(1))),
            *(make_event(ShipmentDispatched(shipment_id=f"ASN-{maker}-{unit}", manufacturer=maker, from_location="dc",
                                            to_location="store-1", expected_arrival=f.T0.date(), serials=[unit]),
                         source="test/edi", time=f.at(minutes_ago(301))) for maker, unit in (("acme", sn), ("zeta", zsn))),
            make_event(StockCounted(count_id=f"CNT-{sn}", location="store-1", counted_at=f.at(minutes_ago(250)),
                                    units=[{"manufacturer": "acme", "serial": sn}]),
                       source="test/store", time=f.at(minutes_ago(250))),
        ]


async def _status(client, path: str) -> int:
    return (await client.get(path)).status_code


@pytest.fixture
async def system(settings):
    """The four services in-process over real Redis and stores, the story applied, and one token per role."""
    story = Story()
    async with AsyncExitStack() as stack:
        apps = {d.name: await stack.enter_async_context(running(d, settings))
                for d in (inventory, warranty, theft, recalls)}
        admins = {name: await stack.enter_async_context(http(app)) for name, app in apps.items()}
        await publish_events(settings, story.events())
        sn = story.sn
        await wait_for(lambda: _status(admins["inventory"], f"/units/acme/{sn}"), message="inventory")

        async def settled():
            war = await admins["warranty"].get(f"/warranties/acme/{sn}")
            alerts = (await admins["theft"].get("/alerts")).json()["items"]
            rc = [await _status(admins["recalls"], f"/recalls/{r}") for r in (story.rc_a1, story.rc_a2, story.rc_z)]
            return (war.status_code == 200 and len(war.json()["requests"]) == 4
                    and all(r["status"] != "pending" for r in war.json()["requests"])
                    and len(war.json()["open_recalls"]) == 2 and war.json()["stolen"]
                    and any(a["serial"] == sn for a in alerts) and rc == [200, 200, 200])
        await wait_for(settled, timeout=40, message="the story applied everywhere")

        async def counted():
            return await _status(admins["inventory"], f"/counts/CNT-{sn}") == 200
        await wait_for(counted, message="the count applied")
        tokens = {}
        for role in ROLES:
            token, _ = create_token(settings.tokens_dir, role, name=f"t-{role}",
                                    manufacturer="acme" if role == "manufacturer" else None)
            tokens[role] = token
        clients = {(service, role): await stack.enter_async_context(http(app, token))
                   for service, app in apps.items() for role, token in tokens.items()}
        yield story, apps, clients, tokens


# role -> expected status, in ROLES order. Written out (not derived from shared/auth.py): this is
# the README's table, and a change of policy must change both.
A = (200, 200, 200, 200, 200, 200)
MINE_ONLY = (200, 200, 200, 200, 404, 200)  # another manufacturer's: 404 for a manufacturer token
CASES = (200, 200, 403, 403, 403, 200)
COUNTER = (200, 403, 200, 403, 403, 403)
CHECKS = (200, 200, 200, 200, 403, 200)
THEFT_CASES = (200, 403, 403, 200, 403, 200)
CAMPAIGNS = (200, 200, 403, 403, 200, 200)
OTHERS_CAMPAIGN = (200, 200, 403, 403, 404, 200)
ERASURE = (202, 202, 403, 403, 403, 403)  # requested: every service applies it (tests/integration/test_erasure.py)
PURCHASES = (200, 200, 403, 403, 403, 403)
SELL_THROUGH = (200, 403, 403, 403, 200, 403)  # the manufacturer's own report (issue 14)
OTHERS_SELL_THROUGH = (200, 403, 403, 403, 404, 403)
SHIPMENTS = (200, 403, 200, 200, 200, 200)
OTHERS_SHIPMENT = (200, 403, 200, 200, 404, 200)
STOCK_COUNTS = (200, 403, 200, 200, 403, 200)


def matrix(story: Story) -> list[tuple[str, str, str, str, dict | None, tuple[int, ...]]]:
    """(service, method, route path, url, json body, expected per role)."""
    sn, zsn = story.sn, story.zsn
    claim = {"claim_id": f"CL-NOW-{sn}", "manufacturer": "acme", "serial": sn, "customer_id": CUSTOMER,
             "issue": "no sound"}
    ret = {"request_id": f"RQ-NOW-{sn}", "manufacturer": "acme", "serial": sn, "receipt_id": RECEIPT,
           "location": "store-1"}
    return [
        ("inventory", "GET", "/units/{manufacturer}/{serial}", f"/units/acme/{sn}", None, A),
        ("inventory", "GET", "/units/{manufacturer}/{serial}", f"/units/zeta/{zsn}", None, MINE_ONLY),
        ("inventory", "GET", "/units", "/units", None, A),
        ("inventory", "GET", "/units", "/units?manufacturer=zeta", None, MINE_ONLY),
        ("inventory", "GET", "/anomalies", "/anomalies", None, THEFT_CASES),
        ("inventory", "GET", "/whoami", "/whoami", None, A),
        ("inventory", "GET", "/serials", f"/serials?serial={zsn}", None, A),  # a manufacturer's: its own only
        ("inventory", "GET", "/serials", f"/serials?serial={zsn}&manufacturer=zeta", None, MINE_ONLY),
        ("inventory", "GET", "/stock", "/stock", None, A),
        ("inventory", "GET", "/stock", "/stock?manufacturer=zeta", None, MINE_ONLY),
        ("inventory", "GET", "/stock/aging", "/stock/aging", None, A),
        ("inventory", "GET", "/stock/aging", "/stock/aging?manufacturer=zeta&format=csv", None, MINE_ONLY),
        ("inventory", "GET", "/shipments/{shipment_id}", f"/shipments/ASN-acme-{sn}", None, SHIPMENTS),
        ("inventory", "GET", "/shipments/{shipment_id}", f"/shipments/ASN-zeta-{zsn}", None, OTHERS_SHIPMENT),
        ("inventory", "GET", "/counts/{count_id}", f"/counts/CNT-{sn}", None, STOCK_COUNTS),
        ("inventory", "GET", "/counts/{count_id}/report.csv", f"/counts/CNT-{sn}/report.csv", None, STOCK_COUNTS),
        ("warranty", "GET", "/warranties/{manufacturer}/{serial}", f"/warranties/acme/{sn}", None, A),
        ("warranty", "GET", "/warranties/{manufacturer}/{serial}", f"/warranties/zeta/{zsn}", None, MINE_ONLY),
        ("warranty", "GET", "/claims/{claim_id}", f"/claims/CL-0-{sn}", None, CASES),
        ("warranty", "GET", "/claims", "/claims", None, CASES),
        ("warranty", "GET", "/returns/{request_id}", f"/returns/RQ-{sn}", None, CASES),
        ("warranty", "GET", "/customers/{customer_id}/purchases", f"/customers/{CUSTOMER}/purchases", None,
         PURCHASES),
        ("warranty", "GET", "/manufacturers/{manufacturer}/sell-through", "/manufacturers/acme/sell-through", None,
         SELL_THROUGH),
        ("warranty", "GET", "/manufacturers/{manufacturer}/sell-through",
         "/manufacturers/zeta/sell-through?format=csv", None, OTHERS_SELL_THROUGH),
        ("warranty", "POST", "/claims/decisions", "/claims/decisions", claim, COUNTER),
        ("warranty", "POST", "/returns/decisions", "/returns/decisions", ret, COUNTER),
        ("warranty", "POST", "/erasures", "/erasures", {"customer_id": "C-NOBODY-KNOWN"}, ERASURE),
        ("theft", "GET", "/stolen/{manufacturer}/{serial}", f"/stolen/acme/{sn}", None, A),
        ("theft", "GET", "/stolen/{manufacturer}/{serial}", f"/stolen/zeta/{zsn}", None, MINE_ONLY),
        ("theft", "POST", "/checks", "/checks", {"items": [{"manufacturer": "acme", "serial": sn}]}, CHECKS),
        ("theft", "GET", "/alerts", "/alerts", None, THEFT_CASES),
        ("theft", "GET", "/exports/alerts.{fmt}", "/exports/alerts.csv", None, THEFT_CASES),
        ("theft", "GET", "/exports/alerts.{fmt}", "/exports/alerts.json", None, THEFT_CASES),
        ("theft", "GET", "/exports/retailer-reports.{fmt}", "/exports/retailer-reports.csv", None, THEFT_CASES),
        ("recalls", "GET", "/recalls", "/recalls", None, CAMPAIGNS),
        ("recalls", "GET", "/recalls", "/recalls?manufacturer=zeta", None, OTHERS_CAMPAIGN),
        ("recalls", "GET", "/recalls/{recall_id}", f"/recalls/{story.rc_a1}", None, CAMPAIGNS),
        ("recalls", "GET", "/recalls/{recall_id}", f"/recalls/{story.rc_z}", None, OTHERS_CAMPAIGN),
        ("recalls", "GET", "/recalls/{recall_id}/units", f"/recalls/{story.rc_a1}/units", None, CAMPAIGNS),
        ("recalls", "GET", "/recalls/{recall_id}/units", f"/recalls/{story.rc_z}/units", None, OTHERS_CAMPAIGN),
        ("recalls", "GET", "/recalls/{recall_id}/report.csv", f"/recalls/{story.rc_a1}/report.csv", None, CAMPAIGNS),
        ("recalls", "GET", "/recalls/{recall_id}/report.csv", f"/recalls/{story.rc_z}/report.csv", None,
         OTHERS_CAMPAIGN),
        ("recalls", "GET", "/recalls/{recall_id}/report.json", f"/recalls/{story.rc_z}/report.json", None,
         OTHERS_CAMPAIGN),
        ("recalls", "GET", "/units/{manufacturer}/{serial}/recalls", f"/units/acme/{sn}/recalls", None, A),
        ("recalls", "GET", "/units/{manufacturer}/{serial}/recalls", f"/units/zeta/{zsn}/recalls", None, MINE_ONLY),
    ]


async def _call(client, method, url, body):
    return await (client.post(url, json=body) if method == "POST" else client.get(url))


async def test_every_route_answers_each_role_401_403_404_or_200(system):
    story, apps, clients, tokens = system
    cases = matrix(story)
    # Every route of every read API is in the matrix: a new endpoint must say who may call it.
    gated = {(name, method, route.path) for name, app in apps.items() for route in api_routes(app.routes)
             if is_gated(route) for method in route.methods}
    assert gated == {(service, method, path) for service, method, path, *_ in cases}
    seen = {}
    for service, method, _, url, body, expected in cases:
        for role, want in zip(ROLES, expected, strict=True):
            response = await _call(clients[(service, role)], method, url, body)
            seen[(service, method, url, role)] = response.status_code
            assert response.status_code == want, (service, method, url, role, response.status_code, response.text)
        async with http(apps[service], token="") as anonymous:
            response = await _call(anonymous, method, url, body)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", url
        forged = tokens["admin"][:-4] + "AAAA"  # a known token id with a wrong secret
        for bad in (forged, "st_0123456789abcdef_" + "A" * 43, "not-a-token"):
            async with http(apps[service], token=bad) as stranger:
                assert (await _call(stranger, method, url, body)).status_code == 401, (url, bad)
    for name, app in apps.items():
        async with http(app, token="") as anonymous:
            assert (await anonymous.get("/healthz")).status_code == 200, name
            assert (await anonymous.get("/metrics")).status_code == 200, name
            document = (await anonymous.get("/openapi.json")).json()
        assert document["components"]["securitySchemes"]["token"] == {
            "type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]["token"][
                "description"]}
        for path, operations in document["paths"].items():
            for operation in operations.values():
                wanted = None if path in ("/healthz", "/metrics") else [{"token": []}]
                assert operation.get("security") == wanted, (name, path)


async def test_the_web_consoles_reads_answer_by_role_and_manufacturer(system):
    story, _, clients, _ = system
    sn, zsn = story.sn, story.zsn
    me = (await clients[("inventory", "manufacturer")].get("/whoami")).json()
    assert me == {"name": "t-manufacturer", "role": "manufacturer", "manufacturer": "acme"}

    admin, maker = clients[("inventory", "admin")], clients[("inventory", "manufacturer")]
    exact = (await admin.get(f"/serials?serial={sn.lower()}")).json()  # serials are normalized
    assert [(u["manufacturer"], u["serial"]) for u in exact["items"]] == [("acme", sn)]
    near = (await admin.get(f"/serials?serial={sn[:-1]}&match=prefix")).json()["items"]
    assert ("acme", sn) in [(u["manufacturer"], u["serial"]) for u in near]
    assert all(u["serial"].startswith(sn[:-1]) for u in near)
    assert (await admin.get(f"/serials?serial={sn}X")).json()["items"] == []
    assert (await maker.get(f"/serials?serial={zsn}")).json()["items"] == []  # zeta's unit: not for acme
    assert (await admin.get(f"/serials?serial={zsn}")).json()["items"][0]["manufacturer"] == "zeta"
    assert (await admin.get("/serials?serial=bad/serial")).status_code == 400

    everyone, acme_only = (await admin.get("/stock")).json(), (await maker.get("/stock")).json()
    assert acme_only["manufacturer"] == "acme" and 1 <= acme_only["total"] < everyone["total"]
    assert sum(c["count"] for c in everyone["by_status"]) == everyone["total"]
    in_stock = next((c["count"] for c in everyone["by_status"] if c["key"] == "in_stock"), 0)
    assert sum(c["count"] for c in everyone["aging"]) == in_stock

    purchases = (await clients[("warranty", "customer-service")].get(f"/customers/{CUSTOMER}/purchases")).json()
    assert [(p["serial"], p["via"], p["receipt_id"]) for p in purchases] == [(sn, "sale", RECEIPT)]


async def test_a_manufacturer_learns_nothing_of_another_manufacturers_recalls(system):
    story, _, clients, _ = system
    maker = clients[("recalls", "manufacturer")]
    others = await maker.get(f"/recalls/{story.rc_z}")
    unknown = await maker.get("/recalls/RC-NEVER-ISSUED")
    # The same answer as for a recall that does not exist, detail included (save the id it names).
    assert others.status_code == unknown.status_code == 404
    assert others.json()["detail"].replace(story.rc_z, "X") == unknown.json()["detail"].replace("RC-NEVER-ISSUED", "X")
    listed = (await maker.get("/recalls")).json()["items"]
    assert listed and {r["manufacturer"] for r in listed} == {"acme"}
    assert {r["manufacturer"] for r in (await clients[("recalls", "admin")].get("/recalls")).json()["items"]} >= {
        "acme", "zeta"}
    units = (await clients[("inventory", "manufacturer")].get("/units")).json()["items"]
    assert units and {u["manufacturer"] for u in units} == {"acme"}


async def _texts(clients, story, role) -> dict[str, str]:
    """The raw bodies a role gets from every read that may carry customers' data (allowed ones)."""
    sn = story.sn
    reads = [("inventory", f"/units/acme/{sn}"), ("warranty", f"/warranties/acme/{sn}"),
             ("warranty", f"/claims/CL-2-{sn}"), ("warranty", "/claims"), ("warranty", f"/returns/RQ-{sn}"),
             ("theft", f"/stolen/acme/{sn}"), ("theft", "/alerts"), ("theft", "/exports/alerts.json"),
             ("theft", "/exports/alerts.csv")]
    out = {}
    for service, path in reads:
        response = await clients[(service, role)].get(path)
        if response.status_code == 200:
            out[f"{service} {path}"] = response.text
    return out


async def test_customer_data_is_clear_pseudonymized_or_absent_by_role(system):
    story, _, clients, _ = system
    sn = story.sn
    visible = {  # role -> (customer ids, receipts, theft contacts) in clear
        "admin": (True, True, True), "customer-service": (True, True, False), "store": (False, False, False),
        "investigator": (False, True, True), "manufacturer": (False, False, False),
        "auditor": (False, False, False),
    }
    for role, (customers, receipts, contacts) in visible.items():
        texts = await _texts(clients, story, role)
        assert texts, role
        everything = "\n".join(texts.values())
        assert (CUSTOMER in everything) == customers, role
        assert (RECEIPT in everything) == receipts, role
        assert (CONTACT in everything) == contacts, role

    # The third claim within 30 days carries a fraud signal whose free text names the customer:
    # shown to customer service, rewritten for the auditor.
    detail = [s["detail"] for s in (await clients[("warranty", "customer-service")].get(
        f"/claims/CL-2-{sn}")).json()["facts"]["fraud_signals"] if s["name"] == "customer_claim_burst"]
    assert detail and CUSTOMER in detail[0]

    # The auditor: one stable pseudonym per value, the same in every service and every response.
    audit = {name: await clients[(name, "auditor")].get(path) for name, path in (
        ("inventory", f"/units/acme/{sn}"), ("warranty", f"/warranties/acme/{sn}"), ("theft", f"/stolen/acme/{sn}"))}
    war = audit["warranty"].json()
    pseudonym = war["sale"]["customer_id"]
    assert pseudonym.startswith("anon-") and len(pseudonym) == 21
    assert war["owner"]["customer_id"] == pseudonym
    sold = next(h for h in audit["inventory"].json()["history"] if h["type"] == "unit.sold")
    assert sold["customer_id"] == pseudonym and sold["receipt_id"] == war["sale"]["receipt_id"] != pseudonym
    again = (await clients[("warranty", "auditor")].get(f"/claims/CL-2-{sn}")).json()
    assert again["customer_id"] == pseudonym and again["facts"]["owner_customer_id"] == pseudonym
    burst = next(s["detail"] for s in again["facts"]["fraud_signals"] if s["name"] == "customer_claim_burst")
    assert pseudonym in burst
    [report] = audit["theft"].json()["reports"]
    assert report["contact"].startswith("anon-")
    # Looking a person up by their real id would undo the pseudonyms.
    assert (await clients[("warranty", "auditor")].get("/claims", params={"customer_id": CUSTOMER})).status_code == 403

    # Roles that see no customer ids get null where they would be.
    for role in ("store", "investigator", "manufacturer"):
        view = (await clients[("warranty", role)].get(f"/warranties/acme/{sn}")).json()
        assert view["sale"]["customer_id"] is None and view["owner"]["customer_id"] is None, role
        assert (view["sale"]["receipt_id"] is not None) == (role == "investigator"), role
    stolen = (await clients[("theft", "customer-service")].get(f"/stolen/acme/{sn}")).json()
    assert stolen["reports"][0]["contact"] is None
    assert RECEIPT in {s["reference"] for a in stolen["alerts"] for s in a["sightings"]}


async def emitted(settings, event_type: str) -> list[dict]:
    client = aioredis.from_url(settings.redis_url)
    try:
        entries = await raw_entries(client, settings.streams.for_type(event_type))
    finally:
        await client.aclose()
    return [json.loads(fields[b"event"]) for _, fields in entries]


async def test_the_backdated_counter_claim_is_refused_and_decided_now_for_its_three_reasons(system, settings):
    story, _, clients, _ = system
    counter = clients[("warranty", "store")]
    body = {"claim_id": f"CL-BACK-{story.sn}", "manufacturer": "acme", "serial": story.sn, "customer_id": CUSTOMER,
            "issue": "no picture", "source": "pos/forged-till"}
    # Last July the unit was covered, not yet stolen, not yet recalled: the claim the issue found approved.
    last_july = await counter.post("/claims/decisions", json={**body, "time": "2026-07-15T10:00:00Z"})
    assert last_july.status_code == 422, last_july.text
    [error] = last_july.json()["detail"]
    assert error["loc"] == ["body", "time"] and "5 minutes" in error["msg"]
    ahead = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    assert (await counter.post("/claims/decisions", json={**body, "time": ahead})).status_code == 422

    decided = await counter.post("/claims/decisions", json=body)
    assert decided.status_code == 200, decided.text
    claim = decided.json()
    assert claim["status"] == "rejected"
    assert {"outside_coverage", "reported_stolen", "open_recall"} <= set(claim["reasons"])
    assert sorted(claim["facts"]["open_recalls"]) == sorted([story.rc_a1, story.rc_a2])
    assert claim["customer_id"] is None  # a store token sees no customer ids, not even in its own answer

    # The event's source is the caller's token, whatever the body says; its time is now.
    [submitted] = [e for e in await emitted(settings, "warranty.claim.submitted")
                   if e["data"]["claim_id"] == body["claim_id"]]
    assert submitted["source"] == "http/t-store"
    at = datetime.fromisoformat(submitted["time"])
    assert abs(datetime.now(UTC) - at) < timedelta(minutes=1)

    # A till a minute behind is fine.
    till = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    near = await counter.post("/returns/decisions", json={
        "request_id": f"RQ-TILL-{story.sn}", "manufacturer": "acme", "serial": story.sn, "receipt_id": RECEIPT,
        "location": "store-1", "time": till})
    assert near.status_code == 200 and "reported_stolen" in near.json()["reasons"]
    assert near.json()["receipt_id"] is None

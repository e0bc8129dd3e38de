"""`serialtrack demo`: a short story published against a running system, and what came of it."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from services.registry import INSTALLED
from shared.contracts import RecallScope, UnitSelection
from shared.envelope import Envelope, validate_data
from shared.publishing import publish_raw
from shared.redis_clients import async_client
from shared.settings import Settings

from .publishing import build_envelope

if TYPE_CHECKING:
    from shared.signing import Signer

MANUFACTURER = "acme"
DEMO_SOURCE = "demo/serialtrack"
SKU = "TV-55-OLED"
INVENTORY_TYPES = ("unit.", "theft.reported", "theft.recovered", "recall.")


@dataclass
class Step:
    narration: str
    type: str
    data: dict
    offset: timedelta
    id: str | None = None  # default: one that names the step's position and type (run_demo)


@dataclass
class Expectations:
    """What the story must have led to, checked before anything is shown."""

    decisions: dict[str, dict[str, str]] = field(default_factory=dict)  # serial -> {claim/request id: status}
    alerts_on: dict[str, int] = field(default_factory=dict)  # serial -> theft alerts expected
    recall_id: str = ""
    progress: dict[str, int] = field(default_factory=dict)  # the campaign's counts once all reported back
    diverted_on: str = ""  # the shipment whose unit turns up at the wrong store


def story(batch: str) -> tuple[list[Step], list[str], Expectations]:
    """Serials are fresh per run, so demos never collide. Offsets are from four days ago."""
    tv = [f"TV{batch}{n:03d}" for n in range(1, 8)]
    m, day = MANUFACTURER, timedelta(days=1)
    sale = {"manufacturer": m, "sku": SKU, "location": "store-12"}
    steps = [
        Step("acme's TV warranty: 90 days, returns within 30", "warranty.policy.set",
             {"policy_id": f"ACME-TV-90-{batch}", "manufacturer": m, "sku": SKU, "coverage_days": 90,
              "return_window_days": 30, "effective_from": "2020-01-01T00:00:00Z"}, -300 * day),
        Step(f"{tv[3]} arrived long ago and was sold 200 days ago", "unit.received",
             {"manufacturer": m, "serial": tv[3], "sku": SKU, "location": "store-12"}, -210 * day),
        Step("", "unit.sold", {**sale, "serial": tv[3], "terminal_id": "store-12/till-2",
                               "receipt_id": f"R-{batch}-0", "customer_id": f"C-{batch}-3001"}, -200 * day),
        Step("5 TVs arrive at warehouse-1 (one bulk receipt by serial range)", "unit.received",
             {"manufacturer": m, "serial_range": {"prefix": f"TV{batch}", "first": 1, "last": 3, "width": 3},
              "sku": SKU, "location": "warehouse-1"}, timedelta()),
        Step("", "unit.received", {"manufacturer": m, "serials": [tv[4], tv[5]], "sku": SKU,
                                   "location": "store-12"}, timedelta()),
        Step(f"{tv[0]} moves to store-12", "unit.transferred",
             {"manufacturer": m, "serial": tv[0], "from_location": "warehouse-1", "to_location": "store-12"},
             timedelta(hours=2)),
        Step(f"{tv[0]} is sold at store-12, till 3", "unit.sold",
             {**sale, "serial": tv[0], "terminal_id": "store-12/till-3", "receipt_id": f"R-{batch}-1",
              "customer_id": f"C-{batch}-1042", "price": "899.00"}, day),
        Step(f"till 1 sells a TV, but the cashier scans {tv[5]}'s shelf label instead of the box", "unit.sold",
             {**sale, "serial": tv[5], "terminal_id": "store-12/till-1", "receipt_id": f"R-{batch}-6",
              "customer_id": f"C-{batch}-2077"}, day + timedelta(hours=1), id=f"demo-{batch}-mistaken-sale"),
        Step(f"... and voids that sale: the box in the bag is {tv[4]} (event.voided, with the corrected sale)",
             "event.voided",
             {"manufacturer": m, "voided_source": DEMO_SOURCE, "voided_id": f"demo-{batch}-mistaken-sale",
              "voided_type": "unit.sold", "reason": "scanned the shelf label, not the box",
              "corrected": {"type": "unit.sold", "id": f"demo-{batch}-corrected-sale",
                            "data": {**sale, "serial": tv[4], "terminal_id": "store-12/till-1",
                                     "receipt_id": f"R-{batch}-6", "customer_id": f"C-{batch}-2077"}}},
             day + timedelta(hours=1, minutes=2)),
        Step(f"{tv[0]} comes back: dead pixels", "unit.returned",
             {"manufacturer": m, "serial": tv[0], "location": "store-12", "receipt_id": f"R-{batch}-1",
              "reason": "dead pixels", "condition": "open_box"}, 2 * day),
        Step(f"police report {tv[2]} stolen from the warehouse dock", "theft.reported",
             {"manufacturer": m, "serial": tv[2], "agency": "metro-pd", "case_number": f"2026-{batch}"},
             2 * day + timedelta(hours=1)),
        Step(f"that customer tries to return {tv[5]} (never sold) on the receipt of {tv[4]}", "return.requested",
             {"request_id": f"RQ-{batch}", "manufacturer": m, "serial": tv[5], "receipt_id": f"R-{batch}-6",
              "location": "store-12", "customer_id": f"C-{batch}-2077", "reason": "does not work"}, 2 * day + timedelta(hours=3)),
        Step(f"someone rings up {tv[2]} at store-12 anyway", "unit.sold",
             {**sale, "serial": tv[2], "terminal_id": "store-12/till-1", "receipt_id": f"R-{batch}-2"}, 3 * day),
        Step(f"{tv[1]} is sold twice: a duplicate scan at another till", "unit.sold",
             {**sale, "location": "warehouse-1", "serial": tv[1], "terminal_id": "web/checkout",
              "receipt_id": f"R-{batch}-3"}, 3 * day + timedelta(hours=1)),
        Step("", "unit.sold", {**sale, "serial": tv[1], "terminal_id": "store-12/till-2",
                               "receipt_id": f"R-{batch}-4"}, 3 * day + timedelta(hours=2)),
        Step(f"the customer claims warranty on {tv[4]}: no sound", "warranty.claim.submitted",
             {"claim_id": f"CL-{batch}-1", "manufacturer": m, "serial": tv[4], "customer_id": f"C-{batch}-2077",
              "issue": "no sound", "location": "store-12"}, 3 * day + timedelta(hours=4)),
        Step(f"another customer claims warranty on {tv[3]}, bought 200 days ago", "warranty.claim.submitted",
             {"claim_id": f"CL-{batch}-2", "manufacturer": m, "serial": tv[3], "customer_id": f"C-{batch}-3001",
              "issue": "dead pixels", "location": "store-12"}, 3 * day + timedelta(hours=5)),
        Step(f"acme recalls TV-55-OLED {tv[0]}..{tv[6]}: overheating power supply", "recall.issued",
             {"recall_id": f"RC-{batch}", "manufacturer": m, "skus": [SKU], "hazard": "power supply may overheat",
              "remedy": "repair", "instructions": "unplug it and bring it to any store",
              "serial_ranges": [{"prefix": f"TV{batch}", "first": 1, "last": 7, "width": 3}]},
             3 * day + timedelta(hours=6)),
        Step(f"{tv[6]} arrives after the recall", "unit.received",
             {"manufacturer": m, "serial": tv[6], "sku": SKU, "location": "store-12"}, 3 * day + timedelta(hours=8)),
        Step(f"the service desk repairs {tv[0]}", "recall.remedy.completed",
             {"recall_id": f"RC-{batch}", "manufacturer": m, "serial": tv[0], "remedy": "repair",
              "location": "store-12"}, 3 * day + timedelta(hours=10)),
        # The gray market: a unit shipped to another retailer's outlet turns up at store-12.
        *_diversion(batch),
    ]
    expectations = Expectations(
        decisions={tv[4]: {f"CL-{batch}-1": "approved"}, tv[3]: {f"CL-{batch}-2": "rejected"},
                   tv[5]: {f"RQ-{batch}": "rejected"}},
        alerts_on={tv[2]: 2},  # the warehouse receipt (retroactive) and the sale at store-12
        recall_id=f"RC-{batch}",
        # returned tv0 repaired; tv5 in stock and tv6 arriving later held; tv3, tv4 sold to known
        # customers; tv1, tv2 sold without a customer id.
        progress={"affected": 7, "remedied": 1, "quarantined": 2, "sold_owner_notified": 2,
                  "sold_owner_unknown": 2},
        diverted_on=f"ASN-{batch}-OUTLET",
    )
    return steps, tv, expectations


def _diversion(batch: str) -> list[Step]:
    """acme ships two TVs to store-12 and one to another retailer's outlet; store-12 receives all three."""
    gm = [f"GM{batch}{n:03d}" for n in (1, 2, 3)]
    day, m = timedelta(days=1), MANUFACTURER
    # Due two days into the story (which starts four days ago): with two days of grace, the deadline
    # is still ahead, so the shipment to store-12 is complete and nothing is missing yet.
    arrival = (datetime.now(UTC) - 2 * day).date().isoformat()
    ship = {"manufacturer": m, "from_location": "acme-dc", "sku": SKU, "grace_days": 2, "expected_arrival": arrival}
    return [
        Step(f"acme ships {gm[0]}, {gm[1]} to store-12 and {gm[2]} to outlet-9 of discount-mart (two manifests)",
             "shipment.dispatched", {**ship, "shipment_id": f"ASN-{batch}-STORE12", "to_location": "store-12",
                                     "serials": gm[:2]}, timedelta(hours=3)),
        Step("", "shipment.dispatched", {**ship, "shipment_id": f"ASN-{batch}-OUTLET", "to_location": "outlet-9",
                                         "retailer": "discount-mart", "serials": gm[2:]},
             timedelta(hours=3)),
        Step(f"store-12 receives all three: {gm[2]} was never meant for it", "unit.received",
             {"manufacturer": m, "serials": gm, "sku": SKU, "location": "store-12"}, 2 * day),
    ]


def _serials_of(event_type: str, data: dict, story_serials: list[str]) -> set[str]:
    """The story's units an event concerns (a recall: the ones its scope covers)."""
    model = validate_data(event_type, data)
    if isinstance(model, UnitSelection):
        return set(model.iter_serials())
    if isinstance(model, RecallScope):
        return {s for s in story_serials if model.covers(model.manufacturer, s, SKU)}
    serial = getattr(model, "serial", None)
    return {serial} if serial else set()


def _waiting_for(report: dict, inventory_ids: set[str], expect: Expectations, serial: str) -> str | None:
    """What an installed service has not applied yet of the story about this unit (None: nothing)."""
    unit = report.get("inventory")
    if "inventory" in report:
        missing = inventory_ids - {h["id"] for h in (unit or {}).get("history", [])}
        if missing:
            return f"inventory: {serial} lacks {', '.join(sorted(missing))}"
    stolen = report.get("theft")
    if stolen is not None and len(stolen["alerts"]) < expect.alerts_on.get(serial, 0):
        return f"theft: {serial} has {len(stolen['alerts'])} of {expect.alerts_on[serial]} alerts"
    if "warranty" in report:
        decided = {r["reference"]: r["status"] for r in (report["warranty"] or {}).get("requests", [])}
        for ref, status in expect.decisions.get(serial, {}).items():
            if decided.get(ref) != status:
                return f"warranty: {ref} on {serial} is {decided.get(ref) or 'undecided'}, expected {status}"
    return None


# The producers of the story whose events must be signed: (key name, role, what the key speaks for).
DEMO_KEYS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("demo-metro-pd", "law-enforcement", {"agency": "metro-pd"}),
    ("demo-acme", "manufacturer", {"manufacturer": MANUFACTURER}),
    ("demo-service-desk", "service-desk", {}),
    ("demo-till", "pos", {}))  # signs the till's void of its own mistaken sale


def demo_signers(data_dir: Path) -> list[Signer]:
    """The story's signing keys, registered in the data dir on the first demo (`serialtrack keys list`)."""
    from shared.keys import KeyRegistryConflict, create_key, load_registry, registry_path
    from shared.signing import load_signer

    registered = load_registry(registry_path(data_dir))
    for name, role, binding in DEMO_KEYS:
        if registered.by_name(name) is None:
            try:
                create_key(data_dir, name, role, agency=binding.get("agency"), manufacturer=binding.get("manufacturer"))
            except KeyRegistryConflict:
                pass  # a demo running at the same time made it
    return [load_signer(name, data_dir) for name, _, _ in DEMO_KEYS]


def _entry_body(envelope: Envelope, signers: list[Signer]) -> str:
    """The envelope as published: signed by the story's producer where its type must be signed."""
    from shared.roles import signature_required
    from shared.signing import SignatureRejected

    if not signature_required(envelope.type):
        return envelope.model_dump_json(exclude_none=True)
    for signer in signers:
        try:
            return signer.entry_body(envelope)  # refuses what this key may not speak for
        except SignatureRejected:
            continue
    raise RuntimeError(f"no demo key may sign {envelope.type}")  # the story and DEMO_KEYS disagree


def run_demo(settings: Settings, redis_url: str, say: Callable[[str], None], timeout: float = 45.0) -> dict:
    from .cli import fetch_unit

    batch = secrets.token_hex(2).upper()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=4)
    steps, serials, expect = story(batch)
    envelopes = []
    inventory_ids: dict[str, set[str]] = {s: set() for s in serials}
    # Event ids name their type, so a demo that waits too long says what it is waiting for.
    ids = iter(f"demo-{batch}-{n:02d}-{step.type}" for n, step in enumerate(steps))
    for step in steps:
        envelope = build_envelope(step.type, step.data, source=DEMO_SOURCE, id=step.id or next(ids),
                                  time=start + step.offset)
        if step.id:
            next(ids)
        envelopes.append(envelope)
        touched = _serials_of(step.type, step.data, serials)
        if step.type == "event.voided":  # the corrected event: applied as a sale of its own
            fix = step.data["corrected"]
            inventory_ids[fix["data"]["serial"]].add(fix["id"])
        if step.type.startswith(INVENTORY_TYPES):
            for serial in touched & inventory_ids.keys():  # the diversion's units are waited for below
                inventory_ids[serial].add(envelope.id)
        if step.narration:
            say(f"  {(start + step.offset):%b %d %Y}  {step.narration}")

    signers = demo_signers(settings.data_dir)
    entries = [(settings.streams.for_type(e.type), _entry_body(e, signers)) for e in envelopes]

    async def send():
        client = async_client(redis_url)  # sends only what the operator's Redis user may run
        try:
            await publish_raw(client, entries)
        finally:
            await client.aclose()

    asyncio.run(send())
    say(f"published {len(envelopes)} events (the police report signed by metro-pd's key, the recall and the "
        f"warranty policy by acme's, the repair by the service desk's, the void by the till's); waiting for "
        f"{', '.join(INSTALLED)}...")

    deadline = time.monotonic() + timeout
    units: dict[str, dict] = {}
    campaign: dict | None = None
    diverted: dict | None = None
    waiting: list[str] = []
    while time.monotonic() < deadline:
        units = {s: fetch_unit(settings, MANUFACTURER, s) for s in serials}
        campaign = _campaign(settings, expect.recall_id)
        waiting = [w for s in serials if (w := _waiting_for(units[s], inventory_ids[s], expect, s))]
        diverted = _shipment(settings, expect.diverted_on)
        if diverted is not None and diverted.get("counts", {}).get("diverted") != 1:
            waiting.append(f"inventory: shipment {expect.diverted_on} shows no diverted unit yet")
        if campaign is not None and any(campaign["progress"].get(k) != v for k, v in expect.progress.items()):
            waiting.append(f"recalls: progress {campaign['progress']}, expected {expect.progress}")
        if not waiting:
            break
        time.sleep(0.3)
    else:
        raise TimeoutError(f"the services did not apply the demo events within {timeout:.0f}s ("
                           + "; ".join(waiting) + "); check `serialtrack deadletters` and the service logs")

    _tell(units, serials, say)
    if campaign:
        p = campaign["progress"]
        say("")
        say(f"recall {expect.recall_id}: {p['affected']} units affected: {p['quarantined']} quarantined in stock, "
            f"{p['sold_owner_notified']} owners notified, {p['sold_owner_unknown']} sold to unknown owners, "
            f"{p['remedied']} remedied (completion {p['completion_rate']:.0%})")
    if diverted and diverted.get("diverted"):
        unit = diverted["diverted"][0]
        say(f"shipment {expect.diverted_on} to outlet-9 (discount-mart): {unit['serial']} diverted, received at "
            f"{unit['location']}: a gray-market anomaly (`serialtrack shipments show {expect.diverted_on}`)")
    command, activate = command_name()
    lookup = f"{command} lookup {MANUFACTURER} {serials[2]}"
    say("")
    say(f"try: {lookup}")
    if activate:
        say(f"     (or `{activate}` first, then just `serialtrack lookup {MANUFACTURER} {serials[2]}`)")
    return {"manufacturer": MANUFACTURER, "serials": serials, "units": units, "recall": campaign,
            "diverted_shipment": diverted, "lookup_command": lookup}


def command_name() -> tuple[str, str | None]:
    """How to run serialtrack from this shell: ``serialtrack`` when PATH finds this very script,
    else the script's path (relative when under the working directory, as `make up` leaves it in
    .venv/bin), with the command that activates its virtual environment."""
    script = Path(sys.executable).with_name("serialtrack")  # not resolved: a venv's python is a link
    if not script.exists():
        return f"{sys.executable} -m serialtrack.cli", None
    found = shutil.which("serialtrack")
    if found and Path(found).resolve() == script.resolve():
        return "serialtrack", None
    try:
        shown = str(script.relative_to(Path.cwd()))
    except ValueError:
        shown = str(script)
    activate = script.with_name("activate")
    return shown, (f"source {activate.relative_to(Path.cwd()) if shown != str(script) else activate}"
                   if activate.exists() else None)


def _shipment(settings: Settings, shipment_id: str) -> dict | None:
    """A shipment as inventory reconciled it (None where inventory is not installed; {} while unknown)."""
    if "inventory" not in INSTALLED:
        return None
    from shared.tokens import client_headers

    response = httpx.get(f"{settings.service_url('inventory')}/shipments/{shipment_id}", timeout=10,
                         headers=client_headers(settings.data_dir))
    return response.json() if response.status_code == 200 else {}


def _campaign(settings: Settings, recall_id: str) -> dict | None:
    """The recall campaign as the recalls service reports it (None where that service is not installed)."""
    if "recalls" not in INSTALLED:
        return None
    from shared.tokens import client_headers

    response = httpx.get(f"{settings.service_url('recalls')}/recalls/{recall_id}", timeout=10,
                         headers=client_headers(settings.data_dir))
    return response.json() if response.status_code == 200 else {"progress": {}}


def _tell(units: dict[str, dict], serials: list[str], say: Callable[[str], None]) -> None:
    say("")
    say("inventory now says:")
    for serial in serials:
        unit = units[serial].get("inventory")
        if not unit:
            continue
        flags = " STOLEN" if unit["stolen"] else ""
        say(f"  {MANUFACTURER}/{serial}: {unit['status']} at {unit['location']}{flags}")
        for anomaly in (a for a in unit["anomalies"] if a["status"] == "open"):
            say(f"      anomaly {anomaly['kind']}: {anomaly['detail']}")
        for entry in (h for h in unit["history"] if h.get("voided")):
            say(f"      voided {entry['type']} {entry['id']} ({entry['voided']['reason']}): kept in its history, "
                "undone everywhere")
    if any(units[s].get("warranty") for s in serials):
        say("")
        say("warranty decided:")
        for serial in serials:
            warranty = units[serial].get("warranty") or {}
            for request in warranty.get("requests", []):
                reasons = f" ({', '.join(request['reasons'])})" if request["reasons"] else ""
                ends = ""
                if "outside_coverage" in request["reasons"] and warranty.get("coverage"):
                    ends = f"; coverage ended {warranty['coverage']['ends'][:10]}"
                say(f"  {request['kind']} {request['reference']} on {serial}: {request['status']}{reasons}{ends}")
    for serial in serials:
        stolen = units[serial].get("theft")
        if stolen and stolen["alerts"]:
            say("")
            say(f"theft watch on {MANUFACTURER}/{serial}:")
            for alert in stolen["alerts"]:
                say(f"  alert ({alert['kind']}): case {alert['agency']}:{alert['case_number']}, seen by "
                    f"{alert.get('terminal_id') or alert.get('event_source')} at {alert.get('location') or '?'}")

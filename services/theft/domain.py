"""Theft-watch rules, pure: which reports are open when, and which sightings are hits.

Everything here is a function of the *set* of facts known about one unit (its
registry facts and its sightings), compared by event time with ties broken by
(source, id). Arrival order never enters, so a sighting and a report delivered
in either order end in the same alert set; the service re-derives a unit's
alerts whenever a fact about it arrives and reconciles them with what it
stored (new alerts are raised, alerts a late recovery disproves are withdrawn).

Rules:
- A case is (origin, agency, case number). A law-enforcement case is open at
  time t when the latest of its ``theft.reported``/``theft.recovered`` facts at
  or before t is a report. Several cases may cover one unit; the unit counts as
  stolen while any of them is open.
- A retailer report (``unit.adjusted`` lost or stolen) is a case of its own
  (agency "retailer"); a later ``found`` adjustment of the unit closes every
  retailer case opened before it.
- A report's time is its ``reported_at`` when given, else its event time.
- Sighting alert: a sighting at time t raises one alert per case open at t.
- Retroactive alert: a law-enforcement case whose first report comes after the
  unit was already seen raises one alert for (unit, case) naming the last
  sightings before the report (newest first). Retailer cases raise none: the
  retailer's own receipt of a unit it later misses is no news.
- Possible match (lower priority): a sale, return or claim at time t of a unit
  no case of its own covers at t, whose serial is near (services/theft/near.py)
  a stolen serial of the same manufacturer, raises one alert per case open at t
  over the near serials, naming them. Judged at the sighting only: a near serial
  reported after the sale raises nothing (no retroactive possible matches).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

OrderKey = tuple[datetime, str, str]
CaseKey = tuple[str, str, str]  # (origin, agency, case_number)

AGENCY = "agency"
RETAILER = "retailer"
RETAILER_AGENCY = "retailer"  # the agency name of retailer-originated reports
NAMED_SIGHTINGS = 5  # sightings a retroactive alert names
SIGHTING_TYPES = (
    "unit.received", "unit.sold", "unit.returned", "unit.transferred",
    "warranty.claim.submitted", "return.requested",
)
# The sightings a near-miss serial is checked at: a person keyed or scanned the serial at a desk.
FUZZY_SIGHTING_TYPES = frozenset({"unit.sold", "unit.returned", "warranty.claim.submitted", "return.requested"})
NAMED_NEAR_SERIALS = 10  # near stolen serials a possible_match alert names
AlertKindName = Literal["sighting", "retroactive", "possible_match"]


def priority_of(kind: str) -> Literal["high", "low"]:
    """Exact alerts (the unit itself is reported) come before possible matches (a similar serial is)."""
    return "low" if kind == "possible_match" else "high"
RETAILER_REPORT_DISPOSITIONS = frozenset({"lost", "stolen"})

_ALERT_IDS = uuid.UUID("0c6e58f2-27a4-4b53-9a0e-7d2b8f3c4a61")


@dataclass(frozen=True, slots=True)
class Sighting:
    """One event that named the unit: where, when and by whom it was seen."""

    time: datetime
    source: str
    event_id: str
    type: str
    location: str | None = None
    terminal_id: str | None = None
    reference: str | None = None  # receipt / claim / request id

    @property
    def order(self) -> OrderKey:
        return (self.time, self.source, self.event_id)


@dataclass(frozen=True, slots=True)
class RegistryFact:
    """A report, a recovery, or a retailer's "found" (which names no case: it closes all retailer cases)."""

    kind: Literal["reported", "recovered", "found"]
    origin: str
    agency: str
    case_number: str
    time: datetime
    source: str
    event_id: str

    @property
    def order(self) -> OrderKey:
        return (self.time, self.source, self.event_id)

    @property
    def case(self) -> CaseKey:
        return (self.origin, self.agency, self.case_number)


@dataclass(frozen=True, slots=True)
class NearMatch:
    """A stolen serial the seen one resembles, and how (near.NearReason)."""

    serial: str
    reason: str


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    kind: AlertKindName
    origin: str
    agency: str
    case_number: str
    seen_at: datetime
    sightings: tuple[Sighting, ...]
    near: tuple[NearMatch, ...] = ()  # possible_match: the stolen serials it resembles


@dataclass(frozen=True, slots=True)
class CaseStatus:
    case: CaseKey
    open: bool
    reported_at: datetime  # the first report
    closed_at: datetime | None  # the closing recovery/found, when closed


def retailer_case_number(source: str, event_id: str) -> str:
    """A retailer report's case number, stable for its event (fits a 64-character code)."""
    return "RT-" + uuid.uuid5(_ALERT_IDS, f"retailer\n{source}\n{event_id}").hex[:16].upper()


def sighting_alert_id(manufacturer: str, serial: str, sighting: Sighting, case: CaseKey) -> str:
    return str(uuid.uuid5(_ALERT_IDS, "\n".join(
        ("sighting", sighting.source, sighting.event_id, manufacturer, serial, *case))))


def retroactive_alert_id(manufacturer: str, serial: str, case: CaseKey) -> str:
    return str(uuid.uuid5(_ALERT_IDS, "\n".join(("retroactive", manufacturer, serial, *case))))


def possible_match_alert_id(manufacturer: str, serial: str, sighting: Sighting, case: CaseKey) -> str:
    return str(uuid.uuid5(_ALERT_IDS, "\n".join(
        ("possible_match", sighting.source, sighting.event_id, manufacturer, serial, *case))))


class _Case:
    """One case's facts in time order, with the retailer "found" facts that may close it."""

    def __init__(self, key: CaseKey, facts: list[RegistryFact], found: list[RegistryFact]):
        self.key = key
        self.facts = sorted(facts, key=lambda f: f.order)
        self.found = found if key[0] == RETAILER else []
        self.first_report = next(f for f in self.facts if f.kind == "reported")

    def open_at(self, order: OrderKey) -> bool:
        last = None
        for fact in self.facts:
            if fact.order > order:
                break
            last = fact
        if last is None or last.kind != "reported":
            return False
        return not any(last.order < f.order <= order for f in self.found)

    def closed_by(self, order: OrderKey) -> RegistryFact | None:
        """The fact that closes the case as of ``order``, if it is closed then."""
        if self.open_at(order):
            return None
        candidates = [f for f in self.facts if f.order <= order and f.kind == "recovered"]
        candidates += [f for f in self.found if self.first_report.order < f.order <= order]
        return max(candidates, key=lambda f: f.order) if candidates else None


def _cases(registry: Iterable[RegistryFact]) -> list[_Case]:
    by_case: dict[CaseKey, list[RegistryFact]] = {}
    found: list[RegistryFact] = []
    for fact in registry:
        if fact.kind == "found":
            found.append(fact)
        else:
            by_case.setdefault(fact.case, []).append(fact)
    # A recovery with no report of its case (yet) opens nothing.
    return [_Case(key, facts, found) for key, facts in sorted(by_case.items())
            if any(f.kind == "reported" for f in facts)]


def derive_alerts(manufacturer: str, serial: str, registry: Iterable[RegistryFact],
                  sightings: Iterable[Sighting]) -> dict[str, Alert]:
    """Every alert the unit's facts call for, by alert id."""
    seen = sorted(set(sightings), key=lambda s: s.order)
    alerts: dict[str, Alert] = {}
    for case in _cases(registry):
        for sighting in seen:
            if case.open_at(sighting.order):
                alert_id = sighting_alert_id(manufacturer, serial, sighting, case.key)
                alerts[alert_id] = Alert(alert_id, "sighting", *case.key, sighting.time, (sighting,))
        if case.key[0] == AGENCY:
            before = [s for s in seen if s.order < case.first_report.order]
            if before:
                named = tuple(reversed(before[-NAMED_SIGHTINGS:]))
                alert_id = retroactive_alert_id(manufacturer, serial, case.key)
                alerts[alert_id] = Alert(alert_id, "retroactive", *case.key, named[0].time, named)
    return alerts


def derive_possible_matches(manufacturer: str, serial: str, registry: Iterable[RegistryFact],
                            sightings: Iterable[Sighting],
                            near: Mapping[str, tuple[str, Iterable[RegistryFact]]]) -> dict[str, Alert]:
    """The possible_match alerts of a unit: ``near`` maps each stolen serial it resembles to (reason,
    that serial's registry facts). A sighting the unit's own open case covers gets none: its exact
    alert says more."""
    seen = sorted((s for s in set(sightings) if s.type in FUZZY_SIGHTING_TYPES), key=lambda s: s.order)
    if not seen or not near:
        return {}
    own = _cases(registry)
    # Homoglyph matches first (the same serial, misread), then edits, each by serial.
    near_cases = [(other, reason, _cases(facts)) for other, (reason, facts)
                  in sorted(near.items(), key=lambda item: (item[1][0] != "homoglyph", item[0]))]
    alerts: dict[str, Alert] = {}
    for sighting in seen:
        if any(case.open_at(sighting.order) for case in own):
            continue
        by_case: dict[CaseKey, list[NearMatch]] = {}
        for other, reason, cases in near_cases:
            for case in cases:
                if case.open_at(sighting.order):
                    by_case.setdefault(case.key, []).append(NearMatch(other, reason))
        for key, matches in sorted(by_case.items()):
            alert_id = possible_match_alert_id(manufacturer, serial, sighting, key)
            alerts[alert_id] = Alert(alert_id, "possible_match", *key, sighting.time, (sighting,),
                                     tuple(matches[:NAMED_NEAR_SERIALS]))
    return alerts


def case_statuses(registry: Iterable[RegistryFact]) -> list[CaseStatus]:
    """Each case of the unit as of everything known (the registry view)."""
    statuses = []
    for case in _cases(registry):
        end = (case.facts[-1].order, *(f.order for f in case.found))
        now = max(end)
        open_now = case.open_at(now)
        closer = None if open_now else case.closed_by(now)
        statuses.append(CaseStatus(case.key, open_now, case.first_report.time, closer.time if closer else None))
    return statuses


def is_stolen(registry: Iterable[RegistryFact]) -> bool:
    return any(s.open for s in case_statuses(registry))


@dataclass(frozen=True, slots=True)
class Reconciliation:
    raised: list[Alert]  # new alerts: store and publish
    withdrawn: list[str]  # stored open alerts the facts no longer call for
    reopened: list[Alert]  # withdrawn alerts the facts call for again
    changed: list[Alert]  # open alerts whose content changed (a retroactive alert learnt more sightings)


def reconcile(derived: Mapping[str, Alert], stored: Mapping[str, tuple[str, Alert]]) -> Reconciliation:
    """Compare the alerts a unit's facts call for with the stored ones ({id: (status, alert)})."""
    raised, reopened, changed = [], [], []
    for alert_id, alert in derived.items():
        if alert_id not in stored:
            raised.append(alert)
            continue
        status, old = stored[alert_id]
        if status == "withdrawn":
            reopened.append(alert)
        elif old != alert:
            changed.append(alert)
    withdrawn = [alert_id for alert_id, (status, _) in stored.items()
                 if status == "open" and alert_id not in derived]
    return Reconciliation(raised, withdrawn, reopened, changed)


_TRAILING_DIGITS = re.compile(r"[0-9]+$")


def range_candidates(serial: str) -> list[tuple[str, int, int]]:
    """Every way ``serial`` could be ``prefix + number`` of a serial range: (prefix, number, digits).

    "AB0012" -> ("AB001", 2, 1), ("AB00", 12, 2), ("AB0", 12, 3), ("AB", 12, 4). A range with width w
    contains it when digits == w; an unpadded range when the digits have no leading zero.
    """
    match = _TRAILING_DIGITS.search(serial)
    if not match:
        return []
    digits = match.group()
    return [(serial[:len(serial) - n], int(digits[-n:]), n) for n in range(1, len(digits) + 1)]


def split_range(first: str, last: str) -> tuple[str, int, int, int | None]:
    """"SN000001", "SN000500" -> ("SN", 1, 500, 6); "SN1", "SN500" -> ("SN", 1, 500, None).

    The two serials must share their prefix up to a trailing number. Raises ValueError otherwise.
    """
    a, b = _TRAILING_DIGITS.search(first), _TRAILING_DIGITS.search(last)
    if not a or not b:
        raise ValueError(f"a serial range needs serials ending in digits, got {first!r}..{last!r}")
    da, db = a.group(), b.group()
    if len(da) == len(db):
        prefix_a, prefix_b, width = first[:a.start()], last[:b.start()], len(da)
    else:
        # Unpadded: the prefix ends where the longer number's digits begin; leading zeros would be padding.
        prefix_a = first[:len(first) - len(da.lstrip("0") or "0")]
        prefix_b = last[:len(last) - len(db.lstrip("0") or "0")]
        width = None
        da, db = first[len(prefix_a):], last[len(prefix_b):]
    if prefix_a != prefix_b:
        raise ValueError(f"{first!r} and {last!r} do not share a prefix before their numbers")
    if int(db) < int(da):
        raise ValueError(f"serial range {first!r}..{last!r} runs backwards")
    return prefix_a, int(da), int(db), width

"""One unit's story: what each service knows of it, merged into one timeline (pure: no I/O).

Every service keeps its own view of the unit; an event several services applied (a sale, a theft
report) appears once, naming the services that know it. Decisions, alerts, anomalies and the
recall's steps for this unit come from the service that made them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class Entry:
    time: datetime
    kind: str  # receipt, move, sale, return, theft, alert, recall, claim, anomaly, owner, other: the marker
    title: str
    details: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    withdrawn: bool = False  # an alert or anomaly a late event explained: kept, struck through
    voided: bool = False  # an event withdrawn by an event.voided: kept, struck through


def when(text: str | None) -> datetime | None:
    """An API's time (ISO 8601), as an aware datetime; None stays None."""
    if not text:
        return None
    return at(text)


def at(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _kv(pairs: list[tuple[str, str | None]]) -> list[str]:
    return [f"{label} {value}" for label, value in pairs if value]


def _history_entry(h: dict) -> Entry:
    t, kind = h["type"], "other"
    where = h.get("location")
    if t == "unit.received":
        kind, title = "receipt", f"Received at {where or 'an unknown location'}"
    elif t == "unit.transferred":
        kind, title = "move", f"Transferred {h.get('from_location') or '?'} → {where or '?'}"
    elif t == "unit.sold":
        kind, title = "sale", f"Sold at {where or 'an unknown store'}"
    elif t == "unit.returned":
        kind, title = "return", f"Returned at {where or '?'}"
    elif t == "theft.reported":
        kind, title = "theft", "Reported stolen"
    elif t == "theft.recovered":
        kind, title = "theft", "Recovered"
    elif t.startswith("recall.") or t == "unit.quarantined" or t == "inventory.recall.continues":
        kind, title = "recall", {"recall.issued": "Recall issued", "recall.amended": "Recall amended",
                                 "recall.closed": "Recall closed", "recall.remedy.completed": "Recall remedy done",
                                 "unit.quarantined": "Quarantined"}.get(t, t)
    elif t == "warranty.owner.registered":
        kind, title = "owner", "Owner registered"
    elif t == "unit.adjusted":
        title = f"Adjusted: {h.get('disposition') or h.get('condition') or 'status'}"
    else:
        title = t
    voided = h.get("voided")  # withdrawn by an event.voided: kept, struck through
    if voided:
        title = f"Voided: {title}"
    details = _kv([("till", h.get("terminal_id")), ("receipt", h.get("receipt_id")),
                   ("customer", h.get("customer_id")), ("case", f"{h['agency']}:{h['case_number']}"
                                                        if h.get("agency") and h.get("case_number") else
                                                        h.get("theft_case")),
                   ("recall", h.get("recall_id")), ("condition", h.get("condition")), ("note", h.get("note")),
                   ("signed by", h.get("signed_by")), ("voided:", voided["reason"] if voided else None)])
    return Entry(when(h["time"]) or datetime.min.replace(tzinfo=UTC), kind, title, details, voided=bool(voided))


def timeline(inventory: dict | None, warranty: dict | None, theft: dict | None, recalls: dict | None) -> list[Entry]:
    events: dict[tuple[str, str], Entry] = {}  # (source, id) -> one entry, whichever services applied it

    def add_event(service: str, h: dict) -> None:
        key = (h["source"], h["id"])
        entry = events.get(key)
        if entry is None:
            entry = events[key] = _history_entry(h)
        else:  # the same event seen by another service: fill in what that one knows
            entry.details += [d for d in _history_entry(h).details if d not in entry.details]
        entry.services.append(service)

    for h in (inventory or {}).get("history", []):
        add_event("inventory", h)
    for h in (warranty or {}).get("history", []):
        add_event("warranty", h)
    entries = list(events.values())

    for a in (inventory or {}).get("anomalies", []):
        entries.append(Entry(when(a["event_time"]) or datetime.min.replace(tzinfo=UTC), "anomaly",
                             f"Anomaly: {a['kind'].replace('_', ' ')}", [a["detail"]], ["inventory"],
                             withdrawn=a["status"] == "withdrawn"))
    for r in (warranty or {}).get("requests", []):
        decision = r["status"] if r["version"] <= 1 else f"{r['status']} (revised, decision {r['version']})"
        entries.append(Entry(when(r["at"]) or datetime.min.replace(tzinfo=UTC), "claim",
                             f"{'Warranty claim' if r['kind'] == 'claim' else 'Return request'} {r['reference']}: "
                             f"{decision}", [f"reason {reason.replace('_', ' ')}" for reason in r["reasons"]],
                             ["warranty"]))
    for report in (theft or {}).get("reports", []):
        if (report["event_source"], report["event_id"]) in events:
            events[(report["event_source"], report["event_id"])].details.append(
                f"case {report['agency']}:{report['case_number']} ({report['status']})")
            if "theft" not in events[(report["event_source"], report["event_id"])].services:
                events[(report["event_source"], report["event_id"])].services.append("theft")
        else:
            entries.append(Entry(when(report["reported_at"]) or datetime.min.replace(tzinfo=UTC), "theft",
                                 f"Reported {'stolen' if report['origin'] == 'agency' else 'missing'} "
                                 f"({report['status']})",
                                 _kv([("case", f"{report['agency']}:{report['case_number']}"),
                                      ("contact", report.get("contact")), ("at", report.get("location"))]),
                                 ["theft"]))
        if report.get("closed_at"):
            entries.append(Entry(when(report["closed_at"]) or datetime.min.replace(tzinfo=UTC), "theft",
                                 f"Case {report['agency']}:{report['case_number']} {report['status']}", [], ["theft"]))
    for alert in (theft or {}).get("alerts", []):
        entries.append(Entry(when(alert["seen_at"]) or datetime.min.replace(tzinfo=UTC), "alert",
                             f"Theft alert ({alert['kind']}): seen at {alert.get('location') or '?'}",
                             _kv([("case", f"{alert['agency']}:{alert['case_number']}"),
                                  ("till", alert.get("terminal_id")), ("by", alert["event_source"]),
                                  ("event", alert["event_type"])]),
                             ["theft"], withdrawn=alert["status"] == "withdrawn"))
    for recall in (recalls or {}).get("recalls", []):
        for field_name, title in (("quarantined_at", "held in quarantine"), ("owner_notified_at", "owner notified"),
                                  ("owner_unknown_at", "owner unknown: no notice sent"),
                                  ("remedied_at", "remedy completed")):
            at = when(recall.get(field_name))
            if at:
                entries.append(Entry(at, "recall", f"Recall {recall['recall_id']}: {title}", [], ["recalls"]))
    entries.sort(key=lambda e: e.time)
    return entries


def unit_found(inventory: dict | None, warranty: dict | None, theft: dict | None, recalls: dict | None) -> bool:
    """Whether any service has heard of the unit: theft and recalls answer every unit (not stolen,
    no recall), which says nothing about whether they ever heard of it."""
    return bool(inventory or warranty or (theft and (theft["reports"] or theft["alerts"]))
                or (recalls and recalls["recalls"]))

"""How `serialtrack lookup` shows one unit: each service's part as lines and tables."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def print_unit(out: Console, report: dict) -> None:
    if report.get("inventory"):
        _print_inventory(out, report["inventory"])
    if report.get("warranty"):
        _print_warranty(out, report["warranty"])
    if report.get("theft"):
        _print_theft(out, report["theft"])
    if report.get("recalls"):
        _print_recalls(out, report["recalls"])


def _print_inventory(out: Console, unit: dict) -> None:
    flags = []
    if unit["stolen"]:
        flags.append(f"[red]REPORTED STOLEN[/red] ({escape(', '.join(unit['theft_cases']))})")
    if unit["recalls"]:
        flags.append(f"[yellow]recalls[/yellow] {escape(', '.join(unit['recalls']))}")
    out.print(f"[bold]{unit['manufacturer']}/{unit['serial']}[/bold]  status [bold]{unit['status']}[/bold] "
              f"({unit['epcis_disposition']})  at {escape(unit['location'] or '-')}  sku {escape(unit['sku'] or '-')}  "
              f"condition {unit['condition'] or '-'}", highlight=False)
    for flag in flags:
        out.print("  " + flag, highlight=False)
    table = Table("time", "event", "where", "details", title="history", title_justify="left")
    for h in unit["history"]:
        details = ", ".join(f"{k}={h[k]}" for k in ("receipt_id", "customer_id", "condition", "disposition",
                                                      "agency", "case_number", "recall_id", "note") if h.get(k))
        where = h.get("location") or ""
        if h.get("from_location"):
            where = f"{h['from_location']} -> {where}"
        if h.get("voided"):  # withdrawn by an event.voided: kept in the history, applied nowhere
            details = f"VOIDED ({h['voided']['reason']}) {details}".strip()
        table.add_row(h["time"], h["type"], escape(where), escape(details))
    out.print(table)
    # Withdrawn anomalies were explained by a late event: kept for the record, apart from open ones.
    for status, title in (("open", "anomalies (open)"),
                          ("withdrawn", "anomalies withdrawn (a late, earlier event explained them)")):
        rows = [a for a in unit["anomalies"] if a["status"] == status]
        if rows:
            anomalies = Table("time", "kind", "detail", title=title, title_justify="left")
            for a in rows:
                anomalies.add_row(a["event_time"], a["kind"], escape(a["detail"]))
            out.print(anomalies)


def _print_warranty(out: Console, warranty: dict) -> None:
    coverage, owner, sale = warranty.get("coverage"), warranty.get("owner"), warranty.get("sale")
    line = f"warranty: [bold]{warranty['status']}[/bold]"
    if coverage:
        line += (f", policy {escape(coverage['policy_id'])} ({coverage['coverage_days']} days) "
                 f"{coverage['starts'][:10]} to {coverage['ends'][:10]}, {coverage['status']}")
    if owner:
        line += f", owner {escape(owner['customer_id'])} (via {owner['via']})"
    if sale:
        line += f", sold {sale['sold_at'][:10]} at {escape(sale['location'])} on receipt {escape(sale['receipt_id'])}"
    out.print(line, highlight=False)
    requests = warranty.get("requests") or []
    if requests:
        table = Table("at", "request", "reference", "decision", "reasons", title="claims and returns",
                      title_justify="left")
        for r in requests:
            decision = r["status"] if r["version"] <= 1 else f"{r['status']} (revised: decision {r['version']})"
            table.add_row(r["at"], r["kind"], escape(r["reference"]), decision, ", ".join(r["reasons"]))
        out.print(table)
        if any(r["version"] > 1 for r in requests):
            out.print("  revised: a fact that arrived after the first decision (an earlier sale, a stolen "
                      "report) changed it; GET /claims/ID or /returns/ID on the warranty service lists "
                      "every version", highlight=False)
    for change in warranty.get("pending_ownership_changes") or []:
        out.print(f"  [yellow]ownership change pending[/yellow]: {escape(change['customer_id'])} registered "
                  f"{change['registered_at'][:10]} (claims go to review until a trusted registration or a new "
                  "sale settles it)", highlight=False)
    for recall in warranty.get("open_recalls", []):
        out.print(f"  [yellow]open recall[/yellow] {escape(recall['recall_id'])}: {escape(recall['hazard'])} "
                  f"(remedy: {recall['remedy']}, owner notice: {recall['notice'] or 'pending'})", highlight=False)


def _print_theft(out: Console, stolen: dict) -> None:
    if stolen["stolen"]:
        out.print(f"theft watch: [red]REPORTED STOLEN[/red], open cases {escape(', '.join(stolen['open_cases']))}",
                  highlight=False)
    else:
        out.print("theft watch: not reported stolen"
                  + (f" ({len(stolen['reports'])} closed report(s))" if stolen["reports"] else ""), highlight=False)
    if stolen["alerts"]:
        alerts = Table("seen at", "kind", "case", "where", "seen by", "status", title="theft alerts",
                       title_justify="left")
        for a in stolen["alerts"]:
            alerts.add_row(a["seen_at"], a["kind"], escape(f"{a['agency']}:{a['case_number']}"),
                           escape(a.get("location") or ""),
                           escape(a.get("terminal_id") or a.get("event_source") or ""), a["status"])
        out.print(alerts)


def _print_recalls(out: Console, recalls: dict) -> None:
    if not recalls["recalls"]:
        out.print("recalls: none", highlight=False)
        return
    table = Table("recall", "open", "hazard", "remedy", "this unit", title="recalls", title_justify="left")
    for r in recalls["recalls"]:
        table.add_row(escape(r["recall_id"]), "yes" if r["open"] else "closed", escape(r["hazard"] or ""),
                      escape(r["remedy"] or ""), r["status"])
    out.print(table)

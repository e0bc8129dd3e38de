"""`serialtrack theft alerts` and `serialtrack theft check`: the theft desk from a terminal.

Only typer is imported at module level (like tokens_cli): `serialtrack --help` stays quick. Both call
the theft service's HTTP API with the data dir's admin token (or $SERIALTRACK_TOKEN), as `lookup` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .options import START_HINT, DataDir, JsonFlag, fail

PRIORITY_ORDER = {"high": 0, "low": 1}


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(message, code)


def _call(data_dir: Path | None, method: str, path: str, **kwargs) -> dict:
    import httpx

    from shared.settings import Settings
    from shared.tokens import client_headers

    settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
    url = settings.service_url("theft") + path
    try:
        with httpx.Client(timeout=30, headers=client_headers(settings.data_dir)) as client:
            response = client.request(method, url, **kwargs)
    except httpx.HTTPError:
        _fail(f"the theft service is not reachable at {settings.service_url('theft')}; {START_HINT}")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if not isinstance(detail, str):  # a 422's list of problems: the first says enough
            detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg')}" for d in detail[:3])
        _fail(f"theft answered {response.status_code}: {detail}")
    return response.json()


def alerts(
    kind: Annotated[str | None, typer.Option(
        help="sighting, retroactive (exact: the unit itself is reported; high priority) or possible_match "
             "(a similar serial is reported; low priority)")] = None,
    status: Annotated[str, typer.Option(help="open, withdrawn or all")] = "open",
    agency: Annotated[str | None, typer.Option(help="Only this agency's cases")] = None,
    manufacturer: Annotated[str | None, typer.Option(help="Only this manufacturer's units")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Newest N alerts")] = 50,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """The theft desk's alerts: exact alerts (high priority) first, then possible matches (low priority:
    a serial one misread or mistyped character from a reported one), each newest first."""
    if kind not in (None, "sighting", "retroactive", "possible_match"):
        _fail("--kind must be sighting, retroactive or possible_match")
    if status not in ("open", "withdrawn", "all"):
        _fail("--status must be open, withdrawn or all")
    params = {k: v for k, v in {"kind": kind, "status": None if status == "all" else status, "agency": agency,
                                "manufacturer": manufacturer, "limit": limit}.items() if v is not None}
    page = _call(data_dir, "GET", "/alerts", params=params)
    items = sorted(page["items"], key=lambda a: PRIORITY_ORDER[a["priority"]])  # stable: newest first within
    if as_json:
        typer.echo(json.dumps({**page, "items": items}, indent=2))
        return
    if not items:
        typer.echo("no alerts" + (" match these filters" if len(params) > 1 else ""))
        return
    for a in items:
        label = typer.style("HIGH", fg="red", bold=True) if a["priority"] == "high" else typer.style("low ", fg="yellow")
        where = a["location"] or "-"
        line = (f"{label}  {a['kind']:<14} {a['seen_at'][:19]}  {a['manufacturer']}/{a['serial']}  {a['event_type']} "
                f"at {where}  case {a['agency']}:{a['case_number']}  [{a['status']}]")
        if a["near_matches"]:
            line += "  resembles " + ", ".join(f"{n['serial']} ({n['reason'].replace('_', ' ')})"
                                               for n in a["near_matches"][:3])
            if len(a["near_matches"]) > 3:
                line += f" and {len(a['near_matches']) - 3} more"
        typer.echo(line)
    if page["total"] > len(items):
        typer.echo(f"{len(items)} of {page['total']}; --limit shows more")


def check(
    manufacturer: Annotated[str, typer.Argument(help="e.g. acme")],
    serials: Annotated[list[str], typer.Argument(help="One or more serials (at most 10,000)")],
    fuzzy: Annotated[bool, typer.Option(
        "--fuzzy", help="Also name reported serials each unit nearly matches (homoglyphs such as O/0, one "
                        "character dropped, added, changed or swapped on serials of 8 or more)")] = False,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Are these units reported stolen? (POST /checks.) Changes nothing.

    Exit code 1 when any unit is stolen or, with --fuzzy, a possible match; 0 when none is."""
    if len(serials) > 10_000:
        _fail("at most 10,000 serials per check")
    body = {"items": [{"manufacturer": manufacturer, "serial": s} for s in serials], "fuzzy": fuzzy}
    result = _call(data_dir, "POST", "/checks", json=body)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for r in result["results"]:
            unit = f"{r['manufacturer']}/{r['serial']}"
            if r["error"]:
                typer.echo(f"{unit}: invalid: {r['error']}")
            elif r["stolen"]:
                cases = ", ".join(f"{c['agency']}:{c['case_number']}" for c in r["cases"])
                typer.echo(f"{unit}: {typer.style('STOLEN', fg='red', bold=True)} ({cases})")
            elif r["possible_matches"]:
                near = ", ".join(f"{m['serial']} ({m['reason'].replace('_', ' ')}; "
                                 + ", ".join(f"{c['agency']}:{c['case_number']}" for c in m["cases"]) + ")"
                                 for m in r["possible_matches"][:3])
                typer.echo(f"{unit}: {typer.style('possible match', fg='yellow')} of {near}")
            else:
                typer.echo(f"{unit}: not reported")
        typer.echo(f"{result['checked']} checked: {result['stolen']} stolen, {result['possible']} possible matches, "
                   f"{result['invalid']} invalid")
    if result["stolen"] or result["possible"]:
        raise typer.Exit(1)

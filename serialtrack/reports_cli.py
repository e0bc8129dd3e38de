"""`serialtrack sell-through MANUFACTURER` and `serialtrack stock-aging`: the reports of issue 14
(parts 4 and 5), fetched from the warranty and inventory services' HTTP APIs.

The CLI sends the data dir's admin token, or $SERIALTRACK_TOKEN: a manufacturer's channel team
runs it with their manufacturer token and gets their own report only. CSV and JSON are streamed
from the service to stdout (or --output) as they arrive: a report of a million sales never sits in
memory here either.

Only typer is imported at module level (serialtrack/cli.py registers the commands).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from .options import DataDir, JsonFlag, fail

CsvFlag = Annotated[bool, typer.Option("--csv", help="CSV on stdout (or --output), streamed.")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write the CSV or JSON to this file instead "
                                                                     "of stdout.")]


@contextmanager
def _answer(service: str, path: str, params: dict[str, Any], data_dir: Path | None):
    """The service's streamed answer to GET ``path``; a refusal or an unreachable service is one line."""
    import httpx

    from shared.settings import Settings
    from shared.tokens import client_headers

    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    base = settings.service_url(service)
    query = {k: v for k, v in params.items() if v is not None}
    try:
        with httpx.Client(base_url=base, headers=client_headers(settings.data_dir), timeout=httpx.Timeout(
                30.0, read=600.0)) as client, client.stream("GET", path, params=query) as response:
            if response.status_code != 200:
                response.read()
                fail(f"the {service} service answered {response.status_code}: {_detail(response)}",
                     2 if response.status_code in (401, 403) else 1)
            yield response
    except httpx.TransportError as exc:
        fail(f"the {service} service is not reachable at {base} ({exc or type(exc).__name__}); "
             "is `serialtrack up` running?", 2)


def _detail(response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:200]
    if isinstance(detail, list):  # a 422: which parameter, and why
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in detail)
    if response.status_code == 403:
        return f"{detail} (send a token of a role that may: SERIALTRACK_TOKEN=...)"
    return str(detail)


def _copy(response, output: Path | None) -> None:
    if output is None:
        for chunk in response.iter_text():
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return
    with output.open("w", encoding="utf-8") as handle:
        for chunk in response.iter_text():
            handle.write(chunk)


def sell_through(
    manufacturer: Annotated[str, typer.Argument(help="e.g. acme (a manufacturer token may ask for its own only)")],
    since: Annotated[str | None, typer.Option(help="sold or returned at or after (ISO date or time, no zone = UTC)")]
    = None,
    until: Annotated[str | None, typer.Option(help="sold or returned before")] = None,
    sku: Annotated[str | None, typer.Option(help="only this sku's sales, and the returns of its units")] = None,
    counts: Annotated[bool, typer.Option("--counts", help="Only the counts per sku and location (with --csv or "
                                                          "--json), not every serial.")] = False,
    as_csv: CsvFlag = False,
    as_json: JsonFlag = False,
    output: Output = None,
    data_dir: DataDir = None,
) -> None:
    """A manufacturer's sell-through: each serial sold or returned in the period (date, sku, store, till,
    whether an owner is registered; no customer data), and counts per sku and store.

    Without --csv or --json: the counts as a table. --csv: every serial (or, with --counts, the counts)
    as CSV; --json: the whole report. Served by the warranty service, to admin and the manufacturer's
    own token (SERIALTRACK_TOKEN)."""
    if as_csv and as_json:
        fail("choose one of --csv and --json", 2)
    params = {"since": since, "until": until, "sku": sku, "format": "csv" if as_csv else "json",
              "view": "counts" if counts or not (as_csv or as_json) else "units"}
    with _answer("warranty", f"/manufacturers/{manufacturer}/sell-through", params, data_dir) as response:
        if as_csv or as_json:
            _copy(response, output)
            return
        report = json.loads(response.read())
    period = f"{report['since'] or 'the beginning'} to {report['until'] or 'now'}"
    typer.echo(f"sell-through of {report['manufacturer']}, {period}" + (f", sku {sku}" if sku else ""))
    typer.echo(f"{'sku':<20} {'location':<16} {'sold':>8} {'returned':>9} {'net':>8} {'with owner':>11}")
    for row in report["counts"]:
        typer.echo(f"{row['sku'] or '-':<20} {row['location'] or '-':<16} {row['sold']:>8} {row['returned']:>9} "
                   f"{row['net']:>8} {row['sold_with_owner']:>11}")
    t = report["totals"]
    typer.echo(f"{'total':<37} {t['sold']:>8} {t['returned']:>9} {t['net']:>8} {t['sold_with_owner']:>11}")
    if not report["counts"]:
        typer.echo("no sales or returns in the period")


def stock_aging(
    location: Annotated[str | None, typer.Option(help="only this location")] = None,
    sku: Annotated[str | None, typer.Option(help="only this sku")] = None,
    older_than_days: Annotated[int | None, typer.Option(min=0, help="only units in stock for more than N days")]
    = None,
    manufacturer: Annotated[str | None, typer.Option(help="only this manufacturer's units")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="the N oldest units listed (not with --csv)")] = 20,
    as_csv: CsvFlag = False,
    as_json: JsonFlag = False,
    output: Output = None,
    data_dir: DataDir = None,
) -> None:
    """Stock that is not selling: units on hand by days in stock (from the receipt, or a later return),
    counts per sku and location in the bands 0-30, 31-90, 91-180 and 180+ days, and the returned units
    back in stock per sku.

    Without --csv or --json: the bands, the returned stock and the oldest units as tables. --csv: every
    matching unit, oldest first; --json: the inventory service's answer (a page of --limit units)."""
    if as_csv and as_json:
        fail("choose one of --csv and --json", 2)
    params = {"location": location, "sku": sku, "older_than_days": older_than_days, "manufacturer": manufacturer,
              "format": "csv" if as_csv else "json", "limit": None if as_csv else limit}
    with _answer("inventory", "/stock/aging", params, data_dir) as response:
        if as_csv or as_json:
            _copy(response, output)
            return
        report = json.loads(response.read())
    bands = ("0-30", "31-90", "91-180", "180+", "unknown")
    typer.echo(f"stock on hand by days in stock, as of {report['as_of']}")
    typer.echo(f"{'sku':<20} {'location':<16} " + " ".join(f"{b:>8}" for b in bands) + f" {'total':>8}")
    for row in report["bands"]:
        typer.echo(f"{row['sku'] or '-':<20} {row['location'] or '-':<16} "
                   + " ".join(f"{row[b]:>8}" for b in bands) + f" {row['total']:>8}")
    totals = report["totals"]
    typer.echo(f"{'total':<37} " + " ".join(f"{totals[b]:>8}" for b in bands) + f" {totals['total']:>8}")
    if report["returns"]:
        typer.echo("\nreturned stock per sku (units on hand that customers brought back)")
        typer.echo(f"{'sku':<20} {'units':>7} {'restocked':>10} {'awaiting':>9} {'held':>6} {'returns':>8} "
                   f"{'repeat':>7}")
        for row in report["returns"]:
            typer.echo(f"{row['sku'] or '-':<20} {row['returned_units']:>7} {row['restocked']:>10} "
                       f"{row['awaiting']:>9} {row['held']:>6} {row['returns']:>8} {row['returned_more_than_once']:>7}")
    units = report["units"]
    if units["items"]:
        typer.echo(f"\noldest {len(units['items'])} of {units['total']} units")
        for unit in units["items"]:
            days = "?" if unit["days_in_stock"] is None else unit["days_in_stock"]
            typer.echo(f"  {unit['manufacturer']}/{unit['serial']:<24} {unit['sku'] or '-':<14} "
                       f"{unit['location'] or '-':<14} {unit['status']:<12} {days:>5} days")
    else:
        typer.echo("no units on hand match")

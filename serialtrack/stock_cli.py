"""`serialtrack shipments show ID` and `serialtrack counts show ID`: a manifest and a stock count as
inventory reconciled them (docs/inventory.md). Both read inventory's HTTP API with the data dir's
token (or $SERIALTRACK_TOKEN); publishing a manifest or a count is `serialtrack publish
shipment.dispatched|stock.counted`.

Only typer is imported at module level (serialtrack/cli.py registers the commands).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from .options import DataDir, JsonFlag, fail

shipments_app = typer.Typer(help="Shipment manifests reconciled against receipts (expected, received, missing, "
                                 "unexpected, diverted).", no_args_is_help=True)
counts_app = typer.Typer(help="Stock counts reconciled against what inventory expected (matched, missing, "
                              "unexpected).", no_args_is_help=True)

Limit = Annotated[int, typer.Option(min=1, max=1000, help="Units listed per list (the totals count them all)")]


def _inventory_get(data_dir: Path | None, path: str, params: dict | None = None, what: str = "") -> Any:
    """GET inventory ``path``: the response; one line and an exit code on any failure."""
    import httpx
    from pydantic import ValidationError

    from shared.envelope import describe_validation_error
    from shared.settings import Settings
    from shared.tokens import client_headers

    try:
        settings = Settings(data_dir=data_dir) if data_dir else Settings()
    except ValidationError as exc:
        fail(f"bad setting in the environment: {describe_validation_error(exc)}", 2)
    url = settings.service_url("inventory") + path
    try:
        with httpx.Client(timeout=30, headers=client_headers(settings.data_dir)) as client:
            response = client.get(url, params=params)
    except httpx.HTTPError:
        fail(f"the inventory service is not reachable at {settings.service_url('inventory')}; "
             "is `serialtrack up` running?", 2)
    if response.status_code == 404:
        fail(f"{what} is not known to inventory", 1)
    if response.status_code in (401, 403):
        fail(f"inventory refused the request ({response.status_code}: {_detail(response)}); send an API token "
             "with SERIALTRACK_TOKEN=... (`serialtrack tokens create`)", 2)
    if response.status_code >= 400:
        fail(f"inventory answered {response.status_code}: {_detail(response)}", 2)
    return response


def _detail(response) -> str:
    try:
        return str(response.json().get("detail", ""))[:300]
    except ValueError:
        return response.text[:300]


@shipments_app.command("show")
def show_shipment(
    shipment_id: Annotated[str, typer.Argument(help="The manifest's shipment_id, as the shipper sent it")],
    limit: Limit = 20,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """One shipment: its counts (expected, received, missing, unexpected, diverted, outstanding) and units.

    Missing units are known once the deadline (expected arrival + grace) was checked.

    Exit code 1 when inventory does not know the shipment."""
    view = _inventory_get(data_dir, f"/shipments/{quote(shipment_id, safe='')}", {"limit": limit},
                          f"shipment {shipment_id}").json()
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    c = view["counts"]
    typer.echo(f"shipment {view['shipment_id']} ({view['manufacturer']}): {view['from_location']} -> "
               f"{view['to_location']}" + (f" (retailer {view['retailer']})" if view["retailer"] else ""))
    checked = "checked" if view["deadline_checked"] else "not passed yet"
    typer.echo(f"  due {view['expected_arrival']} + {view['grace_days']} days grace: deadline {view['deadline']} "
               f"({checked})")
    typer.echo(f"  expected {c['expected']}, received {c['received']} ({c['received_late']} late), missing "
               f"{c['missing']}, unexpected {c['unexpected']}, diverted {c['diverted']}, outstanding {c['outstanding']}")
    for outcome in ("missing", "unexpected", "diverted"):
        for unit in view[outcome]:
            where = f" at {unit['location']} on {unit['time']}" if unit["location"] else ""
            typer.echo(f"  {outcome:<10} {unit['manufacturer']}/{unit['serial']}{where}")


@counts_app.command("show")
def show_count(
    count_id: Annotated[str, typer.Argument(help="The count's count_id")],
    result: Annotated[str | None, typer.Option(help="Only units with this result: matched, missing or unexpected")] = None,
    limit: Limit = 50,
    csv_out: Annotated[bool, typer.Option("--csv", help="The whole report as CSV on stdout (every unit)")] = False,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """One stock count: its parts, totals (matched, missing, unexpected) and units.

    A count is judged once its final part and every part before it are in.

    Missing units are a report, not a change: a `unit.adjusted` (lost, found) stays the decision.

    Exit code 1 when inventory does not know the count."""
    if result is not None and result not in ("matched", "missing", "unexpected"):
        fail(f"--result {result!r}: use matched, missing or unexpected", 2)
    if csv_out:
        response = _inventory_get(data_dir, f"/counts/{quote(count_id, safe='')}/report.csv", None, f"count {count_id}")
        sys.stdout.write(response.text)
        return
    params: dict[str, Any] = {"limit": limit, **({"result": result} if result else {})}
    view = _inventory_get(data_dir, f"/counts/{quote(count_id, safe='')}", params, f"count {count_id}").json()
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    parts = ", ".join(str(p["part"]) + ("(final)" if p["final"] else "") for p in view["parts"]) or "none"
    typer.echo(f"count {view['count_id']} at {view['location']} on {view['counted_at']}: {view['status']} "
               f"(parts {parts})")
    if view["status"] == "open":
        expected = view["parts_expected"]
        typer.echo("  waiting for " + (f"parts up to {expected}" if expected else "the final part") +
                   ": nothing is judged before every part is in")
        return
    t = view["totals"]
    typer.echo(f"  matched {t['matched']}, missing {t['missing']}, unexpected {t['unexpected']}")
    for unit in view["units"]["items"]:
        if unit["result"] != "matched" or result == "matched":
            typer.echo(f"  {unit['result']:<10} {unit['manufacturer']}/{unit['serial']}  {unit['detail']}")

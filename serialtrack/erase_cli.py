"""`serialtrack erase CUSTOMER_ID`: erasure on request, and each service's report of it.

Publishes ``customer.erasure.requested`` as the operator (the only producer role that may), then
reads ``customer.erasure.completed`` as operator-reader until every installed service reported it
(or ``--wait`` runs out: the request stays on the bus, and a service that was down applies it when
it starts). Prints what each service changed; never prints the customer id back, only its pseudonym.

Only typer is imported at module level (serialtrack/cli.py registers the command).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from .options import DataDir, JsonFlag, fail


def erase(
    customer_id: Annotated[str, typer.Argument(help="The customer id to erase, as the tills and desks sent it")],
    receipt: Annotated[list[str] | None, typer.Option(
        "--receipt", help="A receipt of the customer's purchases (repeatable). Each service erases the receipts its "
                          "own rows tie to the customer anyway; name the ones only a till knows")] = None,
    note: Annotated[str, typer.Option(help="Why, or the ticket of the request (never the customer's identity)")] = "",
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for every service's report; 0: do not wait")] = 30.0,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Erase a customer: every service replaces the id (and the receipts of their purchases) by its pseudonym.

    Exits 1 when a service did not report within --wait (it applies the request when it runs)."""
    import redis
    from pydantic import ValidationError

    from services.registry import INSTALLED
    from shared.contracts import CustomerErasureCompleted, CustomerErasureRequested
    from shared.envelope import ENTRY_FIELD, describe_validation_error, make_event, new_event_id
    from shared.redact import mask_url
    from shared.redis_clients import sync_client
    from shared.settings import NoRedisConfigured, Settings

    from .publishing import default_source

    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    erasure_id = f"erasure-{new_event_id()}"
    try:
        request = CustomerErasureRequested(erasure_id=erasure_id, customer_id=customer_id,
                                           receipt_ids=receipt or [], note=note)
    except ValidationError as exc:
        fail(f"invalid request: {describe_validation_error(exc)}", 2)
    event = make_event(request, source=default_source())
    try:
        publisher = sync_client(settings.resolve_redis_url("operator"))
        reader = sync_client(settings.resolve_redis_url("operator-reader"))
    except NoRedisConfigured as exc:
        fail(str(exc), 2)
    completed = settings.streams.for_type(CustomerErasureCompleted.event_type)
    start = f"{int(time.time() * 1000) - 1}-0"  # reports come after the request: read from now on
    try:
        publisher.xadd(settings.streams.for_type(request.event_type),
                       {ENTRY_FIELD: event.envelope.model_dump_json(exclude_none=True)})
        reports: dict[str, dict] = {}
        deadline = time.monotonic() + wait
        cursor = start
        while set(reports) != set(INSTALLED):
            entries: Any = reader.xrange(completed, min=cursor, max="+", count=500)
            for entry_id, fields in entries:
                cursor = f"({entry_id.decode()}"
                data = json.loads(fields[ENTRY_FIELD.encode()]).get("data", {})
                if data.get("erasure_id") == erasure_id:
                    reports[data["service"]] = data
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    except redis.RedisError as exc:
        fail(f"Redis failed: {mask_url(str(exc))}", 2)
    finally:
        publisher.close()
        reader.close()
    missing = [s for s in INSTALLED if s not in reports]
    if as_json:
        typer.echo(json.dumps({"erasure_id": erasure_id, "reports": [reports[s] for s in INSTALLED if s in reports],
                               "missing": missing}, indent=2))
    else:
        pseudonym = next((r["pseudonym"] for r in reports.values()), None)
        typer.echo(f"erasure {erasure_id}" + (f": the customer is now {pseudonym}" if pseudonym else ""))
        for service in INSTALLED:
            report = reports.get(service)
            if report is None:
                typer.echo(f"  {service:<10} no report within {wait:g} s (it applies the request when it runs)")
                continue
            rows = ", ".join(f"{table} {n}" for table, n in sorted(report["rows"].items())) or "no rows"
            before = " (erased before)" if report["already_erased"] else ""
            typer.echo(f"  {service:<10} {rows}; {report['receipts']} receipts; "
                       f"{report['dead_letters']} dead letters rewritten{before}")
    if missing:
        raise typer.Exit(1)

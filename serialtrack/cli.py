"""The one command-line entry point: `serialtrack --help`."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from services.registry import INSTALLED
from shared.envelope import InvalidEvent
from shared.settings import NoRedisConfigured, Settings

from .asyncapi_cli import asyncapi as asyncapi_command  # typer only at import: the work is imported when run
from .keys_cli import keys_app  # likewise

app = typer.Typer(
    help="serialtrack: track every serialized unit (inventory, warranty, theft watch, recalls) "
         "through events on Redis Streams.\n\nStart with `serialtrack up`, then `serialtrack demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Where data lives (SQLite files, embedded Redis). Default: $SERIALTRACK_DATA_DIR or ./serialtrack-data")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def _settings(data_dir: Path | None = None) -> Settings:
    return Settings(data_dir=data_dir) if data_dir else Settings()


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _redis_url(settings: Settings) -> str:
    try:
        return settings.resolve_redis_url()
    except NoRedisConfigured as exc:
        _fail(str(exc))


@app.command()
def up(data_dir: DataDir = None) -> None:
    """Run the whole system here: an embedded Redis (unless REDIS_URL is set) and every service
    with its HTTP API. Data is kept in the data dir across restarts. Ctrl-C stops it cleanly."""
    from .runner import run_system

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run_system(_settings(data_dir), say=lambda line: out.print(line, highlight=False))
    except RuntimeError as exc:
        _fail(str(exc), 1)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(INSTALLED)}")],
    port: Annotated[Optional[int], typer.Option(help="HTTP port. Default: $<SERVICE>_PORT")] = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address. Default: $SERIALTRACK_HTTP_HOST")] = None,
    data_dir: DataDir = None,
) -> None:
    """Run one service: its consumers, its outbox relay and its HTTP read API (one process)."""
    import uvicorn

    from services.registry import load
    from shared.logs import configure_logging
    from shared.service import build_app
    from shared.tracing import configure_tracing

    settings = _settings(data_dir)
    configure_logging(service, settings.log_format)
    configure_tracing(service)
    try:
        definition = load(service)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    _redis_url(settings)
    application = build_app(definition, settings)
    uvicorn.run(application, host=host or settings.http_host, port=port or settings.port(service),
                log_level="warning", timeout_graceful_shutdown=40,
                log_config=None)  # uvicorn's lines go through our handler and format (shared/logs.py)


@app.command()
def publish(
    event_type: Annotated[Optional[str], typer.Argument(metavar="TYPE", help="Event type, e.g. unit.sold")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="The event's data as a JSON object")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="JSONL file, one event per line ('-' = stdin)")] = None,
    source: Annotated[Optional[str], typer.Option(help="Envelope source. Default: cli/<user>@<host>")] = None,
    event_id: Annotated[Optional[str], typer.Option("--id", help="Envelope id (reuse it to retry safely)")] = None,
    time: Annotated[Optional[str], typer.Option(help="When it happened, ISO 8601 with zone. Default: now")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Publish events. Either TYPE --data '{...}', or --file events.jsonl where each line is
    {"type": ..., "data": {...}} or a complete envelope (its id, source and time are kept, so a
    feed can be replayed). Bad lines are reported with their line number; good lines are still
    published. Exit code 1 if any line was bad."""
    from shared.publishing import publish_raw

    from .publishing import build_envelope, default_source, read_events

    settings = _settings(data_dir)
    source = source or default_source()
    if (event_type is None) == (file is None):
        _fail("give either TYPE --data JSON, or --file FILE (see --help)")
    if file is not None and (data or event_id or time):
        _fail("--data, --id and --time go with TYPE, not with --file (put them in the file's lines)")
    redis_url = _redis_url(settings)

    if event_type is not None:
        if data is None:
            _fail("TYPE needs --data '{...}' with the event's fields")
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            _fail(f"--data is not valid JSON: {exc}")
        try:
            envelope = build_envelope(event_type, parsed, source=source, id=event_id, time=time)
        except InvalidEvent as exc:
            _fail(exc.detail)
        entry_ids = asyncio.run(_publish_pairs(redis_url, settings, [envelope]))
        if as_json:
            out.print_json(data={"published": 1, "failed": 0, "events": [
                {"id": envelope.id, "source": envelope.source, "type": envelope.type, "entry_id": entry_ids[0]}],
                "errors": []})
        else:
            out.print(f"published {envelope.type} id={envelope.id} (entry {entry_ids[0]})", highlight=False)
        return

    handle = sys.stdin if str(file) == "-" else None
    if handle is None:
        if not file.exists():
            _fail(f"no such file: {file}")
        handle = file.open(encoding="utf-8", errors="replace")
    size = file.stat().st_size if str(file) != "-" else None
    published: list[dict] = []
    errors: list[dict] = []
    batch: list = []
    bytes_read = [0]

    def counted(lines):
        for line in lines:
            bytes_read[0] += len(line.encode("utf-8", "replace"))
            yield line

    async def run() -> None:
        import redis.asyncio as aioredis

        client = aioredis.from_url(redis_url)
        try:
            progress = Progress(TextColumn("publishing"), BarColumn(), TransferSpeedColumn(),
                                TimeRemainingColumn(), console=err, disable=as_json or not err.is_terminal)
            with progress:
                task = progress.add_task("file", total=size)
                for result in read_events(counted(handle), source=source):
                    if result.error:
                        errors.append({"line": result.line, "error": result.error})
                    else:
                        batch.append(result)
                    if len(batch) >= 1000:
                        await flush(client)
                    progress.update(task, completed=bytes_read[0])
                await flush(client)
                progress.update(task, completed=bytes_read[0])
        finally:
            await client.aclose()

    async def flush(client) -> None:
        if not batch:
            return
        ids = await publish_raw(client, [(settings.streams.for_type(r.envelope.type),
                                          r.envelope.model_dump_json(exclude_none=True)) for r in batch])
        published.extend({"line": r.line, "id": r.envelope.id, "source": r.envelope.source,
                          "type": r.envelope.type, "entry_id": i} for r, i in zip(batch, ids, strict=True))
        batch.clear()

    try:
        asyncio.run(run())
    finally:
        if handle is not sys.stdin:
            handle.close()
    if as_json:
        out.print_json(data={"published": len(published), "failed": len(errors), "events": published,
                             "errors": errors})
    else:
        if len(published) <= 50:
            for row in published:
                out.print(f"line {row['line']}: published {row['type']} id={row['id']}", highlight=False)
        for row in errors:
            err.print(f"line {row['line']}: [red]rejected[/red]: {row['error']}", highlight=False)
        out.print(f"{len(published)} published, {len(errors)} rejected", highlight=False)
    if errors:
        raise typer.Exit(1)


async def _publish_pairs(redis_url: str, settings: Settings, envelopes) -> list[str]:
    import redis.asyncio as aioredis

    from shared.publishing import publish as publish_envelopes

    client = aioredis.from_url(redis_url)
    try:
        return await publish_envelopes(client, settings.streams, envelopes)
    finally:
        await client.aclose()


def fetch_unit(settings: Settings, manufacturer: str, serial: str) -> dict:
    """Every installed service's view of one unit: {service: document | None (unknown)}."""
    from services.registry import INSTALLED, load

    report: dict = {}
    for name in INSTALLED:
        url = settings.service_url(name) + load(name).lookup_path.format(manufacturer=manufacturer, serial=serial)
        try:
            response = httpx.get(url, timeout=10)
        except httpx.HTTPError:
            raise ConnectionError(f"the {name} service is not reachable at {settings.service_url(name)}; "
                                  "is `serialtrack up` running?") from None
        if response.status_code == 404:
            report[name] = None
        elif response.status_code == 400:
            raise ValueError(response.json().get("detail", response.text))
        else:
            response.raise_for_status()
            report[name] = response.json()
    return report


@app.command()
def lookup(
    manufacturer: Annotated[str, typer.Argument(help="e.g. acme")],
    serial: Annotated[str, typer.Argument(help="e.g. SN0001")],
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Everything the system knows about one unit, from every running service."""
    from shared.identity import IdentityError, normalize_manufacturer, normalize_serial

    try:
        manufacturer, serial = normalize_manufacturer(manufacturer), normalize_serial(serial)
    except IdentityError as exc:
        _fail(str(exc))
    try:
        report = fetch_unit(_settings(data_dir), manufacturer, serial)
    except (ConnectionError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        out.print_json(data={"manufacturer": manufacturer, "serial": serial, **report})
        if all(v is None for v in report.values()):
            raise typer.Exit(1)
        return
    if all(v is None for v in report.values()):
        err.print(f"{manufacturer}/{serial} is not known to any service", highlight=False)
        raise typer.Exit(1)
    if report.get("inventory"):
        _print_inventory(report["inventory"])
    if report.get("warranty"):
        _print_warranty(report["warranty"])
    if report.get("theft"):
        _print_theft(report["theft"])
    if report.get("recalls"):
        _print_recalls(report["recalls"])


def _print_inventory(unit: dict) -> None:
    flags = []
    if unit["stolen"]:
        flags.append(f"[red]REPORTED STOLEN[/red] ({', '.join(unit['theft_cases'])})")
    if unit["recalls"]:
        flags.append(f"[yellow]recalls[/yellow] {', '.join(unit['recalls'])}")
    out.print(f"[bold]{unit['manufacturer']}/{unit['serial']}[/bold]  status [bold]{unit['status']}[/bold] "
              f"({unit['epcis_disposition']})  at {unit['location'] or '-'}  sku {unit['sku'] or '-'}  "
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
        table.add_row(h["time"], h["type"], where, details)
    out.print(table)
    if unit["anomalies"]:
        anomalies = Table("time", "kind", "status", "detail", title="anomalies", title_justify="left")
        for a in unit["anomalies"]:
            anomalies.add_row(a["event_time"], a["kind"], a["status"], a["detail"])
        out.print(anomalies)


def _print_warranty(warranty: dict) -> None:
    coverage, owner, sale = warranty.get("coverage"), warranty.get("owner"), warranty.get("sale")
    line = f"warranty: [bold]{warranty['status']}[/bold]"
    if coverage:
        line += (f", policy {coverage['policy_id']} ({coverage['coverage_days']} days) "
                 f"{coverage['starts'][:10]} to {coverage['ends'][:10]}, {coverage['status']}")
    if owner:
        line += f", owner {owner['customer_id']} (via {owner['via']})"
    if sale:
        line += f", sold {sale['sold_at'][:10]} at {sale['location']} on receipt {sale['receipt_id']}"
    out.print(line, highlight=False)
    if warranty.get("requests"):
        requests = Table("at", "request", "reference", "decision", "reasons", title="claims and returns",
                         title_justify="left")
        for r in warranty["requests"]:
            requests.add_row(r["at"], r["kind"], r["reference"], f"{r['status']} (v{r['version']})",
                             ", ".join(r["reasons"]))
        out.print(requests)
    for recall in warranty.get("open_recalls", []):
        out.print(f"  [yellow]open recall[/yellow] {recall['recall_id']}: {recall['hazard']} "
                  f"(remedy: {recall['remedy']}, owner notice: {recall['notice'] or 'pending'})", highlight=False)


def _print_theft(stolen: dict) -> None:
    if stolen["stolen"]:
        out.print(f"theft watch: [red]REPORTED STOLEN[/red], open cases {', '.join(stolen['open_cases'])}",
                  highlight=False)
    else:
        out.print("theft watch: not reported stolen"
                  + (f" ({len(stolen['reports'])} closed report(s))" if stolen["reports"] else ""), highlight=False)
    if stolen["alerts"]:
        alerts = Table("seen at", "kind", "case", "where", "seen by", "status", title="theft alerts",
                       title_justify="left")
        for a in stolen["alerts"]:
            alerts.add_row(a["seen_at"], a["kind"], f"{a['agency']}:{a['case_number']}", a.get("location") or "",
                           a.get("terminal_id") or a.get("event_source") or "", a["status"])
        out.print(alerts)


def _print_recalls(recalls: dict) -> None:
    if not recalls["recalls"]:
        out.print("recalls: none", highlight=False)
        return
    table = Table("recall", "open", "hazard", "remedy", "this unit", title="recalls", title_justify="left")
    for r in recalls["recalls"]:
        table.add_row(r["recall_id"], "yes" if r["open"] else "closed", r["hazard"] or "", r["remedy"] or "",
                      r["status"])
    out.print(table)


@app.command()
def demo(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Publish a short realistic story against a running system and show what each service did."""
    from .demo import run_demo

    settings = _settings(data_dir)
    redis_url = _redis_url(settings)
    try:
        result = run_demo(settings, redis_url, say=(lambda _line: None) if as_json else
                          (lambda line: out.print(line, highlight=False)))
    except (ConnectionError, TimeoutError) as exc:
        _fail(str(exc))
    if as_json:
        out.print_json(data=result)


@app.command()
def deadletters(
    service: Annotated[str, typer.Option(help="Whose dead letters")] = "inventory",
    limit: Annotated[int, typer.Option(min=1, help="Newest N entries")] = 20,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Entries a service could not apply, newest first, with the reason and the original entry."""
    import redis

    settings = _settings(data_dir)
    client = redis.Redis.from_url(_redis_url(settings), decode_responses=True)
    try:
        stream = settings.streams.dead_letters(service)
        rows = [{"dead_letter_id": i, **fields} for i, fields in client.xrevrange(stream, count=limit)]
        total = client.xlen(stream)
    except redis.RedisError as exc:
        _fail(f"cannot read dead letters: {exc}")
    finally:
        client.close()
    if as_json:
        out.print_json(data={"service": service, "total": total, "entries": rows})
        return
    out.print(f"{total} dead-lettered entries for {service}", highlight=False)
    for row in rows:
        out.print(f"[bold]{row['failed_at']}[/bold] {row['stream']} {row['entry_id']} "
                  f"[red]{row['reason']}[/red]: {row['error']}", highlight=False)
        out.print(f"  original: {row['original'][:300]}", highlight=False)


@app.command()
def migrate(
    service: Annotated[Optional[str], typer.Argument(help=f"One of: {', '.join(INSTALLED)}. Default: every service")] = None,
    to: Annotated[Optional[str], typer.Option(
        "--to", help="Target revision (e.g. inventory_0002); an older one downgrades. Default: this build's heads")] = None,
    check: Annotated[bool, typer.Option("--check", help="Change nothing: exit 1 if a database is behind")] = False,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Bring each service's database to this build's schema, keeping every row.

    Services also migrate at start (unless SERIALTRACK_MIGRATE=false); 0.1.0 databases are upgraded in place."""
    from services.registry import load
    from shared.schema import SchemaError, state
    from shared.schema import migrate as migrate_database
    from shared.store import make_engine

    if service is not None and service not in INSTALLED:
        _fail(f"unknown service {service!r}; this build has: {', '.join(INSTALLED)}")
    if to is not None and (service is None or check):
        _fail("--to needs one SERVICE, and no --check")
    settings = _settings(data_dir)
    reports, behind = [], False
    for name in [service] if service else INSTALLED:
        migrations = load(name).migrations
        engine = make_engine(settings.database_url(name))
        try:
            if check:
                now = state(engine, migrations)
                behind = behind or not now.up_to_date
                reports.append(now.as_dict())
            else:
                before, after = migrate_database(engine, migrations, to)
                reports.append({"service": name, "from": list(before.current), "to": list(after.current),
                                "legacy_0_1_0": before.legacy, "changed": before.current != after.current})
        except SchemaError as exc:
            _fail(str(exc), 1)
        except Exception as exc:  # noqa: BLE001 - an unreachable or refused database: one line, not a traceback
            _fail(f"{name}: cannot migrate {engine.url.render_as_string(hide_password=True)}: {exc}".splitlines()[0], 1)
        finally:
            engine.dispose()
    if as_json:
        out.print_json(data={"services": reports})
    else:
        for report in reports:
            if check:
                verdict = "up to date" if report["up_to_date"] else f"behind: needs {', '.join(report['heads'])}"
                at = ", ".join(report["current"]) or ("release 0.1.0" if report["legacy_0_1_0"] else "empty")
                out.print(f"{report['service']}: at {at}; {verdict}", highlight=False)
            elif report["changed"]:
                origin = ", ".join(report["from"]) or ("release 0.1.0" if report["legacy_0_1_0"] else "empty")
                out.print(f"{report['service']}: {origin} -> {', '.join(report['to'])}", highlight=False)
            else:
                out.print(f"{report['service']}: already at {', '.join(report['to'])}", highlight=False)
    if behind:
        raise typer.Exit(1)


@app.command()
def status(
    as_json: JsonFlag = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every --interval seconds until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")] = 2.0,
    max_lag_seconds: Annotated[float, typer.Option(help="Unhealthy when a group's oldest undelivered entry is older.")] = 60.0,
    max_pending_idle_seconds: Annotated[float, typer.Option(
        help="Unhealthy when an entry stays pending this long without redelivery.")] = 300.0,
    max_outbox_age_seconds: Annotated[float, typer.Option(help="Unhealthy when an outbox row is older.")] = 60.0,
    data_dir: DataDir = None,
) -> None:
    """The whole system on one screen: each service's health, per stream its length and each group's
    lag and pending entries, dead letters, outbox backlog, Redis memory. Exit code 1 when something
    is unhealthy (a service down, a group behind, an entry stuck pending, an outbox stuck)."""
    from .status import Thresholds, run

    settings = _settings(data_dir)
    thresholds = Thresholds(max_lag_seconds, max_pending_idle_seconds, max_outbox_age_seconds)
    say_json = (lambda report: print(json.dumps(report), flush=True)) if watch else (
        lambda report: out.print_json(data=report))
    raise typer.Exit(run(settings, _redis_url(settings), thresholds, as_json, watch, interval, say_json, out))


app.add_typer(keys_app, name="keys")
app.command("asyncapi")(asyncapi_command)


theft_app = typer.Typer(help="The theft-watch service's tools (stolen-property feeds).", no_args_is_help=True)
app.add_typer(theft_app, name="theft")


@theft_app.command("import")
def theft_import(
    file: Annotated[Path, typer.Argument(help="CSV (header: agency, case_number, manufacturer, serial, ...) "
                                              "or JSONL feed; see docs/theft.md")],
    source: Annotated[str, typer.Option(help="Envelope source: the feed's publisher")] = "feed/import",
    file_format: Annotated[Optional[str], typer.Option("--format", help="csv or jsonl (default: detected)")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Import a law-enforcement stolen-property feed as theft.reported / theft.recovered events.
    Bad lines are reported with their line number; good lines are still published. Importing the
    same feed again is harmless (event ids come from each line's content). Exit code 1 if any
    line was bad."""
    import redis.asyncio as aioredis

    from services.theft.feed_import import FeedError, import_feed
    from shared.publishing import publish as publish_envelopes

    if file_format not in (None, "csv", "jsonl"):
        _fail("--format must be csv or jsonl")
    settings = _settings(data_dir)
    redis_url = _redis_url(settings)

    async def run():
        client = aioredis.from_url(redis_url)
        progress = Progress(TextColumn("importing"), BarColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                            console=err, disable=as_json or not err.is_terminal)
        try:
            with progress:
                task = progress.add_task("feed", total=None)
                return await import_feed(
                    file, lambda envelopes: publish_envelopes(client, settings.streams, envelopes),
                    lambda done, total: progress.update(task, completed=done, total=total),
                    source=source, format=file_format)
        finally:
            await client.aclose()

    try:
        report = asyncio.run(run())
    except FeedError as exc:
        _fail(str(exc))
    if as_json:
        out.print_json(data=report.to_dict())
    else:
        for line in report.errors:
            err.print(f"line {line.line}: [red]rejected[/red]: {line.error}", highlight=False)
        out.print(f"{report.published} published, {report.rejected} rejected, {report.duplicates} duplicate lines",
                  highlight=False)
    if report.rejected:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

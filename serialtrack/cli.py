"""The one command-line entry point: `serialtrack --help`.

Only typer and the standard library are imported here at start: `--help` answers at once, and
each command imports what it needs (pydantic contracts and redis for publish; FastAPI, FastStream
and the services only for up and serve).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from services.registry import INSTALLED

from .options import DataDir, JsonFlag, describe_failure, fail, say_failure

if TYPE_CHECKING:
    from shared.settings import Settings

    from .publishing import FileReport

from .archive_cli import archive as archive_command  # likewise
from .archive_cli import rebuild as rebuild_command  # likewise
from .asyncapi_cli import asyncapi as asyncapi_command  # typer only at import: the work is imported when run
from .credentials_cli import credentials_app  # likewise
from .erase_cli import erase as erase_command  # likewise
from .keys_cli import keys_app  # likewise
from .reports_cli import sell_through as sell_through_command  # likewise
from .reports_cli import stock_aging as stock_aging_command  # likewise
from .stock_cli import counts_app, shipments_app  # likewise
from .theft_cli import alerts as theft_alerts_command  # likewise
from .theft_cli import check as theft_check_command  # likewise
from .tokens_cli import tokens_app  # likewise

app = typer.Typer(
    help="serialtrack: track every serialized unit (inventory, warranty, theft watch, recalls) "
         "through events on Redis Streams.\n\nStart with `serialtrack up`, then `serialtrack demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SignWith = Annotated[str | None, typer.Option(
    "--sign-with", metavar="KEY", help="Sign with this key (a name from `serialtrack keys list`, or a private key "
                                       "file). Theft, recall, policy and owner events must be signed.")]


def say(line: str, *, err: bool = False) -> None:
    """One line of output. Plain click output, not rich: rich costs a tenth of a second to import,
    and only lookup's tables and the progress bar need it."""
    typer.echo(line, err=err)


def print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def red(text: str) -> str:
    return typer.style(text, fg="red")  # click drops the colour when not writing to a terminal


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(message, code)


def wide_console():
    """A rich console for tables. Piped or redirected, rich would assume 80 columns and cut table
    cells (times, case numbers): the reader of a file or a pager can scroll instead."""
    from rich.console import Console

    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console.width = 1000
    return console


def _settings(data_dir: Path | None = None) -> Settings:
    from pydantic import ValidationError

    from shared.envelope import describe_validation_error
    from shared.settings import Settings

    try:
        return Settings(data_dir=data_dir) if data_dir else Settings()
    except ValidationError as exc:
        _fail(f"bad setting in the environment: {describe_validation_error(exc)}")


CredentialOption = Annotated[Path | None, typer.Option(
    "--credential", help="A file holding the redis:// URL to publish as (from `serialtrack credentials create`). "
                         "Default: $REDIS_URL, else the operator's credential of the running `serialtrack up`")]


def _redis_url(settings: Settings, user: str = "operator", credential: Path | None = None) -> str:
    """--credential FILE, else REDIS_URL, else ``user``'s credential on the embedded Redis (the
    operator publishes; status and deadletters read as operator-reader)."""
    from shared.settings import NoRedisConfigured

    if credential is not None:
        try:
            return credential.read_text().strip()
        except OSError as exc:
            _fail(f"cannot read the credential {credential}: {exc.strerror}")
    try:
        return settings.resolve_redis_url(user)
    except NoRedisConfigured as exc:
        _fail(str(exc))


def _redis_client(settings: Settings, user: str = "operator", credential: Path | None = None):
    import redis

    from shared.redis_clients import sync_client, user_of

    url = _redis_url(settings, user, credential)
    try:
        client = sync_client(url)
        client.ping()
    except redis.AuthenticationError as exc:  # WRONGPASS: a revoked user, or a wrong password
        _fail(f"Redis refused the credential of user {user_of(url) or 'default'} ({exc}); it was revoked, or "
              f"its password is wrong")
    except (redis.RedisError, ValueError) as exc:
        from shared.redact import mask_url

        _fail(f"cannot reach Redis at {mask_url(url)}: {exc}; is `serialtrack up` running?")
    return client


def _publisher(client, settings: Settings):
    """The ledger needs commands a producer credential does not have (shared/acl.py): plain XADD for those."""
    from shared.acl import role_of
    from shared.roles import OPERATOR

    from .publishing import LedgerPublisher

    role = role_of(client.get_connection_kwargs().get("username") or "")
    return LedgerPublisher(client, settings.streams, ledger=role in (None, OPERATOR))


@app.command()
def up(data_dir: DataDir = None) -> None:
    """Run the whole system here: embedded Redis and every service.

    Redis is embedded unless REDIS_URL is set; every service serves its HTTP API. Data is kept in
    the data dir across restarts. Ctrl-C stops it cleanly."""
    import logging

    from .runner import run_system

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run_system(_settings(data_dir), say=say)
    except RuntimeError as exc:
        _fail(str(exc), 1)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(INSTALLED)}")],
    port: Annotated[int | None, typer.Option(help="HTTP port. Default: $<SERVICE>_PORT")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address. Default: $SERIALTRACK_HTTP_HOST")] = None,
    data_dir: DataDir = None,
) -> None:
    """Run one service: its consumers, outbox relay and HTTP read API."""
    if service not in INSTALLED:
        _fail(f"unknown service {service!r}; one of: {', '.join(INSTALLED)}")
    import uvicorn

    from services.registry import load
    from shared.logs import configure_logging
    from shared.service import build_app
    from shared.tracing import configure_tracing

    settings = _settings(data_dir)
    configure_logging(service, settings.log_format)
    configure_tracing(service)
    _redis_url(settings, f"{service}-reader")  # one line, not a traceback, when there is no Redis
    application = build_app(load(service), settings)
    uvicorn.run(application, host=host or settings.http_host, port=port or settings.port(service),
                log_level="warning", timeout_graceful_shutdown=40,
                log_config=None)  # uvicorn's lines go through our handler and format (shared/logs.py)


@app.command()
def console(
    port: Annotated[int | None, typer.Option(help="HTTP port. Default: $SERIALTRACK_CONSOLE_PORT or 8000")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address. Default: $SERIALTRACK_HTTP_HOST")] = None,
    link: Annotated[bool, typer.Option("--link", help="Print a new one-time sign-in link (admin, 15 minutes) for "
                                                      "the console of `serialtrack up` on this data dir, and exit.")]
    = False,
    data_dir: DataDir = None,
) -> None:
    """The web console: unit lookup, customers, recalls, theft desk, stock, claims queue, system.

    A client of the services' HTTP APIs (<SERVICE>_URL, else their ports here). `serialtrack up`
    runs it for you and prints its address with a one-time sign-in link."""
    from .console.signin import CONSOLE_URL_FILE, issue_code

    settings = _settings(data_dir)
    if link:
        recorded = settings.data_dir / CONSOLE_URL_FILE
        url = recorded.read_text().strip() if recorded.is_file() else f"http://127.0.0.1:{port or settings.console_port}"
        say(f"{url}/signin?code={issue_code(settings.data_dir)}")
        return
    import uvicorn

    from .console.app import create_app

    uvicorn.run(create_app(settings), host=host or settings.http_host, port=port or settings.console_port,
                log_level="warning", timeout_graceful_shutdown=5)


@app.command()
def publish(
    event_type: Annotated[str | None, typer.Argument(metavar="TYPE", help="Event type, e.g. unit.sold; see `serialtrack types`")] = None,
    data: Annotated[str | None, typer.Option("--data", help="The event's data as a JSON object")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="JSONL file, one event per line ('-' = stdin)")] = None,
    source: Annotated[str | None, typer.Option(help="Envelope source. Default: cli/<user>@<host>")] = None,
    event_id: Annotated[str | None, typer.Option("--id", help="Envelope id (reuse it to retry safely)")] = None,
    time: Annotated[str | None, typer.Option(help="When it happened, ISO 8601 with zone. Default: now")] = None,
    sign_with: SignWith = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    credential: CredentialOption = None,
) -> None:
    """Publish one event, or every line of a JSONL file.

    Either TYPE --data '{...}', or --file events.jsonl where each line is {"type": ..., "data":
    {...}} or a complete envelope (its id, source and time are kept, so a feed can be replayed).
    A {"type", "data"} line without an "id" gets one derived from its content, so publishing a
    corrected file again reports the lines published before instead of publishing them twice.
    Bad lines are reported with their line number; good lines are still published. Exit code 1 if
    any line was bad."""
    from .publishing import default_source

    if (event_type is None) == (file is None):
        _fail("give either TYPE --data JSON, or --file FILE (see --help)")
    if file is not None and (data or event_id or time):
        _fail("--data, --id and --time go with TYPE, not with --file (put them in the file's lines)")
    source = source or default_source()
    if event_type is not None:
        _publish_one(event_type, data, source=source, event_id=event_id, time=time, as_json=as_json,
                     data_dir=data_dir, sign_with=sign_with, credential=credential)
        return

    from .publishing import jsonl_lines

    assert file is not None  # TYPE or --file: one of them, checked above
    if str(file) == "-":
        report = _publish_file(jsonl_lines(sys.stdin, source=source), path="-", format="jsonl", handle=None,
                               data_dir=data_dir, as_json=as_json, sign_with=sign_with, credential=credential)
    else:
        with _open_input(file) as handle:
            report = _publish_file(jsonl_lines(handle, source=source), path=str(file), format="jsonl",
                                   handle=handle, data_dir=data_dir, as_json=as_json, sign_with=sign_with,
                                   credential=credential)
    _print_report(report, as_json)


@app.command()
def void(
    voided_source: Annotated[str, typer.Argument(metavar="SOURCE", help="The source of the event to withdraw")],
    voided_id: Annotated[str, typer.Argument(metavar="ID", help="Its id")],
    voided_type: Annotated[str, typer.Option("--type", help="Its type: unit.received, unit.transferred, unit.sold, "
                                                         "unit.returned or unit.adjusted")],
    manufacturer: Annotated[str, typer.Option(help="The manufacturer of its units")],
    reason: Annotated[str, typer.Option(help="Why it is withdrawn (kept in every history)")],
    corrected: Annotated[str | None, typer.Option(
        "--corrected", help="The data of the event that should have been published instead (JSON, same type): "
                            "published with the void, applied as a normal event")] = None,
    corrected_id: Annotated[str | None, typer.Option("--corrected-id", help="Its id. Default: derived from "
                                                                             "the void's")] = None,
    corrected_time: Annotated[str | None, typer.Option("--corrected-time", help="When it happened, ISO 8601 "
                                                                                 "with zone. Default: now")] = None,
    source: Annotated[str | None, typer.Option(help="The void's source. Default: cli/<user>@<host>")] = None,
    event_id: Annotated[str | None, typer.Option("--id", help="The void's id (reuse it to retry safely)")] = None,
    sign_with: Annotated[str | None, typer.Option(
        "--sign-with", metavar="KEY", help="Sign with this key: its role must be one that may publish the voided "
                                          "type, its source prefix must cover SOURCE. Default: the data dir's "
                                          "operator key")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    credential: CredentialOption = None,
) -> None:
    """Withdraw an event published by mistake (event.voided; EPCIS errorDeclaration).

    Every service folds the event's units again without it (state, anomalies, alerts, decisions,
    campaign counts) and keeps it in the history, marked. A void of an event not applied yet waits
    for it; a second void of the same event changes nothing. Example, a sale scanned on the wrong
    serial, with the right one:

      serialtrack void pos/store-12/till-3 till3-000123 --type unit.sold --manufacturer acme
        --reason "scanned the wrong box" --corrected '{"manufacturer": "acme", "serial": "SN000124", ...}'
    """
    from .publishing import default_source

    data: dict = {"manufacturer": manufacturer, "voided_source": voided_source, "voided_id": voided_id,
                  "voided_type": voided_type, "reason": reason}
    if corrected is not None:
        try:
            fix = json.loads(corrected)
        except ValueError as exc:
            _fail(f"--corrected is not valid JSON: {exc}")
        data["corrected"] = {"type": voided_type, "data": fix,
                             **({"id": corrected_id} if corrected_id else {}),
                             **({"time": corrected_time} if corrected_time else {})}
    elif corrected_id or corrected_time:
        _fail("--corrected-id and --corrected-time go with --corrected")
    if sign_with is None:
        from shared.signing import OPERATOR_KEY, operator_signer

        operator_signer(_settings(data_dir).data_dir)  # made on first use
        sign_with = OPERATOR_KEY
    _publish_one("event.voided", json.dumps(data), source=source or default_source(), event_id=event_id, time=None,
                 as_json=as_json, data_dir=data_dir, sign_with=sign_with, credential=credential)


def _publish_one(event_type: str, data: str | None, *, source: str, event_id: str | None, time: str | None,
                 as_json: bool, data_dir: Path | None, sign_with: str | None,
                 credential: Path | None = None) -> None:
    import redis

    from shared.envelope import InvalidEvent

    from .publishing import FileReport, build_envelope, publish_lines

    if data is None:
        _fail("TYPE needs --data '{...}' with the event's fields (`serialtrack types TYPE` lists them)")
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        _fail(f"--data is not valid JSON: {exc}")
    try:
        envelope = build_envelope(event_type, parsed, source=source, id=event_id, time=time)
    except InvalidEvent as exc:
        _fail(exc.detail)
    settings = _settings(data_dir)
    body_of = _entry_bodies(settings, sign_with)
    try:
        body_of(envelope)  # refused before Redis is looked up: unsigned where it must be signed, ...
    except InvalidEvent as exc:
        _fail(exc.detail)
    client = _redis_client(settings, credential=credential)
    try:
        report = publish_lines([(1, envelope)], _publisher(client, settings), report=FileReport("--data", "json"),
                               body_of=body_of)
    except redis.RedisError as exc:
        _fail(f"{describe_failure(exc)[0]}; nothing was published", 1)
    finally:
        client.close()
    [line] = report.lines
    if line.status == "rejected":  # Redis refused it: the credential's role may not publish this type
        if as_json:
            print_json(report.to_dict())
        _fail(f"{event_type} not published: {line.error}", 1)
    if as_json:
        print_json(report.to_dict())
        return
    if line.status == "published":
        say(f"published {line.type} id={line.id} (entry {line.entry_id})")
    else:
        say(f"already published: {line.type} id={line.id} from {line.source} is entry {line.entry_id}; "
            "not published again")


class _open_input:
    """A file to publish, opened for reading (undecodable bytes show as U+FFFD in the report)."""

    def __init__(self, path: Path):
        if not path.is_file():
            _fail(f"no such file: {path}")
        # utf-8-sig: spreadsheets save CSV with a byte-order mark. newline="": the csv module
        # needs it for quoted line breaks; JSON lines do not care.
        self.handle = path.open(encoding="utf-8-sig", errors="replace", newline="")

    def __enter__(self):
        return self.handle

    def __exit__(self, *exc_info) -> None:
        self.handle.close()


def _entry_bodies(settings: Settings, sign_with: str | None):
    """How envelopes are written: signed with the --sign-with key, or refused where they must be."""
    from .publishing import entry_bodies

    if sign_with is None:
        return entry_bodies(None, require_all=settings.require_signatures)
    from shared.signing import SigningError, load_signer

    try:
        return entry_bodies(load_signer(sign_with, settings.data_dir), require_all=settings.require_signatures)
    except SigningError as exc:
        _fail(f"--sign-with: {exc}")


def _publish_file(parsed, *, path: str, format: str, handle, data_dir: Path | None, as_json: bool,
                  sign_with: str | None = None, label: str = "publishing", credential: Path | None = None) -> FileReport:
    """The one path of every file the CLI publishes: validated lines -> batched publish through
    the ledger, with a progress bar on a terminal -> the per-line report."""
    import redis

    from .publishing import FileReport, publish_lines

    settings = _settings(data_dir)
    body_of = _entry_bodies(settings, sign_with)
    client = _redis_client(settings, credential=credential)
    total = Path(path).stat().st_size if handle is not None else None
    report = FileReport(path, format)
    try:
        with _progress(label, total, enabled=not as_json and sys.stderr.isatty()) as advance:
            publish_lines(parsed, _publisher(client, settings), report=report, body_of=body_of,
                          on_batch=lambda: advance(_position(handle)))
    except redis.RedisError as exc:
        done = report.count("published")
        _fail(f"{describe_failure(exc)[0]}, after {done} line(s) were published; publishing the file again "
              "publishes only the rest")
    finally:
        client.close()
    return report


class _progress:
    """A progress bar over a file's bytes on stderr; nothing when disabled (not a terminal, --json)."""

    def __init__(self, label: str, total: int | None, enabled: bool):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

            self.bar = Progress(TextColumn(label), BarColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True))
            self.task = self.bar.add_task(label, total=total)

    def __enter__(self):
        if self.bar is None:
            return lambda _done: None
        self.bar.__enter__()
        return lambda done: self.bar.update(self.task, completed=done)

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc_info)


def _position(handle) -> int:
    try:
        return handle.buffer.tell()
    except (OSError, AttributeError, ValueError):
        return 0


def _print_report(report: FileReport, as_json: bool) -> None:
    if as_json:
        print_json(report.to_dict())
    else:
        published = [r for r in report.lines if r.status == "published"]
        if len(published) <= 50:
            for r in published:
                say(f"line {r.line}: published {r.type} id={r.id}")
        for r in report.lines:
            if r.status == "rejected":
                say(f"line {r.line}: {red('rejected')}: {r.error}", err=True)
            elif r.status == "duplicate":
                say(f"line {r.line}: duplicate: {r.error} (same source and id), not published", err=True)
        already = report.count("already_published")
        say(f"{len(published)} published, {already} already published, "
            f"{report.count('rejected')} rejected, {report.count('duplicate')} duplicate lines")
        if already:
            say(f"({already} line(s) carry the source and id of events published before; the "
                "services have them already, so they were not published again)")
    if report.count("rejected"):
        raise typer.Exit(1)


@app.command("types")
def types_(
    event_type: Annotated[str | None, typer.Argument(metavar="[TYPE]", help="One type, with an example")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the event types you can publish, with their fields."""
    from shared.envelope import InvalidEvent

    from .event_types import describe, publishable

    if event_type is not None:
        from .publishing import contract_for

        try:
            contract_for(event_type)
        except InvalidEvent as exc:
            _fail(exc.detail)
        types = {event_type: describe(event_type)}
    else:
        types = {name: describe(name) for name in publishable()}
    if as_json:
        print_json(types)
        return
    for name, info in types.items():
        say(f"{typer.style(name, bold=True)}  {info['summary']}")
        say(f"  required: {', '.join(info['required']) or '-'}")
        say(f"  optional: {', '.join(info['optional']) or '-'}")
        if event_type is not None and info.get("example"):
            say(f"  example:  serialtrack publish {name} --data '{json.dumps(info['example'])}'")


def fetch_unit(settings: Settings, manufacturer: str, serial: str) -> dict:
    """Every installed service's view of one unit: {service: document | None (unknown)}."""
    import httpx

    from services.registry import load
    from shared.tokens import client_headers

    report: dict = {}
    # The data dir's admin token (written by `serialtrack up`), or $SERIALTRACK_TOKEN.
    with httpx.Client(timeout=10, headers=client_headers(settings.data_dir)) as client:
        for name in INSTALLED:
            url = settings.service_url(name) + load(name).lookup_path.format(manufacturer=manufacturer, serial=serial)
            try:
                response = client.get(url)
            except httpx.HTTPError:
                raise ConnectionError(f"the {name} service is not reachable at {settings.service_url(name)}; "
                                      "is `serialtrack up` running?") from None
            if response.status_code == 404:
                report[name] = None
            elif response.status_code in (401, 403):
                raise PermissionError(f"the {name} service refused the lookup ({response.status_code}: "
                                      f"{response.json().get('detail', '')}); send an API token with "
                                      "SERIALTRACK_TOKEN=... (`serialtrack tokens create`)")
            elif response.status_code == 400:
                raise ValueError(response.json().get("detail", response.text))
            else:
                response.raise_for_status()
                report[name] = response.json()
    return report


@app.command()
def lookup(
    manufacturer: Annotated[str, typer.Argument(help="e.g. acme")],
    serial: Annotated[str, typer.Argument(help="e.g. a serial `serialtrack demo` prints")],
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Everything every running service knows about one unit.

    Exit code 1 when no service knows the unit."""
    from shared.identity import IdentityError, normalize_manufacturer, normalize_serial

    try:
        manufacturer, serial = normalize_manufacturer(manufacturer), normalize_serial(serial)
    except IdentityError as exc:
        _fail(str(exc))
    try:
        report = fetch_unit(_settings(data_dir), manufacturer, serial)
    except (ConnectionError, ValueError, PermissionError) as exc:
        _fail(str(exc))
    unknown_to = [name for name, document in report.items() if not _knows(name, document)]
    if as_json:
        print_json({"manufacturer": manufacturer, "serial": serial, **report})
    else:
        from .lookup_view import print_unit

        print_unit(wide_console(), report)
        if unknown_to and len(unknown_to) < len(report):
            say(f"{manufacturer}/{serial} is not known to {', '.join(unknown_to)}")
    if len(unknown_to) == len(report):
        if not as_json:
            say(f"{manufacturer}/{serial} is not known to {', '.join(unknown_to)}: no service has "
                "seen an event about it", err=True)
        raise typer.Exit(1)


def _knows(service: str, document: dict | None) -> bool:
    """Whether a service's answer says anything about the unit: theft and recalls answer every
    unit (not stolen, no recall), which says nothing about whether they ever heard of it."""
    if document is None:
        return False
    if service == "theft":
        return bool(document.get("reports") or document.get("alerts"))
    if service == "recalls":
        return bool(document.get("recalls"))
    return True


@app.command()
def demo(data_dir: DataDir = None, as_json: JsonFlag = False, credential: CredentialOption = None) -> None:
    """Publish a short story and show what each service did."""
    from .demo import run_demo

    settings = _settings(data_dir)
    redis_url = _redis_url(settings, credential=credential)
    import redis

    try:
        result = run_demo(settings, redis_url, say=(lambda _line: None) if as_json else
                          say)
    except (ConnectionError, TimeoutError, PermissionError) as exc:
        _fail(str(exc))
    except redis.exceptions.NoPermissionError as exc:  # a credential whose role may not publish the whole story
        _fail(f"Redis refused the demo's events: {exc}; the demo publishes every inbound type, as the operator")
    except redis.RedisError as exc:  # unreachable (it died, `serialtrack up` restarts it), ...
        _fail(describe_failure(exc)[0])
    if as_json:
        print_json(result)


@app.command()
def deadletters(
    service: Annotated[list[str] | None, typer.Option(
        help=f"Only this service's dead letters (repeatable); one of: {', '.join(INSTALLED)}. Default: all")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest N entries per service")] = 20,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Entries the services could not apply, and why.

    Newest first. An entry every service refused (a malformed one usually is) is shown once, naming them all."""
    import redis

    unknown = [s for s in service or () if s not in INSTALLED]
    if unknown:
        _fail(f"unknown service {unknown[0]!r}; one of: {', '.join(INSTALLED)}")
    services = list(dict.fromkeys(service)) if service else list(INSTALLED)
    settings = _settings(data_dir)
    client = _redis_client(settings, "operator-reader")
    totals: dict[str, int] = {}
    # One stream entry refused by several services (a malformed one is refused by every reader)
    # is one problem: keyed by where it came from, with each service's refusal under it.
    grouped: dict[tuple[str, str], dict] = {}
    try:
        for name in services:
            stream = settings.streams.dead_letters(name)
            totals[name] = client.xlen(stream)
            for letter_id, raw in client.xrevrange(stream, count=limit):
                fields = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
                key = (fields.get("stream", "?"), fields.get("entry_id", "?"))
                entry = grouped.setdefault(key, {"stream": key[0], "entry_id": key[1],
                                                 "original": fields.get("original", ""), "refused_by": []})
                entry["refused_by"].append({"service": name, "dead_letter_id": letter_id.decode(),
                                            **{k: fields.get(k) for k in ("reason", "error", "deliveries",
                                                                          "failed_at")}})
    except redis.RedisError as exc:
        _fail(f"cannot read dead letters: {exc}")
    finally:
        client.close()
    entries = sorted(grouped.values(), key=lambda e: max(r["failed_at"] or "" for r in e["refused_by"]),
                     reverse=True)
    if as_json:
        print_json({"services": services, "totals": totals, "entries": entries})
        return
    say(f"{sum(totals.values())} dead-lettered entries ("
        + ", ".join(f"{name}: {totals[name]}" for name in services) + ")")
    for entry in entries:
        first_failed = min(r["failed_at"] or "" for r in entry["refused_by"])
        say(f"{typer.style(first_failed, bold=True)} {entry['stream']} {entry['entry_id']}")
        by_refusal: dict[tuple, list[str]] = {}
        for refusal in entry["refused_by"]:
            by_refusal.setdefault((refusal["reason"], refusal["error"]), []).append(refusal["service"])
        for (reason, error), names in by_refusal.items():
            say(f"  refused by {', '.join(names)}: {red(reason or '?')}: {error or ''}")
        say(f"  original: {entry['original'][:300]}")


@app.command()
def migrate(
    service: Annotated[str | None, typer.Argument(help=f"One of: {', '.join(INSTALLED)}. Default: every service")] = None,
    to: Annotated[str | None, typer.Option(
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
        print_json({"services": reports})
    else:
        for report in reports:
            if check:
                verdict = "up to date" if report["up_to_date"] else f"behind: needs {', '.join(report['heads'])}"
                at = ", ".join(report["current"]) or ("release 0.1.0" if report["legacy_0_1_0"] else "empty")
                say(f"{report['service']}: at {at}; {verdict}")
            elif report["changed"]:
                origin = ", ".join(report["from"]) or ("release 0.1.0" if report["legacy_0_1_0"] else "empty")
                say(f"{report['service']}: {origin} -> {', '.join(report['to'])}")
            else:
                say(f"{report['service']}: already at {', '.join(report['to'])}")
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
    """The whole system on one screen, exit 1 when something is unhealthy.

    Each service's health, per stream its length and each group's lag and pending entries, dead letters,
    outbox backlog, Redis memory. Unhealthy: a service down, a group behind, an entry stuck pending, an outbox stuck."""
    from .status import Thresholds, run

    settings = _settings(data_dir)
    thresholds = Thresholds(max_lag_seconds, max_pending_idle_seconds, max_outbox_age_seconds)
    say_json = (lambda report: print(json.dumps(report), flush=True)) if watch else (
        lambda report: print_json(report))
    raise typer.Exit(run(settings, _redis_url(settings, "operator-reader"), thresholds, as_json, watch, interval,
                         say_json, wide_console()))


app.command(name="erase")(erase_command)
app.command(name="sell-through")(sell_through_command)
app.command(name="stock-aging")(stock_aging_command)
app.add_typer(keys_app, name="keys")
app.add_typer(credentials_app, name="credentials")
app.add_typer(tokens_app, name="tokens")
app.add_typer(shipments_app, name="shipments")
app.add_typer(counts_app, name="counts")
app.command("asyncapi")(asyncapi_command)
app.command("archive")(archive_command)
app.command("rebuild")(rebuild_command)


theft_app = typer.Typer(help="The theft-watch service's tools (stolen-property feeds, alerts, checks).",
                        no_args_is_help=True)
app.add_typer(theft_app, name="theft")
theft_app.command("alerts")(theft_alerts_command)
theft_app.command("check")(theft_check_command)


@theft_app.command("import")
def theft_import(
    file: Annotated[Path, typer.Argument(help="CSV (header: agency, case_number, manufacturer, serial, ...; "
                                              "comma, semicolon or tab separated) or JSONL feed; see docs/theft.md")],
    source: Annotated[str, typer.Option(help="Envelope source: the feed's publisher")] = "feed/import",
    file_format: Annotated[str | None, typer.Option("--format", help="csv or jsonl (default: detected)")] = None,
    sign_with: SignWith = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    credential: CredentialOption = None,
) -> None:
    """Import a stolen-property feed as theft.reported / theft.recovered events.

    Bad lines are reported with their line number; good lines are still published. Importing the
    same feed again is harmless (event ids come from each line's content): its lines are reported
    as already published. A date-only reported_at (2026-11-01) means midnight UTC. Exit code 1 if
    any line was bad. Theft events must be signed: --sign-with the agency's key (a law-enforcement key is
    bound to its agency: lines of another agency are refused)."""
    from services.theft.feed_import import FeedError, feed_lines

    if file_format not in (None, "csv", "jsonl"):
        _fail("--format must be csv or jsonl")
    with _open_input(file) as handle:
        fmt, parsed = feed_lines(handle, file, source=source, format=file_format)
        try:
            report = _publish_file(parsed, path=str(file), format=fmt, handle=handle, data_dir=data_dir,
                                   as_json=as_json, sign_with=sign_with, label="importing", credential=credential)
        except FeedError as exc:
            _fail(str(exc))
    _print_report(report, as_json)


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option(
        "--debug", envvar="SERIALTRACK_DEBUG",
        help="On an unexpected failure, show the traceback instead of one line.")] = False,
) -> None:
    _debug[0] = debug


_debug = [False]  # set by --debug (before the command runs), read by main() when a command fails


def main() -> None:
    """Run the CLI: every failure is one line on stderr and a non-zero exit code, never a traceback
    (unless --debug): a bad argument (exit 2), an expected failure a command reports itself
    (options.fail), and any other exception, described by options.describe_failure."""
    # typer vendors click: its exceptions are these, not the click package's.
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `serialtrack` alone, `serialtrack keys`: the help
        exc.show()
        code = exc.exit_code
    except UsageError as exc:  # a bad argument: one line that says where the help is
        command = f"{exc.ctx.command_path} --help" if exc.ctx else "serialtrack --help"
        say_failure(f"{exc.format_message()} (see `{command}`)")
        code = exc.exit_code
    except ClickException as exc:
        say_failure(exc.format_message())
        code = exc.exit_code
    except typer.Abort:
        say_failure("aborted")
        code = 1
    except Exception as exc:  # turned into one line: the point of this function
        if _debug[0]:
            raise
        message, code = describe_failure(exc)
        say_failure(message)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

"""`serialtrack archive`: archive what every reader acked and the retention window let go, then trim
it from Redis (shared/retention.py, docs/retention.md). `serialtrack up` runs it as a loop.

Only typer at import: `serialtrack --help` stays quick.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Annotated, NoReturn

import typer

from .options import DataDir, JsonFlag, fail

ARCHIVER_USER = "archiver"


def _fail(message: str, code: int = 1) -> NoReturn:
    fail(message, code)


def _describe(report) -> list[str]:
    lines = [(f"archived {report.archived} and trimmed {report.trimmed} entries in {report.seconds:.1f}s "
             f"(retention {report.retention_seconds:g}s, dead letters {report.deadletter_retention_seconds:g}s; "
             f"archive {report.archive_dir})")]
    for stream in report.streams:
        if stream.archived or stream.trimmed or stream.held_back:
            line = (f"  {stream.stream}: {stream.length} in Redis, archived {stream.archived}, "
                    f"trimmed {stream.trimmed}")
            lines.append(line + "".join(f"; {reason}" for reason in stream.held_back))
    return lines


def archive(
    data_dir: DataDir = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (default: a pass every --interval seconds "
                                                      "until Ctrl-C / SIGTERM).")] = False,
    interval: Annotated[float | None, typer.Option(
        "--interval", min=0.1, help="Seconds between passes. Default: $SERIALTRACK_ARCHIVE_INTERVAL_SECONDS or 60")] = None,
    as_json: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print a pass only when it archived or trimmed something, "
                                                        "or when what holds a stream back changed.")] = False,
) -> None:
    """Archive, then trim, the stream entries every group acked that are past the retention window.

    Dead letters go after their own window.

    The archive is compressed JSONL per stream and UTC day in $SERIALTRACK_ARCHIVE_DIR (default
    <data dir>/archive); `serialtrack rebuild` replays it. Streams no service reads are never trimmed:
    they are reported. With --json, one JSON document per pass (one line each in a loop)."""
    import redis

    from serialtrack.credentials import consumed_types
    from shared.redis_clients import without_password
    from shared.retention import Archive, ArchiveBusy, raw_client, retention_pass
    from shared.settings import NoRedisConfigured, Settings

    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    try:
        url = settings.resolve_redis_url(ARCHIVER_USER)
    except NoRedisConfigured as exc:
        _fail(str(exc))
    client = raw_client(url)
    store = Archive(settings.archive_dir)
    consumed = consumed_types()
    every = interval if interval is not None else settings.archive_interval_seconds
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    if not once:
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    failures = 0
    last_held_back: set[tuple[str, str]] = set()
    while True:
        try:
            report = retention_pass(client, store, settings.streams, consumed, settings.retention_seconds,
                                    settings.deadletter_retention_seconds)
            failures = 0
        except (redis.RedisError, ArchiveBusy, OSError) as exc:
            message = f"archive pass failed: {exc} (Redis {without_password(url)}, archive {store.root})"
            if once:
                _fail(message)
            failures += 1
            typer.echo(f"error: {message}; retrying", err=True)  # a loop keeps going: Redis may come back
        else:
            if as_json:
                typer.echo(json.dumps(report.as_dict(), indent=None if not once else 2))
            else:
                held_back = {(s.stream, reason) for s in report.streams for reason in s.held_back}
                if not quiet or report.archived or report.trimmed or held_back != last_held_back:
                    for line in _describe(report):
                        typer.echo(line)
                last_held_back = held_back
        if once:
            return
        deadline = time.monotonic() + min(every * (2 ** min(failures, 4)), max(every, 300))
        while not stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, every))
        if stopping:
            return



def rebuild(
    service: Annotated[str, typer.Argument(help="The service whose store to rebuild (inventory, warranty, theft, recalls)")],
    data_dir: DataDir = None,
    to: Annotated[str | None, typer.Option(
        "--to", metavar="URL", help="An empty database to build into. Default: a new SQLite file in <data dir>/rebuild/")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Then compare it with the service's live store, table by "
                                                            "table; exit 1 if they differ.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Build SERVICE's store anew from the archive plus the live streams, into a fresh database.

    It goes through the service's own processor; --compare then shows how it differs from the live store.

    Columns that legitimately differ are not compared (times a row was written, row numbers): the
    output names them per table."""
    import sys

    import redis
    from sqlalchemy.exc import SQLAlchemyError

    from services.registry import INSTALLED, load
    from shared.settings import NoRedisConfigured, Settings

    from .rebuild import RebuildError, default_target, describe_differences, expected_entries
    from .rebuild import compare as compare_stores
    from .rebuild import rebuild as rebuild_store

    if service not in INSTALLED:
        _fail(f"unknown service {service!r}; one of: {', '.join(INSTALLED)}", 2)
    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    try:
        redis_url = settings.resolve_redis_url("operator-reader")
    except NoRedisConfigured as exc:
        _fail(str(exc))
    definition = load(service)
    target = to or default_target(settings, service)
    try:
        total = expected_entries(definition, settings, redis_url)
        bar = None
        if not as_json and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            bar = Progress(TextColumn(f"rebuild {service}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           console=Console(stderr=True))
            task = bar.add_task(service, total=total)
            bar.start()
        try:
            report = rebuild_store(definition, settings, target, redis_url,
                                   progress=(lambda n: bar.advance(task, n)) if bar else None)
        finally:
            if bar:
                bar.stop()
        differences = compare_stores(definition, settings.database_url(service), target) if compare else None
    except RebuildError as exc:
        _fail(str(exc))
    except redis.RedisError as exc:
        _fail(f"Redis failed: {exc}")
    except SQLAlchemyError as exc:
        _fail(f"database error: {str(exc).splitlines()[0]}")
    if as_json:
        document = report.as_dict()
        if differences is not None:
            from dataclasses import asdict

            document["comparison"] = {"equal": all(d.equal for d in differences),
                                      "tables": [{**asdict(d), "equal": d.equal} for d in differences]}
        typer.echo(json.dumps(document, indent=2, default=str))
    else:
        archived = sum(s["archived"] for s in report.streams.values())
        live = sum(s["live"] for s in report.streams.values())
        typer.echo(f"rebuilt {service} into {target}: {archived} archived + {live} live entries, "
                   f"{report.applied} events applied, {report.duplicates} duplicates, skipped "
                   f"{dict(report.skipped) or 'none'} in {report.seconds:.1f}s")
        if differences is not None:
            for line in describe_differences(differences):
                typer.echo(line)
    if differences is not None and not all(d.equal for d in differences):
        raise typer.Exit(1)

"""What every command module of the CLI shares: the common options and the one way to fail.

Typer and the standard library only: `serialtrack --help` imports this (serialtrack/cli.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Where data lives (SQLite files, embedded Redis). Default: $SERIALTRACK_DATA_DIR or ./serialtrack-data")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]

START_HINT = "is `serialtrack up` running?"


def say_failure(message: str) -> None:
    """One line on stderr (click drops the colour off a terminal)."""
    typer.echo(f"{typer.style('error:', fg='red')} {' '.join(message.split())}", err=True)


def fail(message: str, code: int) -> NoReturn:
    """An expected failure: one line on stderr, no traceback."""
    say_failure(message)
    raise typer.Exit(code)


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """(one line, exit code) for an exception no command caught: Redis or a service unreachable or
    refusing, a file that cannot be read, anything else (exit 1, with a hint at --debug). A library
    is looked up only if the command loaded it: this runs on the failure path of every command."""
    redis = sys.modules.get("redis.exceptions")
    if redis is not None and isinstance(exc, redis.RedisError):
        return _redis_failure(exc, redis)
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        if response.status_code in (401, 403):
            return (f"{response.request.url} refused the request ({response.status_code}): send an API token "
                    "with SERIALTRACK_TOKEN=... (`serialtrack tokens create`)"), 2
        return f"{response.request.url} answered {response.status_code}: {response.text[:200]}", 1
    if httpx is not None and isinstance(exc, httpx.TransportError):
        return f"cannot reach {exc.request.url}: {exc or type(exc).__name__}; {START_HINT}", 2
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}", 2
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return f"{exc}; {START_HINT}", 2
    return f"unexpected {type(exc).__name__}: {exc} (run `serialtrack --debug ...` for the traceback)", 1


def _redis_failure(exc, redis) -> tuple[str, int]:
    if isinstance(exc, redis.AuthenticationError):  # WRONGPASS: revoked, or a wrong password
        return f"Redis refused the credential ({exc}): it was revoked, or its password is wrong", 2
    if isinstance(exc, redis.NoPermissionError):  # NOPERM: the user's role may not do this
        return f"Redis refused the command for this user ({exc}): its role may not do it", 2
    if isinstance(exc, redis.BusyLoadingError):
        return "Redis is loading its data after a restart: try again in a few seconds", 2
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return f"cannot reach Redis: {exc}; {START_HINT} (it restarts a Redis that died)", 2
    if isinstance(exc, redis.OutOfMemoryError) or "OOM command not allowed" in str(exc):  # also from a script
        return (f"Redis is full ({exc}): its maxmemory is reached and it refuses new entries; raise "
                "SERIALTRACK_REDIS_MAXMEMORY, or let retention trim what is archived"), 1
    return f"Redis failed: {exc}", 1

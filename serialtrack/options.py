"""What every command module of the CLI shares: the common options and the one way to fail.

Typer and the standard library only: `serialtrack --help` imports this (serialtrack/cli.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Where data lives (SQLite files, embedded Redis). Default: $SERIALTRACK_DATA_DIR or ./serialtrack-data")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def fail(message: str, code: int) -> NoReturn:
    """An expected failure: one line on stderr, no traceback (click drops the colour off a terminal)."""
    typer.echo(f"{typer.style('error:', fg='red')} {message}", err=True)
    raise typer.Exit(code)

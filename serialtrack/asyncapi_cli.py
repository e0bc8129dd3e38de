"""`serialtrack asyncapi`: the machine-readable contract of the bus (shared/asyncapi.py).

Kept out of cli.py so that its imports (every contract's JSON schema) happen only when it runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def asyncapi(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout")] = None,
    stream_prefix: Annotated[str | None, typer.Option(
        "--stream-prefix", help="Stream name prefix. Default: $SERIALTRACK_STREAM_PREFIX or serialtrack")] = None,
) -> None:
    """Print the AsyncAPI 3.0 contract of the event bus.

    Every stream, each type's envelope and data schema, which role may publish it, whether it must be signed."""
    from shared.asyncapi import build_asyncapi
    from shared.settings import Settings

    document = build_asyncapi(stream_prefix or Settings().stream_prefix)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"error: cannot write {output}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {output} ({len(document['channels'])} channels)", err=True)

"""`serialtrack tokens ...`: the API tokens callers of the services' HTTP APIs present.

Only typer is imported at module level (like keys_cli): `serialtrack --help` stays quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .options import DataDir, JsonFlag, fail

tokens_app = typer.Typer(
    help="API tokens for the services' HTTP APIs: create, list, revoke.\n\n"
         "Services read the registry (<data dir>/tokens/registry.json, or $SERIALTRACK_TOKENS_DIR) and pick up "
         "changes within seconds. Roles and what each may see: README, 'Who may see what'.",
    no_args_is_help=True,
)



def _fail(message: str, code: int = 1) -> NoReturn:
    fail(message, code)


def _tokens_dir(data_dir: Path | None) -> Path:
    from shared.settings import Settings

    return (Settings(data_dir=data_dir) if data_dir is not None else Settings()).tokens_dir


@tokens_app.command("create")
def create(
    role: Annotated[str, typer.Option("--role", help="admin, customer-service, store, investigator, manufacturer "
                                                     "or auditor")],
    manufacturer: Annotated[str | None, typer.Option(
        "--manufacturer", help="manufacturer tokens: the one manufacturer whose units and recalls it sees")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="A name, unique for ever (the source of what it submits: http/NAME). Default: ROLE-<id>")] = None,
    expires: Annotated[float | None, typer.Option("--expires", metavar="DAYS",
                                                  help="Stops working after this many days. Default: never")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Make a token and print it, once: only its hash is stored."""
    from shared.tokens import InvalidTokenInput, TokensError, create_token, pseudonym_key

    directory = _tokens_dir(data_dir)
    try:
        token, record = create_token(directory, role, name=name, manufacturer=manufacturer, expires_days=expires)
        pseudonym_key(directory)  # made next to the tokens: a read-only secret mount cannot make it later
    except InvalidTokenInput as exc:
        _fail(str(exc), 2)
    except (TokensError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps({**record.describe(), "token": token}, indent=2))
        return
    typer.echo(f"name:    {record.name}")
    typer.echo(f"role:    {record.role}" + (f" (manufacturer {record.manufacturer})" if record.manufacturer else ""))
    typer.echo(f"expires: {record.expires:%Y-%m-%dT%H:%M:%SZ}" if record.expires else "expires: never")
    typer.echo(f"token:   {token}")
    typer.echo("(shown once: keep it secret; send it as 'Authorization: Bearer <token>')", err=True)


@tokens_app.command("list")
def list_tokens(as_json: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Every token (never the token itself), revoked and expired ones included."""
    from shared.tokens import TokensError, load_registry, registry_path

    try:
        registry = load_registry(registry_path(_tokens_dir(data_dir)))
    except TokensError as exc:
        _fail(str(exc))
    records = sorted(registry.records(), key=lambda r: (r.role, r.name))
    if as_json:
        typer.echo(json.dumps({"tokens": [r.describe() for r in records]}, indent=2))
        return
    if not records:
        typer.echo("no tokens (serialtrack tokens create --role ROLE)")
        return
    rows = [("NAME", "ROLE", "MANUFACTURER", "STATE", "CREATED", "EXPIRES")]
    for r in records:
        d = r.describe()
        rows.append((r.name, r.role, r.manufacturer or "-", d["state"], d["created"], d["expires"] or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@tokens_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name (see `serialtrack tokens list`)")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a token: every service refuses it (401) within seconds."""
    from shared.tokens import TokensError, revoke_token

    try:
        record = revoke_token(_tokens_dir(data_dir), name)
    except TokensError as exc:
        _fail(str(exc))
    typer.echo(f"revoked {record.name} at {record.revoked:%Y-%m-%dT%H:%M:%SZ}")

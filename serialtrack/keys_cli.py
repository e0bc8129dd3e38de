"""`serialtrack keys ...`: the signing keys producers use and the registry services trust.

Only typer is imported here at module level: `serialtrack --help` and every other command stay
quick. The key code (cryptography, the contracts behind the role table) is imported by the
command that needs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from .options import DataDir, JsonFlag, fail

keys_app = typer.Typer(
    help="Signing keys producers sign envelopes with: create, add, list, revoke.\n\n"
         "Services read the registry (<data dir>/keys/registry.json) and pick up changes within seconds.",
    no_args_is_help=True,
)

RoleOption = Annotated[str, typer.Option("--role", help="pos, warehouse, store, distributor, service-desk, "
                                                        "owner-registry, law-enforcement, manufacturer or operator")]
SourcePrefix = Annotated[str | None, typer.Option(
    "--source-prefix", help="Envelope sources this key may use: the prefix and what is under it "
                            "(pos/store-12 allows pos/store-12/till-3). Default: any source.")]
Agency = Annotated[str | None, typer.Option(
    "--agency", help="law-enforcement keys: the agency it speaks for (data.agency must equal it)")]
Manufacturer = Annotated[str | None, typer.Option(
    "--manufacturer", help="manufacturer keys: the manufacturer it speaks for (data.manufacturer must equal it)")]
TransfersOwnership = Annotated[bool, typer.Option(
    "--transfers-ownership", help="owner-registry and operator keys: trusted for ownership transfers, so an owner "
                                  "registration it signs replaces the owner instead of waiting for review "
                                  "(e.g. the store's after-sales desk)")]


def _fail(message: str, code: int = 1) -> NoReturn:
    fail(message, code)


def _data_dir(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir
    from shared.settings import Settings

    return Settings().data_dir


def _describe(record, **extra: Any) -> dict[str, Any]:
    return {**record.to_json(), "types": sorted(record.types), **extra}


def _print_key(record, private_key_file: Path | None = None) -> None:
    speaks_for = record.agency or record.manufacturer
    typer.echo(f"kid:           {record.kid}")
    typer.echo(f"role:          {record.role} ({', '.join(sorted(record.types))})")
    typer.echo(f"source prefix: {record.source_prefix or '(any source)'}")
    if speaks_for:
        typer.echo(f"speaks for:    {'agency' if record.agency else 'manufacturer'} {speaks_for}")
    if record.transfers_ownership:
        typer.echo("ownership:     transfers (an owner registration it signs replaces the owner)")
    typer.echo(f"public key:    {record.public_key}")
    if private_key_file is not None:
        typer.echo(f"private key:   {private_key_file} (keep it secret; sign with --sign-with {record.name})")


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for this key, unique for ever (e.g. metro-pd-2026)")],
    role: RoleOption,
    source_prefix: SourcePrefix = None,
    agency: Agency = None,
    manufacturer: Manufacturer = None,
    transfers_ownership: TransfersOwnership = False,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Make a key pair: the private key goes to <data dir>/keys/private/NAME.key (mode 0600), the
    public key into the registry."""
    from shared.keys import InvalidKeyInput, KeysError, create_key

    try:
        record, path = create_key(_data_dir(data_dir), name, role, source_prefix=source_prefix, agency=agency,
                                  manufacturer=manufacturer, transfers_ownership=transfers_ownership)
    except InvalidKeyInput as exc:
        _fail(str(exc), 2)
    except (KeysError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(_describe(record, private_key_file=str(path)), indent=2))
    else:
        _print_key(record, path)


@keys_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A name for this key, unique for ever")],
    public_key: Annotated[Path, typer.Option("--public-key", help="The partner's Ed25519 public key: a PEM file, "
                                                                  "or the base64url of its 32 bytes")],
    role: RoleOption,
    source_prefix: SourcePrefix = None,
    agency: Agency = None,
    manufacturer: Manufacturer = None,
    transfers_ownership: TransfersOwnership = False,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Register a public key a partner generated (their private key never leaves them)."""
    from shared.keys import InvalidKeyInput, KeysError, add_key, read_public_key

    try:
        content = public_key.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {public_key}: {exc.strerror}", 2)
    try:
        raw = read_public_key(content)
    except InvalidKeyInput as exc:
        _fail(f"{public_key}: {exc}", 2)
    try:
        record = add_key(_data_dir(data_dir), name, role, raw, source_prefix=source_prefix,
                         agency=agency, manufacturer=manufacturer, transfers_ownership=transfers_ownership)
    except InvalidKeyInput as exc:
        _fail(str(exc), 2)
    except (KeysError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(_describe(record), indent=2))
    else:
        _print_key(record)


@keys_app.command("list")
def list_keys(as_json: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Every registered key, revoked ones included."""
    from shared.keys import KeysError, load_registry, registry_path

    try:
        registry = load_registry(registry_path(_data_dir(data_dir)))
    except KeysError as exc:
        _fail(str(exc))
    records = sorted(registry.values(), key=lambda k: (k.role, k.name))
    if as_json:
        typer.echo(json.dumps({"keys": [_describe(k) for k in records]}, indent=2))
        return
    if not records:
        typer.echo("no keys registered (serialtrack keys create NAME --role ROLE)")
        return
    # Plain aligned columns: readable in a terminal and with grep or awk, whatever the width.
    rows = [("KID", "ROLE", "SOURCE PREFIX", "SPEAKS FOR", "OWNERSHIP", "CREATED", "REVOKED")]
    for k in records:
        speaks_for = f"agency:{k.agency}" if k.agency else f"manufacturer:{k.manufacturer}" if k.manufacturer else "-"
        rows.append((k.kid, k.role, k.source_prefix or "(any)", speaks_for,
                     "transfers" if k.transfers_ownership else "-", f"{k.created:%Y-%m-%dT%H:%M:%SZ}",
                     f"{k.revoked:%Y-%m-%dT%H:%M:%SZ}" if k.revoked else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@keys_app.command("revoke")
def revoke(
    kid: Annotated[str, typer.Argument(help="The kid to revoke (see `serialtrack keys list`)")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key: every envelope it signed is refused from now on (revoked_key), replays included.
    Services pick it up within seconds."""
    from shared.keys import KeysError, revoke_key

    try:
        record = revoke_key(_data_dir(data_dir), kid)
    except KeysError as exc:
        _fail(str(exc))
    typer.echo(f"revoked {record.kid} at {record.revoked:%Y-%m-%dT%H:%M:%SZ}")

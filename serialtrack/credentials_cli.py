"""`serialtrack credentials ...`: Redis users for producers (a till, a warehouse system, a police feed).

Each credential is a Redis user ``<role>.<name>`` that may XADD to the streams of its role's types
and nothing else (shared/acl.py); Redis itself refuses the rest. Made and revoked through the admin
user: on the embedded default its URL is in <data dir>/credentials/admin.url; elsewhere set
SERIALTRACK_REDIS_ADMIN_URL.

Only typer is imported here at module level: `serialtrack --help` stays quick.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .options import DataDir, JsonFlag, describe_failure, fail

credentials_app = typer.Typer(
    help="Redis users for producers: create (prints the redis:// URL once), list, revoke.\n\n"
         "A credential of role ROLE may publish the types of that role and nothing else: Redis refuses the rest.",
    no_args_is_help=True,
)

ADMIN_URL_VARIABLE = "SERIALTRACK_REDIS_ADMIN_URL"


def _fail(message: str, code: int = 1) -> NoReturn:
    fail(message, code)


def _context(data_dir: Path | None):
    from shared.settings import REDIS_URL_FILE, Settings

    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    return settings, REDIS_URL_FILE


def _admin_url_or_none(settings, url_file: str) -> str | None:
    """SERIALTRACK_REDIS_ADMIN_URL, else the embedded Redis's admin credential while it runs."""
    if os.environ.get(ADMIN_URL_VARIABLE):
        return os.environ[ADMIN_URL_VARIABLE]
    admin = settings.credential_file("admin")
    if (settings.data_dir / url_file).is_file() and admin.is_file():
        return admin.read_text().strip()
    return None


def _admin_url(settings, url_file: str) -> str:
    admin_url = _admin_url_or_none(settings, url_file)
    if admin_url is not None:
        return admin_url
    admin = settings.credential_file("admin")
    _fail(f"no Redis admin to make users with: start `serialtrack up` (it keeps its admin credential in "
          f"{admin}), or set {ADMIN_URL_VARIABLE} to the admin user's redis:// URL")


def _redis_errors():
    import redis

    from serialtrack.credentials import CredentialsError

    return (redis.RedisError, CredentialsError, OSError)


def _explain(exc: Exception) -> str:
    import redis

    if isinstance(exc, redis.AuthenticationError):
        return f"Redis refused the admin credential ({exc})"
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return f"Redis refused: the admin URL is not the admin user's ({exc})"
    if isinstance(exc, redis.RedisError):  # unreachable, loading, ...: said as every command says it
        return describe_failure(exc)[0]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@credentials_app.command("create")
def create(
    role: Annotated[str, typer.Argument(help="pos, warehouse, store, distributor, service-desk, owner-registry, "
                                             "law-enforcement, manufacturer or operator")],
    name: Annotated[str, typer.Argument(help="Unique name, e.g. store-12-till-3 (lowercase letters, digits, dashes)")],
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Make a producer's Redis user and print its redis:// URL once.

    The user is ROLE.NAME; the URL is kept in <data dir>/credentials/ROLE.NAME.url (mode 0600). Give
    it to the producer: as REDIS_URL, or `serialtrack publish --credential FILE`."""
    from shared.roles import ROLE_TYPES

    from .credentials import create as create_credential

    settings, url_file = _context(data_dir)
    if role not in ROLE_TYPES:
        _fail(f"unknown role {role!r}; one of: {', '.join(ROLE_TYPES)}", 2)
    admin = _admin_url(settings, url_file)
    from shared.acl import AclError, credential_user

    try:
        credential_user(role, name)
    except AclError as exc:
        _fail(str(exc), 2)
    try:
        created = create_credential(admin, settings.data_dir, settings.streams, role, name)
    except _redis_errors() as exc:
        _fail(_explain(exc))
    types = sorted(ROLE_TYPES[role])
    if as_json:
        typer.echo(json.dumps({"user": created.user, "role": role, "url": created.url, "file": str(created.file),
                               "types": types}, indent=2))
        return
    typer.echo(f"user:  {created.user}")
    typer.echo(f"may publish: {', '.join(types)}")
    typer.echo(f"url:   {created.url}")
    typer.echo(f"saved: {created.file} (mode 0600); the URL is not shown again")
    typer.echo(f"use:   serialtrack publish TYPE --data '{{...}}' --credential {created.file}")


@credentials_app.command("list")
def list_credentials(as_json: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Every Redis user and what it is for. No passwords.

    Credentials, built-in producers, services, operator, admin."""
    from .credentials import list_users

    settings, url_file = _context(data_dir)
    try:
        rows = list_users(_admin_url_or_none(settings, url_file), settings.data_dir)
    except _redis_errors() as exc:
        _fail(_explain(exc))
    if as_json:
        typer.echo(json.dumps({"users": rows}, indent=2))
        return
    table = [("USER", "ROLE", "KIND", "ENABLED")] + [
        (r["user"], r["role"] or "-", r["kind"], "yes" if r["enabled"] else "no") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@credentials_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The credential's NAME (or its Redis user, ROLE.NAME)")],
    data_dir: DataDir = None,
) -> None:
    """Delete a credential's Redis user.

    Its open connections are closed, and it cannot connect again."""
    from .credentials import revoke as revoke_credential

    settings, url_file = _context(data_dir)
    admin = _admin_url(settings, url_file)
    try:
        user = revoke_credential(admin, settings.data_dir, name)
    except _redis_errors() as exc:
        _fail(_explain(exc))
    typer.echo(f"revoked {user}: its connections are closed and it cannot connect again")

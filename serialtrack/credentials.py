"""Redis users on disk and on the server: the embedded default's ACL file and credential files, and
what `serialtrack credentials create/list/revoke` do through the admin user.

Files in the data dir:

- ``run/users.acl`` (0600): the embedded Redis's ACL file (``--aclfile``). Passwords only as SHA-256
  hashes. `serialtrack up` rewrites it at every start from this build's rules (shared/acl.py), so a
  new event type reaches its users' rules; `credentials create/revoke` change it through ACL
  SETUSER/DELUSER and ACL SAVE.
- ``credentials/<user>.url`` (0600, directory 0700): one ``redis://user:password@host:port/0`` per
  user: the built-in ones (admin, operator, operator-reader, each role, each service's reader and
  writer) and each credential made with `credentials create`. `serialtrack up` rewrites their
  host and port, which can change between starts.
"""

from __future__ import annotations

import importlib
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.acl import (
    ADMIN,
    ARCHIVER,
    DEFAULT,
    DEFAULT_RULES,
    AclError,
    AclUser,
    builtin_rules,
    credential_user,
    parse_acl_file,
    password_hash,
    producer_rules,
    render_acl_file,
    role_of,
)
from shared.settings import CREDENTIALS_DIR
from shared.streams import Streams

ACL_FILE = "run/users.acl"


class CredentialsError(RuntimeError):
    """An expected failure, said in one line."""


def consumed_types(services: Iterable[str] | None = None) -> dict[str, tuple[str, ...]]:
    """service -> the types its consumer group reads (services/<name>/handlers.py EVENT_TYPES)."""
    from services.registry import INSTALLED

    return {s: tuple(importlib.import_module(f"services.{s}.handlers").EVENT_TYPES)
            for s in (INSTALLED if services is None else services)}


def new_password() -> str:
    return secrets.token_urlsafe(32)


def url_for(host: str, port: int, user: str, password: str) -> str:
    return f"redis://{user}:{password}@{host}:{port}/0"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (a reader never sees half a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _password_of(url_file: Path) -> str | None:
    try:
        return urlsplit(url_file.read_text().strip()).password
    except OSError:
        return None


@dataclass(frozen=True)
class EmbeddedUsers:
    """What `serialtrack up` (and the tests' Redis with ACLs) starts redis-server with."""

    acl_file: Path
    urls: Mapping[str, str]  # every built-in user -> its URL

    def url(self, user: str) -> str:
        return self.urls[user]


def prepare_embedded(data_dir: Path, streams: Streams, port: int, host: str = "127.0.0.1",
                     consumed: Mapping[str, Iterable[str]] | None = None) -> EmbeddedUsers:
    """Write ``run/users.acl`` and the credential files for a Redis on ``host:port``.

    Built-in users keep their password across starts (read back from their credential file); a
    missing one gets a new random password. Users made by `credentials create` keep their
    password hash and on/off state, with their role's rules of this build. Users this build does
    not know (made by hand with ACL SETUSER) are kept as they are. A data dir from before ACLs has
    no file and gets one."""
    data_dir = Path(data_dir)
    consumed = consumed_types() if consumed is None else consumed
    acl_path = data_dir / ACL_FILE
    existing = parse_acl_file(acl_path.read_text()) if acl_path.is_file() else {}
    credentials = data_dir / CREDENTIALS_DIR
    users: list[AclUser] = [AclUser(DEFAULT, False, (), DEFAULT_RULES)]
    urls: dict[str, str] = {}
    builtins = builtin_rules(streams, consumed)
    for name, rules in builtins.items():
        password = _password_of(credentials / f"{name}.url") or new_password()
        urls[name] = url_for(host, port, name, password)
        write_private(credentials / f"{name}.url", urls[name] + "\n")
        users.append(AclUser(name, True, (password_hash(password),), rules))
    for name, user in existing.items():
        if name == DEFAULT or name in builtins:
            continue
        role = role_of(name)
        users.append(AclUser(name, user.on, user.secrets, producer_rules(role, streams)) if role else user)
        url_file = credentials / f"{name}.url"
        saved = _password_of(url_file)
        if role and saved:  # the port may have changed since it was made
            write_private(url_file, url_for(host, port, name, saved) + "\n")
    write_private(acl_path, render_acl_file(users))
    return EmbeddedUsers(acl_path, urls)


# --- `serialtrack credentials` through the admin user --------------------------------------------


def admin_client(admin_url: str):
    from shared.redis_clients import sync_client

    return sync_client(admin_url, socket_connect_timeout=3, socket_timeout=10)


def _users(client) -> dict[str, AclUser]:
    return parse_acl_file("\n".join(line.decode() if isinstance(line, bytes) else line
                                    for line in client.execute_command("ACL", "LIST")))


def _save(client, data_dir: Path) -> None:
    """ACL SAVE, and the file back to 0600 when it is ours (Redis writes it with the umask's mode)."""
    client.execute_command("ACL", "SAVE")
    acl_path = data_dir / ACL_FILE
    if acl_path.is_file():
        os.chmod(acl_path, 0o600)


@dataclass(frozen=True)
class Created:
    user: str
    role: str
    url: str
    file: Path


def create(admin_url: str, data_dir: Path, streams: Streams, role: str, name: str) -> Created:
    try:
        user = credential_user(role, name)
    except AclError as exc:
        raise CredentialsError(str(exc)) from None
    client = admin_client(admin_url)
    try:
        taken = [u for u in _users(client) if role_of(u) and u.split(".", 1)[-1] == name and "." in u]
        if taken:
            raise CredentialsError(f"a credential named {name!r} exists already (Redis user {taken[0]}); "
                                   "names are unique across roles: revoke it first, or pick another name")
        password = new_password()
        client.execute_command("ACL", "SETUSER", user, "reset", "on", password_hash(password),
                               *producer_rules(role, streams))
        _save(client, data_dir)
    finally:
        client.close()
    parts = urlsplit(admin_url)
    url = url_for(parts.hostname or "127.0.0.1", parts.port or 6379, user, password)
    path = data_dir / CREDENTIALS_DIR / f"{user}.url"
    write_private(path, url + "\n")
    return Created(user, role, url, path)


def _find(users: Mapping[str, AclUser], name: str) -> str:
    if name in users and role_of(name) and "." in name:
        return name
    matches = [u for u in users if "." in u and role_of(u) and u.split(".", 1)[1] == name]
    if matches:
        return matches[0]
    if name in users:
        raise CredentialsError(f"{name} is a built-in user of serialtrack, not a credential; "
                               "`serialtrack credentials revoke` revokes what `credentials create` made")
    raise CredentialsError(f"no credential named {name!r} (`serialtrack credentials list` shows them)")


def revoke(admin_url: str, data_dir: Path, name: str) -> str:
    """Refuse new connections, close the open ones, delete the user, save. The Redis user's name."""
    client = admin_client(admin_url)
    try:
        user = _find(_users(client), name)
        client.execute_command("ACL", "SETUSER", user, "off")  # no new connection from here on
        client.execute_command("CLIENT", "KILL", "USER", user)
        client.execute_command("ACL", "DELUSER", user)
        _save(client, data_dir)
    finally:
        client.close()
    (data_dir / CREDENTIALS_DIR / f"{user}.url").unlink(missing_ok=True)
    return user


def describe(users: Mapping[str, AclUser], data_dir: Path) -> list[dict]:
    """Every user, its role or what it is for, on or off, and whether its credential file is here."""
    rows = []
    for name, user in sorted(users.items()):
        role = role_of(name)
        if role and "." in name:
            kind = "credential"
        elif role:
            kind = "built-in producer"
        elif name == ADMIN:
            kind = "admin (no service uses it)"
        elif name == ARCHIVER:
            kind = "archiver (archives and trims streams)"
        elif name == DEFAULT:
            kind = "default (off)"
        elif name.endswith(("-reader", "-writer")):
            kind = "service" if name != "operator-reader" else "operator (reads only)"
        else:
            kind = "other"
        rows.append({"user": name, "role": role, "kind": kind, "enabled": user.on,
                     "credential_file": str(data_dir / CREDENTIALS_DIR / f"{name}.url")
                     if (data_dir / CREDENTIALS_DIR / f"{name}.url").is_file() else None})
    return rows


def list_users(admin_url: str | None, data_dir: Path) -> list[dict]:
    """From the server through the admin user, else (system stopped) from the data dir's ACL file."""
    if admin_url:
        client = admin_client(admin_url)
        try:
            return describe(_users(client), data_dir)
        finally:
            client.close()
    acl_path = data_dir / ACL_FILE
    if not acl_path.is_file():
        raise CredentialsError(f"no Redis users here: {acl_path} does not exist (start `serialtrack up` once, "
                               "or set SERIALTRACK_REDIS_ADMIN_URL)")
    return describe(parse_acl_file(acl_path.read_text()), data_dir)


# --- docker-compose: the same users, passwords from required variables --------------------------


def password_variable(user: str) -> str:
    """The environment variable of a built-in user's password in docker-compose.yml."""
    return "REDIS_" + user.upper().replace("-", "_") + "_PASSWORD"


def compose_template(streams: Streams | None = None, consumed: Mapping[str, Iterable[str]] | None = None) -> str:
    """deploy/redis/users.acl.template: every built-in user with ``#${REDIS_<USER>_PASSWORD}`` where
    its password hash goes; deploy/redis/start.sh puts the SHA-256 of each variable's value there."""
    streams = streams or Streams()
    consumed = consumed_types() if consumed is None else consumed
    users = [AclUser(DEFAULT, False, (), DEFAULT_RULES)] + [
        AclUser(name, True, (f"#${{{password_variable(name)}}}",), rules)
        for name, rules in builtin_rules(streams, consumed).items()]
    return render_acl_file(users)


if __name__ == "__main__":  # python -m serialtrack.credentials > deploy/redis/users.acl.template
    print(compose_template(), end="")

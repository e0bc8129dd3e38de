"""Redis itself refuses what a user's role may not do: the users of `serialtrack up` (same ACL file
code path) on a real redis-server, Redis 6.2 (embedded default) and Redis 7 when the machine has one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from serialtrack.credentials import create, prepare_embedded, revoke
from serialtrack.publishing import LedgerPublisher, build_envelope
from services.registry import INSTALLED, load
from services.warranty.app import definition as warranty
from shared.acl import ADMIN, OPERATOR_READER, credential_user, reader, writer
from shared.contracts import EVENT_TYPES
from shared.envelope import ENTRY_FIELD
from shared.roles import INBOUND_TYPES, INTERNAL_TYPES, OPERATOR, ROLE_TYPES, ROLES, SERVICE_TYPES
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support import factories as f
from tests.support.acl_redis import redis_binaries, start_acl_redis
from tests.support.running import http, running, wait_for

ALL_TYPES = sorted(EVENT_TYPES)


@pytest.fixture(scope="module", params=redis_binaries())
def acl_redis(request, tmp_path_factory):
    server = start_acl_redis(tmp_path_factory.mktemp("acl-redis"), binary=request.param)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_acl_log(request):
    """Each test on the shared server starts with an empty ACL LOG."""
    if "acl_redis" in request.fixturenames:
        request.getfixturevalue("acl_redis").admin.acl_log_reset()


def xadd_each(client: redis.Redis, streams: list[str]) -> dict[str, object]:
    """stream -> the entry id, or the error Redis answered with."""
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xadd(stream, {ENTRY_FIELD: "{}"})
    return dict(zip(streams, pipe.execute(raise_on_error=False), strict=True))


def refused(result) -> bool:
    return isinstance(result, NoPermissionError)


def test_each_role_may_xadd_exactly_the_streams_of_its_types(acl_redis):
    """The whole matrix: every role x every type (inbound and internal), XADD allowed iff the role
    may publish the type; each allowed XADD really added an entry."""
    s = acl_redis.streams
    before = {t: acl_redis.admin.xlen(s.for_type(t)) for t in ALL_TYPES}
    expected = {t: before[t] for t in ALL_TYPES}
    for role in ROLES:
        results = xadd_each(acl_redis.client(role), [s.for_type(t) for t in ALL_TYPES])
        for event_type in ALL_TYPES:
            result = results[s.for_type(event_type)]
            if event_type in ROLE_TYPES[role]:
                assert not isinstance(result, Exception), (role, event_type, result)
                expected[event_type] += 1
            else:
                assert refused(result), (role, event_type, result)
    assert {t: acl_redis.admin.xlen(s.for_type(t)) for t in ALL_TYPES} == expected
    assert all(acl_redis.admin.xlen(s.for_type(t)) == before[t] for t in INTERNAL_TYPES)  # nobody outside wrote one


@pytest.mark.parametrize("role", ROLES)
def test_producers_may_not_read_list_configure_or_touch_other_keys(acl_redis, role):
    s = acl_redis.streams
    client = acl_redis.client(role)
    own = s.for_type(min(ROLE_TYPES[role]))
    client.xadd(own, {ENTRY_FIELD: "{}"})
    attempts = {
        "XRANGE": lambda: client.xrange(own),
        "XREADGROUP": lambda: client.xreadgroup("inventory", "x", {own: ">"}, count=1),
        "XACK": lambda: client.xack(own, "inventory", "0-1"),
        "XDEL": lambda: client.xdel(own, "0-1"),
        "XTRIM": lambda: client.xtrim(own, maxlen=0),
        "XGROUP": lambda: client.xgroup_create(own, "mine", id="0"),
        "XLEN": lambda: client.xlen(own),
        "KEYS": lambda: client.keys("*"),
        "SCAN": lambda: client.scan(0),
        "CONFIG": lambda: client.config_get("*"),
        "FLUSHALL": lambda: client.flushall(),
        "DEL": lambda: client.delete(own),
        "SET other key": lambda: client.set(f"{s.prefix}:x", "1"),
        "XADD dead letters": lambda: client.xadd(s.dead_letters("inventory"), {"reason": "forged"}),
        "XADD other prefix": lambda: client.xadd(f"other:{min(ROLE_TYPES[role])}", {ENTRY_FIELD: "{}"}),
        "ACL": lambda: client.acl_list(),
        "CLIENT LIST": lambda: client.client_list(),
        "EVAL": lambda: client.eval("return 1", 0),
    }
    if role != OPERATOR:  # the operator's ledger is tested below
        attempts["HSET ledger"] = lambda: client.hset(s.published_ledger(), "a", "b")
    for name, attempt in attempts.items():
        with pytest.raises(NoPermissionError):
            attempt()
            pytest.fail(f"{role} may {name}")
    assert acl_redis.admin.xlen(own) >= 1  # nothing above removed it


def test_the_operator_publishes_through_the_ledger_and_its_reader_only_reads(acl_redis):
    s = acl_redis.streams
    operator = acl_redis.client(OPERATOR)
    envelope = build_envelope("unit.received", {"manufacturer": "acme", "serial": f.serial(), "sku": "TV-55",
                                                "location": "dc"}, source="test/acl", id="op-1")
    publisher = LedgerPublisher(operator, s)
    entry = (envelope, envelope.model_dump_json(exclude_none=True))
    [(added, entry_id)] = publisher([entry])
    [(again, same_id)] = publisher([entry])
    assert added and not again and same_id == entry_id  # the ledger works with the operator's rights
    with pytest.raises(NoPermissionError):
        operator.xrange(s.for_type("unit.received"))
    # The script runs with the operator's rights: it cannot XADD an internal type either.
    forged = build_envelope("unit.received", envelope.data, source="test/acl", id="op-2")
    forged_type = forged.model_copy(update={"type": "recall.owner_notified"})
    [outcome] = publisher([(forged_type, forged_type.model_dump_json(exclude_none=True))])
    assert refused(outcome)

    read = acl_redis.client(OPERATOR_READER)
    assert read.xrevrange(s.for_type("unit.received"), count=1)[0][0].decode() == entry_id
    assert read.xlen(s.for_type("unit.received")) >= 1 and read.info("server")["redis_version"]
    for name, attempt in {
        "XADD": lambda: read.xadd(s.for_type("unit.received"), {ENTRY_FIELD: "{}"}),
        "XACK": lambda: read.xack(s.for_type("unit.received"), "inventory", entry_id),
        "XGROUP": lambda: read.xgroup_create(s.for_type("unit.received"), "x", id="0"),
        "XDEL": lambda: read.xdel(s.for_type("unit.received"), entry_id),
        "XTRIM": lambda: read.xtrim(s.for_type("unit.received"), maxlen=0),
        "XREADGROUP": lambda: read.xreadgroup("inventory", "x", {s.for_type("unit.received"): ">"}),
        "FLUSHALL": lambda: read.flushall(),
        "CONFIG": lambda: read.config_get("*"),
        "HGET ledger": lambda: read.hget(s.published_ledger(), f"test/acl {envelope.id}"),
    }.items():
        with pytest.raises(NoPermissionError):
            attempt()
            pytest.fail(f"operator-reader may {name}")


def test_a_service_writer_publishes_only_its_own_types_and_dead_letters(acl_redis):
    s = acl_redis.streams
    for service in INSTALLED:
        own = set(SERVICE_TYPES[service]) | ({"warranty.claim.submitted", "return.requested",
                                              "customer.erasure.requested"} if service == "warranty" else set())
        targets = [s.for_type(t) for t in ALL_TYPES] + [s.dead_letters(other) for other in INSTALLED]
        results = xadd_each(acl_redis.client(writer(service)), targets)
        for event_type in ALL_TYPES:
            result = results[s.for_type(event_type)]
            assert refused(result) == (event_type not in own), (service, event_type, result)
        for other in INSTALLED:
            assert refused(results[s.dead_letters(other)]) == (other != service), (service, other)
        # An erasure rewrites the service's own dead letters (shared/erasure.py): read, delete; no one else's.
        client = acl_redis.client(writer(service))
        assert client.xrange(s.dead_letters(service), count=1) is not None
        assert client.xdel(s.dead_letters(service), "0-1") == 0
        with pytest.raises(NoPermissionError):
            client.xrange(s.dead_letters("recalls" if service != "recalls" else "theft"))
        with pytest.raises(NoPermissionError):
            client.xrange(s.for_type("unit.sold"))
    with pytest.raises(NoPermissionError):  # the example of the issue
        acl_redis.client(writer("inventory")).xadd(s.for_type("recall.owner_notified"), {ENTRY_FIELD: "{}"})


def test_a_service_reader_reads_acks_and_claims_its_streams_and_writes_nothing(acl_redis):
    s = acl_redis.streams
    for service in INSTALLED:
        consumed = load(service).event_types
        client = acl_redis.client(reader(service))
        stream = s.for_type(consumed[0])
        client.xgroup_create(stream, service, id="$", mkstream=True)  # entries of earlier tests are not ours
        entry = acl_redis.admin.xadd(stream, {ENTRY_FIELD: "{}"}).decode()
        [[_, [(got, _)]]] = client.xreadgroup(service, "c1", {stream: ">"}, count=1)
        assert got.decode() == entry
        claimed = client.xautoclaim(stream, service, "c2", min_idle_time=0, start_id="0-0", count=1)
        assert [i.decode() for i, _ in claimed[1]] == [entry]
        assert client.xpending(stream, service)["pending"] == 1
        assert client.xack(stream, service, entry) == 1
        assert client.xinfo_groups(stream) and client.xlen(stream) >= 1
        for target in [s.for_type(t) for t in ALL_TYPES] + [s.dead_letters(service)]:
            with pytest.raises(NoPermissionError):
                client.xadd(target, {ENTRY_FIELD: "{}"})
        foreign = next(t for t in ALL_TYPES if t not in consumed)
        with pytest.raises(NoPermissionError):
            client.xrange(s.for_type(foreign))
        with pytest.raises(NoPermissionError):
            client.xgroup_create(s.for_type(foreign), service, id="0", mkstream=True)


def test_the_default_user_is_off_and_admin_may_do_anything(acl_redis):
    anonymous = redis.Redis(port=acl_redis.process.port, driver_info=None)
    with pytest.raises((AuthenticationError, ResponseError)) as raised:
        anonymous.ping()
    assert "NOAUTH" in str(raised.value) or "auth" in str(raised.value).lower()
    with pytest.raises(AuthenticationError):
        redis.Redis(port=acl_redis.process.port, username="default", password="", driver_info=None).ping()
    admin = acl_redis.admin
    assert admin.config_get("appendonly") == {"appendonly": "yes"}
    assert "user default off" in " ".join(u for u in admin.acl_list() if u.startswith("user default"))
    rules = {line.split()[1]: line for line in admin.acl_list()}
    assert [name for name, line in rules.items() if "+@all" in line] == [ADMIN]
    assert ADMIN in rules and all(name in rules for name in (*ROLES, OPERATOR_READER))


def test_credentials_are_made_saved_and_revoked_through_the_admin_user(acl_redis, tmp_path):
    s = acl_redis.streams
    admin_url = acl_redis.url(ADMIN)
    made = create(admin_url, acl_redis.data_dir, s, "law-enforcement", f"metro-pd-{f.serial('').lower()}")
    assert made.user == credential_user("law-enforcement", made.user.split(".", 1)[1])
    assert made.file.stat().st_mode & 0o777 == 0o600 and made.file.read_text().strip() == made.url
    saved = (acl_redis.data_dir / "run" / "users.acl").read_text()
    assert f"user {made.user} on" in saved  # ACL SAVE wrote it to the file the server loads
    assert (acl_redis.data_dir / "run" / "users.acl").stat().st_mode & 0o777 == 0o600
    police = redis.Redis.from_url(made.url, driver_info=None)
    police.xadd(s.for_type("theft.reported"), {ENTRY_FIELD: "{}"})
    with pytest.raises(NoPermissionError):
        police.xadd(s.for_type("unit.sold"), {ENTRY_FIELD: "{}"})
    # A restart rewrites the file from this build's rules and keeps the credential.
    prepare_embedded(acl_redis.data_dir, s, acl_redis.process.port)
    assert acl_redis.admin.execute_command("ACL", "LOAD") in (b"OK", "OK", True)
    # A new connection with the saved URL: Redis 7 may close connections of users an ACL LOAD replaced.
    police.close()
    police = redis.Redis.from_url(made.url, driver_info=None)
    police.xadd(s.for_type("theft.recovered"), {ENTRY_FIELD: "{}"})
    assert revoke(admin_url, acl_redis.data_dir, made.user.split(".", 1)[1]) == made.user
    with pytest.raises(redis.ConnectionError):  # its open connection was closed, and it cannot log in
        police.xadd(s.for_type("theft.reported"), {ENTRY_FIELD: "{}"})
    assert not made.file.exists()
    assert f"user {made.user} " not in (acl_redis.data_dir / "run" / "users.acl").read_text()
    acl_redis.admin.acl_log_reset()  # the refusals above were the point


@pytest.fixture(params=redis_binaries())
def own_acl_redis(request, tmp_path):
    """A server of its own: streams no other test wrote to."""
    server = start_acl_redis(tmp_path / "redis", binary=request.param)
    yield server
    server.stop()


async def test_a_service_runs_as_its_own_two_users_and_redis_refuses_it_nothing(own_acl_redis, tmp_path):
    """Warranty in-process with its reader and writer: applies events, dead-letters poison (XADD as
    writer, XACK as reader), publishes its decisions from the outbox and a counter's claim from its
    HTTP API; ACL LOG stays empty, so every command it needed was granted."""
    acl_redis = own_acl_redis
    base = make_settings(acl_redis.url(reader("warranty")), {}, tmp_path)
    settings = Settings(**{**base.model_dump(), "stream_prefix": acl_redis.streams.prefix,
                           "redis_writer_url": acl_redis.url(writer("warranty"))})
    s = acl_redis.streams
    sn = f.serial()
    async with running(warranty, settings) as app, http(app) as client:
        for event, role in ((f.received("acme", sn, minutes=0), "warehouse"),
                            (f.sold("acme", sn, minutes=10, customer_id="C-1", receipt_id="R-1"), "pos")):
            acl_redis.client(role).xadd(s.for_type(event.type), {ENTRY_FIELD: event.envelope.model_dump_json()})
        acl_redis.client("pos").xadd(s.for_type("unit.sold"), {ENTRY_FIELD: "{not json"})
        await wait_for(lambda: acl_redis.admin.xlen(s.dead_letters("warranty")) == 1, message="poison dead-lettered")
        answer = await client.post("/claims/decisions", json={
            "claim_id": f"CL-{sn}", "manufacturer": "acme", "serial": sn, "customer_id": "C-1", "issue": "no picture"})
        assert answer.status_code == 200, answer.text
        await wait_for(lambda: acl_redis.admin.xlen(s.for_type("warranty.claim.decided")) >= 1,
                       message="decision published from the outbox")
        users = {c["user"] for c in acl_redis.admin.client_list()}
        assert {reader("warranty"), writer("warranty")} <= users
    [(_, letter)] = acl_redis.admin.xrange(s.dead_letters("warranty"))
    assert letter[b"reason"] == b"not_json"
    pending = acl_redis.admin.xpending(s.for_type("unit.sold"), "warranty")
    assert pending["pending"] == 0  # acked by the reader after the writer's copy
    submitted = acl_redis.admin.xrange(s.for_type("warranty.claim.submitted"))
    assert json.loads(submitted[-1][1][ENTRY_FIELD.encode()])["data"]["claim_id"] == f"CL-{sn}"
    assert acl_redis.admin.acl_log() == []
    assert set(INBOUND_TYPES) | set(INTERNAL_TYPES) == set(ALL_TYPES)


@pytest.mark.parametrize("binary", redis_binaries())
def test_the_compose_redis_loads_its_users_from_the_template_and_keeps_made_credentials(binary, tmp_path):
    """deploy/redis/start.sh as the compose Redis runs it (the image's entrypoint replaced by a shim
    that runs redis-server as it is): passwords from the variables, credentials made earlier kept."""
    import os
    import subprocess
    import time

    from serialtrack.credentials import password_variable
    from serialtrack.redis_server import free_port
    from shared.acl import parse_acl_file, password_hash

    deploy = Path(__file__).resolve().parents[2] / "deploy" / "redis"
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "docker-entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')
    (shim / "docker-entrypoint.sh").chmod(0o755)
    (shim / "redis-server").symlink_to(binary)
    acl_file = tmp_path / "users.acl"
    till = "pos.till-7"
    acl_file.write_text(f"user {till} on {password_hash('till-secret')} ~serialtrack:unit.sold resetchannels "
                        "-@all +ping +hello +auth +xadd\n")
    users = parse_acl_file((deploy / "users.acl.template").read_text())
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}",
           **{password_variable(u): f"secret-of-{u}" for u in users if u != "default"}}
    port = free_port()
    process = subprocess.Popen(["sh", str(deploy / "start.sh"), str(deploy / "users.acl.template"), str(acl_file),
                                "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def as_user(user: str, password: str) -> redis.Redis:
            return redis.Redis(port=port, username=user, password=password, driver_info=None)

        deadline = time.monotonic() + 10
        while True:
            try:
                as_user("operator-reader", "secret-of-operator-reader").ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "the compose Redis did not start"
                time.sleep(0.05)
        as_user("inventory-writer", "secret-of-inventory-writer").xadd("serialtrack:unit.quarantined", {"a": "b"})
        with pytest.raises(NoPermissionError):
            as_user("inventory-writer", "secret-of-inventory-writer").xadd("serialtrack:theft.alert", {"a": "b"})
        as_user(till, "till-secret").xadd("serialtrack:unit.sold", {"a": "b"})  # made before: still there
        with pytest.raises(AuthenticationError):
            redis.Redis(port=port, driver_info=None).ping()
        assert "secret-of" not in acl_file.read_text()  # hashes only
        assert acl_file.stat().st_mode & 0o777 == 0o600
    finally:
        process.terminate()
        process.wait(10)
    missing = dict(env)
    del missing[password_variable("pos")]
    refused_start = subprocess.run(["sh", str(deploy / "start.sh"), str(deploy / "users.acl.template"),
                                    str(tmp_path / "other.acl")], env=missing, capture_output=True, text=True,
                                   timeout=30, check=False)
    assert refused_start.returncode == 1 and "REDIS_POS_PASSWORD is not set" in refused_start.stderr


async def test_a_failed_ack_after_dead_lettering_dead_letters_the_entry_again_and_loses_nothing(own_acl_redis,
                                                                                                tmp_path):
    """The documented cost of two users: the copy (writer) succeeds, the ack (reader) does not (here
    Redis refuses it for a while, as a crash between the two would leave it), so the entry is
    redelivered and dead-lettered again: the same stream and entry_id twice, and nothing pending."""
    acl_redis = own_acl_redis
    base = make_settings(acl_redis.url(reader("theft")), {}, tmp_path)
    settings = Settings(**{**base.model_dump(), "stream_prefix": acl_redis.streams.prefix,
                           "redis_writer_url": acl_redis.url(writer("theft"))})
    stream = acl_redis.streams.for_type("unit.sold")
    letters = acl_redis.streams.dead_letters("theft")
    admin = acl_redis.admin
    async with running(load("theft"), settings):
        admin.execute_command("ACL", "SETUSER", reader("theft"), "-xack")
        entry = acl_redis.client("pos").xadd(stream, {ENTRY_FIELD: "{not json"}).decode()
        await wait_for(lambda: admin.xlen(letters) >= 1, message="first copy")
        assert admin.xpending(stream, "theft")["pending"] == 1  # copied, not acked
        admin.execute_command("ACL", "SETUSER", reader("theft"), "+xack")
        await wait_for(lambda: admin.xpending(stream, "theft")["pending"] == 0, message="acked after redelivery")
    copies = [fields for _, fields in admin.xrange(letters)]
    assert len(copies) >= 2
    assert {(c[b"stream"].decode(), c[b"entry_id"].decode(), c[b"reason"]) for c in copies} == {
        (stream, entry, b"not_json")}

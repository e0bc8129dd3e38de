"""Retention (shared/retention.py) against a real Redis with the users `serialtrack up` configures, run
as the ``archiver`` user: an entry is archived, then trimmed, only once every group that should read
it acked it and it is older than the window; the archive holds exactly what was trimmed, as on the
wire; a crash's remains and a lost state neither lose nor duplicate an entry for a reader."""

from __future__ import annotations

import gzip

import pytest
import redis

from shared.retention import STATE_FILE, Archive, raw_client, read_archive_file, retention_pass
from tests.support.acl_redis import redis_binaries, start_acl_redis

# Which services read which types, for these tests (the real build's map is longer).
CONSUMED = {"inventory": ("unit.sold", "unit.received"), "warranty": ("unit.sold", "unit.received")}
HOUR = 3600.0


@pytest.fixture(params=redis_binaries())
def server(request, tmp_path):
    handle = start_acl_redis(tmp_path, binary=request.param)
    yield handle
    handle.stop()


def _ids(client, stream: str):
    return [entry_id.decode() for entry_id, _ in client.xrange(stream)]


def _read(client, stream: str, group: str, count: int):
    [[_, entries]] = client.xreadgroup(group, "c1", {stream: ">"}, count=count)
    return [entry_id.decode() for entry_id, _ in entries]


def _pass(server, archive, retention=0.0, deadletters=HOUR):
    client = raw_client(server.url("archiver"))
    try:
        return retention_pass(client, archive, server.streams, CONSUMED, retention, deadletters)
    finally:
        client.close()


def _by_stream(report):
    return {s.stream: s for s in report.streams}


def test_only_what_every_group_acked_and_the_window_let_go_is_archived_then_trimmed(server, tmp_path):
    admin = server.admin
    streams = server.streams
    sold, received, unread = (streams.for_type("unit.sold"), streams.for_type("unit.received"),
                              streams.for_type("foo.bar"))
    dead = streams.dead_letters("inventory")
    # Entries as a producer may write them: an envelope, bytes that are not UTF-8, a repeated field name.
    admin.xadd(sold, {"event": '{"specversion":"1.0","id":"é-1"}'})
    admin.xadd(sold, {"event": b"\xff\xfe not utf-8"})
    admin.execute_command("XADD", sold, "*", "event", "one", "event", "two")
    for n in range(7):
        admin.xadd(sold, {"event": f"e{n}"})
    wire = raw_client(server.url("admin")).xrange(sold)  # the entries as Redis sends them
    ids = _ids(admin, sold)
    for group in ("inventory", "warranty"):
        admin.xgroup_create(sold, group, id="0")
    assert _read(admin, sold, "inventory", 10) == ids
    admin.xack(sold, "inventory", *ids[:6])  # 6..9 stay pending
    assert _read(admin, sold, "warranty", 8) == ids[:8]
    admin.xack(sold, "warranty", *ids[:8])  # 8, 9 never delivered
    # A stream whose second reader never started: its group does not exist.
    admin.xadd(received, {"event": "r0"})
    admin.xgroup_create(received, "inventory", id="0")
    _read(admin, received, "inventory", 10)
    admin.xack(received, "inventory", *_ids(admin, received))
    for n in range(3):
        admin.xadd(unread, {"event": f"u{n}"})
        admin.xadd(dead, {"stream": sold, "reason": "bad_data", "original": f"d{n}"})

    archive = Archive(tmp_path / "archive")
    report = _pass(server, archive, retention=HOUR)  # everything is younger than an hour
    assert (report.archived, report.trimmed) == (0, 0)
    assert admin.xlen(sold) == 10

    report = _pass(server, archive, retention=0.0)
    by_stream = _by_stream(report)
    assert (by_stream[sold].archived, by_stream[sold].trimmed, by_stream[sold].length) == (6, 6, 4)
    assert by_stream[sold].held_back == [f"group {group} has not read or acked every entry older than the window"
                                         for group in ("inventory", "warranty")]  # 6..9 pending; 8, 9 not delivered
    assert _ids(admin, sold) == ids[6:]  # the oldest pending entry and all after it stay
    assert by_stream[sold].archived_through == ids[5]
    assert by_stream[received].trimmed == 0 and admin.xlen(received) == 1
    assert any("group warranty does not exist yet" in r for r in by_stream[received].held_back)
    assert by_stream[unread].kind == "unread" and by_stream[unread].length == 3 and admin.xlen(unread) == 3
    assert report.as_dict()["unread_streams"] == {unread: 3}
    assert by_stream[dead].kind == "deadletter" and admin.xlen(dead) == 3  # its own window: an hour

    archived = list(archive.read(sold))
    assert [(e.id, e.fields) for e in archived] == [
        (entry_id.decode(), tuple(zip(flat[0::2], flat[1::2], strict=True))) for entry_id, flat in wire[:6]]
    assert archived[1].fields == ((b"event", b"\xff\xfe not utf-8"),)
    assert archived[2].fields == ((b"event", b"one"), (b"event", b"two"))
    [day_file] = archive.files(sold)
    assert gzip.decompress(day_file.read_bytes()).count(b"\n") == 6  # plain gzip readers read it too

    again = _pass(server, archive, retention=0.0)
    assert (again.archived, again.trimmed) == (0, 0)  # nothing new is done: idempotent

    admin.xack(sold, "inventory", *ids[6:8])
    report = _pass(server, archive, retention=0.0, deadletters=0.0)
    by_stream = _by_stream(report)
    assert (by_stream[sold].archived, by_stream[sold].trimmed) == (2, 2)  # 8, 9: warranty has not read them
    assert by_stream[sold].held_back == [f"group {group} has not read or acked every entry older than the window"
                                         for group in ("inventory", "warranty")]  # 8, 9: pending; not delivered
    _read(admin, sold, "warranty", 10)
    for group in ("inventory", "warranty"):  # every group done: nothing holds the stream back
        admin.xack(sold, group, *ids[8:])
    report = _pass(server, archive, retention=0.0)
    assert (_by_stream(report)[sold].trimmed, _by_stream(report)[sold].held_back) == (2, [])
    assert admin.xlen(sold) == 0 and _by_stream(_pass(server, archive)).get(sold).held_back == []  # empty: nothing held
    assert (by_stream[dead].archived, by_stream[dead].trimmed, admin.xlen(dead)) == (3, 3, 0)
    assert [e.id for e in archive.read(sold)] == ids
    assert [dict(e.fields)[b"original"] for e in archive.read(dead)] == [b"d0", b"d1", b"d2"]


def test_a_crash_mid_archive_neither_loses_nor_duplicates_for_a_reader(server, tmp_path):
    admin = server.admin
    stream = server.streams.for_type("unit.sold")
    for n in range(6):
        admin.xadd(stream, {"event": f"e{n}"})
    ids = _ids(admin, stream)
    for group in ("inventory", "warranty"):
        admin.xgroup_create(stream, group, id="0")
        _read(admin, stream, group, 10)
        admin.xack(stream, group, *ids[:2])
    archive = Archive(tmp_path / "archive")
    assert _pass(server, archive).trimmed == 2
    [day_file] = archive.files(stream)
    committed = day_file.stat().st_size

    # A crash during an append leaves half a gzip member after the committed length.
    with open(day_file, "ab") as handle:
        handle.write(gzip.compress(b'{"stream":"x","id":"9-9","fields":[]}\n' * 50)[:40])
    assert day_file.stat().st_size > committed
    assert [e.id for e in archive.read(stream)] == ids[:2]  # the state's committed length hides it
    for group in ("inventory", "warranty"):
        admin.xack(stream, group, *ids[2:4])
    assert _pass(server, archive).trimmed == 2  # the remains are cut off before appending
    assert [e.id for e in read_archive_file(day_file, committed=None)] == ids[:4]

    # A crash after the fsync but before the trim, and the state file lost with it: the entries
    # are archived again by the next pass; the reader keeps each id once.
    archive.append(stream, [e for e in _live(server, stream)][:1])
    (archive.stream_dir(stream) / STATE_FILE).unlink()
    for group in ("inventory", "warranty"):
        admin.xack(stream, group, *ids[4:])
    report = _pass(server, archive)
    assert report.trimmed == 2 and admin.xlen(stream) == 0
    in_file = [e.id for e in read_archive_file(day_file)]
    assert in_file == ids[:4] + [ids[4]] + ids[4:]  # one entry twice in the file ...
    assert [e.id for e in archive.read(stream)] == ids  # ... once for a reader


def _live(server, stream):
    from shared.retention import read_live

    client = raw_client(server.url("admin"))
    try:
        return list(read_live(client, stream))
    finally:
        client.close()


def test_the_archiver_user_may_trim_and_read_but_not_write_ack_or_touch_other_keys(server):
    archiver = server.client("archiver")
    stream = server.streams.for_type("unit.sold")
    entry = server.admin.xadd(stream, {"event": "x"})
    server.admin.xgroup_create(stream, "inventory", id="0")
    server.admin.set("elsewhere", "1")
    assert archiver.xrange(stream) and archiver.xlen(stream) == 1
    assert archiver.xinfo_groups(stream)[0]["name"] in (b"inventory", "inventory")
    archiver.xpending(stream, "inventory")
    for refused in (lambda: archiver.xadd(stream, {"event": "forged"}),
                    lambda: archiver.xdel(stream, entry),
                    lambda: archiver.xack(stream, "inventory", entry),
                    lambda: archiver.xgroup_setid(stream, "inventory", "$"),
                    lambda: archiver.delete(stream),
                    lambda: archiver.get("elsewhere"),
                    lambda: archiver.xrange("other:unit.sold")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
    assert archiver.xtrim(stream, minid="0-1", approximate=False) == 0

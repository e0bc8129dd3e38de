"""The archive on disk (shared/retention.py, docs/retention.md): the documented line format, day files
made of gzip members, and a rewrite (what an erasure does) that keeps every entry readable."""

from __future__ import annotations

import gzip
import json

from shared.retention import Archive, ArchivedEntry, read_archive_file

DAY_1 = "1764288000000"  # 2025-11-28T00:00:00Z in ms
DAY_2 = "1764374400000"  # the next UTC day


def entry(entry_id: str, value: bytes, stream: str = "serialtrack:unit.sold") -> ArchivedEntry:
    return ArchivedEntry(stream, entry_id, ((b"event", value),))


def test_lines_are_the_documented_json_and_files_are_per_utc_day(tmp_path):
    archive = Archive(tmp_path)
    archive.append("serialtrack:unit.sold", [entry(f"{DAY_1}-0", '{"id":"é"}'.encode()),
                                             entry(f"{DAY_1}-1", b"\xff not utf-8")])
    archive.append("serialtrack:unit.sold", [entry(f"{DAY_2}-0", b"next day")])
    directory = tmp_path / "serialtrack" / "unit.sold"
    assert sorted(p.name for p in directory.iterdir()) == ["2025-11-28.jsonl.gz", "2025-11-29.jsonl.gz", "state.json"]
    lines = gzip.decompress((directory / "2025-11-28.jsonl.gz").read_bytes()).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"stream": "serialtrack:unit.sold", "id": f"{DAY_1}-0", "fields": [["event", '{"id":"é"}']]},
        {"stream": "serialtrack:unit.sold", "id": f"{DAY_1}-1", "fields": [["event", {"base64": "/yBub3QgdXRmLTg="}]]},
    ]
    state = json.loads((directory / "state.json").read_text())
    assert (state["archived_through"], state["entries"]) == (f"{DAY_2}-0", 3)
    assert [e.field_map()[b"event"] for e in archive.read("serialtrack:unit.sold")] == [
        '{"id":"é"}'.encode(), b"\xff not utf-8", b"next day"]
    assert archive.streams() == ["serialtrack:unit.sold"]


def test_a_rewrite_changes_every_entry_and_keeps_the_archive_readable(tmp_path):
    archive = Archive(tmp_path)
    stream = "serialtrack:deadletter:warranty"
    archive.append(stream, [entry(f"{DAY_1}-0", b'{"customer_id":"C-77"}', stream)])
    archive.append(stream, [entry(f"{DAY_1}-1", b'{"customer_id":"C-78"}', stream)])  # a second member

    def pseudonymize(e: ArchivedEntry) -> ArchivedEntry:
        return ArchivedEntry(e.stream, e.id, tuple((k, v.replace(b"C-77", b"p-1a2b")) for k, v in e.fields))

    assert archive.rewrite(stream, pseudonymize) == 2
    [day_file] = archive.files(stream)
    assert b"C-77" not in gzip.decompress(day_file.read_bytes())
    assert [e.field_map()[b"event"] for e in archive.read(stream)] == [b'{"customer_id":"p-1a2b"}',
                                                                       b'{"customer_id":"C-78"}']
    assert [e.id for e in read_archive_file(day_file, archive.state(stream).files[day_file.name])] == [
        f"{DAY_1}-0", f"{DAY_1}-1"]
    archive.append(stream, [entry(f"{DAY_1}-2", b"after", stream)])  # appends go on after a rewrite
    assert [e.id for e in archive.read(stream)] == [f"{DAY_1}-0", f"{DAY_1}-1", f"{DAY_1}-2"]

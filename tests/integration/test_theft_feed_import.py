"""Law-enforcement feed import (CSV and JSONL): per-line errors, ranges, duplicates, progress,
stable ids; and a real import through Redis into the theft registry."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from services.theft.app import definition as theft
from services.theft.feed_import import FeedError, import_feed
from shared.envelope import decode_envelope_bytes
from shared.publishing import publish as publish_envelopes
from tests.support import factories as f
from tests.support.running import http, running, wait_for

HEADER = "agency,case_number,manufacturer,serial,serial_last,action,description,reported_at,contact\n"


class Collector:
    def __init__(self):
        self.batches: list[list] = []
        self.progress: list[tuple[int, int]] = []

    async def publish(self, envelopes):
        self.batches.append(list(envelopes))

    def on_progress(self, done, total):
        self.progress.append((done, total))

    @property
    def envelopes(self):
        return [e for batch in self.batches for e in batch]


async def test_csv_feed_publishes_good_lines_and_reports_bad_ones_by_line(tmp_path):
    path = tmp_path / "feed.csv"
    path.write_text(
        HEADER
        + "metro-pd,C-1,ACME,sn-001,,,\"TV, 55\"\" OLED\",2026-11-01T08:00:00Z,Det. Ray 555-0100\n"
        + "metro-pd,C-2,acme,SN000010,SN000500,,pallet,,\n"
        + "metro-pd,C-3,acme,bad serial,,,,,\n"
        + "\n"
        + "metro-pd,C-1,acme,SN-001,,recovered,,,\n"
        + "metro-pd,C-4,acme,SN-002,,stolen,,,\n"
        + "metro-pd,C-5,acme,SN-003,,,,yesterday,\n"
        + "metro-pd,C-6,acme,SN-004,,,,2026-11-01T08:00:00,\n"
        + "metro-pd,C-7,acme,SN-005\n"
        + "metro-pd,C-8,acme,SN1,XY9,,,,\n"
        + "metro-pd,C-9,acme,SN-009,,recovered,oops,,\n"
        + ",C-10,acme,SN-010,,,,,\n",
        encoding="utf-8",
    )
    sink = Collector()
    report = await import_feed(path, sink.publish, sink.on_progress, source="feed/metro-pd", batch_size=2)

    assert report.format == "csv"
    assert (report.published, report.rejected, report.duplicates) == (3, 8, 0)
    errors = {r.line: r.error for r in report.errors}
    assert set(errors) == {4, 7, 8, 9, 10, 11, 12, 13}
    assert "serial 'bad serial' is not valid" in errors[4]
    assert "action 'stolen'" in errors[7]
    assert "reported_at 'yesterday'" in errors[8]
    assert "time zone" in errors[9]
    assert "expected 9 fields, got 4" in errors[10]
    assert "prefix" in errors[11]
    assert "a recovery takes no description" in errors[12]
    assert errors[13].startswith("agency")

    first, pallet, recovered = sink.envelopes
    assert [len(b) for b in sink.batches] == [2, 1]
    assert (first.type, first.source, first.data["serial"], first.data["manufacturer"]) == (
        "theft.reported", "feed/metro-pd", "SN-001", "acme")
    assert first.data["description"] == 'TV, 55" OLED' and first.data["contact"] == "Det. Ray 555-0100"
    assert first.time.isoformat() == "2026-11-01T08:00:00+00:00"  # the report's time
    assert pallet.data["serial_range"] == {"prefix": "SN", "first": 10, "last": 500, "width": 6}
    assert recovered.type == "theft.recovered"
    assert [r.status for r in report.lines if r.line in (2, 3, 6)] == ["published"] * 3
    assert sink.progress[-1] == (path.stat().st_size, path.stat().st_size)
    assert all(done <= total for done, total in sink.progress)


async def test_reimporting_the_same_feed_gives_the_same_ids_and_repeats_are_flagged(tmp_path):
    path = tmp_path / "feed.csv"
    path.write_text(HEADER + "metro-pd,C-1,acme,SN-1,,,,,\nmetro-pd,C-1,acme,SN-1,,,,,\nmetro-pd,C-1,acme,SN-2,,,,,\n")
    one, two = Collector(), Collector()
    first = await import_feed(path, one.publish)
    await import_feed(path, two.publish)
    assert [e.id for e in one.envelopes] == [e.id for e in two.envelopes]
    assert len(one.envelopes) == 2
    assert [(r.line, r.status, r.error) for r in first.lines if r.status == "duplicate"] == [
        (3, "duplicate", "repeats line 2")]


async def test_jsonl_feed_with_lists_ranges_ids_and_bad_lines(tmp_path):
    path = tmp_path / "feed.jsonl"
    lines = [
        {"agency": "state-police", "case_number": "SP-1", "manufacturer": "acme", "serials": ["A1", "A2"],
         "id": "sp-0001", "time": "2026-11-02T10:00:00+01:00"},
        {"agency": "state-police", "case_number": "SP-2", "manufacturer": "acme",
         "serial_range": {"prefix": "R", "first": 1, "last": 50}},
        "not an object",
        {"agency": "state-police", "case_number": "SP-3", "manufacturer": "acme", "serial": "B1", "colour": "red"},
        {"agency": "state-police", "case_number": "SP-4", "manufacturer": "acme"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    sink = Collector()
    report = await import_feed(path, sink.publish)
    assert report.format == "jsonl"
    assert report.published == 2
    errors = {r.line: r.error for r in report.errors}
    assert "expected a JSON object" in errors[3]
    assert "unknown key(s) colour" in errors[4]
    assert "exactly one of serial, serials or serial_range" in errors[5]
    assert "not valid JSON" in errors[6]
    listed, ranged = sink.envelopes
    assert listed.id == "sp-0001" and listed.time.isoformat() == "2026-11-02T09:00:00+00:00"
    assert listed.data["serials"] == ["A1", "A2"]
    assert ranged.data["serial_range"]["last"] == 50
    assert report.to_dict()["lines"][0] == {"line": 1, "status": "published", "type": "theft.reported",
                                            "id": "sp-0001", "error": None}


async def test_unusable_files_fail_as_a_whole_and_publish_nothing(tmp_path):
    sink = Collector()
    with pytest.raises(FeedError, match="no such file"):
        await import_feed(tmp_path / "missing.csv", sink.publish)
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("agency,case,manufacturer,serial\nmetro-pd,C-1,acme,SN-1\n")
    with pytest.raises(FeedError, match="unknown CSV column.*'case'"):
        await import_feed(bad_header, sink.publish)
    missing = tmp_path / "missing-column.csv"
    missing.write_text("agency,manufacturer,serial\nmetro-pd,acme,SN-1\n")
    with pytest.raises(FeedError, match="lacks required column.*case_number"):
        await import_feed(missing, sink.publish)
    assert sink.envelopes == []
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert (await import_feed(empty, sink.publish)).lines == []


async def test_a_sync_publish_callback_works_too(tmp_path):
    path = tmp_path / "feed.txt"  # no telling suffix: the content says CSV
    path.write_text(HEADER + "metro-pd,C-1,acme,SN-1,,,,,\n")
    got = []
    report = await import_feed(path, got.extend)
    assert report.format == "csv" and [e.data["serial"] for e in got] == ["SN-1"]


async def test_an_imported_feed_lands_in_the_registry_and_alerts(settings, tmp_path):
    sn, first = f.serial(), f.serial("P")
    path = tmp_path / "feed.csv"
    path.write_text(HEADER + f"metro-pd,C-77,acme,{sn},,,laptop,2026-11-01T08:00:00Z,\n"
                    + f"metro-pd,C-78,acme,{first}001,{first}010,,,2026-11-01T08:00:00Z,\n")
    client = aioredis.from_url(settings.redis_url)

    async def publish(envelopes):
        await publish_envelopes(client, settings.streams, envelopes)

    try:
        async with running(theft, settings) as app, http(app) as api:
            report = await import_feed(path, publish, source="feed/metro-pd")
            assert report.published == 2
            await publish_envelopes(client, settings.streams, [f.sold("acme", f"{first}004", minutes=10).envelope])

            async def hit():
                unit = (await api.get(f"/stolen/acme/{first}004")).json()
                return unit["alerts"] or None

            [alert] = await wait_for(hit, message="alert from an imported range")
            assert alert["case_number"] == "C-78"
            unit = (await api.get(f"/stolen/acme/{sn}")).json()
            assert unit["stolen"] and unit["reports"][0]["description"] == "laptop"
            assert unit["reports"][0]["event_source"] == "feed/metro-pd"
            # Importing again changes nothing: same ids, dropped by the inbox.
            await import_feed(path, publish, source="feed/metro-pd")
            entries = await client.xrange(settings.streams.for_type("theft.reported"))
            assert len({decode_envelope_bytes(fields[b"event"]).id for _, fields in entries}) == 2
            check = await api.post("/checks", json={"items": [{"manufacturer": "acme", "serial": sn}]})
            assert check.json()["stolen"] == 1
            assert len((await api.get(f"/stolen/acme/{sn}")).json()["reports"]) == 1
    finally:
        await client.aclose()

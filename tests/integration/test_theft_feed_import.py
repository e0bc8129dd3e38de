"""Law-enforcement feed import (CSV and JSONL): per-line errors, ranges, separators, dates,
duplicates, progress, stable ids; and a real import through Redis into the theft registry, by the
path every file the CLI publishes takes (serialtrack/publishing.py)."""

from __future__ import annotations

import json

import pytest
import redis
import redis.asyncio as aioredis

from serialtrack.publishing import FileReport, LedgerPublisher, entry_bodies, publish_lines
from services.theft.app import definition as theft
from services.theft.feed_import import FeedError, feed_lines
from shared.envelope import decode_envelope_bytes
from shared.publishing import publish as publish_envelopes
from shared.signing import operator_signer
from tests.support import factories as f
from tests.support.running import http, running, wait_for

HEADER = "agency,case_number,manufacturer,serial,serial_last,action,description,reported_at,contact\n"


def read_feed(path, **options) -> tuple[str, dict[int, object]]:
    """The feed's format and each line's envelope or error, by line number."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        fmt, lines = feed_lines(handle, path, **options)
        return fmt, dict(lines)


def import_through_redis(path, settings, source: str = "feed/import", batch_size: int = 500) -> FileReport:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            fmt, lines = feed_lines(handle, path, source=source)
            return publish_lines(lines, LedgerPublisher(client, settings.streams), report=FileReport(str(path), fmt),
                                 body_of=entry_bodies(operator_signer(settings.data_dir)), batch_size=batch_size)
    finally:
        client.close()


def test_csv_feed_lines_are_envelopes_or_errors_by_line(tmp_path):
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
    fmt, lines = read_feed(path, source="feed/metro-pd")

    assert fmt == "csv"
    errors = {n: e for n, e in lines.items() if isinstance(e, str)}
    assert set(errors) == {4, 7, 8, 9, 10, 11, 12, 13}
    assert "serial 'bad serial' is not valid" in errors[4]
    assert "action 'stolen'" in errors[7]
    assert "reported_at 'yesterday'" in errors[8]
    assert "time zone" in errors[9]
    assert "expected 9 fields, got 4" in errors[10]
    assert "prefix" in errors[11]
    assert "a recovery takes no description" in errors[12]
    assert errors[13].startswith("agency")

    first, pallet, recovered = (lines[n] for n in (2, 3, 6))
    assert (first.type, first.source, first.data["serial"], first.data["manufacturer"]) == (
        "theft.reported", "feed/metro-pd", "SN-001", "acme")
    assert first.data["description"] == 'TV, 55" OLED' and first.data["contact"] == "Det. Ray 555-0100"
    assert first.time.isoformat() == "2026-11-01T08:00:00+00:00"  # the report's time
    assert pallet.data["serial_range"] == {"prefix": "SN", "first": 10, "last": 500, "width": 6}
    assert recovered.type == "theft.recovered"


def test_semicolon_and_tab_separated_feeds_and_date_only_reported_at(tmp_path):
    for separator in (";", "\t"):
        path = tmp_path / "feed.csv"
        path.write_text(separator.join(["agency", "case_number", "manufacturer", "serial", "reported_at"]) + "\n"
                        + separator.join(["metro-pd", "C-1", "acme", "SN-1", "2026-11-01"]) + "\n")
        _fmt, lines = read_feed(path)
        assert lines[2].data["reported_at"] == "2026-11-01T00:00:00Z"  # a date is that day's midnight, UTC
        assert lines[2].time.isoformat() == "2026-11-01T00:00:00+00:00"
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("agency;case;manufacturer;serial\nmetro-pd;C-1;acme;SN-1\n")
    with pytest.raises(FeedError, match="unknown CSV column.*'case'"):  # named as written, not one lump
        read_feed(unknown)


def test_reimporting_the_same_feed_gives_the_same_ids_and_repeats_are_flagged(tmp_path, settings):
    path = tmp_path / "feed.csv"
    path.write_text(HEADER + "metro-pd,C-1,acme,SN-1,,,,,\nmetro-pd,C-1,acme,SN-1,,,,,\nmetro-pd,C-1,acme,SN-2,,,,,\n")
    _fmt, once = read_feed(path)
    _fmt, twice = read_feed(path)
    assert [e.id for e in once.values()] == [e.id for e in twice.values()]
    first = import_through_redis(path, settings, batch_size=1)
    assert [(r.line, r.status, r.error) for r in first.lines] == [
        (2, "published", None), (3, "duplicate", "repeats line 2"), (4, "published", None)]
    second = import_through_redis(path, settings)
    assert [(r.status, r.entry_id) for r in second.lines if r.status != "duplicate"] == [
        ("already_published", r.entry_id) for r in first.lines if r.status == "published"]


def test_jsonl_feed_with_lists_ranges_ids_and_bad_lines(tmp_path):
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
    fmt, parsed = read_feed(path)
    assert fmt == "jsonl"
    errors = {n: e for n, e in parsed.items() if isinstance(e, str)}
    assert "expected a JSON object" in errors[3]
    assert "unknown key(s) colour" in errors[4]
    assert "exactly one of serial, serials or serial_range" in errors[5]
    assert "Value error" not in errors[5]
    assert "not valid JSON" in errors[6]
    listed, ranged = parsed[1], parsed[2]
    assert listed.id == "sp-0001" and listed.time.isoformat() == "2026-11-02T09:00:00+00:00"
    assert listed.data["serials"] == ["A1", "A2"]
    assert ranged.data["serial_range"]["last"] == 50


def test_unusable_files_fail_as_a_whole_before_any_line(tmp_path):
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("agency,case,manufacturer,serial\nmetro-pd,C-1,acme,SN-1\n")
    with pytest.raises(FeedError, match="unknown CSV column.*'case'"):
        read_feed(bad_header)
    missing = tmp_path / "missing-column.csv"
    missing.write_text("agency,manufacturer,serial\nmetro-pd,acme,SN-1\n")
    with pytest.raises(FeedError, match="lacks required column.*case_number"):
        read_feed(missing)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert read_feed(empty)[1] == {}
    no_suffix = tmp_path / "feed.txt"  # no telling suffix: the content says CSV
    no_suffix.write_text(HEADER + "metro-pd,C-1,acme,SN-1,,,,,\n")
    assert read_feed(no_suffix)[0] == "csv"


async def test_an_imported_feed_lands_in_the_registry_and_alerts(settings, tmp_path):
    sn, first = f.serial(), f.serial("P")
    path = tmp_path / "feed.csv"
    path.write_text(HEADER + f"metro-pd,C-77,acme,{sn},,,laptop,2026-11-01T08:00:00Z,\n"
                    + f"metro-pd,C-78,acme,{first}001,{first}010,,,2026-11-01T08:00:00Z,\n")
    client = aioredis.from_url(settings.redis_url)
    try:
        async with running(theft, settings) as app, http(app) as api:
            report = import_through_redis(path, settings, source="feed/metro-pd")
            assert report.count("published") == 2
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
            again = import_through_redis(path, settings, source="feed/metro-pd")
            assert again.count("already_published") == 2
            entries = await client.xrange(settings.streams.for_type("theft.reported"))
            assert len({decode_envelope_bytes(fields[b"event"]).id for _, fields in entries}) == 2
            check = await api.post("/checks", json={"items": [{"manufacturer": "acme", "serial": sn}]})
            assert check.json()["stolen"] == 1
            assert len((await api.get(f"/stolen/acme/{sn}")).json()["reports"]) == 1
    finally:
        await client.aclose()

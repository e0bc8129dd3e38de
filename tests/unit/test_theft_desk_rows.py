"""The console's theft desk row (the page's rows and the live stream's): a possible match is shown
apart from exact alerts, with its lower priority and the reported serials it resembles. The desk in
a browser is tests/e2e/test_console.py."""

from __future__ import annotations

from jinja2 import Environment, FileSystemLoader

from serialtrack.console.app import HERE, _format_time


def _row(**alert) -> str:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["t"] = _format_time
    base = {"alert_id": "a-1", "seen_at": "2026-11-01T09:20:00Z", "manufacturer": "acme", "serial": "SN1234567O",
            "event_type": "unit.sold", "location": "store-12", "terminal_id": None, "agency": "metro-pd",
            "case_number": "C-1", "status": "open"}
    return env.get_template("alert_row.html").render(a={**base, **alert}, fresh=False)


def test_a_possible_match_row_is_marked_low_priority_and_names_what_it_resembles():
    row = _row(kind="possible_match", priority="low",
               near_matches=[{"serial": "SN12345670", "reason": "homoglyph"}])
    assert 'class="alert-row possible-match"' in row and 'data-priority="low"' in row
    assert "possible match (low priority)" in row and "resembles SN12345670 (homoglyph)" in row


def test_an_exact_row_stays_high_priority():
    row = _row(kind="sighting", priority="high", near_matches=[])
    assert "possible-match" not in row and 'data-priority="high"' in row and 'class="priority-high">sighting' in row

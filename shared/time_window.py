"""The window of believable times, one definition for the bus and the HTTP edge.

A real-world fact (a receipt, a sale, a claim) cannot predate the systems that record it, and it
cannot happen tomorrow. Times outside the window are typos, unit mix-ups (seconds for an ISO
date) or clock faults, and a date such as 9999-12-31 overflows the arithmetic done on it later
(coverage ends, ages). So such times are refused where they come in: dead-lettered on the bus
(reason ``bad_time``), 422 at the HTTP edge.

Query parameters (``since``, ``until``) are filters, not facts: they get a wider, fixed range that
still keeps every computation on them finite.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=1)  # producers' clocks drift, time zones confuse: a day of slack

EARLIEST_QUERY_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_QUERY_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def latest_event_time(now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) + MAX_AHEAD


def event_time_problem(time: datetime, now: datetime | None = None) -> str | None:
    """Why ``time`` (aware) cannot be a real event's time, or None if it can."""
    if time < EARLIEST_EVENT_TIME:
        return f"time {time.isoformat()} is before {EARLIEST_EVENT_TIME.date().isoformat()}"
    latest = latest_event_time(now)
    if time > latest:
        return f"time {time.isoformat()} is more than {MAX_AHEAD.days} day ahead of the clock ({latest.isoformat()})"
    return None


def query_time_problem(time: datetime) -> str | None:
    """Why ``time`` (aware) is outside the documented range of time filters, or None."""
    if not EARLIEST_QUERY_TIME <= time < LATEST_QUERY_TIME:
        return (f"time {time.isoformat()} is outside {EARLIEST_QUERY_TIME.date().isoformat()}"
                f"..{LATEST_QUERY_TIME.date().isoformat()}")
    return None

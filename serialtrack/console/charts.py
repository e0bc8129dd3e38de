"""The console's pictures, drawn on the server as SVG (no chart library, no JavaScript): the warranty
coverage bar with today marked, and a recall campaign's reach and completion over time."""

from __future__ import annotations

from datetime import datetime, timedelta

from markupsafe import Markup, escape


def coverage_bar(starts: datetime, ends: datetime, return_ends: datetime, today: datetime) -> Markup:
    """From the sale to the end of coverage (or to today, if later): the return window shaded, today
    a line. 600 x 64 user units, scaled to the page's width."""
    first, last = min(starts, today), max(ends, today)
    span = (last - first).total_seconds() or 1.0
    x0, width = 8.0, 584.0

    def x(t: datetime) -> float:
        return round(x0 + width * (t - first).total_seconds() / span, 1)

    now = x(today)
    anchor = "end" if now > x0 + width * 0.8 else ("start" if now < x0 + width * 0.2 else "middle")
    parts = [
        f'<rect x="{x(starts)}" y="18" width="{x(ends) - x(starts)}" height="18" rx="3" class="covered"/>',
        (f'<rect x="{x(starts)}" y="18" width="{max(0.0, min(x(return_ends), x(ends)) - x(starts))}" height="18" '
        'rx="3" class="return-window"/>'),
        f'<line x1="{now}" x2="{now}" y1="10" y2="44" class="today"/>',
        f'<text x="{now}" y="8" text-anchor="{anchor}" class="today-label">today</text>',
        f'<text x="{x(starts)}" y="58" text-anchor="start">{starts:%Y-%m-%d}</text>',
        f'<text x="{x(ends)}" y="58" text-anchor="end">{ends:%Y-%m-%d}</text>',
    ]
    days_left = (ends - today).days
    label = f"{days_left} days of coverage left" if days_left >= 0 else f"coverage ended {-days_left} days ago"
    return Markup(f'<svg viewBox="0 0 600 64" role="img" class="coverage" aria-label="{escape(label)}: '
                  f'from {starts:%Y-%m-%d} to {ends:%Y-%m-%d}, returns until {return_ends:%Y-%m-%d}">'
                  f'<title>{escape(label)}</title>' + "".join(parts) + "</svg>")


def progress_chart(points: list[tuple[datetime, float, float]], now: datetime) -> Markup:
    """Reach and completion (0..1) over time, as steps: ``points`` are (time, reach, completion),
    sorted. 600 x 240 user units."""
    if not points:
        return Markup('<p class="muted">No unit of this campaign has been reached yet: nothing to draw.</p>')
    left, top, width, height = 44.0, 12.0, 540.0, 190.0
    first = points[0][0]
    last = max(now, points[-1][0])
    span = (last - first).total_seconds() or 1.0

    def x(t: datetime) -> float:
        return round(left + width * (t - first).total_seconds() / span, 1)

    def y(v: float) -> float:
        return round(top + height * (1 - v), 1)

    def steps(index: int) -> str:  # 0: reach, 1: completion
        path, previous = [f"M{x(first)},{y(0)}"], 0.0
        for t, *values in points:
            path.append(f"L{x(t)},{y(previous)} L{x(t)},{y(values[index])}")
            previous = values[index]
        path.append(f"L{x(last)},{y(previous)}")
        return " ".join(path)

    grid = "".join(f'<line x1="{left}" x2="{left + width}" y1="{y(v)}" y2="{y(v)}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y(v) + 4}" text-anchor="end">{v:.0%}</text>'
                   for v in (0, 0.25, 0.5, 0.75, 1))
    ticks = ""
    days = max(1, (last - first).days)
    step = timedelta(days=max(1, days // 4))
    t = first
    while t <= last:
        ticks += f'<text x="{x(t)}" y="{top + height + 18}" text-anchor="middle">{t:%b %d}</text>'
        t += step
    reach, done = points[-1][1], points[-1][2]
    return Markup(
        f'<svg viewBox="0 0 600 240" role="img" class="progress-chart" aria-label="reach {reach:.0%}, '
        f'completion {done:.0%} on {now:%Y-%m-%d}"><title>Reach and completion over time</title>{grid}{ticks}'
        f'<path d="{steps(0)}" class="reach"/><path d="{steps(1)}" class="completion"/>'
        f'<line x1="{x(now)}" x2="{x(now)}" y1="{top}" y2="{top + height}" class="today"/></svg>')


def campaign_points(units: list[dict], affected: int) -> list[tuple[datetime, float, float]]:
    """(time, reach, completion) after each step, from the units' timestamps as they stand now: a
    unit is reached when it was first held, its owner notified or it was remedied; complete when
    remedied (the recalls service's definitions, docs/recalls.md)."""
    from .story import when

    changes: list[tuple[datetime, int, int]] = []
    for unit in units:
        reached = [t for t in (when(unit.get(f)) for f in ("quarantined_at", "owner_notified_at", "remedied_at")) if t]
        if unit["status"] in ("quarantined", "sold_owner_notified", "remedied") and reached:
            changes.append((min(reached), 1, 0))
        remedied = when(unit.get("remedied_at"))
        if unit["status"] == "remedied" and remedied:
            changes.append((remedied, 0, 1))
    changes.sort()
    points, reached_n, done_n = [], 0, 0
    for t, r, d in changes:
        reached_n, done_n = reached_n + r, done_n + d
        points.append((t, reached_n / affected if affected else 0.0, done_n / affected if affected else 0.0))
    return points

"""`serialtrack status`: the whole system on one screen, and a verdict a cron job or a probe can use.

What it reads, all from outside the services (so a stopped service shows as stopped, with the
backlog it is leaving behind):

- each service's /healthz (down when it does not answer);
- per stream of every installed service: its length, and per consumer group the lag, the age of
  the oldest entry not yet delivered, the pending entries and how long the oldest has been idle
  (shared/stream_stats.py explains each, and how lag is found on Redis 6.2);
- each service's dead-letter stream: how many, why (over the newest ``DEAD_LETTER_SCAN`` entries),
  the newest one's age;
- each service's outbox backlog (from its /healthz);
- the streams under the prefix that no installed service reads, with their length: an entry
  XADDed to ``serialtrack:foo.bar`` (a typo, a type this build does not know) is read by nobody,
  so it is shown here instead of disappearing without a trace (a warning when the type is unknown);
- Redis memory against its maxmemory (unhealthy from 90%: with noeviction, Redis refuses writes at 100%).

Unhealthy (exit code 1): Redis or a service unreachable or degraded; a group further behind than
``max_lag_seconds`` (the oldest undelivered entry is older: the group is not reading, or reads
slower than events arrive); an entry pending longer than ``max_pending_idle_seconds`` without
being delivered again (its consumer died and nobody reclaims it); an outbox row older than
``max_outbox_age_seconds`` (the relay is stuck). Dead letters are reported as warnings: they need
a person, but the system runs on.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.redis_clients import async_client
from shared.settings import Settings
from shared.stream_stats import MEMORY_WARNING_FRACTION, group_stats, redis_memory, stream_info
from shared.streams import group_for

DEAD_LETTER_SCAN = 1000  # newest dead letters whose reasons are counted; the total is XLEN
RECENT_DEAD_LETTER_S = 3600


@dataclass(frozen=True)
class Thresholds:
    max_lag_seconds: float = 60.0
    max_pending_idle_seconds: float = 300.0
    max_outbox_age_seconds: float = 60.0


def installed_services() -> dict[str, tuple[str, ...]]:
    """Service -> the event types it reads. From the handlers modules (not the apps: no FastAPI),
    so a service that never started still has its expected groups and their backlog."""
    from services.registry import INSTALLED

    return {name: tuple(importlib.import_module(f"services.{name}.handlers").EVENT_TYPES) for name in INSTALLED}


async def _health(client: httpx.AsyncClient, name: str, url: str) -> dict:
    try:
        response = await client.get(f"{url}/healthz")
    except httpx.HTTPError as exc:
        return {"url": url, "status": "down", "health": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("service") not in (None, name):
        # Another program answers on this service's port.
        return {"url": url, "status": "down", "health": body,
                "error": f"port answered by {body.get('service')!r}, not {name}"}
    status = "ok" if response.status_code == 200 else "degraded"
    return {"url": url, "status": status, "health": body,
            **({} if status == "ok" else {"error": f"HTTP {response.status_code}"})}


async def _streams(redis: aioredis.Redis, settings: Settings, reads: dict[str, tuple[str, ...]]) -> list[dict]:
    streams = settings.streams
    expected: dict[str, set[str]] = {}
    for service, types in reads.items():
        for event_type in types:
            expected.setdefault(streams.for_type(event_type), set()).add(group_for(service))
    dead_letter_prefix = streams.dead_letters("")
    async for key in redis.scan_iter(match=f"{streams.prefix}:*", count=1000, _type="stream"):
        name = key.decode() if isinstance(key, bytes) else key
        if not name.startswith(dead_letter_prefix):
            expected.setdefault(name, set())  # a stream nobody here reads (an output, an old type, a typo)

    now = time.time()
    report = []
    for stream in sorted(expected):
        info = await stream_info(redis, stream)
        groups = sorted(expected[stream] | set(info[1]))
        rows = []
        for group in groups:
            stats = (await group_stats(redis, stream, group, info, now)).to_dict()
            del stats["stream"], stats["length"]
            rows.append(stats)
        report.append({"stream": stream, "length": info[0], "groups": rows, "read_by": sorted(expected[stream])})
    return report


def unread_streams(settings: Settings, streams: list[dict]) -> list[dict]:
    """The streams no installed service reads, with their length and whether their type is known
    (an output of a service, read elsewhere or not at all) or not (nothing will ever read it)."""
    from shared.contracts import EVENT_TYPES

    return [{"stream": s["stream"], "length": s["length"],
             "known_type": settings.streams.type_of(s["stream"]) in EVENT_TYPES}
            for s in streams if not s["read_by"]]


def _str(value: bytes | str | None, default: str = "") -> str:
    """A field or id as redis-py gives it (bytes here; its types also allow str and None)."""
    return value.decode() if isinstance(value, bytes) else value or default


async def _dead_letters(redis: aioredis.Redis, settings: Settings, services) -> dict:
    report = {}
    now = time.time()
    for service in services:
        stream = settings.streams.dead_letters(service)
        total = await redis.xlen(stream)
        newest = (await redis.xrevrange(stream, count=DEAD_LETTER_SCAN) or []) if total else []
        reasons = Counter(_str((fields or {}).get(b"reason"), "?") for _, fields in newest)
        newest_age = now - int(_str(newest[0][0]).split("-")[0]) / 1000 if newest else None
        report[service] = {"stream": stream, "total": total, "by_reason": dict(reasons.most_common()),
                           "reasons_counted_over": len(newest),
                           "newest_age_seconds": round(newest_age, 1) if newest_age is not None else None}
    return report


async def _redis_memory(redis: aioredis.Redis) -> dict:
    memory = await redis.info("memory")
    server = await redis.info("server")
    usage = redis_memory(memory)
    return {"reachable": True, "version": server.get("redis_version"),
            "used_memory_bytes": memory.get("used_memory"), "used_memory_human": memory.get("used_memory_human"),
            "maxmemory_bytes": memory.get("maxmemory"), "used_fraction": usage["used_fraction"],
            "maxmemory_policy": usage["policy"]}


async def gather(settings: Settings, redis_url: str, timeout: float = 3.0) -> dict:
    reads = installed_services()
    report: dict = {"checked_at": datetime.now(UTC).isoformat(timespec="seconds")}
    async with httpx.AsyncClient(timeout=timeout) as client:
        health = await asyncio.gather(*(_health(client, name, settings.service_url(name)) for name in reads))
    report["services"] = dict(zip(reads, health, strict=True))
    redis = async_client(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        report["redis"] = await _redis_memory(redis)
        report["streams"] = await _streams(redis, settings, reads)
        report["unread_streams"] = unread_streams(settings, report["streams"])
        report["dead_letters"] = await _dead_letters(redis, settings, reads)
    except (RedisError, OSError) as exc:
        report["redis"] = {"reachable": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        report.setdefault("streams", [])
        report.setdefault("unread_streams", [])
        report.setdefault("dead_letters", {})
    finally:
        await redis.aclose()
    report["outbox"] = {
        name: {"unpublished": (s["health"] or {}).get("outbox_unpublished"),
               "oldest_age_seconds": (s["health"] or {}).get("outbox_oldest_age_seconds")}
        for name, s in report["services"].items()
    }
    return report


def evaluate(report: dict, thresholds: Thresholds) -> dict:
    """Adds ``problems`` (any makes the system unhealthy), ``warnings`` and ``healthy``."""
    problems, warnings = [], []
    if not report["redis"].get("reachable"):
        problems.append(f"redis unreachable: {report['redis'].get('error')}")
    elif (report["redis"].get("used_fraction") or 0) >= MEMORY_WARNING_FRACTION:  # noeviction: writes fail at 100%
        problems.append(f"redis memory at {report['redis']['used_fraction']:.0%} of its maxmemory: at the limit "
                        "it refuses new events")
    for name, service in report["services"].items():
        if service["status"] != "ok":
            problems.append(f"{name} is {service['status']}: {service.get('error')}")
    for stream in report["streams"]:
        for group in stream["groups"]:
            where = f"group {group['group']} on {stream['stream']}"
            lag = f"{group['lag']}{'' if group['lag_exact'] else '+'}"
            if group["lag_seconds"] > thresholds.max_lag_seconds:
                problems.append(f"{where} is {group['lag_seconds']:.0f} s behind ({lag} entries not delivered)")
            idle = group["oldest_pending_idle_seconds"]
            if idle is not None and idle > thresholds.max_pending_idle_seconds:
                problems.append(f"{where} has an entry pending for {idle:.0f} s without redelivery "
                                f"({group['pending']} pending)")
    for name, outbox in report["outbox"].items():
        age = outbox["oldest_age_seconds"]
        if age is not None and age > thresholds.max_outbox_age_seconds:
            problems.append(f"{name}'s outbox has a row unpublished for {age:.0f} s ({outbox['unpublished']} rows)")
    for name, dead in report["dead_letters"].items():
        if dead["total"] and dead["newest_age_seconds"] is not None and dead["newest_age_seconds"] < RECENT_DEAD_LETTER_S:
            warnings.append(f"{name} dead-lettered entries within the last hour ({dead['total']} in all); "
                            f"see `serialtrack deadletters --service {name}`")
    for unread in report["unread_streams"]:
        if unread["length"] and not unread["known_type"]:
            warnings.append(f"{unread['stream']} holds {unread['length']} entries no service reads "
                            "(not a known event type: a typo in the stream name?)")
    report["thresholds"] = thresholds.__dict__
    report["problems"] = problems
    report["warnings"] = warnings
    report["healthy"] = not problems
    return report


def snapshot(settings: Settings, redis_url: str, thresholds: Thresholds) -> dict:
    return evaluate(asyncio.run(gather(settings, redis_url)), thresholds)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(report: dict):
    """The report as rich renderables, one screen."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    verdict = Text("healthy" if report["healthy"] else "UNHEALTHY",
                   style="bold green" if report["healthy"] else "bold red")
    header = Text.assemble("serialtrack status at ", report["checked_at"], ": ", verdict)
    redis = report["redis"]
    redis_line = (Text(f"redis {redis.get('version')}: memory {redis.get('used_memory_human')}"
                       + (f" of {redis['maxmemory_bytes']} bytes ({redis['used_fraction']:.0%})" if redis.get("maxmemory_bytes")
                          else " (no maxmemory)"))
                  if redis.get("reachable") else Text(f"redis unreachable: {redis.get('error')}", style="red"))

    services = Table("service", "status", "pending", "outbox", "oldest outbox row", "detail",
                     title="services", title_justify="left")
    for name, s in report["services"].items():
        health = s["health"] or {}
        style = {"ok": "green", "degraded": "yellow"}.get(s["status"], "red")
        services.add_row(name, Text(s["status"], style=style), str(health.get("pending_entries", "-")),
                         str(health.get("outbox_unpublished", "-")), _age(health.get("outbox_oldest_age_seconds")),
                         s.get("error") or "")

    streams = Table("stream", "length", "group", "lag", "behind", "pending", "oldest pending idle",
                    title="streams", title_justify="left")
    empty = [stream for stream in report["streams"] if not stream["length"]]
    for stream in report["streams"]:
        if not stream["length"]:  # one screen: nothing to lag behind on (the JSON lists them)
            continue
        if not stream["groups"]:
            streams.add_row(stream["stream"], str(stream["length"]), "-", "", "", "", "")
        for i, g in enumerate(stream["groups"]):
            lag = f"{g['lag']}{'' if g['lag_exact'] else '+'}"
            streams.add_row(stream["stream"] if i == 0 else "", str(stream["length"]) if i == 0 else "",
                            g["group"] + ("" if g["group_exists"] else " (not created yet)"),
                            Text(lag, style="yellow" if g["lag"] else ""), _age(g["lag_seconds"]),
                            str(g["pending"]), _age(g["oldest_pending_idle_seconds"]))

    if empty:
        streams.caption = f"{len(empty)} empty stream(s) not shown"
        streams.caption_justify = "left"

    dead = Table("service", "dead letters", "by reason", "newest", title="dead letters", title_justify="left")
    for name, d in report["dead_letters"].items():
        reasons = ", ".join(f"{r} {n}" for r, n in d["by_reason"].items())
        if d["total"] > d["reasons_counted_over"]:
            reasons += f" (newest {d['reasons_counted_over']})"
        dead.add_row(name, Text(str(d["total"]), style="red" if d["total"] else ""), reasons,
                     _age(d["newest_age_seconds"]))

    unread = Table("stream", "length", "event type", title="streams no service reads", title_justify="left")
    for u in report["unread_streams"]:
        unread.add_row(u["stream"], str(u["length"]), "known" if u["known_type"] else Text("unknown", style="yellow"))

    findings = [Text(f"problem: {p}", style="red") for p in report["problems"]]
    findings += [Text(f"warning: {w}", style="yellow") for w in report["warnings"]]
    return Group(header, redis_line, services, streams, *([unread] if report["unread_streams"] else []), dead,
                 *findings)


def run(settings: Settings, redis_url: str, thresholds: Thresholds, as_json: bool, watch: bool,
        interval: float, say_json, console) -> int:
    """One snapshot (or one per ``interval`` with ``watch``, until Ctrl-C); returns the exit code."""
    if not watch:
        report = snapshot(settings, redis_url, thresholds)
        if as_json:
            say_json(report)
        else:
            console.print(render(report))
        return 0 if report["healthy"] else 1
    # Ctrl-C sets a flag instead of raising, so a document or a screen is never cut off mid-write.
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    healthy = True
    try:
        if as_json:  # one JSON document per line
            while not stop.is_set():
                report = snapshot(settings, redis_url, thresholds)
                healthy = report["healthy"]
                say_json(report)
                stop.wait(interval)
            return 0 if healthy else 1
        from rich.live import Live

        with Live(console=console, auto_refresh=False, screen=console.is_terminal) as live:
            while not stop.is_set():
                report = snapshot(settings, redis_url, thresholds)
                healthy = report["healthy"]
                live.update(render(report), refresh=True)
                stop.wait(interval)
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0 if healthy else 1

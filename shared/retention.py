"""Retention: archive what every reader is done with, then trim it from Redis (docs/retention.md).

Redis keeps every stream entry in RAM and in its append-only file, so a stream nobody trims grows
until Redis dies of OOM. The archiver (`serialtrack archive`, run by `serialtrack up` and by the
compose ``archiver`` container) bounds that without losing an entry:

- An entry of an event stream may go once **every** consumer group that should read it has
  delivered and acked it: the groups of the services whose handlers read its type (a group that does
  not exist yet, a service that never started, holds the stream back: its group will start at id 0
  and must find the history) and any other group on the stream (a downstream system's). Per group,
  everything below its oldest pending entry, or up to its last-delivered id when nothing is pending.
  And it must be older than the retention window (``SERIALTRACK_RETENTION_SECONDS``, by its entry id,
  which is Redis's arrival time in milliseconds).
- A dead-letter stream (no group reads it) keeps its entries for its own window
  (``SERIALTRACK_DEADLETTER_RETENTION_SECONDS``).
- A stream under the prefix that no service reads and no group reads (an outgoing type nobody
  subscribed to yet, a mistyped producer's stream) is never trimmed: it is reported with its length.
- Before anything is trimmed it is appended to the archive and fsynced; then ``XTRIM MINID`` removes
  exactly the entries up to the last archived id. A crash at any point loses nothing: the entries are
  still in Redis, or in the archive, or both (and then the reader's dedupe by entry id drops the
  second copy).

The archive: per stream a directory (the stream name with ``:`` as ``/``), per UTC day of the entry
ids a file ``<yyyy-mm-dd>.jsonl.gz``, made of gzip members (one per archiving step, appended; gzip
readers read concatenated members as one file), each line one entry::

    {"stream": "serialtrack:unit.sold", "id": "1764325200000-0", "fields": [["event", "{...}"]]}

``fields`` are the entry's field/value pairs in order, exactly as on the wire; a name or value that
is not valid UTF-8 is ``{"base64": "..."}`` instead of a string. ``state.json`` in the stream's
directory records the last archived id and each file's committed length: bytes after it are the
remains of an interrupted step, cut off before the next append (``read_archive`` ignores them).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import gzip
import json
import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from .streams import Streams

ARCHIVE_FORMAT = 1
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
STATUS_FILE = "last-pass.json"  # the last pass's report: the compose healthcheck reads its age
EVENT_CHUNK = 5_000  # entries per archiving step of an event stream (~2 MB before compression)
DEADLETTER_CHUNK = 100  # a dead letter carries up to 100 kB of its original entry


# --- entry ids -----------------------------------------------------------------------------------


def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(parsed: tuple[int, int]) -> str:
    return f"{parsed[0]}-{parsed[1]}"


def successor(entry_id: str) -> str:
    """The smallest id after ``entry_id``: ``XTRIM MINID successor(x)`` removes x and everything before."""
    ms, seq = parse_id(entry_id)
    return format_id((ms, seq + 1))


def day_of(entry_id: str) -> str:
    return datetime.fromtimestamp(parse_id(entry_id)[0] / 1000, UTC).strftime("%Y-%m-%d")


# --- the archive on disk -------------------------------------------------------------------------


def _encode(value: bytes) -> str | dict[str, str]:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def _decode(value: str | dict[str, str]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else base64.b64decode(value["base64"])


@dataclass(frozen=True)
class ArchivedEntry:
    stream: str
    id: str
    fields: tuple[tuple[bytes, bytes], ...]  # as on the wire, in order

    def field_map(self) -> dict[bytes, bytes]:
        """The fields as redis-py's XRANGE returns them (what shared/envelope.py decodes)."""
        return dict(self.fields)

    def line(self) -> bytes:
        return (json.dumps({"stream": self.stream, "id": self.id,
                            "fields": [[_encode(k), _encode(v)] for k, v in self.fields]},
                           ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")

    @classmethod
    def from_line(cls, line: bytes) -> ArchivedEntry:
        doc = json.loads(line)
        return cls(doc["stream"], doc["id"], tuple((_decode(k), _decode(v)) for k, v in doc["fields"]))


@dataclass
class StreamState:
    """What of one stream is archived for good (fsynced, then recorded here)."""

    stream: str
    archived_through: str | None = None  # the last archived id; every entry up to it is in the files
    entries: int = 0  # entries appended (duplicates after a lost state file included)
    files: dict[str, int] = field(default_factory=dict)  # file name -> committed length in bytes
    format: int = ARCHIVE_FORMAT


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically and durably: a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Archive:
    """``<root>/<stream with ':' as '/'>/<yyyy-mm-dd>.jsonl.gz`` + ``state.json`` per stream."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def stream_dir(self, stream: str) -> Path:
        parts = stream.split(":")
        if any(part in ("", ".", "..") or "/" in part for part in parts):
            raise ValueError(f"stream name {stream!r} cannot be an archive directory")
        return self.root.joinpath(*parts)

    def state(self, stream: str) -> StreamState:
        path = self.stream_dir(stream) / STATE_FILE
        if not path.is_file():
            return StreamState(stream)
        doc = json.loads(path.read_text())
        return StreamState(doc["stream"], doc.get("archived_through"), doc.get("entries", 0),
                           dict(doc.get("files", {})), doc.get("format", ARCHIVE_FORMAT))

    def streams(self) -> list[str]:
        """Every stream that has an archive here."""
        return sorted(json.loads(p.read_text())["stream"] for p in self.root.rglob(STATE_FILE))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One archiver at a time on this archive (two appending to one file would interleave)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ArchiveBusy(f"another archiver is working on {self.root}") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def append(self, stream: str, entries: list[ArchivedEntry]) -> StreamState:
        """Append ``entries`` (in id order, all after the state's ``archived_through``), fsync, then
        record them in the state. Returns the new state."""
        state = self.state(stream)
        directory = self.stream_dir(stream)
        directory.mkdir(parents=True, exist_ok=True)
        by_day: dict[str, list[bytes]] = {}
        for entry in entries:
            by_day.setdefault(f"{day_of(entry.id)}.jsonl.gz", []).append(entry.line())
        for name, lines in by_day.items():
            path = directory / name
            new_file = not path.exists()
            # Bytes after the committed length are an interrupted step's remains: cut them. A file the
            # state does not know (state.json lost) keeps every whole member it has.
            committed = state.files[name] if name in state.files else (0 if new_file else whole_length(path))
            with open(path, "ab") as handle:
                if handle.tell() != committed:
                    handle.truncate(committed)
                    handle.seek(committed)
                handle.write(gzip.compress(b"".join(lines), compresslevel=6, mtime=0))
                handle.flush()
                os.fsync(handle.fileno())
                state.files[name] = handle.tell()
            if new_file:
                _fsync_dir(directory)
        state.archived_through = entries[-1].id
        state.entries += len(entries)
        _write_durably(directory / STATE_FILE, json.dumps(asdict(state), indent=1).encode())
        return state

    def files(self, stream: str) -> list[Path]:
        directory = self.stream_dir(stream)
        return sorted(directory.glob("*.jsonl.gz")) if directory.is_dir() else []

    def read(self, stream: str, after: str | None = None) -> Iterator[ArchivedEntry]:
        """Every archived entry of ``stream`` in id order, each once (see ``read_archive_file``)."""
        committed = self.state(stream).files
        last: tuple[int, int] | None = parse_id(after) if after else None
        for path in self.files(stream):
            for entry in read_archive_file(path, committed.get(path.name)):
                parsed = parse_id(entry.id)
                if last is not None and parsed <= last:
                    continue  # a duplicate (or before ``after``): ids only grow within a stream
                last = parsed
                yield entry

    def rewrite(self, stream: str, change: Callable[[ArchivedEntry], ArchivedEntry]) -> int:
        """Rewrite every archived entry of ``stream`` through ``change`` (e.g. an erasure that
        pseudonymizes customer ids): each file is written anew beside the old one, fsynced, and
        renamed over it, under the archive lock. Returns the entries rewritten."""
        count = 0
        with self.locked():
            state = self.state(stream)
            for path in self.files(stream):
                entries = [change(entry) for entry in read_archive_file(path, state.files.get(path.name))]
                data = gzip.compress(b"".join(entry.line() for entry in entries), compresslevel=6, mtime=0)
                _write_durably(path, data)
                state.files[path.name] = len(data)
                count += len(entries)
            if state.files:
                _write_durably(self.stream_dir(stream) / STATE_FILE, json.dumps(asdict(state), indent=1).encode())
        return count


class ArchiveBusy(RuntimeError):
    pass


READ_CHUNK = 1 << 20


class DamagedArchive(ValueError):
    pass


def _members(path: Path, limit: int | None) -> Iterator[tuple[int, bytes]]:
    """(end offset, uncompressed text) of each whole gzip member of the file's first ``limit`` bytes
    (all without a limit), read in chunks: a day's file may be larger than memory. Stops at a member
    that is damaged or cut short, raising DamagedArchive about it."""
    size = path.stat().st_size if limit is None else limit
    with open(path, "rb") as handle:
        position = 0
        while position < size:
            handle.seek(position)
            inflater = zlib.decompressobj(wbits=31)  # one member
            parts, cursor = [], position
            try:
                while not inflater.eof and cursor < size:
                    piece = handle.read(min(READ_CHUNK, size - cursor))
                    if not piece:
                        break
                    parts.append(inflater.decompress(piece))
                    cursor += len(piece)
            except zlib.error as exc:
                raise DamagedArchive(f"{path}: damaged gzip member at byte {position}: {exc}") from None
            if not inflater.eof:
                raise DamagedArchive(f"{path}: gzip member at byte {position} is cut short")
            end = cursor - len(inflater.unused_data)
            yield end, b"".join(parts)
            position = end


def whole_length(path: Path) -> int:
    """The length of the file's whole gzip members, from the start (a damaged tail excluded)."""
    length = 0
    try:
        for end, _ in _members(path, None):
            length = end
    except DamagedArchive:
        pass
    return length


def read_archive_file(path: Path, committed: int | None = None) -> Iterator[ArchivedEntry]:
    """The entries of one archive file, member after member. ``committed``: the length recorded in
    ``state.json``; bytes after it (an interrupted append) are not read, and a damaged member before
    it is an error. Without it (a copied file, a lost state), a damaged or cut-short last member is
    the remains of an interrupted append: read as far as the members are whole.

    Dedupe (``Archive.read`` does it): within a stream entry ids only grow, so a reader keeps an
    entry only if its id is greater than the last one it kept; a duplicate (archived twice after a
    lost ``state.json``) is always a repeat of an id already seen, with the same fields."""
    try:
        for _, text in _members(path, committed):
            for line in text.splitlines():
                if line:
                    yield ArchivedEntry.from_line(line)
    except DamagedArchive:
        if committed is not None:
            raise


# --- a pass over Redis ---------------------------------------------------------------------------


@dataclass
class StreamReport:
    stream: str
    kind: str  # "events", "deadletter" or "unread" (no service and no group reads it: never trimmed)
    length: int  # entries in Redis after the pass
    archived: int = 0  # entries appended to the archive by this pass
    trimmed: int = 0  # entries removed from Redis by this pass
    archived_through: str | None = None  # the last id archived, ever
    held_back: list[str] = field(default_factory=list)  # why entries older than the window stay


@dataclass
class PassReport:
    started_at: str
    seconds: float
    retention_seconds: float
    deadletter_retention_seconds: float
    archive_dir: str
    streams: list[StreamReport]

    @property
    def archived(self) -> int:
        return sum(s.archived for s in self.streams)

    @property
    def trimmed(self) -> int:
        return sum(s.trimmed for s in self.streams)

    @property
    def unread(self) -> list[StreamReport]:
        return [s for s in self.streams if s.kind == "unread"]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "archived": self.archived, "trimmed": self.trimmed,
                "unread_streams": {s.stream: s.length for s in self.unread}}


def raw_client(url: str) -> redis.Redis:
    """A client whose XRANGE answers field/value lists as Redis sends them (redis-py makes a dict,
    which would merge a repeated field name)."""
    from .redis_clients import sync_client

    client = sync_client(url, socket_connect_timeout=5, socket_timeout=60)
    client.set_response_callback("XRANGE", lambda response, **_: response)
    return client


def _entries(stream: str, raw: Any) -> list[ArchivedEntry]:
    """XRANGE's raw answer (``raw_client``): [id, [field, value, ...]] per entry."""
    out = []
    for entry_id, flat in raw:
        flat = list(flat)
        out.append(ArchivedEntry(stream, entry_id.decode(), tuple(zip(flat[0::2], flat[1::2], strict=True))))
    return out


def read_live(client: redis.Redis, stream: str, after: str | None = None, chunk: int = EVENT_CHUNK
              ) -> Iterator[ArchivedEntry]:
    """The entries in Redis after ``after``, in id order (``client`` from ``raw_client``)."""
    start = f"({after}" if after else "-"
    while True:
        batch = _entries(stream, client.xrange(stream, start, "+", count=chunk))
        if not batch:
            return
        yield from batch
        start = f"({batch[-1].id}"


def _group_bound(client: redis.Redis, stream: str, group: dict) -> tuple[tuple[int, int], bool]:
    """(the first id this group may still need, whether it has read and acked every entry there is).
    The first id: its oldest pending entry, else the one after its last-delivered id (also when it
    has read everything: an entry added a moment later is not read yet, whatever the clocks say)."""
    name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
    if int(group["pending"]):
        summary = client.xpending(stream, name)
        if summary["pending"]:
            return parse_id(summary["min"]), False
    last = group["last-delivered-id"]
    last = last.decode() if isinstance(last, bytes) else last
    return parse_id(successor(last)), not client.xrange(stream, f"({last}", "+", count=1)


def expected_groups(streams: Streams, consumed: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """stream -> the groups that must have read an entry before it may go (one per service reading
    the stream's type; services/<name>/handlers.py EVENT_TYPES)."""
    from .streams import group_for

    groups: dict[str, set[str]] = {}
    for service, types in consumed.items():
        for event_type in types:
            groups.setdefault(streams.for_type(event_type), set()).add(group_for(service))
    return groups


def _stream_keys(client: redis.Redis, streams: Streams) -> list[str]:
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in streams.prefix) + ":*"
    return sorted({key.decode() for key in client.scan_iter(match=pattern, count=1000, _type="stream")})


def _archive_and_trim(client: redis.Redis, archive: Archive, report: StreamReport, bound: tuple[int, int],
                      chunk: int) -> None:
    """Archive every entry below ``bound`` not archived yet, then trim what is archived; in steps."""
    stream = report.stream
    state = archive.state(stream)
    if bound <= (0, 0):
        report.archived_through = state.archived_through
        return  # a group has read nothing yet
    while True:
        if state.archived_through is not None:
            trim_to = min(parse_id(successor(state.archived_through)), bound)
            if trim_to > (0, 0):
                # Exact MINID (not "~"): entries below it go, and only they. Repeated after a crash
                # between the fsync and the trim, it removes what was archived then.
                report.trimmed += int(client.xtrim(stream, minid=format_id(trim_to), approximate=False))
        start = f"({state.archived_through}" if state.archived_through else "-"
        end = f"({format_id(bound)}"
        if state.archived_through is not None and parse_id(state.archived_through) >= bound:
            break
        batch = _entries(stream, client.xrange(stream, start, end, count=chunk))
        if not batch:
            break
        state = archive.append(stream, batch)
        report.archived += len(batch)
    report.archived_through = state.archived_through


def retention_pass(client: redis.Redis, archive: Archive, streams: Streams, consumed: Mapping[str, Iterable[str]],
                   retention_seconds: float, deadletter_retention_seconds: float,
                   now: float | None = None) -> PassReport:
    """One pass over every stream under the prefix. ``client`` from ``raw_client``, as a user that may
    SCAN, XINFO GROUPS, XPENDING, XRANGE, XTRIM and XLEN there (shared/acl.py: ``archiver``)."""
    started = time.monotonic()
    now = time.time() if now is None else now
    expected = expected_groups(streams, consumed)
    dead_letter_prefix = streams.dead_letters("")
    reports: list[StreamReport] = []
    with archive.locked():
        for stream in _stream_keys(client, streams):
            if stream.startswith(dead_letter_prefix):
                report = StreamReport(stream, "deadletter", 0)
                bound = (int((now - deadletter_retention_seconds) * 1000), 0)
            else:
                groups = client.xinfo_groups(stream)
                names = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"] for g in groups}
                wanted = expected.get(stream, set())
                if not groups and not wanted:
                    reports.append(StreamReport(stream, "unread", int(client.xlen(stream)),
                                                archived_through=archive.state(stream).archived_through,
                                                held_back=[("no service and no consumer group reads this stream: "
                                                           "kept in Redis, never trimmed")]))
                    continue
                report = StreamReport(stream, "events", 0)
                bound = (int((now - retention_seconds) * 1000), 0)
                for missing in sorted(wanted - names):
                    report.held_back.append(f"group {missing} does not exist yet (its service never started): "
                                            "nothing is trimmed until it has read the stream")
                    bound = (0, 0)
                cutoff = bound
                for group in groups:
                    group_bound, done = _group_bound(client, stream, group)
                    bound = min(bound, group_bound)
                    if group_bound < cutoff and not done:
                        report.held_back.append(f"group {group['name'].decode()} has not read or acked every "
                                                "entry older than the window")
            chunk = DEADLETTER_CHUNK if report.kind == "deadletter" else EVENT_CHUNK
            _archive_and_trim(client, archive, report, bound, chunk)
            report.length = int(client.xlen(stream))
            reports.append(report)
    result = PassReport(datetime.fromtimestamp(now, UTC).isoformat(), round(time.monotonic() - started, 3),
                        retention_seconds, deadletter_retention_seconds, str(archive.root), reports)
    _write_durably(archive.root / STATUS_FILE, json.dumps(result.as_dict(), indent=1).encode())
    return result

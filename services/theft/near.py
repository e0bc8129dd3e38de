"""Near-miss serials, pure: which serials are close enough to a stolen one to be a *possible match*.

Serials are misread and mistyped: O for 0, a dropped or doubled character, two characters swapped.
A serial X is *near* a stolen serial Y of the same manufacturer (X != Y) when

- their homoglyph-normalized forms are equal (any length): O->0, I->1, L->1, S->5, B->8, Z->2; or
- both are at least ``MIN_EDIT_LENGTH`` (8) characters long and the Damerau-Levenshtein distance of
  their normalized forms is at most 1 (one character dropped, added/doubled, changed, or two
  adjacent characters swapped). Measured on the normalized forms, so a misread O plus a dropped
  character is still one near miss.

The index (symmetric delete): a serial's *keys* are its normalized form and, when it is at least 8
long, its normalized form with each one character deleted. Two serials within distance 1 share a
key; sharing a key is only a candidate, ``near_reason`` decides (rapidfuzz computes the distance).
A 12-character serial has 13 keys, whichever side (stolen or seen) it is on.

Ranges (``prefix`` + a number from ``first`` to ``last``) are never expanded: ``RangeNearIndex`` asks
which members lie within one edit of X by generating only member-shaped candidates (the edit is in
the number, in the prefix, or swaps the prefix's last character with the number's first) and
looking each up by bisection in the ranges' disjoint segments, per (normalized prefix, width); a
changed or added digit is tried only where the digits before it can still reach a range. ``range_key_intervals`` gives the
intervals of keys that a seen serial near some member must have one of, for the reverse direction
(a range report arriving after the sale).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from rapidfuzz.distance import DamerauLevenshtein

from shared.identity import SerialRange
from shared.serial_index import RangeSegments

MIN_EDIT_LENGTH = 8
HOMOGLYPHS = str.maketrans("OILSBZ", "011582")  # each misread letter to the digit it is read as
DIGITS = "0123456789"
FEW_PREFIXES = 32  # up to this many range prefixes per manufacturer are compared one by one

NearReason = Literal["homoglyph", "dropped_character", "extra_character", "swapped_characters",
                     "changed_character"]


def normalize(serial: str) -> str:
    """The homoglyph-normalized form: same length, each confusable letter as its digit."""
    return serial.translate(HOMOGLYPHS)


def deletions(text: str) -> set[str]:
    return {text[:i] + text[i + 1:] for i in range(len(text))}


def keys(serial: str) -> set[str]:
    """The index keys of a serial (stolen or seen): its normalized form, and its one-deletions
    when the distance rule applies to it (8 characters or more)."""
    n = normalize(serial)
    return ({n} | deletions(n)) if len(n) >= MIN_EDIT_LENGTH else {n}


def _edit_kind(seen: str, stolen: str) -> NearReason:
    if len(seen) < len(stolen):
        return "dropped_character"
    if len(seen) > len(stolen):
        return "extra_character"
    diff = [i for i, (a, b) in enumerate(zip(seen, stolen, strict=True)) if a != b]
    if len(diff) == 2 and diff[1] == diff[0] + 1:
        return "swapped_characters"
    return "changed_character"


def near_reason(seen: str, stolen: str) -> NearReason | None:
    """Why ``seen`` is a possible match of ``stolen`` (None: it is not, or it is the same serial)."""
    if seen == stolen:
        return None
    a, b = normalize(seen), normalize(stolen)
    if a == b:
        return "homoglyph"
    if len(a) < MIN_EDIT_LENGTH or len(b) < MIN_EDIT_LENGTH or abs(len(a) - len(b)) > 1:
        return None
    if DamerauLevenshtein.distance(a, b, score_cutoff=1) <= 1:
        return _edit_kind(a, b)
    return None


def closeness(reason: str, serial: str) -> tuple[bool, str]:
    """Sort key of near serials: homoglyph matches (the same serial, misread) before edits."""
    return reason != "homoglyph", serial


def _within_one(a: str, b: str) -> bool:
    return a == b or (abs(len(a) - len(b)) <= 1 and DamerauLevenshtein.distance(a, b, score_cutoff=1) <= 1)


def _digit_variants(tail: str) -> Iterator[str]:
    """Digit strings within one edit of ``tail`` (the tail itself included when it is all digits)."""
    odd = [i for i, c in enumerate(tail) if c not in DIGITS]
    if len(odd) > 1:
        return
    if odd:  # one non-digit: the edit must remove or replace it
        i = odd[0]
        yield tail[:i] + tail[i + 1:]
        for d in DIGITS:
            yield tail[:i] + d + tail[i + 1:]
        return
    yield tail
    for i in range(len(tail)):
        yield tail[:i] + tail[i + 1:]
        if i + 1 < len(tail) and tail[i] != tail[i + 1]:
            yield tail[:i] + tail[i + 1] + tail[i] + tail[i + 2:]
        for d in DIGITS:
            if d != tail[i]:
                yield tail[:i] + d + tail[i + 1:]
    for i in range(len(tail) + 1):
        for d in DIGITS:
            yield tail[:i] + d + tail[i:]


@dataclass(frozen=True, slots=True)
class RangeMember:
    key: Hashable  # the range's key as given (a registry row id)
    serial: str  # the member, as the range writes it (its raw prefix)


class PrefixIndex:
    """Normalized range prefixes by their keys (themselves and their one-deletions): which prefixes a
    range member near a serial could start with, without looking at every prefix."""

    def __init__(self, prefixes: Iterable[str]):
        self.prefixes = sorted({normalize(p) for p in prefixes})
        self._keys: dict[str, set[str]] = {}
        for prefix in self.prefixes:
            for k in {prefix} | deletions(prefix):
                self._keys.setdefault(k, set()).add(prefix)
        self._lengths = sorted({len(p) for p in self.prefixes})

    def near(self, nx: str) -> set[str]:
        """Normalized prefixes a range member near ``nx`` (normalized) could have."""
        found: set[str] = set()
        if len(self.prefixes) <= FEW_PREFIXES:  # a handful: comparing is cheaper than building keys
            for prefix in self.prefixes:
                lp = len(prefix)
                if any(_within_one(nx[:cut], prefix) for cut in (lp - 1, lp, lp + 1) if 0 <= cut <= len(nx)):
                    found.add(prefix)
            return found
        for length in self._lengths:
            for cut in (length - 1, length, length + 1):
                if 0 <= cut <= len(nx):
                    head = nx[:cut]
                    for k in {head} | deletions(head):
                        for prefix in self._keys.get(k, ()):
                            if len(prefix) == length and _within_one(head, prefix):
                                found.add(prefix)
        return found


def _padded_variants(tail: str, width: int, segments: RangeSegments) -> Iterator[str]:
    """Digit strings of ``width`` one edit from ``tail`` that some range could hold: a changed or
    added digit is tried only where the digits before it leave a range reachable (one bisection)."""
    odd = [i for i, c in enumerate(tail) if c not in DIGITS]
    if len(odd) > 1:
        return

    def reachable(head: str) -> bool:
        free = width - len(head)
        base = int(head) * 10 ** free if head else 0
        return segments.meets(base, base + 10 ** free - 1)

    n = len(tail)
    if n == width + 1:  # a character too many: drop one
        for i in range(n) if not odd else odd:
            yield tail[:i] + tail[i + 1:]
    elif n == width:
        positions = odd or range(n)
        for i in positions:  # change one
            if reachable(tail[:i]):
                for d in DIGITS:
                    if d != tail[i]:
                        yield tail[:i] + d + tail[i + 1:]
        if not odd:
            for i in range(n - 1):  # swap two
                if tail[i] != tail[i + 1]:
                    yield tail[:i] + tail[i + 1] + tail[i] + tail[i + 2:]
    elif n == width - 1 and not odd:  # a character missing: add one
        for i in range(n + 1):
            if reachable(tail[:i]):
                for d in DIGITS:
                    yield tail[:i] + d + tail[i:]


def _number_ok(digits: str, width: int | None) -> bool:
    if not digits or not digits.isdigit() or not digits.isascii():
        return False
    if width is None:
        return len(digits) == 1 or digits[0] != "0"  # unpadded ranges never write leading zeros
    return len(digits) == width


class RangeNearIndex:
    """Ranges of one manufacturer, for ``near(serial)``: the members within the near-miss rule."""

    def __init__(self, ranges: Iterable[tuple[Hashable, SerialRange]]):
        self._raw_prefix: dict[Hashable, str] = {}
        groups: dict[str, dict[int | None, list[tuple[int, int, Hashable]]]] = {}
        for key, rng in ranges:
            self._raw_prefix[key] = rng.prefix
            groups.setdefault(normalize(rng.prefix), {}).setdefault(rng.width, []).append((rng.first, rng.last, key))
        self._buckets = {prefix: {width: RangeSegments(items) for width, items in by_width.items()}
                         for prefix, by_width in groups.items()}
        self._prefixes = PrefixIndex(groups)

    def _numbers(self, nx: str, prefix: str, width: int | None, segments: RangeSegments,
                 edits: bool) -> Iterator[tuple[str, bool]]:
        """(number as written, edited) of every member-shaped candidate with this prefix."""
        lp = len(prefix)
        if nx.startswith(prefix):
            tail = nx[lp:]
            yield tail, False
            if edits:
                variants = _digit_variants(tail) if width is None else _padded_variants(tail, width, segments)
                for digits in variants:
                    yield digits, True
        if not edits:
            return
        for cut in (lp - 1, lp, lp + 1):  # the edit is in the prefix; the number is intact
            if 0 <= cut <= len(nx):
                head = nx[:cut]
                if head != prefix and _within_one(head, prefix):
                    yield nx[cut:], True
        p = lp - 1  # the prefix's last character swapped with the number's first
        if p >= 0 and p + 1 < len(nx):
            swapped = nx[:p] + nx[p + 1] + nx[p] + nx[p + 2:]
            if swapped.startswith(prefix):
                yield swapped[lp:], True

    def near(self, serial: str, limit: int | None = None) -> list[RangeMember]:
        """Members of the ranges that ``serial`` nearly matches (not ``serial`` itself): homoglyph
        matches first, then by serial; at most ``limit``."""
        nx = normalize(serial)
        edits = len(nx) >= MIN_EDIT_LENGTH
        found: dict[tuple[Hashable, str], bool] = {}  # -> edited (not a homoglyph)
        for prefix in sorted(self._prefixes.near(nx)):
            for width, segments in self._buckets[prefix].items():
                for digits, edited in self._numbers(nx, prefix, width, segments, edits):
                    if not _number_ok(digits, width) or (edited and len(prefix) + len(digits) < MIN_EDIT_LENGTH):
                        continue
                    for key in segments.find(int(digits)):
                        member = self._raw_prefix[key] + digits
                        if member != serial:
                            found[(key, member)] = found.get((key, member), True) and edited
        # Homoglyph matches first: in a dense range, a serial one edit off is near many members.
        members = sorted(found, key=lambda km: (found[km], km[1], str(km[0])))
        chosen = members[:limit] if limit is not None else members
        return [RangeMember(k, s) for k, s in chosen]


def _blocks(first: int, last: int) -> Iterator[tuple[int, int]]:
    """[first, last] as aligned blocks (p, k): the numbers p * 10**k .. (p + 1) * 10**k - 1."""
    lo = first
    while lo <= last:
        k = 0
        while lo % 10 ** (k + 1) == 0 and lo + 10 ** (k + 1) - 1 <= last:
            k += 1
        yield lo // 10 ** k, k
        lo += 10 ** k


def _merge(intervals: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    merged: list[tuple[str, str]] = []
    for low, high in sorted(intervals):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def range_key_intervals(rng: SerialRange) -> list[tuple[str, str]]:
    """Inclusive intervals of (normalized) keys such that a serial within the near-miss rule of a
    member of ``rng`` has at least one key in one of them (a superset: candidates to verify).

    Padded ranges: the members themselves (a homoglyph or an added character); the members with one
    prefix character deleted; and, per digit position j, the members with digit j deleted, computed
    per aligned block of the range, so the intervals cover about as many numbers as the range
    itself. Unpadded ranges: every key starting with the prefix or a one-deletion of it.
    """
    prefix = normalize(rng.prefix)
    heads = {prefix} | deletions(prefix)
    if rng.width is None:
        return _merge((h, h + "\x7f") for h in heads)
    w = rng.width
    low, high = f"{rng.first:0{w}d}", f"{rng.last:0{w}d}"
    intervals = [(h + low, h + high) for h in heads]
    for p, k in _blocks(rng.first, rng.last):
        fixed = f"{p:0{w - k}d}" if w > k else ""
        for j in range(w):
            if j < len(fixed):
                part = fixed[:j] + fixed[j + 1:]
                intervals.append((prefix + part + "0" * k, prefix + part + "9" * k))
            else:
                intervals.append((prefix + fixed + "0" * (k - 1), prefix + fixed + "9" * (k - 1)))
    return _merge(intervals)

"""Which of many unit selections cover one unit: an index lookup, never a scan over the selections.

A selection (a recall's scope, a stolen report over a range) is serials, ranges and skus of one
manufacturer: it covers a unit whose sku is in ``skus`` (or ``skus`` is empty) and whose serial is
in ``serials`` or in one of ``ranges`` (or both are empty). The recalls service matches unit
events against its campaigns with it, inventory against open recalls and stolen ranges. One
``SerialIndex`` holds the selections of one manufacturer:

- explicit serials: a dict serial -> selections;
- serial ranges bucketed by (prefix, width). A serial can only fall into a bucket whose prefix is
  the serial minus some of its trailing digits, so a lookup tries at most one split per trailing
  digit (and only splits whose prefix length occurs in a bucket). Inside a bucket the ranges are
  cut into disjoint elementary segments (a sweep over their bounds), each holding the selections
  that cover it: one bisect gives the answer, however the ranges overlap;
- sku-only selections (no serial condition): a dict sku -> selections.

Lookups cost the same with 20 selections of 1,000 ranges as with one.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from .identity import SerialRange


@dataclass(frozen=True, slots=True)
class Selection:
    key: Hashable  # what a match returns: a recall id, a report's row id
    skus: frozenset[str] = frozenset()
    ranges: tuple[SerialRange, ...] = ()
    serials: frozenset[str] = frozenset()


class RangeSegments:
    """Ranges of one (prefix, width) as disjoint elementary segments (a sweep over their bounds), each
    with the ranges covering it: a number's ranges, or whether any range meets an interval, by
    bisection, no scan. Also the theft service's near-miss index (services/theft/near.py)."""

    __slots__ = ("covering", "points")

    def __init__(self, ranges: Iterable[tuple[int, int, Hashable]]):
        changes: dict[int, list[tuple[int, Hashable]]] = {}
        for first, last, key in ranges:
            changes.setdefault(first, []).append((1, key))
            changes.setdefault(last + 1, []).append((-1, key))
        active: dict[Hashable, int] = {}
        self.points: list[int] = []
        self.covering: list[tuple[Hashable, ...]] = []
        for point in sorted(changes):
            for delta, key in changes[point]:
                count = active.get(key, 0) + delta
                if count:
                    active[key] = count
                else:
                    active.pop(key, None)
            self.points.append(point)
            self.covering.append(tuple(active))

    def find(self, number: int) -> tuple[Hashable, ...]:
        i = bisect_right(self.points, number) - 1
        return self.covering[i] if i >= 0 else ()

    def meets(self, low: int, high: int) -> bool:
        """Whether some range holds a number in [low, high]."""
        i = max(bisect_right(self.points, low) - 1, 0)
        while i < len(self.points) and self.points[i] <= high:
            if self.covering[i] and (i + 1 == len(self.points) or self.points[i + 1] > low):
                return True
            i += 1
        return False


@dataclass(slots=True)
class SerialIndex:
    """The selections of one manufacturer, indexed (see the module docstring)."""

    explicit: dict[str, list[Hashable]] = field(default_factory=dict)
    buckets: dict[tuple[str, int | None], RangeSegments] = field(default_factory=dict)
    prefix_lengths: frozenset[int] = frozenset()
    sku_only: dict[str, list[Hashable]] = field(default_factory=dict)
    skus: dict[Hashable, frozenset[str]] = field(default_factory=dict)  # the sku condition of each selection

    @classmethod
    def build(cls, selections: Iterable[Selection]) -> SerialIndex:
        index = cls()
        ranges: dict[tuple[str, int | None], list[tuple[int, int, Hashable]]] = {}
        for selection in selections:
            key = selection.key
            if selection.skus:
                index.skus[key] = selection.skus
            if not (selection.ranges or selection.serials):
                for sku in selection.skus:
                    index.sku_only.setdefault(sku, []).append(key)
                continue
            for serial in selection.serials:
                index.explicit.setdefault(serial, []).append(key)
            for r in selection.ranges:
                ranges.setdefault((r.prefix, r.width), []).append((r.first, r.last, key))
        index.buckets = {bucket: RangeSegments(items) for bucket, items in ranges.items()}
        index.prefix_lengths = frozenset(len(prefix) for prefix, _ in index.buckets)
        return index

    def serial_candidates(self, serial: str) -> list[Hashable]:
        """Selections whose serials or ranges hold ``serial`` (their sku condition not checked)."""
        found: list[Hashable] = list(self.explicit.get(serial, ()))
        if not self.buckets:
            return found
        # trailing digits of the serial: each split point is one possible (prefix, number)
        end = len(serial)
        start = end
        while start > 0 and "0" <= serial[start - 1] <= "9":
            start -= 1
        lengths, buckets = self.prefix_lengths, self.buckets
        for cut in range(start, end):
            if cut not in lengths:
                continue
            prefix, digits = serial[:cut], serial[cut:]
            width = end - cut
            bucket = buckets.get((prefix, width))
            if bucket is not None:
                found.extend(bucket.find(int(digits)))
            if digits[0] != "0" or width == 1:  # unpadded ranges never write leading zeros
                bucket = buckets.get((prefix, None))
                if bucket is not None:
                    found.extend(bucket.find(int(digits)))
        return found

    def match(self, serial: str, sku: str | None) -> list[Hashable]:
        """Selections covering the unit, each once, in no particular order."""
        found = self.serial_candidates(serial)
        if sku is not None:
            found.extend(self.sku_only.get(sku, ()))
        if not found:
            return []
        skus = self.skus
        # dict.fromkeys: a serial may be in a selection's list and in one of its ranges
        return [key for key in dict.fromkeys(found) if key not in skus or sku in skus[key]]

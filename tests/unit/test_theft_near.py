"""Near-miss serials (services/theft/near.py): the rule, the keys, and the range index checked against
brute force over every member of small ranges."""

from __future__ import annotations

import random

import pytest

from services.theft.near import (
    RangeNearIndex,
    keys,
    near_reason,
    normalize,
    range_key_intervals,
)
from shared.identity import SerialRange


@pytest.mark.parametrize(("seen", "stolen", "reason"), [
    ("SN1234567O", "SN12345670", "homoglyph"),  # O for 0
    ("SNI2345678", "SN12345678", "homoglyph"),  # I for 1
    ("SNL2345678", "SN12345678", "homoglyph"),  # L for 1
    ("5N12345678", "SN12345678", "homoglyph"),  # 5 for S
    ("SN1234567B", "SN12345678", "homoglyph"),  # B for 8
    ("SNZ2345678", "SN22345678", "homoglyph"),  # Z for 2
    ("SO1", "S01", "homoglyph"),  # homoglyphs match at any length
    ("SN1234567", "SN12345678", "dropped_character"),
    ("SN123456788", "SN12345678", "extra_character"),  # doubled
    ("SN12354678", "SN12345678", "swapped_characters"),
    ("SN12395678", "SN12345678", "changed_character"),
    ("SN1234567O8", "SN12345678", "extra_character"),  # a misread and an extra character: one near miss
    ("SN12345678", "SN12345678", None),  # the same serial is an exact match, not a near one
    ("SN123", "SN124", None),  # short: no distance rule
    ("AB12345", "AB12346", None),  # 7 characters: no distance rule
    ("AB123456", "AB12345", None),  # one side has 7 characters
    ("SN12345678", "SN12345699", None),  # two edits
    ("SN12345678", "SN21345687", None),
])
def test_near_reason(seen, stolen, reason):
    assert near_reason(seen, stolen) == reason


def test_serials_within_the_rule_share_a_key():
    rnd = random.Random(7)
    alphabet = "0123456789ABOSIZL"
    for _ in range(3000):
        y = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(6, 12)))
        x = _random_edit(rnd, y, alphabet)
        if near_reason(x, y) is not None:
            assert keys(x) & keys(y), (x, y)


def _random_edit(rnd, y, alphabet):
    i = rnd.randrange(len(y))
    match rnd.randrange(5):
        case 0:
            return y[:i] + y[i + 1:]
        case 1:
            return y[:i] + rnd.choice(alphabet) + y[i:]
        case 2:
            return y[:i] + rnd.choice(alphabet) + y[i + 1:]
        case 3:
            return y[:i] + y[i + 1:i + 2] + y[i:i + 1] + y[i + 2:] if i + 1 < len(y) else y
        case _:
            return y.replace("0", "O").replace("1", "I")


def _brute(serial, ranges):
    return sorted({(key, m) for key, r in ranges for m in r if near_reason(serial, m)},
                  key=lambda km: (near_reason(serial, km[1]) != "homoglyph", km[1], str(km[0])))


RANGES = [
    (1, SerialRange(prefix="SN", first=100, last=260, width=7)),
    (2, SerialRange(prefix="SO", first=5, last=40, width=6)),  # normalizes to the prefix 50
    (3, SerialRange(prefix="BX1", first=95, last=130, width=None)),  # unpadded
    (4, SerialRange(prefix="SN", first=1250, last=1260, width=7)),  # overlaps nothing, same bucket
    (5, SerialRange(prefix="SNO-", first=9990, last=10010, width=5)),
]


def _cases(rnd):
    for key, r in RANGES:
        members = list(r)
        for _ in range(250):
            yield _random_edit(rnd, rnd.choice(members), "0123456789SNOBXI-")
        yield from members[:3]
    yield from ("SN0000199", "SNOOOO199", "5N000199", "SN0001999", "SN000I99", "S0N000199", "NS0000199", "X", "")


def test_range_index_finds_exactly_the_members_brute_force_finds():
    index = RangeNearIndex(RANGES)
    for serial in _cases(random.Random(11)):
        got = [(m.key, m.serial) for m in index.near(serial)]
        assert got == _brute(serial, RANGES), serial


def test_range_key_intervals_hold_a_key_of_every_near_serial():
    rnd = random.Random(5)
    for serial in _cases(rnd):
        for key, r in RANGES:
            if not any(near_reason(serial, m) for m in r):
                continue
            intervals = range_key_intervals(r)
            assert any(low <= k <= high for k in keys(serial) for low, high in intervals), (serial, key)


def test_range_key_intervals_leave_out_serials_far_from_the_range():
    rng = SerialRange(prefix="SN", first=123_456, last=123_999, width=9)
    intervals = range_key_intervals(rng)
    assert len(intervals) < 200
    for far in ("SN000000001", "SN987654321", "SN000555000", "XY000123500"):
        assert not any(low <= k <= high for k in keys(far) for low, high in intervals), far
    assert any(low <= k <= high for k in keys("SN00123500") for low, high in intervals)  # a dropped 0
    assert normalize("SNOO") == "5N00"


def test_a_report_and_a_misread_sale_of_it_take_a_common_lock_and_unrelated_units_do_not():
    from services.theft.handlers import LOCKS
    from tests.support import factories as f

    def exclusive(*events):
        return {lock for lock, shared in LOCKS(list(events)).plan() if not shared}

    report = exclusive(f.theft_reported("acme", "SN12345670", minutes=1))
    assert report & exclusive(f.sold("acme", "SN1234567O", minutes=2))
    assert report & exclusive(f.returned("acme", "5N12345670", minutes=2))
    assert not report & exclusive(f.sold("acme", "SN99999999", minutes=2))
    assert not report & exclusive(f.sold("globex", "SN1234567O", minutes=2))

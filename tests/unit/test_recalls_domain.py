"""Recall rules without I/O: range matching at the edges, prefixes, amendments, closure, statuses."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.recalls.domain import (
    STATUS_RULES,
    Progress,
    Recall,
    RecallIndex,
    Stock,
    UnitStatus,
    order_key,
    unit_status,
)
from shared.identity import SerialRange

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def rng(prefix="SN", first=1, last=100, width=6) -> SerialRange:
    return SerialRange(prefix=prefix, first=first, last=last, width=width)


def recall(rid="RC-1", maker="acme", *, skus=(), ranges=(), serials=(), closed_at=None) -> Recall:
    closed_order = order_key(closed_at, "maker", "close") if closed_at else None
    return Recall(rid, maker, frozenset(skus), tuple(ranges), frozenset(serials), closed_order, closed_at)


def test_padded_range_matches_exactly_its_bounds():
    index = RecallIndex([recall(ranges=[rng(first=10, last=20)])])
    assert index.match("acme", "SN000010", None) == ["RC-1"]
    assert index.match("acme", "SN000020", None) == ["RC-1"]
    assert index.match("acme", "SN000009", None) == []
    assert index.match("acme", "SN000021", None) == []
    assert index.match("acme", "SN00015", None) == []  # wrong width
    assert index.match("acme", "SN0000150", None) == []
    assert index.match("acme", "XSN000015", None) == []  # wrong prefix
    assert index.match("other", "SN000015", None) == []  # serials are unique per manufacturer only


def test_unpadded_range_never_matches_leading_zeros():
    index = RecallIndex([recall(ranges=[rng(first=0, last=500, width=None)])])
    assert index.match("acme", "SN0", None) == ["RC-1"]
    assert index.match("acme", "SN7", None) == ["RC-1"]
    assert index.match("acme", "SN500", None) == ["RC-1"]
    assert index.match("acme", "SN007", None) == []
    assert index.match("acme", "SN501", None) == []


def test_prefix_that_ends_in_digits_and_an_empty_prefix():
    index = RecallIndex([
        recall("A", ranges=[rng(prefix="SN1", first=0, last=999, width=3)]),
        recall("B", ranges=[rng(prefix="", first=5000, last=6000, width=None)]),
        recall("C", ranges=[rng(prefix="SN", first=1000, last=1999, width=4)]),
    ])
    assert sorted(index.match("acme", "SN1042", None)) == ["A", "C"]  # both readings of the digits
    assert index.match("acme", "5500", None) == ["B"]
    assert index.match("acme", "SN2042", None) == []


def test_overlapping_and_nested_ranges_all_match():
    index = RecallIndex([
        recall("wide", ranges=[rng(first=1, last=999_999)]),
        recall("narrow", ranges=[rng(first=500, last=600)]),
        recall("twice", ranges=[rng(first=550, last=560), rng(first=555, last=700)]),
    ])
    assert sorted(index.match("acme", "SN000555", None)) == ["narrow", "twice", "wide"]  # "twice" once
    assert sorted(index.match("acme", "SN000650", None)) == ["twice", "wide"]
    assert index.match("acme", "SN000701", None) == ["wide"]


def test_explicit_serials_and_sku_conditions():
    index = RecallIndex([
        recall("list", serials=["AB12", "CD34"]),
        recall("tv-only", skus=["TV-55"], ranges=[rng(first=1, last=10)]),
        recall("all-radios", skus=["RADIO"]),
    ])
    assert index.match("acme", "AB12", None) == ["list"]
    assert index.match("acme", "SN000005", "TV-55") == ["tv-only"]
    assert index.match("acme", "SN000005", "RADIO") == ["all-radios"]
    assert index.match("acme", "SN000005", None) == []  # an sku condition needs the sku
    assert index.match("acme", "ZZ1", "RADIO") == ["all-radios"]


def test_closure_stops_matching_facts_after_it_but_not_before():
    closed = T0 + timedelta(hours=1)
    index = RecallIndex([recall(ranges=[rng()], closed_at=closed)])
    before = order_key(T0 + timedelta(minutes=30), "pos", "1")
    after = order_key(T0 + timedelta(hours=2), "pos", "2")
    assert index.match("acme", "SN000001", None, before) == ["RC-1"]
    assert index.match("acme", "SN000001", None, after) == []
    assert index.match("acme", "SN000001", None) == []  # "now": only open recalls


def test_in_scope_after_closure_and_with_reports():
    closed = T0 + timedelta(hours=1)
    r = recall(skus=["TV-55"], ranges=[rng()], closed_at=closed)
    assert r.in_scope("SN000001", "TV-55", T0, reported=False)
    assert not r.in_scope("SN000001", "TV-55", closed + timedelta(seconds=1), reported=False)
    assert r.in_scope("SN000001", "TV-55", closed + timedelta(seconds=1), reported=True)  # it was held: count it
    assert not r.in_scope("SN000001", None, T0, reported=False)
    assert r.in_scope("SN000001", None, None, reported=True)  # the reporter knew the sku
    assert not r.in_scope("SN000001", "RADIO", T0, reported=True)
    assert not r.in_scope("SN000999", "TV-55", T0, reported=True)


def test_an_amendment_is_a_new_scope_in_a_new_index():
    old = RecallIndex([recall(ranges=[rng(first=1, last=100)])])
    narrowed = RecallIndex([recall(ranges=[rng(first=1, last=50)], serials=["EXTRA1"])])
    assert old.match("acme", "SN000075", None) == ["RC-1"]
    assert narrowed.match("acme", "SN000075", None) == []
    assert narrowed.match("acme", "EXTRA1", None) == ["RC-1"]


def test_index_agrees_with_a_brute_force_scan():
    random.seed(7)
    recalls = []
    for i in range(300):
        prefix = random.choice(["", "A", "SN", "SN1", "X-"])
        width = random.choice([None, 3, 4, 6])
        first = random.randint(0, 900)
        last = first + random.randint(0, 200)
        if width is not None and len(str(last)) > width:
            width = None
        recalls.append(recall(f"R{i}", skus=random.choice([(), ("TV",)]),
                              ranges=[rng(prefix=prefix, first=first, last=last, width=width)]))
    index = RecallIndex(recalls)
    for _ in range(3000):
        serial = random.choice(["", "A", "SN", "SN1", "X-"]) + str(random.randint(0, 1200)).zfill(random.choice([0, 3, 4, 6]))
        if not serial or not serial[0].isalnum():
            continue
        sku = random.choice([None, "TV", "RADIO"])
        expected = sorted(r.recall_id for r in recalls if r.covers(serial, sku))
        assert sorted(index.match("acme", serial, sku)) == expected, serial


def test_order_key_sorts_like_time_source_id():
    keys = [
        (T0, "pos", "2"), (T0, "pos", "10"), (T0, "pos-b", "1"), (T0, "p", "9"),
        (T0 + timedelta(microseconds=1), "a", "a"), (T0 - timedelta(days=400), "z", "z"),
    ]
    assert sorted(keys, key=lambda k: order_key(*k)) == sorted(keys)


def test_unit_status_rules():
    assert unit_status("sold", remedied=True, notified=False, owner_unknown=False, quarantined=True) == "remedied"
    assert unit_status("sold", remedied=False, notified=True, owner_unknown=True,
                       quarantined=False) == UnitStatus.SOLD_OWNER_NOTIFIED  # a later registration wins
    assert unit_status("sold", remedied=False, notified=False, owner_unknown=True,
                       quarantined=True) == UnitStatus.SOLD_OWNER_UNKNOWN
    assert unit_status("sold", remedied=False, notified=False, owner_unknown=False,
                       quarantined=True) == UnitStatus.SOLD_AWAITING_OWNER
    assert unit_status("returned", remedied=False, notified=True, owner_unknown=False,
                       quarantined=True) == UnitStatus.QUARANTINED
    assert unit_status("in_stock", remedied=False, notified=False, owner_unknown=False,
                       quarantined=False) == UnitStatus.IN_STOCK_NOT_QUARANTINED
    assert unit_status(None, remedied=False, notified=False, owner_unknown=False,
                       quarantined=True) == UnitStatus.UNKNOWN
    assert STATUS_RULES[-1][0] == UnitStatus.UNKNOWN


def test_progress_from_status_counts():
    p = Progress.from_counts({"quarantined": 6, "in_stock_not_quarantined": 2, "sold_owner_notified": 3,
                              "sold_owner_unknown": 1, "sold_awaiting_owner": 1, "remedied": 2}, sale_attempts=1)
    assert (p.affected, p.in_stock, p.quarantined, p.sold, p.remedied) == (15, 8, 6, 5, 2)
    assert p.reached == 11 and p.reach_rate == round(11 / 15, 4)
    assert p.completion_rate == round(2 / 15, 4)
    assert p.sale_attempts_while_quarantined == 1
    empty = Progress.from_counts({})
    assert empty.affected == 0 and empty.completion_rate == 0.0


@pytest.mark.parametrize("stock", list(Stock) + [None])
def test_every_stock_gets_exactly_one_status(stock):
    for flags in range(16):
        remedied, notified, unknown, held = (bool(flags & bit) for bit in (1, 2, 4, 8))
        status = unit_status(stock, remedied=remedied, notified=notified, owner_unknown=unknown, quarantined=held)
        assert status in UnitStatus


def test_the_unit_filter_agrees_with_covers():
    rnd = random.Random(11)
    recalls = [
        recall(skus=["TV-55"]), recall(ranges=[rng("SN", 10, 20, 6), rng("AB", 5, 7, None)]),
        recall(skus=["TV-55", "TV-65"], serials=["SN000015", "XY1"]), recall(serials=["SN000001"]),
        recall(skus=["TV-55"], ranges=[rng("SN", 1, 50, 6)], serials=["ZZ9"]),
        Recall("RC-X", "acme"),  # known only from its closure: covers nothing
    ]
    serials = ["SN000015", "SN000001", "SN000051", "AB5", "AB05", "AB8", "XY1", "ZZ9", "SN00001"]
    for r in recalls:
        for reported in (False, True):
            covers = r.unit_filter(reported=reported)
            for _ in range(200):
                serial, sku = rnd.choice(serials), rnd.choice(["TV-55", "TV-65", "RADIO", None])
                assert covers(serial, sku) == r.covers(serial, sku, reported=reported), (r, serial, sku, reported)

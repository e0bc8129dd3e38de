"""Inventory rules without I/O."""

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from services.inventory.domain import Anomaly, Fact, Quarantined, Status, UnitState, advance, apply, fold, needs_refold

T0 = datetime(2026, 11, 1, tzinfo=UTC)
_ids = itertools.count()


def fact(kind, minutes, **fields):
    return Fact(time=T0 + timedelta(minutes=minutes), source="test", event_id=f"e{next(_ids)}", type=kind, **fields)


def received(m=0, location="store-1", **kw):
    return fact("unit.received", m, location=location, sku=kw.pop("sku", "TV"), condition=kw.pop("condition", "new"),
                **kw)


def sold(m, location="store-1"):
    return fact("unit.sold", m, location=location, sku="TV", receipt_id="R1", terminal_id="t1")


def kinds(effects):
    return [e.kind for e in effects if isinstance(e, Anomaly)]


def test_a_normal_life_has_no_anomalies():
    state, effects = fold("acme", "S1", [
        received(0, "dc"),
        fact("unit.transferred", 1, location="store-1", from_location="dc"),
        sold(2),
        fact("unit.returned", 3, location="store-2", condition="open_box"),
        sold(4, "store-2"),
    ])
    assert effects == []
    assert (state.status, state.location, state.condition) == (Status.SOLD, "store-2", "open_box")


@pytest.mark.parametrize("history, expected", [
    ([sold(1)], ["sold_never_received"]),
    ([received(0), sold(1), sold(2)], ["sold_twice"]),
    ([received(0), fact("unit.adjusted", 1, disposition="quarantined"), sold(2)], ["sold_while_quarantined"]),
    ([received(0), fact("theft.reported", 1, agency="pd", case_number="7"), sold(2)], ["sold_while_stolen"]),
    ([received(0), fact("unit.adjusted", 1, disposition="stolen"), sold(2)], ["sold_while_stolen"]),
    ([received(0), fact("unit.adjusted", 1, disposition="lost"), sold(2)], ["sold_while_unavailable"]),
    ([received(0, "store-1"), received(1, "store-2")], ["received_while_in_stock"]),
    ([received(0), fact("unit.returned", 1, location="store-1", condition="new")], ["returned_never_sold"]),
    ([received(0), sold(1), fact("unit.transferred", 2, location="b", from_location="store-1")],
     ["transferred_while_not_in_stock"]),
    ([received(0, "a"), fact("unit.transferred", 1, location="c", from_location="b")],
     ["transferred_from_wrong_location"]),
])
def test_each_anomaly_kind(history, expected):
    _, effects = fold("acme", "S1", history)
    assert kinds(effects) == expected


def test_anomalous_facts_are_still_applied():
    state, _ = fold("acme", "S1", [received(0), sold(1), sold(2, "store-9")])
    assert state.status == Status.SOLD and state.location == "store-9"


def test_theft_flag_is_sticky_until_every_case_is_recovered():
    state = UnitState("acme", "S1")
    for f in [received(0), fact("theft.reported", 1, agency="pd", case_number="1"),
              fact("theft.reported", 2, agency="fbi", case_number="9"),
              fact("theft.recovered", 3, agency="pd", case_number="1")]:
        apply(state, f)
    assert state.stolen and state.theft_cases == ("fbi:9",)
    apply(state, fact("theft.recovered", 4, agency="fbi", case_number="9"))
    assert not state.stolen and state.status == Status.IN_STOCK


def test_recall_quarantines_stock_and_later_arrivals_but_not_sold_units():
    recall = fact("recall.issued", 5, recall_id="RC1")
    in_stock, effects = fold("acme", "S1", [received(0), recall])
    assert in_stock.status == Status.QUARANTINED
    assert [e.recall_id for e in effects if isinstance(e, Quarantined)] == ["RC1"]
    sold_first, effects = fold("acme", "S2", [received(0), sold(1), recall])
    assert sold_first.status == Status.SOLD and effects == []
    later, _ = fold("acme", "S3", [recall, received(9)])
    assert later.status == Status.QUARANTINED
    returned, _ = fold("acme", "S4", [received(0), sold(1), recall, fact("unit.returned", 9, location="s",
                                                                           condition="new")])
    assert returned.status == Status.QUARANTINED


def test_sellable_adjustment_lifts_a_quarantine():
    state, _ = fold("acme", "S1", [received(0), fact("recall.issued", 1, recall_id="R"),
                                   fact("unit.adjusted", 2, disposition="sellable")])
    assert state.status == Status.IN_STOCK


def test_damaged_condition_on_receipt_means_damaged_status():
    state, _ = fold("acme", "S1", [received(0, condition="damaged")])
    assert state.status == Status.DAMAGED


def test_advance_is_incremental_in_order_and_refolds_late_facts():
    first, second, late = received(0), sold(10), fact("theft.reported", 5, agency="pd", case_number="1")
    outcome = advance(None, "acme", "S1", [first])
    outcome = advance(outcome.state, "acme", "S1", [second])
    assert not outcome.refolded and not needs_refold(outcome.state, [fact("unit.sold", 11)])
    assert needs_refold(outcome.state, [late])
    with pytest.raises(ValueError, match="history"):
        advance(outcome.state, "acme", "S1", [late])
    refold = advance(outcome.state, "acme", "S1", [late], [first, second])
    assert refold.refolded
    assert kinds(refold.effects) == ["sold_while_stolen"]  # the sale now comes after the report


def test_fold_is_independent_of_arrival_order():
    history = [received(0, "dc"), fact("unit.transferred", 1, location="s1", from_location="dc"),
               fact("theft.reported", 2, agency="pd", case_number="1"), sold(3, "s1"),
               fact("recall.issued", 4, recall_id="R"), fact("unit.returned", 5, location="s1", condition="new"),
               fact("theft.recovered", 6, agency="pd", case_number="1"), sold(7, "s1")]
    expected_state, expected_effects = fold("acme", "S1", history)
    rng = random.Random(5)
    for _ in range(50):
        shuffled = history[:]
        rng.shuffle(shuffled)
        state, effects = fold("acme", "S1", shuffled)
        assert state == expected_state and effects == expected_effects


def test_recall_lifecycle_remedy_narrowing_and_closure():
    recall = fact("recall.issued", 1, recall_id="R")
    remedied, _ = fold("acme", "S1", [received(0), recall, fact("recall.remedy.completed", 2, recall_id="R")])
    assert remedied.status == Status.IN_STOCK and remedied.recalls == () and remedied.recalls_seen == ("R",)
    released, _ = fold("acme", "S2", [received(0), recall,
                                      fact("recall.amended", 2, recall_id="R", disposition="released")])
    assert released.status == Status.IN_STOCK
    widened, effects = fold("acme", "S3", [received(0), fact("recall.amended", 2, recall_id="R",
                                                                disposition="covered")])
    assert widened.status == Status.QUARANTINED and [e.recall_id for e in effects] == ["R"]
    closed, _ = fold("acme", "S4", [recall, fact("recall.closed", 2, recall_id="R"), received(3)])
    assert closed.status == Status.IN_STOCK  # arrived after the campaign closed
    held, _ = fold("acme", "S5", [received(0), recall, fact("recall.closed", 2, recall_id="R")])
    assert held.status == Status.QUARANTINED  # closing a campaign does not release a held unit

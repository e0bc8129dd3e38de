"""The sell-through report (warranty) and stock aging (inventory) on the service layer: every arrival
order and duplicate gives the same report; CSV content; the sku filter; counts."""

from __future__ import annotations

import csv
import io
import random

import pytest

from tests.support.reports import SellThroughStory


@pytest.fixture
def warranty(make_store):
    return make_store("warranty")


def report(store, maker="acme", **params):
    return store.get(f"/manufacturers/{maker}/sell-through", **params)


def test_sell_through_lists_each_sale_and_return_of_the_period_without_customer_data(warranty):
    story = SellThroughStory()
    warranty.apply_each(story.events())
    body = report(warranty, **story.params())
    assert body["units"] == story.expected_units()
    assert body["counts"] == story.expected_counts and body["totals"] == story.expected_totals
    assert body["manufacturer"] == "acme" and body["since"] == story.since.isoformat()
    text = warranty.api.get(f"/manufacturers/acme/sell-through", params=story.params()).text
    assert "SECRET" not in text and "R-" not in text  # no customer, no receipt


@pytest.mark.parametrize("order", ["reverse", "shuffled", "duplicated"])
def test_sell_through_does_not_depend_on_arrival_order_or_duplicates(warranty, order):
    story = SellThroughStory()
    events = story.events()
    if order == "reverse":
        warranty.apply_each(reversed(events))
    elif order == "shuffled":
        random.Random(14).shuffle(events)
        warranty.apply(events[: len(events) // 2])
        warranty.apply(events[len(events) // 2:])
    else:
        warranty.apply(events + events)  # one batch holding each twice
        warranty.apply_each(events)  # and every one redelivered
    body = report(warranty, **story.params())
    assert body["units"] == story.expected_units()
    assert body["counts"] == story.expected_counts and body["totals"] == story.expected_totals


def test_sell_through_sku_filter_keeps_the_returns_of_that_skus_sales(warranty):
    story = SellThroughStory()
    warranty.apply(story.events())
    body = report(warranty, **story.params(sku="LT-14"))
    assert [(u["kind"], u["serial"]) for u in body["units"]] == [("sold", story.c), ("returned", story.c)]
    assert body["totals"] == {"sold": 1, "returned": 1, "net": 0, "sold_with_owner": 0}
    # Without a period: every sale and return on record, the one after the period too.
    everything = report(warranty)
    assert len(everything["units"]) == len(story.expected_units()) + 2  # D's sale (day 0), E's sale (day 20)
    assert report(warranty, "zeta")["totals"]["sold"] == 1


def test_sell_through_csv_lines_and_counts(warranty):
    story = SellThroughStory()
    warranty.apply(story.events())
    response = warranty.api.get("/manufacturers/acme/sell-through", params=story.params(format="csv"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert 'filename="sell-through-acme.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    expected = [{k: ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in line.items()}
                for line in story.expected_units()]
    assert rows == expected
    counts = warranty.api.get("/manufacturers/acme/sell-through", params=story.params(format="csv", view="counts"))
    assert list(csv.reader(io.StringIO(counts.text))) == [
        ["sku", "location", "sold", "returned", "net", "sold_with_owner"],
        *([str(c[k]) for k in ("sku", "location", "sold", "returned", "net", "sold_with_owner")]
          for c in story.expected_counts)]
    only_counts = report(warranty, **story.params(view="counts"))
    assert only_counts["units"] is None and only_counts["counts"] == story.expected_counts


def test_sell_through_refuses_bad_parameters(warranty):
    api = warranty.api
    assert api.get("/manufacturers/acme/sell-through", params={"since": "yesterday"}).status_code == 422
    assert api.get("/manufacturers/acme/sell-through", params={"until": "0.5"}).status_code == 422
    assert api.get("/manufacturers/acme/sell-through", params={"format": "xml"}).status_code == 422
    assert api.get("/manufacturers/acme/sell-through", params={"view": "all"}).status_code == 422
    assert api.get("/manufacturers/acme/sell-through", params={"sku": "x" * 65}).status_code == 422
    backwards = api.get("/manufacturers/acme/sell-through", params={"since": "2026-11-05", "until": "2026-11-01"})
    assert backwards.status_code == 400 and "after since" in backwards.json()["detail"]
    assert api.get("/manufacturers/bad%20name!/sell-through").status_code == 400

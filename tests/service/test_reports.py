"""The sell-through report (warranty) and stock aging (inventory) on the service layer: every arrival
order and duplicate gives the same report; CSV content; the sku filter; counts."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime

import pytest

from tests.support import factories as f
from tests.support.reports import AgingStory, SellThroughStory


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
    text = warranty.api.get("/manufacturers/acme/sell-through", params=story.params()).text
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


# --- stock aging (inventory) ---

@pytest.fixture
def inventory(make_store):
    return make_store("inventory")


def aging_of(store, **params):
    return store.get("/stock/aging", **params)


@pytest.mark.parametrize("order", ["in_order", "reverse", "shuffled_with_duplicates"])
def test_stock_aging_bands_and_returned_stock_whatever_the_arrival_order(inventory, order):
    story = AgingStory(datetime.now(UTC))
    events = story.events()
    if order == "in_order":
        inventory.apply_each(events)
    elif order == "reverse":
        inventory.apply_each(reversed(events))
    else:
        random.Random(5).shuffle(events)
        inventory.apply(events[:9] + events[:3])
        inventory.apply_each(events[9:] + events[5:12])
    body = aging_of(inventory, manufacturer="acme")
    assert body["bands"] == story.expected_bands()
    assert body["totals"] == AgingStory.band(d0=2, d31=2, d91=2, d181=1, unknown=1)
    assert body["returns"] == story.expected_returns
    units = {u["serial"]: u for u in body["units"]["items"]}
    assert body["units"]["total"] == 8 and set(units) == {story.u1, story.u2, story.u3, story.u4, story.u5, story.u6,
                                                          story.u9, story.u10}
    assert [units[sn]["days_in_stock"] for sn in (story.u1, story.u2, story.u3, story.u4, story.u5, story.u6, story.u9)] \
        == [10, 45, 100, 200, 20, 120, 70]  # u5, u6 from their (latest) return; u9's transfer keeps its receipt's
    assert (units[story.u5]["status"], units[story.u5]["times_returned"]) == ("returned", 1)
    assert (units[story.u6]["status"], units[story.u6]["times_returned"]) == ("in_stock", 2)
    assert units[story.u10]["stocked_at"] is None and units[story.u10]["days_in_stock"] is None
    assert [u["serial"] for u in body["units"]["items"]][:2] == [story.u4, story.u6]  # the oldest stock first


def test_stock_aging_filters_and_csv(inventory):
    story = AgingStory(datetime.now(UTC))
    inventory.apply(story.events())
    old = aging_of(inventory, manufacturer="acme", older_than_days=90)
    assert [u["serial"] for u in old["units"]["items"]] == [story.u4, story.u6, story.u3]
    assert old["totals"] == AgingStory.band(d91=2, d181=1)
    assert old["returns"] == [{"sku": "TV-55", "returned_units": 1, "restocked": 1, "awaiting": 0, "held": 0,
                               "returns": 2, "returned_more_than_once": 1}]
    assert {u["serial"] for u in aging_of(inventory, location="store-2")["units"]["items"]} == {
        story.u3, story.u5, story.u9}
    assert [u["serial"] for u in aging_of(inventory, sku="LT-14")["units"]["items"]] == [story.u4]
    assert aging_of(inventory)["totals"]["total"] == 9  # zeta's unit too
    page = aging_of(inventory, manufacturer="acme", limit=2, offset=1)["units"]
    assert page["total"] == 8 and [u["serial"] for u in page["items"]] == [story.u6, story.u3]

    response = inventory.api.get("/stock/aging", params={"manufacturer": "acme", "format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["manufacturer", "serial", "sku", "location", "status", "stocked_at", "days_in_stock",
                             "times_returned"]
    assert [r["serial"] for r in rows] == [u["serial"] for u in aging_of(inventory, manufacturer="acme")["units"]["items"]]
    u6 = next(r for r in rows if r["serial"] == story.u6)
    assert (u6["days_in_stock"], u6["times_returned"], u6["status"], u6["location"]) == ("120", "2", "in_stock", "store-1")
    assert rows[-1]["serial"] == story.u10 and rows[-1]["stocked_at"] == rows[-1]["days_in_stock"] == ""


def test_stock_aging_refuses_bad_parameters(inventory):
    api = inventory.api
    for params in ({"older_than_days": -1}, {"older_than_days": "ten"}, {"older_than_days": 40_000},
                   {"format": "xlsx"}, {"limit": 0}, {"sku": "x" * 65}, {"location": "a\x01b"}):
        assert api.get("/stock/aging", params=params).status_code == 422, params
    assert api.get("/stock/aging", params={"manufacturer": "no such!"}).status_code == 400


def test_a_voided_sale_leaves_the_sell_through(warranty):
    """A sale scanned by mistake and voided (event.voided) was never a sale: not a line, not a count, not
    an owner on record; the void applies whether it comes before or after the sale."""
    story = SellThroughStory()
    events = story.events()
    before = report(warranty, **story.params())
    assert before["units"] == []
    warranty.apply_each(events)
    full = report(warranty, **story.params())
    sale = next(e for e in events if e.type == "unit.sold")
    warranty.apply(f.voided(sale, minutes=0))
    after = report(warranty, **story.params())
    def is_the_sale(u):
        return u["kind"] == "sold" and u["serial"] == sale.data.serial and u["time"] == sale.time.isoformat()
    assert sum(map(is_the_sale, full["units"])) == 1 and not any(map(is_the_sale, after["units"]))
    assert len(after["units"]) == len(full["units"]) - 1
    assert after["totals"]["sold"] == full["totals"]["sold"] - 1

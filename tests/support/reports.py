"""Stories the sell-through and stock-aging tests share (tests/service/test_reports.py on the service
layer, tests/integration/test_reports.py over Redis and both stores)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from shared.contracts import WarrantyOwnerRegistered
from shared.envelope import Event, make_event
from tests.support import factories as f

DAY = 24 * 60


def registered(maker: str, sn: str, customer: str, *, minutes: float) -> Event:
    return make_event(WarrantyOwnerRegistered(manufacturer=maker, serial=sn, customer_id=customer, channel="web"),
                      source="test/web", time=f.at(minutes))


class SellThroughStory:
    """acme's sales and returns around the period [day 0.5, day 10), a zeta sale in it.

    A: sold day 1 to a named buyer, returned day 8, sold again day 9 without a customer;
    B: sold day 2 without a customer, registered day 5; H: likewise, registered day 12 (after the period);
    C (another sku): sold day 3, nobody registers, returned day 4 at another store;
    D: sold day 0 (before the period) to a buyer, returned day 6; E: sold day 20 (after it);
    F: registered day -1, sold day 7 without a customer (the registration was the previous ownership's)."""

    since, until = f.at(DAY // 2), f.at(10 * DAY)

    def __init__(self, maker: str = "acme"):
        self.maker = maker
        self.a, self.b, self.c, self.d, self.e, self.f, self.h, self.z = (f.serial(p) for p in "ABCDEFHZ")

    def events(self) -> list[Event]:
        m = self.maker
        return [
            *(f.received(m, sn, minutes=-3 * DAY) for sn in (self.a, self.b, self.d, self.e, self.f, self.h)),
            f.received(m, self.c, minutes=-3 * DAY, sku="LT-14"),
            f.sold(m, self.a, minutes=1 * DAY, customer_id="C-SECRET-A"),
            f.returned(m, self.a, minutes=8 * DAY, receipt_id=f"R-{self.a}-{DAY}"),
            f.sold(m, self.a, minutes=9 * DAY, location="store-2"),
            f.sold(m, self.b, minutes=2 * DAY, location="store-2"),
            registered(m, self.b, "C-SECRET-B", minutes=5 * DAY),
            f.sold(m, self.h, minutes=2 * DAY + 30),
            registered(m, self.h, "C-SECRET-H", minutes=12 * DAY),
            f.sold(m, self.c, minutes=3 * DAY, sku="LT-14"),
            f.returned(m, self.c, minutes=4 * DAY, location="store-2"),
            f.sold(m, self.d, minutes=0, customer_id="C-SECRET-D"),
            f.returned(m, self.d, minutes=6 * DAY),
            f.sold(m, self.e, minutes=20 * DAY, customer_id="C-SECRET-E"),
            registered(m, self.f, "C-SECRET-F", minutes=-1 * DAY),
            f.sold(m, self.f, minutes=7 * DAY),
            f.received("zeta", self.z, minutes=0),
            f.sold("zeta", self.z, minutes=2 * DAY),
        ]

    def expected_units(self) -> list[dict]:
        """The report's lines for the period, oldest first (times as f.at gives them)."""
        def line(kind, minutes, sn, sku, location, channel, via, sold_minutes):
            return {"kind": kind, "time": f.at(minutes).isoformat(), "serial": sn, "sku": sku, "location": location,
                    "channel": channel, "owner_registered": via is not None, "owner_via": via,
                    "sold_at": f.at(sold_minutes).isoformat()}
        return [
            line("sold", DAY, self.a, "TV-55", "store-1", "store-1/till-1", "sale", DAY),
            line("sold", 2 * DAY, self.b, "TV-55", "store-2", "store-2/till-1", "registration", 2 * DAY),
            line("sold", 2 * DAY + 30, self.h, "TV-55", "store-1", "store-1/till-1", "registration", 2 * DAY + 30),
            line("sold", 3 * DAY, self.c, "LT-14", "store-1", "store-1/till-1", None, 3 * DAY),
            line("returned", 4 * DAY, self.c, "LT-14", "store-2", "test/pos", None, 3 * DAY),
            line("returned", 6 * DAY, self.d, "TV-55", "store-1", "test/pos", "sale", 0),
            line("sold", 7 * DAY, self.f, "TV-55", "store-1", "store-1/till-1", None, 7 * DAY),
            line("returned", 8 * DAY, self.a, "TV-55", "store-1", "test/pos", "sale", DAY),
            line("sold", 9 * DAY, self.a, "TV-55", "store-2", "store-2/till-1", None, 9 * DAY),
        ]

    expected_counts: ClassVar[list[dict]] = [
        {"sku": "LT-14", "location": "store-1", "sold": 1, "returned": 0, "net": 1, "sold_with_owner": 0},
        {"sku": "LT-14", "location": "store-2", "sold": 0, "returned": 1, "net": -1, "sold_with_owner": 0},
        {"sku": "TV-55", "location": "store-1", "sold": 3, "returned": 2, "net": 1, "sold_with_owner": 2},
        {"sku": "TV-55", "location": "store-2", "sold": 2, "returned": 0, "net": 2, "sold_with_owner": 1},
    ]
    expected_totals: ClassVar[dict] = {"sold": 6, "returned": 3, "net": 3, "sold_with_owner": 3}

    def params(self, **extra) -> dict:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), **extra}


def days_before(now, days: float) -> float:
    """f.at's minutes for ``days`` before ``now``."""
    return (now - timedelta(days=days) - f.T0).total_seconds() / 60


class AgingStory:
    """acme's stock relative to ``now``: units on hand in each age band, two units customers brought
    back (one restocked after two returns, one awaiting), units not on hand (sold, in transit), a
    transfer that does not restart the clock, a unit found without a receipt, and a zeta unit."""

    def __init__(self, now):
        self.now = now
        (self.u1, self.u2, self.u3, self.u4, self.u5, self.u6, self.u7, self.u8, self.u9, self.u10,
         self.z) = (f.serial(f"G{n}") for n in range(11))

    def events(self) -> list[Event]:
        def ago(days):
            return days_before(self.now, days)
        return [
            f.received("acme", self.u1, minutes=ago(10)),
            f.received("acme", self.u2, minutes=ago(45)),
            f.received("acme", self.u3, minutes=ago(100), location="store-2"),
            f.received("acme", self.u4, minutes=ago(200), sku="LT-14"),
            f.received("acme", self.u5, minutes=ago(300)),
            f.sold("acme", self.u5, minutes=ago(250)),
            f.returned("acme", self.u5, minutes=ago(20), location="store-2"),
            f.received("acme", self.u6, minutes=ago(400)),
            f.sold("acme", self.u6, minutes=ago(300)),
            f.returned("acme", self.u6, minutes=ago(200)),
            f.adjusted("acme", self.u6, "sellable", minutes=ago(190)),
            f.sold("acme", self.u6, minutes=ago(150)),
            f.returned("acme", self.u6, minutes=ago(120)),
            f.adjusted("acme", self.u6, "sellable", minutes=ago(110)),
            f.received("acme", self.u7, minutes=ago(50)),
            f.sold("acme", self.u7, minutes=ago(5)),
            f.received("acme", self.u8, minutes=ago(60)),
            f.transferred("acme", self.u8, minutes=ago(30), in_transit=True),
            f.received("acme", self.u9, minutes=ago(70)),
            f.transferred("acme", self.u9, minutes=ago(40)),
            f.adjusted("acme", self.u10, "found", minutes=ago(10), location="store-1"),
            f.received("zeta", self.z, minutes=ago(5)),
        ]

    @staticmethod
    def band(**counts) -> dict:
        values = {"0-30": 0, "31-90": 0, "91-180": 0, "180+": 0, "unknown": 0} | {
            {"d0": "0-30", "d31": "31-90", "d91": "91-180", "d181": "180+"}.get(k, k): v for k, v in counts.items()}
        return {**values, "total": sum(values.values())}

    def expected_bands(self) -> list[dict]:
        return [
            {"sku": None, "location": "store-1", **self.band(unknown=1)},
            {"sku": "LT-14", "location": "store-1", **self.band(d181=1)},
            {"sku": "TV-55", "location": "store-1", **self.band(d0=1, d31=1, d91=1)},
            {"sku": "TV-55", "location": "store-2", **self.band(d0=1, d31=1, d91=1)},
        ]

    expected_returns: ClassVar[list[dict]] = [{"sku": "TV-55", "returned_units": 2, "restocked": 1, "awaiting": 1, "held": 0, "returns": 3,
                         "returned_more_than_once": 1}]

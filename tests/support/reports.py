"""Stories the sell-through and stock-aging tests share (tests/service/test_reports.py on the service
layer, tests/integration/test_reports.py over Redis and both stores)."""

from __future__ import annotations

from datetime import timedelta

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

    expected_counts = [
        {"sku": "LT-14", "location": "store-1", "sold": 1, "returned": 0, "net": 1, "sold_with_owner": 0},
        {"sku": "LT-14", "location": "store-2", "sold": 0, "returned": 1, "net": -1, "sold_with_owner": 0},
        {"sku": "TV-55", "location": "store-1", "sold": 3, "returned": 2, "net": 1, "sold_with_owner": 2},
        {"sku": "TV-55", "location": "store-2", "sold": 2, "returned": 0, "net": 2, "sold_with_owner": 1},
    ]
    expected_totals = {"sold": 6, "returned": 3, "net": 3, "sold_with_owner": 3}

    def params(self, **extra) -> dict:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), **extra}


def days_before(now, days: float) -> float:
    """f.at's minutes for ``days`` before ``now``."""
    return (now - timedelta(days=days) - f.T0).total_seconds() / 60

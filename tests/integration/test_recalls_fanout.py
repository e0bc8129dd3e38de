"""The whole fan-out over a real Redis and both stores: one recall.issued reaches inventory (stock
quarantined) and warranty (owners of sold units notified, or reported unknown); both report back,
and the recalls service counts every answer once."""

from __future__ import annotations

from services.inventory.app import definition as inventory
from services.recalls.app import definition as recalls
from services.warranty.app import definition as warranty
from tests.integration.test_recalls_flow import progress_is, publish_events, span
from tests.support import factories as f
from tests.support.running import http, running, wait_for


async def test_recall_reaches_inventory_and_warranty_and_their_answers_are_counted(settings):
    prefix, rid = f.serial("W"), f"RC-{f.serial()}"
    sn = [f"{prefix}{n:03d}" for n in range(8)]
    async with running(inventory, settings), running(warranty, settings), running(recalls, settings) as app, \
            http(app) as client:
        await publish_events(settings, [
            f.received("acme", selection={"serial_range": span(prefix, 1, 7)}, minutes=0, sku="TV-55"),
            f.sold("acme", sn[1], minutes=10, customer_id="C-1"),
            f.sold("acme", sn[2], minutes=10, customer_id="C-2"),
            f.sold("acme", sn[3], minutes=10),  # cash sale, nobody registered: owner unknown
        ])
        await publish_events(settings, [
            f.recall_issued("acme", minutes=20, recall_id=rid, skus=["TV-55"], serial_ranges=[span(prefix, 1, 7)]),
        ])
        await wait_for(lambda: progress_is(client, rid, affected=7, quarantined=4, sold_owner_notified=2,
                                           sold_owner_unknown=1, sold_awaiting_owner=0),
                       message="quarantines and owner answers counted")
        # sold after the broadcast (through a till that ignored the hold): warranty notifies the buyer,
        # inventory reports the attempt, and the unit moves from quarantined to sold
        await publish_events(settings, [f.sold("acme", sn[4], minutes=30, customer_id="C-4")])
        final = await wait_for(lambda: progress_is(client, rid, quarantined=3, sold_owner_notified=3,
                                                   sale_attempts_while_quarantined=1),
                               message="a sale after the broadcast")
        assert (final["affected"], final["sold"], final["reached"], final["reach_rate"]) == (7, 4, 6, round(6 / 7, 4))
        lookup = (await client.get(f"/units/acme/{sn[1]}/recalls")).json()
        assert lookup["recalls"][0]["status"] == "sold_owner_notified" and lookup["under_open_recall"] is True

"""The services on a real local Redis Cluster (three masters; tests/support/cluster.py), named by a
``redis-cluster://`` URL (README "Redis Cluster", docs/scaling.md): the delivery guarantees and the
scenario tests that matter most, run again here, and the CLI's publish ledger, whose script writes
two keys in one command, in the stream's slot.

SQLite stores: what differs on a cluster is Redis, and the PostgreSQL runs of the same tests are in
their own modules."""

from __future__ import annotations

import pytest

from serialtrack.publishing import LedgerPublisher
from shared.redis_clients import sync_client
from tests.conftest import make_settings
from tests.integration import test_delivery_guarantees as guarantees
from tests.integration import test_every_service as every_service
from tests.integration import test_recalls_flow as recalls_flow
from tests.support import factories as f
from tests.support.cluster import start_cluster


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_settings(redis_cluster, tmp_path):
    return make_settings(redis_cluster.url, {}, tmp_path)


def test_the_streams_of_a_deployment_spread_over_the_cluster(cluster_settings):
    """The point of a cluster: streams live on different nodes (no hash tag pins them together)."""
    client = sync_client(cluster_settings.redis_url)
    try:
        slots = {client.keyslot(cluster_settings.streams.for_type(t)) for t in ("unit.received", "unit.sold",
                                                                                 "unit.returned", "theft.reported")}
        nodes = {client.get_node_from_key(cluster_settings.streams.for_type(t)).name
                 for t in ("unit.received", "unit.sold", "unit.returned", "theft.reported", "recall.issued")}
    finally:
        client.close()
    assert len(slots) == 4 and len(nodes) > 1


def test_the_cli_ledger_publishes_each_event_once_on_a_cluster(cluster_settings):
    """The ledger script writes the ledger and the stream in one command: on a cluster the ledger is
    per stream, in its slot, and a second publish of the same events adds nothing."""
    client = sync_client(cluster_settings.redis_url)
    try:
        events = [f.received("acme", f.serial(), minutes=0), f.sold("acme", f.serial(), minutes=1)]
        entries = [(e.envelope, e.envelope.model_dump_json(exclude_none=True)) for e in events]
        publisher = LedgerPublisher(client, cluster_settings.streams)
        first, again = publisher(entries), publisher(entries)
        streams = cluster_settings.streams
        for event in events:
            stream = streams.for_type(event.type)
            assert client.keyslot(streams.published_ledger(stream)) == client.keyslot(stream)
            assert client.xlen(stream) == 1
    finally:
        client.close()
    assert [added for added, _ in first] == [True, True]
    assert [added for added, _ in again] == [False, False]


def test_r1_no_loss_when_the_consumer_is_killed_on_a_cluster(cluster_settings, tmp_path):
    guarantees.test_r1_no_loss_when_the_consumer_is_killed(cluster_settings, tmp_path)


async def test_r2_the_same_envelope_three_times_applies_once_on_a_cluster(cluster_settings):
    await guarantees.test_r2_the_same_envelope_three_times_applies_once(cluster_settings)


async def test_r5_poison_is_dead_lettered_on_a_cluster(cluster_settings):
    await guarantees.test_r5_poison_is_dead_lettered_and_does_not_block_the_rest(cluster_settings)


async def test_r11_shuffled_delivery_ends_in_the_in_order_state_on_a_cluster(cluster_settings, tmp_path):
    await guarantees.test_r11_shuffled_delivery_ends_in_the_in_order_state(cluster_settings, tmp_path)


@pytest.mark.parametrize("service", ["warranty", "theft"])
async def test_history_and_poison_on_a_cluster(cluster_settings, service):
    await every_service.test_a_service_started_after_valid_and_poison_entries_applies_the_valid_and_dead_letters_the_poison(
        cluster_settings, service)


async def test_a_recall_campaign_on_a_cluster(cluster_settings):
    await recalls_flow.test_full_fan_out_is_counted(cluster_settings)

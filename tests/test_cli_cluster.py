"""Kafka's tools against a cluster with a dead broker that is still listed in the metadata.

Between a broker's death and the expiry of its ZooKeeper session (`zookeeper.session.timeout.ms`)
the cluster still lists it, and as leader of its partitions. A tool must then send its requests
to a live broker instead of failing with `111 ECONNREFUSED` (kafka-python picks a broker at
random from the metadata, so a tool run in that window used to fail about a third of the time).
The session timeout here is long (180 s) so the whole test runs inside that window: its 17 tool
runs took over 60 s on two loaded cores with other test files running alongside.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cluster_helpers import Cluster, wait_until
from zookeeper_server import zookeeper_missing

missing = zookeeper_missing()
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

BIN = os.path.dirname(sys.executable)
RUNS = 8  # each run picks a broker at random: (2/3)^8 < 4% odds of missing the old bug


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, name), *args], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(
        str(tmp_path_factory.mktemp("cli-cluster")),
        overrides={"zookeeper.session.timeout.ms": "180000"},
    ).start()
    yield c
    c.stop()


def test_tools_route_around_a_dead_broker_still_in_metadata(cluster):
    r = tool("kafka-topics", "--create", "--topic", "orders", "--partitions", "3",
             "--replication-factor", "3", "--bootstrap-server", cluster.bootstrap())  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: (v := cluster.agreed_partitions("orders")) and len(v) == 3,
               what="orders on every broker")  # fmt: skip
    cluster.kill(3)
    assert 3 in cluster.live_ids(), "the dead broker's session already expired"
    bootstrap = cluster.bootstrap()  # the two live brokers
    for _ in range(RUNS):
        r = tool("kafka-topics", "--describe", "--topic", "orders", "--bootstrap-server", bootstrap)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("Topic: orders\t") and "ReplicationFactor: 3" in lines[0]
        assert len(lines) == 4 and all("Replicas: " in line for line in lines[1:])
    # Still inside the window: broker 3 is listed and still leads its partition.
    assert 3 in cluster.live_ids()
    assert "Leader: 3" in r.stdout
    for _ in range(RUNS):
        r = tool("kafka-topics", "--list", "--bootstrap-server", bootstrap)
        assert r.returncode == 0 and "orders" in r.stdout.split(), r.stdout + r.stderr
        r = tool("kafka-configs", "--describe", "--entity-type", "topics", "--entity-name",
                 "orders", "--bootstrap-server", bootstrap)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("Dynamic configs for topic orders are:")
    assert 3 in cluster.live_ids()

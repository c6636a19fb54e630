"""Controlled shutdown on a real cluster (a private ZooKeeper and three brokers): a rolling
restart under an idempotent acks=all producer (min.insync.replicas=2, RF 3) with no produce
error and every acknowledged record read back once; leadership and ISR membership leave each
broker before its registration does (ZooKeeper's zxids say which came first); with
controlled.shutdown.enable=false, as before, leadership moves only once the broker is gone."""

from __future__ import annotations

import json
import sys

import pytest
from cluster_helpers import AcksAllProducer, Cluster, assert_acked_once, read_all, wait_until
from helpers import RawClient
from kazoo.client import KazooClient
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey

missing = zookeeper_missing()
if missing:
    print(f"\nSKIPPING cluster tests: {missing}", file=sys.stderr)
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

TOPIC = "rolling"
PARTITIONS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("shutdown-cluster"))).start()
    client = RawClient(c.brokers[1].port)
    try:
        body = {
            "topics": [{"name": TOPIC, "num_partitions": PARTITIONS, "replication_factor": 3,
                        "assignments": [],
                        "configs": [{"name": "min.insync.replicas", "value": "2"}]}],
            "timeout_ms": 10000, "validate_only": False,
        }  # fmt: skip
        r = client.request(ApiKey.CREATE_TOPICS, 5, body)
        assert r.topics[0].error_code == 0
    finally:
        client.close()
    yield c
    c.stop()


@pytest.fixture
def zk(cluster):
    client = KazooClient(hosts=f"{cluster.zk.connect}/pykbroker")
    client.start(10)
    yield client
    client.stop()
    client.close()


def wait_fully_in_sync(cluster: Cluster) -> dict:
    return wait_until(
        lambda: (
            (parts := cluster.agreed_partitions(TOPIC))
            and len(parts) == PARTITIONS
            and all(p[0] >= 0 and len(p[3]) == 3 for p in parts.values())
            and parts
        ),
        what="every partition led, ISR of 3",
    )


def states_after_exit(zk: KazooClient, node_id: int) -> tuple[int, dict]:
    """With `node_id` stopped: the zxid that removed its /brokers/ids registration (the pzxid of
    /brokers/ids, nothing else having joined or left since) and each partition's state znode
    (leader, isr, zxid of its last write)."""
    assert zk.exists(f"/brokers/ids/{node_id}") is None
    gone_zxid = zk.exists("/brokers/ids").pzxid
    states = {}
    for p in range(PARTITIONS):
        data, stat = zk.get(f"/brokers/topics/{TOPIC}/partitions/{p}/state")
        s = json.loads(data)
        states[p] = (s["leader"], s["isr"], stat.mzxid)
    return gone_zxid, states


def test_rolling_restart_under_an_acks_all_producer(cluster, zk):
    wait_fully_in_sync(cluster)
    with AcksAllProducer(cluster.bootstrap(), TOPIC, PARTITIONS) as producer:
        wait_until(lambda: len(producer.acked) >= 100, what="first acks")
        for node_id in (1, 2, 3):
            before = wait_fully_in_sync(cluster)
            led = [p for p, (leader, *_rest) in before.items() if leader == node_id]
            broker = cluster.brokers[node_id]
            assert cluster.terminate(node_id) == 0
            assert broker.events("controlled_shutdown_succeeded")
            gone_zxid, states = states_after_exit(zk, node_id)
            for p, (leader, isr, zxid) in states.items():
                # Moved off it (and out of every ISR) while it was still registered.
                assert leader != node_id and node_id not in isr, (p, leader, isr)
                assert zxid < gone_zxid, (node_id, p)
            print(f"\nbroker {node_id} led {led}, handed over: {states}", file=sys.stderr)
            acks = len(producer.acked)
            cluster.start_broker(node_id)
            wait_until(lambda a=acks: len(producer.acked) > a + 50, what="acks after restart")
        wait_fully_in_sync(cluster)
    assert producer.remaining == 0
    assert producer.errors == []
    records = read_all(cluster.bootstrap(), TOPIC, PARTITIONS)
    assert_acked_once(producer, records)
    print(f"rolling restart: {len(producer.acked)} acks, {len(records)} records", file=sys.stderr)


def test_without_controlled_shutdown_leadership_moves_only_once_the_broker_is_gone(cluster, zk):
    node_id = 2
    assert cluster.terminate(node_id) == 0
    saved = dict(cluster.overrides)
    cluster.overrides["controlled.shutdown.enable"] = "false"
    try:
        cluster.start_broker(node_id)
    finally:
        cluster.overrides = saved
    view = wait_fully_in_sync(cluster)
    if not any(leader == node_id for leader, *_ in view.values()):
        # It leads its preferred partition again once the controller's rebalance runs (1 s).
        view = wait_until(
            lambda: (
                (v := wait_fully_in_sync(cluster))
                and any(leader == node_id for leader, *_ in v.values())
                and v
            ),
            what="broker 2 leading again",
        )
    broker = cluster.brokers[node_id]
    assert cluster.terminate(node_id) == 0
    assert not broker.events("controlled_shutdown_requested")
    gone_zxid, states = states_after_exit(zk, node_id)
    moved = [p for p, (leader, *_) in view.items() if leader == node_id]
    # The controller elected the new leaders after the registration went (a failed broker).
    wait_until(lambda: all(states_after_exit(zk, node_id)[1][p][0] != node_id for p in moved),
               what="leadership moved")  # fmt: skip
    _, states = states_after_exit(zk, node_id)
    for p in moved:
        assert states[p][2] > gone_zxid
    cluster.start_broker(node_id)
    wait_fully_in_sync(cluster)

"""Racks on a real cluster (a private ZooKeeper, three brokers with broker.rack r1/r2/r3 and
replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector).

- broker.rack is in each registration (/brokers/ids/N) and in Metadata;
- KIP-392: a leader answers a consumer's Fetch (v11+) whose rack_id is another in-sync
  replica's rack with that replica as preferred_read_replica and no records; the follower
  then serves the consumer, up to its own high watermark; confluent-kafka with client.rack
  reads every record;
- rack-aware placement is Kafka's AdminUtils (its own test's numbers, below).
"""

from __future__ import annotations

import json
import time

import pytest
from cluster_helpers import Cluster, wait_until
from helpers import RawClient
from kazoo.client import KazooClient
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey
from pykbroker.cluster.placement import assign, rack_alternated

missing = zookeeper_missing()
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

SELECTOR = "org.apache.kafka.common.replica.RackAwareReplicaSelector"
TOPIC = "racked"
COUNT = 200


def test_rack_aware_placement_is_kafkas():
    # Kafka's AdminRackAwareTest.testGetRackAlternatedBrokerListAndAssignReplicasToBrokers
    racks = {0: "rack1", 1: "rack3", 2: "rack3", 3: "rack2", 4: "rack2", 5: "rack1"}
    assert rack_alternated(racks) == [0, 3, 1, 5, 4, 2]
    assert rack_alternated({b: r for b, r in racks.items() if b != 5}) == [0, 3, 1, 4, 2]
    assert assign(7, 3, racks) == [[0, 3, 1], [3, 1, 5], [1, 5, 4], [5, 4, 2], [4, 2, 0],
                                   [2, 0, 3], [0, 4, 2]]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(
        str(tmp_path_factory.mktemp("racks")),
        overrides={"replica.selector.class": SELECTOR, "auto.leader.rebalance.enable": "false"},
        broker_overrides={n: {"broker.rack": f"r{n}"} for n in (1, 2, 3)},
    ).start()
    yield c
    c.stop()


def fetch(port: int, rack: str, offset: int = 0, max_wait_ms: int = 0):
    client = RawClient(port)
    try:
        body = {
            "replica_id": -1, "max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": 1 << 20,
            "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": TOPIC, "partitions": [{
                "partition": 0, "current_leader_epoch": -1, "fetch_offset": offset,
                "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
            "forgotten_topics_data": [], "rack_id": rack,
        }  # fmt: skip
        return client.request(ApiKey.FETCH, 11, body).responses[0].partitions[0]
    finally:
        client.close()


def test_fetch_from_the_closest_replica(cluster):
    zk = KazooClient(hosts=f"{cluster.zk.connect}/pykbroker")
    zk.start(10)
    try:
        assert json.loads(zk.get("/brokers/ids/2")[0])["rack"] == "r2"
    finally:
        zk.stop()
        zk.close()
    assert {b.node_id: b.rack for b in cluster.metadata(1).brokers} == {1: "r1", 2: "r2", 3: "r3"}
    client = RawClient(cluster.brokers[1].port)
    try:
        body = {"topics": [{"name": TOPIC, "num_partitions": -1, "replication_factor": -1,
                            "assignments": [{"partition_index": 0, "broker_ids": [1, 2, 3]}],
                            "configs": []}], "timeout_ms": 10000, "validate_only": False}  # fmt: skip
        assert client.request(ApiKey.CREATE_TOPICS, 5, body).topics[0].error_code == 0
    finally:
        client.close()
    wait_until(lambda: (v := cluster.agreed_partitions(TOPIC)) and v[0][0] == 1
               and len(v[0][3]) == 3, what="led by 1, ISR of 3")  # fmt: skip
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all",
                         "broker.address.family": "v4"})  # fmt: skip
    for i in range(COUNT):
        producer.produce(TOPIC, value=b"r%04d" % i, partition=0)
    assert producer.flush(30) == 0

    # Every replica has it all and knows the HW: the leader sends an r2 client to broker 2.
    wait_until(lambda: fetch(cluster.brokers[2].port, "r2").high_watermark == COUNT,
               what="broker 2's HW")  # fmt: skip
    r = wait_until(lambda: (r := fetch(cluster.brokers[1].port, "r2"))
                   .preferred_read_replica == 2 and r, what="preferred replica 2")  # fmt: skip
    assert r.error_code == 0 and not r.records
    # A client in the leader's rack, or in none, or an unknown one reads from the leader.
    for rack in ("r1", "", "elsewhere"):
        r = fetch(cluster.brokers[1].port, rack)
        assert r.preferred_read_replica == -1 and r.records, rack
    # The follower serves the consumer, up to its high watermark.
    r = fetch(cluster.brokers[2].port, "r2")
    assert r.error_code == 0 and r.preferred_read_replica == -1 and r.high_watermark == COUNT
    assert r.records

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap(), "group.id": "racked",
                         "client.rack": "r3", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "broker.address.family": "v4"})  # fmt: skip
    try:
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < COUNT:
            assert time.monotonic() < deadline, f"read {len(got)} records with client.rack r3"
            m = consumer.poll(0.2)
            if m is not None and not m.error():
                got.append(m.value())
        assert got == [b"r%04d" % i for i in range(COUNT)]
    finally:
        consumer.close()

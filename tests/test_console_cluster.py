"""The web console on a two-broker ZooKeeper cluster: brokers' health, and a topic created in
one broker's console is the cluster's (written to ZooKeeper, replicated)."""

from __future__ import annotations

import pytest
from cluster_helpers import Cluster, wait_until
from confluent_kafka import Consumer, Producer, TopicPartition
from console_helpers import api, request
from zookeeper_server import zookeeper_missing

missing = zookeeper_missing()
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")


def console_url(broker) -> str:
    started = next(e for e in broker.lines if e.get("event") == "broker_started")
    return f"http://127.0.0.1:{started['console_port']}/"


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(str(tmp_path), size=2, overrides={"console.port": "0",
                                                 "offsets.topic.replication.factor": "2"})  # fmt: skip
    try:
        yield c.start()
    finally:
        c.stop()


def test_cluster_health_and_topics_in_the_console(cluster):
    url1, url2 = console_url(cluster.brokers[1]), console_url(cluster.brokers[2])
    c = wait_until(lambda: (c := api(url1, "GET", "/api/cluster"))["controller_id"] > 0 and c,
                   what="a controller")  # fmt: skip
    assert c["mode"] == "zookeeper" and c["node_id"] == 1
    assert [(b["node_id"], b["alive"], b["this"]) for b in c["brokers"]] == [
        (1, True, True),
        (2, True, False),
    ]
    assert sum(b["controller"] for b in c["brokers"]) == 1

    # Created in broker 1's console, through the controller's ZooKeeper path: both see it.
    api(url1, "POST", "/api/topics", {"name": "spread", "partitions": 2, "replication_factor": 2},
        expect=201)  # fmt: skip
    wait_until(lambda: len(cluster.agreed_partitions("spread") or {}) == 2, what="agreement")
    t = wait_until(
        lambda: (t := api(url2, "GET", "/api/topics/spread"))["partitions"][1]["isr"] == t["partitions"][1]["replicas"] and t,
        what="ISR complete in broker 2's console",
    )  # fmt: skip
    assert all(sorted(p["replicas"]) == [1, 2] for p in t["partitions"])
    code, _, err = request(url2, "POST", "/api/topics", {"name": "spread"})
    assert (code, err["error"]) == (409, "TOPIC_ALREADY_EXISTS")

    p = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all"})
    for i in range(10):
        p.produce("spread", value=b"%d" % i, partition=0)
    assert p.flush(20) == 0
    # Either broker's console reads the partition: leader or follower, below the high watermark.
    for url in (url1, url2):
        got = wait_until(
            lambda u=url: len(api(u, "GET", "/api/topics/spread/messages?partition=0")["records"]) == 10,
            what="records readable",
        )  # fmt: skip
        assert got

    # A group is read from its coordinator's console; the other broker's answers 421 with
    # Kafka's NOT_COORDINATOR (the error of a read handler, not a 500).
    c = Consumer({"bootstrap.servers": cluster.bootstrap(), "group.id": "g-spread"})
    try:
        c.commit(offsets=[TopicPartition("spread", 0, 3)], asynchronous=False)
    finally:
        c.close()
    answers = sorted((request(u, "GET", "/api/groups/g-spread")[::2] for u in (url1, url2)),
                     key=lambda a: a[0])  # fmt: skip
    assert answers[0][0] == 200 and answers[0][1]["group_id"] == "g-spread", answers
    assert (answers[1][0], answers[1][1]["error"]) == (421, "NOT_COORDINATOR"), answers

    # Broker 2 goes: broker 1's console shows it offline and the partitions under-replicated.
    cluster.kill(2)

    def degraded():
        c = api(url1, "GET", "/api/cluster")
        gone = [b for b in c["brokers"] if b["node_id"] == 2]
        return gone and not gone[0]["alive"] and c

    c = wait_until(degraded, what="broker 2 offline in the console")
    assert c["brokers"][1]["replica_partitions"] >= 2
    detail = wait_until(
        lambda: (d := api(url1, "GET", "/api/topics/spread"))["partitions"][0]["isr"] == [1] and d,
        what="ISR shrunk",
    )  # fmt: skip
    assert all(p["offline_replicas"] == [2] and p["leader"] == 1 for p in detail["partitions"])
    listed = {t["name"]: t for t in api(url1, "GET", "/api/topics")["topics"]}
    assert listed["spread"]["under_replicated"] == 2

"""Transactions in a three-broker ZooKeeper cluster: a transaction spans partitions led by
different brokers, so the coordinator writes markers over the wire (WriteTxnMarkers) and the
partition leaders check their transactional batches with it (AddPartitionsToTxn verify_only);
when the coordinator's broker dies, another one loads __transaction_state and finishes the job."""

from __future__ import annotations

import sys
import time

import pytest
from cluster_helpers import TRANSACTION, Cluster, find_coordinator, wait_until
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from zookeeper_server import zookeeper_missing

missing = zookeeper_missing()
if missing:
    print(f"\nSKIPPING cluster transaction tests: {missing}", file=sys.stderr)
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "offsets.topic.num.partitions": "3",
}


def read_committed(bootstrap: str, topic: str, count: int, partitions=(0, 1, 2)) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            got += [m.value() for m in c.consume(100, timeout=0.2) if m.error() is None]
        quiet = time.monotonic() + 0.5
        while time.monotonic() < quiet:
            got += [m.value() for m in c.consume(100, timeout=0.1) if m.error() is None]
    finally:
        c.close()
    return got


def test_transaction_across_brokers_and_coordinator_failover(tmp_path):
    cluster = Cluster(str(tmp_path), overrides=OVERRIDES).start()
    try:
        bootstrap = cluster.bootstrap()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        # Partition p led by broker p+1, each replicated on all three.
        admin.create_topics([NewTopic("span", replica_assignments={
            0: [1, 2, 3], 1: [2, 3, 1], 2: [3, 1, 2]})])  # fmt: skip
        admin.close()
        wait_until(
            lambda: (parts := cluster.agreed_partitions("span"))
            and [parts[p][0] for p in range(3)] == [1, 2, 3],
            what="leaders 1, 2, 3 for span",
        )  # fmt: skip
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "span-1",
                      "linger.ms": 5})  # fmt: skip
        p.init_transactions(60)
        p.begin_transaction()
        for i in range(9):
            p.produce("span", b"c-%d" % i, partition=i % 3)
        p.commit_transaction(60)
        p.begin_transaction()
        for i in range(3):
            p.produce("span", b"a-%d" % i, partition=i % 3)
        p.flush(60)
        p.abort_transaction(60)
        assert sorted(read_committed(bootstrap, "span", 9)) == sorted(b"c-%d" % i for i in range(9))

        # An open transaction when its coordinator dies: another broker takes the
        # __transaction_state partition over, reloads the transaction and commits it.
        any_port = next(iter(cluster.brokers.values())).port
        coordinator = wait_until(
            lambda: find_coordinator(any_port, "span-1", TRANSACTION), what="coordinator"
        )
        p.begin_transaction()
        for i in range(3):
            p.produce("span", b"late-%d" % i, partition=i % 3)
        p.flush(60)
        cluster.kill(coordinator)
        survivor = next(iter(cluster.brokers.values())).port
        wait_until(lambda: find_coordinator(survivor, "span-1", TRANSACTION) not in (None, coordinator),
                   timeout=60, what="a new coordinator")  # fmt: skip
        p.commit_transaction(60)
        want = [b"c-%d" % i for i in range(9)] + [b"late-%d" % i for i in range(3)]
        got = read_committed(cluster.bootstrap(), "span", len(want))
        assert sorted(got) == sorted(want)
    finally:
        cluster.stop()

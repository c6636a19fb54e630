"""The group coordinator in a three-broker cluster: __consumer_offsets is replicated, so when
the coordinator's broker dies another broker takes its partitions over, loads the groups and
serves the committed offsets."""

from __future__ import annotations

import sys

import pytest
from cluster_helpers import Cluster, find_coordinator, wait_until
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata
from zookeeper_server import zookeeper_missing

missing = zookeeper_missing()
if missing:
    print(f"\nSKIPPING cluster group tests: {missing}", file=sys.stderr)
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

OVERRIDES = {
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
}


def test_coordinator_failover_keeps_committed_offsets(tmp_path):
    cluster = Cluster(str(tmp_path), overrides=OVERRIDES).start()
    try:
        bootstrap = cluster.bootstrap()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("t", 2, 3)])
        wait_until(
            lambda: (parts := cluster.agreed_partitions("t")) and all(p[0] >= 0 for p in parts.values()),
            what="leaders for t",
        )  # fmt: skip
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for i in range(10):
            producer.send("t", value=b"%d" % i, partition=i % 2)
        producer.flush()
        producer.close()

        # The first group request creates __consumer_offsets (RF 3 here); once its partition has a
        # leader, commits are acknowledged only when every in-sync replica has them.
        any_port = next(iter(cluster.brokers.values())).port
        coordinator = wait_until(
            lambda: find_coordinator(any_port, "g"), what="a coordinator for g"
        )
        wait_until(
            lambda: all(len(p[3]) == 3 for p in cluster.agreed_partitions("__consumer_offsets").values()),
            what="__consumer_offsets fully replicated",
        )  # fmt: skip
        errors = admin.alter_group_offsets("g", {
            TopicPartition("t", 0): OffsetAndMetadata(3, "three", -1),
            TopicPartition("t", 1): OffsetAndMetadata(4, "four", -1),
        })  # fmt: skip
        assert [e.errno for e in errors.values()] == [0, 0]
        admin.close()

        cluster.kill(coordinator)
        survivor = next(iter(cluster.brokers.values()))
        new_coordinator = wait_until(
            lambda: (
                find_coordinator(survivor.port, "g") not in (None, coordinator)
                and find_coordinator(survivor.port, "g")
            ),
            what="a new coordinator for g",
        )
        assert new_coordinator in cluster.brokers

        # A consumer of the group starts from the committed offsets on the new coordinator.
        consumer = KafkaConsumer(
            "t", bootstrap_servers=cluster.bootstrap(), group_id="g",
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        seen = []
        wait_until(
            # A long poll: kafka-python 3.0.12 can lose a rejoin still in flight when a short
            # poll returns (see test_groups_clients.py).
            lambda: (
                seen.extend(r for rs in consumer.poll(timeout_ms=2000).values() for r in rs)
                or len(seen) >= 3
            ),
            what="records after the committed offsets",
        )
        consumer.close()
        assert sorted((r.partition, r.offset) for r in seen) == [(0, 3), (0, 4), (1, 4)]
    finally:
        cluster.stop()

"""The guide's topic commands and the admin APIs on a three-broker cluster (ZooKeeper).

Section 5's `--replication-factor 2` succeeds here, section 6's describe shows two replicas per
partition, and config changes, new partitions and deleted records reach every replica.
"""

from __future__ import annotations

import sys

import pytest
from cli_helpers import shell
from cluster_helpers import Cluster, wait_until
from helpers import KAFKA_DEFAULTS, RawClient
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from test_cli_guide import SECTION_5, SECTION_6, SECTION_11
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey

missing = zookeeper_missing()
if missing:
    print(f"\nSKIPPING admin cluster tests: {missing}", file=sys.stderr)
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Kafka's built-in defaults: the sources described below are DEFAULT_CONFIG, which a
    # server.properties setting log.retention.hours would make STATIC_BROKER_CONFIG.
    c = Cluster(str(tmp_path_factory.mktemp("admin-cluster")), properties=KAFKA_DEFAULTS).start()
    yield c
    c.stop()


def describe_topic(cluster: Cluster, node_id: int, topic: str) -> list:
    """A topic's configs as one broker reports them (DescribeConfigs to that broker)."""
    client = RawClient(cluster.brokers[node_id].port)
    try:
        result = client.request(ApiKey.DESCRIBE_CONFIGS, 4, {
            "resources": [{"resource_type": 2, "resource_name": topic, "configuration_keys": None}],
            "include_synonyms": False, "include_documentation": False,
        }).results[0]  # fmt: skip
    finally:
        client.close()
    return result.configs


def topic_configs(cluster: Cluster, node_id: int, topic: str) -> dict[str, str]:
    """The overrides one broker reports for a topic."""
    return {
        c.name: c.value for c in describe_topic(cluster, node_id, topic) if c.config_source == 1
    }


def retention(cluster: Cluster, node_id: int, topic: str) -> tuple[str, int]:
    """(value, source) of retention.ms as one broker applies it to a topic."""
    entry = next(c for c in describe_topic(cluster, node_id, topic) if c.name == "retention.ms")
    return entry.value, entry.config_source


def fully_replicated(cluster: Cluster, topic: str, partitions: int, rf: int):
    parts = cluster.agreed_partitions(topic)
    if (
        parts
        and len(parts) == partitions
        and all(leader >= 0 and len(isr) == rf for leader, _, _, isr, _ in parts.values())
    ):
        return parts
    return None


def test_guide_topic_commands_on_three_brokers(cluster):
    bootstrap = cluster.bootstrap()
    r = shell(SECTION_5, bootstrap)
    assert r.returncode == 0, r
    assert r.lines[-1] == "Created topic high_traffic."
    parts = wait_until(lambda: fully_replicated(cluster, "high_traffic", 4, 2), what="high_traffic")
    r = shell(SECTION_6, bootstrap)
    assert r.returncode == 0, r
    assert r.lines[0].split("\t")[2:] == [
        "PartitionCount: 4", "ReplicationFactor: 2", "Configs: "
    ]  # fmt: skip
    for p, line in enumerate(r.lines[1:]):
        leader, _, replicas, isr, _ = parts[p]
        assert line == (
            f"\tTopic: high_traffic\tPartition: {p}\tLeader: {leader}"
            f"\tReplicas: {','.join(map(str, replicas))}\tIsr: {','.join(map(str, isr))}"
        )


def test_config_changes_reach_every_broker(cluster):
    bootstrap = cluster.bootstrap()
    assert shell("kafka-topics --create --topic system_logs --partitions 3 --replication-factor 3 "
                 "--bootstrap-server localhost:9092", bootstrap).returncode == 0  # fmt: skip
    wait_until(lambda: fully_replicated(cluster, "system_logs", 3, 3), what="system_logs")
    r = shell(SECTION_11, bootstrap)
    assert r.returncode == 0 and r.lines == ["Completed updating config for topic system_logs."]
    for node in cluster.brokers:
        wait_until(lambda node=node: topic_configs(cluster, node, "system_logs")
                   == {"cleanup.policy": "compact"}, what=f"config on broker {node}")  # fmt: skip
    r = shell("kafka-configs --alter --entity-type topics --entity-name system_logs "
              "--add-config retention.ms=oops --bootstrap-server localhost:9092", bootstrap)  # fmt: skip
    assert r.returncode == 1 and "Not a number of type LONG" in r.stderr
    for node in cluster.brokers:
        assert topic_configs(cluster, node, "system_logs") == {"cleanup.policy": "compact"}


def test_dynamic_broker_configs_on_a_cluster(cluster):
    bootstrap = cluster.bootstrap()
    assert shell("kafka-topics --create --topic dyn --partitions 1 --replication-factor 3 "
                 "--bootstrap-server localhost:9092", bootstrap).returncode == 0  # fmt: skip
    # The cluster-wide default reaches every broker (each watches /config/brokers/<default>).
    r = shell("kafka-configs --alter --entity-type brokers --entity-default --add-config "
              "log.retention.ms=1000 --bootstrap-server localhost:9092", bootstrap)  # fmt: skip
    assert r.returncode == 0, r
    for node in cluster.brokers:
        wait_until(lambda node=node: retention(cluster, node, "dyn") == ("1000", 3),
                   what=f"the default on broker {node}")  # fmt: skip
    # One broker's own config goes to that broker, whichever broker the tool bootstraps from.
    r = shell("kafka-configs --alter --entity-type brokers --entity-name 2 --add-config "
              "log.retention.ms=2000 --bootstrap-server localhost:9092", bootstrap)  # fmt: skip
    assert r.returncode == 0, r
    assert retention(cluster, 2, "dyn") == ("2000", 2)
    assert retention(cluster, 1, "dyn") == retention(cluster, 3, "dyn") == ("1000", 3)
    for entity in ("--entity-name 2", "--entity-default"):
        r = shell(f"kafka-configs --alter --entity-type brokers {entity} --delete-config "
                  "log.retention.ms --bootstrap-server localhost:9092", bootstrap)  # fmt: skip
        assert r.returncode == 0, r
    for node in cluster.brokers:
        wait_until(lambda node=node: retention(cluster, node, "dyn") == ("604800000", 5),
                   what=f"the default gone from broker {node}")  # fmt: skip


def test_create_partitions_and_delete_records_on_a_cluster(cluster):
    bootstrap = cluster.bootstrap()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({"grow": {"num_partitions": 2, "replication_factor": 2}})
        wait_until(lambda: fully_replicated(cluster, "grow", 2, 2), what="grow")
        r = shell("kafka-topics --alter --topic grow --partitions 5 --bootstrap-server localhost:9092",
                  bootstrap)  # fmt: skip
        assert r.returncode == 0, r
        wait_until(lambda: fully_replicated(cluster, "grow", 5, 2), what="grow with 5 partitions")
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        for i in range(10):
            producer.send("grow", f"v{i}".encode(), partition=4)
        producer.flush()
        producer.close()
        tp = TopicPartition("grow", 4)
        assert admin.delete_records({tp: 6})[tp]["low_watermark"] == 6
    finally:
        admin.close()

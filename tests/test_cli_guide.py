"""The guide's shell commands (sections 2, 3, 5, 6, 8 and 11), verbatim but for the port.

Each runs the installed console script in a shell against a real broker; the test checks what
it prints (Kafka's own output formats) and what it did to the broker.
"""

from __future__ import annotations

import re

import pytest
from cli_helpers import shell

SECTION_2 = "kafka-topics --create --topic user_activity --bootstrap-server localhost:9092 --partitions 1 --replication-factor 1"
SECTION_3 = "kafka-configs --describe --entity-type topics --entity-name user_activity --bootstrap-server localhost:9092"
SECTION_5 = "kafka-topics --create --topic high_traffic --bootstrap-server localhost:9092 --partitions 4 --replication-factor 2"
SECTION_6 = "kafka-topics --describe --topic high_traffic --bootstrap-server localhost:9092"
SECTION_8 = "kafka-topics --describe --topic high_traffic --bootstrap-server localhost:9092"
SECTION_11 = "kafka-configs --alter --entity-type topics --entity-name system_logs --add-config 'cleanup.policy=compact' --bootstrap-server localhost:9092"

COLLISION_WARNING = (
    "WARNING: Due to limitations in metric names, topics with a period ('.') or underscore ('_') "
    "could collide. To avoid issues it is best to use either, but not both."
)

# Describes compared line for line with Kafka's for a broker on its built-in defaults: a
# server.properties would add its static keys (STATIC_BROKER_CONFIG synonyms, "Configs:").
pytestmark = pytest.mark.kafka_defaults
KAFKA_TOPIC_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def partition_state(broker, topic: str):
    return broker.call(lambda: broker.broker.metadata.topic(topic))


def log_config(broker, topic: str, partition: int = 0):
    return broker.call(lambda: broker.broker.replica_manager.get(topic, partition).log.config)


def test_section_2_creates_user_activity(broker):
    r = shell(SECTION_2, broker.port)
    assert r.returncode == 0, r
    assert r.lines == [COLLISION_WARNING, "Created topic user_activity."]
    info = partition_state(broker, "user_activity")
    assert len(info.partitions) == 1 and info.replication_factor == 1


def test_section_3_describes_retention(broker):
    assert shell(SECTION_2, broker.port).returncode == 0
    r = shell(SECTION_3, broker.port)
    assert r.returncode == 0, r
    # No overrides yet: Kafka prints just the header for the topic's dynamic configs.
    assert r.lines == ["Dynamic configs for topic user_activity are:"]
    # --all lists every effective config with its source; retention.ms among them.
    r = shell(SECTION_3 + " --all", broker.port)
    assert r.returncode == 0, r
    assert r.lines[0] == "All configs for topic user_activity are:"
    assert (
        "  retention.ms=604800000 sensitive=false synonyms={DEFAULT_CONFIG:log.retention.hours=168}"
        in r.lines
    )
    names = [line.split("=", 1)[0].strip() for line in r.lines[1:]]
    assert names == sorted(names) and "cleanup.policy" in names and "segment.bytes" in names


def test_section_3_shows_an_override(broker):
    assert shell(SECTION_2 + " --config retention.ms=3600000", broker.port).returncode == 0
    r = shell(SECTION_3, broker.port)
    assert r.lines == [
        "Dynamic configs for topic user_activity are:",
        "  retention.ms=3600000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=3600000, "
        "DEFAULT_CONFIG:log.retention.hours=168}",
    ]


def test_section_5_replication_factor_2_fails_on_one_broker(broker):
    r = shell(SECTION_5, broker.port)
    assert r.returncode == 1
    assert r.lines == [
        COLLISION_WARNING,
        "Error while executing topic command : Unable to replicate the partition 2 time(s): The "
        "target replication factor of 2 cannot be reached because only 1 broker(s) are registered.",
    ]
    assert partition_state(broker, "high_traffic") is None


def test_sections_6_and_8_describe_high_traffic(broker):
    # Before the topic exists, Kafka's tool says so and fails.
    r = shell(SECTION_6, broker.port)
    assert r.returncode == 1
    assert r.stdout == "" and r.stderr.strip() == "Topic 'high_traffic' does not exist as expected"
    # On one broker, section 5's topic can only be created with one replica.
    created = shell(
        SECTION_5.replace("--replication-factor 2", "--replication-factor 1"), broker.port
    )
    assert created.returncode == 0, created
    topic_id = partition_state(broker, "high_traffic").topic_id
    for command in (SECTION_6, SECTION_8):
        r = shell(command, broker.port)
        assert r.returncode == 0, r
        header, *partitions = r.lines
        fields = header.split("\t")
        assert fields[0] == "Topic: high_traffic"
        assert fields[1].startswith("TopicId: ")
        assert KAFKA_TOPIC_ID.fullmatch(fields[1].removeprefix("TopicId: "))
        assert fields[2:] == ["PartitionCount: 4", "ReplicationFactor: 1", "Configs: "]
        assert partitions == [
            f"\tTopic: high_traffic\tPartition: {p}\tLeader: 1\tReplicas: 1\tIsr: 1"
            for p in range(4)
        ]
    import base64

    expected_id = base64.urlsafe_b64encode(topic_id.bytes).decode().rstrip("=")
    assert fields[1] == f"TopicId: {expected_id}"


def test_section_11_enables_compaction(broker):
    # Before system_logs exists the alter fails, as it does on Kafka.
    r = shell(SECTION_11, broker.port)
    assert r.returncode == 1
    assert "The topic 'system_logs' does not exist." in r.stderr
    # Once the topic exists (section 9's producer would auto-create it), section 11 works.
    assert shell("kafka-topics --create --topic system_logs --bootstrap-server localhost:9092",
                 broker.port).returncode == 0  # fmt: skip
    assert not log_config(broker, "system_logs").compact
    r = shell(SECTION_11, broker.port)
    assert r.returncode == 0, r
    assert r.lines == ["Completed updating config for topic system_logs."]
    # Applied live to the partition's log, persisted with the topic, and shown by describe.
    assert log_config(broker, "system_logs").compact
    assert partition_state(broker, "system_logs").configs == {"cleanup.policy": "compact"}
    r = shell(SECTION_3.replace("user_activity", "system_logs"), broker.port)
    assert r.lines == [
        "Dynamic configs for topic system_logs are:",
        "  cleanup.policy=compact sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:cleanup.policy=compact, "
        "DEFAULT_CONFIG:log.cleanup.policy=delete}",
    ]
    r = shell("kafka-topics --describe --topic system_logs --bootstrap-server localhost:9092",
              broker.port)  # fmt: skip
    assert r.lines[0].endswith("\tConfigs: cleanup.policy=compact")

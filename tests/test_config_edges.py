"""Kafka's behaviour at the edges of topic configs, as real clients meet it.

- IncrementalAlterConfigs SUBTRACT can leave `cleanup.policy` empty. Kafka accepts that (its
  ValidList takes an empty list; confluent-kafka's own admin tests subtract `delete` from a fresh
  topic and expect `cleanup.policy=""`), and an empty policy means neither delete nor compact:
  infinite retention, nothing compacted (apache/kafka#20334 spells it out: "Empty cleanup.policy
  is the same as delete with infinite retention").
- Deprecated topic keys Kafka 3.x still accepts and ignores (`message.format.version`,
  `message.downconversion.enable`) are accepted, described as Kafka describes them, and logged
  as ignored, rather than refused as unknown.
"""

from __future__ import annotations

import time

import pytest
from cluster_helpers import wait_until
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)
from helpers import BrokerProcess
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic as KpNewTopic
from kafka.errors import InvalidConfigurationError


def _create(admin: AdminClient, name: str, config: dict[str, str]) -> None:
    futures = admin.create_topics([NewTopic(name, 1, 1, config=config)])
    futures[name].result(15)


def _non_default(admin: AdminClient, name: str) -> list[str]:
    """What confluent-kafka's own admin test compares: the non-default entries, as strings."""
    resource = ConfigResource(ResourceType.TOPIC, name)
    configs = admin.describe_configs([resource])[resource].result(15)
    return sorted(str(e) for e in configs.values() if not e.is_default)


@pytest.mark.kafka_defaults  # its expectations: no static log.* keys among the non-defaults
def test_subtract_leaving_cleanup_policy_empty_as_confluent_kafka_does(broker):
    """confluent-kafka's test_incremental_alter_configs, against our broker."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    _create(admin, "appended", {"compression.type": "gzip"})
    _create(admin, "subtracted", {"compression.type": "gzip"})
    res1 = ConfigResource(ResourceType.TOPIC, "appended", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
        ConfigEntry("retention.ms", "10000", incremental_operation=AlterConfigOpType.SET),
    ])  # fmt: skip
    res2 = ConfigResource(ResourceType.TOPIC, "subtracted", incremental_configs=[
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT),
        ConfigEntry("retention.ms", "5000", incremental_operation=AlterConfigOpType.SET),
    ])  # fmt: skip
    for future in admin.incremental_alter_configs([res1, res2]).values():
        assert future.result(15) is None
    assert _non_default(admin, "appended") == [
        'cleanup.policy="delete,compact"',
        'compression.type="gzip"',
        'retention.ms="10000"',
    ]
    assert _non_default(admin, "subtracted") == [
        'cleanup.policy=""',
        'compression.type="gzip"',
        'retention.ms="5000"',
    ]
    # DELETE one key and SET another: the empty policy stays as it is.
    res2 = ConfigResource(ResourceType.TOPIC, "subtracted", incremental_configs=[
        ConfigEntry("compression.type", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("retention.ms", "10000", incremental_operation=AlterConfigOpType.SET),
    ])  # fmt: skip
    for future in admin.incremental_alter_configs([res2]).values():
        assert future.result(15) is None
    assert _non_default(admin, "subtracted") == ['cleanup.policy=""', 'retention.ms="10000"']
    # The empty policy is the topic's own setting, not the broker default.
    resource = ConfigResource(ResourceType.TOPIC, "subtracted")
    entry = admin.describe_configs([resource])[resource].result(15)["cleanup.policy"]
    assert entry.value == "" and entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def _start_offset(consumer: KafkaConsumer, topic: str) -> int:
    tp = TopicPartition(topic, 0)
    return consumer.beginning_offsets([tp])[tp]


def test_empty_cleanup_policy_keeps_everything(make_broker):
    """Three topics with the same tiny retention and eager compaction, differing only in
    policy. Once retention has trimmed the `delete` one and the cleaner has compacted the
    `compact` one, the topic with an empty policy still holds every record it was given."""
    broker = make_broker({"log.retention.check.interval.ms": 100, "log.cleaner.backoff.ms": 100})
    common = {"retention.ms": "1", "segment.bytes": "200", "min.cleanable.dirty.ratio": "0.01",
              "delete.retention.ms": "0", "file.delete.delay.ms": "0"}  # fmt: skip
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics([
        KpNewTopic(name, 1, 1, topic_configs={**common, "cleanup.policy": policy})
        for name, policy in (("deleted", "delete"), ("compacted", "compact"), ("kept", ""))
    ])  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=0)
    for topic in ("deleted", "compacted", "kept"):
        for i in range(20):  # one batch each: several segments of 200 bytes
            producer.send(topic, key=b"k%d" % (i % 2), value=b"v%d" % i).get(10)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    try:
        wait_until(lambda: _start_offset(consumer, "deleted") > 0, 15, "retention of `deleted`")

        def compacted_count():
            return len(_read_all(broker, "compacted"))

        wait_until(lambda: compacted_count() < 20, 15, "compaction of `compacted`")
        # Retention and cleaning pass over every log on the broker's loop each time, so the
        # passes that trimmed and compacted the controls also went over `kept`.
        assert _start_offset(consumer, "kept") == 0
        kept = _read_all(broker, "kept")
        assert [r.value for r in kept] == [b"v%d" % i for i in range(20)]
    finally:
        consumer.close()
        producer.close()
        admin.close()


def _read_all(broker, topic: str) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=1500,
    )  # fmt: skip
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        out = []
        deadline = time.monotonic() + 10
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(500).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


# --- deprecated topic keys --------------------------------------------------------------------


DEPRECATED = {"message.format.version": "2.8", "message.downconversion.enable": "false"}


def test_deprecated_topic_keys_accepted_described_and_logged(tmp_path):
    broker = BrokerProcess(str(tmp_path / "data")).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        _create(admin, "old-style", DEPRECATED)
        _create(admin, "plain", {})
        resource = ConfigResource(ResourceType.TOPIC, "old-style")
        described = admin.describe_configs([resource])[resource].result(15)
        for key, value in DEPRECATED.items():
            assert described[key].value == value
            assert described[key].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        # Unset, they read as Kafka 3.x describes them: its defaults, from the broker keys.
        resource = ConfigResource(ResourceType.TOPIC, "plain")
        described = admin.describe_configs([resource])[resource].result(15)
        fmt = described["message.format.version"]
        assert fmt.value == "3.0-IV1" and fmt.source == ConfigSource.DEFAULT_CONFIG.value
        assert [s.name for s in fmt.synonyms.values()] == ["log.message.format.version"]
        down = described["message.downconversion.enable"]
        assert down.value == "true" and down.source == ConfigSource.DEFAULT_CONFIG.value
        # Altering one in works too (IncrementalAlterConfigs), and is logged again.
        alter = ConfigResource(ResourceType.TOPIC, "plain", incremental_configs=[
            ConfigEntry("message.format.version", "0.10.2",
                        incremental_operation=AlterConfigOpType.SET),
        ])  # fmt: skip
        for future in admin.incremental_alter_configs([alter]).values():
            assert future.result(15) is None

        def warnings():
            events = broker.events("deprecated_topic_config_ignored")
            return {(e["topic"], e["key"], e["value"]) for e in events}

        expected = {("old-style", "message.format.version", "2.8"),
                    ("old-style", "message.downconversion.enable", "false"),
                    ("plain", "message.format.version", "0.10.2")}  # fmt: skip
        wait_until(lambda: warnings() == expected, 10, "the deprecation warnings")
        assert {e["level"] for e in broker.events("deprecated_topic_config_ignored")} == {"warning"}
    finally:
        broker.terminate()


def test_deprecated_topic_keys_still_validated(broker):
    """Accepted is not anything goes: Kafka checks the version string and the boolean."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        for key, value in (("message.format.version", "banana"),
                           ("message.downconversion.enable", "maybe")):  # fmt: skip
            with pytest.raises(InvalidConfigurationError) as e:
                admin.create_topics([KpNewTopic("t", 1, 1, topic_configs={key: value})])
            assert key in str(e.value)
        admin.create_topics(
            [KpNewTopic("t", 1, 1, topic_configs={"message.format.version": "3.0-IV1"})]
        )
    finally:
        admin.close()

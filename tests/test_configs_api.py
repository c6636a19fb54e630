"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs against a real broker.

Validation: unknown keys, wrong types and out-of-range values are INVALID_CONFIG with a message
naming the key, and a rejected change leaves nothing half-applied. Accepted changes are
persisted with the topic and applied to the partitions' live LogConfig.
"""

from __future__ import annotations

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)
from helpers import RawClient
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource as KpConfigResource
from kafka.errors import MessageSizeTooLargeError

from protocol.apis import ApiKey
from protocol.errors import ErrorCode

# Describes compared line for line with Kafka's for a broker on its built-in defaults: a
# server.properties would add its static keys (STATIC_BROKER_CONFIG synonyms, "Configs:").
pytestmark = pytest.mark.kafka_defaults

TOPIC, BROKER = 2, 4
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


@pytest.fixture
def raw(broker):
    client = RawClient(broker.port)
    yield client
    client.close()


def create(raw, name, configs=None, partitions=1):
    response = raw.request(ApiKey.CREATE_TOPICS, 7, {
        "topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1,
                    "assignments": [], "configs": [{"name": k, "value": v}
                                                   for k, v in (configs or {}).items()]}],
        "timeout_ms": 5000, "validate_only": False,
    })  # fmt: skip
    return response.topics[0]


def describe(raw, resource_type, name, keys=None, synonyms=True, docs=False, version=4):
    response = raw.request(ApiKey.DESCRIBE_CONFIGS, version, {
        "resources": [{"resource_type": resource_type, "resource_name": name,
                       "configuration_keys": keys}],
        "include_synonyms": synonyms, "include_documentation": docs,
    })  # fmt: skip
    return response.results[0]


def incremental(raw, name, ops, validate_only=False, resource_type=TOPIC):
    response = raw.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {
        "resources": [{"resource_type": resource_type, "resource_name": name,
                       "configs": [{"name": k, "config_operation": op, "value": v}
                                   for k, op, v in ops]}],
        "validate_only": validate_only,
    })  # fmt: skip
    return response.responses[0]


def alter(raw, name, configs, validate_only=False, version=2):
    response = raw.request(ApiKey.ALTER_CONFIGS, version, {
        "resources": [{"resource_type": TOPIC, "resource_name": name,
                       "configs": [{"name": k, "value": v} for k, v in configs.items()]}],
        "validate_only": validate_only,
    })  # fmt: skip
    return response.responses[0]


def overrides(broker, topic):
    return broker.call(lambda: dict(broker.broker.metadata.topic(topic).configs))


def live(broker, topic, key, partition=0):
    return broker.call(lambda: broker.broker.replica_manager.get(topic, partition).log.config[key])


def entries(result):
    return {c.name: c for c in result.configs}


# --- describing ---------------------------------------------------------------------------------


def test_describe_topic_defaults_overrides_synonyms_docs(broker, raw):
    assert create(raw, "t", {"retention.ms": "5000"}).error_code == 0
    result = describe(raw, TOPIC, "t", docs=True)
    assert result.error_code == 0
    configs = entries(result)
    retention = configs["retention.ms"]
    assert (retention.value, retention.config_source, retention.read_only) == ("5000", 1, False)
    assert [(s.name, s.value, s.source) for s in retention.synonyms] == [
        ("retention.ms", "5000", 1), ("log.retention.hours", "168", 5)
    ]  # fmt: skip
    assert retention.config_type == 5 and "deletion" in retention.documentation
    policy = configs["cleanup.policy"]
    assert (policy.value, policy.config_source, policy.config_type) == ("delete", 5, 7)
    assert configs["min.cleanable.dirty.ratio"].value == "0.5"
    assert configs["unclean.leader.election.enable"].value == "false"
    assert [c.name for c in result.configs] == sorted(configs)
    # Only the keys asked for (unknown ones are left out); no synonyms or docs unless asked.
    result = describe(raw, TOPIC, "t", keys=["segment.bytes", "nope"], synonyms=False)
    assert [(c.name, c.synonyms, c.documentation) for c in result.configs] == [
        ("segment.bytes", [], None)
    ]
    result = describe(raw, TOPIC, "t", keys=["segment.bytes"], version=1)
    assert result.configs[0].value == "1073741824"


def test_static_broker_settings_are_topic_defaults(make_broker):
    b = make_broker({"log.retention.hours": "24", "log.cleanup.policy": "compact",
                     "message.max.bytes": "2000000"})  # fmt: skip
    raw = RawClient(b.port)
    try:
        create(raw, "t")
        configs = entries(describe(raw, TOPIC, "t"))
        retention = configs["retention.ms"]
        assert (retention.value, retention.config_source) == ("86400000", 4)
        assert [(s.name, s.value, s.source) for s in retention.synonyms] == [
            ("log.retention.hours", "24", 4), ("log.retention.hours", "168", 5)
        ]  # fmt: skip
        assert configs["cleanup.policy"].value == "compact"
        assert configs["max.message.bytes"].value == "2000000"
        assert b.call(lambda: b.broker.replica_manager.get("t", 0).log.config.compact)
        broker_configs = entries(describe(raw, BROKER, "1"))
        hours = broker_configs["log.retention.hours"]
        assert (hours.value, hours.config_source, hours.read_only) == ("24", 4, True)
        assert broker_configs["num.partitions"].config_source == 5
    finally:
        raw.close()


def test_describe_errors_and_broker_resources(broker, raw):
    result = describe(raw, TOPIC, "missing")
    assert result.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert result.error_message == "The topic 'missing' does not exist."
    assert describe(raw, TOPIC, "bad name!").error_code == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert describe(raw, BROKER, "7").error_code == ErrorCode.INVALID_REQUEST
    assert describe(raw, BROKER, "x").error_code == ErrorCode.INVALID_REQUEST
    default = describe(raw, BROKER, "")
    assert default.error_code == 0 and default.configs == []
    configs = entries(describe(raw, BROKER, "1", docs=True))
    assert configs["node.id"].value == "1" and configs["node.id"].documentation
    assert configs["advertised.listeners"].value is None


def test_kafka_python_and_confluent_describe(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics({"t": {"num_partitions": 1, "replication_factor": 1,
                               "configs": {"cleanup.policy": "compact"}}})  # fmt: skip
    found = admin.describe_configs([KpConfigResource("TOPIC", "t")], include_synonyms=True)
    assert found["topic"]["t"]["cleanup.policy"]["value"] == "compact"
    assert found["topic"]["t"]["cleanup.policy"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    admin.close()
    confluent = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    resource = ConfigResource(ResourceType.TOPIC, "t")
    configs = confluent.describe_configs([resource])[resource].result()
    assert configs["cleanup.policy"].value == "compact"
    assert configs["cleanup.policy"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    broker_resource = ConfigResource(ResourceType.BROKER, "1")
    broker_configs = confluent.describe_configs([broker_resource])[broker_resource].result()
    assert broker_configs["num.partitions"].value == "1"


# --- altering -----------------------------------------------------------------------------------


def test_incremental_set_delete_append_subtract(broker, raw):
    create(raw, "t", {"retention.ms": "5000"})
    r = incremental(raw, "t", [("segment.bytes", SET, "1048576"), ("retention.ms", DELETE, None),
                               ("cleanup.policy", APPEND, "compact")])  # fmt: skip
    assert r.error_code == 0, r
    assert overrides(broker, "t") == {
        "segment.bytes": "1048576",
        "cleanup.policy": "delete,compact",
    }
    assert live(broker, "t", "segment.bytes") == 1048576
    assert live(broker, "t", "retention.ms") == 604800000
    assert live(broker, "t", "cleanup.policy") == ["delete", "compact"]
    assert incremental(raw, "t", [("cleanup.policy", SUBTRACT, "delete")]).error_code == 0
    assert overrides(broker, "t")["cleanup.policy"] == "compact"
    assert broker.call(lambda: broker.broker.replica_manager.get("t", 0).log.config.compact)
    # Subtracting the last policy leaves an empty list, which Kafka accepts: neither delete nor
    # compact (tests/test_config_edges.py shows what it then does).
    assert incremental(raw, "t", [("cleanup.policy", SUBTRACT, "compact")]).error_code == 0
    assert overrides(broker, "t")["cleanup.policy"] == ""
    assert live(broker, "t", "cleanup.policy") == []
    r = incremental(raw, "t", [("retention.ms", APPEND, "5")])
    assert r.error_code == ErrorCode.INVALID_CONFIG
    assert r.error_message == "Config value append is not allowed for config key: retention.ms"
    assert overrides(broker, "t") == {"segment.bytes": "1048576", "cleanup.policy": ""}


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("retention.msec", "5", "Unknown topic config name: retention.msec"),
        ("retention.ms", "5s", "Invalid value 5s for configuration retention.ms: Not a number of type LONG"),
        ("retention.ms", "1_000", "Not a number of type LONG"),
        ("segment.bytes", "4294967296", "Invalid value 4294967296 for configuration segment.bytes: Not a number of type INT"),
        ("segment.bytes", "10", "Invalid value 10 for configuration segment.bytes: Value must be at least 14"),
        ("min.cleanable.dirty.ratio", "1.5", "min.cleanable.dirty.ratio: Value must be no more than 1"),
        ("min.cleanable.dirty.ratio", "NaN", "min.cleanable.dirty.ratio: Not a number of type DOUBLE"),
        ("retention.ms", "-2", "retention.ms: Value must be at least -1"),
        ("unclean.leader.election.enable", "yes", "Expected value to be either true or false"),
        ("cleanup.policy", "compact,shred", "cleanup.policy: String must be one of: delete, compact"),
        ("message.timestamp.type", "WallClock", "message.timestamp.type: String must be one of"),
        ("compression.type", "brotli", "compression.type: String must be one of"),
        ("remote.storage.enable", "true", "Tiered Storage functionality is disabled"),
        ("min.compaction.lag.ms", "20", "min.compaction.lag.ms (20) > max.compaction.lag.ms (10)"),
    ],
)  # fmt: skip
def test_invalid_configs_change_nothing(broker, raw, key, value, message):
    create(raw, "t", {"retention.ms": "5000", "max.compaction.lag.ms": "10"})
    before = overrides(broker, "t")
    # A good change first, then the bad one: the whole resource is refused.
    ops = [("segment.ms", SET, "60000"), (key, SET, value)]
    for validate_only in (True, False):
        r = incremental(raw, "t", ops, validate_only=validate_only)
        assert r.error_code == ErrorCode.INVALID_CONFIG
        assert message in r.error_message
    r = alter(raw, "t", {**before, "segment.ms": "60000", key: value})
    assert r.error_code == ErrorCode.INVALID_CONFIG and message in r.error_message
    assert overrides(broker, "t") == before
    assert live(broker, "t", "segment.ms") == 604800000
    # CreateTopics applies the same rules.
    topic = create(raw, "u", {key: value, "max.compaction.lag.ms": "10"})
    assert topic.error_code == ErrorCode.INVALID_CONFIG and message in topic.error_message


def test_validate_only_and_duplicates(broker, raw):
    create(raw, "t")
    r = incremental(raw, "t", [("retention.ms", SET, "1000")], validate_only=True)
    assert r.error_code == 0
    assert overrides(broker, "t") == {}
    r = incremental(raw, "t", [("retention.ms", SET, "1000"), ("retention.ms", DELETE, None)])
    assert r.error_code == ErrorCode.INVALID_REQUEST
    assert incremental(raw, "missing", [("retention.ms", SET, "1")]).error_code == (
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    )
    assert alter(raw, "t", {"retention.ms": "1000"}, validate_only=True).error_code == 0
    assert overrides(broker, "t") == {}


def test_alter_configs_replaces_the_whole_set(broker, raw):
    create(raw, "t", {"retention.ms": "5000", "cleanup.policy": "compact"})
    for version in (0, 1, 2):
        assert alter(raw, "t", {"segment.ms": "60000"}, version=version).error_code == 0
        assert overrides(broker, "t") == {"segment.ms": "60000"}
    assert live(broker, "t", "retention.ms") == 604800000
    assert not broker.call(lambda: broker.broker.replica_manager.get("t", 0).log.config.compact)


def test_one_resource_failing_does_not_block_another(broker, raw):
    create(raw, "a")
    create(raw, "b")
    response = raw.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {
        "resources": [
            {"resource_type": TOPIC, "resource_name": "a",
             "configs": [{"name": "retention.ms", "config_operation": SET, "value": "1000"}]},
            {"resource_type": TOPIC, "resource_name": "b",
             "configs": [{"name": "retention.ms", "config_operation": SET, "value": "x"}]},
        ],
        "validate_only": False,
    })  # fmt: skip
    assert [r.error_code for r in response.responses] == [0, ErrorCode.INVALID_CONFIG]
    assert overrides(broker, "a") == {"retention.ms": "1000"} and overrides(broker, "b") == {}


def broker_op(raw, name, ops, validate_only=False):
    return incremental(raw, name, ops, validate_only, resource_type=BROKER)


def test_dynamic_broker_configs_are_topic_defaults(broker, raw):
    create(raw, "t")
    create(raw, "pinned", {"retention.ms": "5000"})
    week = 604800000
    assert live(broker, "t", "retention.ms") == week
    # The cluster-wide default ("") applies to every topic without an override of its own.
    assert broker_op(raw, "", [("log.retention.ms", SET, "1000")]).error_code == 0
    assert live(broker, "t", "retention.ms") == 1000
    assert live(broker, "pinned", "retention.ms") == 5000
    retention = entries(describe(raw, TOPIC, "t"))["retention.ms"]
    assert (retention.value, retention.config_source) == ("1000", 3)
    assert [(s.name, s.value, s.source) for s in retention.synonyms][0] == (
        "log.retention.ms", "1000", 3
    )  # fmt: skip
    # A broker's own dynamic config wins over the default.
    assert broker_op(raw, "1", [("log.retention.ms", SET, "2000")]).error_code == 0
    assert live(broker, "t", "retention.ms") == 2000
    mine = entries(describe(raw, BROKER, "1"))["log.retention.ms"]
    assert (mine.value, mine.config_source, mine.read_only) == ("2000", 2, False)
    assert [(s.value, s.source) for s in mine.synonyms][:2] == [("2000", 2), ("1000", 3)]
    assert entries(describe(raw, BROKER, "1"))["num.partitions"].read_only
    default = describe(raw, BROKER, "")
    assert [(c.name, c.value, c.config_source) for c in default.configs] == [
        ("log.retention.ms", "1000", 3)
    ]
    # DELETE falls back a level at a time.
    assert broker_op(raw, "1", [("log.retention.ms", DELETE, None)]).error_code == 0
    assert live(broker, "t", "retention.ms") == 1000
    assert broker_op(raw, "", [("log.retention.ms", DELETE, None)]).error_code == 0
    assert live(broker, "t", "retention.ms") == week
    assert entries(describe(raw, TOPIC, "t"))["retention.ms"].config_source == 5


def test_dynamic_message_max_bytes_limits_produce(broker, raw):
    create(raw, "t")
    assert broker_op(raw, "", [("message.max.bytes", SET, "2000")]).error_code == 0
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, retries=0)
    try:
        with pytest.raises(MessageSizeTooLargeError):
            producer.send("t", b"x" * 5000).get(timeout=10)
        assert producer.send("t", b"x" * 100).get(timeout=10).offset == 0
    finally:
        producer.close()


@pytest.mark.parametrize(
    "ops, message",
    [
        ([("num.partitions", SET, "3")], "Cannot update these configs dynamically: num.partitions"),
        ([("log.retention.ms", SET, "forever")],
         "Invalid value forever for configuration log.retention.ms"),
        ([("log.retention.msec", SET, "5")], "Unknown broker config name: log.retention.msec"),
        ([("log.cleaner.min.compaction.lag.ms", SET, "10"),
          ("log.cleaner.max.compaction.lag.ms", SET, "5")],
         "min.compaction.lag.ms (10) > max.compaction.lag.ms (5)"),
    ],
)  # fmt: skip
def test_invalid_dynamic_broker_configs_change_nothing(broker, raw, ops, message):
    create(raw, "t")
    for name in ("", "1"):
        r = broker_op(raw, name, ops)
        assert r.error_code == ErrorCode.INVALID_REQUEST, r
        assert message in r.error_message
    assert broker.call(lambda: broker.broker.metadata.dynamic_configs) == {}
    assert live(broker, "t", "retention.ms") == 604800000


def test_dynamic_broker_validate_only_alter_configs_and_other_brokers(broker, raw):
    create(raw, "t")
    ops = [("log.segment.bytes", SET, "1048576")]
    assert broker_op(raw, "", ops, validate_only=True).error_code == 0
    assert live(broker, "t", "segment.bytes") == 1073741824
    # AlterConfigs replaces the broker's whole set.
    response = raw.request(ApiKey.ALTER_CONFIGS, 2, {
        "resources": [{"resource_type": BROKER, "resource_name": "1",
                       "configs": [{"name": "log.segment.bytes", "value": "1048576"}]}],
        "validate_only": False,
    })  # fmt: skip
    assert response.responses[0].error_code == 0
    assert live(broker, "t", "segment.bytes") == 1048576
    assert broker.call(lambda: broker.broker.metadata.broker_configs("1")) == {
        "log.segment.bytes": "1048576"
    }
    # Another broker's id is for that broker to answer; logger changes stay refused.
    assert broker_op(raw, "3", []).error_code == ErrorCode.INVALID_REQUEST
    r = incremental(raw, "1", [("root", SET, "DEBUG")], resource_type=8)
    assert r.error_code == ErrorCode.INVALID_REQUEST


def test_dynamic_broker_configs_are_persisted(make_broker, tmp_path):
    data = str(tmp_path / "persist")
    b = make_broker(data_dir=data)
    raw = RawClient(b.port)
    create(raw, "t")
    assert broker_op(raw, "", [("log.cleanup.policy", SET, "compact")]).error_code == 0
    raw.close()
    b.stop()
    b = make_broker(data_dir=data)
    assert b.call(lambda: b.broker.replica_manager.get("t", 0).log.config.compact)
    raw = RawClient(b.port)
    assert entries(describe(raw, TOPIC, "t"))["cleanup.policy"].config_source == 3
    raw.close()


def test_changes_are_persisted(make_broker, tmp_path):
    data = str(tmp_path / "persist")
    b = make_broker(data_dir=data)
    raw = RawClient(b.port)
    create(raw, "t", partitions=2)
    assert incremental(raw, "t", [("retention.ms", SET, "7777")]).error_code == 0
    raw.close()
    b.stop()
    b = make_broker(data_dir=data)
    assert b.call(lambda: b.broker.replica_manager.get("t", 1).log.config["retention.ms"]) == 7777
    raw = RawClient(b.port)
    assert entries(describe(raw, TOPIC, "t"))["retention.ms"].value == "7777"
    raw.close()


def test_kafka_python_and_confluent_alter(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics({"t": {"num_partitions": 1, "replication_factor": 1}})
    result = admin.alter_configs([KpConfigResource("TOPIC", "t", {"retention.ms": "1000"})])
    assert result == {"topic": {"t": "OK"}}
    result = admin.alter_configs([KpConfigResource("TOPIC", "t", {"retention.ms": "x"})])
    assert "InvalidConfigurationError" in result["topic"]["t"]
    admin.close()
    assert live(broker, "t", "retention.ms") == 1000
    confluent = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    resource = ConfigResource(ResourceType.TOPIC, "t", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])  # fmt: skip
    confluent.incremental_alter_configs([resource])[resource].result()
    assert overrides(broker, "t") == {"cleanup.policy": "compact"}
    bad = ConfigResource(ResourceType.TOPIC, "t", incremental_configs=[
        ConfigEntry("segment.bytes", "tiny", incremental_operation=AlterConfigOpType.SET),
    ])  # fmt: skip
    with pytest.raises(Exception, match="segment.bytes"):
        confluent.incremental_alter_configs([bad])[bad].result()
    assert overrides(broker, "t") == {"cleanup.policy": "compact"}


def test_internal_topic_reports_the_configs_the_broker_applies(broker, raw):
    broker.call(lambda: broker.broker.ensure_internal_topic("__consumer_offsets", 2, 1))
    configs = entries(describe(raw, TOPIC, "__consumer_offsets"))
    policy = configs["cleanup.policy"]
    assert (policy.value, policy.config_source) == ("compact", 1)
    assert configs["segment.bytes"].value == "104857600"
    assert configs["retention.ms"].config_source == 5

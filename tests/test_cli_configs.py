"""kafka-configs beyond the guide: add/delete configs, brokers, errors."""

from __future__ import annotations

import pytest
from cli_helpers import tool

# Describes compared line for line with Kafka's for a broker on its built-in defaults: a
# server.properties would add its static keys (STATIC_BROKER_CONFIG synonyms, "Configs:").
pytestmark = pytest.mark.kafka_defaults

BS = ("--bootstrap-server", "localhost:9092")


def configs(broker, *args):
    return tool("kafka-configs", *args, *BS, port=broker.port)


def topic_overrides(broker, topic):
    return broker.call(lambda: dict(broker.broker.metadata.topic(topic).configs))


def live_config(broker, topic, key):
    return broker.call(lambda: broker.broker.replica_manager.get(topic, 0).log.config[key])


def test_add_and_delete_configs(broker):
    tool("kafka-topics", "--create", "--topic", "events", *BS, port=broker.port)
    r = configs(broker, "--alter", "--entity-type", "topics", "--entity-name", "events",
                "--add-config", "retention.ms=3600000,cleanup.policy=[compact,delete]")  # fmt: skip
    assert r.returncode == 0 and r.lines == ["Completed updating config for topic events."]
    assert topic_overrides(broker, "events") == {
        "retention.ms": "3600000", "cleanup.policy": "compact,delete"
    }  # fmt: skip
    assert live_config(broker, "events", "retention.ms") == 3600000
    assert live_config(broker, "events", "cleanup.policy") == ["compact", "delete"]

    r = configs(broker, "--describe", "--topic", "events")
    assert r.lines == [
        "Dynamic configs for topic events are:",
        "  cleanup.policy=compact,delete sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:"
        "cleanup.policy=compact,delete, DEFAULT_CONFIG:log.cleanup.policy=delete}",
        "  retention.ms=3600000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=3600000, "
        "DEFAULT_CONFIG:log.retention.hours=168}",
    ]

    r = configs(broker, "--alter", "--entity-type", "topics", "--entity-name", "events",
                "--delete-config", "retention.ms")  # fmt: skip
    assert r.returncode == 0
    assert topic_overrides(broker, "events") == {"cleanup.policy": "compact,delete"}
    assert live_config(broker, "events", "retention.ms") == 604800000

    # Deleting a config that isn't set is refused before anything is sent.
    r = configs(broker, "--alter", "--entity-type", "topics", "--entity-name", "events",
                "--delete-config", "retention.ms,segment.ms")  # fmt: skip
    assert r.returncode == 1 and r.stderr.strip() == "Invalid config(s): retention.ms,segment.ms"


def test_bad_values_change_nothing(broker):
    tool("kafka-topics", "--create", "--topic", "events", "--config", "retention.ms=1000", *BS,
         port=broker.port)  # fmt: skip
    r = configs(broker, "--alter", "--entity-type", "topics", "--entity-name", "events",
                "--add-config", "segment.bytes=2000000,retention.ms=forever")  # fmt: skip
    assert r.returncode == 1
    err = r.stderr.splitlines()
    assert err[0].startswith("Error while executing config command with args '--alter")
    assert err[1] == (
        "org.apache.kafka.common.errors.InvalidConfigurationException: Invalid value forever for "
        "configuration retention.ms: Not a number of type LONG"
    )
    assert topic_overrides(broker, "events") == {"retention.ms": "1000"}
    r = configs(broker, "--alter", "--topic", "events", "--add-config", "retention.msec=5")
    assert r.returncode == 1 and "Unknown topic config name: retention.msec" in r.stderr
    r = configs(broker, "--alter", "--topic", "events", "--add-config", "no-equals-sign")
    assert r.returncode == 1 and "Invalid entity config" in r.stderr
    assert topic_overrides(broker, "events") == {"retention.ms": "1000"}


def test_brokers(broker):
    r = configs(broker, "--describe", "--entity-type", "brokers", "--entity-name", "1")
    assert r.returncode == 0 and r.lines == ["Dynamic configs for broker 1 are:"]
    r = configs(broker, "--describe", "--entity-type", "brokers", "--entity-name", "1", "--all")
    assert r.lines[0] == "All configs for broker 1 are:"
    assert (
        "  num.partitions=1 sensitive=false synonyms={DEFAULT_CONFIG:num.partitions=1}" in r.lines
    )
    listeners = [line for line in r.lines if line.startswith("  listeners=")]
    assert listeners and "STATIC_BROKER_CONFIG:listeners=PLAINTEXT://127.0.0.1:0" in listeners[0]
    r = configs(broker, "--describe", "--entity-type", "brokers")
    assert r.lines == [
        "Dynamic configs for broker 1 are:",
        "Default configs for brokers in the cluster are:",
    ]
    # The topics' defaults can change at runtime, for every broker or for one.
    r = configs(broker, "--alter", "--entity-type", "brokers", "--entity-default",
                "--add-config", "log.retention.ms=1000")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.lines == ["Completed updating default config for brokers in the cluster."]
    r = configs(broker, "--alter", "--entity-type", "brokers", "--entity-name", "1",
                "--add-config", "log.retention.ms=2000")  # fmt: skip
    assert r.lines == ["Completed updating config for broker 1."]
    r = configs(broker, "--describe", "--entity-type", "brokers")
    assert r.lines == [
        "Dynamic configs for broker 1 are:",
        "  log.retention.ms=2000 sensitive=false synonyms={DYNAMIC_BROKER_CONFIG:log.retention.ms="
        "2000, DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.ms=1000, "
        "DEFAULT_CONFIG:log.retention.hours=168}",
        "Default configs for brokers in the cluster are:",
        "  log.retention.ms=1000 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:"
        "log.retention.ms=1000}",
    ]
    r = configs(broker, "--alter", "--entity-type", "brokers", "--entity-name", "1",
                "--delete-config", "log.retention.ms")  # fmt: skip
    assert r.returncode == 0, r.stderr
    # Keys that only server.properties sets are refused, as Kafka refuses them.
    r = configs(broker, "--alter", "--entity-type", "brokers", "--entity-default",
                "--add-config", "num.partitions=3")  # fmt: skip
    assert r.returncode == 1
    assert (
        "InvalidRequestException: Invalid config value for resource ConfigResource(type=BROKER, "
        "name=''): Cannot update these configs dynamically: num.partitions" in r.stderr
    )
    r = configs(broker, "--describe", "--entity-type", "brokers", "--entity-name", "one")
    assert r.returncode == 1
    assert (
        r.stderr.strip()
        == "The entity name for brokers must be a valid integer broker id, but it is: one"
    )


def test_argument_errors(broker):
    r = configs(broker, "--describe")
    assert r.returncode == 1 and r.stderr.strip() == "At least one entity type must be specified"
    r = configs(broker, "--describe", "--alter", "--entity-type", "topics")
    assert r.returncode == 1 and "exactly one action" in r.stderr
    r = configs(broker, "--alter", "--entity-type", "topics", "--entity-name", "t")
    assert r.stderr.strip() == (
        "At least one of --add-config, --add-config-file, or --delete-config must be specified "
        "with --alter"
    )
    r = configs(broker, "--describe", "--entity-type", "widgets")
    assert r.returncode == 1 and r.stderr.startswith("Invalid entity type widgets")
    r = tool("kafka-configs", "--describe", "--entity-type", "topics", port=broker.port)
    assert (
        r.stderr.strip() == "Either --bootstrap-server or --bootstrap-controller must be specified."
    )
    r = tool("kafka-configs", "--help", port=broker.port)
    assert r.returncode == 0 and "--add-config" in r.stdout

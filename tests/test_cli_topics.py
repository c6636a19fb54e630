"""kafka-topics beyond the guide: list, alter, delete, --if-exists/--if-not-exists, errors, help."""

from __future__ import annotations

import pytest
from cli_helpers import tool

# Describes compared line for line with Kafka's for a broker on its built-in defaults: a
# server.properties would add its static keys (STATIC_BROKER_CONFIG synonyms, "Configs:").
pytestmark = pytest.mark.kafka_defaults

BS = ("--bootstrap-server", "localhost:9092")


def topics(broker, *args, stdin=None):
    return tool("kafka-topics", *args, *BS, port=broker.port, stdin=stdin)


def test_create_list_alter_delete(broker):
    r = topics(broker, "--create", "--topic", "orders", "--partitions", "2",
               "--config", "retention.ms=60000", "--config", "cleanup.policy=compact")  # fmt: skip
    assert r.returncode == 0 and r.lines == ["Created topic orders."]
    assert topics(broker, "--create", "--topic", "audit").returncode == 0
    assert topics(broker, "--list").lines == ["audit", "orders"]
    assert topics(broker, "--list", "--topic", "ord.*").lines == ["orders"]

    r = topics(broker, "--describe", "--topic", "orders")
    assert r.lines[0].split("\t")[2:] == [
        "PartitionCount: 2", "ReplicationFactor: 1",
        "Configs: cleanup.policy=compact,retention.ms=60000",
    ]  # fmt: skip

    r = topics(broker, "--alter", "--topic", "orders", "--partitions", "5")
    assert r.returncode == 0 and r.stdout == ""
    info = broker.call(lambda: broker.broker.metadata.topic("orders"))
    assert len(info.partitions) == 5
    assert broker.call(lambda: broker.broker.replica_manager.get("orders", 4).log) is not None

    r = topics(broker, "--alter", "--topic", "orders", "--partitions", "3")
    assert r.returncode == 1
    assert r.lines == [
        "Error while executing topic command : Topic currently has 5 partitions, which is higher "
        "than the requested 3."
    ]

    r = topics(broker, "--delete", "--topic", "orders")
    assert r.returncode == 0 and r.stdout == ""
    assert topics(broker, "--list").lines == ["audit"]


def test_describe_all_and_overrides_only(broker):
    topics(broker, "--create", "--topic", "a", "--partitions", "2")
    topics(broker, "--create", "--topic", "b", "--config", "retention.ms=1000")
    r = topics(broker, "--describe")
    assert [line.split("\t")[0] for line in r.lines] == ["Topic: a", "", "", "Topic: b", ""]
    r = topics(broker, "--describe", "--topics-with-overrides")
    assert len(r.lines) == 1 and r.lines[0].startswith("Topic: b\t")
    r = topics(broker, "--describe", "--under-replicated-partitions")
    assert r.returncode == 0 and r.stdout == ""


def test_if_exists_and_if_not_exists(broker):
    assert topics(broker, "--create", "--topic", "t1").returncode == 0
    r = topics(broker, "--create", "--topic", "t1")
    assert r.returncode == 1
    assert r.lines == ["Error while executing topic command : Topic 't1' already exists."]
    r = topics(broker, "--create", "--topic", "t1", "--if-not-exists")
    assert r.returncode == 0 and r.stdout == ""

    for action in ("--delete", "--describe"):
        r = topics(broker, action, "--topic", "missing")
        assert r.returncode == 1
        assert r.stderr.strip() == "Topic 'missing' does not exist as expected"
        r = topics(broker, action, "--topic", "missing", "--if-exists")
        assert r.returncode == 0 and r.stdout == ""
    r = topics(broker, "--alter", "--topic", "missing", "--partitions", "3", "--if-exists")
    assert r.returncode == 0


def test_invalid_configs_are_refused_by_the_broker(broker):
    r = topics(broker, "--create", "--topic", "c1", "--config", "no.such.key=1")
    assert r.returncode == 1
    assert r.lines == [
        "Error while executing topic command : Unknown topic config name: no.such.key"
    ]
    r = topics(broker, "--create", "--topic", "c1", "--config", "retention.ms=soon")
    assert r.lines == [
        "Error while executing topic command : Invalid value soon for configuration retention.ms: "
        "Not a number of type LONG"
    ]
    r = topics(broker, "--create", "--topic", "c1", "--config", "min.cleanable.dirty.ratio=2")
    assert "Value must be no more than 1" in r.stdout
    r = topics(broker, "--create", "--topic", "c1", "--config", "oops")
    assert r.returncode == 1 and 'must be in the format "key=val"' in r.stderr
    assert broker.call(lambda: broker.broker.metadata.topic("c1")) is None


def test_argument_errors(broker):
    r = tool("kafka-topics", "--list", port=broker.port)
    assert r.returncode == 1 and r.stderr.strip() == "--bootstrap-server must be specified"
    r = topics(broker, "--list", "--create")
    assert r.returncode == 1
    assert "Command must include exactly one action" in r.stderr
    r = topics(broker, "--create", "--topic", "x", "--partitions", "0")
    assert r.returncode == 1 and r.stderr.strip() == "The partitions must be greater than 0"
    r = topics(broker, "--create", "--topic", "x", "--replication-factor", "0")
    assert r.stderr.strip() == "The replication factor must be between 1 and 32767 inclusive"
    r = topics(broker, "--alter", "--topic", "x")
    assert r.returncode == 1 and 'Missing required argument "[partitions]"' in r.stderr
    r = topics(broker, "--create")
    assert r.returncode == 1 and 'Missing required argument "[topic]"' in r.stderr


def test_help(broker):
    r = tool("kafka-topics", "--help", port=broker.port)
    assert r.returncode == 0
    assert r.lines[0] == "This tool helps to create, delete, describe, or change a topic."
    assert r.lines[1].startswith("Option") and "--replication-factor" in r.stdout


def test_unreachable_broker_is_one_line(tmp_path):
    config = tmp_path / "client.properties"
    config.write_text("bootstrap.timeout.ms=500\n")
    r = tool("kafka-topics", "--list", "--bootstrap-server", "127.0.0.1:1",
             "--command-config", str(config), port=0)  # fmt: skip
    assert r.returncode == 1
    assert r.lines == [
        "Error while executing topic command : Unable to connect to 127.0.0.1:1: timed out "
        "waiting for the broker"
    ]


def test_replica_assignment(broker):
    r = topics(broker, "--create", "--topic", "placed", "--replica-assignment", "1,1")
    assert r.returncode == 0, r
    info = broker.call(lambda: broker.broker.metadata.topic("placed"))
    assert [p.replicas for p in info.partitions] == [[1], [1]]
    r = topics(broker, "--alter", "--topic", "placed", "--partitions", "3",
               "--replica-assignment", "1,1,1")  # fmt: skip
    assert r.returncode == 0, r
    r = topics(broker, "--alter", "--topic", "placed", "--partitions", "4",
               "--replica-assignment", "1,1,1,2")  # fmt: skip
    assert r.returncode == 1 and r.stdout.startswith("Error while executing topic command : ")
    assert len(broker.call(lambda: broker.broker.metadata.topic("placed").partitions)) == 3
    r = topics(broker, "--create", "--topic", "x", "--replica-assignment", "1:1")
    assert r.returncode == 1
    assert r.lines == [
        "Error while executing topic command : Partition replica lists may not contain duplicate "
        "entries: 1"
    ]

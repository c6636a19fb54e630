"""CreatePartitions, DeleteRecords and DescribeLogDirs with kafka-python and confluent-kafka."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer as CkConsumer
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from helpers import RawClient
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import OffsetOutOfRangeError

from protocol.apis import ApiKey
from protocol.errors import ErrorCode


@pytest.fixture
def admin(broker):
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    yield client
    client.close()


def produce(broker, topic, n, partition=0):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    for i in range(n):
        producer.send(topic, f"v{i}".encode(), partition=partition)
    producer.flush()
    producer.close()


def partitions(broker, topic):
    return broker.call(lambda: len(broker.broker.metadata.topic(topic).partitions))


def log_of(broker, topic, partition):
    return broker.call(lambda: broker.broker.replica_manager.get(topic, partition).log)


def earliest(broker, topic, partition=0):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    tp = TopicPartition(topic, partition)
    offset = consumer.beginning_offsets([tp])[tp]
    consumer.close()
    return offset


# --- CreatePartitions ---------------------------------------------------------------------------


def test_create_partitions_kafka_python(broker, admin):
    admin.create_topics({"t": {"num_partitions": 2, "replication_factor": 1}})
    response = admin.create_partitions({"t": 3}, validate_only=True)
    assert response.results[0].error_code == 0 and partitions(broker, "t") == 2
    admin.create_partitions({"t": 4})
    assert partitions(broker, "t") == 4
    produce(broker, "t", 3, partition=3)  # the new partition takes writes
    assert log_of(broker, "t", 3).log_end_offset == 3
    admin.create_partitions({"t": {"count": 5, "assignments": [[1]]}})
    assert partitions(broker, "t") == 5

    def error(request):
        r = admin.create_partitions(request, raise_errors=False).results[0]
        return r.error_code, r.error_message

    assert error({"t": 3}) == (
        ErrorCode.INVALID_PARTITIONS,
        "Topic currently has 5 partitions, which is higher than the requested 3.",
    )
    assert error({"t": 5}) == (ErrorCode.INVALID_PARTITIONS, "Topic already has 5 partitions.")
    assert error({"missing": 2})[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert (
        error({"t": {"count": 6, "assignments": [[2]]}})[0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    )
    assert (
        error({"t": {"count": 7, "assignments": [[1]]}})[0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    )
    assert error({"t": {"count": 6, "assignments": [[1, 1]]}})[0] == (
        ErrorCode.INVALID_REPLICA_ASSIGNMENT
    )
    assert partitions(broker, "t") == 5
    # Metadata tells clients about the new partitions.
    assert len(admin.describe_topics(["t"])[0]["partitions"]) == 5


def test_create_partitions_confluent(broker, admin):
    admin.create_topics({"c": {"num_partitions": 1, "replication_factor": 1}})
    confluent = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    confluent.create_partitions([NewPartitions("c", 3)])["c"].result()
    assert partitions(broker, "c") == 3
    with pytest.raises(Exception, match="INVALID_PARTITIONS"):
        confluent.create_partitions([NewPartitions("c", 2)])["c"].result()
    confluent.create_partitions([NewPartitions("c", 6)], validate_only=True)["c"].result()
    assert partitions(broker, "c") == 3


def test_create_partitions_survives_restart(make_broker, tmp_path):
    data = str(tmp_path / "d")
    b = make_broker(data_dir=data)
    a = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
    a.create_topics({"t": {"num_partitions": 1, "replication_factor": 1}})
    a.create_partitions({"t": 3})
    a.close()
    b.stop()
    b = make_broker(data_dir=data)
    assert b.call(
        lambda: sorted(p for (t, p) in b.broker.replica_manager.partitions if t == "t")
    ) == [0, 1, 2]


# --- DeleteRecords ------------------------------------------------------------------------------


def test_delete_records_kafka_python(broker, admin):
    admin.create_topics({"t": {"num_partitions": 2, "replication_factor": 1}})
    produce(broker, "t", 10)
    result = admin.delete_records({TopicPartition("t", 0): 4})
    assert result[TopicPartition("t", 0)]["low_watermark"] == 4
    assert earliest(broker, "t") == 4
    # Consumers now start at the new log start offset.
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)  # fmt: skip
    consumer.assign([TopicPartition("t", 0)])
    assert next(iter(consumer)).offset == 4
    consumer.close()
    # Deleting below the start offset changes nothing; beyond the high watermark is refused.
    assert (
        admin.delete_records({TopicPartition("t", 0): 2})[TopicPartition("t", 0)]["low_watermark"]
        == 4
    )
    with pytest.raises(OffsetOutOfRangeError):
        admin.delete_records({TopicPartition("t", 0): 11})
    assert earliest(broker, "t") == 4
    # -1 means "up to the high watermark".
    assert (
        admin.delete_records({TopicPartition("t", 0): -1})[TopicPartition("t", 0)]["low_watermark"]
        == 10
    )


def test_delete_records_raw_errors(broker, admin):
    admin.create_topics({"t": {"num_partitions": 1, "replication_factor": 1}})
    produce(broker, "t", 3)
    raw = RawClient(broker.port)
    try:
        response = raw.request(ApiKey.DELETE_RECORDS, 2, {
            "topics": [{"name": "t", "partitions": [{"partition_index": 0, "offset": 2},
                                                    {"partition_index": 5, "offset": 1}]},
                       {"name": "missing", "partitions": [{"partition_index": 0, "offset": 1}]}],
            "timeout_ms": 5000,
        })  # fmt: skip
    finally:
        raw.close()
    results = {(t.name, p.partition_index): (p.error_code, p.low_watermark)
               for t in response.topics for p in t.partitions}  # fmt: skip
    assert results == {
        ("t", 0): (0, 2),
        ("t", 5): (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1),
        ("missing", 0): (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1),
    }


def test_delete_records_confluent_and_restart(make_broker, tmp_path):
    data = str(tmp_path / "d")
    b = make_broker(data_dir=data)
    produce(b, "t", 8)  # auto-created
    confluent = AdminClient({"bootstrap.servers": b.bootstrap_servers})
    futures = confluent.delete_records([CkTopicPartition("t", 0, 5)])
    deleted = next(iter(futures.values())).result()
    assert deleted.low_watermark == 5
    consumer = CkConsumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "unused"})
    low, high = consumer.get_watermark_offsets(CkTopicPartition("t", 0), timeout=10)
    consumer.close()
    assert (low, high) == (5, 8)
    b.stop()
    b = make_broker(data_dir=data)
    assert earliest(b, "t") == 5


# --- DescribeLogDirs ----------------------------------------------------------------------------


def test_describe_log_dirs(broker, admin):
    admin.create_topics({"t": {"num_partitions": 2, "replication_factor": 1}})
    produce(broker, "t", 5, partition=1)
    [entry] = admin.describe_log_dirs()
    [log_dir] = entry["log_dirs"]
    assert log_dir["error_code"] == 0 and log_dir["log_dir"] == broker.broker.log_manager.data_dir
    sizes = {(t["name"], p["partition_index"]): p["partition_size"]
             for t in log_dir["topics"] for p in t["partitions"]}  # fmt: skip
    assert sizes[("t", 0)] == 0
    assert sizes[("t", 1)] == log_of(broker, "t", 1).size > 0
    assert log_dir["total_bytes"] > 0 and 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
    [entry] = admin.describe_log_dirs({"t": [1]})
    [log_dir] = entry["log_dirs"]
    assert [
        (t["name"], [p["partition_index"] for p in t["partitions"]]) for t in log_dir["topics"]
    ] == [("t", [1])]

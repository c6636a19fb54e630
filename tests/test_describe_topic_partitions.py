"""DescribeTopicPartitions (KIP-966): topics in name order with a partition limit per answer and
a cursor to the next page, as Kafka's DescribeTopicPartitionsRequestHandler pages them."""

from __future__ import annotations

import uuid

import pytest
from helpers import RawClient

from protocol.apis import ApiKey

# Kafka's error codes.
UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION, INVALID_REQUEST = 3, 17, 42


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    from pykbroker.embedded import EmbeddedBroker

    with EmbeddedBroker(str(tmp_path_factory.mktemp("dtp"))) as b:
        client = RawClient(b.port)
        r = client.request(ApiKey.CREATE_TOPICS, 7, {"topics": [
            {"name": n, "num_partitions": k, "replication_factor": 1, "assignments": [],
             "configs": []} for n, k in (("alpha", 3), ("beta", 2), ("gamma", 1))],
            "timeout_ms": 5000, "validate_only": False})  # fmt: skip
        assert [t.error_code for t in r.topics] == [0, 0, 0]
        yield client
        client.close()


def describe(c, names, limit=2000, cursor=None):
    return c.request(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {
        "topics": [{"name": n} for n in names], "response_partition_limit": limit,
        "cursor": cursor})  # fmt: skip


def page(r) -> list[tuple[str, int]]:
    return [(t.name, p.partition_index) for t in r.topics for p in t.partitions]


def cursor_of(r):
    return (
        None if r.next_cursor is None else (r.next_cursor.topic_name, r.next_cursor.partition_index)
    )


def test_pages_through_every_topic(c):
    mine = ("alpha", "beta", "gamma")
    r = describe(c, mine, limit=4)
    assert page(r) == [("alpha", 0), ("alpha", 1), ("alpha", 2), ("beta", 0)]
    assert cursor_of(r) == ("beta", 1)
    r = describe(c, mine, limit=4, cursor={"topic_name": "beta", "partition_index": 1})
    assert page(r) == [("beta", 1), ("gamma", 0)] and cursor_of(r) is None
    # A page that ends exactly at a topic's end points at the next topic's first partition.
    r = describe(c, mine, limit=3)
    assert page(r) == [("alpha", 0), ("alpha", 1), ("alpha", 2)]
    assert cursor_of(r) == ("beta", 0)


def test_topic_fields(c):
    r = describe(c, ["gamma"])
    [t] = r.topics
    assert (t.error_code, t.name, t.is_internal) == (0, "gamma", False)
    assert t.topic_id != uuid.UUID(int=0)
    [p] = t.partitions
    assert (p.error_code, p.leader_epoch, list(p.replica_nodes), list(p.isr_nodes)) == (
        0, 0, [p.leader_id], [p.leader_id])  # fmt: skip
    # No eligible leader replicas here (eligible.leader.replicas.version 0): empty, not null.
    assert list(p.eligible_leader_replicas) == [] and list(p.last_known_elr) == []
    # Always given; without an authorizer every topic operation: READ 3, WRITE 4, CREATE 5,
    # DELETE 6, ALTER 7, DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11 (AclOperation codes).
    assert t.topic_authorized_operations == sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))


def test_all_topics_and_unknown_ones(c):
    r = describe(c, [])  # every topic, in name order
    names = [t.name for t in r.topics]
    assert names == sorted(names) and {"alpha", "beta", "gamma"} <= set(names)
    r = describe(c, ["zeta", "beta", "bad name!"])
    assert [(t.name, t.error_code) for t in r.topics] == [
        ("bad name!", INVALID_TOPIC_EXCEPTION), ("beta", 0), ("zeta", UNKNOWN_TOPIC_OR_PARTITION)]  # fmt: skip


def test_cursor_must_name_a_requested_topic(c):
    r = describe(c, ["alpha", "beta"], cursor={"topic_name": "gamma", "partition_index": 0})
    assert [(t.name, t.error_code) for t in r.topics] == [
        ("alpha", INVALID_REQUEST), ("beta", INVALID_REQUEST)]  # fmt: skip


def test_kafka_python_pages_with_it(c):
    from kafka import KafkaAdminClient

    host, port = c.sock.getpeername()[:2]
    admin = KafkaAdminClient(bootstrap_servers=f"{host}:{port}")
    try:
        got = admin.describe_topic_partitions(
            ["alpha", "beta", "gamma"], response_partition_limit=2
        )
    finally:
        admin.close()
    assert [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in got["topics"]] == [
        ("alpha", [0, 1])]  # fmt: skip
    assert got["next_cursor"] == {"topic_name": "alpha", "partition_index": 2}

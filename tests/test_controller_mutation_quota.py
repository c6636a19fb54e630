"""controller_mutation_rate (KIP-599): partitions created or deleted per second, per user /
client id, measured by a token bucket; over it, CreateTopics v6+, CreatePartitions v3+ and
DeleteTopics v5+ (strict) refuse a topic with THROTTLING_QUOTA_EXCEEDED while older versions
(permissive) do everything and are throttled for it.

Kafka's numbers: the bucket holds quota x quota.window.num (11) x quota.window.size.seconds
(1) tokens, one per partition; a topic is refused only while the tokens are already below
zero (one admitted may take them below); throttle_time_ms = -tokens / quota seconds."""

from __future__ import annotations

import subprocess
import sys

from helpers import RawClient
from test_quotas_api import alter

from protocol.apis import ApiKey
from protocol.errors import ErrorCode

THROTTLED = ErrorCode.THROTTLING_QUOTA_EXCEEDED  # 89
MESSAGE = "The throttling quota has been exceeded."  # Kafka's Errors.THROTTLING_QUOTA_EXCEEDED


def create(port: int, client_id: str, topics: dict[str, int], version: int = 7,
           validate_only: bool = False):  # fmt: skip
    c = RawClient(port, client_id=client_id)  # a fresh connection: a throttle mutes the last one
    try:
        return c.request(ApiKey.CREATE_TOPICS, version, {
            "topics": [{"name": n, "num_partitions": p, "replication_factor": 1,
                        "assignments": [], "configs": []} for n, p in topics.items()],
            "timeout_ms": 10000, "validate_only": validate_only})  # fmt: skip
    finally:
        c.close()


def delete(port: int, client_id: str, names: list[str], version: int):
    c = RawClient(port, client_id=client_id)
    try:
        return c.request(ApiKey.DELETE_TOPICS, version, {"topic_names": names, "timeout_ms": 10000})
    finally:
        c.close()


def create_partitions(port: int, client_id: str, name: str, count: int, version: int):
    c = RawClient(port, client_id=client_id)
    try:
        return c.request(ApiKey.CREATE_PARTITIONS, version, {
            "topics": [{"name": name, "count": count, "assignments": None}],
            "timeout_ms": 10000, "validate_only": False})  # fmt: skip
    finally:
        c.close()


def test_strict_and_permissive_versions(broker):
    c = RawClient(broker.port)
    try:
        # 0.1 partition/s: a bucket of 0.1 x 11 x 1 = 1.1 tokens, 10 s to earn one back.
        assert alter(c, {"client-id": "strict"}, {"controller_mutation_rate": 0.1}).error_code == 0
    finally:
        c.close()
    port = broker.port
    # a takes 1.1 -> 0.1; b is admitted (0.1 is not below zero) and takes it to -0.9;
    # c is refused while below zero, with the time to get back to zero: 0.9 / 0.1 = 9 s.
    r = create(port, "strict", {"a": 1, "b": 1, "c": 1})
    got = {t.name: (t.error_code, t.error_message) for t in r.topics}
    assert got == {"a": (0, None), "b": (0, None), "c": (THROTTLED, MESSAGE)}
    assert 8500 < r.throttle_time_ms <= 9000, r.throttle_time_ms
    # Still below zero (it earns 0.1 a second): strict DeleteTopics v5 and CreatePartitions v3
    # are refused too, and nothing was done.
    r = delete(port, "strict", ["a"], 5)
    assert [(t.name, t.error_code, t.error_message) for t in r.responses] == [
        ("a", THROTTLED, MESSAGE)
    ]
    assert r.throttle_time_ms > 7000
    r = create_partitions(port, "strict", "b", 3, 3)
    assert [(t.name, t.error_code) for t in r.results] == [("b", THROTTLED)]
    # validate_only is never counted (Kafka records only real creations).
    assert create(port, "strict", {"v": 5}, validate_only=True).topics[0].error_code == 0
    # Permissive versions (DeleteTopics v4, CreatePartitions v2, CreateTopics v5): done, and
    # throttled for what is now owed (about -1.9 tokens after the delete: ~19 s).
    r = delete(port, "strict", ["a"], 4)
    assert [(t.name, t.error_code) for t in r.responses] == [("a", 0)]
    assert 10000 < r.throttle_time_ms <= 19000, r.throttle_time_ms
    r = create_partitions(port, "strict", "b", 3, 2)
    assert [(t.name, t.error_code) for t in r.results] == [("b", 0)]
    r = create(port, "strict", {"d": 2}, version=5)
    assert [(t.name, t.error_code) for t in r.topics] == [("d", 0)]
    assert r.throttle_time_ms > 30000  # -1.9 - 2 - 2 tokens: ~39 s
    # Another client id has no quota and is not held back.
    r = create(port, "free", {"e": 4, "f": 4})
    assert [t.error_code for t in r.topics] == [0, 0] and r.throttle_time_ms == 0


def test_kafka_configs_and_confluent_kafka(broker):
    """Set with kafka-configs as a Kafka user would. confluent-kafka's admin client (librdkafka
    sends CreateTopics v4: permissive) creates past the quota and is throttled; its mutations
    count, so a strict request from the same client id is then refused."""
    from confluent_kafka.admin import AdminClient, NewTopic

    cli = [sys.executable, "-m", "pykbroker.cli.configs", "--bootstrap-server",
           broker.bootstrap_servers]  # fmt: skip
    subprocess.run([*cli, "--alter", "--entity-type", "clients", "--entity-name", "ck-admin",
                    "--add-config", "controller_mutation_rate=0.5"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    described = subprocess.run([*cli, "--describe", "--entity-type", "clients", "--entity-name",
                                "ck-admin"], check=True, capture_output=True, text=True,
                               timeout=60).stdout  # fmt: skip
    assert "controller_mutation_rate=0.5" in described
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers, "client.id": "ck-admin"})
    # 0.5 x 11 = 5.5 tokens; 6 + 6 partitions: both done (permissive), -6.5 tokens owed.
    for name in ("ck-one", "ck-two"):
        admin.create_topics([NewTopic(name, 6, 1)])[name].result(30)
    r = create(broker.port, "ck-admin", {"ck-three": 1})
    assert [(t.name, t.error_code) for t in r.topics] == [("ck-three", THROTTLED)]
    assert 10000 < r.throttle_time_ms <= 13000, r.throttle_time_ms  # 6.5 / 0.5 = 13 s

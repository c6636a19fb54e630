"""Topics: auto-creation, CreateTopics/DeleteTopics (kafka-python's admin client), restarts."""

from __future__ import annotations

import os
import uuid

import pytest
from helpers import BrokerProcess, RawClient
from wire import fetch_records, partition_response, produce_body, values_batch

from protocol.apis import ApiKey
from protocol.errors import ErrorCode


def metadata(client, topics: list[str] | None, version: int = 12, allow_auto: bool = True):
    body = {"topics": None if topics is None else [{"name": t, "topic_id": None} for t in topics],
            "allow_auto_topic_creation": allow_auto,
            "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False}  # fmt: skip
    return client.request(ApiKey.METADATA, version, body)


def produce(client, topic: str, value: bytes, partition: int = 0):
    return partition_response(client.request(
        ApiKey.PRODUCE, 9, produce_body(topic, bytes(values_batch([value])), partition)))  # fmt: skip


def test_auto_creation_uses_num_partitions(make_broker):
    from kafka import KafkaProducer

    b = make_broker({"num.partitions": 3})
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers)
    md = producer.send("auto-made", value=b"x").get(10)
    producer.close()
    assert md.offset == 0
    c = RawClient(b.port)
    [t] = metadata(c, ["auto-made"]).topics
    assert (t.error_code, len(t.partitions)) == (0, 3)
    assert {p.leader_id for p in t.partitions} == {b.broker.node_id}
    assert all(os.path.isdir(os.path.join(b.data_dir, f"auto-made-{p}")) for p in range(3))
    # Produce auto-creates too.
    assert produce(c, "auto-by-produce", b"y").error_code == 0
    assert len(metadata(c, ["auto-by-produce"]).topics[0].partitions) == 3
    c.close()


def test_metadata_may_ask_not_to_create(broker):
    c = RawClient(broker.port)
    [t] = metadata(c, ["not-wanted"], allow_auto=False).topics
    assert t.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert metadata(c, None).topics == []
    # Metadata v0-v3 always auto-create (the flag arrived in v4).
    [t] = metadata(c, ["old-client"], version=3).topics
    assert t.error_code == 0
    assert [t.name for t in metadata(c, None).topics] == ["old-client"]
    assert [t.name for t in metadata(c, [], version=0).topics] == ["old-client"]  # v0: [] = all
    c.close()


def test_auto_creation_disabled(make_broker):
    b = make_broker({"auto.create.topics.enable": "false"})
    c = RawClient(b.port)
    [t] = metadata(c, ["nope"]).topics
    assert t.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert produce(c, "nope", b"x").error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert metadata(c, None).topics == []
    c.close()


def test_admin_client_create_describe_delete(broker):
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics([NewTopic("orders", 4, 1), NewTopic("audit", 1, 1,
                         topic_configs={"message.timestamp.type": "LogAppendTime"})])  # fmt: skip
    assert {"orders", "audit"} <= set(admin.list_topics())
    described = {t["name"]: t for t in admin.describe_topics(["orders", "audit"])}
    assert len(described["orders"]["partitions"]) == 4
    assert described["audit"]["error_code"] == 0
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic("orders", 1, 1)])

    c = RawClient(broker.port)
    assert produce(c, "audit", b"a").log_append_time_ms > 0  # the config took effect
    assert produce(c, "orders", b"o", partition=3).base_offset == 0
    old_id = metadata(c, ["orders"]).topics[0].topic_id

    admin.delete_topics(["orders"])
    assert "orders" not in admin.list_topics()
    # Renamed for deletion at once; the files go after file.delete.delay.ms.
    assert not any(os.path.exists(os.path.join(broker.data_dir, f"orders-{p}")) for p in range(4))
    p, _ = fetch_records(c, "orders", 3, 0)
    assert p.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

    admin.create_topics([NewTopic("orders", 2, 1)])  # same name, a new topic
    [t] = metadata(c, ["orders"]).topics
    assert t.topic_id != old_id and len(t.partitions) == 2
    r = produce(c, "orders", b"fresh")
    assert (r.error_code, r.base_offset) == (0, 0)
    admin.close()
    c.close()


def delete_topics(client, version: int, names=(), ids=()):
    if version >= 6:
        topics = [{"name": n, "topic_id": uuid.UUID(int=0)} for n in names]
        topics += [{"name": None, "topic_id": i} for i in ids]
        body = {"topics": topics, "timeout_ms": 5000}
    else:
        body = {"topic_names": list(names), "timeout_ms": 5000}
    return {
        (r.name, r.error_code)
        for r in client.request(ApiKey.DELETE_TOPICS, version, body).responses
    }


@pytest.mark.parametrize("version", [1, 4, 5, 6])
def test_delete_topics_versions(broker, version):
    c = RawClient(broker.port)
    for t in ("d1", "d2"):
        assert produce(c, t, b"x").error_code == 0
    assert delete_topics(c, version, names=["d1", "missing"]) == {
        ("d1", 0), ("missing", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)}  # fmt: skip
    if version >= 6:
        d2 = metadata(c, ["d2"]).topics[0].topic_id
        assert delete_topics(c, version, ids=[d2]) == {("d2", 0)}
        assert delete_topics(c, version, ids=[uuid.uuid4()]) == {
            (None, ErrorCode.UNKNOWN_TOPIC_ID)}  # fmt: skip
    assert [t.error_code for t in metadata(c, ["d1"], allow_auto=False).topics] == [
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]  # fmt: skip
    c.close()


def test_colliding_names(broker):
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import InvalidTopicError

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics([NewTopic("metrics.cpu", 1, 1)])
    with pytest.raises(InvalidTopicError):
        admin.create_topics([NewTopic("metrics_cpu", 1, 1)])
    admin.close()


def test_topics_and_data_survive_restarts(tmp_path):
    from kafka.admin import KafkaAdminClient, NewTopic

    data = str(tmp_path / "data")
    bp = BrokerProcess(data, {"num.partitions": "2"}).start()
    try:
        admin = KafkaAdminClient(bootstrap_servers=bp.bootstrap_servers)
        admin.create_topics([NewTopic("keep", 3, 1), NewTopic("gone", 1, 1),
                             NewTopic("stamped", 1, 1, topic_configs={
                                 "message.timestamp.type": "LogAppendTime"})])  # fmt: skip
        admin.close()
        c = RawClient(bp.port)
        for p in range(3):
            assert produce(c, "keep", b"keep-%d" % p, partition=p).error_code == 0
        assert produce(c, "auto", b"auto").error_code == 0  # auto-created, 2 partitions
        ids = {t.name: t.topic_id for t in metadata(c, None).topics}
        assert delete_topics(c, 6, names=["gone"]) == {("gone", 0)}
        c.close()
        bp.terminate()
        expected = {n: i for n, i in ids.items() if n != "gone"}
        for stop in ("sigterm", "sigkill"):
            bp.start()
            c = RawClient(bp.port)
            md = metadata(c, None)
            assert {t.name: t.topic_id for t in md.topics} == expected, stop
            assert {t.name: len(t.partitions) for t in md.topics} == {
                "keep": 3, "auto": 2, "stamped": 1}  # fmt: skip
            for p in range(3):
                _, recs = fetch_records(c, "keep", p, 0)
                assert [r.value for r in recs] == [b"keep-%d" % p]
            assert produce(c, "stamped", b"s").log_append_time_ms > 0
            c.close()
            if stop == "sigterm":
                bp.terminate()
            else:
                bp.kill()
        assert not any(n.startswith("gone-") for n in os.listdir(data))
    finally:
        bp.kill()


def test_a_log_no_topic_owns_is_set_aside(tmp_path):
    """A deletion cut short by a crash (topic gone from metadata, directory still there)."""
    import json

    data = tmp_path / "data"
    bp = BrokerProcess(str(data)).start()
    try:
        c = RawClient(bp.port)
        assert produce(c, "half-deleted", b"old").error_code == 0
        assert produce(c, "kept", b"kept").error_code == 0
        c.close()
        bp.kill()
        state = json.loads((data / "topics.json").read_text())
        state["topics"] = [t for t in state["topics"] if t["name"] != "half-deleted"]
        (data / "topics.json").write_text(json.dumps(state))
        bp.start()
        assert [(e["topic"], e["partition"]) for e in bp.events("stray_log")] == [
            ("half-deleted", 0)]  # fmt: skip
        assert not (data / "half-deleted-0").exists()
        assert any(p.name.endswith("-stray") for p in data.iterdir())  # kept, not deleted
        c = RawClient(bp.port)
        r = produce(c, "half-deleted", b"new")  # a new topic of that name starts empty
        assert (r.error_code, r.base_offset) == (0, 0)
        _, recs = fetch_records(c, "kept", 0, 0)
        assert [x.value for x in recs] == [b"kept"]
        c.close()
        bp.terminate()
        bp.start()  # the stray directory is not loaded again
        assert not bp.events("stray_log")[1:]
    finally:
        bp.kill()


def test_min_insync_replicas_above_the_isr(broker):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics([NewTopic("safe", 1, 1, topic_configs={"min.insync.replicas": "2"})])
    admin.close()
    c = RawClient(broker.port)
    body = produce_body("safe", bytes(values_batch([b"x"])), acks=-1)
    r = partition_response(c.request(ApiKey.PRODUCE, 9, body))
    assert r.error_code == ErrorCode.NOT_ENOUGH_REPLICAS
    assert "min.isr" in r.error_message
    body = produce_body("safe", bytes(values_batch([b"x"])), acks=1)  # acks=1 doesn't care
    r = partition_response(c.request(ApiKey.PRODUCE, 9, body))
    assert (r.error_code, r.base_offset) == (0, 0)
    c.close()


def test_topic_max_message_bytes(broker):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics([NewTopic("tight", 1, 1, topic_configs={"max.message.bytes": "1000"})])
    admin.close()
    c = RawClient(broker.port)
    assert produce(c, "tight", b"x" * 2000).error_code == ErrorCode.MESSAGE_TOO_LARGE
    assert produce(c, "tight", b"x" * 500).error_code == 0
    assert produce(c, "roomy", b"x" * 2000).error_code == 0  # the broker default elsewhere
    c.close()

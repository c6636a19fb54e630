"""Topic IDs (KIP-516): partition.metadata, Fetch v13-v18 and Produce v13 by topic id, a topic
deleted and re-created under its name, `kafka-topics --describe`'s TopicId."""

from __future__ import annotations

import base64
import os
import time
import uuid

import pytest
from cli_helpers import tool
from helpers import RawClient
from wire import fetched_records, produce_body, values_batch, wait_for

from protocol import codec
from protocol.apis import ApiKey
from protocol.errors import ErrorCode

# Kafka's error codes (clients/src/main/java/org/apache/kafka/common/protocol/Errors.java).
UNKNOWN_TOPIC_ID = 100
INCONSISTENT_TOPIC_ID = 103


@pytest.fixture
def client(broker):
    c = RawClient(broker.port)
    yield c
    c.close()


def create(client, topic: str, partitions: int = 1) -> None:
    resp = client.request(ApiKey.CREATE_TOPICS, 7, {
        "topics": [{"name": topic, "num_partitions": partitions, "replication_factor": 1,
                    "assignments": [], "configs": []}],
        "timeout_ms": 5000, "validate_only": False,
    })  # fmt: skip
    assert resp.topics[0].error_code == 0


def delete(client, topic: str) -> None:
    resp = client.request(ApiKey.DELETE_TOPICS, 6, {
        "topics": [{"name": topic, "topic_id": uuid.UUID(int=0)}], "timeout_ms": 5000})  # fmt: skip
    assert resp.responses[0].error_code == 0


def topic_id(client, topic: str) -> uuid.UUID:
    resp = client.request(ApiKey.METADATA, 12, {
        "topics": [{"name": topic, "topic_id": uuid.UUID(int=0)}],
        "allow_auto_topic_creation": False, "include_topic_authorized_operations": False,
    })  # fmt: skip
    t = resp.topics[0]
    assert t.error_code == 0 and t.topic_id != uuid.UUID(int=0)
    return t.topic_id


def produce(client, topic: str, values: list[bytes]) -> int:
    body = produce_body(topic, bytes(values_batch(values)))
    r = client.request(ApiKey.PRODUCE, 11, body).responses[0].partition_responses[0]
    assert r.error_code == 0, ErrorCode(r.error_code)
    return r.base_offset


def fetch_by_id_body(tid: uuid.UUID, offset: int, version: int, max_wait_ms: int = 0,
                     partition: int = 0) -> dict:  # fmt: skip
    body = {
        "max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": 1 << 20, "isolation_level": 0,
        "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
        "topics": [{"topic_id": tid, "partitions": [{
            "partition": partition, "current_leader_epoch": -1, "fetch_offset": offset,
            "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
    }  # fmt: skip
    if version < 15:
        body["replica_id"] = -1
    return body


def fetch_by_id(client, tid: uuid.UUID, offset: int, version: int = 13, **kwargs):
    resp = client.request(ApiKey.FETCH, version, fetch_by_id_body(tid, offset, version, **kwargs))
    assert resp.error_code == 0 and len(resp.responses) == 1
    t = resp.responses[0]
    assert t.topic_id == tid  # v13+ answers by id too
    return t.partitions[0]


def kafka_uuid(u: uuid.UUID) -> str:
    """Kafka's Uuid.toString(): URL-safe base64, no padding (22 characters)."""
    return base64.urlsafe_b64encode(u.bytes).decode().rstrip("=")


def partition_metadata(broker, topic: str, partition: int = 0) -> str:
    path = os.path.join(broker.data_dir, f"{topic}-{partition}", "partition.metadata")
    with open(path) as f:
        return f.read()


def test_partition_metadata_file_as_kafka_writes_it(broker, client):
    create(client, "pm", partitions=2)
    tid = topic_id(client, "pm")
    for p in (0, 1):
        assert partition_metadata(broker, "pm", p) == f"version: 0\ntopic_id: {kafka_uuid(tid)}\n"
    r = tool("kafka-topics", "--describe", "--topic", "pm", "--bootstrap-server",
             "localhost:9092", port=broker.port)  # fmt: skip
    assert r.returncode == 0
    assert r.lines[0].split("\t")[:2] == ["Topic: pm", f"TopicId: {kafka_uuid(tid)}"]


@pytest.mark.parametrize("version", [13, 14, 15, 16, 17, 18])
def test_fetch_by_topic_id(client, version):
    topic = f"byid{version}"
    create(client, topic)
    produce(client, topic, [b"a", b"b", b"c"])
    tid = topic_id(client, topic)
    p = fetch_by_id(client, tid, 1, version)
    assert p.error_code == 0 and p.high_watermark == 3
    assert [r.value for r in fetched_records(p)] == [b"a", b"b", b"c"]  # whole batch
    # An id no topic has: UNKNOWN_TOPIC_ID for each partition, answered without waiting.
    started = time.monotonic()
    p = fetch_by_id(client, uuid.uuid4(), 0, version, max_wait_ms=5000)
    assert p.error_code == UNKNOWN_TOPIC_ID and p.records in (None, b"")
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("version", [15, 16])
def test_fetch_from_a_broker_that_is_no_replica(broker, client, version):
    """v15 names the fetching replica in ReplicaState: a broker id that is not one of the
    partition's replicas is refused with NOT_LEADER_OR_FOLLOWER (Kafka's
    followerReplicaOrThrow); from v16 the answer also names the current leader, its epoch and
    its endpoint (KIP-951)."""
    create(client, "rs")
    produce(client, "rs", [b"x"])
    tid = topic_id(client, "rs")
    body = fetch_by_id_body(tid, 0, version)
    body["replica_state"] = {"replica_id": 7, "replica_epoch": -1}
    resp = client.request(ApiKey.FETCH, version, body)
    p = resp.responses[0].partitions[0]
    assert p.error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER and not p.records
    if version >= 16:
        node = broker.broker.node_id
        assert (p.current_leader.leader_id, p.current_leader.leader_epoch) == (node, 0)
        assert [(e.node_id, e.host, e.port) for e in resp.node_endpoints] == [
            (node, "127.0.0.1", broker.port)]  # fmt: skip
    else:
        assert p.current_leader is None or p.current_leader.leader_id == -1
    # The same fetch from a consumer (no ReplicaState) reads.
    p = fetch_by_id(client, tid, 0, version)
    assert [r.value for r in fetched_records(p)] == [b"x"]


def test_produce_v13_by_topic_id(client):
    create(client, "p13")
    tid = topic_id(client, "p13")
    body = {"transactional_id": None, "acks": -1, "timeout_ms": 5000, "topic_data": [
        {"topic_id": tid, "partition_data": [{"index": 0, "records": bytes(values_batch([b"v"]))}]},
        {"topic_id": uuid.uuid4(), "partition_data": [
            {"index": 0, "records": bytes(values_batch([b"w"]))}]}]}  # fmt: skip
    resp = client.request(ApiKey.PRODUCE, 13, body)
    assert [t.topic_id for t in resp.responses] == [tid, body["topic_data"][1]["topic_id"]]
    ok, unknown = (t.partition_responses[0] for t in resp.responses)
    assert (ok.error_code, ok.base_offset) == (0, 0)
    assert unknown.error_code == UNKNOWN_TOPIC_ID
    assert [r.value for r in fetched_records(fetch_by_id(client, tid, 0, 18))] == [b"v"]


def test_recreated_topic_is_never_served_to_the_old_id(broker, client):
    """A consumer long-polling by id when its topic is deleted and re-created under the same
    name gets UNKNOWN_TOPIC_ID, never the new topic's records (Kafka's KIP-516 guarantee)."""
    create(client, "phoenix")
    produce(client, "phoenix", [b"old-0", b"old-1"])
    old = topic_id(client, "phoenix")
    poller = RawClient(broker.port)
    try:
        poller.correlation_id += 1
        poller.send_raw(codec.encode_request(ApiKey.FETCH, 16, poller.correlation_id, "poller",
                                             fetch_by_id_body(old, 2, 16, max_wait_ms=20000)))  # fmt: skip
        delete(client, "phoenix")
        create(client, "phoenix")
        new = topic_id(client, "phoenix")
        assert new != old
        produce(client, "phoenix", [b"new-0", b"new-1", b"new-2"])
        frame = poller.recv_frame()
        resp = codec.decode_response(ApiKey.FETCH, 16, frame, 5)
        p = resp.responses[0].partitions[0]
        assert resp.responses[0].topic_id == old
        assert p.error_code == UNKNOWN_TOPIC_ID and not p.records
    finally:
        poller.close()
    p = fetch_by_id(client, old, 0, 18)
    assert p.error_code == UNKNOWN_TOPIC_ID and not p.records
    assert [r.value for r in fetched_records(fetch_by_id(client, new, 0, 18))] == [
        b"new-0", b"new-1", b"new-2"]  # fmt: skip
    assert f"topic_id: {kafka_uuid(new)}" in partition_metadata(broker, "phoenix")


def test_directory_of_another_topic_id_is_not_served(make_broker, tmp_path):
    """A partition directory whose partition.metadata names another topic id (the topic was
    deleted and re-created while this broker was down) is set aside as a stray, as Kafka does,
    and the partition starts empty under the topic's id."""
    data = str(tmp_path / "d")
    b = make_broker(data_dir=data)
    c = RawClient(b.port)
    create(c, "swap")
    produce(c, "swap", [b"from-the-old-topic"])
    tid = topic_id(c, "swap")
    c.close()
    b.stop()
    stranger = uuid.uuid4()
    with open(os.path.join(data, "swap-0", "partition.metadata"), "w") as f:
        f.write(f"version: 0\ntopic_id: {kafka_uuid(stranger)}\n")
    b = make_broker(data_dir=data)
    c = RawClient(b.port)
    try:
        p = fetch_by_id(c, tid, 0, 18)
        assert p.error_code == 0 and p.high_watermark == 0 and not p.records
        assert f"topic_id: {kafka_uuid(tid)}" in partition_metadata(b, "swap")
        strays = [n for n in os.listdir(data) if n.startswith("swap-0.") and n.endswith("-stray")]
        assert len(strays) == 1  # kept aside, not deleted
        with open(os.path.join(data, strays[0], "partition.metadata")) as f:
            assert kafka_uuid(stranger) in f.read()
    finally:
        c.close()


def test_confluent_consumer_across_delete_and_recreate(broker, client):
    """librdkafka fetches by topic id (Fetch v16). After the topic is deleted and re-created,
    its fetch by the old id is refused (UNKNOWN_TOPIC_ID), it finds the new id in Metadata and
    fetches that at its old position (librdkafka keeps it), which is past the new topic's end:
    OFFSET_OUT_OF_RANGE, reset to earliest, the new topic's records from the start. A stale id
    in Metadata would leave it refused forever; serving by name would not refuse at all."""
    from confluent_kafka import Consumer, TopicPartition

    create(client, "reborn")
    produce(client, "reborn", [b"old-0", b"old-1", b"old-2"])
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap_servers, "group.id": "reborn-g",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "topic.metadata.refresh.interval.ms": 500,
    })  # fmt: skip
    try:
        consumer.assign([TopicPartition("reborn", 0, 0)])
        got: list[bytes] = []

        def poll_until(n: int) -> bool:
            m = consumer.poll(0.2)
            if m is not None and not m.error():
                got.append(m.value())
            return len(got) >= n

        wait_for(lambda: poll_until(3), what="the old records")
        assert got == [b"old-0", b"old-1", b"old-2"]
        delete(client, "reborn")
        create(client, "reborn")
        produce(client, "reborn", [b"new-0", b"new-1"])
        wait_for(lambda: poll_until(5), timeout=30, what="the new topic's records")
        assert got[3:] == [b"new-0", b"new-1"]
    finally:
        consumer.close()


def test_log_of_another_topic_id_is_inconsistent(broker, client):
    """Kafka's hasConsistentTopicId: the id resolves to this name, but the partition's log
    belongs to another id (a window Kafka has while a re-created topic's logs are replaced):
    INCONSISTENT_TOPIC_ID for Fetch and Produce, never the log's records."""
    create(client, "torn")
    produce(client, "torn", [b"other"])
    tid = topic_id(client, "torn")

    def swap_log_id():
        part = broker.broker.replica_manager.get("torn", 0)
        part.log.topic_id = uuid.uuid4()  # as if the log were an older topic's

    broker.call(swap_log_id)
    p = fetch_by_id(client, tid, 0, 18)
    assert p.error_code == INCONSISTENT_TOPIC_ID and not p.records
    body = {"transactional_id": None, "acks": 1, "timeout_ms": 5000, "topic_data": [
        {"topic_id": tid, "partition_data": [{"index": 0, "records": bytes(values_batch([b"v"]))}]}]}  # fmt: skip
    r = client.request(ApiKey.PRODUCE, 13, body).responses[0].partition_responses[0]
    assert r.error_code == INCONSISTENT_TOPIC_ID


@pytest.mark.parametrize("api", ["fetch", "produce"])
def test_zero_topic_id_is_unknown(client, api):
    """Kafka's Uuid.ZERO_UUID names no topic: UNKNOWN_TOPIC_ID, answered under that id (a
    fuzzer found the broker failing on it)."""
    zero = uuid.UUID(int=0)
    if api == "fetch":
        r = client.request(ApiKey.FETCH, 13, fetch_by_id_body(zero, 0, 13))
        t = r.responses[0]
        code = t.partitions[0].error_code
    else:
        r = client.request(ApiKey.PRODUCE, 13, {
            "transactional_id": None, "acks": 1, "timeout_ms": 5000, "topic_data": [
                {"topic_id": zero, "partition_data": [{"index": 0, "records": bytes(values_batch([b"v"]))}]}]})  # fmt: skip
        t = r.responses[0]
        code = t.partition_responses[0].error_code
    assert t.topic_id in (None, zero)  # kafka-python decodes the zero id as None
    assert code == UNKNOWN_TOPIC_ID


def test_unknown_ids_do_not_each_scan_every_topic(tmp_path, monkeypatch):
    """Anyone may send thousands of made-up topic ids in one Fetch/Produce v13+: a miss must
    not rebuild the id index each time (2,000 ids x 2,000 topics took 5.6 s of event loop),
    while a topic created since the last lookup is still found."""
    import uuid as _uuid

    from pykbroker.cluster import metadata as md
    from pykbroker.cluster.metadata import LocalMetadata, PartitionState, TopicInfo

    monkeypatch.setattr(md, "_monotonic", lambda: 1000.0)  # all lookups at one instant

    m = LocalMetadata(str(tmp_path), 1, ("127.0.0.1", 9))
    for i in range(2000):
        m.topics[f"t{i}"] = TopicInfo(f"t{i}", _uuid.uuid4(), [PartitionState(1, 0, [1], [1])], {})
    assert m.topic_by_id(_uuid.uuid4()) is None
    index = m._by_id
    assert all(m.topic_by_id(_uuid.uuid4()) is None for _ in range(2000))
    assert m._by_id is index  # no rebuild per miss
    assert m.topic_by_id(None) is None and m.topic_by_id(_uuid.UUID(int=0)) is None
    new = TopicInfo("new", _uuid.uuid4(), [PartitionState(1, 0, [1], [1])], {})
    m.topics["new"] = new
    m.topic_added()  # as both stores do when they add a topic
    assert m.topic_by_id(new.topic_id) is new

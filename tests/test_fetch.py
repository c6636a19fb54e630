"""Fetch and ListOffsets semantics, over the raw protocol against an embedded broker."""

from __future__ import annotations

import socket

import pytest
from helpers import RawClient
from wire import (
    fetch,
    fetch_body,
    fetch_records,
    fetched_records,
    partition_response,
    produce_body,
    values_batch,
    wait_for,
)

from protocol import codec
from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode


@pytest.fixture
def client(broker):
    c = RawClient(broker.port)
    yield c
    c.close()


def produce(client, topic: str, values: list[bytes], partition: int = 0, **kwargs) -> int:
    body = produce_body(topic, bytes(values_batch(values, **kwargs)), partition=partition)
    r = partition_response(client.request(ApiKey.PRODUCE, 9, body))
    assert r.error_code == 0, ErrorCode(r.error_code)
    return r.base_offset


def create(client, topic: str, partitions: int = 1, configs: dict | None = None) -> None:
    resp = client.request(ApiKey.CREATE_TOPICS, 7, {
        "topics": [{"name": topic, "num_partitions": partitions, "replication_factor": 1,
                    "assignments": [],
                    "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}],
        "timeout_ms": 5000, "validate_only": False,
    })  # fmt: skip
    assert resp.topics[0].error_code == 0


def send_fetch(client, version: int = 12, **kwargs) -> None:
    """Send a fetch without waiting for its response."""
    client.correlation_id += 1
    client.send_raw(codec.encode_request(ApiKey.FETCH, version, client.correlation_id, "fetch",
                                         fetch_body(**kwargs)))  # fmt: skip


def recv_fetch(client, version: int = 12):
    frame = client.recv_frame()
    assert frame is not None
    return codec.decode_response(ApiKey.FETCH, version, frame, 5 if version >= 12 else 4)


def waiters(broker, topic: str, partition: int = 0) -> int:
    return broker.call(lambda: len(broker.broker.replica_manager.get(topic, partition).waiters))


# --- long polls ---------------------------------------------------------------------------


def test_waiting_fetch_wakes_when_data_arrives(broker, client):
    create(client, "wake")
    send_fetch(client, partitions=[("wake", 0, 0)], max_wait_ms=60000, min_bytes=1)
    wait_for(lambda: waiters(broker, "wake") == 1, what="the fetch to wait")
    producer = RawClient(broker.port)
    produce(producer, "wake", [b"hello"])
    client.sock.settimeout(30)  # far below max_wait_ms: only a wake-up answers in time
    resp = recv_fetch(client)
    p = resp.responses[0].partitions[0]
    assert [r.value for r in fetched_records(p)] == [b"hello"]
    assert p.high_watermark == 1
    producer.close()


def test_min_bytes_is_honoured(broker, client):
    create(client, "minb")
    send_fetch(client, partitions=[("minb", 0, 0)], max_wait_ms=60000, min_bytes=1000)
    wait_for(lambda: waiters(broker, "minb") == 1, what="the fetch to wait")
    producer = RawClient(broker.port)
    sizes = 0
    while sizes < 1000:
        produce(producer, "minb", [b"x" * 200])
        sizes += len(values_batch([b"x" * 200]))
    client.sock.settimeout(30)
    p = recv_fetch(client).responses[0].partitions[0]
    assert len(p.records) >= 1000  # it did not answer with the first small batch
    assert len(fetched_records(p)) == p.high_watermark
    producer.close()


def test_max_wait_expires_with_less_than_min_bytes(broker, client):
    produce(client, "expire", [b"small"])
    p, recs = fetch_records(client, "expire", 0, 0, max_wait_ms=50, min_bytes=1 << 20)
    assert (p.error_code, [r.value for r in recs]) == (0, [b"small"])
    p, recs = fetch_records(client, "expire", 0, 1, max_wait_ms=50, min_bytes=1)
    assert (p.error_code, recs, p.high_watermark) == (0, [], 1)


def test_waiting_fetch_wakes_for_any_of_its_partitions(broker, client):
    create(client, "multi", partitions=3)
    send_fetch(client, partitions=[("multi", p, 0) for p in range(3)], max_wait_ms=60000)
    wait_for(lambda: waiters(broker, "multi", 2) == 1, what="the fetch to wait")
    producer = RawClient(broker.port)
    produce(producer, "multi", [b"on-two"], partition=2)
    client.sock.settimeout(30)
    parts = {p.partition_index: p for p in recv_fetch(client).responses[0].partitions}
    assert [r.value for r in fetched_records(parts[2])] == [b"on-two"]
    assert not parts[0].records and not parts[1].records
    producer.close()


# --- sizes --------------------------------------------------------------------------------


def batch_sizes(client, topic: str, n: int, value_size: int = 400) -> list[int]:
    sizes = []
    for i in range(n):
        values = [bytes([65 + i % 26]) * value_size, b"%d" % i]
        produce(client, topic, values)
        sizes.append(len(values_batch(values)))
    return sizes


def test_partition_max_bytes_returns_whole_batches(client):
    sizes = batch_sizes(client, "pmb", 10)
    for limit in (1, sizes[0] - 1, sizes[0], sizes[0] + sizes[1] - 1, sizes[0] * 3 + 5, 10**6):
        p, recs = fetch_records(client, "pmb", 0, 0, partition_max_bytes=limit)
        n = 1
        while n < len(sizes) and sum(sizes[: n + 1]) <= limit:
            n += 1
        assert len(p.records) == sum(sizes[:n]), limit  # whole batches, at least one
        assert [r.offset for r in recs] == list(range(2 * n))


def test_response_max_bytes_spans_partitions(client):
    create(client, "rmb", partitions=3)
    for part in range(3):
        for i in range(3):
            produce(client, "rmb", [b"p%d-%d-" % (part, i) + b"y" * 300], partition=part)
    one = len(values_batch([b"p0-0-" + b"y" * 300]))
    parts = [("rmb", p, 0) for p in range(3)]
    for max_bytes, expected in ((1, [1, 0, 0]), (one * 2, [2, 0, 0]), (one * 4, [3, 1, 0]),
                                (one * 100, [3, 3, 3])):  # fmt: skip
        resp = fetch(client, parts, max_bytes=max_bytes, partition_max_bytes=one * 3)
        got = [len(fetched_records(p)) for p in resp.responses[0].partitions]
        assert got == expected, max_bytes


def test_fetch_from_the_middle_of_a_batch_returns_the_whole_batch(client):
    produce(client, "mid", [b"a", b"b", b"c"])
    produce(client, "mid", [b"d"])
    p, recs = fetch_records(client, "mid", 0, 1)
    assert [r.offset for r in recs] == [0, 1, 2, 3]  # the consumer skips what it didn't ask for


# --- offsets ------------------------------------------------------------------------------


def test_fetch_offsets_and_out_of_range(broker, client):
    for i in range(10):
        produce(client, "range", [b"r%d" % i])
    p, recs = fetch_records(client, "range", 0, 0)
    assert (p.error_code, p.log_start_offset, p.high_watermark) == (0, 0, 10)
    assert len(recs) == 10
    p, recs = fetch_records(client, "range", 0, 10)  # at the LEO: nothing yet, no error
    assert (p.error_code, recs) == (0, [])
    for beyond in (11, 1000):
        p, _ = fetch_records(client, "range", 0, beyond)
        assert p.error_code == ErrorCode.OFFSET_OUT_OF_RANGE
    # Move the log start offset (as DeleteRecords or retention would).
    broker.call(lambda: broker.broker.replica_manager.get("range", 0).log
                .maybe_increment_log_start_offset(4))  # fmt: skip
    p, recs = fetch_records(client, "range", 0, 4)
    assert (p.error_code, p.log_start_offset) == (0, 4)
    assert recs[0].offset == 4 and recs[-1].offset == 9
    p, _ = fetch_records(client, "range", 0, 3)
    assert (p.error_code, p.log_start_offset) == (ErrorCode.OFFSET_OUT_OF_RANGE, 4)
    assert list_offsets(client, "range", [-2, -1]) == [(-1, 4), (-1, 10)]


def test_fetch_unknown_topic_and_partition(client):
    create(client, "known")
    resp = fetch(client, [("known", 3, 0), ("nope", 0, 0)])
    errors = {(t.topic, p.partition_index): p.error_code
              for t in resp.responses for p in t.partitions}  # fmt: skip
    assert errors == {("known", 3): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                      ("nope", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}  # fmt: skip


@pytest.mark.parametrize("version", [4, 7, 11, 12])
def test_fetch_versions(client, version):
    produce(client, f"v{version}", [b"one", b"two"])
    resp = fetch(client, [(f"v{version}", 0, 0)], version=version)
    p = resp.responses[0].partitions[0]
    assert [r.value for r in fetched_records(p)] == [b"one", b"two"]


def list_offsets(client, topic: str, timestamps: list[int], version: int = 7, partition: int = 0):
    """[(timestamp, offset)] for each query timestamp."""
    out = []
    for ts in timestamps:
        resp = client.request(ApiKey.LIST_OFFSETS, version, {
            "replica_id": -1, "isolation_level": 0,
            "topics": [{"name": topic, "partitions": [
                {"partition_index": partition, "timestamp": ts, "current_leader_epoch": -1,
                 "max_num_offsets": 1}]}],
        })  # fmt: skip
        p = resp.topics[0].partitions[0]
        if p.error_code:
            out.append(ErrorCode(p.error_code))
        else:
            out.append((p.timestamp, p.offset))
    return out


def timestamped(client, topic: str) -> None:
    """Offsets 0-2 at 1000-1002, 3 at 5000, 4-6 at 3000/9000/2000, 7 at 4000."""
    for stamps in ([1000, 1001, 1002], [5000], [3000, 9000, 2000], [4000]):
        batch = rb.build_batch([rb.Record(i, ts, None, b"t%d" % ts) for i, ts in enumerate(stamps)])
        r = partition_response(client.request(ApiKey.PRODUCE, 9, produce_body(topic, bytes(batch))))
        assert r.error_code == 0


@pytest.mark.parametrize("segment_bytes", [None, "100"])
def test_list_offsets(client, segment_bytes):
    create(client, "ts", configs={"segment.bytes": segment_bytes} if segment_bytes else {})
    timestamped(client, "ts")
    EARLIEST, LATEST, MAX_TS = -2, -1, -3
    assert list_offsets(client, "ts", [EARLIEST, LATEST]) == [(-1, 0), (-1, 8)]
    queries = [0, 1000, 1001, 1500, 3000, 5000, 5001, 9000, 9001]
    assert list_offsets(client, "ts", queries) == [
        (1000, 0), (1000, 0), (1001, 1), (5000, 3), (5000, 3), (5000, 3), (9000, 5), (9000, 5),
        (-1, -1),
    ]  # fmt: skip
    assert list_offsets(client, "ts", [MAX_TS]) == [(9000, 5)]
    assert list_offsets(client, "ts", [MAX_TS], version=6) == [ErrorCode.UNSUPPORTED_VERSION]
    assert list_offsets(client, "ts", [EARLIEST, LATEST, 1001], version=1) == [
        (-1, 0), (-1, 8), (1001, 1),
    ]  # fmt: skip


def test_list_offsets_with_kafka_python(broker, client):
    from kafka import KafkaConsumer, TopicPartition

    timestamped(client, "kp-ts")
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    tp = TopicPartition("kp-ts", 0)
    assert consumer.beginning_offsets([tp]) == {tp: 0}
    assert consumer.end_offsets([tp]) == {tp: 8}
    found = consumer.offsets_for_times({tp: 2500})[tp]
    assert (found.offset, found.timestamp) == (3, 5000)
    assert consumer.offsets_for_times({tp: 10**6})[tp] is None
    consumer.close()


def test_list_offsets_empty_and_unknown(client):
    create(client, "empty")
    assert list_offsets(client, "empty", [-2, -1, -3, 0]) == [(-1, 0), (-1, 0), (-1, -1), (-1, -1)]
    assert list_offsets(client, "missing", [-1]) == [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]


def test_unknown_fetch_session(client):
    """An incremental fetch naming a session the broker doesn't have gets
    FETCH_SESSION_ID_NOT_FOUND (tests/test_fetch_sessions.py has the rest of KIP-227)."""
    body = fetch_body([("x", 0, 0)])
    body["session_id"], body["session_epoch"] = 1234, 1
    resp = client.request(ApiKey.FETCH, 12, body)
    assert resp.error_code == ErrorCode.FETCH_SESSION_ID_NOT_FOUND


def test_closing_a_waiting_fetch_frees_its_waiter(broker, client):
    create(client, "gone")
    c = RawClient(broker.port)
    send_fetch(c, partitions=[("gone", 0, 0)], max_wait_ms=60000)
    wait_for(lambda: waiters(broker, "gone") == 1, what="the fetch to wait")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    wait_for(lambda: waiters(broker, "gone") == 0, what="the waiter to go")
    produce(client, "gone", [b"still fine"])

"""Zero-copy fetch: large record regions go out with os.sendfile, byte-identical to copying.

Two brokers get the same batches; one sends record regions with sendfile (the default
threshold), the other is forced to copy them (`pykbroker.sendfile.min.bytes` set very high).
The same fetch request must get the same response bytes from both.
"""

from __future__ import annotations

import random

import pytest
from helpers import RawClient
from wire import fetch_body, fetched_records, partition_response, produce_body

from protocol import codec
from protocol import records as rb
from protocol.apis import ApiKey

PARTITIONS = 3


def same_batches(seed: int) -> list[tuple[int, bytes]]:
    """(partition, batch) pairs, identical on every call (fixed timestamps, seeded bytes)."""
    rng = random.Random(seed)
    out = []
    for i in range(12):
        values = [rng.randbytes(rng.randrange(1000, 200_000)) for _ in range(rng.randrange(1, 4))]
        records = [rb.Record(j, 1_700_000_000_000 + i, b"k%d" % j, v) for j, v in enumerate(values)]
        out.append((i % PARTITIONS, bytes(rb.build_batch(records, compression_type=i % 2))))
    return out


def load(broker, batches) -> None:
    c = RawClient(broker.port)
    resp = c.request(ApiKey.CREATE_TOPICS, 7, {
        "topics": [{"name": "zc", "num_partitions": PARTITIONS, "replication_factor": 1,
                    "assignments": [], "configs": []}], "timeout_ms": 5000, "validate_only": False,
    })  # fmt: skip
    assert resp.topics[0].error_code == 0
    for partition, batch in batches:
        r = partition_response(c.request(ApiKey.PRODUCE, 9, produce_body("zc", batch, partition)))
        assert r.error_code == 0
    c.close()


def raw_fetch(broker, version: int, **kwargs) -> bytes:
    """The whole response frame of one fetch, as bytes off the socket."""
    c = RawClient(broker.port)
    body = fetch_body([("zc", p, 0) for p in range(PARTITIONS)], **kwargs)
    c.send_raw(codec.encode_request(ApiKey.FETCH, version, 99, "zc", body))
    frame = c.recv_frame()
    c.close()
    return bytes(frame)


@pytest.fixture(scope="module")
def brokers(tmp_path_factory):
    from pykbroker.embedded import EmbeddedBroker

    batches = same_batches(7)
    zero_copy = EmbeddedBroker(str(tmp_path_factory.mktemp("sendfile"))).start()
    copying = EmbeddedBroker(
        str(tmp_path_factory.mktemp("copy")),
        overrides={"pykbroker.sendfile.min.bytes": 2**31 - 1},
    ).start()
    for b in (zero_copy, copying):
        load(b, batches)
    yield zero_copy, copying, batches
    zero_copy.stop()
    copying.stop()
    zero_copy.cleanup()
    copying.cleanup()


def sendfile_bytes(broker) -> int:
    return broker.call(lambda: broker.broker.metrics.sendfile_bytes)


@pytest.mark.parametrize("version", [4, 11, 12])
@pytest.mark.parametrize("limits", ["whole", "partition_limited", "response_limited"])
def test_sendfile_bytes_identical_to_copying(brokers, version, limits):
    zero_copy, copying, batches = brokers
    kwargs = {
        "whole": {"partition_max_bytes": 50 << 20},
        "partition_limited": {"partition_max_bytes": 250_000},
        "response_limited": {"partition_max_bytes": 50 << 20, "max_bytes": 300_000},
    }[limits]
    before = sendfile_bytes(zero_copy), sendfile_bytes(copying)
    sent = raw_fetch(zero_copy, version, **kwargs)
    copied = raw_fetch(copying, version, **kwargs)
    assert sent == copied
    grown = sendfile_bytes(zero_copy) - before[0]
    assert grown >= 65536  # the large regions went by sendfile
    assert sendfile_bytes(copying) == before[1]  # and never on the copying broker

    resp = codec.decode_response(ApiKey.FETCH, version, sent, 5 if version >= 12 else 4)
    got = {p.partition_index: fetched_records(p) for p in resp.responses[0].partitions}
    assert grown == sum(len(p.records or b"") for p in resp.responses[0].partitions
                        if len(p.records or b"") >= 65536)  # fmt: skip
    for partition, records in got.items():
        expected = [rb.decode_records(b) for p, b in batches if p == partition]
        flat = [r for batch in expected for r in batch]
        assert [r.value for r in records] == [r.value for r in flat[: len(records)]]
        if limits == "whole":
            assert len(records) == len(flat)


def test_small_regions_are_copied(brokers):
    zero_copy, _, _ = brokers
    c = RawClient(zero_copy.port)
    batch = bytes(rb.build_batch([rb.Record(0, 1, None, b"tiny")]))
    r = partition_response(c.request(ApiKey.PRODUCE, 9, produce_body("tiny", batch)))
    assert r.error_code == 0
    before = sendfile_bytes(zero_copy)
    resp = c.request(ApiKey.FETCH, 12, fetch_body([("tiny", 0, 0)]))
    assert fetched_records(resp.responses[0].partitions[0])[0].value == b"tiny"
    assert sendfile_bytes(zero_copy) == before
    c.close()


def test_consumers_read_sendfile_responses(brokers):
    """Real clients parse responses whose records went out by sendfile."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    zero_copy, _, batches = brokers
    before = sendfile_bytes(zero_copy)
    expected = {p: sum(rb.read_header(b).record_count for q, b in batches if q == p)
                for p in range(PARTITIONS)}  # fmt: skip
    consumer = Consumer({"bootstrap.servers": zero_copy.bootstrap_servers, "group.id": "zc",
                         "enable.auto.commit": False, "broker.address.family": "v4"})  # fmt: skip
    consumer.assign([TopicPartition("zc", p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen = dict.fromkeys(range(PARTITIONS), 0)
    try:
        for _ in range(200):
            if seen == expected:
                break
            msg = consumer.poll(1)
            if msg is not None:
                assert msg.error() is None
                seen[msg.partition()] += 1
    finally:
        consumer.close()
    assert seen == expected
    assert sendfile_bytes(zero_copy) > before


def test_topic_deleted_while_its_records_are_being_sent(make_broker):
    """The segment files a fetch is sending from stay open until the response is out, even if
    the topic is deleted meanwhile (and its file descriptors would be reused by new files)."""
    import socket

    from wire import wait_for

    b = make_broker()
    # 12 MB: more than the socket buffers hold (tcp_wmem's 4 MB autotuning limit, a 4 KB
    # receive buffer), so sendfile has to wait for the reader.
    values = [random.Random(i).randbytes(1_000_000) for i in range(12)]
    c = RawClient(b.port)
    for v in values:
        batch = bytes(rb.build_batch([rb.Record(0, 1, None, v)]))
        assert (
            partition_response(
                c.request(ApiKey.PRODUCE, 9, produce_body("doomed", batch))
            ).error_code
            == 0
        )

    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", b.port))
    body = fetch_body([("doomed", 0, 0)], partition_max_bytes=50 << 20)
    slow.sendall(codec.encode_request(ApiKey.FETCH, 12, 7, "slow", body))

    def blocked_in_sendfile():
        return b.call(lambda: any(conn._dup_fd >= 0 for conn in b.broker.connections))

    wait_for(blocked_in_sendfile, what="sendfile to wait for the slow reader")
    r = c.request(ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": "doomed", "topic_id": None}],
                                           "timeout_ms": 5000})  # fmt: skip
    assert r.responses[0].error_code == 0
    for i in range(3):  # new files, likely on the file descriptors the deleted log had
        batch = bytes(rb.build_batch([rb.Record(0, 1, None, b"N" * 3_000_000)]))
        c.request(ApiKey.PRODUCE, 9, produce_body(f"newcomer{i}", batch))
    c.close()

    from protocol.framing import FrameReader

    reader = FrameReader(1 << 30)
    slow.settimeout(30)
    while not reader.frames:
        data = slow.recv(1 << 20)
        assert data, "the broker gave up on the response"
        reader.feed(data)
    slow.close()
    resp = codec.decode_response(ApiKey.FETCH, 12, reader.frames.popleft(), 5)
    got = [r.value for r in fetched_records(resp.responses[0].partitions[0])]
    assert got == values

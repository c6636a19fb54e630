"""Request memory (issue 11 item 5): frame buffers grow as bytes arrive, and
queued.max.request.bytes bounds what requests in flight hold across all connections; when it is
used up the broker stops reading (mutes) instead of closing anyone, and one request larger than
the pool still gets through (Kafka's SimpleMemoryPool in non-strict mode).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import urllib.request

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from helpers import BrokerProcess, RawClient
from wire import fetch, partition_response, produce_body, values_batch, wait_for

from protocol import codec
from protocol.apis import ApiKey
from protocol.framing import FrameReader, MemoryPool

MB = 1_000_000


# --- the frame reader, sans-io -----------------------------------------------------------------


def test_a_size_prefix_alone_allocates_nothing():
    pool = MemoryPool(10 * MB)
    reader = FrameReader(200 * MB, scratch_bytes=1024, pool=pool, first_chunk_bytes=4096)
    reader.feed(struct.pack(">i", 100 * MB))
    assert pool.available == pool.size and not reader.blocked
    assert len(reader.get_buffer()) <= 1024  # still the scratch buffer
    reader.feed(b"x" * 10)  # the frame begins: one first chunk, not 100 MB
    assert pool.size - pool.available == 4096
    assert len(reader.get_buffer()) == 4096 - 10
    reader.close()
    assert pool.available == pool.size


def drive(stream: bytes, pool: MemoryPool, rng: random.Random, hold: int) -> list[bytes]:
    """Feed `stream` in random pieces as an owner would: frames are answered (done) up to `hold`
    at a time, and a blocked reader gets memory back only by answering frames."""
    reader = FrameReader(1 << 20, scratch_bytes=64, pool=pool, first_chunk_bytes=100)
    out, held = [], []
    pos = 0
    peak = 0
    while pos < len(stream) or reader.frames or held:
        if reader.blocked or pos == len(stream) or len(held) >= hold:
            if reader.frames:
                held.append(reader.frames.popleft())
            frame = held.pop(0) if held else None
            if frame is not None:
                out.append(bytes(frame))
                reader.done(frame)
            reader.retry()
            continue
        buf = reader.get_buffer()
        n = min(rng.randint(1, 300), len(buf), len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        buf.release()
        reader.buffer_updated(n)
        pos += n
        peak = max(peak, pool.size - pool.available)
        while reader.frames and len(held) < hold:
            held.append(reader.frames.popleft())
    reader.close()
    return out, peak


@pytest.mark.parametrize("seed", range(20))
def test_pooled_frames_come_out_whole_and_memory_comes_back(seed):
    rng = random.Random(seed)
    frames = [rng.randbytes(rng.choice([0, 5, 31, 33, 200, 1500, 5000])) for _ in range(30)]
    stream = b"".join(struct.pack(">i", len(f)) + f for f in frames)
    pool = MemoryPool(2000)  # smaller than the largest frame: that one needs the overdraft
    out, peak = drive(stream, pool, rng, hold=rng.randint(1, 4))
    assert out == frames
    assert pool.available == pool.size and pool.overdraft_holder is None
    assert peak <= pool.size + max(len(f) for f in frames)


def test_one_reader_in_overdraft_at_a_time():
    pool = MemoryPool(1000)
    a = FrameReader(1 << 20, scratch_bytes=64, pool=pool, first_chunk_bytes=600)
    b = FrameReader(1 << 20, scratch_bytes=64, pool=pool, first_chunk_bytes=600)
    a.feed(struct.pack(">i", 5000) + b"a")  # 600 reserved
    b.feed(struct.pack(">i", 5000) + b"b")  # 400 left: b takes the overdraft for its 600
    assert not a.blocked and not b.blocked and pool.overdraft_holder is b
    a.feed(b"a" * 599)  # a needs 600 more: the pool is empty and b holds the overdraft
    assert a.blocked
    b.feed(b"b" * 4999)  # b goes on to its end
    assert not b.blocked and len(b.frames) == 1
    assert not a.retry()  # b's frame isn't answered yet: its memory is still held
    b.done(b.frames.popleft())
    assert a.retry() and pool.overdraft_holder is a
    a.feed(b"a" * 4400)
    a.done(a.frames.popleft())
    assert pool.available == pool.size and pool.overdraft_holder is None


# --- the broker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bp(tmp_path_factory):
    proc = BrokerProcess(
        str(tmp_path_factory.mktemp("mem") / "data"),
        {"queued.max.request.bytes": str(8 * MB), "message.max.bytes": str(60 * MB),
         "replica.fetch.max.bytes": str(60 * MB), "metrics.port": "0"},
    ).start()  # fmt: skip
    yield proc
    proc.kill()


def real_client_round_trip(bp, topic: str, n: int, size: int) -> None:
    """A confluent-kafka producer and consumer move n values of `size` bytes through the broker."""
    producer = Producer({"bootstrap.servers": bp.bootstrap_servers, "linger.ms": 5,
                         "message.max.bytes": 10 * MB})  # fmt: skip
    values = [random.randbytes(size) for _ in range(n)]
    errors = []
    for v in values:
        producer.produce(topic, v, on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(30) == 0
    assert errors == [None] * n
    consumer = Consumer({"bootstrap.servers": bp.bootstrap_servers, "group.id": topic,
                         "auto.offset.reset": "earliest", "fetch.max.bytes": 20 * MB})  # fmt: skip
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])  # no group join to wait for
    got = []

    def read():
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
        return len(got) == n

    try:
        wait_for(read, 30, f"{n} records of {topic}")
    finally:
        consumer.close()
    assert got == values


def test_half_written_frames_cost_no_memory(bp):
    """24 connections each claim a 100 MB frame and send nothing more, and 24 more send its
    first kilobyte: the broker's RSS barely moves, and real clients keep producing and consuming
    (with frames large enough to go through the pool)."""
    real_client_round_trip(bp, "warmup", 20, 50_000)
    before = bp.rss()
    socks = []
    for i in range(48):
        s = socket.create_connection(("127.0.0.1", bp.port))
        s.sendall(struct.pack(">i", 100 * MB) + (b"\x00" * 1000 if i % 2 else b""))
        socks.append(s)
    real_client_round_trip(bp, "alongside", 40, 100_000)
    grown = bp.rss() - before
    assert grown < 48 * MB // 2, f"RSS grew by {grown} bytes"
    # None of them was closed by the broker: they are only waiting for their bytes.
    for s in socks:
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(1)
        s.close()


def big_produce(bp, topic: str, value_size: int, results: list, index: int) -> None:
    c = RawClient(bp.port)
    c.sock.settimeout(120)
    batch = values_batch([bytes([index % 256]) * value_size])
    r = c.request(ApiKey.PRODUCE, 9, produce_body(topic, bytes(batch)))
    results[index] = None if r is None else partition_response(r).error_code
    c.close()


def test_a_request_larger_than_the_pool_gets_through(bp):
    """queued.max.request.bytes is 8 MB here; a 50 MB produce (message.max.bytes raised) is let
    through, as Kafka's non-strict pool lets one request past it, and reads back whole."""
    results = [-1]
    big_produce(bp, "huge", 50 * MB, results, 0)
    assert results == [0]
    c = RawClient(bp.port)
    c.sock.settimeout(60)
    r = fetch(c, [("huge", 0, 0)], max_bytes=60 * MB, partition_max_bytes=60 * MB)
    assert r.responses[0].partitions[0].error_code == 0
    assert len(r.responses[0].partitions[0].records) > 50 * MB
    c.close()


def pool_used(bp) -> int:
    port = next(e["metrics_port"] for e in bp.lines if e.get("event") == "broker_started")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    line = next(
        x for x in text.splitlines() if x.startswith("kafka_network_socketserver_memorypoolused ")
    )
    return int(float(line.split()[1]))


def produce_frame(topic: str, value_size: int, correlation_id: int) -> bytes:
    body = produce_body(topic, bytes(values_batch([b"v" * value_size])))
    return codec.encode_request(ApiKey.PRODUCE, 9, correlation_id, "mem", body)


def test_an_exhausted_pool_mutes_and_never_closes(bp):
    """A 14 MB produce partly sent holds the 8 MB pool and its overdraft; a 2 MB produce from
    another connection is then muted (not closed) until the first one is answered, and both
    succeed."""
    first = produce_frame("crowd", 14 * MB, 1)
    a = RawClient(bp.port)
    a.sock.settimeout(60)
    a.send_raw(first[: 10 * MB])
    wait_for(lambda: pool_used(bp) > 8 * MB, 20, "the half-sent frame to hold the pool")
    b = RawClient(bp.port)
    b.sock.settimeout(60)
    # Muted, the broker reads no more of it: the rest waits in the socket buffers (a thread).
    sender = threading.Thread(target=b.send_raw, args=(produce_frame("crowd", 2 * MB, 2),))
    sender.start()
    wait_for(lambda: bp.events("request_memory_exhausted"), 20, "the second connection muted")
    a.send_raw(first[10 * MB :])
    sender.join(60)
    for client, correlation_id in ((a, 1), (b, 2)):
        frame = client.recv_frame()
        assert frame is not None, "the broker closed a connection it should have muted"
        assert struct.unpack_from(">i", frame)[0] == correlation_id
        r = codec.decode_response(ApiKey.PRODUCE, 9, frame, 5)
        assert partition_response(r).error_code == 0
        client.close()
    wait_for(lambda: pool_used(bp) == 0, 20, "the pool to be empty again")
    assert not [e for e in bp.lines if e.get("level") == "error"]
    real_client_round_trip(bp, "after-crowd", 5, 100_000)


def produce_frame_of(size: int) -> bytes:
    """A Produce v9 request whose size prefix says exactly `size` (its value padded to fit)."""
    value = size - 200
    for _ in range(5):
        frame = produce_frame("limit", value, 1)
        if len(frame) - 4 == size:
            return frame
        value += size - (len(frame) - 4)
    raise AssertionError(f"no frame of {size} bytes")


def test_socket_request_max_bytes_is_configurable(make_broker):
    """socket.request.max.bytes set to 1 MiB: a request of exactly that size is read and
    answered; one byte more and the broker closes the connection on the size prefix (Kafka's
    NetworkReceive: a size above the maximum is an InvalidReceiveException), whatever follows."""
    b = make_broker({"socket.request.max.bytes": str(1 << 20)})
    c = RawClient(b.port)
    c.send_raw(produce_frame_of(1 << 20))
    frame = c.recv_frame()
    assert frame is not None, "a request of exactly socket.request.max.bytes was refused"
    assert partition_response(codec.decode_response(ApiKey.PRODUCE, 9, frame, 5)).error_code == 0
    c.close()
    c = RawClient(b.port)
    c.sock.settimeout(10)
    c.send_raw(produce_frame_of((1 << 20) + 1)[:4])  # the size prefix alone is enough
    try:
        closed = c.sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        closed = False
    assert closed, "the broker kept a connection announcing too large a request"
    c.close()

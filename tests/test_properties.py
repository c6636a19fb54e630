"""Property tests (hypothesis) of the sans-io protocol layer.

The RecordBatch v2 view, request-header parsing, frame splitting under arbitrary chunking, and
the hand-written hot-path codecs checked against kafka-python's generated ones for every
version the broker serves.
"""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from protocol.framing import HEADER_FIXED, FrameError, FrameReader, parse_request_header
from protocol.hotpath import (
    FetchPartitionResult,
    ProducePartitionResult,
    decode_produce_request,
    encode_fetch_response,
    encode_produce_response,
)
from pykbroker.handlers import REGISTRY

settings.register_profile("spine", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
settings.load_profile("spine")

INT16 = st.integers(-(2**15), 2**15 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
NAMES = st.text(min_size=1, max_size=12)
SMALL_BYTES = st.binary(max_size=64)


def served(api_key: int) -> list[int]:
    spec = REGISTRY.get(api_key)
    return list(range(spec.min_version, spec.max_version + 1))


# --- RecordBatch ------------------------------------------------------------------------------

HEADERS = st.lists(st.tuples(st.text(max_size=8), st.none() | SMALL_BYTES), max_size=3)
RECORDS = st.lists(
    st.tuples(st.integers(-5000, 5000), st.none() | SMALL_BYTES, st.none() | st.binary(max_size=300),
              HEADERS),
    min_size=1, max_size=8,
)  # fmt: skip


@st.composite
def batches(draw):
    base_ts = draw(st.integers(0, 2**41))
    records = [
        rb.Record(i, base_ts + dt, key, value, headers)
        for i, (dt, key, value, headers) in enumerate(draw(RECORDS))
    ]
    kwargs = {
        "compression_type": draw(st.sampled_from([0, 1, 2, 3, 4])),
        "producer_id": draw(st.sampled_from([-1, 0, 12345, 2**62])),
        "producer_epoch": draw(st.integers(-1, 2**15 - 1)),
        "base_sequence": draw(st.integers(-1, 2**31 - 1)),
        "transactional": draw(st.booleans()),
        "log_append_time": draw(st.booleans()),
    }
    return records, kwargs, rb.build_batch(records, **kwargs)


@given(batches())
def test_batch_header_round_trip(batch):
    records, kwargs, buf = batch
    h = rb.read_header(buf)
    assert (h.base_offset, h.magic, h.record_count, h.last_offset_delta) == (0, 2, len(records),
                                                                             len(records) - 1)  # fmt: skip
    assert h.size == len(buf)
    assert rb.peek_size(buf, 0) == len(buf)
    assert h.base_timestamp == min(r.timestamp for r in records)
    assert h.max_timestamp == max(r.timestamp for r in records)
    assert h.compression == kwargs["compression_type"]
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (
        kwargs["producer_id"], kwargs["producer_epoch"], kwargs["base_sequence"])  # fmt: skip
    assert h.is_transactional == kwargs["transactional"]
    assert h.is_log_append_time == kwargs["log_append_time"]
    assert not h.is_control
    if h.base_sequence >= 0:
        assert h.last_sequence == (h.base_sequence + len(records) - 1) % 2**31


def _plain(records, log_append_ts=None):
    return [(r.offset, log_append_ts if log_append_ts is not None else r.timestamp, r.key,
             r.value, [(k, v) for k, v in r.headers]) for r in records]  # fmt: skip


@given(batches(), st.integers(0, 2**62))
def test_validate_patch_and_decode(batch, base_offset):
    records, kwargs, buf = batch
    [(pos, header)] = rb.validate_batches(buf)
    assert pos == 0 and header.crc == rb.read_header(buf).crc
    rb.set_base_offset(buf, 0, base_offset)
    rb.set_partition_leader_epoch(buf, 0, 7)
    [(_, header)] = rb.validate_batches(buf)  # neither field is covered by the CRC
    assert (header.base_offset, header.partition_leader_epoch) == (base_offset, 7)
    shifted = [rb.Record(r.offset + base_offset, r.timestamp, r.key, r.value, r.headers)
               for r in records]  # fmt: skip
    lat = header.max_timestamp if kwargs["log_append_time"] else None
    assert _plain(rb.decode_records(buf)) == _plain(shifted, lat)
    rb.set_log_append_time(buf, 0, 1_234_567)
    [(_, header)] = rb.validate_batches(buf)  # the CRC was recomputed
    assert header.is_log_append_time and header.max_timestamp == 1_234_567
    assert _plain(rb.decode_records(buf)) == _plain(shifted, 1_234_567)


@given(batches(), st.data())
def test_crc_detects_corruption(batch, data):
    _records, _kwargs, buf = batch
    # Everything but the base offset and partition leader epoch (which the broker patches)
    # is protected: the length by framing, the magic and CRC and what follows by the CRC.
    pos = data.draw(st.integers(rb.LENGTH_OFFSET, rb.LENGTH_OFFSET + 3)
                    | st.integers(rb.MAGIC_OFFSET, len(buf) - 1), label="position")  # fmt: skip
    flip = data.draw(st.integers(1, 255), label="xor")
    buf[pos] ^= flip
    with pytest.raises(KafkaError) as e:
        rb.validate_batches(buf)
    if pos == rb.MAGIC_OFFSET and buf[pos] in (0, 1):
        assert e.value.code == ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
    else:
        assert e.value.code == ErrorCode.CORRUPT_MESSAGE


@pytest.mark.parametrize(
    "magic, code",
    [(0, ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT), (1, ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT),
     (3, ErrorCode.CORRUPT_MESSAGE), (0xFF, ErrorCode.CORRUPT_MESSAGE)],
)  # fmt: skip
def test_magic_byte(magic, code):
    """Legacy formats are unsupported; anything else that isn't magic 2 is corrupt (as Kafka)."""
    buf = rb.build_batch([rb.Record(0, 1, None, b"v")])
    buf[rb.MAGIC_OFFSET] = magic
    with pytest.raises(KafkaError) as e:
        rb.validate_batches(buf)
    assert e.value.code == code


@given(st.lists(batches(), min_size=1, max_size=4), st.integers(0, 60))
def test_concatenated_batches_split_back(many, cut):
    bufs = [b for _, _, b in many]
    joined = bytearray(b"".join(bufs))
    found = rb.validate_batches(joined)
    positions = [sum(len(b) for b in bufs[:i]) for i in range(len(bufs))]
    assert [p for p, _ in found] == positions
    assert [p for p, _ in rb.scan_batches(joined)] == positions
    # A torn tail: scan stops at the last whole batch, validation refuses the request.
    torn = joined[: len(joined) - 1 - cut % len(bufs[-1])]
    assert [p for p, _ in rb.scan_batches(torn)] == positions[:-1]
    with pytest.raises(KafkaError) as e:
        rb.validate_batches(torn)
    assert e.value.code == ErrorCode.CORRUPT_MESSAGE


@given(batches(), st.integers(1, 2000))
def test_message_too_large(batch, limit):
    _, _, buf = batch
    if len(buf) > limit:
        with pytest.raises(KafkaError) as e:
            rb.validate_batches(buf, limit)
        assert e.value.code == ErrorCode.MESSAGE_TOO_LARGE
    else:
        assert len(rb.validate_batches(buf, limit)) == 1


# --- request headers ------------------------------------------------------------------------


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


TAGS = st.lists(st.tuples(st.integers(0, 2**20), st.binary(max_size=40)), max_size=4)


@given(INT16, INT16, INT32, st.none() | st.text(max_size=30), st.booleans(), TAGS,
       st.binary(max_size=50))  # fmt: skip
def test_request_header_parsing(api_key, version, corr, client_id, flexible, tags, body):
    raw = HEADER_FIXED.pack(api_key, version, corr)
    if client_id is None:
        raw += b"\xff\xff"
    else:
        cid = client_id.encode()
        raw += struct.pack(">h", len(cid)) + cid
    if flexible:
        raw += _uvarint(len(tags))
        for tag, value in tags:
            raw += _uvarint(tag) + _uvarint(len(value)) + value
    h = parse_request_header(raw + body, lambda k, v: flexible)
    assert (h.api_key, h.api_version, h.correlation_id, h.client_id) == (
        api_key, version, corr, client_id)  # fmt: skip
    assert h.body_offset == len(raw)
    for cut in range(len(raw)):  # every truncated header is refused, never misread
        with pytest.raises(FrameError):
            parse_request_header(raw[:cut], lambda k, v: flexible)


@given(st.sampled_from(sorted(k for k, _, _ in REGISTRY.versions())), st.data())
def test_header_of_encoded_requests(api_key, data):
    version = data.draw(st.sampled_from(served(api_key)))
    client_id = data.draw(st.none() | st.text(max_size=10))
    frame = codec.encode_request(api_key, version, 42, client_id, {})  # schema defaults
    h = parse_request_header(frame[4:], codec.request_is_flexible)
    assert (h.api_key, h.api_version, h.correlation_id, h.client_id) == (
        api_key, version, 42, client_id)  # fmt: skip
    decoded = codec.decode_request(api_key, version, frame[4:], h.body_offset)
    assert decoded is not None


# --- frame splitting ------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=700), max_size=8), st.lists(st.integers(1, 300), min_size=1),
       st.sampled_from([64, 256, 4096]))  # fmt: skip
def test_frame_reader_any_chunking(frames, chunk_sizes, scratch):
    stream = b"".join(struct.pack(">i", len(f)) + f for f in frames)
    reader = FrameReader(1 << 20, scratch_bytes=scratch)
    out = []
    pos = i = 0
    while pos < len(stream):
        # As asyncio's BufferedProtocol does: fill part of the buffer we were handed.
        buf = reader.get_buffer()
        n = min(chunk_sizes[i % len(chunk_sizes)], len(buf), len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        reader.buffer_updated(n)
        pos += n
        i += 1
        while reader.frames:
            out.append(bytes(reader.frames.popleft()))
    assert out == frames
    assert not reader.partial


@given(st.integers(-(2**31), -1) | st.integers(1001, 2**31 - 1), st.binary(max_size=20))
def test_frame_reader_refuses_bad_sizes(size, tail):
    reader = FrameReader(1000, scratch_bytes=64)
    with pytest.raises(FrameError):
        reader.feed(struct.pack(">i", size) + tail)


# --- hand-written codecs vs kafka-python ---------------------------------------------------

PRODUCE_TOPICS = st.lists(
    st.tuples(NAMES, st.lists(st.tuples(INT32, st.none() | st.binary(max_size=80)), max_size=3)),
    max_size=3,
)


@pytest.mark.parametrize("version", served(ApiKey.PRODUCE))
@given(txn=st.none() | NAMES, acks=INT16, timeout=INT32, topics=PRODUCE_TOPICS)
def test_produce_request_decoder_matches_kafka_python(version, txn, acks, timeout, topics):
    key = "topic_id" if version >= 13 else "name"  # v13 names topics by id (KIP-516)
    topics = [(_topic_key(name, version), parts) for name, parts in topics]
    body = {"transactional_id": txn, "acks": acks, "timeout_ms": timeout, "topic_data": [
        {key: name, "partition_data": [{"index": i, "records": r} for i, r in parts]}
        for name, parts in topics]}  # fmt: skip
    frame = bytearray(codec.encode_request(ApiKey.PRODUCE, version, 1, "c", body)[4:])
    h = parse_request_header(frame, codec.request_is_flexible)
    ours = decode_produce_request(frame, h.body_offset, version)
    theirs = codec.decode_request(ApiKey.PRODUCE, version, frame, h.body_offset)
    assert (ours.transactional_id, ours.acks, ours.timeout_ms) == (
        theirs.transactional_id, theirs.acks, theirs.timeout_ms) == (txn, acks, timeout)  # fmt: skip
    assert [(t.topic_id if version >= 13 else t.name,
             [(p.index, None if p.records is None else bytes(p.records))
              for p in t.partitions]) for t in ours.topics] == [
        (name, [(i, r) for i, r in parts]) for name, parts in topics]  # fmt: skip


@pytest.mark.parametrize("version", served(ApiKey.PRODUCE))
@given(topics=st.lists(st.tuples(NAMES, st.lists(st.tuples(
    INT32, INT16, INT64, INT64, INT64, st.none() | st.text(max_size=20)), max_size=3)),
    max_size=3), corr=INT32)  # fmt: skip
def test_produce_response_encoder_matches_kafka_python(version, topics, corr):
    topics = [(_topic_key(name, version), parts) for name, parts in topics]
    results = [(name, [ProducePartitionResult(*p) for p in parts]) for name, parts in topics]
    frame = encode_produce_response(version, corr, results)
    assert struct.unpack_from(">i", frame, 0)[0] == len(frame) - 4
    flexible = codec.response_is_flexible(ApiKey.PRODUCE, version)
    assert struct.unpack_from(">i", frame, 4)[0] == corr
    resp = codec.decode_response(ApiKey.PRODUCE, version, frame[4:], 5 if flexible else 4)
    got = [(t.topic_id if version >= 13 else t.name,
            [(p.index, p.error_code, p.base_offset, p.log_append_time_ms,
                      p.log_start_offset if version >= 5 else None,
                      p.error_message if version >= 8 else None)
                     for p in t.partition_responses]) for t in resp.responses]  # fmt: skip
    want = [(name, [(i, e, b, t, s if version >= 5 else None, m if version >= 8 else None)
                    for i, e, b, t, s, m in parts]) for name, parts in topics]  # fmt: skip
    assert got == want
    assert resp.throttle_time_ms == 0


def _topic_key(name: str, version: int):
    """From v13 (Produce and Fetch) topics go by id: a uuid standing for the name."""
    return uuid.uuid5(uuid.NAMESPACE_URL, name) if version >= 13 else name


class _Region(bytes):
    """A stand-in for a segment FileRegion: the encoder only needs its length."""

    @property
    def length(self) -> int:
        return len(self)


FETCH_PARTITIONS = st.lists(
    st.builds(
        lambda idx, err, hw, lso, lstart, aborted, replica, records, leader: FetchPartitionResult(
            idx, err, hw, lso, lstart, aborted, replica,
            None if records is None else _Region(records), leader),
        INT32, INT16, INT64, INT64, INT64,
        st.none() | st.lists(st.tuples(INT64, INT64), max_size=2), INT32,
        st.none() | st.binary(max_size=100), st.none() | st.tuples(INT32, INT32),
    ),
    max_size=3,
)  # fmt: skip


@pytest.mark.parametrize("version", served(ApiKey.FETCH))
@given(topics=st.lists(st.tuples(NAMES, FETCH_PARTITIONS), max_size=3), corr=INT32,
       error=INT16, session=INT32, endpoints=st.lists(st.tuples(
           INT32, NAMES, INT32, st.none() | NAMES), max_size=2))  # fmt: skip
def test_fetch_response_encoder_matches_kafka_python(version, topics, corr, error, session,
                                                     endpoints):  # fmt: skip
    topics = [(_topic_key(name, version), partitions) for name, partitions in topics]
    parts = encode_fetch_response(version, corr, 0, error, session, topics, endpoints)
    frame = b"".join(bytes(p) for p in parts)  # regions in place, as sendfile would put them
    assert struct.unpack_from(">i", frame, 0)[0] == len(frame) - 4
    assert struct.unpack_from(">i", frame, 4)[0] == corr
    flexible = codec.response_is_flexible(ApiKey.FETCH, version)
    resp = codec.decode_response(ApiKey.FETCH, version, frame[4:], 5 if flexible else 4)
    if version >= 7:
        assert (resp.error_code, resp.session_id) == (error, session)
    got = []
    for t in resp.responses:
        for p in t.partitions:
            aborted = None if p.aborted_transactions is None else [
                (a.producer_id, a.first_offset) for a in p.aborted_transactions]  # fmt: skip
            leader = None
            if version >= 12 and p.current_leader is not None:
                leader = (p.current_leader.leader_id, p.current_leader.leader_epoch)
                leader = None if leader == (-1, -1) else leader  # the field's default
            got.append((t.topic_id if version >= 13 else t.topic, p.partition_index, p.error_code, p.high_watermark,
                        p.last_stable_offset, p.log_start_offset if version >= 5 else None,
                        aborted, p.preferred_read_replica if version >= 11 else None,
                        bytes(p.records or b""), leader))  # fmt: skip
    want = []
    for name, partitions in topics:
        for p in partitions:
            leader = p.current_leader if version >= 12 and p.current_leader != (-1, -1) else None
            want.append((name, p.partition_index, p.error_code, p.high_watermark,
                         p.last_stable_offset, p.log_start_offset if version >= 5 else None,
                         p.aborted_transactions, p.preferred_read_replica if version >= 11 else None,
                         bytes(p.records or b""), leader))  # fmt: skip
    assert got == want
    if version >= 16:  # KIP-951's leader endpoints, a tagged field
        got_endpoints = [(e.node_id, e.host, e.port, e.rack) for e in resp.node_endpoints or ()]
        assert got_endpoints == endpoints

"""Produce-time validation of record batches (Kafka's LogValidator): compressed batches whose
payload does not decompress, whose records do not parse or disagree with the header, or that
inflate past the bound are refused whole, nothing of them appended; keyless records on a
compacted topic are refused with INVALID_RECORD, each named in record_errors (Produce v8+).
Corrupt batches already in a log (an older broker took them) don't break ListOffsets or the
cleaner. Bad batches are built by hand, with their CRC recomputed, and sent raw.
"""

from __future__ import annotations

import struct
import time
import zlib

import cramjam
import pytest
import structlog
from cli_helpers import tool
from confluent_kafka import KafkaError as CKError
from confluent_kafka import Producer
from crc32c import crc32c
from helpers import RawClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from storage_helpers import batches, broker_log, clean, cleaner_for, make_log
from wire import fetch_records, partition_response, produce_body

from protocol import compression
from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode

CODECS = [compression.GZIP, compression.SNAPPY, compression.LZ4, compression.ZSTD]
KEY_MESSAGE = "Compacted topic cannot accept message without key in topic partition {}"


def now_ms() -> int:
    return int(time.time() * 1000)


def forge(codec: int, body: bytes, count: int, last_offset_delta: int | None = None) -> bytes:
    """A batch of `count` records whose records section is `body` as given (already
    compressed, or garbage), its length and CRC made right."""
    good = rb.build_batch([rb.Record(i, now_ms(), b"k", b"v") for i in range(count)],
                          compression_type=codec)  # fmt: skip
    buf = bytearray(good[: rb.HEADER_SIZE]) + body
    struct.pack_into(">i", buf, rb.LENGTH_OFFSET, len(buf) - rb.LOG_OVERHEAD)
    if last_offset_delta is not None:
        struct.pack_into(">i", buf, 23, last_offset_delta)
    struct.pack_into(">I", buf, 17, crc32c(bytes(buf[rb.CRC_START :])))
    return bytes(buf)


def raw_records(recs: list[rb.Record]) -> bytes:
    """The uncompressed records section of a batch of `recs`."""
    return bytes(rb.build_batch(recs)[rb.HEADER_SIZE :])


def produce(client: RawClient, topic: str, batch: bytes, version: int = 9):
    return partition_response(client.request(ApiKey.PRODUCE, version, produce_body(topic, batch)))


def create(broker, name: str, configs: dict[str, str] | None = None) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs or {})])
    finally:
        admin.close()


def assert_still_empty_then_ok(client: RawClient, topic: str) -> None:
    """Nothing of the refused batches was appended: the next good one gets offset 0."""
    r = produce(client, topic, bytes(rb.build_batch([rb.Record(0, now_ms(), b"k", b"ok")])))
    assert (r.error_code, r.base_offset) == (0, 0)


@pytest.mark.parametrize("codec", CODECS, ids=[compression.NAMES[c] for c in CODECS])
def test_compressed_batch_that_does_not_decompress(broker, codec):
    c = RawClient(broker.port)
    garbage = bytes(range(7, 250)) * 3
    for body in (garbage, b""):
        r = produce(c, f"bad-{codec}", forge(codec, body, 2))
        assert r.error_code == ErrorCode.CORRUPT_MESSAGE, (body[:8], r)
        assert r.error_message.startswith("Failed to decompress record stream")
    # A valid stream cut short.
    payload = compression.compress(
        codec, raw_records([rb.Record(i, 1, b"k", b"v" * 300) for i in range(20)])
    )
    r = produce(c, f"bad-{codec}", forge(codec, payload[: len(payload) // 2], 20))
    assert r.error_code in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.INVALID_RECORD)
    assert_still_empty_then_ok(c, f"bad-{codec}")
    c.close()


@pytest.mark.parametrize("codec", [compression.NONE, *CODECS[::3]], ids=["none", "gzip", "zstd"])
def test_records_that_disagree_with_the_header(broker, codec):
    """Compressed batches are walked record by record (uncompressed ones only on compacted
    topics): Kafka's InvalidRecordException messages, answered as INVALID_RECORD."""
    topic = f"shape-{codec}"
    if codec == compression.NONE:
        create(broker, topic, {"cleanup.policy": "compact"})
    c = RawClient(broker.port)
    three = [rb.Record(i, now_ms(), b"k%d" % i, b"v") for i in range(3)]
    body = raw_records(three)

    def bad(section: bytes, count: int) -> int:
        r = produce(
            c,
            topic,
            forge(codec, compression.compress(codec, section) if codec else section, count),
        )
        assert r.error_code == ErrorCode.INVALID_RECORD, r
        return r.error_message

    assert bad(body, 4) == "Incorrect declared batch size, premature EOF reached"
    assert bad(body, 2) == "Incorrect declared batch size, records still remaining in file"
    # A record whose fields end before its stated size.
    first_len = body[0] >> 1
    padded = (
        bytes([(first_len + 1) << 1]) + body[1 : 1 + first_len] + b"\x00" + body[1 + first_len :]
    )
    assert bad(padded, 3).startswith("Invalid record size: expected to read")
    assert_still_empty_then_ok(c, topic)
    c.close()


def _zstd_bomb(size: int) -> bytes:
    """`size` zero bytes as one zstd frame, compressed a chunk at a time (little memory)."""
    comp = cramjam.zstd.Compressor()
    chunk = bytes(1 << 20)
    for _ in range(size >> 20):
        comp.compress(chunk)
    return bytes(comp.finish())


def _gzip_bomb(members: int) -> bytes:
    """`members` x 64 MiB of zero bytes as concatenated gzip members (Kafka's GZIPInputStream
    reads them one after another, and so do we): 1 GiB is 16 members, ~1,044,000 bytes."""
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    member = b"".join(co.compress(chunk) for _ in range(64)) + co.flush()
    return member * members


def _status_mib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) >> 10 for line in f if line.startswith(key))


def test_batch_that_inflates_past_the_bound_is_refused(broker):
    """1 GiB of zeros in a ~32 KiB zstd batch and in a ~1 MiB gzip batch (both under
    message.max.bytes), and 64 MiB in lz4 and 16 MiB in snappy (near those codecs' best ratios
    for a 1 MiB batch) are refused with MESSAGE_TOO_LARGE after at most 8 x max.message.bytes
    of output, never expanded: the peak RSS of this process (the broker runs in it) grows by
    far less than one bomb's size."""
    c = RawClient(broker.port)
    bombs = {compression.ZSTD: _zstd_bomb(1 << 30), compression.GZIP: _gzip_bomb(16),
             compression.LZ4: compression.compress(compression.LZ4, bytes(64 << 20)),
             compression.SNAPPY: compression.compress(compression.SNAPPY, bytes(16 << 20))}  # fmt: skip
    assert len(bombs[compression.ZSTD]) < 64 << 10 and len(bombs[compression.GZIP]) < 1048588 - 61
    frames = {codec: forge(codec, payload, 1) for codec, payload in bombs.items()}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak RSS) to the current RSS
    base = _status_mib("VmRSS")
    for codec, batch in frames.items():
        r = produce(c, "bomb", batch)
        assert r.error_code == ErrorCode.MESSAGE_TOO_LARGE, (codec, r)
        assert f"decompresses to more than {8 * 1048588} bytes" in r.error_message
    peak = _status_mib("VmHWM") - base
    assert peak < 64, f"peak RSS grew by {peak} MiB while refusing the bombs"
    assert_still_empty_then_ok(c, "bomb")
    c.close()


def test_offset_deltas_out_of_order_are_rewritten(broker):
    """A compressed batch whose inner offsets are not 0, 1, 2 ... is rewritten with the right
    ones (Kafka keeps accepting such batches from old clients)."""
    recs = [rb.Record(off, now_ms(), b"k%d" % i, b"v%d" % i) for i, off in enumerate((0, 5, 2))]
    batch = rb.build_batch(recs, compression_type=compression.LZ4, last_offset_delta=2)
    c = RawClient(broker.port)
    assert produce(c, "deltas", bytes(batch)).error_code == 0
    _, got = fetch_records(c, "deltas", 0, 0)
    assert [(r.offset, r.value) for r in got] == [(0, b"v0"), (1, b"v1"), (2, b"v2")]
    c.close()


def test_keyless_records_on_a_compacted_topic(broker):
    """INVALID_RECORD with Kafka's message; each keyless record named in record_errors (v8+),
    the partition error message as Kafka's processRecordErrors words it; v7 just the code."""
    create(broker, "compacted", {"cleanup.policy": "compact,delete"})
    tp = "compacted-0"
    c = RawClient(broker.port)
    for codec in (compression.NONE, compression.SNAPPY):
        recs = [rb.Record(i, now_ms(), None if i in (1, 3) else b"k", b"v") for i in range(5)]
        r = produce(c, "compacted", bytes(rb.build_batch(recs, compression_type=codec)))
        assert r.error_code == ErrorCode.INVALID_RECORD
        errors = [(e.batch_index, e.batch_index_error_message) for e in r.record_errors]
        assert errors == [(1, KEY_MESSAGE.format(tp)), (3, KEY_MESSAGE.format(tp))]
        assert r.error_message == (
            "One or more records have been rejected due to 2 record errors in total, and only "
            "showing the first three errors at most: "
            f"[RecordError(batchIndex=1, message='{KEY_MESSAGE.format(tp)}'), "
            f"RecordError(batchIndex=3, message='{KEY_MESSAGE.format(tp)}')]"
        )
    r = produce(c, "compacted", bytes(rb.build_batch([rb.Record(0, now_ms(), None, b"v")])), 7)
    assert r.error_code == ErrorCode.INVALID_RECORD
    assert_still_empty_then_ok(c, "compacted")
    # A delete-only topic takes keyless records, uncompressed ones without any record walk.
    r = produce(c, "plain", bytes(rb.build_batch([rb.Record(0, now_ms(), None, b"v")])))
    assert r.error_code == 0
    c.close()


def test_librdkafka_sees_invalid_record_for_a_keyless_message(broker):
    """librdkafka fails a keyless message on a compacted topic with INVALID_RECORD (a permanent
    error: no retries) and delivers keyed ones."""
    create(broker, "compacted-ck", {"cleanup.policy": "compact"})
    reports = []
    p = Producer({"bootstrap.servers": broker.bootstrap_servers, "compression.type": "zstd"})
    for key in (None, b"k"):
        p.produce("compacted-ck", key=key, value=b"v" * 500,
                  on_delivery=lambda err, msg: reports.append(err and err.code()))  # fmt: skip
        assert p.flush(30) == 0
    assert reports == [CKError.INVALID_RECORD, None]


def _plant(broker, topic: str, batch: bytes) -> None:
    """Append a batch as replication would (no validation), as an older broker took it."""
    lg = broker_log(broker, topic)

    def append():
        lg.append_as_follower(bytearray(batch))
        lg.update_high_watermark(lg.log_end_offset)

    broker.call(append)


def test_list_offsets_by_timestamp_skips_a_corrupt_batch(broker):
    c = RawClient(broker.port)
    ts = now_ms()
    assert (
        produce(c, "poisoned", bytes(rb.build_batch([rb.Record(0, ts, b"a", b"1")]))).error_code
        == 0
    )
    bad = bytearray(forge(compression.GZIP, b"not gzip at all" * 4, 2))
    struct.pack_into(">q", bad, 0, 1)  # at offset 1, as the log assigned it
    struct.pack_into(">q", bad, 27, ts + 10)  # first timestamp (inside the CRC: recompute)
    struct.pack_into(">q", bad, 35, ts + 20)
    struct.pack_into(">I", bad, 17, crc32c(bytes(bad[rb.CRC_START :])))
    _plant(broker, "poisoned", bytes(bad))
    assert (
        produce(
            c, "poisoned", bytes(rb.build_batch([rb.Record(0, ts + 30, b"b", b"2")]))
        ).error_code
        == 0
    )
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):  # the connection stays up
            r = c.request(ApiKey.LIST_OFFSETS, 7, {
                "replica_id": -1, "isolation_level": 0,
                "topics": [{"name": "poisoned", "partitions": [
                    {"partition_index": 0, "current_leader_epoch": -1, "timestamp": ts + 5}]}],
            })  # fmt: skip
            p = r.topics[0].partitions[0]
            assert (p.error_code, p.offset, p.timestamp) == (0, 3, ts + 30)
    assert any(e["event"] == "unreadable_batch_skipped" for e in logs)
    c.close()


@pytest.mark.parametrize("kind", ["garbage", "bomb"])
def test_cleaner_leaves_an_unreadable_batch_and_cleans_the_rest(tmp_path, kind):
    """A batch that doesn't decompress, or that inflates to 1 GiB (bounded like produce, so
    never expanded), is left as it is; the rest of the log is cleaned around it."""
    lg = make_log(tmp_path, **{"cleanup.policy": ["compact"], "segment.bytes": 4 << 20})
    ts = 1_000
    lg.append_as_follower(rb.build_batch([rb.Record(0, ts, b"k", b"old")]))
    payload = b"\x28\xb5\x2f\xfd garbage" * 3 if kind == "garbage" else _zstd_bomb(1 << 30)
    bad = bytearray(forge(compression.ZSTD, payload, 1))
    struct.pack_into(">q", bad, 0, 1)
    struct.pack_into(">I", bad, 17, crc32c(bytes(bad[rb.CRC_START :])))
    lg.append_as_follower(bad)
    lg.append_as_follower(rb.build_batch([rb.Record(2, ts, b"k", b"new")]))
    lg.update_high_watermark(lg.log_end_offset)
    lg.roll()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak RSS) to the current RSS
    base = _status_mib("VmRSS")
    with structlog.testing.capture_logs() as logs:
        clean(cleaner_for(lg), lg)
    assert _status_mib("VmHWM") - base < 64
    kept = batches(lg)
    assert [h.base_offset for h, _ in kept] == [1, 2]  # "old" gone, the unreadable one left
    assert kept[0][1] == bytes(bad)
    assert [(r.offset, r.value) for r in rb.decode_records(kept[1][1])] == [(2, b"new")]
    skipped = [e for e in logs if e["event"] == "cleaner_skipped_unreadable_batch"]
    assert skipped and skipped[0]["base_offset"] == 1


# --- the record walk against a reference decoder (hypothesis) -----------------------------


def _ref_varint(buf, p: int, max_bytes: int) -> tuple[int, int]:
    result = shift = 0
    for i in range(max_bytes):
        b = buf[p + i]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), p + i + 1
        shift += 7
    raise ValueError("varint too long")


def reference_walk(body: bytes, count: int) -> list[int]:
    """Kafka's DefaultRecord.readFrom, plainly: each record read whole into its own buffer, then
    parsed inside it. Returns the indexes of keyless records; ValueError for a bad batch."""
    p = 0
    keyless = []
    for i in range(count):
        if p >= len(body):
            raise ValueError("premature EOF")
        try:
            size, p = _ref_varint(body, p, 5)
        except IndexError:
            raise ValueError("premature EOF") from None
        if size < 0 or p + size > len(body):
            raise ValueError("bad size")
        rec, p = body[p : p + size], p + size
        try:
            q = 1  # attributes
            _, q = _ref_varint(rec, q, 10)  # timestamp delta
            _, q = _ref_varint(rec, q, 5)  # offset delta
            klen, q = _ref_varint(rec, q, 5)
            if klen < 0:
                keyless.append(i)
            q += max(klen, 0)
            vlen, q = _ref_varint(rec, q, 5)
            q += max(vlen, 0)
            nh, q = _ref_varint(rec, q, 5)
            if nh < 0:
                raise ValueError("bad header count")
            for _ in range(nh):
                hk, q = _ref_varint(rec, q, 5)
                if hk < 0:
                    raise ValueError("bad header key")
                q += hk
                hv, q = _ref_varint(rec, q, 5)
                q += max(hv, 0)
        except IndexError:
            raise ValueError("underflow") from None
        if q != size:
            raise ValueError("record size mismatch")
    if p != len(body):
        raise ValueError("records remaining")
    return keyless


RECORDS = st.lists(
    st.tuples(st.none() | st.binary(max_size=80), st.none() | st.binary(max_size=300),
              st.lists(st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=9)),
                       max_size=2),
              st.integers(-(2**40), 2**40)),
    min_size=1, max_size=12,
)  # fmt: skip


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # 2 shared cores
@given(RECORDS, st.data())
def test_record_walk_agrees_with_a_reference_decode(recs, data):
    """scan_records accepts exactly the record sections the reference decoder accepts (valid
    ones, and the same ones cut short, bit-flipped, or with a count off by one) and finds the
    same keyless records; its errors are INVALID_RECORD."""
    built = [rb.Record(i, 10**12 + ts, k, v, h) for i, (k, v, h, ts) in enumerate(recs)]
    body = bytearray(rb.build_batch(built)[rb.HEADER_SIZE :])
    count = len(built)
    mutation = data.draw(st.sampled_from(["none", "cut", "flip", "count"]))
    if mutation == "cut":
        del body[data.draw(st.integers(0, len(body) - 1)) :]
    elif mutation == "flip":
        body[data.draw(st.integers(0, len(body) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif mutation == "count":
        count += data.draw(st.sampled_from([-1, 1]))
    try:
        expected = reference_walk(bytes(body), count)
    except ValueError:
        expected = None
    try:
        keyless, _, in_order = rb.scan_records(bytes(body), count, True)
    except rb.KafkaError as e:
        assert e.code == ErrorCode.INVALID_RECORD
        assert expected is None, (mutation, e.message)
        return
    assert keyless == expected
    if mutation == "none":
        assert keyless == [i for i, r in enumerate(built) if r.key is None] and in_order


def _at_offset(batch: bytes, offset: int) -> bytes:
    """The batch with its base offset set (outside the CRC), as a log holds it."""
    buf = bytearray(batch)
    struct.pack_into(">q", buf, 0, offset)
    return bytes(buf)


def test_console_consumer_stops_at_an_unreadable_batch(broker):
    """A partition holding a batch that inflates past the bound (an older broker took it): the
    console consumer prints what comes before it, then stops with Kafka's error line, without
    expanding the batch or a traceback."""
    c = RawClient(broker.port)
    batch = bytes(rb.build_batch([rb.Record(0, now_ms(), None, b"before")]))
    assert produce(c, "unreadable", batch).error_code == 0
    c.close()
    _plant(broker, "unreadable", _at_offset(forge(compression.ZSTD, _zstd_bomb(256 << 20), 1), 1))
    r = tool("kafka-console-consumer", "--bootstrap-server", "localhost:9092", "--topic",
             "unreadable", "--from-beginning", "--timeout-ms", "10000", port=broker.port)  # fmt: skip
    assert r.stdout.splitlines() == ["before"], r
    assert "ERROR Error processing message, terminating consumer process: " in r.stderr, r
    assert "decompresses to more than" in r.stderr and "Traceback" not in r.stderr, r


@pytest.mark.parametrize("moved", [None, 5, 100, 200, 9000])
def test_record_walk_checks_offset_deltas_of_every_width(moved):
    """Offset deltas take one byte up to 63, two up to 8191, three beyond: a delta out of
    place is seen at any width."""
    recs = [rb.Record(i, 1, b"k", b"v") for i in range(10_000)]
    if moved is not None:
        recs[moved].offset = moved + 1
    body = bytes(rb.build_batch(recs, last_offset_delta=9_999)[rb.HEADER_SIZE :])
    assert rb.scan_records(body, 10_000, False) == ([], 0, moved is None)

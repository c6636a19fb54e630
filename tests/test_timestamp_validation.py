"""message.timestamp.before.max.ms / after.max.ms (KIP-937) and the deprecated
message.timestamp.difference.max.ms: a CreateTime record too far behind or ahead of the broker's
clock is refused with INVALID_TIMESTAMP, naming the record (Produce v8+ record_errors), as
Kafka's LogValidator does. The limits are an hour either way and the timestamps sent a day off
(or the current time), so nothing here depends on how fast the test runs.
"""

from __future__ import annotations

import random
import re
import time

import pytest
from helpers import RawClient
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import InvalidTimestampError
from storage_helpers import set_topic_configs
from wire import init_producer_id, partition_response, produce_body

from protocol import compression
from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode

HOUR = 3_600_000
DAY = 24 * HOUR
LONG_MAX = str((1 << 63) - 1)
BOUNDED = {
    "message.timestamp.before.max.ms": str(HOUR),
    "message.timestamp.after.max.ms": str(HOUR),
}
RANGE_MESSAGE = re.compile(
    r"Timestamp (-?\d+) of message with offset (\d+) is out of range\. "
    r"The timestamp should be within \[(-?\d+), (-?\d+)\]"
)


def now_ms() -> int:
    return int(time.time() * 1000)


def create_topics(broker, topics: dict[str, dict[str, str]]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)
                             for name, configs in topics.items()])  # fmt: skip
    finally:
        admin.close()


def read_timestamps(broker, topic: str, count: int) -> list[tuple[bytes, int, int]]:
    """(value, timestamp, timestamp type) of the first `count` records of partition 0."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, 0)])
        out = []
        for msg in consumer:
            out.append((msg.value, msg.timestamp, msg.timestamp_type))
            if len(out) == count:
                break
        return out
    finally:
        consumer.close()


def kafka_python_send(producer, topic: str, value: bytes, ts: int):
    return producer.send(topic, value=value, timestamp_ms=ts).get(timeout=10)


# --- real clients -----------------------------------------------------------------------------


def test_kafka_python_old_and_future_records_are_refused(broker):
    create_topics(broker, {"bounded": BOUNDED})
    # kafka-python's idempotent producer (its default) takes any non-retriable error as fatal
    # and refuses every later send, whatever the broker; a plain one carries on.
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=0,
                             enable_idempotence=False)  # fmt: skip
    try:
        old = now_ms() - DAY
        with pytest.raises(InvalidTimestampError) as refused:
            kafka_python_send(producer, "bounded", b"old", old)
        # The record's own error (record_errors) reaches the application.
        assert f"Timestamp {old} of message with offset 0 is out of range" in str(refused.value)
        with pytest.raises(InvalidTimestampError):
            kafka_python_send(producer, "bounded", b"future", now_ms() + DAY)
        ts = now_ms()
        md = kafka_python_send(producer, "bounded", b"now", ts)
        assert md.offset == 0 and md.timestamp == ts
    finally:
        producer.close()
    assert read_timestamps(broker, "bounded", 1) == [(b"now", ts, 0)]


def test_confluent_kafka_gets_invalid_timestamp(broker):
    from confluent_kafka import KafkaError, Producer

    create_topics(broker, {"bounded": BOUNDED})
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
    results: dict[bytes, object] = {}

    def report(err, msg):
        results[msg.value()] = err.code() if err is not None else msg.offset()

    now = now_ms()
    for value, ts in ((b"old", now - DAY), (b"future", now + DAY), (b"now", now)):
        producer.produce("bounded", value, timestamp=ts, on_delivery=report)
        assert producer.flush(10) == 0
    assert results == {
        b"old": KafkaError.INVALID_TIMESTAMP,
        b"future": KafkaError.INVALID_TIMESTAMP,
        b"now": 0,
    }


def test_log_append_time_topics_and_defaults_are_not_checked(broker):
    create_topics(broker, {
        "stamped": {**BOUNDED, "message.timestamp.type": "LogAppendTime"},
        "plain": {},
    })  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=0)
    try:
        before = now_ms()
        md = kafka_python_send(producer, "stamped", b"old", before - DAY)
        assert md.timestamp >= before  # the broker's clock replaced it
        for i, ts in enumerate((1, before - 365 * DAY, before + 3650 * DAY)):
            assert kafka_python_send(producer, "plain", b"any", ts).offset == i
    finally:
        producer.close()


def test_broker_defaults_topic_overrides_and_runtime_changes(make_broker):
    b = make_broker({"log.message.timestamp.before.max.ms": str(HOUR),
                     "log.message.timestamp.after.max.ms": str(HOUR)})  # fmt: skip
    create_topics(b, {
        "inherits": {},
        "lenient": {"message.timestamp.before.max.ms": LONG_MAX,
                    "message.timestamp.after.max.ms": str(7 * DAY)},
        "later": {"message.timestamp.before.max.ms": LONG_MAX,
                  "message.timestamp.after.max.ms": LONG_MAX},
    })  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, linger_ms=0,
                             enable_idempotence=False)  # fmt: skip
    try:
        for ts in (now_ms() - DAY, now_ms() + DAY):
            with pytest.raises(InvalidTimestampError):
                kafka_python_send(producer, "inherits", b"x", ts)
        kafka_python_send(producer, "lenient", b"old", now_ms() - 365 * DAY)
        kafka_python_send(producer, "lenient", b"ahead", now_ms() + DAY)
        with pytest.raises(InvalidTimestampError):
            kafka_python_send(producer, "lenient", b"far", now_ms() + 30 * DAY)

        kafka_python_send(producer, "later", b"old", now_ms() - DAY)
        set_topic_configs(b, "later", {"message.timestamp.before.max.ms": str(HOUR)})
        with pytest.raises(InvalidTimestampError):
            kafka_python_send(producer, "later", b"old", now_ms() - DAY)
        kafka_python_send(producer, "later", b"ahead", now_ms() + DAY)  # after: still unlimited
    finally:
        producer.close()


def test_deprecated_difference_max_ms_fills_limits_left_at_default(make_broker):
    b = make_broker({"log.message.timestamp.difference.max.ms": str(HOUR)})
    create_topics(b, {
        "diff": {},
        "before_set": {"message.timestamp.before.max.ms": str(365 * DAY)},
        "topic_diff": {"message.timestamp.difference.max.ms": str(7 * DAY)},
    })  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, linger_ms=0,
                             enable_idempotence=False)  # fmt: skip
    try:
        for ts in (now_ms() - DAY, now_ms() + DAY):
            with pytest.raises(InvalidTimestampError):
                kafka_python_send(producer, "diff", b"x", ts)
        kafka_python_send(producer, "before_set", b"old", now_ms() - DAY)  # before wins
        with pytest.raises(InvalidTimestampError):  # after still takes the difference
            kafka_python_send(producer, "before_set", b"future", now_ms() + DAY)
        kafka_python_send(producer, "topic_diff", b"old", now_ms() - DAY)
        kafka_python_send(producer, "topic_diff", b"future", now_ms() + DAY)
        with pytest.raises(InvalidTimestampError):
            kafka_python_send(producer, "topic_diff", b"far", now_ms() - 30 * DAY)
    finally:
        producer.close()


# --- on the wire: which records, and how the response says it ---------------------------------


def batch(timestamps: list[int], *, base: int | None = None, sizes: list[int] | None = None,
          **kwargs) -> bytearray:  # fmt: skip
    """A batch as a producer writes it: offsets 0..n-1, base timestamp = the first record's."""
    values = [b"v%d" % i if sizes is None else b"v" * sizes[i] for i in range(len(timestamps))]
    records = [
        rb.Record(i, ts, None, v) for i, (ts, v) in enumerate(zip(timestamps, values, strict=True))
    ]
    return rb.build_batch(records, base_timestamp=timestamps[0] if base is None else base, **kwargs)


@pytest.fixture
def raw(broker):
    create_topics(broker, {"bounded": BOUNDED,
                           "future_only": {"message.timestamp.after.max.ms": str(HOUR)}})  # fmt: skip
    client = RawClient(broker.port)
    yield client
    client.close()


def produce(client, records, version: int = 9, topic: str = "bounded"):
    return partition_response(
        client.request(ApiKey.PRODUCE, version, produce_body(topic, bytes(records)))
    )


def check_record_error(error, index: int, ts: int, sent_at: tuple[int, int]) -> None:
    """record_errors entry `index`, for a record of timestamp ts: Kafka's message, with the
    range the broker's clock gave (between the clock before and after the request)."""
    assert error.batch_index == index
    m = RANGE_MESSAGE.fullmatch(error.batch_index_error_message)
    assert m, error.batch_index_error_message
    low, high = int(m[3]), int(m[4])
    assert (int(m[1]), int(m[2])) == (ts, index)
    assert high - low == 2 * HOUR
    assert sent_at[0] <= low + HOUR <= sent_at[1]


@pytest.mark.parametrize("codec", [compression.NONE, compression.GZIP, compression.LZ4])
def test_record_out_of_range_behind_an_in_range_header(raw, codec):
    """The header's base (first) and max timestamps are both in range, but the middle record
    is a day old: a v2 record carries a signed delta from the base timestamp, so only reading
    the records finds it."""
    start = now_ms()
    old = start - DAY
    records = batch([start, old, start + 10], compression_type=codec)
    header = rb.read_header(records)
    assert (header.base_timestamp, header.max_timestamp) == (start, start + 10)
    p = produce(raw, records)
    sent_at = (start, now_ms())
    assert p.error_code == ErrorCode.INVALID_TIMESTAMP
    assert p.error_message == "One or more records have been rejected due to invalid timestamp"
    assert (p.base_offset, p.log_append_time_ms, p.log_start_offset) == (-1, -1, 0)
    assert len(p.record_errors) == 1
    check_record_error(p.record_errors[0], 1, old, sent_at)

    # Nothing of it was appended: the next good batch (negative deltas within range) is at 0.
    now = now_ms()
    p = produce(raw, batch([now, now - 1000, now + 1000], compression_type=codec))
    assert (p.error_code, p.base_offset, list(p.record_errors)) == (0, 0, [])


def test_every_offending_record_is_named_and_old_versions_get_the_code(raw):
    start = now_ms()
    timestamps = [start + DAY, start, start - DAY, rb.NO_TIMESTAMP, start - 2 * DAY]
    p = produce(raw, batch(timestamps), version=8)  # non-flexible record_errors
    sent_at = (start, now_ms())
    assert p.error_code == ErrorCode.INVALID_TIMESTAMP
    assert [e.batch_index for e in p.record_errors] == [0, 2, 4]  # -1: no timestamp, unchecked
    for error in p.record_errors:
        check_record_error(error, error.batch_index, timestamps[error.batch_index], sent_at)

    p = produce(raw, batch([start - DAY]), version=7)  # no record_errors before v8
    assert p.error_code == ErrorCode.INVALID_TIMESTAMP


def test_upper_limit_alone_is_decided_by_the_header(raw):
    """With only after.max.ms set, the header's max timestamp decides: an old record passes
    (no lower limit), a future one is refused, and Kafka prints the unlimited end of the range
    as Java's long arithmetic leaves it (now - Long.MAX)."""
    now = now_ms()
    p = produce(raw, batch([now, now - 365 * DAY]), topic="future_only")
    assert (p.error_code, p.base_offset) == (0, 0)
    p = produce(raw, batch([now, now + DAY]), topic="future_only")
    assert p.error_code == ErrorCode.INVALID_TIMESTAMP
    [error] = p.record_errors
    assert error.batch_index == 1
    m = RANGE_MESSAGE.fullmatch(error.batch_index_error_message)
    assert m and int(m[3]) < -(1 << 62) and int(m[4]) > now


def test_refused_batch_leaves_the_idempotent_sequence_alone(raw):
    """Validation comes before the producer-state check, as in Kafka: the refused sequence 0 is
    still the one expected next."""
    pid, epoch = init_producer_id(raw)
    idem = {"producer_id": pid, "producer_epoch": epoch, "base_sequence": 0}
    now = now_ms()
    p = produce(raw, batch([now, now - DAY], **idem))
    assert p.error_code == ErrorCode.INVALID_TIMESTAMP
    p = produce(raw, batch([now, now], **idem))
    assert (p.error_code, p.base_offset) == (0, 0)


def test_quick_pass_agrees_with_decoding_every_record():
    """The inlined walk over record lengths and timestamp-delta signs (one-, two- and three-byte
    varints, each codec) names exactly the records a full decode finds out of range."""
    rng = random.Random(937)
    now, limit = 1_700_000_000_000, 10**6
    for _ in range(200):
        timestamps = [now + rng.choice([rng.randint(-60, 60), rng.randint(-3 * limit, 3 * limit)])
                      for _ in range(rng.randint(1, 30))]  # fmt: skip
        records = batch(timestamps, compression_type=rng.choice([0, 1, 2, 3, 4]),
                        sizes=[rng.choice([0, 50, 63, 64, 300, 20000]) for _ in timestamps])  # fmt: skip
        header = rb.read_header(records)
        decoded = [r.timestamp for r in rb.decode_records(records)]
        assert decoded == timestamps
        for before, after in ((limit, limit), (limit, rb.LONG_MAX), (rb.LONG_MAX, limit)):
            found = [i for i, _ in rb.timestamp_errors(records, 0, header, now, before, after)]
            expected = [i for i, ts in enumerate(timestamps)
                        if (before != rb.LONG_MAX and ts < now - before)
                        or (after != rb.LONG_MAX and ts > now + after)]  # fmt: skip
            assert found == expected

"""Retention against a running broker, driven by real clients (kafka-python, confluent-kafka)."""

from __future__ import annotations

import os
import time

import pytest
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import OffsetOutOfRangeError
from storage_helpers import broker_log, set_topic_configs, wait_for

HOUR = 3_600_000
FAST = {"log.retention.check.interval.ms": 50, "log.segment.delete.delay.ms": 0}


def create(b, topic, **configs):
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
    try:
        admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={k: str(v) for k, v in configs.items()})]
        )
    finally:
        admin.close()


def produce(b, topic, n, *, timestamp_ms=None, size=100, start=0):
    """n records, one batch each (each send waits), so segments fill predictably."""
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, linger_ms=0)
    offsets = [
        producer.send(topic, key=b"k%d" % i, value=b"v" * size, timestamp_ms=timestamp_ms)
        .get(10)
        .offset
        for i in range(start, start + n)
    ]
    producer.close()
    return offsets


def log_files(lg):
    return sorted(n for n in os.listdir(lg.dir) if n.endswith(".log"))


def state(b, lg):
    return b.call(lambda: (lg.log_start_offset, lg.log_end_offset, [s.base_offset for s in lg.segments]))  # fmt: skip


def test_time_retention_deletes_old_segments(make_broker):
    b = make_broker(FAST)
    create(b, "aged", **{"segment.bytes": 1024, "retention.ms": HOUR})
    old = int(time.time() * 1000) - 2 * HOUR
    produce(b, "aged", 20, timestamp_ms=old)
    fresh = produce(b, "aged", 4, start=20)
    lg = broker_log(b, "aged")
    wait_for(lambda: state(b, lg)[0] > 0, what="the log start offset to move")
    start, end, bases = state(b, lg)
    assert 0 < start <= fresh[0] and start == bases[0]  # whole segments went
    assert end == fresh[-1] + 1  # the active segment and the fresh records stay
    wait_for(lambda: log_files(lg) == [f"{base:020d}.log" for base in bases], what="files gone")
    consumer = KafkaConsumer("aged", bootstrap_servers=b.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)  # fmt: skip
    got = []
    for m in consumer:
        got.append(m.offset)
        if m.offset == end - 1:
            break
    consumer.close()
    assert got == list(range(start, end))


def test_all_expired_rolls_the_active_segment(make_broker):
    b = make_broker(FAST)
    create(b, "expired", **{"segment.bytes": 1024, "retention.ms": HOUR})
    produce(b, "expired", 8, timestamp_ms=int(time.time() * 1000) - 2 * HOUR)
    lg = broker_log(b, "expired")
    wait_for(lambda: state(b, lg)[0] == 8, what="every expired segment to go")
    start, end, bases = state(b, lg)
    assert (start, end, bases) == (8, 8, [8])  # a new empty active segment at the LEO
    assert produce(b, "expired", 1) == [8]


def test_size_retention(make_broker):
    b = make_broker(FAST)
    create(b, "sized", **{"segment.bytes": 1024, "retention.bytes": 2048})
    produce(b, "sized", 40)
    lg = broker_log(b, "sized")

    def trimmed():
        return b.call(lambda: lg.size - lg.segments[0].size < 2048 and lg.log_start_offset > 0)

    wait_for(trimmed, what="retention.bytes")
    start, end, bases = state(b, lg)
    assert start == bases[0] and end == 40
    assert b.call(lambda: lg.size) >= 2048  # never below the limit by more than a segment


@pytest.mark.parametrize("reset", ["earliest", "latest", "none"])
def test_consumer_behind_the_log_start_gets_offset_out_of_range(make_broker, reset):
    b = make_broker(FAST)
    create(b, "behind", **{"segment.bytes": 1024, "retention.ms": HOUR})
    produce(b, "behind", 12, timestamp_ms=int(time.time() * 1000) - 2 * HOUR)
    produce(b, "behind", 3, start=12)
    lg = broker_log(b, "behind")
    wait_for(lambda: state(b, lg)[0] > 0, what="retention")
    start, end, _ = state(b, lg)
    tp = TopicPartition("behind", 0)
    consumer = KafkaConsumer(bootstrap_servers=b.bootstrap_servers, auto_offset_reset=reset,
                             consumer_timeout_ms=2000)  # fmt: skip
    consumer.assign([tp])
    consumer.seek(tp, 0)  # below the log start offset
    if reset == "none":
        with pytest.raises(OffsetOutOfRangeError):
            consumer.poll(timeout_ms=5000)
    else:
        got = []
        deadline = time.monotonic() + 10
        # earliest: records from the log start; latest: a position at the end, no records.
        while time.monotonic() < deadline and not (
            got if reset == "earliest" else consumer.position(tp) not in (0, None)
        ):
            got.extend(m.offset for m in consumer.poll(timeout_ms=200).get(tp, []))
        if reset == "earliest":
            assert got[0] == start
        else:
            assert consumer.position(tp) == end and got == []
    consumer.close()


def test_librdkafka_resets_to_the_log_start(make_broker):
    b = make_broker(FAST)
    create(b, "behind2", **{"segment.bytes": 1024, "retention.ms": HOUR})
    produce(b, "behind2", 12, timestamp_ms=int(time.time() * 1000) - 2 * HOUR)
    produce(b, "behind2", 3, start=12)
    lg = broker_log(b, "behind2")
    wait_for(lambda: state(b, lg)[0] > 0, what="retention")
    start, end, _ = state(b, lg)
    c = Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "rk",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    c.assign([CTopicPartition("behind2", 0, 1)])  # offset 1: deleted
    got = []
    deadline = time.monotonic() + 15
    while len(got) < end - start and time.monotonic() < deadline:
        msg = c.poll(0.2)
        if msg is not None and not msg.error():
            got.append(msg.offset())
    c.close()
    assert got == list(range(start, end))


def test_retention_config_change_applies_live(make_broker):
    b = make_broker(FAST)
    create(b, "live", **{"segment.bytes": 1024})  # retention.ms: the broker's 7 days
    produce(b, "live", 12, timestamp_ms=int(time.time() * 1000) - 2 * HOUR)
    produce(b, "live", 2, start=12)
    lg = broker_log(b, "live")
    retention = b.broker.log_manager.retention
    checks = b.call(lambda: retention.checks)
    wait_for(lambda: b.call(lambda: retention.checks) >= checks + 3, what="retention checks")
    assert state(b, lg)[0] == 0  # two hours old is within seven days
    set_topic_configs(b, "live", {"retention.ms": str(HOUR)})
    wait_for(lambda: state(b, lg)[0] > 0, what="the new retention.ms")
    set_topic_configs(b, "live", {"cleanup.policy": "compact"})  # no time retention any more
    produce(b, "live", 12, timestamp_ms=int(time.time() * 1000) - 2 * HOUR, start=14)
    start = state(b, lg)[0]
    checks = b.call(lambda: retention.checks)
    wait_for(lambda: b.call(lambda: retention.checks) >= checks + 3, what="retention checks")
    assert state(b, lg)[0] == start

"""A consumer tailing a partition while a producer writes to it and segments keep rolling."""

from __future__ import annotations

import threading
import time

import pytest

N = 6000


def confluent_reader(bootstrap: str):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tail",
                         "enable.auto.commit": False, "broker.address.family": "v4",
                         "fetch.wait.max.ms": 20, "fetch.max.bytes": 100_000,
                         "message.max.bytes": 100_000, "max.partition.fetch.bytes": 30_000})  # fmt: skip
    consumer.assign([TopicPartition("tail", 0, 0)])

    def poll():
        msg = consumer.poll(0.5)
        if msg is None:
            return []
        assert msg.error() is None, msg.error()
        return [(msg.offset(), msg.value())]

    return poll, consumer.close


def kafka_python_reader(bootstrap: str):
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=20,
                             fetch_max_bytes=100_000, max_partition_fetch_bytes=30_000)  # fmt: skip
    consumer.assign([TopicPartition("tail", 0)])
    consumer.seek(TopicPartition("tail", 0), 0)

    def poll():
        batches = consumer.poll(timeout_ms=500)
        return [(r.offset, r.value) for records in batches.values() for r in records]

    return poll, consumer.close


@pytest.mark.parametrize("reader", [confluent_reader, kafka_python_reader])
def test_consumer_tails_a_rolling_log(make_broker, reader):
    from confluent_kafka import Producer

    b = make_broker({"log.segment.bytes": 40_000, "log.index.interval.bytes": 1000})
    produced = threading.Event()
    errors: list = []

    def produce() -> None:
        producer = Producer({"bootstrap.servers": b.bootstrap_servers, "linger.ms": 2,
                             "batch.num.messages": 50, "broker.address.family": "v4"})  # fmt: skip
        for i in range(N):
            while True:
                try:
                    producer.produce("tail", value=b"%06d-" % i + b"z" * (i % 200),
                                     on_delivery=lambda err, _m: err and errors.append(err))  # fmt: skip
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        producer.flush(30)
        produced.set()

    # The topic exists before the consumer starts at offset 0 and follows the writes.
    Producer({"bootstrap.servers": b.bootstrap_servers}).list_topics("tail", timeout=10)
    poll, close = reader(b.bootstrap_servers)
    writer = threading.Thread(target=produce)
    writer.start()
    seen: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(seen) < N and time.monotonic() < deadline:
            for offset, value in poll():
                assert offset == len(seen)
                seen.append(value[:6])
    finally:
        close()
        writer.join(60)
    assert produced.is_set() and not errors
    assert seen == [b"%06d" % i for i in range(N)]
    log = b.call(lambda: b.broker.replica_manager.get("tail", 0).log)
    assert len(log.segments) > 5  # the reads crossed many rolls

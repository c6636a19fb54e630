"""Log configs changed at runtime (IncrementalAlterConfigs) take effect on the next append."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import MessageSizeTooLargeError
from storage_helpers import broker_log, set_topic_configs


def test_segment_size_timestamp_type_and_max_message_bytes_change_live(make_broker):
    b = make_broker()
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
    admin.create_topics([NewTopic("tuned", 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, linger_ms=0,
                             max_request_size=1 << 20)  # fmt: skip
    lg = broker_log(b, "tuned")

    def send(value, ts=1_000):
        return producer.send("tuned", value=value, timestamp_ms=ts).get(10)

    for _ in range(10):
        send(b"x" * 500)
    assert b.call(lambda: len(lg.segments)) == 1
    set_topic_configs(b, "tuned", {"segment.bytes": "2000"})
    for _ in range(10):
        send(b"x" * 500)
    assert b.call(lambda: len(lg.segments)) >= 3  # rolls at the new size

    set_topic_configs(b, "tuned", {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    md = send(b"stamped", ts=1_000)
    assert md.timestamp >= before  # the broker's clock, not the producer's 1000

    set_topic_configs(b, "tuned", {"max.message.bytes": "1000"})
    with pytest.raises(MessageSizeTooLargeError):
        send(b"y" * 2000)
    producer.close()
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers)
    assert send(b"small").offset == md.offset + 1
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=b.bootstrap_servers, consumer_timeout_ms=10000)
    tp = TopicPartition("tuned", 0)
    consumer.assign([tp])
    consumer.seek(tp, md.offset)
    got = next(iter(consumer))
    consumer.close()
    assert got.value == b"stamped" and got.timestamp >= before and got.timestamp_type == 1

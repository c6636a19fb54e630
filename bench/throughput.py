"""Produce and consume throughput with real clients (confluent-kafka, kafka-python, aiokafka).

A produce run sends fixed-size random values (no key) for `seconds` (or until `max_bytes`),
then flushes; the time includes the flush, and the count is checked against the partitions'
high watermarks. A consume run reads a topic from the beginning of every partition until it
has every record, timed from the first fetch to the last record.
"""

from __future__ import annotations

import asyncio
import os
import time

CLIENTS = ("confluent", "kafka-python", "aiokafka")


def create_topic(bootstrap: str, topic: str, partitions: int, configs: dict | None = None) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=configs or {})
    admin.create_topics([new], operation_timeout=60)[topic].result(120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions:
            return
    raise RuntimeError(f"{topic} not ready")


def delete_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.delete_topics([topic], operation_timeout=60)[topic].result(60)
    except Exception:
        pass


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                   for p in range(partitions))  # fmt: skip
    finally:
        c.close()


def _values(size: int, n: int = 64) -> list[bytes]:
    # A few distinct random values, reused: cheap to generate, incompressible.
    return [os.urandom(size) for _ in range(n)]


def produce(client: str, bootstrap: str, topic: str, size: int, acks: str, seconds: float,
            max_bytes: int = 2 << 30, config: dict | None = None) -> dict:  # fmt: skip
    """`config`: extra confluent-kafka settings (security.protocol, sasl.*, ssl.*)."""
    values = _values(size)
    max_msgs = max(1, max_bytes // size)
    if config and client != "confluent":
        raise ValueError("extra client settings are for confluent-kafka only")
    if client == "confluent":
        count, elapsed = _produce_confluent(bootstrap, topic, values, acks, seconds, max_msgs,
                                            config or {})  # fmt: skip
    elif client == "kafka-python":
        count, elapsed = _produce_kafka_python(bootstrap, topic, values, acks, seconds, max_msgs)
    elif client == "aiokafka":
        count, elapsed = asyncio.run(
            _produce_aiokafka(bootstrap, topic, values, acks, seconds, max_msgs)
        )
    else:
        raise ValueError(client)
    return {"msgs": count, "bytes": count * size, "seconds": elapsed}


def _produce_confluent(bootstrap, topic, values, acks, seconds, max_msgs, config=None):
    from confluent_kafka import Producer

    errors: list = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.kbytes": 512 * 1024,
                  "queue.buffering.max.messages": 1_000_000,
                  "error_cb": errors.append, **(config or {})})  # fmt: skip
    n = len(values)
    count = 0
    t0 = time.monotonic()
    end = t0 + seconds
    produce = p.produce
    while count < max_msgs:
        try:
            produce(topic, values[count % n])
        except BufferError:
            p.poll(0.005)
            continue
        count += 1
        if count % 5000 == 0:
            p.poll(0)
            if time.monotonic() > end:
                break
    left = p.flush(120)
    elapsed = time.monotonic() - t0
    if left:
        raise RuntimeError(f"{left} messages not delivered; errors {errors[:3]}")
    return count, elapsed


def _produce_kafka_python(bootstrap, topic, values, acks, seconds, max_msgs):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1 if acks == "1" else "all",
                      linger_ms=5, batch_size=256 * 1024,
                      max_request_size=8 << 20)  # fmt: skip
    n = len(values)
    count = 0
    t0 = time.monotonic()
    end = t0 + seconds
    send = p.send
    while count < max_msgs:
        send(topic, values[count % n])
        count += 1
        if count % 1000 == 0 and time.monotonic() > end:
            break
    p.flush(120)
    elapsed = time.monotonic() - t0
    p.close()
    return count, elapsed


async def _produce_aiokafka(bootstrap, topic, values, acks, seconds, max_msgs):
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1 if acks == "1" else "all",
                         linger_ms=5, max_batch_size=256 * 1024,
                         max_request_size=8 << 20)  # fmt: skip
    await p.start()
    n = len(values)
    count = 0
    t0 = time.monotonic()
    end = t0 + seconds
    try:
        while count < max_msgs:
            await p.send(topic, values[count % n])
            count += 1
            if count % 1000 == 0 and time.monotonic() > end:
                break
        await p.flush()
        elapsed = time.monotonic() - t0
    finally:
        await p.stop()
    return count, elapsed


def consume(client: str, bootstrap: str, topic: str, partitions: int, count: int,
            size: int, timeout: float = 300, config: dict | None = None) -> dict:  # fmt: skip
    if config and client != "confluent":
        raise ValueError("extra client settings are for confluent-kafka only")
    if client == "confluent":
        got, elapsed = _consume_confluent(bootstrap, topic, partitions, count, timeout,
                                          config or {})  # fmt: skip
    elif client == "kafka-python":
        got, elapsed = _consume_kafka_python(bootstrap, topic, partitions, count, timeout)
    elif client == "aiokafka":
        got, elapsed = asyncio.run(_consume_aiokafka(bootstrap, topic, partitions, count, timeout))
    else:
        raise ValueError(client)
    return {"msgs": got, "bytes": got * size, "seconds": elapsed}


def _consume_confluent(bootstrap, topic, partitions, count, timeout, config=None):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 8 << 20,
                  "queued.max.messages.kbytes": 256 * 1024, **(config or {})})  # fmt: skip
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = 0
    t0 = time.monotonic()
    deadline = time.monotonic() + timeout
    try:
        while got < count and time.monotonic() < deadline:
            # Partition-EOF events are off by default, so every item is a record.
            # Ask for no more than remain: consume(n) waits until it has n or times out.
            got += len(c.consume(num_messages=min(10000, count - got), timeout=1.0))
        return got, time.monotonic() - t0
    finally:
        c.close()


def _consume_kafka_python(bootstrap, topic, partitions, count, timeout):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      fetch_max_bytes=64 << 20, max_partition_fetch_bytes=8 << 20)  # fmt: skip
    c.assign([TopicPartition(topic, p) for p in range(partitions)])
    c.seek_to_beginning()
    got = 0
    t0 = time.monotonic()
    deadline = time.monotonic() + timeout
    try:
        while got < count and time.monotonic() < deadline:
            batch = c.poll(timeout_ms=1000, max_records=10000)
            got += sum(len(v) for v in batch.values())
        return got, time.monotonic() - t0
    finally:
        c.close()


async def _consume_aiokafka(bootstrap, topic, partitions, count, timeout):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         fetch_max_bytes=64 << 20, max_partition_fetch_bytes=8 << 20)  # fmt: skip
    await c.start()
    c.assign([TopicPartition(topic, p) for p in range(partitions)])
    await c.seek_to_beginning()
    got = 0
    t0 = time.monotonic()
    deadline = time.monotonic() + timeout
    try:
        while got < count and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=1000, max_records=10000)
            got += sum(len(v) for v in batch.values())
        return got, time.monotonic() - t0
    finally:
        await c.stop()

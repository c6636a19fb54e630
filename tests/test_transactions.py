"""Transactions with real clients: confluent-kafka (librdkafka), kafka-python and aiokafka
producers commit and abort; read_committed consumers see exactly the committed records,
read_uncommitted ones see everything; an open transaction holds read_committed consumers at
the LSO; a zombie producer is fenced."""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from helpers import RawClient
from storage_helpers import wait_for
from test_transactions_protocol import FAST, create, describe

COMMITTED = [b"committed-%d" % i for i in range(3)] + [b"final"]
ABORTED = [b"aborted-%d" % i for i in range(3)]


@pytest.fixture
def b(make_broker):
    return make_broker(FAST)


def make_topic(b, name: str, partitions: int = 2) -> str:
    c = RawClient(b.port)
    try:
        create(c, name, partitions)
    finally:
        c.close()
    return name


def read_all(bootstrap: str, topic: str, count: int, committed: bool, partitions=(0, 1),
             settle: float = 0.3) -> list[bytes]:  # fmt: skip
    """Every record of the topic as a confluent-kafka consumer of that isolation level sees it:
    `count` of them, then nothing more for `settle` seconds."""
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False,
        "isolation.level": "read_committed" if committed else "read_uncommitted",
    })  # fmt: skip
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < count and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append(m.value())
        quiet = time.monotonic() + settle
        while time.monotonic() < quiet:  # nothing beyond what was expected
            m = c.poll(0.05)
            if m is not None and m.error() is None:
                got.append(m.value())
    finally:
        c.close()
    return got


def check_isolation(b, topic: str) -> None:
    committed = read_all(b.bootstrap_servers, topic, len(COMMITTED), committed=True)
    assert sorted(committed) == sorted(COMMITTED)
    everything = read_all(
        b.bootstrap_servers, topic, len(COMMITTED) + len(ABORTED), committed=False
    )
    assert sorted(everything) == sorted(COMMITTED + ABORTED)


def test_confluent_commit_and_abort(b):
    topic = make_topic(b, "tx-confluent")
    p = Producer({"bootstrap.servers": b.bootstrap_servers, "transactional.id": "confluent-1",
                  "linger.ms": 5})  # fmt: skip
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, COMMITTED[i], partition=i % 2)
    p.commit_transaction(30)
    p.begin_transaction()
    for i, v in enumerate(ABORTED):
        p.produce(topic, v, partition=i % 2)
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, b"final", partition=1)
    p.commit_transaction(30)
    check_isolation(b, topic)


def test_kafka_python_commit_and_abort(b):
    from kafka import KafkaProducer

    topic = make_topic(b, "tx-kafka-python")
    p = KafkaProducer(bootstrap_servers=b.bootstrap_servers, transactional_id="kp-1")
    p.init_transactions()
    p.begin_transaction()
    for i in range(3):
        p.send(topic, COMMITTED[i], partition=i % 2)
    p.commit_transaction()
    p.begin_transaction()
    for i, v in enumerate(ABORTED):
        p.send(topic, v, partition=i % 2)
    p.flush()
    p.abort_transaction()
    p.begin_transaction()
    p.send(topic, b"final", partition=1)
    p.commit_transaction()
    p.close()
    check_isolation(b, topic)


def test_aiokafka_commit_and_abort(b):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = make_topic(b, "tx-aiokafka")

    async def run() -> list[bytes]:
        p = AIOKafkaProducer(bootstrap_servers=b.bootstrap_servers, transactional_id="aio-1")
        await p.start()
        try:
            async with p.transaction():
                for i in range(3):
                    await p.send(topic, COMMITTED[i], partition=i % 2)
            await p.begin_transaction()
            for i, v in enumerate(ABORTED):
                await p.send(topic, v, partition=i % 2)
            await p.flush()
            await p.abort_transaction()
            async with p.transaction():
                await p.send(topic, b"final", partition=1)
        finally:
            await p.stop()
        # aiokafka's own read_committed consumer (it drops aborted records itself).
        c = AIOKafkaConsumer(bootstrap_servers=b.bootstrap_servers, auto_offset_reset="earliest",
                             isolation_level="read_committed", enable_auto_commit=False)  # fmt: skip
        await c.start()
        try:
            from aiokafka import TopicPartition as TP

            c.assign([TP(topic, 0), TP(topic, 1)])
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < len(COMMITTED) and time.monotonic() < deadline:
                for msgs in (await c.getmany(timeout_ms=200)).values():
                    got.extend(m.value for m in msgs)
            for msgs in (await c.getmany(timeout_ms=300)).values():
                got.extend(m.value for m in msgs)
            return got
        finally:
            await c.stop()

    assert sorted(asyncio.run(run())) == sorted(COMMITTED)
    check_isolation(b, topic)


def test_open_transaction_holds_read_committed_at_the_lso(b):
    topic = make_topic(b, "tx-lso", 1)
    plain = Producer({"bootstrap.servers": b.bootstrap_servers})
    plain.produce(topic, b"before", partition=0)
    plain.flush(30)
    p = Producer({"bootstrap.servers": b.bootstrap_servers, "transactional.id": "lso-1"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"in-txn", partition=0)
    p.flush(30)
    plain.produce(topic, b"after", partition=0)  # not transactional, but behind the open one
    plain.flush(30)
    c = Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "lso",
                  "isolation.level": "read_committed"})  # fmt: skip
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 1)
        assert read_all(b.bootstrap_servers, topic, 1, committed=True, partitions=(0,)) == [
            b"before"
        ]
        p.commit_transaction(30)
        wait_for(lambda: c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 4),
                 what="the LSO past the marker")  # fmt: skip
        assert read_all(b.bootstrap_servers, topic, 3, committed=True, partitions=(0,)) == [
            b"before", b"in-txn", b"after",
        ]  # fmt: skip
    finally:
        c.close()


def test_zombie_producer_is_fenced(b):
    topic = make_topic(b, "tx-zombie", 1)
    conf = {"bootstrap.servers": b.bootstrap_servers, "transactional.id": "zombie-1"}
    zombie = Producer(conf)
    zombie.init_transactions(30)
    zombie.begin_transaction()
    zombie.produce(topic, b"from-zombie", partition=0)
    zombie.flush(30)
    successor = Producer(conf)
    successor.init_transactions(30)  # fences the zombie and aborts its transaction
    with pytest.raises(KafkaException) as e:
        zombie.commit_transaction(30)
    assert e.value.args[0].fatal()
    successor.begin_transaction()
    successor.produce(topic, b"from-successor", partition=0)
    successor.commit_transaction(30)
    c = RawClient(b.port)
    try:
        state = describe(c, "zombie-1")
        assert (state.transaction_state, state.producer_epoch) == ("CompleteCommit", 2)
    finally:
        c.close()
    got = read_all(b.bootstrap_servers, topic, 1, committed=True, partitions=(0,))
    assert got == [b"from-successor"]

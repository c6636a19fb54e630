"""Log compaction against a running broker, with real clients producing and consuming."""

from __future__ import annotations

import os
import random
import time

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from storage_helpers import broker_log, set_topic_configs, wait_for

from protocol import records as rb

FAST = {"log.cleaner.backoff.ms": 50, "log.segment.delete.delay.ms": 0}
COMPACT = {
    "cleanup.policy": "compact",
    "segment.bytes": 2048,
    "min.cleanable.dirty.ratio": 0.01,
    "delete.retention.ms": 1000,
}


def create(b, topic, partitions=1, **configs):
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
    try:
        admin.create_topics([
            NewTopic(topic, partitions, 1, topic_configs={k: str(v) for k, v in configs.items()})
        ])  # fmt: skip
    finally:
        admin.close()


def updates(n, keys, seed, tombstone_every=23):
    """(key, value) pairs: many updates to few keys, some tombstones, one key deleted last."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        key = b"key-%d" % rnd.randrange(keys)
        out.append((key, None if i % tombstone_every == 0 else b"value-%d-" % i + b"x" * 40))
    out.append((b"key-0", None))
    return out


def roll_and_wait_for_cleaning(b, topic, partition=0):
    """Roll the active segment (the cleaner never touches it), then wait until all is clean."""
    lg = broker_log(b, topic, partition)
    cleaner = b.broker.log_manager.cleaner
    leo = b.call(lambda: lg.roll().base_offset)
    b.call(cleaner.wakeup)
    wait_for(lambda: b.call(lambda: cleaner.checkpoint(lg) == leo), what=f"{topic} cleaned")
    return lg


def expected_view(sent, tombstones=True):
    """offset -> (key, value) of the newest record per key."""
    newest = {}
    for off, (key, value) in sorted(sent.items()):
        newest[key] = (off, value)
    return {
        off: (key, value) for key, (off, value) in newest.items() if tombstones or value is not None
    }


def consume_all(b, topic, end, partition=0):
    consumer = KafkaConsumer(bootstrap_servers=b.bootstrap_servers, consumer_timeout_ms=10000)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = {}
    while consumer.position(tp) < end:
        for msgs in consumer.poll(timeout_ms=500).values():
            for m in msgs:
                got[m.offset] = (m.key, m.value)
    consumer.close()
    return got


def on_disk_tombstones(b, lg):
    def scan():
        count = 0
        for seg in lg.segments:
            for pos, header in seg.iter_batches():
                data = rb_read(seg, pos, header)
                count += sum(r.value is None for r in rb.decode_records(data))
        return count

    return b.call(scan)


def rb_read(seg, pos, header):
    return os.pread(seg.fd, header.size, pos)


def produce_updates(b, topic, pairs):
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, linger_ms=5)
    futures = [(producer.send(topic, key=k, value=v), (k, v)) for k, v in pairs]
    producer.flush()
    sent = {f.get(10).offset: kv for f, kv in futures}
    producer.close()
    return sent


def test_compaction_keeps_the_newest_value_per_key(make_broker):
    b = make_broker(FAST)
    create(b, "profiles", **{**COMPACT, "delete.retention.ms": 3_600_000})
    sent = produce_updates(b, "profiles", updates(1500, 8, 1))
    end = max(sent) + 1
    roll_and_wait_for_cleaning(b, "profiles")
    # Exactly the newest record per key, at its original offset; tombstones kept for now.
    view = expected_view(sent)
    assert any(v is None for _, v in view.values())
    assert consume_all(b, "profiles", end) == view
    # aiokafka reads the compacted log (gaps, empty batches) to the same end.
    assert asyncio_consume(b, "profiles", end) == view


def test_tombstones_go_after_delete_retention(make_broker):
    b = make_broker(FAST)
    create(b, "deleted", **COMPACT)  # delete.retention.ms=1000
    sent = produce_updates(b, "deleted", updates(600, 8, 2, tombstone_every=5))
    end = max(sent) + 1
    lg = roll_and_wait_for_cleaning(b, "deleted")
    # The cleaner comes back by itself once the tombstones' delete horizon has passed.
    wait_for(lambda: on_disk_tombstones(b, lg) == 0, what="tombstones to go")
    view = expected_view(sent, tombstones=False)
    assert b"key-0" not in {k for k, _ in view.values()}
    assert consume_all(b, "deleted", end) == view


def asyncio_consume(b, topic, end):
    import asyncio

    async def run():
        consumer = AIOKafkaConsumer(bootstrap_servers=b.bootstrap_servers,
                                    auto_offset_reset="earliest")  # fmt: skip
        await consumer.start()
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        got = {}
        try:
            async with asyncio.timeout(20):
                while await consumer.position(tp) < end:
                    for msgs in (await consumer.getmany(timeout_ms=500)).values():
                        for m in msgs:
                            got[m.offset] = (m.key, m.value)
        finally:
            await consumer.stop()
        return got

    return asyncio.run(run())


CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def aio_produce(b, topic, partition, codec, pairs):
    """Send pairs in batches of about 20 with aiokafka; returns offset -> (key, value)."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=b.bootstrap_servers,
                                    compression_type=codec)  # fmt: skip
        await producer.start()
        sent = {}
        try:
            for i in range(0, len(pairs), 20):
                chunk = pairs[i : i + 20]
                batch = producer.create_batch()
                for k, v in chunk:
                    batch.append(key=k, value=v, timestamp=None)
                base = (await (await producer.send_batch(batch, topic, partition=partition))).offset
                for j, pair in enumerate(chunk):
                    sent[base + j] = pair
        finally:
            await producer.stop()
        return sent

    return asyncio.run(run())


def test_compressed_batches_are_compacted_with_their_codec(make_broker):
    b = make_broker(FAST)
    create(b, "zipped", partitions=len(CODECS), **{**COMPACT, "delete.retention.ms": 3_600_000})
    # aiokafka compresses with cramjam; librdkafka would send lz4 uncompressed to a broker
    # without FindCoordinator (it infers lz4 support from that API).
    sent = {
        p: aio_produce(b, "zipped", p, codec, updates(600, 6, p)) for p, codec in enumerate(CODECS)
    }
    before = {p: codecs_by_batch(b, broker_log(b, "zipped", p)) for p in range(len(CODECS))}
    for partition in range(len(CODECS)):
        roll_and_wait_for_cleaning(b, "zipped", partition)
    consumer = Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "z",
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([CTopicPartition("zipped", p, OFFSET_BEGINNING) for p in range(len(CODECS))])
    got = {p: {} for p in range(len(CODECS))}
    ends = {p: max(sent[p]) for p in sent}
    deadline = time.monotonic() + 20
    while any(max(got[p], default=-1) < ends[p] for p in got) and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            got[msg.partition()][msg.offset()] = (msg.key(), msg.value())
    consumer.close()
    for partition, codec in enumerate(CODECS.values()):
        assert got[partition] == expected_view(sent[partition])
        after = codecs_by_batch(b, broker_log(b, "zipped", partition))
        assert all(before[partition][base][0] == c for base, (c, _) in after.items())
        thinned = [base for base, (c, partial) in after.items() if c == codec and partial]
        assert thinned, (partition, after)  # rebuilt with fewer records, recompressed


def codecs_by_batch(b, lg):
    """base offset -> (codec, records removed) of each batch holding records."""
    return b.call(
        lambda: {
            h.base_offset: (h.compression, h.record_count < h.last_offset_delta + 1)
            for s in lg.segments
            for _, h in s.iter_batches()
            if h.record_count
        }
    )


def test_cleanup_policy_change_applies_live(make_broker):
    b = make_broker(FAST)
    create(b, "switch", **{"segment.bytes": 2048})
    sent = produce_updates(b, "switch", updates(300, 4, 3))
    lg = broker_log(b, "switch")
    b.call(lambda: lg.roll())
    cleaner = b.broker.log_manager.cleaner
    assert b.call(lambda: cleaner.grab_filthiest()) is None  # delete policy: not the cleaner's
    set_topic_configs(
        b, "switch", {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"}
    )
    wait_for(lambda: b.call(lambda: cleaner.checkpoint(lg)) == max(sent) + 1, what="compaction")
    assert consume_all(b, "switch", max(sent) + 1) == expected_view(sent)


def test_consumer_offsets_is_compacted(make_broker):
    b = make_broker(FAST)
    broker = b.broker
    info = b.call(lambda: broker.ensure_internal_topic("__consumer_offsets", 1, 1))
    assert info is not None
    lg = broker_log(b, "__consumer_offsets")
    assert lg.config.compact  # forced for the offsets topic, whatever it was created with
    part = b.call(lambda: broker.replica_manager.get("__consumer_offsets", 0))
    sent = {}

    def commit(i):
        key = b"\x00\x01" + b"group-%d/topic/0" % (i % 5)
        batch = rb.build_batch([rb.Record(0, int(time.time() * 1000), key, b"offset %d" % i)])
        info = part.append_as_leader(memoryview(batch), 1)
        sent[info.first_offset] = (key, b"offset %d" % i)

    b.call(lambda: [commit(i) for i in range(500)])
    lg.config.values["min.cleanable.dirty.ratio"] = 0.01  # as a busy group would dirty it
    roll_and_wait_for_cleaning(b, "__consumer_offsets")
    kept = b.call(
        lambda: {
            r.offset: (r.key, r.value)
            for s in lg.segments
            for pos, h in s.iter_batches()
            for r in rb.decode_records(rb_read(s, pos, h))
        }  # fmt: skip
    )
    assert kept == expected_view(sent)


@pytest.mark.parametrize("lag", [0, 60_000])
def test_min_compaction_lag_holds_back_recent_segments(make_broker, lag):
    b = make_broker(FAST)
    create(b, f"lagged{lag}", **COMPACT, **{"min.compaction.lag.ms": lag})
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, linger_ms=5)
    for k, v in updates(200, 3, 4):
        producer.send(f"lagged{lag}", key=k, value=v)
    producer.flush()
    producer.close()
    lg = broker_log(b, f"lagged{lag}")
    leo = b.call(lambda: lg.roll().base_offset)
    cleaner = b.broker.log_manager.cleaner
    if lag:
        rounds = b.call(lambda: cleaner.stats.rounds)
        b.call(cleaner.wakeup)
        ltc = b.call(lambda: cleaner.log_to_clean(lg, int(time.time() * 1000)))
        assert ltc.first_uncleanable == ltc.first_dirty == 0 and ltc.cleanable_bytes == 0
        assert b.call(lambda: cleaner.grab_filthiest()) is None
        assert b.call(lambda: cleaner.stats.rounds) == rounds
    else:
        wait_for(lambda: b.call(lambda: cleaner.checkpoint(lg)) == leo, what="compaction")


def test_topic_deleted_while_being_cleaned(make_broker):
    b = make_broker({**FAST, "log.cleaner.io.max.bytes.per.second": 1_000_000})
    cleaner = b.broker.log_manager.cleaner

    def fill():
        create(b, "doomed", **COMPACT)
        producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, linger_ms=5)
        for i in range(600):
            producer.send("doomed", key=b"k%d" % (i % 10), value=b"x" * 1000)
        producer.flush()
        producer.close()
        return broker_log(b, "doomed")

    first = fill()
    wait_for(lambda: b.call(lambda: cleaner.in_progress is first), what="a cleaning under way")
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
    admin.delete_topics(["doomed"])
    admin.close()
    wait_for(lambda: b.call(lambda: cleaner.in_progress is None), what="the round to end")
    assert b.call(lambda: (cleaner.uncleanable, cleaner.checkpoints)) == (set(), {})
    wait_for(lambda: b.call(lambda: b.broker.metadata.topic("doomed") is None), what="deletion")
    second = fill()  # the same name again: cleaned from scratch
    assert second is not first
    roll_and_wait_for_cleaning(b, "doomed")

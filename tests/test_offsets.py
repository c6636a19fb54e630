"""Committed offsets: durability across consumer restart, broker restart and SIGKILL, Kafka's
record format and partitioning in __consumer_offsets, retention expiry, deletion."""

from __future__ import annotations

import os
import struct
import time

from helpers import BrokerProcess
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata
from ports import restartable_port

from protocol.records import decode_records
from pykbroker.coordinator.schema import (
    GroupRecord,
    MemberRecord,
    group_metadata_value,
    parse_group_value,
    parse_key,
    parse_offset_value,
    partition_for,
)
from pykbroker.coordinator.schema import (
    OffsetAndMetadata as StoredOffset,
)
from pykbroker.embedded import EmbeddedBroker

FAST = {"group.initial.rebalance.delay.ms": 0, "group.min.session.timeout.ms": 1000}


def wait_until(cond, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def create_topic(bootstrap: str, name: str, partitions: int, records: int = 0) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, partitions, 1)])
    admin.close()
    if records:
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for i in range(records):
            producer.send(name, value=b"%d" % i, partition=i % partitions)
        producer.flush()
        producer.close()


def committed(bootstrap: str, group: str) -> dict[tuple[str, int], tuple[int, str, int | None]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {
        (tp.topic, tp.partition): (om.offset, om.metadata, om.leader_epoch)
        for tp, om in offsets.items()
    }


def consume(consumer: KafkaConsumer, n: int) -> list:
    out: list = []
    deadline = time.monotonic() + 30
    while len(out) < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=2000, max_records=n - len(out)).values():
            out.extend(records)
    assert len(out) == n, f"consumed {len(out)} of {n}"
    return out


def test_consumer_restart_resumes_from_committed_offsets(make_broker):
    b = make_broker(FAST)
    create_topic(b.bootstrap_servers, "events", 1, records=20)
    kw = dict(bootstrap_servers=b.bootstrap_servers, group_id="g", auto_offset_reset="earliest",
              enable_auto_commit=False)  # fmt: skip
    c1 = KafkaConsumer("events", **kw)
    first = consume(c1, 8)
    c1.commit()
    c1.close()
    c2 = KafkaConsumer("events", **kw)
    rest = consume(c2, 12)
    c2.close()
    assert [r.offset for r in first + rest] == list(range(20))


def test_metadata_and_leader_epoch_round_trip(make_broker):
    b = make_broker(FAST)
    create_topic(b.bootstrap_servers, "t", 2)
    c = KafkaConsumer(bootstrap_servers=b.bootstrap_servers, group_id="simple")
    c.assign([TopicPartition("t", 0), TopicPartition("t", 1)])
    c.commit({TopicPartition("t", 0): OffsetAndMetadata(5, "checkpoint-5", 3)})
    # An uncommitted partition has no offset (-1 on the wire).
    assert c.committed(TopicPartition("t", 1)) is None
    assert c.committed(TopicPartition("t", 0)) == 5
    c.close()
    assert committed(b.bootstrap_servers, "simple") == {("t", 0): (5, "checkpoint-5", 3)}


def test_commits_and_groups_survive_broker_restart(tmp_path):
    data = str(tmp_path / "data")
    with EmbeddedBroker(data_dir=data, overrides=FAST) as b:
        create_topic(b.bootstrap_servers, "t", 4, records=40)
        c = KafkaConsumer("t", bootstrap_servers=b.bootstrap_servers, group_id="g",
                          auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
        consume(c, 40)
        c.commit()
        c.close()
        before = committed(b.bootstrap_servers, "g")
        generation = b.call(lambda: b.broker.group_coordinator.groups["g"].generation_id)
    assert sorted(v[0] for v in before.values()) == [10, 10, 10, 10]
    with EmbeddedBroker(data_dir=data, overrides=FAST) as b:
        assert committed(b.bootstrap_servers, "g") == before
        group = b.call(lambda: b.broker.group_coordinator.groups["g"])
        assert (group.state.value, group.protocol_type, group.generation_id) == (
            "Empty", "consumer", generation,
        )  # fmt: skip
        # A consumer of the group continues where it left off: nothing is read again.
        create_topic(b.bootstrap_servers, "unused", 1)
        producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers)
        producer.send("t", value=b"after-restart", partition=2)
        producer.flush()
        c = KafkaConsumer("t", bootstrap_servers=b.bootstrap_servers, group_id="g",
                          auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
        [record] = consume(c, 1)
        assert (record.partition, record.offset, record.value) == (2, 10, b"after-restart")
        c.close()


def test_acknowledged_commits_survive_sigkill(tmp_path):
    """Every commit the broker acknowledged is there after SIGKILL, including an active group,
    whose consumer carries on through the restart without reading anything twice."""
    data = str(tmp_path / "data")
    port = restartable_port()
    broker = BrokerProcess(data, FAST, port=port).start()
    bootstrap = broker.bootstrap_servers
    consumer = None
    try:
        create_topic(bootstrap, "t", 2, records=10)
        # Many acknowledged simple commits (generation -1, as the admin client makes them).
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        expected = {}
        for i in range(60):
            group, tp = f"simple-{i % 3}", TopicPartition("t", i % 2)
            errors = admin.alter_group_offsets(group, {tp: OffsetAndMetadata(i, f"m{i}", -1)})
            assert [e.errno for e in errors.values()] == [0]
            expected.setdefault(group, {})[("t", i % 2)] = (i, f"m{i}", -1)
        admin.close()
        # An active consumer group mid-stream.
        consumer = KafkaConsumer("t", bootstrap_servers=bootstrap, group_id="live",
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 session_timeout_ms=10000, heartbeat_interval_ms=500)  # fmt: skip
        seen = [(r.partition, r.offset) for r in consume(consumer, 10)]
        consumer.commit()

        broker.kill()  # SIGKILL: no shutdown, no flush; the page cache has the commits
        broker = BrokerProcess(data, FAST, port=port).start()
        for group, offsets in expected.items():
            assert committed(bootstrap, group) == offsets
        assert sorted(v[0] for v in committed(bootstrap, "live").values()) == [5, 5]

        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for i in range(4):
            producer.send("t", value=b"new", partition=i % 2)
        producer.flush()
        producer.close()
        seen += [(r.partition, r.offset) for r in consume(consumer, 4)]
        assert sorted(seen) == sorted({(p, o) for p in (0, 1) for o in range(7)})
    finally:
        if consumer is not None:
            consumer.close(autocommit=False)
        broker.kill()


def test_records_use_kafkas_schemas_and_partitioning(make_broker):
    b = make_broker(FAST)
    create_topic(b.bootstrap_servers, "t", 1)
    c = KafkaConsumer(bootstrap_servers=b.bootstrap_servers, group_id="format-group")
    c.assign([TopicPartition("t", 0)])
    c.commit({TopicPartition("t", 0): OffsetAndMetadata(42, "meta", 9)})
    c.close()
    # Java's String.hashCode: "test" is 3556498, "polygenelubricants" is Integer.MIN_VALUE
    # (whose abs Kafka takes as 0).
    assert partition_for("test", 50) == 3556498 % 50
    assert partition_for("polygenelubricants", 50) == 0
    assert (
        partition_for("é€😀", 7) == (abs(((233 * 31 + 8364) * 31 + 55357) * 31 + 56832) % 2**32) % 7
    )
    index = partition_for("format-group", 50)
    path = os.path.join(b.data_dir, f"__consumer_offsets-{index}", "00000000000000000000.log")
    with open(path, "rb") as f:
        data = f.read()
    assert data, "the commit went to the group's partition"
    [record] = decode_records(data, 0)
    group, topic = b"format-group", b"t"
    assert record.key == (
        struct.pack(">h", 1) + struct.pack(">h", len(group)) + group
        + struct.pack(">h", len(topic)) + topic + struct.pack(">i", 0)
    )  # fmt: skip
    version, offset, epoch, mlen = struct.unpack_from(">hqih", record.value)
    assert (version, offset, epoch, mlen) == (3, 42, 9, 4)
    assert record.value[16:20] == b"meta" and len(record.value) == 28
    assert parse_key(record.key) == ("offset", "format-group", "t", 0)


def test_schema_reads_every_version():
    # OffsetCommitValue v0 (offset, metadata, commit ts) and v4 (flexible, tagged fields).
    v0 = struct.pack(">hqh", 0, 7, 2) + b"ab" + struct.pack(">q", 1000)
    assert parse_offset_value(v0) == StoredOffset(7, -1, "ab", 1000, -1)
    v1 = struct.pack(">hqh", 1, 8, 0) + struct.pack(">qq", 1000, 5000)
    assert parse_offset_value(v1) == StoredOffset(8, -1, "", 1000, 5000)
    v4 = (
        struct.pack(">hqi", 4, 9, 3)
        + bytes([3])
        + b"xy"
        + struct.pack(">q", 2000)
        + bytes([1, 5, 1, 0])
    )
    assert parse_offset_value(v4) == StoredOffset(9, 3, "xy", 2000, -1)
    # GroupMetadataValue: what we write (v3) reads back; v0 (no rebalance timeout) too.
    rec = GroupRecord("consumer", 4, "range", "m1", 123, [
        MemberRecord("m1", "inst", "client", "/127.0.0.1", 300, 10, b"sub", b"asg"),
    ])  # fmt: skip
    assert parse_group_value(group_metadata_value(rec)) == rec

    def s(x: str) -> bytes:
        return struct.pack(">h", len(x)) + x.encode()

    v0g = (struct.pack(">h", 0) + s("consumer") + struct.pack(">i", 2) + s("range") + s("m1")
           + struct.pack(">i", 1) + s("m1") + s("c") + s("/h") + struct.pack(">i", 6000)
           + struct.pack(">i", 1) + b"S" + struct.pack(">i", 1) + b"A")  # fmt: skip
    g = parse_group_value(v0g)
    assert (g.generation, g.leader, g.current_state_timestamp) == (2, "m1", -1)
    assert g.members[0].rebalance_timeout_ms == 6000  # v0: the session timeout served as both
    assert parse_key(struct.pack(">h", 2) + s("grp")) == ("group", "grp")
    assert parse_key(struct.pack(">h", 5) + s("x"))[0] == "unknown"


def test_retention_expires_offsets_of_empty_groups_and_unsubscribed_topics(tmp_path):
    data = str(tmp_path / "data")
    retention_ms = 7 * 24 * 3600 * 1000  # offsets.retention.minutes default: 7 days
    with EmbeddedBroker(data_dir=data, overrides=FAST) as b:
        bootstrap = b.bootstrap_servers
        create_topic(bootstrap, "a", 1)
        create_topic(bootstrap, "b", 1)
        simple = KafkaConsumer(bootstrap_servers=bootstrap, group_id="simple")
        simple.assign([TopicPartition("a", 0)])
        simple.commit({TopicPartition("a", 0): OffsetAndMetadata(1, "", -1)})
        simple.close()
        live = KafkaConsumer("a", bootstrap_servers=bootstrap, group_id="live",
                             enable_auto_commit=False)  # fmt: skip
        wait_until(
            lambda: live.poll(timeout_ms=2000) is not None and live.assignment(), what="assignment"
        )
        live.commit({TopicPartition("a", 0): OffsetAndMetadata(2, "", -1),
                     TopicPartition("b", 0): OffsetAndMetadata(3, "", -1)})  # fmt: skip
        coordinator = b.call(lambda: b.broker.group_coordinator)
        now = int(time.time() * 1000)
        assert b.call(coordinator.expire_offsets, now) == 0  # nothing is old yet
        removed = b.call(coordinator.expire_offsets, now + retention_ms + 60_000)
        # "simple" had no members: its offset expired, and the group with it. "live" is Stable
        # and subscribed to "a": only its offset for "b" expired.
        assert removed == 2
        assert committed(bootstrap, "simple") == {}
        assert committed(bootstrap, "live") == {("a", 0): (2, "", -1)}
        live.close()
        assert b.call(lambda: "simple" in coordinator.groups) is False
    with EmbeddedBroker(data_dir=data, overrides=FAST) as b:
        # The expiry was written as tombstones: it holds after a restart.
        assert committed(b.bootstrap_servers, "simple") == {}
        assert committed(b.bootstrap_servers, "live") == {("a", 0): (2, "", -1)}


def test_deleting_a_topic_or_group_removes_its_offsets(tmp_path):
    data = str(tmp_path / "data")
    with EmbeddedBroker(data_dir=data, overrides=FAST) as b:
        bootstrap = b.bootstrap_servers
        create_topic(bootstrap, "keep", 1)
        create_topic(bootstrap, "drop", 1)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.alter_group_offsets(
            "g",
            {
                TopicPartition("keep", 0): OffsetAndMetadata(1, "", -1),
                TopicPartition("drop", 0): OffsetAndMetadata(2, "", -1),
            },
        )
        admin.alter_group_offsets(
            "doomed", {TopicPartition("keep", 0): OffsetAndMetadata(3, "", -1)}
        )
        admin.delete_topics(["drop"])
        assert committed(bootstrap, "g") == {("keep", 0): (1, "", -1)}
        assert dict(admin.delete_groups(["doomed"])) == {"doomed": "OK"}
        assert committed(bootstrap, "doomed") == {}
        admin.close()
    with EmbeddedBroker(data_dir=data, overrides=FAST) as b:
        assert committed(b.bootstrap_servers, "g") == {("keep", 0): (1, "", -1)}
        assert committed(b.bootstrap_servers, "doomed") == {}
        assert b.call(lambda: sorted(b.broker.group_coordinator.groups)) == ["g"]

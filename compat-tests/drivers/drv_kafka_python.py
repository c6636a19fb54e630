"""kafka-python (3.x) driver of the compatibility matrix. See common.py for the contract."""

from __future__ import annotations

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    FAILOVER_PARTITIONS,
    CheckFailed,
    Context,
    Failover,
    big_value,
    check,
    check_failover,
    compressible,
    deadline_loop,
    log,
    main,
    partition_of,
    pc_records,
)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic  # noqa: E402
from kafka.errors import MessageSizeTooLargeError  # noqa: E402


def producer(ctx: Context, **kw) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=ctx.bootstrap, **kw)


def consumer(ctx: Context, **kw) -> KafkaConsumer:
    kw.setdefault("auto_offset_reset", "earliest")
    kw.setdefault("consumer_timeout_ms", 1000)
    return KafkaConsumer(bootstrap_servers=ctx.bootstrap, **kw)


def read_all(ctx: Context, topic: str, count: int, partitions=None, seconds=30, **kw) -> list:
    """Assign all partitions of `topic` from the beginning and read `count` records."""
    c = consumer(ctx, **kw)
    try:
        if partitions is None:
            for _ in deadline_loop(seconds, f"metadata of {topic}"):
                partitions = c.partitions_for_topic(topic)
                if partitions:
                    break
        c.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        c.seek_to_beginning()
        got: list = []
        for _ in deadline_loop(seconds, f"{count} records from {topic} (got {len(got)})"):
            for records in c.poll(timeout_ms=200).values():
                got.extend(records)
            if len(got) >= count:
                return got
    finally:
        c.close()


def f_metadata(ctx: Context) -> str:
    c = consumer(ctx)
    try:
        version = c.config["api_version"]
        check(version is not None and version >= (0, 11), f"negotiated api_version {version}")
        topic = ctx.topic()
        check(topic in c.topics(), f"{topic} missing from metadata")
        parts = c.partitions_for_topic(topic)
        check(parts == {0, 1, 2}, f"partitions {parts}")
        brokers = c._client.cluster.brokers()
        check(len(brokers) == 1, f"brokers {brokers}")
        b = next(iter(brokers))
        check(b.port == ctx.port, f"advertised port {b.port} != {ctx.port}")
        for p in parts:
            leader = c._client.cluster.leader_for_partition(TopicPartition(topic, p))
            check(leader == b.node_id, f"leader of {p} is {leader}")
        return f"api_version {'.'.join(map(str, version))}"
    finally:
        c.close()


def f_produce_consume(ctx: Context) -> str:
    topic = ctx.topic()
    p = producer(ctx)
    expected = pc_records()
    futures = [p.send(topic, key=k, value=v, headers=h) for k, v, h in expected]
    p.flush()
    offsets = [f.get(10).offset for f in futures]
    check(offsets == list(range(len(expected))), f"produce offsets {offsets}")
    p.close()
    got = read_all(ctx, topic, len(expected))
    for rec, (k, v, h) in zip(got, expected, strict=False):
        check(rec.key == k and rec.value == v, f"record {rec.offset}: {rec.key!r}={rec.value!r}")
        check(list(rec.headers) == h, f"headers of {rec.offset}: {rec.headers}")
        check(rec.timestamp > 0, f"timestamp {rec.timestamp}")
    check([r.offset for r in got] == offsets, "consumed offsets")
    return f"{len(got)} records"


def compression(codec: str):
    def run(ctx: Context) -> str:
        topic = ctx.topic()
        p = producer(ctx, compression_type=codec, linger_ms=20)
        for i in range(200):
            p.send(topic, value=compressible(i))
        p.flush()
        p.close()
        got = read_all(ctx, topic, 200)
        check([r.value for r in got] == [compressible(i) for i in range(200)], "values differ")
        return f"200 records ({codec})"

    return run


def f_ordering(ctx: Context) -> str:
    topic = ctx.topic()
    p = producer(ctx, acks="all", linger_ms=5)
    keys = [f"k{i}".encode() for i in range(16)]
    for seq in range(400):
        p.send(topic, key=keys[seq % 16], value=str(seq).encode())
    p.flush()
    p.close()
    got = read_all(ctx, topic, 400, partitions=range(4))
    return check_ordering(got)


def check_ordering(got) -> str:
    key_partition: dict = {}
    last_seq: dict = {}
    next_offset: dict = {}
    for r in got:
        check(key_partition.setdefault(r.key, r.partition) == r.partition, f"{r.key} split")
        seq = int(r.value)
        check(seq > last_seq.get(r.key, -1), f"key {r.key}: {seq} after {last_seq.get(r.key)}")
        last_seq[r.key] = seq
        check(r.offset == next_offset.get(r.partition, 0), f"offset gap in {r.partition}")
        next_offset[r.partition] = r.offset + 1
    check(len(got) == 400, f"{len(got)} records")
    return f"400 records, 16 keys over {len(next_offset)} partitions"


def group_consumer(ctx: Context, **kw) -> KafkaConsumer:
    return consumer(ctx, group_id=ctx.group, enable_auto_commit=False,
                    session_timeout_ms=6000, heartbeat_interval_ms=500, **kw)  # fmt: skip


# How long one poll() of a group member may wait. kafka-python 3.0.12 loses a rejoin that is
# triggered by a metadata change and outlives one poll() call: its leader assigns before its
# metadata snapshot covers the subscription (always, on the first join), rejoins at once, and
# if that poll's timer expires before SyncGroup is answered, the next poll sees no need to
# rejoin, never collects the finished join, and the member stays unassigned with heartbeats off
# until its session expires (or a commit fails with REBALANCE_IN_PROGRESS). With 200 ms polls
# that happened in ~1 run of 7 on a loaded machine. poll() returns as soon as records arrive,
# so a longer budget costs nothing but gives the rejoin its time, as a real application's
# poll loop (typically 1 s or more) does.
GROUP_POLL_MS = 2000


def poll_until(c: KafkaConsumer, count: int, seconds: float = 30) -> list:
    got: list = []
    for _ in deadline_loop(seconds, f"{count} records (got {len(got)})"):
        for records in c.poll(timeout_ms=GROUP_POLL_MS).values():
            got.extend(records)
        if len(got) >= count:
            return got


def f_groups_commit_resume(ctx: Context) -> str:
    topic = ctx.topic()
    p = producer(ctx)
    for i in range(30):
        p.send(topic, key=f"k{i}".encode(), value=f"old-{i}".encode())
    p.flush()
    c = group_consumer(ctx)
    c.subscribe([topic])
    got = poll_until(c, 30)
    check(len(c.assignment()) == 3, f"assignment {c.assignment()}")
    c.commit()
    committed = sum(c.committed(TopicPartition(topic, i)) or 0 for i in range(3))
    check(committed == 30, f"committed offsets sum to {committed}")
    c.close()
    for i in range(10):
        p.send(topic, key=f"k{i}".encode(), value=f"new-{i}".encode())
    p.flush()
    p.close()
    c = group_consumer(ctx)
    c.subscribe([topic])
    got = poll_until(c, 10)
    values = sorted(r.value.decode() for r in got)
    check(values == sorted(f"new-{i}" for i in range(10)), f"resumed with {values[:5]}...")
    c.close()
    return "30 committed, resumed at the next 10"


def member_role(ctx: Context) -> None:
    """A group member that reports its assignment on stdout until it is killed."""
    c = group_consumer(ctx)
    c.subscribe([ctx.topic()])
    last = None
    while True:
        c.poll(timeout_ms=GROUP_POLL_MS)
        now = sorted(tp.partition for tp in c.assignment())
        if now != last:
            print("ASSIGNED " + ",".join(map(str, now)), flush=True)
            last = now


def f_groups_rebalance(ctx: Context) -> str:
    if ctx.role == "member":
        member_role(ctx)
    topic = ctx.topic()
    child = ctx.spawn("member")
    try:
        for line in child.stdout:
            if line.startswith("ASSIGNED ") and line.strip() != "ASSIGNED":
                break
        c = group_consumer(ctx)
        c.subscribe([topic])
        for _ in deadline_loop(60, "a shared assignment"):
            c.poll(timeout_ms=GROUP_POLL_MS)
            if 0 < len(c.assignment()) < 4:
                break
        shared = sorted(tp.partition for tp in c.assignment())
        log("shared assignment", shared)
        child.send_signal(signal.SIGKILL)
        child.wait()
        for _ in deadline_loop(60, "all partitions after the member was killed"):
            c.poll(timeout_ms=GROUP_POLL_MS)
            if len(c.assignment()) == 4:
                break
        c.close()
        return f"had {shared}, took over all 4 after SIGKILL of the other member"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def admin(ctx: Context) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=ctx.bootstrap)


def topic_partitions(a: KafkaAdminClient, topic: str) -> int | None:
    for t in a.describe_topics([topic]):
        if t.get("name", t.get("topic")) == topic and t["error_code"] == 0:
            return len(t["partitions"])
    return None


def f_admin_topics(ctx: Context) -> str:
    a = admin(ctx)
    topic = ctx.topic("created")
    a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    for _ in deadline_loop(20, f"{topic} with 2 partitions"):
        if topic_partitions(a, topic) == 2:
            break
    a.create_partitions({topic: 5})
    for _ in deadline_loop(20, f"{topic} with 5 partitions"):
        if topic_partitions(a, topic) == 5:
            break
    a.delete_topics([topic])
    for _ in deadline_loop(20, f"{topic} deleted"):
        if topic not in a.list_topics():
            break
    a.close()
    return "created 2, grew to 5, deleted"


def topic_config(a: KafkaAdminClient, topic: str) -> dict:
    res = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    return {k: v["value"] for k, v in res["topic"][topic].items()}


def f_admin_configs(ctx: Context) -> str:
    a = admin(ctx)
    topic = ctx.topic()
    before = topic_config(a, topic)
    check(before.get("retention.ms") == "604800000", f"retention.ms {before.get('retention.ms')}")
    check(
        before.get("cleanup.policy") == "delete", f"cleanup.policy {before.get('cleanup.policy')}"
    )
    a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": "86400000"})])
    after = topic_config(a, topic)
    check(after.get("retention.ms") == "86400000", f"after alter: {after.get('retention.ms')}")
    res = a.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")
    broker = next(iter(res["broker"].values()))
    check("log.retention.hours" in broker or "num.partitions" in broker, "broker configs")
    a.close()
    return f"described {len(after)} topic configs, altered retention.ms"


def f_idempotent(ctx: Context) -> str:
    topic = ctx.topic()
    p = producer(ctx, enable_idempotence=True, acks="all")
    for i in range(200):
        p.send(topic, key=str(i % 2).encode(), value=str(i).encode())
    p.flush()
    p.close()
    got = read_all(ctx, topic, 200, partitions=range(2))
    values = sorted(int(r.value) for r in got)
    check(values == list(range(200)), "duplicates or gaps")
    return "200 records exactly once"


def f_transactions(ctx: Context) -> str:
    topic = ctx.topic()
    p = producer(ctx, transactional_id=f"{ctx.prefix}.txn")
    p.init_transactions()
    p.begin_transaction()
    for i in range(3):
        p.send(topic, key=b"c", value=f"committed-{i}".encode())
    p.commit_transaction()
    p.begin_transaction()
    for i in range(3):
        p.send(topic, key=b"a", value=f"aborted-{i}".encode())
    p.flush()
    p.abort_transaction()
    p.begin_transaction()
    p.send(topic, key=b"c", value=b"final")
    p.commit_transaction()
    p.close()
    committed = [r.value for r in read_all(ctx, topic, 4, partitions=range(2),
                                           isolation_level="read_committed")]  # fmt: skip
    want = [f"committed-{i}".encode() for i in range(3)] + [b"final"]
    check(sorted(committed) == sorted(want), f"read_committed saw {committed}")
    uncommitted = read_all(ctx, topic, 7, partitions=range(2))
    check(len(uncommitted) == 7, f"read_uncommitted saw {len(uncommitted)}")
    return "read_committed hid the aborted transaction"


def f_offsets_by_timestamp(ctx: Context) -> str:
    topic = ctx.topic()
    base = int(time.time() * 1000) - 60_000
    p = producer(ctx)
    for i in range(5):
        p.send(topic, value=str(i).encode(), partition=0, timestamp_ms=base + i * 1000)
    p.flush()
    p.close()
    c = consumer(ctx)
    tp = TopicPartition(topic, 0)
    found = c.offsets_for_times({tp: base + 1500})[tp]
    check(found is not None and found.offset == 2, f"offset for t+1.5s: {found}")
    check(found.timestamp == base + 2000, f"timestamp {found.timestamp}")
    after = c.offsets_for_times({tp: base + 10_000})[tp]
    check(after is None, f"past the end: {after}")
    check(c.beginning_offsets([tp])[tp] == 0 and c.end_offsets([tp])[tp] == 5, "earliest/latest")
    c.close()
    return "t+1.5s -> offset 2"


def f_large_messages(ctx: Context) -> str:
    value = big_value(4 * 1024 * 1024)
    p = producer(ctx, max_request_size=16 * 1024 * 1024)
    p.send(ctx.topic("big"), value=value).get(30)
    try:
        p.send(ctx.topic("default"), value=big_value(2 * 1024 * 1024)).get(30)
        raise CheckFailed("2 MiB record accepted by a topic with max.message.bytes 1048588")
    except MessageSizeTooLargeError:
        pass
    p.close()
    got = read_all(ctx, ctx.topic("big"), 1, partitions=[0])
    check(got[0].value == value, "4 MiB value differs")
    return "4 MiB round trip; 2 MiB refused with MESSAGE_TOO_LARGE"


def f_failover(ctx: Context) -> str:
    """acks=all, idempotent, through a SIGKILL of a partition leader; a consumer reads on."""
    import threading

    cluster = Failover(ctx)
    topic = ctx.topic()
    acked: set[int] = set()
    consumed: list = []
    stop = threading.Event()

    def consume() -> None:
        c = consumer(ctx, enable_auto_commit=False)
        c.assign([TopicPartition(topic, p) for p in range(FAILOVER_PARTITIONS)])
        c.seek_to_beginning()
        while not stop.is_set():
            for records in c.poll(timeout_ms=200).values():
                consumed.extend((r.partition, r.offset, r.value) for r in records)
        c.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    p = producer(ctx, acks="all", enable_idempotence=True, linger_ms=5,
                 request_timeout_ms=10000, delivery_timeout_ms=60000)  # fmt: skip

    def send(seqs: list[int]) -> None:
        for s in seqs:
            p.send(topic, str(s).encode(), partition=partition_of(s)).add_callback(
                lambda _md, s=s: acked.add(s)
            )

    victim, sent, during = cluster.stream(send)
    p.flush(timeout=60)
    p.close()
    try:
        for _ in deadline_loop(60, f"{len(acked)} acknowledged records read back"):
            if {int(v) for _, _, v in list(consumed)} >= acked:
                break
    finally:
        stop.set()
        reader.join(10)
    return check_failover(acked, list(consumed), sent, victim, during)


if __name__ == "__main__":
    main(
        {
            "metadata": f_metadata,
            "produce_consume": f_produce_consume,
            "compression.gzip": compression("gzip"),
            "compression.snappy": compression("snappy"),
            "compression.lz4": compression("lz4"),
            "compression.zstd": compression("zstd"),
            "ordering": f_ordering,
            "groups.commit_resume": f_groups_commit_resume,
            "groups.rebalance": f_groups_rebalance,
            "admin.topics": f_admin_topics,
            "admin.configs": f_admin_configs,
            "idempotent": f_idempotent,
            "transactions": f_transactions,
            "offsets_by_timestamp": f_offsets_by_timestamp,
            "large_messages": f_large_messages,
            "failover": f_failover,
        }
    )

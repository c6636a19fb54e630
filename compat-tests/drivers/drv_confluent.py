"""confluent-kafka (librdkafka) driver of the compatibility matrix. See common.py."""

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
from confluent_kafka import (  # noqa: E402
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)


def producer(ctx: Context, **conf) -> Producer:
    return Producer({"bootstrap.servers": ctx.bootstrap, **conf})


def produce_all(p: Producer, items: list[dict]) -> list:
    """Produce and flush; return the delivered messages in order (errors raise)."""
    delivered: list = [None] * len(items)

    def report(i):
        def cb(err, msg):
            delivered[i] = err or msg

        return cb

    for i, kw in enumerate(items):
        p.produce(on_delivery=report(i), **kw)
        p.poll(0)
    check(p.flush(30) == 0, "flush timed out")
    for d in delivered:
        if isinstance(d, KafkaError):
            raise KafkaException(d)
    return delivered


def consumer(ctx: Context, **conf) -> Consumer:
    base = {"bootstrap.servers": ctx.bootstrap, "group.id": f"{ctx.prefix}.reader",
            "auto.offset.reset": "earliest", "enable.auto.commit": False}  # fmt: skip
    return Consumer({**base, **conf})


def read_all(ctx: Context, topic: str, count: int, partitions, seconds=30, **conf) -> list:
    """Assign `partitions` of `topic` from the beginning (no group join) and read `count`."""
    c = consumer(ctx, **conf)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        got: list = []
        for _ in deadline_loop(seconds, f"{count} records from {topic} (got {len(got)})"):
            for m in c.consume(num_messages=500, timeout=0.2):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(m.error())
                got.append(m)
            if len(got) >= count:
                return got
    finally:
        c.close()


def f_metadata(ctx: Context) -> str:
    a = AdminClient({"bootstrap.servers": ctx.bootstrap, "api.version.request": True})
    md = a.list_topics(timeout=10)
    topic = ctx.topic()
    check(topic in md.topics, f"{topic} missing from metadata")
    parts = md.topics[topic].partitions
    check(sorted(parts) == [0, 1, 2], f"partitions {sorted(parts)}")
    check(len(md.brokers) == 1, f"brokers {md.brokers}")
    b = next(iter(md.brokers.values()))
    check(b.port == ctx.port, f"advertised port {b.port} != {ctx.port}")
    for p in parts.values():
        check(p.leader == b.id and p.error is None, f"partition {p.id}: leader {p.leader}")
    return f"broker {b.id} at {b.host}:{b.port}, {len(parts)} partitions"


def f_produce_consume(ctx: Context) -> str:
    topic = ctx.topic()
    expected = pc_records()
    delivered = produce_all(producer(ctx), [dict(topic=topic, key=k, value=v, headers=h)
                                            for k, v, h in expected])  # fmt: skip
    offsets = [m.offset() for m in delivered]
    check(offsets == list(range(len(expected))), f"produce offsets {offsets}")
    got = read_all(ctx, topic, len(expected), [0])
    for m, (k, v, h) in zip(got, expected, strict=False):
        check(m.key() == k and m.value() == v, f"record {m.offset()}: {m.key()!r}={m.value()!r}")
        check(list(m.headers() or []) == h, f"headers of {m.offset()}: {m.headers()}")
        check(m.timestamp()[1] > 0, f"timestamp {m.timestamp()}")
    check([m.offset() for m in got] == offsets, "consumed offsets")
    return f"{len(got)} records"


def compression(codec: str):
    def run(ctx: Context) -> str:
        topic = ctx.topic()
        p = producer(ctx, **{"compression.type": codec, "linger.ms": 20})
        produce_all(p, [dict(topic=topic, value=compressible(i)) for i in range(200)])
        got = read_all(ctx, topic, 200, [0])
        check([m.value() for m in got] == [compressible(i) for i in range(200)], "values differ")
        return f"200 records ({codec})"

    return run


def f_ordering(ctx: Context) -> str:
    topic = ctx.topic()
    keys = [f"k{i}".encode() for i in range(16)]
    # murmur2_random is the Java client's partitioner, so keys land where Java would put them.
    p = producer(ctx, **{"acks": "all", "linger.ms": 5, "partitioner": "murmur2_random"})
    produce_all(p, [dict(topic=topic, key=keys[s % 16], value=str(s).encode()) for s in range(400)])
    got = read_all(ctx, topic, 400, range(4))
    key_partition: dict = {}
    last_seq: dict = {}
    next_offset: dict = {}
    for m in got:
        check(key_partition.setdefault(m.key(), m.partition()) == m.partition(), "key split")
        seq = int(m.value())
        check(seq > last_seq.get(m.key(), -1), f"key {m.key()}: {seq} out of order")
        last_seq[m.key()] = seq
        check(m.offset() == next_offset.get(m.partition(), 0), f"gap in {m.partition()}")
        next_offset[m.partition()] = m.offset() + 1
    check(len(got) == 400, f"{len(got)} records")
    return f"400 records, 16 keys over {len(next_offset)} partitions"


def group_consumer(ctx: Context) -> Consumer:
    return consumer(ctx, **{"group.id": ctx.group, "session.timeout.ms": 6000,
                            "heartbeat.interval.ms": 500})  # fmt: skip


def poll_until(c: Consumer, count: int, seconds: float = 30) -> list:
    got: list = []
    for _ in deadline_loop(seconds, f"{count} records (got {len(got)})"):
        for m in c.consume(num_messages=500, timeout=0.2):
            if m.error():
                raise KafkaException(m.error())
            got.append(m)
        if len(got) >= count:
            return got


def f_groups_commit_resume(ctx: Context) -> str:
    topic = ctx.topic()
    p = producer(ctx)
    produce_all(p, [dict(topic=topic, key=f"k{i}".encode(), value=f"old-{i}".encode())
                    for i in range(30)])  # fmt: skip
    c = group_consumer(ctx)
    c.subscribe([topic])
    poll_until(c, 30)
    check(len(c.assignment()) == 3, f"assignment {c.assignment()}")
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition(topic, i) for i in range(3)], timeout=10)
    total = sum(tp.offset for tp in committed)
    check(total == 30, f"committed offsets sum to {total}")
    c.close()
    produce_all(p, [dict(topic=topic, key=f"k{i}".encode(), value=f"new-{i}".encode())
                    for i in range(10)])  # fmt: skip
    c = group_consumer(ctx)
    c.subscribe([topic])
    got = poll_until(c, 10)
    values = sorted(m.value().decode() for m in got)
    check(values == sorted(f"new-{i}" for i in range(10)), f"resumed with {values[:5]}...")
    c.close()
    return "30 committed, resumed at the next 10"


def member_role(ctx: Context) -> None:
    c = group_consumer(ctx)
    c.subscribe([ctx.topic()])
    last = None
    while True:
        c.poll(0.2)
        now = sorted(tp.partition for tp in c.assignment())
        if now != last:
            print("ASSIGNED " + ",".join(map(str, now)), flush=True)
            last = now


def f_groups_rebalance(ctx: Context) -> str:
    if ctx.role == "member":
        member_role(ctx)
    child = ctx.spawn("member")
    try:
        for line in child.stdout:
            if line.startswith("ASSIGNED ") and line.strip() != "ASSIGNED":
                break
        else:
            raise CheckFailed("the other member exited")
        c = group_consumer(ctx)
        c.subscribe([ctx.topic()])
        for _ in deadline_loop(60, "a shared assignment"):
            c.poll(0.2)
            if 0 < len(c.assignment()) < 4:
                break
        shared = sorted(tp.partition for tp in c.assignment())
        log("shared assignment", shared)
        child.send_signal(signal.SIGKILL)
        child.wait()
        for _ in deadline_loop(60, "all partitions after the member was killed"):
            c.poll(0.2)
            if len(c.assignment()) == 4:
                break
        c.close()
        return f"had {shared}, took over all 4 after SIGKILL of the other member"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def admin(ctx: Context) -> AdminClient:
    return AdminClient({"bootstrap.servers": ctx.bootstrap})


def partitions_of(a: AdminClient, topic: str) -> int | None:
    t = a.list_topics(topic=topic, timeout=10).topics.get(topic)
    return len(t.partitions) if t is not None and t.error is None else None


def f_admin_topics(ctx: Context) -> str:
    a = admin(ctx)
    topic = ctx.topic("created")
    a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(20)
    for _ in deadline_loop(20, f"{topic} with 2 partitions"):
        if partitions_of(a, topic) == 2:
            break
    a.create_partitions([NewPartitions(topic, 5)])[topic].result(20)
    for _ in deadline_loop(20, f"{topic} with 5 partitions"):
        if partitions_of(a, topic) == 5:
            break
    a.delete_topics([topic])[topic].result(20)
    for _ in deadline_loop(20, f"{topic} deleted"):
        if topic not in a.list_topics(timeout=10).topics:
            break
    return "created 2, grew to 5, deleted"


def describe(a: AdminClient, kind: str, name: str) -> dict[str, str]:
    res = ConfigResource(kind, name)
    entries = a.describe_configs([res])[res].result(20)
    return {k: e.value for k, e in entries.items()}


def f_admin_configs(ctx: Context) -> str:
    a = admin(ctx)
    topic = ctx.topic()
    before = describe(a, "topic", topic)
    check(before.get("retention.ms") == "604800000", f"retention.ms {before.get('retention.ms')}")
    how = "IncrementalAlterConfigs"
    res = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)])  # fmt: skip
    try:
        a.incremental_alter_configs([res])[res].result(20)
    except KafkaException as e:
        if e.args[0].code() not in (
            KafkaError._UNSUPPORTED_FEATURE,
            KafkaError.UNSUPPORTED_VERSION,
        ):
            raise
        how = "AlterConfigs (broker lacks IncrementalAlterConfigs)"
        res = ConfigResource("topic", topic, set_config={"retention.ms": "86400000"})
        a.alter_configs([res])[res].result(20)
    after = describe(a, "topic", topic)
    check(after.get("retention.ms") == "86400000", f"after alter: {after.get('retention.ms')}")
    broker = describe(a, "broker", "1")
    check("num.partitions" in broker, "broker configs")
    return f"described {len(after)} topic configs, altered retention.ms with {how}"


def f_idempotent(ctx: Context) -> str:
    topic = ctx.topic()
    p = producer(ctx, **{"enable.idempotence": True})
    produce_all(p, [dict(topic=topic, partition=i % 2, value=str(i).encode()) for i in range(200)])
    got = read_all(ctx, topic, 200, range(2))
    check(sorted(int(m.value()) for m in got) == list(range(200)), "duplicates or gaps")
    return "200 records exactly once"


def f_transactions(ctx: Context) -> str:
    topic = ctx.topic()
    p = producer(ctx, **{"transactional.id": f"{ctx.prefix}.txn"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, key=b"c", value=f"committed-{i}".encode(), partition=0)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, key=b"a", value=f"aborted-{i}".encode(), partition=1)
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, key=b"c", value=b"final", partition=1)
    p.commit_transaction(30)
    committed = [m.value() for m in read_all(ctx, topic, 4, range(2),
                                             **{"isolation.level": "read_committed"})]  # fmt: skip
    want = [f"committed-{i}".encode() for i in range(3)] + [b"final"]
    check(sorted(committed) == sorted(want), f"read_committed saw {committed}")
    uncommitted = read_all(ctx, topic, 7, range(2), **{"isolation.level": "read_uncommitted"})
    check(len(uncommitted) == 7, f"read_uncommitted saw {len(uncommitted)}")
    return "read_committed hid the aborted transaction"


def f_offsets_by_timestamp(ctx: Context) -> str:
    topic = ctx.topic()
    base = int(time.time() * 1000) - 60_000
    produce_all(producer(ctx), [dict(topic=topic, value=str(i).encode(), partition=0,
                                     timestamp=base + i * 1000) for i in range(5)])  # fmt: skip
    c = consumer(ctx)
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 1500)], timeout=10)[0]
    check(found.error is None and found.offset == 2, f"offset for t+1.5s: {found}")
    after = c.offsets_for_times([TopicPartition(topic, 0, base + 10_000)], timeout=10)[0]
    check(after.offset == -1, f"past the end: {after}")  # OFFSET_END: no such record
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    check((lo, hi) == (0, 5), f"watermarks {(lo, hi)}")
    c.close()
    return "t+1.5s -> offset 2"


def f_large_messages(ctx: Context) -> str:
    value = big_value(4 * 1024 * 1024)
    p = producer(ctx, **{"message.max.bytes": 16 * 1024 * 1024})
    produce_all(p, [dict(topic=ctx.topic("big"), value=value)])
    try:
        produce_all(p, [dict(topic=ctx.topic("default"), value=big_value(2 * 1024 * 1024))])
        raise CheckFailed("2 MiB record accepted by a topic with max.message.bytes 1048588")
    except KafkaException as e:
        check(e.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, f"refused with {e}")
    got = read_all(ctx, ctx.topic("big"), 1, [0], **{"fetch.message.max.bytes": 1 << 20})
    check(got[0].value() == value, "4 MiB value differs")
    return "4 MiB round trip; 2 MiB refused with MESSAGE_TOO_LARGE"


def f_failover(ctx: Context) -> str:
    """acks=all, idempotent, through a SIGKILL of a partition leader; a consumer reads on in the
    same thread between produce calls (librdkafka works in its own threads)."""
    cluster = Failover(ctx)
    topic = ctx.topic()
    acked: set[int] = set()
    consumed: list = []
    c = consumer(ctx)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(FAILOVER_PARTITIONS)])

    def read(timeout: float = 0) -> None:
        for m in c.consume(num_messages=500, timeout=timeout):
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    log("consumer:", m.error())
                continue
            consumed.append((m.partition(), m.offset(), m.value()))

    def on_delivery(err, msg) -> None:
        if err is None:
            acked.add(int(msg.value()))
        else:
            log("delivery failed:", err)

    p = producer(ctx, **{"acks": "all", "enable.idempotence": True, "linger.ms": 5,
                         "message.timeout.ms": 60000})  # fmt: skip

    def send(seqs: list[int]) -> None:
        for s in seqs:
            p.produce(topic, str(s).encode(), partition=partition_of(s), on_delivery=on_delivery)
        p.poll(0)
        read()

    victim, sent, during = cluster.stream(send)
    check(p.flush(60) == 0, "flush timed out")
    try:
        for _ in deadline_loop(60, f"{len(acked)} acknowledged records read back"):
            if {int(v) for _, _, v in consumed} >= acked:
                break
            read(0.2)
    finally:
        c.close()
    return check_failover(acked, consumed, sent, victim, during)


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

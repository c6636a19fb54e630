"""aiokafka driver of the compatibility matrix. See common.py for the contract."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic  # noqa: E402
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # noqa: E402
from aiokafka.errors import MessageSizeTooLargeError  # noqa: E402
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


async def producer(ctx: Context, **kw) -> AIOKafkaProducer:
    p = AIOKafkaProducer(bootstrap_servers=ctx.bootstrap, **kw)
    await p.start()
    return p


async def consumer(ctx: Context, *topics: str, **kw) -> AIOKafkaConsumer:
    kw.setdefault("auto_offset_reset", "earliest")
    c = AIOKafkaConsumer(*topics, bootstrap_servers=ctx.bootstrap, **kw)
    await c.start()
    return c


async def read_all(ctx: Context, topic: str, count: int, partitions=None, seconds=30, **kw):
    c = await consumer(ctx, **kw)
    try:
        if partitions is None:
            partitions = (await c._client.fetch_all_metadata()).partitions_for_topic(topic)
        c.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        await c.seek_to_beginning()
        got: list = []
        for _ in deadline_loop(seconds, f"{count} records from {topic} (got {len(got)})"):
            for records in (await c.getmany(timeout_ms=200)).values():
                got.extend(records)
            if len(got) >= count:
                return got
    finally:
        await c.stop()


async def f_metadata(ctx: Context) -> str:
    c = await consumer(ctx)
    try:
        topic = ctx.topic()
        check(topic in await c.topics(), f"{topic} missing from metadata")
        # aiokafka (>= 0.13) negotiates versions per connection from ApiVersions.
        versions = [conn._versions for conn in c._client._conns.values() if conn._versions]
        check(versions, "no connection negotiated ApiVersions")
        produce, fetch = versions[0].get(0), versions[0].get(1)
        check(produce and fetch, f"negotiated {versions[0]}")
        cluster = await c._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(topic)
        check(parts == {0, 1, 2}, f"partitions {parts}")
        brokers = cluster.brokers()
        check(len(brokers) == 1, f"brokers {brokers}")
        b = next(iter(brokers))
        check(b.port == ctx.port, f"advertised port {b.port} != {ctx.port}")
        for p in parts:
            leader = cluster.leader_for_partition(TopicPartition(topic, p))
            check(leader == b.nodeId, f"leader of {p} is {leader}")
        return f"{len(versions[0])} APIs negotiated (Produce {produce}, Fetch {fetch})"
    finally:
        await c.stop()


async def f_produce_consume(ctx: Context) -> str:
    topic = ctx.topic()
    p = await producer(ctx)
    expected = pc_records()
    offsets = []
    for k, v, h in expected:
        md = await p.send_and_wait(topic, key=k, value=v, headers=h)
        offsets.append(md.offset)
    await p.stop()
    check(offsets == list(range(len(expected))), f"produce offsets {offsets}")
    got = await read_all(ctx, topic, len(expected))
    for rec, (k, v, h) in zip(got, expected, strict=False):
        check(rec.key == k and rec.value == v, f"record {rec.offset}: {rec.key!r}={rec.value!r}")
        check(list(rec.headers) == h, f"headers of {rec.offset}: {rec.headers}")
        check(rec.timestamp > 0, f"timestamp {rec.timestamp}")
    check([r.offset for r in got] == offsets, "consumed offsets")
    return f"{len(got)} records"


def compression(codec: str):
    async def run(ctx: Context) -> str:
        topic = ctx.topic()
        p = await producer(ctx, compression_type=codec, linger_ms=20)
        futures = [await p.send(topic, value=compressible(i)) for i in range(200)]
        await asyncio.gather(*futures)
        await p.stop()
        got = await read_all(ctx, topic, 200)
        check([r.value for r in got] == [compressible(i) for i in range(200)], "values differ")
        return f"200 records ({codec})"

    return run


async def f_ordering(ctx: Context) -> str:
    topic = ctx.topic()
    p = await producer(ctx, acks="all", linger_ms=5)
    keys = [f"k{i}".encode() for i in range(16)]
    futures = [await p.send(topic, key=keys[s % 16], value=str(s).encode()) for s in range(400)]
    await asyncio.gather(*futures)
    await p.stop()
    got = await read_all(ctx, topic, 400, partitions=range(4))
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


async def group_consumer(ctx: Context, **kw) -> AIOKafkaConsumer:
    return await consumer(ctx, ctx.topic(), group_id=ctx.group, enable_auto_commit=False,
                          session_timeout_ms=6000, heartbeat_interval_ms=500, **kw)  # fmt: skip


async def poll_until(c: AIOKafkaConsumer, count: int, seconds: float = 30) -> list:
    got: list = []
    for _ in deadline_loop(seconds, f"{count} records (got {len(got)})"):
        for records in (await c.getmany(timeout_ms=200)).values():
            got.extend(records)
        if len(got) >= count:
            return got


async def f_groups_commit_resume(ctx: Context) -> str:
    topic = ctx.topic()
    p = await producer(ctx)
    for i in range(30):
        await p.send(topic, key=f"k{i}".encode(), value=f"old-{i}".encode())
    await p.flush()
    c = await group_consumer(ctx)
    await poll_until(c, 30)
    check(len(c.assignment()) == 3, f"assignment {c.assignment()}")
    await c.commit()
    committed = 0
    for i in range(3):
        committed += await c.committed(TopicPartition(topic, i)) or 0
    check(committed == 30, f"committed offsets sum to {committed}")
    await c.stop()
    for i in range(10):
        await p.send(topic, key=f"k{i}".encode(), value=f"new-{i}".encode())
    await p.flush()
    await p.stop()
    c = await group_consumer(ctx)
    got = await poll_until(c, 10)
    values = sorted(r.value.decode() for r in got)
    check(values == sorted(f"new-{i}" for i in range(10)), f"resumed with {values[:5]}...")
    await c.stop()
    return "30 committed, resumed at the next 10"


async def member_role(ctx: Context) -> None:
    c = await group_consumer(ctx)
    last = None
    while True:
        await c.getmany(timeout_ms=200)
        now = sorted(tp.partition for tp in c.assignment())
        if now != last:
            print("ASSIGNED " + ",".join(map(str, now)), flush=True)
            last = now


async def f_groups_rebalance(ctx: Context) -> str:
    if ctx.role == "member":
        await member_role(ctx)
    child = ctx.spawn("member")
    try:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, child.stdout.readline)
            if not line:
                raise CheckFailed("the other member exited")
            if line.startswith("ASSIGNED ") and line.strip() != "ASSIGNED":
                break
        c = await group_consumer(ctx)
        for _ in deadline_loop(60, "a shared assignment"):
            await c.getmany(timeout_ms=200)
            if 0 < len(c.assignment()) < 4:
                break
        shared = sorted(tp.partition for tp in c.assignment())
        log("shared assignment", shared)
        child.send_signal(signal.SIGKILL)
        child.wait()
        for _ in deadline_loop(60, "all partitions after the member was killed"):
            await c.getmany(timeout_ms=200)
            if len(c.assignment()) == 4:
                break
        await c.stop()
        return f"had {shared}, took over all 4 after SIGKILL of the other member"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


async def admin(ctx: Context) -> AIOKafkaAdminClient:
    a = AIOKafkaAdminClient(bootstrap_servers=ctx.bootstrap)
    await a.start()
    return a


async def topic_partitions(a: AIOKafkaAdminClient, topic: str) -> int | None:
    for t in await a.describe_topics([topic]):
        if t["topic"] == topic and t["error_code"] == 0:
            return len(t["partitions"])
    return None


async def f_admin_topics(ctx: Context) -> str:
    a = await admin(ctx)
    topic = ctx.topic("created")
    await a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    for _ in deadline_loop(20, f"{topic} with 2 partitions"):
        if await topic_partitions(a, topic) == 2:
            break
    await a.create_partitions({topic: NewPartitions(5)})
    for _ in deadline_loop(20, f"{topic} with 5 partitions"):
        if await topic_partitions(a, topic) == 5:
            break
    await a.delete_topics([topic])
    for _ in deadline_loop(20, f"{topic} deleted"):
        if topic not in await a.list_topics():
            break
    await a.close()
    return "created 2, grew to 5, deleted"


def _configs(responses) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            error_code, _msg, _type, name, entries = resource[:5]
            check(error_code == 0, f"DescribeConfigs error {error_code} for {name}")
            out[name] = {e[0]: e[1] for e in entries}
    return out


async def f_admin_configs(ctx: Context) -> str:
    a = await admin(ctx)
    topic = ctx.topic()
    res = ConfigResource(ConfigResourceType.TOPIC, topic)
    before = _configs(await a.describe_configs([res]))[topic]
    check(before.get("retention.ms") == "604800000", f"retention.ms {before.get('retention.ms')}")
    await a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                          {"retention.ms": "86400000"})])  # fmt: skip
    after = _configs(await a.describe_configs([res]))[topic]
    check(after.get("retention.ms") == "86400000", f"after alter: {after.get('retention.ms')}")
    broker = _configs(await a.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")]))
    check(any("num.partitions" in v for v in broker.values()), "broker configs")
    await a.close()
    return f"described {len(after)} topic configs, altered retention.ms"


async def f_idempotent(ctx: Context) -> str:
    topic = ctx.topic()
    p = await producer(ctx, enable_idempotence=True, acks="all")
    futures = [await p.send(topic, key=str(i % 2).encode(), value=str(i).encode())
               for i in range(200)]  # fmt: skip
    await asyncio.gather(*futures)
    await p.stop()
    got = await read_all(ctx, topic, 200, partitions=range(2))
    check(sorted(int(r.value) for r in got) == list(range(200)), "duplicates or gaps")
    return "200 records exactly once"


async def f_transactions(ctx: Context) -> str:
    topic = ctx.topic()
    p = await producer(ctx, transactional_id=f"{ctx.prefix}.txn")
    async with p.transaction():
        for i in range(3):
            await p.send(topic, key=b"c", value=f"committed-{i}".encode())
    await p.begin_transaction()
    for i in range(3):
        await p.send(topic, key=b"a", value=f"aborted-{i}".encode())
    await p.flush()
    await p.abort_transaction()
    async with p.transaction():
        await p.send(topic, key=b"c", value=b"final")
    await p.stop()
    committed = [r.value for r in await read_all(ctx, topic, 4, partitions=range(2),
                                                 isolation_level="read_committed")]  # fmt: skip
    want = [f"committed-{i}".encode() for i in range(3)] + [b"final"]
    check(sorted(committed) == sorted(want), f"read_committed saw {committed}")
    uncommitted = await read_all(ctx, topic, 7, partitions=range(2))
    check(len(uncommitted) == 7, f"read_uncommitted saw {len(uncommitted)}")
    return "read_committed hid the aborted transaction"


async def f_offsets_by_timestamp(ctx: Context) -> str:
    topic = ctx.topic()
    base = int(time.time() * 1000) - 60_000
    p = await producer(ctx)
    for i in range(5):
        await p.send_and_wait(topic, value=str(i).encode(), partition=0,
                              timestamp_ms=base + i * 1000)  # fmt: skip
    await p.stop()
    c = await consumer(ctx)
    tp = TopicPartition(topic, 0)
    found = (await c.offsets_for_times({tp: base + 1500}))[tp]
    check(found is not None and found.offset == 2, f"offset for t+1.5s: {found}")
    check(found.timestamp == base + 2000, f"timestamp {found.timestamp}")
    after = (await c.offsets_for_times({tp: base + 10_000}))[tp]
    check(after is None, f"past the end: {after}")
    check((await c.beginning_offsets([tp]))[tp] == 0, "earliest")
    check((await c.end_offsets([tp]))[tp] == 5, "latest")
    await c.stop()
    return "t+1.5s -> offset 2"


async def f_large_messages(ctx: Context) -> str:
    value = big_value(4 * 1024 * 1024)
    p = await producer(ctx, max_request_size=16 * 1024 * 1024)
    await p.send_and_wait(ctx.topic("big"), value=value)
    try:
        await p.send_and_wait(ctx.topic("default"), value=big_value(2 * 1024 * 1024))
        raise CheckFailed("2 MiB record accepted by a topic with max.message.bytes 1048588")
    except MessageSizeTooLargeError:
        pass
    await p.stop()
    got = await read_all(ctx, ctx.topic("big"), 1, partitions=[0],
                         max_partition_fetch_bytes=8 * 1024 * 1024)  # fmt: skip
    check(got[0].value == value, "4 MiB value differs")
    return "4 MiB round trip; 2 MiB refused with MESSAGE_TOO_LARGE"


async def f_failover(ctx: Context) -> str:
    """acks=all, idempotent, through a SIGKILL of a partition leader; a consumer task reads on."""
    cluster = Failover(ctx)
    topic = ctx.topic()
    acked: set[int] = set()
    consumed: list = []
    c = await consumer(ctx, enable_auto_commit=False)
    c.assign([TopicPartition(topic, p) for p in range(FAILOVER_PARTITIONS)])
    await c.seek_to_beginning()

    async def read() -> None:
        while True:
            for records in (await c.getmany(timeout_ms=200)).values():
                consumed.extend((r.partition, r.offset, r.value) for r in records)

    reader = asyncio.create_task(read())
    p = await producer(ctx, acks="all", enable_idempotence=True, linger_ms=5,
                       request_timeout_ms=60000)  # fmt: skip
    pending = []

    def on_done(s: int):
        def done(f: asyncio.Future) -> None:
            if not f.cancelled() and f.exception() is None:
                acked.add(s)
            elif not f.cancelled():
                log(f"record {s}:", repr(f.exception()))

        return done

    async def send(seqs: list[int]) -> None:
        for s in seqs:
            f = await p.send(topic, str(s).encode(), partition=partition_of(s))
            f.add_done_callback(on_done(s))
            pending.append(f)

    try:
        victim, sent, during = await cluster.astream(send)
        await asyncio.wait(pending, timeout=60)
        await p.stop()
        for _ in deadline_loop(60, f"{len(acked)} acknowledged records read back"):
            if {int(v) for _, _, v in consumed} >= acked:
                break
            await asyncio.sleep(0.1)  # the reader task runs meanwhile; bounded by the deadline
    finally:
        reader.cancel()
        await c.stop()
    return check_failover(acked, consumed, sent, victim, during)


def sync(fn):
    return lambda ctx: asyncio.run(fn(ctx))


if __name__ == "__main__":
    main(
        {
            "metadata": sync(f_metadata),
            "produce_consume": sync(f_produce_consume),
            "compression.gzip": sync(compression("gzip")),
            "compression.snappy": sync(compression("snappy")),
            "compression.lz4": sync(compression("lz4")),
            "compression.zstd": sync(compression("zstd")),
            "ordering": sync(f_ordering),
            "groups.commit_resume": sync(f_groups_commit_resume),
            "groups.rebalance": sync(f_groups_rebalance),
            "admin.topics": sync(f_admin_topics),
            "admin.configs": sync(f_admin_configs),
            "idempotent": sync(f_idempotent),
            "transactions": sync(f_transactions),
            "offsets_by_timestamp": sync(f_offsets_by_timestamp),
            "large_messages": sync(f_large_messages),
            "failover": sync(f_failover),
        }
    )

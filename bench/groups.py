"""Consumer groups: how long a 4-member group takes to get going, what a commit costs, and
whether auto-commit slows a busy consumer.

    .venv/bin/python -m bench.groups [--runs 5] [--commits 2000] [--records 100000]

- join: four consumers of a new group start at once on a 4-partition topic that already has
  records; the figure is the time from the start until every one has its first record (the
  group Stable, assignment synced, offsets fetched, first fetch done), per client library, with
  group.initial.rebalance.delay.ms=0 and with Kafka's default of 3000 ms.
- commit: synchronous commits of one partition's offset, back to back (each is a round trip and
  an append to __consumer_offsets with acks=all), and the broker CPU per commit.
- auto-commit: a confluent-kafka consumer reading the same prefilled topic with and without
  enable.auto.commit (interval 100 ms, 50x Kafka's default of 5 s).

The broker runs as a separate process (bench.common.Broker); everything is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

from .common import Broker, percentile
from .throughput import create_topic

TOPIC = "bench-groups"
PARTITIONS = 4


def prefill(bootstrap: str, records: int, size: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000})
    value = b"x" * size
    for i in range(records):
        while True:
            try:
                p.produce(TOPIC, value, partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(60)


# --- join to first record -------------------------------------------------------------------


def _first_record_confluent(bootstrap: str, group: str, t0: float, out: list, i: int,
                            heartbeat_ms: int = 3000) -> None:  # fmt: skip
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "heartbeat.interval.ms": heartbeat_ms})  # fmt: skip
    c.subscribe([TOPIC])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = c.poll(0.05)
        if m is not None and not m.error():
            out[i] = time.perf_counter() - t0
            break
    # Stay in the group until every member has its record, so nobody's leave rebalances.
    while None in out and time.monotonic() < deadline:
        c.poll(0.05)
    c.close()


def _first_record_kafka_python(bootstrap: str, group: str, t0: float, out: list, i: int) -> None:
    from kafka import KafkaConsumer

    c = KafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=group,
                      auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if c.poll(timeout_ms=2000, max_records=1):
            out[i] = time.perf_counter() - t0
            break
    while None in out and time.monotonic() < deadline:
        c.poll(timeout_ms=100)
    c.close()


def join_once(bootstrap: str, client: str) -> list[float]:
    fn = {
        "confluent-kafka": _first_record_confluent,
        "confluent-kafka hb=100": lambda *a: _first_record_confluent(*a, heartbeat_ms=100),
        "kafka-python": _first_record_kafka_python,
    }[client]
    group = f"bench-{uuid.uuid4().hex[:8]}"
    out: list[float | None] = [None] * 4
    t0 = time.perf_counter()
    threads = [
        threading.Thread(target=fn, args=(bootstrap, group, t0, out, i), daemon=True)
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    if None in out:
        raise RuntimeError(f"{client}: a member got no record")
    return out  # type: ignore[return-value]


def bench_join(runs: int, records: int) -> None:
    for delay in (0, 3000):
        with Broker({"group.initial.rebalance.delay.ms": str(delay)}) as broker:
            create_topic(broker.bootstrap, TOPIC, PARTITIONS)
            prefill(broker.bootstrap, 4000, 100)
            clients = ["confluent-kafka", "kafka-python"]
            if delay == 0:
                # Members that joined first learn of the others at their next heartbeat
                # (heartbeat.interval.ms, 3 s by default): with a short one, the broker's share.
                clients.append("confluent-kafka hb=100")
            for client in clients:
                join_once(broker.bootstrap, client)  # warm-up: __consumer_offsets, imports
                alls = [max(join_once(broker.bootstrap, client)) for _ in range(runs)]
                alls.sort()
                print(
                    f"join  {client:22s} delay={delay:4d} ms: 4 members, start to every member's "
                    f"first record: median {statistics.median(alls) * 1000:.0f} ms "
                    f"(min {alls[0] * 1000:.0f}, max {alls[-1] * 1000:.0f}, {runs} runs)",
                    flush=True,
                )


# --- commit cost ----------------------------------------------------------------------------


def bench_commits(commits: int) -> None:
    from confluent_kafka import Consumer, TopicPartition
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    from kafka.structs import OffsetAndMetadata

    with Broker({"group.initial.rebalance.delay.ms": "0"}) as broker:
        create_topic(broker.bootstrap, TOPIC, PARTITIONS)
        # confluent-kafka: synchronous commit of explicit offsets, simple (no group membership).
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench-commit-c"})
        c.commit(offsets=[TopicPartition(TOPIC, 0, 0)], asynchronous=False)  # warm-up
        lat = []
        cpu0 = broker.cpu()
        t_all = time.perf_counter()
        for i in range(commits):
            t = time.perf_counter()
            c.commit(offsets=[TopicPartition(TOPIC, i % PARTITIONS, i)], asynchronous=False)
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t_all
        cpu = broker.cpu() - cpu0
        c.close()
        lat.sort()
        print(
            f"commit confluent-kafka sync, 1 partition: {commits / wall:,.0f} commits/s, "
            f"p50 {percentile(lat, 0.5) * 1e6:.0f} µs, p99 {percentile(lat, 0.99) * 1e6:.0f} µs, "
            f"broker CPU {cpu / commits * 1e6:.0f} µs/commit",
            flush=True,
        )
        # kafka-python: a group member committing its position.
        k = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="bench-commit-k")
        k.assign([KTP(TOPIC, p) for p in range(PARTITIONS)])
        k.commit({KTP(TOPIC, 0): OffsetAndMetadata(0, "", -1)})
        lat = []
        cpu0 = broker.cpu()
        t_all = time.perf_counter()
        for i in range(commits):
            t = time.perf_counter()
            k.commit({KTP(TOPIC, p): OffsetAndMetadata(i, "", -1) for p in range(PARTITIONS)})
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t_all
        cpu = broker.cpu() - cpu0
        k.close()
        lat.sort()
        print(
            f"commit kafka-python    sync, 4 partitions: {commits / wall:,.0f} commits/s, "
            f"p50 {percentile(lat, 0.5) * 1e6:.0f} µs, p99 {percentile(lat, 0.99) * 1e6:.0f} µs, "
            f"broker CPU {cpu / commits * 1e6:.0f} µs/commit",
            flush=True,
        )


# --- auto-commit on a busy consumer ---------------------------------------------------------


def _consume_rate(bootstrap: str, records: int, auto_commit: bool) -> tuple[float, int]:
    from confluent_kafka import Consumer

    group = f"bench-auto-{uuid.uuid4().hex[:8]}"
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": auto_commit,
                  "auto.commit.interval.ms": 100})  # fmt: skip
    c.subscribe([TOPIC])
    got = 0
    t0 = None
    deadline = time.monotonic() + 120
    while got < records and time.monotonic() < deadline:
        for m in c.consume(num_messages=1000, timeout=0.5):
            if not m.error():
                if t0 is None:
                    t0 = time.perf_counter()  # from the first record: the join is not counted
                got += 1
    seconds = time.perf_counter() - t0
    c.close()
    return seconds, got


def bench_auto_commit(records: int, size: int = 100) -> None:
    with Broker({"group.initial.rebalance.delay.ms": "0"}) as broker:
        create_topic(broker.bootstrap, TOPIC, PARTITIONS)
        prefill(broker.bootstrap, records, size)
        for auto in (False, True, False, True):
            cpu0 = broker.cpu()
            seconds, got = _consume_rate(broker.bootstrap, records, auto)
            print(
                f"consume confluent-kafka {got:,} x {size} B, enable.auto.commit={str(auto).lower():5s}"
                f" (100 ms): {got / seconds:,.0f} records/s ({got * size / seconds / 1e6:.1f} MB/s) in "
                f"{seconds:.1f} s, "
                f"broker CPU {broker.cpu() - cpu0:.2f} s",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("only", nargs="*", metavar="join|commit|auto-commit")
    args = ap.parse_args()
    todo = args.only or ["join", "commit", "auto-commit"]
    if set(todo) - {"join", "commit", "auto-commit"}:
        ap.error(f"unknown benchmark in {todo}")
    if "join" in todo:
        bench_join(args.runs, args.records)
    if "commit" in todo:
        bench_commits(args.commits)
    if "auto-commit" in todo:
        bench_auto_commit(args.records)


if __name__ == "__main__":
    main()

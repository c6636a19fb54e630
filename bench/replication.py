"""Replication costs on a ZooKeeper + 3-broker cluster (tests/cluster_helpers.py), one run:

    python -m bench.replication                  # 1 GiB (1024 MB) moved, 200 MB produced a topic
    python -m bench.replication --move-mb 128    # quicker (the default needs ~3 GB of disk)

- produce: MB/s of 1 KiB records from one confluent-kafka producer (acks=all, lz4 off) to a
  topic of one partition with RF 1, then to one with RF 3 (same leader, broker 1): what
  replicating to two followers costs the leader; the ratio RF3/RF1 is the figure.
- reassign: a partition of `--move-mb` MB on broker 1 alone is reassigned to broker 2
  (AlterPartitionReassignments); the time until the move completes (broker 2 caught up, in the
  ISR, broker 1 removed), against the ceiling measured in the same run: one consumer reading
  the same partition from broker 1 as fast as it can (the copy is a fetch of the same bytes).
- throttled reassign: a partition of `--throttled-mb` MB moved from broker 1 to broker 3 with
  `kafka-reassign-partitions --execute --throttle` (`--throttle-mbps` MB/s), then `--verify`
  clears the throttle. Kafka's quota (11 windows of 1 s) measures a rate over at least 10 s, so
  the first 10 s worth of the throttle go at once; the floor is then (size - 10 s x rate) /
  rate, and the figure is the time taken over that floor (1.0: exactly rate-bound).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from .common import MB, REPO

sys.path.insert(0, str(REPO / "tests"))

from cluster_helpers import Cluster, wait_until  # noqa: E402
from helpers import RawClient  # noqa: E402

from protocol.apis import ApiKey  # noqa: E402

RECORD = 1024


def create(cluster: Cluster, name: str, replicas: list[int]) -> None:
    client = RawClient(cluster.brokers[1].port)
    try:
        body = {"topics": [{"name": name, "num_partitions": -1, "replication_factor": -1,
                            "assignments": [{"partition_index": 0, "broker_ids": replicas}],
                            "configs": [{"name": "min.insync.replicas", "value": "1"}]}],
                "timeout_ms": 10000, "validate_only": False}  # fmt: skip
        assert client.request(ApiKey.CREATE_TOPICS, 5, body).topics[0].error_code == 0
    finally:
        client.close()
    wait_until(lambda: (v := cluster.agreed_partitions(name)) and len(v[0][3]) == len(replicas),
               what=f"{name} in sync")  # fmt: skip


def produce(bootstrap: str, topic: str, megabytes: int) -> float:
    """MB/s of acks=all 1 KiB records until `megabytes` are acknowledged."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20,
                  "broker.address.family": "v4"})  # fmt: skip
    value = b"x" * RECORD
    count = megabytes * MB // RECORD
    start = time.monotonic()
    for _ in range(count):
        while True:
            try:
                p.produce(topic, value, partition=0)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    assert p.flush(120) == 0
    return count * RECORD / MB / (time.monotonic() - start)


def consume(bootstrap: str, topic: str, end: int) -> float:
    """Seconds for one consumer to read offsets [0, end) of partition 0 from its leader."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-replication",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800,
                  "max.partition.fetch.bytes": 10485760, "broker.address.family": "v4"})  # fmt: skip
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        start = time.monotonic()
        last = -1
        while last + 1 < end:
            for m in c.consume(10000, 1.0):
                if not m.error():
                    last = m.offset()
        return time.monotonic() - start
    finally:
        c.close()


def reassign(cluster: Cluster, topic: str, replicas: list[int]) -> float:
    """Seconds from AlterPartitionReassignments until the move is done on every broker."""
    controller = cluster.metadata(1).controller_id
    client = RawClient(cluster.brokers[controller].port)
    start = time.monotonic()
    try:
        body = {"timeout_ms": 30000, "topics": [{"name": topic, "partitions": [
            {"partition_index": 0, "replicas": replicas}]}]}  # fmt: skip
        r = client.request(ApiKey.ALTER_PARTITION_REASSIGNMENTS, 0, body)
        assert r.error_code == 0 and r.responses[0].partitions[0].error_code == 0
    finally:
        client.close()
    wait_until(lambda: (v := cluster.agreed_partitions(topic)) and v[0][2] == replicas
               and v[0][3] == replicas, timeout=3600, what="the move")  # fmt: skip
    return time.monotonic() - start


def throttled_reassign(cluster: Cluster, topic: str, replicas: list[int], rate: int,
                       work: str) -> float:  # fmt: skip
    """Seconds for a move started by kafka-reassign-partitions --throttle `rate` (B/s)."""
    tool = os.path.join(os.path.dirname(sys.executable), "kafka-reassign-partitions")
    plan = os.path.join(work, "throttled.json")
    with open(plan, "w") as f:
        json.dump({"version": 1, "partitions": [
            {"topic": topic, "partition": 0, "replicas": replicas}]}, f)  # fmt: skip
    base = [tool, "--bootstrap-server", cluster.bootstrap(), "--reassignment-json-file", plan]
    start = time.monotonic()
    subprocess.run([*base, "--execute", "--throttle", str(rate)], check=True,
                   capture_output=True)  # fmt: skip
    wait_until(lambda: (v := cluster.agreed_partitions(topic)) and v[0][2] == replicas
               and v[0][3] == replicas, timeout=3600, what="the throttled move")  # fmt: skip
    took = time.monotonic() - start
    out = subprocess.run([*base, "--verify"], check=True, capture_output=True, text=True).stdout
    assert "Clearing broker-level throttles" in out, out
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replication")
    ap.add_argument("--produce-mb", type=int, default=200)
    ap.add_argument("--move-mb", type=int, default=1024)
    ap.add_argument("--throttled-mb", type=int, default=150)
    ap.add_argument("--throttle-mbps", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-replication-") as work:
        cluster = Cluster(work, overrides={"auto.leader.rebalance.enable": "false"}).start()
        try:
            create(cluster, "rf1", [1])
            create(cluster, "rf3", [1, 2, 3])
            bootstrap = cluster.bootstrap()
            rf1 = produce(bootstrap, "rf1", args.produce_mb)
            rf3 = produce(bootstrap, "rf3", args.produce_mb)
            print(f"produce acks=all 1 KiB records: RF1 {rf1:.1f} MB/s, RF3 {rf3:.1f} MB/s, "
                  f"RF3/RF1 {rf3 / rf1:.2f}")  # fmt: skip
            create(cluster, "moving", [1])
            produce(bootstrap, "moving", args.move_mb)
            end = args.move_mb * MB // RECORD
            read_s = consume(bootstrap, "moving", end)
            move_s = reassign(cluster, "moving", [2])
            print(f"reassign {args.move_mb} MB from broker 1 to broker 2: {move_s:.1f} s "
                  f"({args.move_mb / move_s:.1f} MB/s); ceiling, one consumer reading it from "
                  f"broker 1: {read_s:.1f} s ({args.move_mb / read_s:.1f} MB/s); "
                  f"ratio {read_s / move_s:.2f}")  # fmt: skip
            create(cluster, "throttled", [1])
            produce(bootstrap, "throttled", args.throttled_mb)
            rate = args.throttle_mbps * MB
            took = throttled_reassign(cluster, "throttled", [3], rate, work)
            floor = max(args.throttled_mb - 10 * args.throttle_mbps, 0) / args.throttle_mbps
            print(f"throttled reassign {args.throttled_mb} MB from broker 1 to broker 3 at "
                  f"--throttle {rate}: {took:.1f} s ({args.throttled_mb / took:.1f} MB/s); floor "
                  f"(size - 10 s x rate) / rate: {floor:.1f} s; ratio {took / max(floor, 1e-9):.2f}")  # fmt: skip
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rebalance cost: a member joining a busy group, classic (eager, cooperative-sticky) against
KIP-848 (group.protocol=consumer), with 4 and 32 members.

    .venv/bin/python -m bench.kip848 [--members 4 32] [--runs 3] [--heartbeat-ms 500]

A group of N-1 confluent-kafka consumers shares a topic of 2N partitions that a producer
thread writes to all the time (one record per partition every 20 ms). Once they all consume,
an N-th member subscribes at t0, and we time:

- join: t0 until the new member has its first record;
- all: t0 until every member, old and new, has consumed a record produced after t0 (so the
  group as a whole is consuming again after the partitions moved);
- pause: the longest gap between two records of any old member in [t0, t0 + all], i.e. how
  long the rebalance stopped someone who already had partitions (eager stops everybody).

All members are confluent-kafka (librdkafka) consumers in this process, one polling thread
each (32 processes would not fit on 2 cores next to the broker); the classic ones with
partition.assignment.strategy range (eager) or cooperative-sticky. Heartbeats are equal for
both protocols (--heartbeat-ms: the classic heartbeat.interval.ms and the broker's
group.consumer.heartbeat.interval.ms), since both detect a rebalance at a heartbeat. The ceiling
printed with each line is the same join against an idle single-member-less group: the time a
lone member of a new group takes to get its first record (no one to wait for), measured in the
same run. The broker is a separate process (bench.common.Broker).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

from .common import Broker
from .throughput import create_topic

MODES = {
    "classic-eager": {"group.protocol": "classic", "partition.assignment.strategy": "range"},
    "classic-cooperative": {
        "group.protocol": "classic", "partition.assignment.strategy": "cooperative-sticky",
    },
    "kip848": {"group.protocol": "consumer"},
}  # fmt: skip


class Member(threading.Thread):
    """One consumer and its polling thread: when it consumed what (produce timestamps)."""

    def __init__(self, bootstrap: str, group: str, topic: str, mode: str, heartbeat_ms: int):
        super().__init__(daemon=True)
        from confluent_kafka import Consumer

        config = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "latest",
                  "enable.auto.commit": False, **MODES[mode]}  # fmt: skip
        if mode != "kip848":
            config.update({"heartbeat.interval.ms": heartbeat_ms, "session.timeout.ms": 10000})
        self.consumer = Consumer(config)
        self.consumer.subscribe([topic])
        self.stop = threading.Event()
        self.consumed: list[tuple[float, float]] = []  # (local receive time, produce time)

    def run(self) -> None:
        while not self.stop.is_set():
            m = self.consumer.poll(0.02)
            if m is not None and not m.error():
                self.consumed.append((time.time(), m.timestamp()[1] / 1000))

    def first_after(self, t: float) -> float | None:
        """When it first consumed a record produced after t (local time), or None."""
        for got, produced in self.consumed:
            if produced > t:
                return got
        return None

    def longest_gap(self, start: float, end: float) -> float:
        times = [got for got, _ in self.consumed if start <= got <= end]
        points = [start, *times, end]
        return max(b - a for a, b in zip(points, points[1:], strict=False))

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.consumer.close()


class Feeder(threading.Thread):
    def __init__(self, bootstrap: str, topic: str, partitions: int):
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
        self.topic, self.partitions = topic, partitions
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for p in range(self.partitions):
                self.producer.produce(self.topic, b"x", partition=p)
            self.producer.poll(0)
            time.sleep(0.02)
        self.producer.flush(5)


def _close_all(members: list[Member]) -> None:
    threads = [threading.Thread(target=m.close) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def one_join(bootstrap: str, n: int, mode: str, heartbeat_ms: int) -> dict | None:
    topic = f"bench-848-{uuid.uuid4().hex[:8]}"
    partitions = 2 * n
    create_topic(bootstrap, topic, partitions)
    feeder = Feeder(bootstrap, topic, partitions)
    feeder.start()
    group = f"g-{uuid.uuid4().hex[:8]}"
    members = [Member(bootstrap, group, topic, mode, heartbeat_ms) for _ in range(n - 1)]
    for m in members:
        m.start()
    try:
        deadline = time.monotonic() + 120
        settle = time.time()
        # Settled: every old member consumes, for at least two seconds.
        while not (all(m.first_after(settle) for m in members) and time.time() - settle > 2):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        time.sleep(1)
        t0 = time.time()
        new = Member(bootstrap, group, topic, mode, heartbeat_ms)
        new.start()
        everyone = [*members, new]
        while time.monotonic() < deadline:
            firsts = [m.first_after(t0) for m in everyone]
            if all(firsts) and new.consumed:
                break
            time.sleep(0.02)
        else:
            return None
        joined = new.consumed[0][0] - t0
        all_done = max(firsts) - t0
        pause = max(m.longest_gap(t0, t0 + all_done) for m in members)
        return {"join": joined, "all": all_done, "pause": pause}
    finally:
        _close_all(members + ([new] if "new" in locals() else []))
        feeder.stop.set()
        feeder.join(10)


def ceiling(bootstrap: str, mode: str, heartbeat_ms: int) -> float:
    """A lone member of a new group: subscribe to first record, nobody to wait for."""
    topic = f"bench-848-c-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 2)
    feeder = Feeder(bootstrap, topic, 2)
    feeder.start()
    m = Member(bootstrap, f"c-{uuid.uuid4().hex[:8]}", topic, mode, heartbeat_ms)
    t0 = time.time()
    m.start()
    try:
        while not m.consumed and time.time() - t0 < 60:
            time.sleep(0.01)
        return m.consumed[0][0] - t0 if m.consumed else float("nan")
    finally:
        m.close()
        feeder.stop.set()
        feeder.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, nargs="+", default=[4, 32])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--heartbeat-ms", type=int, default=500)
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    args = ap.parse_args()
    overrides = {
        "group.initial.rebalance.delay.ms": "0",
        "group.consumer.heartbeat.interval.ms": str(args.heartbeat_ms),
        "num.partitions": "1",
    }
    with Broker(overrides) as broker:
        for n in args.members:
            for mode in args.modes:
                runs = [r for r in (one_join(broker.bootstrap, n, mode, args.heartbeat_ms)
                                    for _ in range(args.runs)) if r is not None]  # fmt: skip
                ceil = ceiling(broker.bootstrap, mode, args.heartbeat_ms)
                if not runs:
                    print(f"members={n:<3} {mode:<20} no run completed")
                    continue
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(
                    f"members={n:<3} {mode:<20} join {med['join']:6.2f} s  all {med['all']:6.2f} s"
                    f"  longest pause of an old member {med['pause']:6.2f} s"
                    f"  (runs {len(runs)}; ceiling: lone member {ceil:5.2f} s,"
                    f" all/ceiling {med['all'] / ceil:5.1f}x)",
                    flush=True,
                )


if __name__ == "__main__":
    main()

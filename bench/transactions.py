"""Transactions: what exactly-once costs a producer, against the idempotent producer.

    .venv/bin/python -m bench.transactions [--seconds 10] [--size 1024] [--txn-records 100,1000]
                                            [--partitions 1]

- idempotent: confluent-kafka with enable.idempotence (acks=all), records of --size bytes
  produced as fast as the client takes them for --seconds, then flushed; and the same with a
  flush() every N records, the synchronous pattern a transaction imposes, without the
  transaction (so the difference is what the transaction itself costs).
- transactional: the same records in transactions of N records each (begin, N produces,
  commit_transaction, which flushes and waits for the commit), one N per --txn-records entry;
  besides throughput, the commit latency (commit_transaction call to return) p50/p99.

Each figure comes with the broker's CPU per second of run. The broker runs as a separate
process (bench.common.Broker) on 127.0.0.1, with a fresh topic per run.
"""

from __future__ import annotations

import argparse
import time
import uuid

from .common import Broker, percentile
from .throughput import create_topic


def _produce(p, topic: str, value: bytes, partitions: int, i: int) -> None:
    while True:
        try:
            p.produce(topic, value, partition=i % partitions)
            return
        except BufferError:
            p.poll(0.005)


def run_idempotent(broker: Broker, seconds: float, size: int, partitions: int,
                   flush_every: int = 0) -> dict:  # fmt: skip
    from confluent_kafka import Producer

    topic = f"bench-idem-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, partitions)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                  "linger.ms": 5})  # fmt: skip
    value = b"x" * size
    cpu0, t0 = broker.cpu(), time.perf_counter()
    n = 0
    chunk = flush_every or 1000
    while time.perf_counter() - t0 < seconds:
        for _ in range(chunk):
            _produce(p, topic, value, partitions, n)
            n += 1
        if flush_every:
            p.flush(60)
        else:
            p.poll(0)
    p.flush(120)
    elapsed = time.perf_counter() - t0
    cpu = broker.cpu() - cpu0
    return {"records": n, "seconds": elapsed, "cpu": cpu / elapsed}


def run_transactional(broker: Broker, seconds: float, size: int, partitions: int,
                      per_txn: int) -> dict:  # fmt: skip
    from confluent_kafka import Producer

    topic = f"bench-txn-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, partitions)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                  "transactional.id": f"bench-{uuid.uuid4().hex[:8]}"})  # fmt: skip
    p.init_transactions(60)
    value = b"x" * size
    commits: list[float] = []
    cpu0, t0 = broker.cpu(), time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        p.begin_transaction()
        for _ in range(per_txn):
            _produce(p, topic, value, partitions, n)
            n += 1
        c0 = time.perf_counter()
        p.commit_transaction(60)
        commits.append(time.perf_counter() - c0)
    elapsed = time.perf_counter() - t0
    cpu = broker.cpu() - cpu0
    commits.sort()
    return {
        "records": n,
        "seconds": elapsed,
        "cpu": cpu / elapsed,
        "transactions": len(commits),
        "commit_p50": percentile(commits, 0.5),
        "commit_p99": percentile(commits, 0.99),
    }


def describe(label: str, r: dict, size: int) -> str:
    rate = r["records"] / r["seconds"]
    line = (f"{label:<28} {rate:>9,.0f} msg/s {rate * size / 1e6:>7.1f} MB/s"
            f"  broker CPU {r['cpu'] * 100:>4.0f}%")  # fmt: skip
    if "transactions" in r:
        line += (f"  {r['transactions'] / r['seconds']:>6,.0f} txn/s"
                 f"  commit p50 {r['commit_p50'] * 1000:.1f} ms p99 {r['commit_p99'] * 1000:.1f} ms")  # fmt: skip
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument(
        "--txn-records", default="100,1000", help="records per transaction, comma-separated"
    )
    args = ap.parse_args()
    sizes = [int(x) for x in args.txn_records.split(",") if x]
    print(f"confluent-kafka, {args.size} B records, {args.partitions} partition(s), "
          f"acks=all, {args.seconds:.0f} s per run")  # fmt: skip
    with Broker({"transaction.state.log.num.partitions": "50"}) as broker:
        idem = run_idempotent(broker, args.seconds, args.size, args.partitions)
        print(describe("idempotent", idem, args.size), flush=True)
        base = idem["records"] / idem["seconds"]
        for per_txn in sizes:
            sync = run_idempotent(broker, args.seconds, args.size, args.partitions, per_txn)
            print(describe(f"idempotent, flush per {per_txn}", sync, args.size), flush=True)
            r = run_transactional(broker, args.seconds, args.size, args.partitions, per_txn)
            rate = r["records"] / r["seconds"]
            print(describe(f"transactional, {per_txn}/txn", r, args.size)
                  + f"  ({rate / base:.0%} of idempotent)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

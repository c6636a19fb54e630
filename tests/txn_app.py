"""A consume-transform-produce application with exactly-once semantics (confluent-kafka), run as
a separate process by test_transactions_eos.py so it can be SIGKILLed mid-transaction.

It reads `in` as a member of group `eos-app` (static membership, so a restarted instance takes
its partitions over at once), writes each value upper-cased to `out`, and commits the consumed
offsets inside the same transaction (send_offsets_to_transaction). With `--crash-at VALUE` it
stops inside the transaction holding that value, after its records reached the broker, prints
MIDTXN and waits to be killed. It exits once its committed position covers `--total` records.

    python txn_app.py BOOTSTRAP --total N [--crash-at VALUE]
"""

from __future__ import annotations

import argparse
import sys
import time

from confluent_kafka import Consumer, Producer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("--total", type=int, required=True)
    ap.add_argument("--crash-at")
    args = ap.parse_args()
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": "eos-app",
        "group.instance.id": "eos-app-instance", "session.timeout.ms": 6000,
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })  # fmt: skip
    producer = Producer({
        "bootstrap.servers": args.bootstrap, "transactional.id": "eos-app-txn", "linger.ms": 5,
    })  # fmt: skip
    producer.init_transactions(60)  # fences a previous instance, aborting its transaction
    consumer.subscribe(["in"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        msgs = [m for m in consumer.consume(num_messages=20, timeout=0.5) if m.error() is None]
        if not msgs:
            positions = consumer.committed(consumer.assignment(), timeout=10)
            if consumer.assignment() and sum(max(tp.offset, 0) for tp in positions) >= args.total:
                print("DONE", flush=True)
                break
            continue
        producer.begin_transaction()
        for m in msgs:
            producer.produce("out", m.value().upper(), key=m.key(), partition=m.partition())
        if args.crash_at is not None and args.crash_at.encode() in [m.value() for m in msgs]:
            producer.flush(30)
            print("MIDTXN", flush=True)
            time.sleep(3600)  # killed here
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)
    else:
        print("TIMEOUT", flush=True)
        return 1
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

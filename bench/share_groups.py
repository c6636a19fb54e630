"""Share groups (KIP-932): records/s through a share group of 1, 3 and 8 confluent-kafka
ShareConsumers on one partition, against a classic consumer group reading the same partition
in the same run (the ceiling), and the broker's CPU per acknowledged record.

    .venv/bin/python -m bench.share_groups [--records 100000] [--individual-records 5000]

- batch: explicit acknowledgement of every record, committed once per poll (one
  ShareAcknowledge, or a piggy-backed ShareFetch, per batch of up to max.poll.records).
- individual: every record acknowledged and committed on its own (commit_sync per record: one
  ShareAcknowledge round trip and one __share_group_state write per record); slow by design,
  so it runs on fewer records (--individual-records).
- each accepted once: every offset was confirmed acknowledged exactly once (no record was
  accepted twice, none was lost).
- classic: one confluent-kafka Consumer of a classic group on the same partition, committing
  once per batch of 500 (consume(500) then commit(asynchronous=False)).

A run counts a record once the broker confirmed its acknowledgement (the acknowledgement
commit callback). Records are 1 KiB. The broker runs as its own process (bench.common.Broker).
"""

from __future__ import annotations

import argparse
import threading
import time

from .common import Broker

TOPIC = "bench-share"
SIZE = 1024


def prefill(bootstrap: str, records: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: its futures need it alive
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000})
    value = b"x" * SIZE
    for _ in range(records):
        while True:
            try:
                p.produce(TOPIC, value)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(60)


def earliest(bootstrap: str, group: str) -> None:
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    resource = ConfigResource(ConfigResource.Type.GROUP, group, incremental_configs=[
        ConfigEntry("share.auto.offset.reset", "earliest",
                    incremental_operation=AlterConfigOpType.SET)])  # fmt: skip
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.incremental_alter_configs([resource])[resource].result(30)


def run_share(broker: Broker, consumers: int, records: int, individual: bool) -> dict:
    from confluent_kafka import ShareConsumer

    group = f"share-{consumers}-{'ind' if individual else 'batch'}-{time.monotonic_ns()}"
    earliest(broker.bootstrap, group)
    acked: set[int] = set()
    acks = [0]  # confirmed acknowledgements, duplicates included
    lock = threading.Lock()
    done = threading.Event()

    def on_ack(offsets, exception):
        if exception is None:
            with lock:
                for acked_offsets in offsets.values():
                    acked.update(acked_offsets)
                    acks[0] += len(acked_offsets)
                if len(acked) >= records:
                    done.set()

    def member(i: int) -> None:
        c = ShareConsumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                           "share.acknowledgement.mode": "explicit"})  # fmt: skip
        c.set_acknowledgement_commit_callback(on_ack)
        c.subscribe([TOPIC])
        try:
            while not done.is_set():
                msgs = c.poll(0.2)
                for m in msgs:
                    if m.error() is None:
                        c.acknowledge(m)
                        if individual:
                            c.commit_sync()
                if msgs and not individual:
                    c.commit_sync()
        finally:
            c.close()

    cpu0, t0 = broker.cpu(), time.monotonic()
    threads = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(consumers)]
    for t in threads:
        t.start()
    done.wait(600)
    seconds = time.monotonic() - t0
    cpu = broker.cpu() - cpu0
    done.set()
    for t in threads:
        t.join(60)
    n = min(len(acked), records)
    return {"records": n, "seconds": seconds, "rate": n / seconds, "cpu_us": cpu / max(n, 1) * 1e6,
            "once": acks[0] == len(acked) and len(acked) >= records}  # fmt: skip


def run_classic(broker: Broker, records: int) -> dict:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"classic-{time.monotonic_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    c.subscribe([TOPIC])
    n = 0
    cpu0, t0 = broker.cpu(), time.monotonic()
    while n < records:
        msgs = [m for m in c.consume(500, 1.0) if m.error() is None]
        n += len(msgs)
        if msgs:
            c.commit(asynchronous=False)
    seconds = time.monotonic() - t0
    cpu = broker.cpu() - cpu0
    c.close()
    return {"records": n, "seconds": seconds, "rate": n / seconds, "cpu_us": cpu / n * 1e6,
            "once": None}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--individual-records", type=int, default=5_000)
    ap.add_argument("--consumers", default="1,3,8")
    args = ap.parse_args()
    with Broker({"group.share.enable": "true"}) as broker:
        prefill(broker.bootstrap, args.records)
        classic = run_classic(broker, args.records)
        rows = [("classic group, 1 consumer, commit per 500", classic)]
        for n in [int(x) for x in args.consumers.split(",")]:
            rows.append((f"share group, {n} consumer(s), ack per poll batch",
                         run_share(broker, n, args.records, individual=False)))  # fmt: skip
        for n in [int(x) for x in args.consumers.split(",")]:
            rows.append((f"share group, {n} consumer(s), ack+commit per record",
                         run_share(broker, n, args.individual_records, individual=True)))  # fmt: skip
    print(f"\n## Share groups (1 partition, {SIZE} B records)\n")
    print("| run | records | records/s | vs classic | broker CPU per record | each accepted once |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        once = "-" if r["once"] is None else ("yes" if r["once"] else "NO")
        print(f"| {name} | {r['records']:,} | {r['rate']:,.0f} | "
              f"{r['rate'] / classic['rate']:.2f}x | {r['cpu_us']:.1f} µs | {once} |")  # fmt: skip


if __name__ == "__main__":
    main()

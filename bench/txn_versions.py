"""Transactions v1 against v2 (KIP-890 part 2): commit latency and cost per transaction.

    .venv/bin/python -m bench.txn_versions [--transactions 300] [--partitions 4] [--records 10]
                                           [--rounds 3]

No Python client speaks transactions v2 yet (librdkafka 2.16 stays on EndTxn v1), so both
producers are spoken on the wire here, each exactly as Kafka's Java producer does:

- v1: AddPartitionsToTxn v3 for the transaction's partitions, one Produce v11 per partition
  (acks=all), EndTxn v4.
- v2: one Produce v12 per partition (the leader adds the partition to the transaction), EndTxn
  v5 (the epoch is bumped and answered; the next transaction uses it).

Each transaction writes --records records to each of --partitions partitions. Reported per
protocol: EndTxn latency p50/p99 (the commit call), the whole transaction p50/p99 (first
request to commit answered), transactions per second and the broker's CPU per transaction.
The two alternate in --rounds rounds on one broker (a subprocess on 127.0.0.1), so load and
warm-up fall on both alike.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from .common import REPO, Broker, percentile
from .throughput import create_topic

sys.path.insert(0, str(REPO / "tests"))

from helpers import RawClient  # noqa: E402
from wire import produce_body, values_batch  # noqa: E402

from protocol.apis import ApiKey  # noqa: E402


class Producer:
    def __init__(self, port: int, txn_id: str, version: int):
        self.c = RawClient(port)
        self.txn_id = txn_id
        self.v2 = version == 2
        r = self.c.request(ApiKey.INIT_PRODUCER_ID, 5 if self.v2 else 4, {
            "transactional_id": txn_id, "transaction_timeout_ms": 60000,
            "producer_id": -1, "producer_epoch": -1,
        })  # fmt: skip
        assert r.error_code == 0, r
        self.pid, self.epoch = r.producer_id, r.producer_epoch
        self.seq: dict[int, int] = {}

    def transaction(self, topic: str, partitions: int, values: list[bytes]) -> float:
        """Run one committed transaction; returns the EndTxn round trip in seconds."""
        c = self.c
        if not self.v2:
            r = c.request(ApiKey.ADD_PARTITIONS_TO_TXN, 3, {
                "v3_and_below_transactional_id": self.txn_id,
                "v3_and_below_producer_id": self.pid, "v3_and_below_producer_epoch": self.epoch,
                "v3_and_below_topics": [{"name": topic, "partitions": list(range(partitions))}],
            })  # fmt: skip
            codes = {p.partition_error_code for t in r.results_by_topic_v3_and_below
                     for p in t.results_by_partition}  # fmt: skip
            assert codes == {0}, codes
        for p in range(partitions):
            seq = self.seq.get(p, 0)
            batch = values_batch(values, producer_id=self.pid, producer_epoch=self.epoch,
                                 base_sequence=seq, transactional=True)  # fmt: skip
            body = produce_body(topic, bytes(batch), p, transactional_id=self.txn_id)
            while True:
                r = c.request(ApiKey.PRODUCE, 12 if self.v2 else 11, body)
                code = r.responses[0].partition_responses[0].error_code
                if code != 51:  # CONCURRENT_TRANSACTIONS past the broker's retries: again
                    break
            assert code == 0, code
            self.seq[p] = seq + len(values)
        t0 = time.perf_counter()
        r = c.request(ApiKey.END_TXN, 5 if self.v2 else 4, {
            "transactional_id": self.txn_id, "producer_id": self.pid,
            "producer_epoch": self.epoch, "committed": True,
        })  # fmt: skip
        elapsed = time.perf_counter() - t0
        assert r.error_code == 0, r
        if self.v2:
            self.pid, self.epoch = r.producer_id, r.producer_epoch
            self.seq.clear()
        return elapsed

    def close(self) -> None:
        self.c.close()


def run(broker: Broker, version: int, topic: str, args) -> dict:
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    p = Producer(port, f"bench-v{version}-{uuid.uuid4().hex[:8]}", version)
    values = [b"x" * 100] * args.records
    commits, whole = [], []
    cpu0, t0 = broker.cpu(), time.perf_counter()
    for _ in range(args.transactions):
        s = time.perf_counter()
        commits.append(p.transaction(topic, args.partitions, values))
        whole.append(time.perf_counter() - s)
    elapsed = time.perf_counter() - t0
    cpu = broker.cpu() - cpu0
    p.close()
    return {"commits": commits, "whole": whole, "seconds": elapsed, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--transactions", type=int, default=300, help="per protocol per round")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--records", type=int, default=10, help="per partition per transaction")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"{args.transactions} transactions x {args.rounds} rounds per protocol, "
          f"{args.partitions} partitions x {args.records} records of 100 B each, acks=all")  # fmt: skip
    totals: dict[int, dict] = {1: {}, 2: {}}
    with Broker({"transaction.state.log.num.partitions": "3"}) as broker:
        topic = f"bench-txnv-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap, topic, args.partitions)
        for _ in range(args.rounds):
            for version in (1, 2):
                r = run(broker, version, topic, args)
                t = totals[version]
                for key in ("commits", "whole"):
                    t.setdefault(key, []).extend(r[key])
                t["seconds"] = t.get("seconds", 0) + r["seconds"]
                t["cpu"] = t.get("cpu", 0) + r["cpu"]
    for version in (1, 2):
        t = totals[version]
        commits, whole = sorted(t["commits"]), sorted(t["whole"])
        n = len(commits)
        print(f"transactions v{version}: EndTxn p50 {percentile(commits, 0.5) * 1000:.2f} ms "
              f"p99 {percentile(commits, 0.99) * 1000:.2f} ms; transaction p50 "
              f"{percentile(whole, 0.5) * 1000:.2f} ms p99 {percentile(whole, 0.99) * 1000:.2f} ms;"
              f" {n / t['seconds']:,.0f} txn/s; broker CPU {t['cpu'] / n * 1000:.2f} ms/txn")  # fmt: skip
    v1, v2 = sorted(totals[1]["whole"]), sorted(totals[2]["whole"])
    print(f"v2/v1 transaction p50: {percentile(v2, 0.5) / percentile(v1, 0.5):.2f}")


if __name__ == "__main__":
    main()

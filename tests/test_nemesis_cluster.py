"""A bounded nemesis on a real cluster (a private ZooKeeper and three broker processes) under an
idempotent acks=all producer (min.insync.replicas=2, RF 3, three partitions): SIGKILL of a
leader, SIGSTOP/SIGCONT of a leader (paused past its ZooKeeper session), SIGTERM of a broker that
leads some partitions and follows the others, SIGKILL of two brokers at once. Each fault waits for the cluster to
notice, then heals and waits for every ISR to be whole again. Afterwards every acknowledged
record is read back once, at its acknowledged offset -- by a consumer and from the segment
files of every replica."""

from __future__ import annotations

import glob
import os
import signal
import sys

import pytest
from cluster_helpers import AcksAllProducer, Cluster, assert_acked_once, read_all, wait_until
from helpers import RawClient
from zookeeper_server import zookeeper_missing

from protocol import records as rb
from protocol.apis import ApiKey

missing = zookeeper_missing()
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

TOPIC = "nemesis"
PARTITIONS = 3


def in_sync(cluster: Cluster) -> dict:
    return wait_until(
        lambda: (
            (v := cluster.agreed_partitions(TOPIC))
            and len(v) == PARTITIONS
            and all(p[0] >= 0 and len(p[3]) == 3 for p in v.values())
            and v
        ),
        timeout=40,
        what="every partition led with an ISR of 3",
    )


def leader_of(cluster: Cluster, p: int) -> int:
    return in_sync(cluster)[p][0]


def new_leader(cluster: Cluster, p: int, old: int, *gone: int) -> None:
    """Wait until the brokers other than `old` and `gone` (dead or paused: not asked) agree on
    a leader of p that is none of them."""

    def agreed():
        views = [cluster.partitions(TOPIC, b)[p][0] for b in cluster.brokers
                 if b not in (old, *gone)]  # fmt: skip
        return len(set(views)) == 1 and views[0] not in (-1, old, *gone)

    wait_until(agreed, timeout=30, what=f"a new leader of {TOPIC}-{p}")


def replica_files(data_dir: str, p: int) -> dict[bytes, list[int]]:
    """value -> offsets, read from a replica's segment files."""
    out: dict[bytes, list[int]] = {}
    for path in sorted(glob.glob(os.path.join(data_dir, f"{TOPIC}-{p}", "*.log"))):
        with open(path, "rb") as f:
            data = f.read()
        for pos, _header in rb.scan_batches(data):
            for rec in rb.decode_records(data, pos):
                out.setdefault(rec.value, []).append(rec.offset)
    return out


def test_nemesis(tmp_path):
    cluster = Cluster(str(tmp_path), overrides={"auto.leader.rebalance.enable": "false"}).start()
    try:
        client = RawClient(cluster.brokers[1].port)
        try:
            body = {"topics": [{"name": TOPIC, "num_partitions": PARTITIONS,
                                "replication_factor": 3, "assignments": [],
                                "configs": [{"name": "min.insync.replicas", "value": "2"}]}],
                    "timeout_ms": 10000, "validate_only": False}  # fmt: skip
            assert client.request(ApiKey.CREATE_TOPICS, 5, body).topics[0].error_code == 0
        finally:
            client.close()
        in_sync(cluster)
        with AcksAllProducer(cluster.bootstrap(), TOPIC, PARTITIONS) as producer:

            def progress(what: str) -> None:
                acks = len(producer.acked)
                wait_until(lambda: len(producer.acked) > acks + 100, timeout=40,
                           what=f"acks after {what}")  # fmt: skip
                print(f"{what}: {len(producer.acked)} acks", file=sys.stderr)

            progress("start")
            # 1. SIGKILL the leader of partition 0.
            victim = leader_of(cluster, 0)
            cluster.kill(victim)
            new_leader(cluster, 0, victim)
            cluster.start_broker(victim)
            in_sync(cluster)
            progress("leader SIGKILL")
            # 2. Pause the leader of partition 1 past its session, then let it go on.
            victim = leader_of(cluster, 1)
            paused = cluster.brokers[victim]
            os.kill(paused.proc.pid, signal.SIGSTOP)
            try:
                new_leader(cluster, 1, victim)
            finally:
                os.kill(paused.proc.pid, signal.SIGCONT)
            in_sync(cluster)
            progress("leader SIGSTOP/SIGCONT")
            # 3. SIGTERM a broker leading some partitions and following others (RF 3: it
            #    follows every partition it doesn't lead); if one broker leads them all, it.
            view = in_sync(cluster)
            leads = {b: sum(v[0] == b for v in view.values()) for b in cluster.brokers}
            victim = next(
                (b for b, n in leads.items() if 0 < n < PARTITIONS), max(leads, key=leads.get)
            )
            assert cluster.terminate(victim) == 0
            cluster.start_broker(victim)
            in_sync(cluster)
            progress("leader and follower SIGTERM")
            # 4. SIGKILL two brokers at once: the leader of partition 0 and one other.
            first = leader_of(cluster, 0)
            second = next(b for b in cluster.brokers if b != first)
            cluster.kill(first)
            cluster.kill(second)
            new_leader(cluster, 0, first, second)
            cluster.start_broker(first)
            cluster.start_broker(second)
            in_sync(cluster)
            progress("two brokers SIGKILL")
        assert producer.errors == [] and producer.remaining == 0
        assert_acked_once(producer, read_all(cluster.bootstrap(), TOPIC, PARTITIONS))
        # Every replica's files hold every acknowledged record, once, at its offset.
        for node_id, broker in cluster.brokers.items():
            files = {p: replica_files(broker.data_dir, p) for p in range(PARTITIONS)}
            for value, (p, offset) in producer.acked.items():
                assert files[p].get(value) == [offset], (node_id, p, value)
        print(f"nemesis: {len(producer.acked)} acks, {producer.sent} sent", file=sys.stderr)
    finally:
        cluster.stop()

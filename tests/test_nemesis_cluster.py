"""A bounded nemesis on a real cluster (a private ZooKeeper and three broker processes) under an
idempotent acks=all producer (min.insync.replicas=2, RF 3, three partitions): SIGKILL of a
leader, SIGSTOP/SIGCONT of a leader (paused past its ZooKeeper session), SIGTERM of a broker that
leads some partitions and follows the others, SIGKILL of two brokers at once. Each fault waits for the cluster to
notice, then heals and waits for every ISR to be whole again. Afterwards every acknowledged
record is read back once, at its acknowledged offset -- by a consumer and from the segment
files of every replica.

"No acks while fewer than min.insync.replicas replicas were in sync" is checked two ways that
do not take the brokers' word for it:
- ISR history: the test watches every partition's state znode in ZooKeeper itself and keeps
  each ISR it sees with its znode's mtime (ZooKeeper's clock: this machine's wall clock); every
  acknowledged record's window (handed to the producer .. ack seen, wall clock) must overlap a
  time when its partition's ISR had >= 2 members.
- Files at a kill: SIGKILLed brokers' segment files are frozen at the kill (the page cache
  survives a process kill), and are read before they restart, with the survivors' files read
  at once: every record acknowledged before the kill must be found, at its offset, in at least
  2 of the 3 replicas' files (a leader acking with an ISR of one would have it in one only)."""

from __future__ import annotations

import glob
import json
import os
import signal
import sys
import threading
import time

import pytest
from cluster_helpers import AcksAllProducer, Cluster, assert_acked_once, read_all, wait_until
from helpers import RawClient
from kazoo.client import KazooClient
from zookeeper_server import zookeeper_missing

from protocol import records as rb
from protocol.apis import ApiKey

missing = zookeeper_missing()
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

TOPIC = "nemesis"
PARTITIONS = 3
MIN_ISR = 2
# ISR changes are timed by their znode's mtime (ZooKeeper's clock, this machine's wall clock),
# set before the write commits, so before any broker acts on it: an ack the expansion allowed is
# seen after it. The slack covers only millisecond rounding.
MTIME_SLACK = 0.05


class IsrHistory:
    """Every ISR of each partition's state znode this test saw, with its mtime (seconds)."""

    def __init__(self, connect: str):
        self.zk = KazooClient(hosts=connect)
        self.zk.start(10)
        self.lock = threading.Lock()
        self.seen: dict[int, list[tuple[float, list[int]]]] = {p: [] for p in range(PARTITIONS)}
        for p in range(PARTITIONS):
            self.zk.DataWatch(f"/brokers/topics/{TOPIC}/partitions/{p}/state", self._watcher(p))

    def _watcher(self, p: int):
        # Two parameters: kazoo passes the event too to a function taking three.
        def changed(data: bytes | None, stat) -> None:
            if data:
                with self.lock:
                    self.seen[p].append((stat.mtime / 1000, json.loads(data)["isr"]))

        return changed

    def largest_isr(self, p: int, start: float, end: float) -> int:
        """The largest ISR of p in effect at some time in [start, end]."""
        with self.lock:
            history = list(self.seen[p])
        history.sort(key=lambda e: e[0])
        before = [isr for t, isr in history if t <= start]
        during = [isr for t, isr in history if start < t <= end + MTIME_SLACK]
        return max((len(isr) for isr in before[-1:] + during), default=0)

    def stop(self) -> None:
        self.zk.stop()
        self.zk.close()


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


def snapshot(cluster: Cluster, node_ids) -> dict[int, dict[int, dict[bytes, list[int]]]]:
    """node -> partition -> value -> offsets, from each broker's segment files now."""
    return {n: {p: replica_files(os.path.join(cluster.work_dir, f"broker{n}"), p)
                for p in range(PARTITIONS)} for n in node_ids}  # fmt: skip


def assert_on_min_isr(producer: AcksAllProducer, files, killed_at: float, what: str) -> int:
    """Every record acknowledged before `killed_at` is in >= MIN_ISR replicas' files, at its
    acknowledged offset. Returns how many were checked."""
    checked = 0
    for value, (p, offset) in list(producer.acked.items()):
        if producer.acked_at[value] >= killed_at:
            continue
        holders = [n for n, parts in files.items() if offset in parts[p].get(value, ())]
        assert len(holders) >= MIN_ISR, (what, p, offset, value, holders)
        checked += 1
    return checked


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
        history = IsrHistory(f"{cluster.zk.connect}/pykbroker")
        wait_until(lambda: all(history.seen.values()), what="the ISR watches")
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
            killed_at = time.time()  # the clock of acked_at
            files = snapshot(cluster, [1, 2, 3])
            checked = assert_on_min_isr(producer, files, killed_at, "leader SIGKILL")
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
            killed_at = time.time()  # the clock of acked_at
            files = snapshot(cluster, [1, 2, 3])
            checked += assert_on_min_isr(producer, files, killed_at, "two brokers SIGKILL")
            new_leader(cluster, 0, first, second)
            cluster.start_broker(first)
            cluster.start_broker(second)
            in_sync(cluster)
            progress("two brokers SIGKILL")
        assert producer.errors == [] and producer.remaining == 0
        history.stop()
        # No ack while ZooKeeper's ISR was below min.insync.replicas the whole time.
        under = [(p, producer.sent_at[v], producer.acked_at[v])
                 for v, (p, _offset) in producer.acked.items()
                 if history.largest_isr(p, producer.sent_at[v], producer.acked_at[v]) < MIN_ISR]  # fmt: skip
        assert under == [], under[:5]
        shrunk = sum(len(isr) < MIN_ISR for h in history.seen.values() for _, isr in h)
        assert shrunk, "the two-broker kill left some ISR of one (else the check proves little)"
        assert_acked_once(producer, read_all(cluster.bootstrap(), TOPIC, PARTITIONS))
        # Every replica's files hold every acknowledged record, once, at its offset.
        for node_id, broker in cluster.brokers.items():
            files = {p: replica_files(broker.data_dir, p) for p in range(PARTITIONS)}
            for value, (p, offset) in producer.acked.items():
                assert files[p].get(value) == [offset], (node_id, p, value)
        print(f"nemesis: {len(producer.acked)} acks, {producer.sent} sent, {checked} checked in "
              f">= {MIN_ISR} replicas' files at kills, {shrunk} ISRs below min seen", file=sys.stderr)  # fmt: skip
    finally:
        cluster.stop()

"""Partitions hosted by this broker, their replication, and the purgatory of waiting requests.

A Partition wraps a Log with its leadership state (leader, epoch, replicas, ISR) and decides the
high watermark. On a single broker the ISR is just this broker, so the HW follows the LEO.

In a cluster (ZooKeeper mode) the leader tracks each follower's log end offset from its Fetch
requests, advances the HW to the smallest LEO in the ISR, drops followers that have not caught
up for replica.lag.time.max.ms from the ISR and adds them back once they have (writing the ISR
to ZooKeeper, conditionally, as Kafka's ZooKeeper-mode leaders do). A follower fetches from
its leader with the replica fetcher (replica_fetcher.py) and truncates to its HW whenever it
starts following a different leader (once it reaches that leader: a broker that can't reach
anyone keeps its log, in case it must lead), so its log stays a prefix of the leader's. HWs are
checkpointed to `replication-offset-checkpoint` in each log dir, so a restarted broker knows
how far its log is known to be committed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable, Iterable

import structlog

from protocol.errors import ErrorCode, KafkaError
from pykbroker.cluster.follower import diverging_epoch
from pykbroker.cluster.leader_epoch import LeaderEpochCache
from pykbroker.cluster.metadata import PartitionState, TopicInfo, registered_after
from pykbroker.config import LogConfig
from pykbroker.quota.replication import ReplicationQuota
from pykbroker.storage.checkpoints import format_offsets, read_offsets
from pykbroker.storage.files import atomic_write
from pykbroker.storage.log import AppendInfo, Log
from pykbroker.storage.log_dir_failure import is_out_of_space
from pykbroker.storage.log_manager import LogManager

log = structlog.get_logger(__name__)

HW_CHECKPOINT_FILE = "replication-offset-checkpoint"


def now_ms() -> int:
    return int(time.monotonic() * 1000)


class FollowerState:
    """What the leader knows of one follower (Kafka's Replica state)."""

    __slots__ = ("leo", "last_caught_up_ms", "last_fetch_ms", "last_fetch_leader_leo")

    def __init__(self, caught_up_ms: int):
        self.leo = -1  # unknown until it fetches from this leader
        self.last_caught_up_ms = caught_up_ms
        self.last_fetch_ms = 0
        self.last_fetch_leader_leo = -1


class Partition:
    __slots__ = (
        "topic", "index", "log", "state", "node_id", "waiters", "followers", "pending_isr",
        "isr_listener", "epoch_cache", "clock",
    )  # fmt: skip

    def __init__(self, topic: str, index: int, log: Log, state: PartitionState, node_id: int):
        self.topic = topic
        self.index = index
        self.log = log
        self.state = state
        self.node_id = node_id
        self.waiters: set[asyncio.Future] = set()
        self.followers: dict[int, FollowerState] = {}
        self.pending_isr: list[int] | None = None  # an ISR change being written to ZooKeeper
        self.isr_listener: Callable[[Partition, list[int]], None] | None = None
        # Where each leader epoch starts in the log (cluster only; a single broker is epoch 0).
        self.epoch_cache: LeaderEpochCache | None = None
        self.clock: Callable[[], int] = now_ms  # milliseconds; the simulator brings its own

    @property
    def is_leader(self) -> bool:
        return self.state.leader == self.node_id

    @property
    def leader_epoch(self) -> int:
        return self.state.leader_epoch

    @property
    def follower_leos(self) -> dict[int, int]:
        return {r: f.leo for r, f in self.followers.items()}

    def check_leader(self, current_leader_epoch: int = -1) -> None:
        if current_leader_epoch >= 0:
            if current_leader_epoch < self.state.leader_epoch:
                raise KafkaError(ErrorCode.FENCED_LEADER_EPOCH)
            if current_leader_epoch > self.state.leader_epoch:
                raise KafkaError(ErrorCode.UNKNOWN_LEADER_EPOCH)
        if not self.is_leader:
            raise KafkaError(
                ErrorCode.NOT_LEADER_OR_FOLLOWER,
                f"{self.topic}-{self.index} is led by {self.state.leader}",
            )

    def append_as_leader(self, records: memoryview, required_acks: int) -> AppendInfo:
        self.check_leader()
        min_isr = self.log.config["min.insync.replicas"]
        if required_acks == -1 and len(self.state.isr) < min_isr:
            raise KafkaError(
                ErrorCode.NOT_ENOUGH_REPLICAS,
                f"The size of the current ISR {self.state.isr} is insufficient to satisfy the "
                f"min.isr requirement of {min_isr} for partition {self.topic}-{self.index}",
            )
        info = self.log.append_as_leader(records, self.state.leader_epoch)
        self.maybe_advance_high_watermark()
        self.wake()  # followers wait for the LEO, not the HW
        return info

    def replication_status(self, required_offset: int) -> int | None:
        """acks=all: None while the HW is below required_offset, else the produce's error code
        (Kafka's checkEnoughReplicasReachOffset)."""
        if not self.is_leader:
            return ErrorCode.NOT_LEADER_OR_FOLLOWER
        if self.log.high_watermark < required_offset:
            return None
        if len(self.state.isr) < self.log.config["min.insync.replicas"]:
            return ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        return ErrorCode.NONE

    async def wait_for_replication(self, required_offset: int, deadline: float) -> int:
        """acks=all: wait (until `deadline`, in loop time) for replication_status to decide;
        REQUEST_TIMED_OUT if it doesn't (Kafka's DelayedProduce)."""
        loop = asyncio.get_running_loop()
        while (status := self.replication_status(required_offset)) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return ErrorCode.REQUEST_TIMED_OUT
            fut = loop.create_future()
            self.waiters.add(fut)
            try:
                await asyncio.wait((fut,), timeout=remaining)
            finally:
                self.waiters.discard(fut)
        return status

    # --- the leader's view of its followers ---------------------------------------------------

    def reset_followers(self) -> None:
        """On becoming leader: every follower's LEO is unknown; ISR members count as caught up
        now (they get replica.lag.time.max.ms to show they are)."""
        now = self.clock()
        self.followers = {r: FollowerState(now) for r in self.state.replicas if r != self.node_id}
        self.pending_isr = None

    def update_follower(self, replica_id: int, fetch_offset: int) -> None:
        """A follower's fetch offset is its LEO: it may move the HW and the ISR."""
        f = self.followers.get(replica_id)
        if f is None:
            if replica_id not in self.state.replicas:
                return
            f = self.followers[replica_id] = FollowerState(0)
        now = self.clock()
        leader_leo = self.log.log_end_offset
        if fetch_offset >= leader_leo:
            f.last_caught_up_ms = max(f.last_caught_up_ms, now)
        elif fetch_offset >= f.last_fetch_leader_leo:
            f.last_caught_up_ms = max(f.last_caught_up_ms, f.last_fetch_ms)
        f.last_fetch_leader_leo = leader_leo
        f.last_fetch_ms = now
        f.leo = fetch_offset
        self.maybe_expand_isr(replica_id)
        if self.maybe_advance_high_watermark():
            self.wake()

    def maybe_expand_isr(self, replica_id: int) -> None:
        """A follower not in the ISR joins it once it has caught up to the HW."""
        if self.isr_listener is None or self.pending_isr is not None or not self.is_leader:
            return
        if replica_id in self.state.isr:
            return
        f = self.followers[replica_id]
        # Caught up: to the HW, and into this leader's epoch (so it holds all it committed).
        epoch_start = self.epoch_start_offset() or 0
        if f.leo >= self.log.high_watermark and f.leo >= epoch_start:
            self._change_isr([*self.state.isr, replica_id])

    def epoch_start_offset(self) -> int | None:
        """Where the current leader epoch starts in this log (None on a single broker, whose
        one epoch starts at 0)."""
        cache = self.epoch_cache
        if cache is None or not cache.offsets:
            return None
        return cache.offsets[-1]

    def high_watermark_lagging(self) -> bool:
        """A new leader learns the HW its followers reach only from their next fetches; until
        it covers the start of its own epoch, what it knows is older than what the previous
        leader acknowledged (KIP-207: answer OFFSET_NOT_AVAILABLE rather than that)."""
        start = self.epoch_start_offset()
        return start is not None and start > self.log.high_watermark

    def out_of_sync_replicas(self, lag_ms: int) -> list[int]:
        now = self.clock()
        return [
            r
            for r in self.state.isr
            if r != self.node_id
            and (f := self.followers.get(r)) is not None
            and now - f.last_caught_up_ms > lag_ms
        ]

    def maybe_shrink_isr(self, lag_ms: int) -> None:
        if self.isr_listener is None or self.pending_isr is not None or not self.is_leader:
            return
        lagging = self.out_of_sync_replicas(lag_ms)
        if lagging:
            self._change_isr([r for r in self.state.isr if r not in lagging])

    def _change_isr(self, isr: list[int]) -> None:
        self.pending_isr = isr
        self.isr_listener(self, isr)

    def isr_change_done(self) -> None:
        self.pending_isr = None
        if self.maybe_advance_high_watermark():
            self.wake()

    def end_offset_for_epoch(self, requested: int) -> tuple[int, int]:
        """OffsetsForLeaderEpoch: (largest epoch <= requested, where it ends in this log)."""
        cache = self.epoch_cache
        if cache is None:  # a single broker: every record is from its one epoch
            cache = LeaderEpochCache(None)
            cache._append(self.state.leader_epoch, 0)
        return cache.end_offset_for(requested, self.log.log_end_offset)

    def diverging_epoch(self, fetch_offset: int, last_fetched_epoch: int) -> tuple[int, int] | None:
        """Fetch v12+: does the fetcher's log diverge from ours at its last fetched epoch?
        (epoch, end offset) to answer as diverging_epoch, else None (KIP-320)."""
        if last_fetched_epoch < 0:
            return None
        cache = self.epoch_cache
        if cache is None:  # a single broker: every record is from its one epoch
            cache = LeaderEpochCache(None)
            cache._append(self.state.leader_epoch, 0)
        return diverging_epoch(cache, self.log.log_end_offset, fetch_offset, last_fetched_epoch)

    def follower_fetch(self, replica_id: int, fetch_offset: int, last_fetched_epoch: int
                       ) -> tuple[int, int] | None:  # fmt: skip
        """A follower's Fetch: validated first (diverging epoch, offset range), and only then is
        its fetch offset taken as its LEO for the HW and the ISR. Returns the diverging epoch to
        answer, if any; raises OFFSET_OUT_OF_RANGE, or NOT_LEADER_OR_FOLLOWER for a broker not
        among its replicas (Kafka's followerReplicaOrThrow)."""
        if replica_id == self.node_id or replica_id not in self.state.replicas:
            raise KafkaError(
                ErrorCode.NOT_LEADER_OR_FOLLOWER,
                f"Received fetch request from follower {replica_id} for partition "
                f"{self.topic}-{self.index} which is not among its replicas {self.state.replicas}",
            )
        diverging = self.diverging_epoch(fetch_offset, last_fetched_epoch)
        if diverging is None:
            self.log.check_fetch_offset(fetch_offset)
            self.update_follower(replica_id, fetch_offset)
        return diverging

    def aborted_transactions(self, fetch_offset: int, region) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping a read_committed fetch."""
        return self.log.aborted_transactions(fetch_offset, region)

    def last_stable_offset(self) -> int:
        """The LSO: the HW, or the first offset of the oldest undecided transaction if lower."""
        return self.log.last_stable_offset()

    def maybe_advance_high_watermark(self) -> bool:
        """HW = the smallest LEO among in-sync replicas; only ever moves forward on a leader.
        While an ISR expansion is being written, the joining follower already counts (Kafka's
        "maximal ISR"), so the HW never passes a record the new ISR lacks."""
        if not self.is_leader:
            return False
        hw = self.log.log_end_offset
        isr = self.state.isr
        if self.pending_isr is not None:
            isr = set(isr) | set(self.pending_isr)
        for replica in isr:
            if replica != self.node_id:
                f = self.followers.get(replica)
                if f is None or f.leo < 0:
                    return False  # a follower we haven't heard from yet holds the HW back
                hw = min(hw, f.leo)
        if hw > self.log.high_watermark:
            return self.log.update_high_watermark(hw)
        return False

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


LeadershipListener = Callable[[str, int, bool, int], None]


class ReplicaManager:
    def __init__(self, node_id: int, log_manager: LogManager, log_config_for, metadata=None,
                 config=None):  # fmt: skip
        self.node_id = node_id
        self.log_manager = log_manager
        self.log_config_for = log_config_for  # topic -> LogConfig
        self.metadata = metadata
        self.config = config
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.fetchers = None  # ReplicaFetcherManager, in a cluster
        self.leadership_listeners: list[LeadershipListener] = []
        # In a cluster, leadership is acted on only once this broker is registered.
        self.ready = metadata is None
        self._deferred: dict[tuple[str, int], PartitionState] = {}
        self.stopping = False  # shutting down: partition state changes are no longer acted on
        self._tasks: set[asyncio.Task] = set()
        if metadata is not None and log_manager is not None:
            log_manager.failure_channel.failure_listeners.append(self.log_dir_failed)
        # Reassignment throttles on what this broker serves its followers (quota/replication.py).
        self.leader_quota = None
        if metadata is not None and config is not None:
            self.leader_quota = ReplicationQuota("leader", node_id, config, metadata.topic_configs)

    # --- queries (also for the group coordinator) --------------------------------------------

    def is_leader(self, topic: str, index: int) -> bool:
        """Does this broker lead the partition right now?"""
        p = self.partitions.get((topic, index))
        return p is not None and p.is_leader

    def add_leadership_listener(self, fn: LeadershipListener) -> None:
        """fn(topic, partition, is_leader, leader_epoch) on every change of this broker's role
        for a partition it hosts (Kafka's onLeadershipChange: coordinators load or unload)."""
        self.leadership_listeners.append(fn)

    def get(self, topic: str, index: int) -> Partition:
        p = self.partitions.get((topic, index))
        if p is None:
            if self.metadata is not None and self._known(topic, index):
                raise KafkaError(
                    ErrorCode.NOT_LEADER_OR_FOLLOWER,
                    f"Broker {self.node_id} is not a replica of {topic}-{index}",
                )
            raise KafkaError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"This server does not host this topic-partition: {topic}-{index}",
            )
        if p.log.log_dir.offline:  # Kafka's HostedPartition.Offline
            raise KafkaError(
                ErrorCode.KAFKA_STORAGE_ERROR,
                f"Partition {topic}-{index} is in an offline log directory",
            )
        return p

    def _known(self, topic: str, index: int) -> bool:
        info = self.metadata.topic(topic)
        return info is not None and 0 <= index < len(info.partitions)

    def get_leader(self, topic: str, index: int, current_leader_epoch: int = -1) -> Partition:
        p = self.get(topic, index)
        p.check_leader(current_leader_epoch)
        return p

    def get_for_consumer(self, topic: str, index: int, current_leader_epoch: int = -1) -> Partition:
        """A consumer's Fetch v11+ (KIP-392): the leader, or a follower that knows its leader
        (it serves up to its own HW), fenced by the leader epoch as Kafka's followers do."""
        p = self.get(topic, index)
        if p.is_leader or self.metadata is None or p.state.leader < 0:
            p.check_leader(current_leader_epoch)
            return p
        if current_leader_epoch >= 0:
            if current_leader_epoch < p.state.leader_epoch:
                raise KafkaError(ErrorCode.FENCED_LEADER_EPOCH)
            if current_leader_epoch > p.state.leader_epoch:
                raise KafkaError(ErrorCode.UNKNOWN_LEADER_EPOCH)
        return p

    def preferred_read_replica(self, p: Partition, client_rack: str | None,
                               fetch_offset: int) -> int:  # fmt: skip
        """The leader's answer to a consumer in `client_rack` (Kafka's RackAwareReplicaSelector,
        with replica.selector.class set): a replica in the client's rack that holds
        `fetch_offset` and is in the ISR, else -1 (read here). The leader wins if it is in that
        rack, else the most caught-up one."""
        if not client_rack or self.metadata is None or not p.is_leader:
            return -1
        racks = {b.node_id: b.rack for b in self.metadata.brokers()}
        candidates = [(p.log.log_end_offset, p.node_id)] + [
            (f.leo, r) for r, f in p.followers.items()
            if r in p.state.isr and r in racks and f.leo >= fetch_offset
            and p.log.log_start_offset <= fetch_offset
        ]  # fmt: skip
        same_rack = [(leo, r) for leo, r in candidates if racks.get(r) == client_rack]
        if not same_rack or any(r == p.node_id for _, r in same_rack):
            return -1
        return max(same_rack)[1]

    def add_waiter(self, keys: Iterable[tuple[str, int]], fut: asyncio.Future) -> list[Partition]:
        parts = []
        for key in keys:
            p = self.partitions.get(key)
            if p is not None:
                p.waiters.add(fut)
                parts.append(p)
        return parts

    # --- topics -------------------------------------------------------------------------------

    def ensure_partitions(self, topic: TopicInfo, start: int = 0, stop: int | None = None) -> None:
        """Open (or create) the logs of the partitions of `topic` (those in [start, stop)) this
        broker replicates."""
        config = self.log_config_for(topic.name)
        for index in range(start, len(topic.partitions) if stop is None else stop):
            state = topic.partitions[index]
            if self.node_id not in state.replicas:
                continue
            key = (topic.name, index)
            existing = self.partitions.get(key)
            if existing is not None:
                if self.metadata is None:
                    existing.state = state
                continue
            log = self._open_log(topic, index, config)
            p = self.partitions[key] = Partition(topic.name, index, log, state, self.node_id)
            if self.metadata is not None:
                p.epoch_cache = LeaderEpochCache.load(log.dir, log.log_end_offset, _epoch_scan(log))
                # Known state only through partition_state_changed; until then, no role.
                p.state = PartitionState(-1, -1, state.replicas, [], -2)
                if state.zk_version >= 0:
                    self.partition_state_changed(topic, index, state)
            if self.log_manager.resumable:
                self.log_manager.resume_move(p)  # a move between log dirs cut short

    def replicas_changed(self, topic: TopicInfo) -> None:
        """A topic's assignment changed (a reassignment started, completed or was cancelled):
        replicas this broker no longer holds stop and their logs go (Kafka's StopReplica with
        delete); a leader learns its new set of followers."""
        for index, st in enumerate(topic.partitions):
            p = self.partitions.get((topic.name, index))
            if p is None:
                continue
            if self.node_id not in st.replicas:
                log.info("replica_removed", topic=topic.name, partition=index, replicas=st.replicas)
                self._remove_partition(topic.name, index)
                continue
            if p.state is not st:
                p.state.replicas = st.replicas
            for r in [r for r in p.followers if r not in st.replicas]:
                del p.followers[r]

    def _remove_partition(self, name: str, index: int) -> None:
        p = self.partitions.pop((name, index), None)
        if p is not None:
            was_leader = p.is_leader
            if self.fetchers is not None:
                self.fetchers.remove_partition(p)
            p.state = PartitionState(-1, -1, p.state.replicas, [], -2)
            p.wake()
            if was_leader:
                for fn in self.leadership_listeners:
                    try:
                        fn(p.topic, p.index, False, -1)
                    except Exception:
                        log.exception("leadership_listener_failed", topic=p.topic, partition=index)
        self.log_manager.delete(name, index)

    def _open_log(self, topic: TopicInfo, index: int, config: LogConfig) -> Log:
        """The partition's log, holding this topic's id in partition.metadata. A log of an
        older topic of the same name (deleted and re-created while this broker was away) is set
        aside as a stray, as Kafka does, and a new one is created: never served as this one."""
        log_ = self.log_manager.get_or_create(topic.name, index, config)
        if log_.topic_id is not None and log_.topic_id != topic.topic_id:
            log.warning(
                "inconsistent_topic_id", topic=topic.name, partition=index,
                log_topic_id=str(log_.topic_id), topic_id=str(topic.topic_id),
            )  # fmt: skip
            self.log_manager.mark_stray(topic.name, index)
            log_ = self.log_manager.get_or_create(topic.name, index, config)
        self._assign_topic_id(log_, topic.topic_id)
        return log_

    def _assign_topic_id(self, log_: Log, topic_id) -> None:
        try:
            log_.assign_topic_id(topic_id)
        except OSError as e:  # a full disk: the next start assigns it again
            log.warning("partition_metadata_not_written", dir=log_.dir, error=repr(e))

    def adopt_topic_id(self, topic: TopicInfo) -> None:
        """The topic's id was settled elsewhere (an id-less znode another broker gave its id
        first): the same topic, so its logs take that id."""
        for (name, _), p in self.partitions.items():
            if name == topic.name:
                self._assign_topic_id(p.log, topic.topic_id)

    def remove_topic(self, name: str, partition_count: int) -> None:
        for index in range(partition_count):
            p = self.partitions.pop((name, index), None)
            if p is not None:
                if self.fetchers is not None:
                    self.fetchers.remove_partition(p)
                p.state = PartitionState(-1, -1, p.state.replicas, [], -2)
                p.wake()
            self.log_manager.delete(name, index)

    def update_config(self, topic: str) -> None:
        config = self.log_config_for(topic)
        for (name, _), p in self.partitions.items():
            if name == topic:
                p.log.config = config

    def update_all_configs(self) -> None:
        """The topics' defaults changed (dynamic broker configs): every log's LogConfig anew."""
        configs: dict[str, LogConfig] = {}
        for (name, _), p in self.partitions.items():
            if name not in configs:
                configs[name] = self.log_config_for(name)
            p.log.config = configs[name]

    def delete_stray_logs(self) -> None:
        """Set aside logs of partitions this broker no longer replicates (deleted while it was
        down), as Kafka does with stray logs."""
        for topic, index in list(self.log_manager.logs):
            info = self.metadata.topic(topic)
            if (
                info is None
                or index >= len(info.partitions)
                or self.node_id not in info.partitions[index].replicas
            ):
                self.log_manager.mark_stray(topic, index)

    # --- leadership (cluster) -----------------------------------------------------------------

    def partition_state_changed(self, topic: TopicInfo, index: int, state: PartitionState) -> None:
        """A new state znode for a partition: become leader or follower as it says."""
        if self.stopping:
            return
        p = self.partitions.get((topic.name, index))
        if p is None:
            if self.node_id in state.replicas:
                self.ensure_partitions(topic)  # calls back here once the log is open
            return
        if not self.ready:
            self._deferred[(topic.name, index)] = state
            return
        self._transition(p, self._role_state(p, state))

    def registration_changed(self) -> None:
        """This broker's registration is known now: a state naming it leader that arrived
        first (the controller may see the registration before the broker learns its czxid)
        was not acted on; look at it again."""
        if not self.ready or self.metadata is None:
            return
        for (name, index), p in self.partitions.items():
            info = self.metadata.topic(name)
            if info is None or index >= len(info.partitions):
                continue
            st = info.partitions[index]
            if (st.leader == self.node_id and p.state.leader != self.node_id
                    and st.zk_version == p.state.zk_version):  # fmt: skip
                self._transition(p, self._role_state(p, st))

    def _role_state(self, p: Partition, state: PartitionState) -> PartitionState:
        """A leadership decided before this broker's current registration, or by a controller
        that saw an earlier registration of it (Kafka's broker epoch check of LeaderAndIsr), is
        not acted on: it was about an earlier run, whose log may have lost since what it
        acknowledged then (unflushed writes, power loss) while its followers still have it. No
        role until the controller writes a new state (Controller: `restarted_since`)."""
        registration = getattr(self.metadata, "registration_zxid", -1)
        if state.leader == self.node_id and (
            registered_after(state, registration) or 0 <= state.leader_registration != registration
        ):
            log.info("stale_leadership_ignored", topic=p.topic, partition=p.index,
                     leader_epoch=state.leader_epoch)  # fmt: skip
            return dataclasses.replace(state, leader=-1)
        return state

    def _transition(self, p: Partition, state: PartitionState) -> None:
        old = p.state
        was_leader = p.is_leader
        p.state = state
        if state.leader == self.node_id:
            if not was_leader or old.leader_epoch != state.leader_epoch:
                self._make_leader(p, was_leader)
            elif p.pending_isr is not None and state.isr == p.pending_isr:
                p.isr_change_done()
            elif p.maybe_advance_high_watermark():  # a smaller ISR may let the HW move
                p.wake()
        elif state.leader >= 0:
            self._make_follower(p, old, was_leader)
        else:
            if self.fetchers is not None:
                self.fetchers.remove_partition(p)
            p.wake()
        if was_leader != p.is_leader:
            for fn in self.leadership_listeners:
                try:
                    fn(p.topic, p.index, p.is_leader, state.leader_epoch)
                except Exception:
                    log.exception("leadership_listener_failed", topic=p.topic, partition=p.index)

    def _make_leader(self, p: Partition, was_leader: bool) -> None:
        if self.fetchers is not None:
            self.fetchers.remove_partition(p)
        if not was_leader:
            p.reset_followers()
        if p.epoch_cache is not None:
            p.epoch_cache.assign(p.state.leader_epoch, p.log.log_end_offset)
        p.pending_isr = None
        p.isr_listener = self._write_isr
        log.info(
            "became_leader", topic=p.topic, partition=p.index, leader_epoch=p.state.leader_epoch,
            isr=p.state.isr, log_end_offset=p.log.log_end_offset, high_watermark=p.log.high_watermark,
        )  # fmt: skip
        if p.maybe_advance_high_watermark():
            p.wake()

    def _make_follower(self, p: Partition, old: PartitionState, was_leader: bool) -> None:
        p.followers = {}
        p.pending_isr = None
        p.isr_listener = None
        fetchers = self.fetchers
        # Only a change that leaves leader and epoch alone (an ISR change) keeps the fetch going.
        # A new epoch under the same leader (A -> B -> A between two watch firings) may hide a
        # divergence as well as a new leader does: start over with truncation, as Kafka's
        # makeFollower does on any epoch change.
        unchanged = (
            not was_leader
            and old.leader == p.state.leader
            and old.leader_epoch == p.state.leader_epoch
            and fetchers is not None
            and fetchers.is_fetching(p, p.state.leader)
        )
        if unchanged:
            fetchers.update_epoch(p, p.state.leader_epoch)
        else:
            if fetchers is not None:
                fetchers.remove_partition(p)
            log.info(
                "became_follower", topic=p.topic, partition=p.index, leader=p.state.leader,
                leader_epoch=p.state.leader_epoch, log_end_offset=p.log.log_end_offset,
            )  # fmt: skip
            if fetchers is not None:
                fetchers.add_partition(p, p.state.leader)
        p.wake()  # pending produces and fetches answer NOT_LEADER_OR_FOLLOWER

    def log_dir_failed(self, path: str) -> None:
        """A log dir filled up or failed: the partitions of it this broker leads go to other
        in-sync replicas. Kafka's controller learns of it from /log_dir_event_notification and
        LeaderAndIsr; here, where brokers act on state znodes, the leader takes itself out of
        the ISR (a conditional state write, like its other ISR changes) and the controller
        elects another ISR member. Followers on an offline dir stop fetching (they can't
        append) and leave the ISR when their leader sees them lag; on a full dir they keep
        trying, and catch up once space is back."""
        for p in self.partitions.values():
            lg_dir = p.log.log_dir
            if lg_dir.path != path:
                continue
            if p.is_leader:
                others = [r for r in p.state.isr if r != self.node_id]
                if others and p.isr_listener is not None and p.pending_isr is None:
                    log.warning("leadership_given_up", topic=p.topic, partition=p.index,
                                log_dir=path, isr=others)  # fmt: skip
                    p._change_isr(others)
            elif lg_dir.offline and self.fetchers is not None:
                self.fetchers.remove_partition(p)

    def make_ready(self) -> None:
        """Registered in ZooKeeper: act on the partition states seen so far."""
        self.ready = True
        deferred, self._deferred = self._deferred, {}
        for (topic, index), state in deferred.items():
            p = self.partitions.get((topic, index))
            if p is not None:
                self._transition(p, self._role_state(p, state))

    def _write_isr(self, p: Partition, isr: list[int]) -> None:
        state = p.state
        log.info(
            "isr_change", topic=p.topic, partition=p.index, old_isr=state.isr, new_isr=isr,
            leader_epoch=state.leader_epoch,
        )  # fmt: skip
        pending = self.metadata.update_isr(p.topic, p.index, state, isr)

        def done(t: asyncio.Future) -> None:
            if p.pending_isr is isr:
                p.isr_change_done()  # committed (state already installed) or lost: try later

        pending.add_done_callback(done)

    # --- background work (cluster) ----------------------------------------------------------

    def start_background(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tasks.add(loop.create_task(self._isr_expiration_loop()))
        self._tasks.add(loop.create_task(self._hw_checkpoint_loop()))

    async def stop_background(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _isr_expiration_loop(self) -> None:
        lag_ms = self.config.get("replica.lag.time.max.ms")
        while True:
            await asyncio.sleep(lag_ms / 2000)
            for p in list(self.partitions.values()):
                if p.is_leader and len(p.state.isr) > 1:
                    try:
                        p.maybe_shrink_isr(lag_ms)
                    except Exception:
                        log.exception("isr_shrink_failed", topic=p.topic, partition=p.index)

    async def _hw_checkpoint_loop(self) -> None:
        interval = self.config.get("replica.high.watermark.checkpoint.interval.ms") / 1000
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            files = self.high_watermark_checkpoints()
            try:
                await loop.run_in_executor(None, write_checkpoints, files)
            except OSError as e:  # an older checkpoint only means a lower HW after a restart
                if is_out_of_space(e):
                    log.warning("high_watermark_checkpoint_deferred", error=str(e))
                else:
                    log.error("high_watermark_checkpoint_failed", error=repr(e))

    # --- high watermark checkpoints -------------------------------------------------------

    def high_watermark_checkpoints(self) -> dict[str, str]:
        """Kafka's replication-offset-checkpoint, one per log dir: version, count, entries."""
        by_dir: dict[str, dict[tuple[str, int], int]] = {d: {} for d in self.log_manager.log_dirs}
        for tp, lg in self.log_manager.logs.items():
            by_dir.setdefault(os.path.dirname(lg.dir), {})[tp] = lg.high_watermark
        return {
            os.path.join(d, HW_CHECKPOINT_FILE): format_offsets(offsets)
            for d, offsets in by_dir.items()
        }

    def checkpoint_high_watermarks(self) -> None:
        write_checkpoints(self.high_watermark_checkpoints())

    def restore_high_watermarks(self) -> None:
        """After loading logs: each log's HW is what was checkpointed (never above its LEO)."""
        for d in self.log_manager.log_dirs:
            found = read_offsets(os.path.join(d, HW_CHECKPOINT_FILE))
            for (topic, index), lg in self.log_manager.logs.items():
                if os.path.dirname(lg.dir) != d:
                    continue
                hw = found.get((topic, index), 0)
                lg.high_watermark = max(min(hw, lg.log_end_offset), lg.log_start_offset)


def _epoch_scan(lg: Log):
    """(partition leader epoch, base offset) of every batch: rebuilds a missing epoch cache."""

    def scan():
        for seg in lg.segments:
            for _pos, header in seg.iter_batches():
                yield header.partition_leader_epoch, header.base_offset

    return scan


def write_checkpoints(files: dict[str, str]) -> None:
    for path, text in files.items():
        atomic_write(path, text)

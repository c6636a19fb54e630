"""Partitions hosted by this broker and the purgatory of fetches waiting for data.

A Partition wraps a Log with its leadership state (leader, epoch, replicas, ISR) and decides the
high watermark. On a single broker the ISR is just this broker, so the HW follows the LEO.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from protocol.errors import ErrorCode, KafkaError
from pykbroker.cluster.metadata import PartitionState, TopicInfo
from pykbroker.storage.log import AppendInfo, Log
from pykbroker.storage.log_manager import LogManager


class Partition:
    __slots__ = ("topic", "index", "log", "state", "node_id", "waiters", "follower_leos")

    def __init__(self, topic: str, index: int, log: Log, state: PartitionState, node_id: int):
        self.topic = topic
        self.index = index
        self.log = log
        self.state = state
        self.node_id = node_id
        self.waiters: set[asyncio.Future] = set()
        self.follower_leos: dict[int, int] = {}

    @property
    def is_leader(self) -> bool:
        return self.state.leader == self.node_id

    @property
    def leader_epoch(self) -> int:
        return self.state.leader_epoch

    def check_leader(self, current_leader_epoch: int = -1) -> None:
        if not self.is_leader:
            raise KafkaError(
                ErrorCode.NOT_LEADER_OR_FOLLOWER,
                f"{self.topic}-{self.index} is led by {self.state.leader}",
            )
        if current_leader_epoch >= 0:
            if current_leader_epoch < self.state.leader_epoch:
                raise KafkaError(ErrorCode.FENCED_LEADER_EPOCH)
            if current_leader_epoch > self.state.leader_epoch:
                raise KafkaError(ErrorCode.UNKNOWN_LEADER_EPOCH)

    def append_as_leader(self, records: memoryview, required_acks: int) -> AppendInfo:
        self.check_leader()
        min_isr = self.log.config["min.insync.replicas"]
        if required_acks == -1 and len(self.state.isr) < min_isr:
            raise KafkaError(
                ErrorCode.NOT_ENOUGH_REPLICAS,
                f"The size of the current ISR {len(self.state.isr)} is insufficient to satisfy the "
                f"min.isr requirement of {min_isr} for partition {self.topic}-{self.index}",
            )
        info = self.log.append_as_leader(records, self.state.leader_epoch)
        self.maybe_advance_high_watermark()
        self.wake()  # followers wait for the LEO, not the HW
        return info

    def update_follower(self, replica_id: int, fetch_offset: int) -> None:
        """A follower's fetch offset is its LEO: it may move the HW."""
        self.follower_leos[replica_id] = fetch_offset
        self.maybe_advance_high_watermark()

    def aborted_transactions(self, fetch_offset: int, region) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping a read_committed fetch."""
        return []

    def last_stable_offset(self) -> int:
        """The LSO: the HW, or the first offset of the oldest open transaction if lower."""
        hw = self.log.high_watermark
        unstable = self.log.producer_state.first_unstable_offset()
        return hw if unstable is None else min(hw, unstable)

    def maybe_advance_high_watermark(self) -> None:
        """HW = the smallest LEO among in-sync replicas (just this one on a single broker)."""
        hw = self.log.log_end_offset
        for replica in self.state.isr:
            if replica != self.node_id:
                hw = min(hw, self.follower_leos.get(replica, 0))
        self.log.update_high_watermark(hw)

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class ReplicaManager:
    def __init__(self, node_id: int, log_manager: LogManager, log_config_for):
        self.node_id = node_id
        self.log_manager = log_manager
        self.log_config_for = log_config_for  # topic -> LogConfig
        self.partitions: dict[tuple[str, int], Partition] = {}

    def ensure_partitions(self, topic: TopicInfo) -> None:
        """Open (or create) the logs of every partition of `topic` this broker replicates."""
        config = self.log_config_for(topic.name)
        for index, state in enumerate(topic.partitions):
            if self.node_id not in state.replicas:
                continue
            key = (topic.name, index)
            existing = self.partitions.get(key)
            if existing is not None:
                existing.state = state
                continue
            log = self.log_manager.get_or_create(topic.name, index, config)
            self.partitions[key] = Partition(topic.name, index, log, state, self.node_id)

    def remove_topic(self, name: str, partition_count: int) -> None:
        for index in range(partition_count):
            p = self.partitions.pop((name, index), None)
            if p is not None:
                p.wake()
            self.log_manager.delete(name, index)

    def update_config(self, topic: str) -> None:
        config = self.log_config_for(topic)
        for (name, _), p in self.partitions.items():
            if name == topic:
                p.log.config = config

    def get(self, topic: str, index: int) -> Partition:
        p = self.partitions.get((topic, index))
        if p is None:
            raise KafkaError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"This server does not host this topic-partition: {topic}-{index}",
            )
        return p

    def get_leader(self, topic: str, index: int, current_leader_epoch: int = -1) -> Partition:
        p = self.get(topic, index)
        p.check_leader(current_leader_epoch)
        return p

    def add_waiter(self, keys: Iterable[tuple[str, int]], fut: asyncio.Future) -> list[Partition]:
        parts = []
        for key in keys:
            p = self.partitions.get(key)
            if p is not None:
                p.waiters.add(fut)
                parts.append(p)
        return parts

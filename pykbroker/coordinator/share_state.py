"""The share coordinator (KIP-932): the durable state of every share-partition, kept in the
internal topic `__share_group_state` the way Kafka keeps it.

A share-partition's key is (group, topic id, partition); it lives in partition
abs(hashCode("group:topicId:partition")) % `share.coordinator.state.topic.num.partitions` (50),
and the broker leading that partition is its share coordinator (FindCoordinator key type 2).
Each write (WriteShareGroupState: the new start offset and the state batches that changed)
becomes one record: a ShareUpdate, or every `share.coordinator.snapshot.update.records.per.snapshot`
writes a ShareSnapshot holding the whole merged state. A write is answered once its record is
replicated (acks=all), so an acknowledgement a client was told succeeded survives a crash.
Replay reads each partition of the topic from its start: a snapshot replaces the key's state,
an update of the same snapshot epoch is merged over it (protocol.share_partition.merge_state).
The topic is cleanup.policy=delete with no retention; records before the oldest snapshot still
needed are pruned by moving the log start offset, as Kafka's coordinator does with
DeleteRecords.

Record formats (apache/kafka share-coordinator/src/main/resources/common/message): keys are
int16 type (0 ShareSnapshotKey, 1 ShareUpdateKey) + group (int16 string) + topic id (16 bytes)
+ partition (int32); values are int16 version 0 + a flexible body:
ShareSnapshotValue {SnapshotEpoch, StateEpoch, LeaderEpoch, StartOffset, CreateTimestamp,
WriteTimestamp, StateBatches}, ShareUpdateValue {SnapshotEpoch, LeaderEpoch, StartOffset,
StateBatches}; a state batch is {FirstOffset int64, LastOffset int64, DeliveryState int8,
DeliveryCount int16}.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from protocol import records as rb
from protocol.errors import ErrorCode, KafkaError
from protocol.share_partition import StateBatch, merge_state

from .schema import partition_for

if TYPE_CHECKING:
    from pykbroker.broker import Broker

log = structlog.get_logger(__name__)

SHARE_STATE_TOPIC = "__share_group_state"
SNAPSHOT_KEY, UPDATE_KEY = 0, 1
_READ_CHUNK = 1 << 20
_KEY_HEAD = struct.Struct(">hh")
_BATCH = struct.Struct(">qqbh")

StateKey = tuple[str, uuid.UUID, int]

# Kafka's mapping of a failed append to what the share-partition leader is told.
_WRITE_ERRORS = {
    ErrorCode.NOT_LEADER_OR_FOLLOWER: ErrorCode.NOT_COORDINATOR,
    ErrorCode.KAFKA_STORAGE_ERROR: ErrorCode.NOT_COORDINATOR,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.REQUEST_TIMED_OUT: ErrorCode.COORDINATOR_NOT_AVAILABLE,
}


# --- records ----------------------------------------------------------------------------------


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def state_key(kind: int, key: StateKey) -> bytes:
    group, topic_id, partition = key
    g = group.encode()
    return _KEY_HEAD.pack(kind, len(g)) + g + topic_id.bytes + struct.pack(">i", partition)


def _batches(batches: list[StateBatch]) -> bytes:
    return _uvarint(len(batches) + 1) + b"".join(
        _BATCH.pack(f, l, s, c) + b"\x00"
        for f, l, s, c in batches  # noqa: E741
    )


def snapshot_value(state: ShareState, now_ms: int) -> bytes:
    head = struct.pack(">hiiiqqq", 0, state.snapshot_epoch, state.state_epoch,
                       state.leader_epoch, state.start_offset, state.create_ts, now_ms)  # fmt: skip
    return head + _batches(state.batches) + b"\x00"


def update_value(snapshot_epoch: int, leader_epoch: int, start: int, batches: list) -> bytes:
    head = struct.pack(">hiiq", 0, snapshot_epoch, leader_epoch, start)
    return head + _batches(batches) + b"\x00"


class _Cursor:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, s: struct.Struct) -> tuple:
        v = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return v

    def uvarint(self) -> int:
        result = shift = 0
        while True:
            b = self.buf[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def batches(self) -> list[StateBatch]:
        out = []
        for _ in range(self.uvarint() - 1):
            out.append(self.take(_BATCH))
            self.skip_tags()
        return out

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.pos += self.uvarint()


def parse_state_key(key: bytes) -> tuple[int, StateKey]:
    kind, n = _KEY_HEAD.unpack_from(key, 0)
    group = key[4 : 4 + n].decode()
    topic_id = uuid.UUID(bytes=bytes(key[4 + n : 20 + n]))
    (partition,) = struct.unpack_from(">i", key, 20 + n)
    return kind, (group, topic_id, partition)


def parse_snapshot(value: bytes) -> ShareState:
    c = _Cursor(value)
    _, snap, state_epoch, leader, start, created, _written = c.take(struct.Struct(">hiiiqqq"))
    return ShareState(state_epoch, leader, start, c.batches(), snap, create_ts=created)


def parse_update(value: bytes) -> tuple[int, int, int, list[StateBatch]]:
    c = _Cursor(value)
    _, snap, leader, start = c.take(struct.Struct(">hiiq"))
    return snap, leader, start, c.batches()


# --- state ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ShareState:
    state_epoch: int
    leader_epoch: int
    start_offset: int
    batches: list[StateBatch] = field(default_factory=list)
    snapshot_epoch: int = 0
    updates_since_snapshot: int = 0
    create_ts: int = 0
    snapshot_offset: int = -1  # where its latest snapshot is in the log (pruning)


def now_ms() -> int:
    return int(time.time() * 1000)


class ShareCoordinator:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        config = broker.config
        self.num_partitions = config.get("share.coordinator.state.topic.num.partitions")
        self.updates_per_snapshot = config.get(
            "share.coordinator.snapshot.update.records.per.snapshot"
        )
        self.write_timeout_ms = config.get("share.coordinator.write.timeout.ms")
        self.states: dict[StateKey, ShareState] = {}
        self.active = False

    # --- lifecycle ----------------------------------------------------------------------------

    def startup(self) -> None:
        self._load(None)
        self.active = True
        self.broker.replica_manager.add_leadership_listener(self._on_leadership_change)

    def _on_leadership_change(self, topic: str, index: int, is_leader: bool, epoch: int) -> None:
        if topic != SHARE_STATE_TOPIC or not self.active:
            return
        if is_leader:
            self._load([index])
        else:
            for key in [k for k in self.states if self.partition_for(k) == index]:
                del self.states[key]

    def _load(self, partitions: list[int] | None) -> None:
        info = self.broker.metadata.topic(SHARE_STATE_TOPIC)
        if info is None:
            return
        rm = self.broker.replica_manager
        loaded = 0
        for index in range(len(info.partitions)) if partitions is None else partitions:
            part = rm.partitions.get((SHARE_STATE_TOPIC, index))
            if part is not None and part.is_leader:
                loaded += self._replay(part.log)
        if loaded:
            log.info("share_state_loaded", partitions=partitions or "all", records=loaded,
                     share_partitions=len(self.states))  # fmt: skip

    def _replay(self, log_) -> int:
        count = 0
        for data, pos, header in log_.batches(_READ_CHUNK):
            if header.is_control:
                continue
            try:
                records = rb.decode_records(data, pos)
            except KafkaError:
                log.warning("share_state_batch_unreadable", offset=header.base_offset)
                continue
            for i, r in enumerate(records):
                if r.key is None:
                    continue
                try:
                    self._apply(r.key, r.value, header.base_offset + i)
                    count += 1
                except (struct.error, IndexError, UnicodeDecodeError, ValueError) as e:
                    log.warning("share_state_record_unreadable", error=str(e))
        return count

    def _apply(self, key: bytes, value: bytes | None, offset: int) -> None:
        kind, skey = parse_state_key(key)
        if value is None:  # DeleteShareGroupState
            self.states.pop(skey, None)
            return
        if kind == SNAPSHOT_KEY:
            state = parse_snapshot(value)
            state.snapshot_offset = offset
            self.states[skey] = state
        elif kind == UPDATE_KEY:
            state = self.states.get(skey)
            snap, leader, start, batches = parse_update(value)
            if state is None or snap != state.snapshot_epoch:
                return  # an update of an older snapshot than the one we hold
            state.batches, state.start_offset = merge_state(
                state.batches, state.start_offset, batches, start
            )
            state.leader_epoch = leader
            state.updates_since_snapshot += 1

    # --- the topic ----------------------------------------------------------------------------

    def topic(self):
        info = self.broker.metadata.topic(SHARE_STATE_TOPIC)
        if info is None:
            config = self.broker.config
            replicas = min(config.get("share.coordinator.state.topic.replication.factor"),
                           len(self.broker.metadata.live_broker_ids()))  # fmt: skip
            min_isr = min(config.get("share.coordinator.state.topic.min.isr"), replicas)
            info = self.broker.ensure_internal_topic(
                SHARE_STATE_TOPIC, self.num_partitions, replicas,
                {"cleanup.policy": "delete", "retention.ms": "-1",
                 "segment.bytes": str(config.get("share.coordinator.state.topic.segment.bytes")),
                 "min.insync.replicas": str(max(min_isr, 1))},
            )  # fmt: skip
        return info

    def partition_for(self, key: StateKey) -> int:
        info = self.broker.metadata.topic(SHARE_STATE_TOPIC)
        count = len(info.partitions) if info is not None else self.num_partitions
        group, topic_id, partition = key
        return partition_for(f"{group}:{topic_id}:{partition}", count)

    def coordinator_node(self, key: str):
        """(error, BrokerInfo) for FindCoordinator key type 2: "group:topicId:partition"."""
        try:
            info = self.topic()
        except KafkaError:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, None
        state = info.partitions[partition_for(key, len(info.partitions))]
        for node in self.broker.metadata.brokers():
            if node.node_id == state.leader:
                return ErrorCode.NONE, node
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, None

    def check_coordinator(self, key: StateKey) -> None:
        try:
            self.topic()
        except KafkaError as e:
            raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, e.message) from None
        part = self.broker.replica_manager.partitions.get(
            (SHARE_STATE_TOPIC, self.partition_for(key))
        )
        if part is None or not part.is_leader:
            raise KafkaError(ErrorCode.NOT_COORDINATOR, "This is not the correct coordinator.")

    # --- the state APIs (each: KafkaError, or the result) -------------------------------------

    def read(self, key: StateKey, leader_epoch: int = -1) -> ShareState | None:
        self.check_coordinator(key)
        state = self.states.get(key)
        if state is not None and leader_epoch > state.leader_epoch:
            state.leader_epoch = leader_epoch  # Kafka records the reader's epoch too
        return state

    async def initialize(self, key: StateKey, state_epoch: int, start_offset: int) -> None:
        """A fresh state (InitializeShareGroupState, and AlterShareGroupOffsets' reset)."""
        self.check_coordinator(key)
        old = self.states.get(key)
        state = ShareState(state_epoch, -1, start_offset, [],
                           (old.snapshot_epoch + 1) if old else 0, create_ts=now_ms())  # fmt: skip
        await self._write_snapshot(key, state)

    async def write(
        self, key: StateKey, state_epoch: int, leader_epoch: int, start_offset: int,
        batches: list[StateBatch],
    ) -> None:  # fmt: skip
        """Merge a share-partition leader's changes. The in-memory state changes at once, so
        that writes issued back to back build on each other (their records are appended in
        that order); a write that fails reloads the partition's keys from the log."""
        self.check_coordinator(key)
        state = self.states.get(key)
        if state is None:
            state = ShareState(state_epoch, leader_epoch, start_offset, [], 0, create_ts=now_ms())
            state.batches, state.start_offset = merge_state([], start_offset, batches, -1)
            await self._write_snapshot(key, state)
            return
        if state_epoch < state.state_epoch:
            raise KafkaError(ErrorCode.FENCED_STATE_EPOCH, "The share-group state epoch is older.")
        if 0 <= leader_epoch < state.leader_epoch:
            raise KafkaError(ErrorCode.FENCED_LEADER_EPOCH, "The leader epoch is older.")
        merged, start = merge_state(state.batches, state.start_offset, batches, start_offset)
        if state.updates_since_snapshot + 1 >= self.updates_per_snapshot:
            new = ShareState(max(state_epoch, state.state_epoch), max(leader_epoch, state.leader_epoch),
                             start, merged, state.snapshot_epoch + 1, create_ts=state.create_ts)  # fmt: skip
            await self._write_snapshot(key, new)
            return
        value = update_value(state.snapshot_epoch, leader_epoch, start_offset, batches)
        state.batches, state.start_offset = merged, start
        state.leader_epoch = max(leader_epoch, state.leader_epoch)
        state.updates_since_snapshot += 1
        await self._append(key, [(state_key(UPDATE_KEY, key), value)])

    async def delete(self, key: StateKey) -> None:
        self.check_coordinator(key)
        if key not in self.states:
            return
        self.states.pop(key, None)
        await self._append(key, [(state_key(SNAPSHOT_KEY, key), None),
                                 (state_key(UPDATE_KEY, key), None)])  # fmt: skip

    async def _write_snapshot(self, key: StateKey, state: ShareState) -> None:
        self.states[key] = state
        value = snapshot_value(state, now_ms())
        state.snapshot_offset = await self._append(key, [(state_key(SNAPSHOT_KEY, key), value)])
        self._prune(self.partition_for(key))

    async def _append(self, key: StateKey, records: list[tuple[bytes, bytes | None]]) -> int:
        """Append one batch and wait for acks=all; its first offset, or KafkaError."""
        partition = self.broker.replica_manager.get_leader(
            SHARE_STATE_TOPIC, self.partition_for(key)
        )
        ts = now_ms()
        batch = rb.build_batch([rb.Record(i, ts, k, v) for i, (k, v) in enumerate(records)])
        index = self.partition_for(key)
        try:
            info = partition.append_as_leader(memoryview(batch), required_acks=-1)
        except KafkaError as e:
            self._reload(index)
            raise KafkaError(_WRITE_ERRORS.get(e.code, e.code), e.message) from None
        end = info.last_offset + 1
        if partition.replication_status(end) != ErrorCode.NONE:
            deadline = asyncio.get_running_loop().time() + self.write_timeout_ms / 1000
            code = await partition.wait_for_replication(end, deadline)
            if code != ErrorCode.NONE:
                self._reload(index)
                raise KafkaError(_WRITE_ERRORS.get(code, code), "share state write failed")
        return end - len(records)

    def _reload(self, index: int) -> None:
        """Back to what the log holds (a write failed after the in-memory state moved on)."""
        for key in [k for k in self.states if self.partition_for(k) == index]:
            del self.states[key]
        self._load([index])

    def _prune(self, index: int) -> None:
        """Nothing before the oldest latest-snapshot of this partition's keys is needed."""
        offsets = [s.snapshot_offset for k, s in self.states.items()
                   if self.partition_for(k) == index]  # fmt: skip
        if not offsets or min(offsets) < 0:
            return
        part = self.broker.replica_manager.partitions.get((SHARE_STATE_TOPIC, index))
        if part is not None and part.is_leader:
            try:
                part.log.maybe_increment_log_start_offset(
                    min(min(offsets), part.log.high_watermark)
                )
            except KafkaError as e:
                log.warning("share_state_prune_failed", error=e.message)


class Persister:
    """A share-partition leader's (and the group coordinator's) calls to the share coordinator
    of a key: in process when this broker leads the key's __share_group_state partition, else
    Read/Initialize/Write/Delete/ReadShareGroupStateSummary over the broker channel, as
    Kafka's DefaultStatePersister does. Failures raise KafkaError."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._channels = None

    def _remote(self, key: StateKey) -> int | None:
        """The coordinator's node id when it is another broker, None when it is this one."""
        coordinator = self.broker.share_coordinator
        error, node = coordinator.coordinator_node(f"{key[0]}:{key[1]}:{key[2]}")
        if error:
            raise KafkaError(error, "The share coordinator is not available.")
        return None if node.node_id == self.broker.node_id else node.node_id

    async def _call(self, node: int, api_key: int, key: StateKey, partition: dict):
        from .broker_channel import BrokerChannels

        if self._channels is None:
            self._channels = BrokerChannels(self.broker, f"broker-{self.broker.node_id}-share")
        body = {"group_id": key[0], "topics": [{"topic_id": key[1], "partitions": [
            {"partition": key[2], **partition}]}]}  # fmt: skip
        timeout = self.broker.config.get("request.timeout.ms") / 1000
        try:
            r = await self._channels.get(node).request(api_key, 0, body, timeout)
        except (TimeoutError, ConnectionError, OSError) as e:
            raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, str(e)) from None
        result = r.results[0].partitions[0]
        if result.error_code:
            raise KafkaError(ErrorCode(result.error_code), result.error_message)
        return result

    async def read(self, key: StateKey, leader_epoch: int) -> ShareState | None:
        node = self._remote(key)
        if node is None:
            return self.broker.share_coordinator.read(key, leader_epoch)
        r = await self._call(node, 84, key, {"leader_epoch": leader_epoch})
        if r.start_offset < 0:
            return None
        batches = [(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
                   for b in r.state_batches]  # fmt: skip
        return ShareState(r.state_epoch, leader_epoch, r.start_offset, batches)

    async def summary(self, key: StateKey) -> ShareState | None:
        node = self._remote(key)
        if node is None:
            return self.broker.share_coordinator.read(key)
        r = await self._call(node, 87, key, {"leader_epoch": -1})
        return (
            None
            if r.start_offset < 0
            else ShareState(r.state_epoch, r.leader_epoch, r.start_offset)
        )

    async def initialize(self, key: StateKey, state_epoch: int, start_offset: int) -> None:
        node = self._remote(key)
        if node is None:
            return await self.broker.share_coordinator.initialize(key, state_epoch, start_offset)
        await self._call(node, 83, key, {"state_epoch": state_epoch, "start_offset": start_offset})

    async def write(self, key: StateKey, state_epoch: int, leader_epoch: int, start: int,
                    batches: list[StateBatch]) -> None:  # fmt: skip
        node = self._remote(key)
        if node is None:
            return await self.broker.share_coordinator.write(
                key, state_epoch, leader_epoch, start, batches
            )
        await self._call(node, 85, key, {
            "state_epoch": state_epoch, "leader_epoch": leader_epoch, "start_offset": start,
            "state_batches": [{"first_offset": f, "last_offset": la, "delivery_state": s,
                               "delivery_count": c} for f, la, s, c in batches]})  # fmt: skip

    async def delete(self, key: StateKey) -> None:
        node = self._remote(key)
        if node is None:
            return await self.broker.share_coordinator.delete(key)
        await self._call(node, 86, key, {})

    def close(self) -> None:
        if self._channels is not None:
            self._channels.close()

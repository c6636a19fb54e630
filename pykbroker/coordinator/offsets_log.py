"""The group coordinator's storage: the internal compacted topic `__consumer_offsets`.

Records go through the same Log as user data (Partition.append_as_leader with acks=-1), one
batch per write, keyed so compaction keeps the latest offset per (group, topic, partition) and
the latest metadata per group. A write counts once the partition's high watermark passes it.
At start-up every partition this broker leads is read back from its log start offset and the
latest record per key wins (tombstones delete), which rebuilds groups and committed offsets.

The topic is created lazily, on the first FindCoordinator or group request, as Kafka does.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from protocol import records as rb
from protocol.errors import ErrorCode, KafkaError

from .group import now_ms
from .schema import (
    GroupRecord,
    OffsetAndMetadata,
    SchemaError,
    group_metadata_key,
    group_metadata_value,
    offset_commit_key,
    offset_commit_value,
    parse_cg_key,
    parse_cg_value,
    parse_group_value,
    parse_key,
    parse_offset_value,
    partition_for,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from pykbroker.broker import Broker
    from pykbroker.cluster.metadata import TopicInfo
    from pykbroker.storage.log import Log

log = structlog.get_logger(__name__)

GROUP_METADATA_TOPIC = "__consumer_offsets"
_READ_CHUNK = 1 << 20

Loaded = dict[str, tuple[GroupRecord | None, dict[tuple[str, int], OffsetAndMetadata]]]


class OffsetsLog:
    def __init__(self, broker: Broker, commit_timeout_ms: int):
        self.broker = broker
        self.commit_timeout_ms = commit_timeout_ms
        # Transactional offset commits a replay found without their marker: producer id ->
        # (key, value) records, for the coordinator to keep pending (see load()).
        self.pending_txn: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
        # KIP-848 consumer groups a replay found: group -> {"epoch": (epoch, hash),
        # "members": {id: ConsumerMemberRecord}, "target_epoch": int, "targets": {id: assignment},
        # "current": {id: (epoch, previous epoch, state, assigned, pending revocation)}}
        self.consumer_groups: dict[str, dict] = {}

    # --- the topic ----------------------------------------------------------------------------

    def topic(self, create: bool = True) -> TopicInfo | None:
        info = self.broker.metadata.topic(GROUP_METADATA_TOPIC)
        if info is None and create:
            config = self.broker.config
            info = self.broker.ensure_internal_topic(
                GROUP_METADATA_TOPIC,
                config.get("offsets.topic.num.partitions"),
                config.get("offsets.topic.replication.factor"),
                {
                    "cleanup.policy": "compact",
                    "compression.type": "producer",
                    "segment.bytes": str(config.get("offsets.topic.segment.bytes")),
                },
            )
        return info

    def partition_for(self, group_id: str) -> int:
        """The __consumer_offsets partition of a group (the topic's actual partition count)."""
        info = self.topic(create=False)
        count = (
            len(info.partitions)
            if info is not None
            else self.broker.config.get("offsets.topic.num.partitions")
        )
        return partition_for(group_id, count)

    def coordinator_error(self, group_id: str) -> ErrorCode | None:
        """None if this broker coordinates the group (leads its partition), else the error."""
        try:
            self.topic()
        except KafkaError as e:
            log.warning("offsets_topic_unavailable", error=e.code.name, message=e.message)
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        part = self.broker.replica_manager.partitions.get(
            (GROUP_METADATA_TOPIC, self.partition_for(group_id))
        )
        if part is None or not part.is_leader:
            return ErrorCode.NOT_COORDINATOR
        return None

    def coordinator_node(self, group_id: str):
        """(error, BrokerInfo of the coordinator) for FindCoordinator."""
        try:
            info = self.topic()
        except KafkaError:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, None
        state = info.partitions[partition_for(group_id, len(info.partitions))]
        for node in self.broker.metadata.brokers():
            if node.node_id == state.leader:
                return ErrorCode.NONE, node
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, None

    # --- writes -------------------------------------------------------------------------------

    def append_offsets(
        self, group_id: str, offsets: dict[tuple[str, int], OffsetAndMetadata]
    ) -> Awaitable[int] | None:
        return self._append(
            group_id,
            [(offset_commit_key(group_id, t, p), offset_commit_value(om)) for (t, p), om in offsets.items()],
        )  # fmt: skip

    def append_txn_offsets(
        self, group_id: str, producer_id: int, producer_epoch: int,
        offsets: dict[tuple[str, int], OffsetAndMetadata],
    ) -> Awaitable[int] | None:  # fmt: skip
        """TxnOffsetCommit: the offsets as a transactional batch of the producer; they count
        once its transaction's COMMIT marker is written here."""
        return self._append(
            group_id,
            [(offset_commit_key(group_id, t, p), offset_commit_value(om)) for (t, p), om in offsets.items()],
            producer=(producer_id, producer_epoch),
        )  # fmt: skip

    def append_group(self, group_id: str, record: GroupRecord) -> Awaitable[int] | None:
        return self._append(
            group_id, [(group_metadata_key(group_id), group_metadata_value(record))]
        )

    def append_records(
        self, group_id: str, records: list[tuple[bytes, bytes | None]]
    ) -> Awaitable[int] | None:
        """Consumer-group records (types 3-8), as one batch."""
        return self._append(group_id, records) if records else None

    def append_tombstones(
        self, group_id: str, partitions: list[tuple[str, int]], group_tombstone: bool
    ) -> Awaitable[int] | None:
        records: list[tuple[bytes, bytes | None]] = [
            (offset_commit_key(group_id, t, p), None) for t, p in partitions
        ]
        if group_tombstone:
            records.append((group_metadata_key(group_id), None))
        return self._append(group_id, records) if records else None

    def _append(
        self, group_id: str, records: list[tuple[bytes, bytes | None]],
        producer: tuple[int, int] | None = None,
    ) -> Awaitable[int] | None:  # fmt: skip
        """Append one batch; None when already replicated, else an awaitable of the error code.

        Raises KafkaError when the append itself fails.
        """
        self.topic()
        partition = self.broker.replica_manager.get_leader(
            GROUP_METADATA_TOPIC, self.partition_for(group_id)
        )
        ts = now_ms()
        recs = [rb.Record(i, ts, k, v) for i, (k, v) in enumerate(records)]
        if producer is None:
            batch = rb.build_batch(recs)
        else:  # no sequence: the coordinator's own writes skip sequence checks, as in Kafka
            batch = rb.build_batch(recs, producer_id=producer[0], producer_epoch=producer[1],
                                   transactional=True)  # fmt: skip
        info = partition.append_as_leader(memoryview(batch), required_acks=-1)
        offset = info.last_offset + 1
        if partition.replication_status(offset) == ErrorCode.NONE:
            return None
        deadline = asyncio.get_running_loop().time() + self.commit_timeout_ms / 1000
        return partition.wait_for_replication(offset, deadline)

    # --- replay -------------------------------------------------------------------------------

    def load(self, partitions: list[int] | None = None) -> Loaded:
        """Groups and offsets of the partitions this broker leads (of `partitions`, or all),
        the latest record per key winning."""
        info = self.topic(create=False)
        if info is None:
            return {}
        replay = _Replay()
        rm = self.broker.replica_manager
        for index in range(len(info.partitions)) if partitions is None else partitions:
            part = rm.partitions.get((GROUP_METADATA_TOPIC, index))
            if part is not None and part.is_leader:
                replay.read_log(part.log)
        self.pending_txn = replay.pending_txn
        self.consumer_groups = replay.consumer
        return replay.result()


class _Replay:
    def __init__(self) -> None:
        self.groups: dict[str, GroupRecord | None] = {}
        self.offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        self.records = 0
        self.skipped = 0
        self.pending_txn: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
        self.consumer: dict[str, dict] = {}

    def read_log(self, log_: Log) -> None:
        pending_txn: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
        for data, pos, header in log_.batches(_READ_CHUNK):
            try:
                records = rb.decode_records(data, pos)
            except KafkaError:
                self.skipped += header.record_count
                continue
            if header.is_control:
                # A transaction marker: apply (commit) or drop (abort) that producer's offsets.
                applied = pending_txn.pop(header.producer_id, [])
                if records and rb.parse_marker(records[0])[0] == rb.CONTROL_COMMIT:
                    for key, value in applied:
                        self.apply(key, value)
                continue
            if header.is_transactional:
                pending_txn.setdefault(header.producer_id, []).extend(
                    (r.key, r.value) for r in records
                )
                continue
            for r in records:
                self.apply(r.key, r.value)
        for producer_id, records in pending_txn.items():  # no marker yet: still open
            self.pending_txn.setdefault(producer_id, []).extend(records)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            self.skipped += 1
            return
        try:
            parsed = parse_key(key)
            if parsed[0] == "offset":
                _, group, topic, partition = parsed
                offsets = self.offsets.setdefault(group, {})
                if value is None:
                    offsets.pop((topic, partition), None)
                else:
                    offsets[(topic, partition)] = parse_offset_value(value)
            elif parsed[0] == "group":
                group = parsed[1]
                self.groups[group] = None if value is None else parse_group_value(value)
            elif (cg := parse_cg_key(key)) is not None:
                self.apply_consumer(*cg, value)
            else:
                self.skipped += 1  # a newer coordinator's record type (consumer/share groups)
                return
        except SchemaError as e:
            self.skipped += 1
            log.warning("offsets_record_unreadable", error=str(e))
            return
        self.records += 1

    def apply_consumer(self, record_type: int, group: str, member: str | None, value) -> None:
        """A consumer-group record (types 3-8); a tombstone deletes what its key names."""
        data = self.consumer.setdefault(group, {})
        parsed = None if value is None else parse_cg_value(record_type, value)
        slot = {5: "members", 7: "targets", 8: "current"}.get(record_type)
        if slot is not None:
            entries = data.setdefault(slot, {})
            if parsed is None:
                entries.pop(member, None)
            else:
                entries[member] = parsed
        elif record_type == 3:
            if parsed is None:
                self.consumer.pop(group, None)  # the group is gone
            else:
                data["epoch"] = parsed
        elif record_type == 6:
            if parsed is None:
                data.pop("target_epoch", None)
            else:
                data["target_epoch"] = parsed
        # type 4 (partition metadata) carries nothing Kafka 4.1 still uses

    def result(self) -> Loaded:
        if self.skipped:
            log.warning("offsets_records_skipped", count=self.skipped)
        out: Loaded = {}
        for group, record in self.groups.items():
            if record is not None:
                out[group] = (record, self.offsets.get(group, {}))
        for group, offsets in self.offsets.items():
            if group not in out and offsets:
                out[group] = (None, offsets)
        return out

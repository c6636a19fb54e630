"""The transaction coordinator's storage: the internal compacted topic `__transaction_state`.

One record per state change of a transactional id, keyed by the id, so compaction keeps the
latest state of each. Kafka's own record formats (apache/kafka transaction-coordinator
TransactionLogKey / TransactionLogValue):

- key, version 0: transactional id (string)
- value, versions 0 and 1 (1 is flexible, with tagged fields): producer id int64, producer epoch
  int16, transaction timeout ms int32, status int8, partitions (nullable array of topic string
  and partition ids [int32]; null in state Empty), last update timestamp int64, start timestamp
  int64; version 1 adds the tagged fields PreviousProducerId (0), NextProducerId (1) and
  ClientTransactionVersion (2, int16)

A null value is a tombstone (an expired transactional id). As Kafka does, a transaction of a
transactions-v2 client (KIP-890 part 2) is written as value version 1, so its client version and
the producer id it moves to on epoch overflow survive a coordinator change; others as version 0,
which every Kafka since 0.11 reads. Both are read, so a log written by Kafka's coordinator replays.
Writes use acks=-1 and count once the partition's high watermark passes them; the topic is
created on first use (FindCoordinator, InitProducerId), as Kafka does.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

import structlog

from protocol import records as rb
from protocol.errors import ErrorCode, KafkaError

from .group import now_ms
from .schema import SchemaError, _Reader, _Writer, partition_for

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from pykbroker.broker import Broker
    from pykbroker.cluster.metadata import TopicInfo
    from pykbroker.storage.log import Log

log = structlog.get_logger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
_KEY_VERSION = 0
_VALUE_VERSION = 0
_READ_CHUNK = 1 << 20


class TxnState(IntEnum):
    """Kafka's TransactionState ids (the int8 in the log) and names (DescribeTransactions)."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def kafka_name(self) -> str:
        return _NAMES[self]


_NAMES = {
    TxnState.EMPTY: "Empty", TxnState.ONGOING: "Ongoing", TxnState.PREPARE_COMMIT: "PrepareCommit",
    TxnState.PREPARE_ABORT: "PrepareAbort", TxnState.COMPLETE_COMMIT: "CompleteCommit",
    TxnState.COMPLETE_ABORT: "CompleteAbort", TxnState.DEAD: "Dead",
    TxnState.PREPARE_EPOCH_FENCE: "PrepareEpochFence",
}  # fmt: skip
STATE_BY_NAME = {name: state for state, name in _NAMES.items()}


@dataclass(slots=True)
class TxnRecord:
    """A transactional id's state as written to the log (Kafka's TxnTransitMetadata)."""

    producer_id: int
    producer_epoch: int
    txn_timeout_ms: int
    state: TxnState
    partitions: frozenset[tuple[str, int]]
    txn_last_update_timestamp: int
    txn_start_timestamp: int
    last_producer_id: int = -1
    last_producer_epoch: int = -1
    next_producer_id: int = -1  # transactions v2: the id a Complete* moves to (epoch overflow)
    client_tv: int = 0  # the client's transaction version (2: KIP-890 part 2)


def key_bytes(transactional_id: str) -> bytes:
    return bytes(_Writer().int16(_KEY_VERSION).string(transactional_id).buf)


def value_bytes(rec: TxnRecord) -> bytes:
    flexible = rec.client_tv >= 2
    w = _Writer().int16(1 if flexible else _VALUE_VERSION).int64(rec.producer_id)
    w.int16(rec.producer_epoch).int32(rec.txn_timeout_ms).buf.append(rec.state & 0xFF)
    string = _compact_string if flexible else _Writer.string
    if rec.state == TxnState.EMPTY:
        w.buf += b"\x00" if flexible else _NULL_ARRAY
    else:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(rec.partitions):
            by_topic.setdefault(topic, []).append(partition)
        _array_len(w, len(by_topic), flexible)
        for topic, partitions in by_topic.items():
            string(w, topic)
            _array_len(w, len(partitions), flexible)
            for p in partitions:
                w.int32(p)
            if flexible:
                w.buf.append(0)  # no tagged fields
    w.int64(rec.txn_last_update_timestamp).int64(rec.txn_start_timestamp)
    if flexible:
        tags = [(tag, _I64.pack(v)) for tag, v in ((0, rec.last_producer_id),
                (1, rec.next_producer_id)) if v != -1]  # fmt: skip
        tags.append((2, _I16.pack(rec.client_tv)))
        _uvarint(w, len(tags))
        for tag, data in tags:
            _uvarint(w, tag)
            _uvarint(w, len(data))
            w.buf += data
    return bytes(w.buf)


_I16 = struct.Struct(">h")
_I64 = struct.Struct(">q")
_NULL_ARRAY = b"\xff\xff\xff\xff"


def _uvarint(w: _Writer, v: int) -> None:
    while v >= 0x80:
        w.buf.append((v & 0x7F) | 0x80)
        v >>= 7
    w.buf.append(v)


def _array_len(w: _Writer, n: int, flexible: bool) -> None:
    if flexible:
        _uvarint(w, n + 1)
    else:
        w.int32(n)


def _compact_string(w: _Writer, s: str) -> None:
    b = s.encode()
    _uvarint(w, len(b) + 1)
    w.buf += b


def parse_key(key: bytes) -> str:
    r = _Reader(key)
    version = r.int16()
    if version != _KEY_VERSION:
        raise SchemaError(f"unknown TransactionLogKey version {version}")
    return r.string() or ""


def parse_value(value: bytes) -> TxnRecord:
    r = _Reader(value)
    version = r.int16()
    if version not in (0, 1):
        raise SchemaError(f"unknown TransactionLogValue version {version}")
    r.flexible = version >= 1
    producer_id = r.int64()
    epoch = r.int16()
    timeout = r.int32()
    if r.pos >= len(value):
        raise SchemaError("record too short")
    state = TxnState(value[r.pos])
    r.pos += 1
    partitions: set[tuple[str, int]] = set()
    for _ in range(max(r.array_len(), 0)):
        topic = r.string() or ""
        for _ in range(max(r.array_len(), 0)):
            partitions.add((topic, r.int32()))
        r.tagged_fields()
    last_update = r.int64()
    start = r.int64()
    tagged = {0: -1, 1: -1, 2: 0}
    if r.flexible:
        for _ in range(r.uvarint()):
            tag, size = r.uvarint(), r.uvarint()
            data = r._take(size)
            if tag in (0, 1) and size == 8:
                tagged[tag] = _I64.unpack(data)[0]
            elif tag == 2 and size == 2:
                tagged[tag] = _I16.unpack(data)[0]
    if state == TxnState.EMPTY:
        partitions.clear()
    return TxnRecord(producer_id, epoch, timeout, state, frozenset(partitions), last_update, start,
                     last_producer_id=tagged[0], next_producer_id=tagged[1], client_tv=tagged[2])  # fmt: skip


class TransactionStateLog:
    def __init__(self, broker: Broker):
        self.broker = broker
        self.write_timeout_ms = broker.config.get("request.timeout.ms")

    # --- the topic ----------------------------------------------------------------------------

    def topic(self, create: bool = True) -> TopicInfo | None:
        info = self.broker.metadata.topic(TRANSACTION_STATE_TOPIC)
        if info is None and create:
            config = self.broker.config
            replication = min(
                config.get("transaction.state.log.replication.factor"),
                len(self.broker.metadata.live_broker_ids()),
            )
            info = self.broker.ensure_internal_topic(
                TRANSACTION_STATE_TOPIC,
                config.get("transaction.state.log.num.partitions"),
                replication,
                {
                    "cleanup.policy": "compact",
                    "compression.type": "uncompressed",
                    "unclean.leader.election.enable": "false",
                    "segment.bytes": str(config.get("transaction.state.log.segment.bytes")),
                    # Kafka's default (2) can't be met by fewer replicas: a single broker
                    # would refuse every write. Cap it at the replication factor.
                    "min.insync.replicas": str(
                        max(1, min(config.get("transaction.state.log.min.isr"), replication))
                    ),
                },
            )
        return info

    def partition_count(self) -> int:
        info = self.topic(create=False)
        if info is not None:
            return len(info.partitions)
        return self.broker.config.get("transaction.state.log.num.partitions")

    def partition_for(self, transactional_id: str) -> int:
        return partition_for(transactional_id, self.partition_count())

    # --- writes -------------------------------------------------------------------------------

    def append(
        self, index: int, transactional_id: str, record: TxnRecord | None
    ) -> Awaitable[int] | None:
        """Append one record (None: a tombstone). None once replicated, else an awaitable of
        the error code. Raises KafkaError when the append itself fails."""
        partition = self.broker.replica_manager.get_leader(TRANSACTION_STATE_TOPIC, index)
        value = None if record is None else value_bytes(record)
        batch = rb.build_batch([rb.Record(0, now_ms(), key_bytes(transactional_id), value)])
        info = partition.append_as_leader(memoryview(batch), required_acks=-1)
        offset = info.last_offset + 1
        status = partition.replication_status(offset)
        if status == ErrorCode.NONE:
            return None
        if status is not None:
            return _done(status)
        deadline = asyncio.get_running_loop().time() + self.write_timeout_ms / 1000
        return partition.wait_for_replication(offset, deadline)

    # --- replay -------------------------------------------------------------------------------

    def load(self, index: int) -> dict[str, TxnRecord]:
        """The latest state of each transactional id in one partition this broker leads."""
        part = self.broker.replica_manager.partitions.get((TRANSACTION_STATE_TOPIC, index))
        if part is None or not part.is_leader:
            return {}
        return read_log(part.log)


async def _done(status: int) -> int:
    return status


def read_log(log_: Log) -> dict[str, TxnRecord]:
    found: dict[str, TxnRecord | None] = {}
    skipped = 0
    for data, pos, header in log_.batches(_READ_CHUNK):
        if header.is_control:
            continue
        try:
            records = rb.decode_records(data, pos)
        except KafkaError:
            skipped += header.record_count
            continue
        for r in records:
            if r.key is None:
                skipped += 1
                continue
            try:
                txn_id = parse_key(r.key)
                found[txn_id] = None if r.value is None else parse_value(r.value)
            except (SchemaError, ValueError) as e:
                skipped += 1
                log.warning("transaction_log_record_unreadable", error=str(e))
    if skipped:
        log.warning("transaction_log_records_skipped", count=skipped)
    return {k: v for k, v in found.items() if v is not None}

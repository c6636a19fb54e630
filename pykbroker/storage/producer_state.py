"""Idempotent-producer state of one partition (Kafka's ProducerStateManager).

Per producer id: its epoch and the metadata of its last five batches, so that a retried batch is
recognised and answered with its original offsets instead of being appended twice, and a gap
in sequence numbers is refused with OUT_OF_ORDER_SEQUENCE_NUMBER. The state is rebuilt at start-up
from a snapshot (written at clean shutdown and when a segment rolls) plus the batch headers
after it.

Transactions: a transactional batch opens a transaction for its producer (its base offset is the
transaction's first offset) until a control batch (COMMIT or ABORT marker) ends it. The oldest
open transaction bounds the last stable offset (LSO) that read_committed consumers read up to;
so does a transaction whose marker is written but not yet replicated (below the HW), as Kafka
keeps it, so a consumer never passes a marker a new leader might not have.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from protocol import records as rb
from protocol.errors import ErrorCode, KafkaError

from .files import atomic_write

log = structlog.get_logger(__name__)

MAX_BATCHES_PER_PRODUCER = 5
_SEQ_MOD = 1 << 31


@dataclass(slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int


@dataclass(slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int
    batches: deque = field(default_factory=lambda: deque(maxlen=MAX_BATCHES_PER_PRODUCER))
    last_timestamp: int = -1
    current_txn_first_offset: int | None = None  # offset of the first batch of an open transaction
    coordinator_epoch: int = -1  # of the latest transaction marker

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else rb.NO_SEQUENCE

    def find_duplicate(self, header: rb.BatchHeader) -> BatchMetadata | None:
        last_seq = header.last_sequence
        for b in self.batches:
            if b.first_seq == header.base_sequence and b.last_seq == last_seq:
                return b
        return None


def _in_sequence(last_seq: int, first_seq: int) -> bool:
    return first_seq == (last_seq + 1) % _SEQ_MOD


class ProducerStateManager:
    def __init__(self, directory: str):
        self.directory = directory
        self.producers: dict[int, ProducerEntry] = {}
        # producer id -> first offset of its open transaction
        self.ongoing_txns: dict[int, int] = {}
        # (marker offset, first offset) of transactions ended by a marker the HW hasn't passed
        self.unreplicated_txns: deque[tuple[int, int]] = deque(maxlen=1000)

    def check(self, header: rb.BatchHeader) -> BatchMetadata | None:
        """Validate a batch against the producer's state before it is appended.

        Returns the metadata of the original batch when `header` is a retried duplicate; raises
        KafkaError for a stale epoch or a sequence gap.
        """
        if not header.has_producer_id:
            return None
        entry = self.producers.get(header.producer_id)
        if entry is None:
            # An unknown producer (new, or expired/removed with old segments): any sequence.
            return None
        if header.producer_epoch < entry.epoch:
            raise KafkaError(
                ErrorCode.INVALID_PRODUCER_EPOCH,
                f"epoch {header.producer_epoch} is older than the current epoch {entry.epoch}",
            )
        if (
            header.producer_epoch == entry.epoch
            and entry.current_txn_first_offset is not None
            and not header.is_transactional
            and not header.is_control
        ):
            raise KafkaError(
                ErrorCode.INVALID_TXN_STATE,
                f"Expected transactional write from producer {header.producer_id} at offset "
                f"{entry.current_txn_first_offset}",
            )
        if header.base_sequence < 0:
            return None  # transactional markers and non-idempotent writes carry no sequence
        if header.producer_epoch > entry.epoch:
            if header.base_sequence != 0:
                raise KafkaError(
                    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                    f"new epoch {header.producer_epoch} must start at sequence 0, got {header.base_sequence}",
                )
            return None
        duplicate = entry.find_duplicate(header)
        if duplicate is not None:
            return duplicate
        if entry.batches and not _in_sequence(entry.last_seq, header.base_sequence):
            raise KafkaError(
                ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                f"expected sequence {(entry.last_seq + 1) % _SEQ_MOD}, got {header.base_sequence}",
            )
        return None

    def update(self, header: rb.BatchHeader) -> int | None:
        """Record an appended batch (its base offset already assigned). For a transaction
        marker, returns the first offset of the transaction it ends (the marker's own offset
        when the producer wrote nothing here), else None."""
        if not header.has_producer_id:
            return None
        entry = self.producers.get(header.producer_id)
        if entry is None or header.producer_epoch > entry.epoch:
            # A new epoch (a fenced or bumped producer): a transaction still open stays open
            # until its marker, which the coordinator writes with the new epoch.
            open_txn = entry.current_txn_first_offset if entry is not None else None
            coordinator_epoch = entry.coordinator_epoch if entry is not None else -1
            entry = ProducerEntry(header.producer_id, header.producer_epoch)
            entry.current_txn_first_offset = open_txn
            entry.coordinator_epoch = coordinator_epoch
            self.producers[header.producer_id] = entry
        completed = None
        if header.is_control:
            first = entry.current_txn_first_offset
            completed = first if first is not None else header.base_offset
            entry.current_txn_first_offset = None
            self.ongoing_txns.pop(header.producer_id, None)
            self.unreplicated_txns.append((header.last_offset, completed))
        elif header.is_transactional and entry.current_txn_first_offset is None:
            entry.current_txn_first_offset = header.base_offset
            self.ongoing_txns[header.producer_id] = header.base_offset
        if header.base_sequence >= 0 and not header.is_control:
            entry.batches.append(
                BatchMetadata(
                    header.base_sequence,
                    header.last_sequence,
                    header.base_offset,
                    header.last_offset,
                    header.max_timestamp,
                )  # fmt: skip
            )
        entry.last_timestamp = header.max_timestamp  # the latest batch's, as Kafka keeps it
        return completed

    def first_unstable_offset(self, high_watermark: int | None = None) -> int | None:
        """The first offset of the oldest transaction not yet decided for read_committed: open,
        or ended by a marker at or above `high_watermark` (not yet replicated)."""
        unreplicated = self.unreplicated_txns
        if high_watermark is not None:
            while unreplicated and unreplicated[0][0] < high_watermark:
                unreplicated.popleft()
        if not unreplicated:
            return min(self.ongoing_txns.values()) if self.ongoing_txns else None
        return min([*self.ongoing_txns.values(), *(first for _, first in unreplicated)])

    def stable_offset_after(self, marker_offset: int) -> int:
        """The LSO right after a marker at `marker_offset` ended its transaction (the entry of
        the transaction index): the oldest transaction still open, else the marker's next."""
        return min(self.ongoing_txns.values()) if self.ongoing_txns else marker_offset + 1

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers whose last batch's timestamp is expiration_ms old or more and that
        have no transaction open here (Kafka's removeExpiredProducers); returns how many. A
        forgotten producer's next batch is taken with any sequence number, as from a new one."""
        expired = [
            pid
            for pid, e in self.producers.items()
            if e.current_txn_first_offset is None and now_ms - e.last_timestamp >= expiration_ms
        ]
        for pid in expired:
            del self.producers[pid]
        return len(expired)

    # --- snapshots --------------------------------------------------------------------------

    def _snapshot_path(self, offset: int) -> str:
        return os.path.join(self.directory, f"{offset:020d}.snapshot")

    def snapshot_offsets(self) -> list[int]:
        found = []
        for name in os.listdir(self.directory):
            if name.endswith(".snapshot"):
                try:
                    found.append(int(name[:-9]))
                except ValueError:
                    pass
        return sorted(found)

    def write_snapshot(self, offset: int) -> None:
        """Persist the state as of log end offset `offset`; keep only the two newest snapshots."""
        state = [
            {
                "pid": e.producer_id, "epoch": e.epoch, "ts": e.last_timestamp,
                "txn": e.current_txn_first_offset, "ce": e.coordinator_epoch,
                "batches": [[b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.timestamp] for b in e.batches],
            }
            for e in self.producers.values()
        ]  # fmt: skip
        atomic_write(self._snapshot_path(offset), json.dumps(state))
        for old in self.snapshot_offsets()[:-2]:
            os.unlink(self._snapshot_path(old))

    def load_snapshot(self, log_end_offset: int) -> int:
        """Load the newest snapshot at or below log_end_offset; returns its offset (0 if none)."""
        for offset in reversed(self.snapshot_offsets()):
            if offset > log_end_offset:
                os.unlink(self._snapshot_path(offset))
                continue
            try:
                with open(self._snapshot_path(offset)) as f:
                    state = json.load(f)
            except (OSError, ValueError):
                os.unlink(self._snapshot_path(offset))
                continue
            self.producers = {}
            self.ongoing_txns = {}
            self.unreplicated_txns.clear()
            for s in state:
                e = ProducerEntry(s["pid"], s["epoch"], last_timestamp=s["ts"])
                e.current_txn_first_offset = s.get("txn")
                e.coordinator_epoch = s.get("ce", -1)
                for b in s["batches"]:
                    e.batches.append(BatchMetadata(*b))
                self.producers[e.producer_id] = e
                if e.current_txn_first_offset is not None:
                    self.ongoing_txns[e.producer_id] = e.current_txn_first_offset
            return offset
        self.producers = {}
        self.ongoing_txns = {}
        self.unreplicated_txns.clear()
        return 0

    def truncate_snapshots_after(self, offset: int) -> None:
        for snap in self.snapshot_offsets():
            if snap > offset:
                os.unlink(self._snapshot_path(snap))


async def expire_producers(logs: Callable[[], Iterable], config) -> None:
    """producer.id.expiration.ms, checked every producer.id.expiration.check.interval.ms
    (Kafka's PeriodicProducerExpirationCheck). The first check runs at start-up, so state
    loaded from snapshots that has expired meanwhile goes at once, as Kafka drops it on load;
    snapshots written later no longer hold it."""
    while True:
        now = int(time.time() * 1000)
        expiration_ms = config.get("producer.id.expiration.ms")
        for lg in logs():
            removed = lg.producer_state.remove_expired(now, expiration_ms)
            if removed:
                log.debug("producers_expired", topic=lg.topic, partition=lg.partition,
                          count=removed)  # fmt: skip
        await asyncio.sleep(config.get("producer.id.expiration.check.interval.ms") / 1000)

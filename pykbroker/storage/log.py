"""Log: one partition's sequence of LogSegments (Kafka's UnifiedLog, local part).

Appends take one producer batch at a time (Produce v3+ carries exactly one batch per partition),
assign its base offset in place and write it as sent. The log knows its log start offset, log
end offset (LEO) and high watermark (HW); what the HW is, is decided by the Partition above it
(the LEO on a single broker, the ISR's minimum with replication).
"""

from __future__ import annotations

import os
import random
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog

from protocol import records as rb
from protocol.errors import ErrorCode, KafkaError
from pykbroker.config import LogConfig

from .files import atomic_write, fsync_dir
from .log_dir_failure import LogDir, is_out_of_space
from .partition_metadata import read_partition_metadata, write_partition_metadata
from .producer_state import ProducerStateManager
from .segment import FileRegion, LogSegment
from .txn_index import AbortedTxn, parse_marker
from .validator import validate_records

log = structlog.get_logger(__name__)

_MAX_RELATIVE_OFFSET = (1 << 31) - 1
_LOG_START_FILE = "log-start-offset"
CLEANED_SUFFIX = ".cleaned"
SUFFIXES_TO_DISCARD = (CLEANED_SUFFIX, ".tmp")
DELETED_SUFFIX = ".deleted"
SWAP_SUFFIX = ".swap"
_SEGMENT_EXTS = (".log", ".index", ".timeindex", ".txnindex")


def _base_of(name: str) -> int | None:
    stem = name.split(".", 1)[0]
    return int(stem) if len(stem) == 20 and stem.isdigit() else None


def _is_segment(name: str, *exts: str) -> bool:
    """A live segment file (`<20 digits>.log` etc., no suffix)."""
    stem, dot, ext = name.partition(".")
    return len(stem) == 20 and stem.isdigit() and dot and "." + ext in (exts or _SEGMENT_EXTS)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class AppendInfo:
    first_offset: int
    last_offset: int
    log_append_time: int  # -1 unless the topic uses LogAppendTime
    log_start_offset: int
    duplicate: bool = False
    record_count: int = 0


class Log:
    def __init__(
        self,
        directory: str,
        topic: str,
        partition: int,
        config: LogConfig,
        *,
        recover: bool = True,
        on_roll: Callable[[LogSegment], None] | None = None,
        on_delete_files: Callable[[list[LogSegment], int], None] | None = None,
        log_dir: LogDir | None = None,
        recovery_point: int = 0,
    ):
        self.dir = directory
        # The health of the log dir holding this log (shared by its logs; LogDirFailureChannel).
        self.log_dir = log_dir if log_dir is not None else LogDir(os.path.dirname(directory))
        self.topic = topic
        self.partition = partition
        self.config = config
        self.on_roll = on_roll
        self.on_delete_files = on_delete_files
        # Set by the LogManager: a truncation below the recovery point checkpoints it at once
        # (Kafka's truncateTo), else a crash would trust the old, higher point for new bytes.
        self.on_recovery_point_lowered: Callable[[], None] | None = None
        self.on_truncated: Callable[[int], None] | None = None  # AlterReplicaLogDirs' copy
        os.makedirs(directory, exist_ok=True)
        self.segments: list[LogSegment] = []
        self._bases: list[int] = []
        self.producer_state = ProducerStateManager(directory)
        self.log_start_offset = 0
        self.high_watermark = 0
        self.unflushed_records = 0
        self.last_flush_ms = now_ms()
        self.leader_epoch = 0
        self.closed = False
        # Offsets below it are known to be on disk (Kafka's recovery point): after an unclean
        # stop only segments holding offsets at or above it are recovered.
        self.recovery_point = recovery_point
        # The topic id in partition.metadata (None until one is assigned: a new or older dir).
        self.topic_id = read_partition_metadata(directory)
        self._load(recover)

    def assign_topic_id(self, topic_id) -> None:
        """Record the topic id this log belongs to (Kafka's UnifiedLog.assignTopicId)."""
        if self.topic_id != topic_id:
            write_partition_metadata(self.dir, topic_id)
            self.topic_id = topic_id

    # --- loading ------------------------------------------------------------------------------

    def _load(self, recover: bool) -> None:
        rebuilt = self._complete_swaps()
        bases = sorted(int(name[:-4]) for name in os.listdir(self.dir) if _is_segment(name, ".log"))
        for base in bases:
            self._add_segment(LogSegment(self.dir, base))
        truncated = recovered = 0
        for i, seg in enumerate(self.segments):
            following = self._bases[i + 1] if i + 1 < len(self._bases) else None
            # Recover every segment that may hold offsets at or above the recovery point.
            above = recover and (following is None or following > self.recovery_point)
            cut = seg.load(
                recover=above or seg.base_offset in rebuilt,
                index_interval=self.config.index_interval_bytes,
            )
            recovered += above
            truncated += cut
            if not above:
                seg.synced_size = seg.size
            if cut and following is not None:
                # Damage inside a segment with more after it: what follows a hole can't stay.
                truncated += self._remove_segments_after(i)
                break
        if recovered:
            log.info(
                "log_segments_recovered", topic=self.topic, partition=self.partition,
                segments=recovered, recovery_point=self.recovery_point,
            )  # fmt: skip
        if truncated:
            log.warning(
                "log_recovered", topic=self.topic, partition=self.partition,
                truncated_bytes=truncated,
            )  # fmt: skip
        if not self.segments:
            self._add_segment(self._new_segment(0))
        self.log_start_offset = max(self._read_log_start_offset(), self.segments[0].base_offset)
        self._rebuild_producer_state()
        self.high_watermark = self.log_end_offset
        if recover:
            self.recovery_point = min(self.recovery_point, self.log_end_offset)
        else:  # a clean shutdown flushed everything
            self.recovery_point = self.log_end_offset
            for seg in self.segments:
                seg.synced_size = seg.size

    def _remove_segments_after(self, i: int) -> int:
        """Drop segments i+1.. (while loading: after a damaged one). Returns their bytes."""
        doomed = self.segments[i + 1 :]
        del self.segments[i + 1 :]
        del self._bases[i + 1 :]
        removed = 0
        for seg in doomed:
            removed += seg.size
            seg.close()
            for path in seg.paths():
                if os.path.exists(path):
                    os.unlink(path)
        fsync_dir(self.dir)
        return removed

    def _complete_swaps(self) -> set[int]:
        """Finish or roll back segment replacements a crash interrupted (log compaction).

        The cleaner writes `<base>.{index,timeindex,log}.cleaned`, renames them to `.swap`
        (`.log` last: `<base>.log.swap` is the commit point), renames the segments it replaces to
        `.deleted`, then drops the `.swap` suffix (`.log` last again). So: a `.log.cleaned` means
        the swap never committed and the originals are authoritative; a `.log.swap` means it
        did, and the segments it covers give way to it. Returns the base offsets whose indexes
        must be rebuilt.
        """
        names = os.listdir(self.dir)
        for name in names:
            if name.endswith(SUFFIXES_TO_DISCARD) or name.endswith(DELETED_SUFFIX):
                os.unlink(os.path.join(self.dir, name))  # unfinished cleaning or deletion
        rebuilt: set[int] = set()
        for name in names:
            if name.endswith(SWAP_SUFFIX) and not name.endswith(".log" + SWAP_SUFFIX):
                base = _base_of(name)
                if not os.path.exists(self._file(base, ".log" + SWAP_SUFFIX)):
                    # Renamed before a crash stopped `.log.cleaned` from following: uncommitted.
                    os.unlink(os.path.join(self.dir, name))
        for base in sorted(_base_of(n) for n in names if n.endswith(".log" + SWAP_SUFFIX)):
            swapped = LogSegment(self.dir, base, suffix=SWAP_SUFFIX)
            swapped.recover()
            end = swapped.next_offset
            swapped.close()
            for name in os.listdir(self.dir):  # the segments the cleaned one replaced
                other = _base_of(name)
                if other is not None and base < other < end and _is_segment(name):
                    os.unlink(os.path.join(self.dir, name))
            for ext in (".index", ".timeindex", ".txnindex", ".log"):
                if os.path.exists(self._file(base, ext + SWAP_SUFFIX)):
                    os.replace(self._file(base, ext + SWAP_SUFFIX), self._file(base, ext))
            rebuilt.add(base)
            log.info(
                "log_swap_completed", topic=self.topic, partition=self.partition, base_offset=base
            )
        return rebuilt

    def _file(self, base: int, ext: str) -> str:
        return os.path.join(self.dir, f"{base:020d}{ext}")

    def _rebuild_producer_state(self) -> None:
        """Producer state from the newest snapshot plus the batches after it; the transaction
        index entries of ABORT markers met on the way are (re)written if missing, which is how
        the index of a recovered segment is rebuilt."""
        state = self.producer_state
        start = state.load_snapshot(self.log_end_offset)
        for seg in self.segments:
            if seg.next_offset <= start:
                continue
            for pos, header in seg.iter_batches(
                seg.offset_index.lookup(start) if seg.base_offset <= start else 0
            ):
                if header.last_offset >= start:
                    first = state.update(header)
                    if first is not None:
                        data = os.pread(seg.fd, header.size, pos)
                        self._index_marker(seg, data, 0, header, first)

    def _index_marker(self, seg: LogSegment, data, pos: int, header: rb.BatchHeader,
                      first_offset: int) -> None:  # fmt: skip
        """A transaction marker was appended to `seg`: an ABORT goes into its `.txnindex`; the
        producer remembers the coordinator epoch (older coordinators' markers are fenced)."""
        kind, coordinator_epoch = parse_marker(data, pos)
        entry = self.producer_state.producers.get(header.producer_id)
        if entry is not None and coordinator_epoch > entry.coordinator_epoch:
            entry.coordinator_epoch = coordinator_epoch
        if kind == rb.CONTROL_ABORT:
            lso = self.producer_state.stable_offset_after(header.last_offset)
            seg.txn_index.append(
                AbortedTxn(header.producer_id, first_offset, header.last_offset, lso)
            )

    def _read_log_start_offset(self) -> int:
        try:
            with open(os.path.join(self.dir, _LOG_START_FILE)) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _write_log_start_offset(self) -> None:
        atomic_write(os.path.join(self.dir, _LOG_START_FILE), str(self.log_start_offset))

    def _storage_error(self, e: OSError, what: str) -> KafkaError:
        return self.log_dir.failed(e, f"{what} {self.topic}-{self.partition}")

    def _new_segment(self, base: int) -> LogSegment:
        seg = LogSegment(self.dir, base, create=True)
        try:
            fsync_dir(self.dir)  # the new files' directory entries must survive a power loss too
        except BaseException:
            seg.close()  # its descriptors would leak: nothing else holds the segment
            raise
        jitter = self.config["segment.jitter.ms"]
        if jitter > 0:
            seg.roll_jitter_ms = random.randrange(min(jitter, self._max_segment_ms()))
        return seg

    def _add_segment(self, seg: LogSegment) -> None:
        i = bisect_right(self._bases, seg.base_offset)
        self._bases.insert(i, seg.base_offset)
        self.segments.insert(i, seg)

    # --- offsets ------------------------------------------------------------------------------

    @property
    def active_segment(self) -> LogSegment:
        return self.segments[-1]

    @property
    def log_end_offset(self) -> int:
        return self.segments[-1].next_offset

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    def segments_in_range(self, start: int, end: int) -> list[LogSegment]:
        """Segments holding offsets in [start, end): the one containing start up to base < end."""
        i = max(bisect_right(self._bases, start) - 1, 0)
        j = bisect_left(self._bases, end)
        return self.segments[i:j] if i < j else []

    def last_stable_offset(self) -> int:
        """The high watermark, or the first offset of the oldest undecided transaction if lower."""
        unstable = self.producer_state.first_unstable_offset(self.high_watermark)
        return self.high_watermark if unstable is None else min(self.high_watermark, unstable)

    def aborted_transactions(self, fetch_offset: int, region: FileRegion) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping a read_committed fetch
        of `region` from fetch_offset: the `.txnindex` of the segment holding fetch_offset and
        of later ones, until an entry's LSO shows nothing later can overlap (Kafka's
        collectAbortedTxns). The upper bound is the offset just past the region."""
        i = max(bisect_right(self._bases, fetch_offset) - 1, 0)
        indexed = [seg.txn_index for seg in self.segments[i:] if seg.txn_index.entries]
        if not indexed:
            return []
        seg, end = region.segment, region.position + region.length
        after = seg.batch_at(end) if end < seg.size else None
        upper = after.base_offset if after is not None else seg.next_offset
        out: list[tuple[int, int]] = []
        for index in indexed:
            if index.collect(fetch_offset, upper, out):
                break
        return out

    def update_high_watermark(self, offset: int) -> bool:
        """Move the HW (clamped to [log start, LEO]); True if it advanced."""
        offset = min(max(offset, self.log_start_offset), self.log_end_offset)
        if offset > self.high_watermark:
            self.high_watermark = offset
            return True
        self.high_watermark = offset
        return False

    # --- appends ------------------------------------------------------------------------------

    def append_as_leader(self, records: memoryview, leader_epoch: int = 0) -> AppendInfo:
        """Validate and append one producer batch; the view is patched in place."""
        batches = rb.validate_batches(records, self.config.max_message_bytes)
        if len(batches) != 1:
            raise KafkaError(
                ErrorCode.INVALID_RECORD,
                "Produce requests must carry exactly one record batch per partition",
            )
        _, header = batches[0]
        records, header = validate_records(records, header, self.config, self.topic,
                                           self.partition, now_ms(), self.log_start_offset)  # fmt: skip
        duplicate = self.producer_state.check(header)
        if duplicate is not None:
            return AppendInfo(
                duplicate.first_offset,
                duplicate.last_offset,
                duplicate.timestamp if self.config.log_append_time else -1,
                self.log_start_offset,
                duplicate=True,
            )
        append_time = -1
        if self.config.log_append_time:
            append_time = now_ms()
            rb.set_log_append_time(records, 0, append_time)
            header.max_timestamp = append_time
            header.attributes |= rb.TIMESTAMP_TYPE_MASK
        header.base_offset = self.log_end_offset
        rb.set_base_offset(records, 0, header.base_offset)
        rb.set_partition_leader_epoch(records, 0, leader_epoch)
        header.partition_leader_epoch = leader_epoch
        self._append(records, [(0, header)])
        return AppendInfo(
            header.base_offset, header.last_offset, append_time, self.log_start_offset,
            record_count=header.record_count,
        )  # fmt: skip

    def append_as_follower(self, records) -> int:
        """Append batches whose offsets the leader assigned (replication). Returns the new LEO."""
        batches = [(pos, h) for pos, h in rb.scan_batches(records)]
        if not batches:
            return self.log_end_offset
        end = batches[-1][0] + batches[-1][1].size
        if batches[0][1].base_offset < self.log_end_offset:
            raise KafkaError(
                ErrorCode.OFFSET_OUT_OF_RANGE, "follower append below the log end offset"
            )
        self._append(memoryview(records)[:end], batches)
        return self.log_end_offset

    def _append(self, data, batches: list[tuple[int, rb.BatchHeader]]) -> None:
        if not self.log_dir.writable:  # full (until a probe finds space) or offline
            self.log_dir.check_writable(f"appending records to {self.topic}-{self.partition}")
        size = len(data)
        first, last = batches[0][1], batches[-1][1]
        try:
            self._maybe_roll(size, first.base_offset, last.last_offset, first.max_timestamp)
            seg = self.active_segment
            # Writes the batches or nothing: a failed write is cut back and the LEO stays.
            seg.append(data, batches, self.config.index_interval_bytes)
        except OSError as e:
            raise self._storage_error(e, "appending records to") from None
        try:
            for pos, h in batches:
                first = self.producer_state.update(h)
                if first is not None:
                    self._index_marker(seg, data, pos, h, first)
                self.unflushed_records += h.record_count
        except OSError as e:  # not for lack of space (indexes wait for it): the disk failed
            raise self._storage_error(e, "appending records to") from None
        if self.unflushed_records >= self.config.flush_messages:
            try:
                self.flush()
            except OSError as e:  # even ENOSPC: the dirty pages may be gone (flush_failed)
                raise self.log_dir.flush_failed(
                    e, f"flushing {self.topic}-{self.partition}"
                ) from None

    def _maybe_roll(self, size: int, first_offset: int, last_offset: int, timestamp: int) -> None:
        seg = self.active_segment
        if seg.size == 0:
            if seg.base_offset != first_offset and seg.next_offset == seg.base_offset:
                self._replace_empty_active(first_offset)
            return
        cfg = self.config
        if (
            seg.size + size > cfg.segment_bytes
            or len(seg.offset_index) >= cfg.max_index_entries
            or len(seg.time_index) >= cfg["segment.index.bytes"] // 12  # 12-byte entries
            or last_offset - seg.base_offset > _MAX_RELATIVE_OFFSET
            or seg.time_waiting_to_roll(now_ms()) > self._max_segment_ms() - seg.roll_jitter_ms
        ):
            self.roll(first_offset)

    def _max_segment_ms(self) -> int:
        """segment.ms, or max.compaction.lag.ms if smaller on a compacted topic: the cleaner
        never touches the active segment, so it must roll for the lag to be honoured."""
        cfg = self.config
        if cfg.compact and cfg["max.compaction.lag.ms"] > 0:
            return min(cfg.segment_ms, cfg["max.compaction.lag.ms"])
        return cfg.segment_ms

    def _replace_empty_active(self, base: int) -> None:
        """An empty active segment takes the base offset of the first batch written to it."""
        new = self._new_segment(base)  # first: if it fails, the log keeps its active segment
        old = self.segments.pop()
        self._bases.pop()
        old.close()
        for path in old.paths():
            os.unlink(path)
        self._add_segment(new)

    def roll(self, base_offset: int | None = None) -> LogSegment:
        base = self.log_end_offset if base_offset is None else base_offset
        old = self.active_segment
        if old.size == 0 and old.base_offset == base:
            return old
        self.write_snapshot()
        seg = self._new_segment(base)
        self._add_segment(seg)
        if self.on_roll is not None:
            self.on_roll(old)  # flush the finished segment off the event loop
        log.debug("segment_rolled", topic=self.topic, partition=self.partition, base_offset=base)
        return seg

    def flush(self) -> None:
        """fsync what isn't yet (rolled segments whose background flush is pending too), so
        the whole log is below the recovery point."""
        active = self.active_segment
        for seg in self.segments[self._segment_index(self.recovery_point) :]:
            if seg is active or seg.synced_size != seg.size:
                seg.flush()
        self.unflushed_records = 0
        self.last_flush_ms = now_ms()
        self.update_recovery_point()

    def update_recovery_point(self) -> int:
        """Move the recovery point over every segment whose bytes are all fsynced."""
        point = self.recovery_point
        for seg in self.segments[self._segment_index(point) :]:
            if seg.next_offset <= point:
                continue
            if seg.synced_size != seg.size:
                break
            point = seg.next_offset
        self.recovery_point = point
        return point

    def _segment_index(self, offset: int) -> int:
        """Index of the segment that holds `offset` (or would: the last one starting at or
        before it); everything before it is below `offset`."""
        return max(bisect_right(self._bases, offset) - 1, 0)

    # --- reads ----------------------------------------------------------------------------

    def check_fetch_offset(self, offset: int) -> None:
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise KafkaError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"offset {offset} is outside [{self.log_start_offset}, {self.log_end_offset}]",
            )

    def read(
        self, offset: int, max_bytes: int, max_offset: int, min_one: bool = True
    ) -> FileRegion | None:
        """Whole batches from the one holding `offset`, up to max_bytes, below max_offset."""
        self.check_fetch_offset(offset)
        if offset >= max_offset:
            return None
        i = max(bisect_right(self._bases, offset) - 1, 0)
        limit_pos = self._position_of(max_offset)
        while i < len(self.segments):
            seg = self.segments[i]
            max_position = limit_pos[1] if limit_pos is not None and limit_pos[0] is seg else None
            region = seg.read(offset, max_bytes, max_position, min_one)
            if region is not None:
                return region if region.length > 0 else None
            if limit_pos is not None and limit_pos[0] is seg:
                return None
            i += 1
        return None

    def batches(self, chunk_bytes: int = 1 << 20) -> Iterator[tuple[bytes, int, rb.BatchHeader]]:
        """(buffer, position, header) of every batch from the log start to the log end (not the
        HW: a new leader loads its internal topics before its HW has caught up, as Kafka does),
        read `chunk_bytes` at a time."""
        offset, end = self.log_start_offset, self.log_end_offset
        while offset < end:
            region = self.read(offset, chunk_bytes, end)
            if region is None:
                return
            data = region.read()
            next_offset = offset
            for pos, header in rb.scan_batches(data):
                next_offset = header.next_offset
                if header.last_offset >= offset:
                    yield data, pos, header
            if next_offset <= offset:
                return
            offset = next_offset

    def _position_of(self, offset: int) -> tuple[LogSegment, int] | None:
        """(segment, position) of the first batch at or after offset; None at the LEO."""
        if offset >= self.log_end_offset:
            return None
        i = max(bisect_right(self._bases, offset) - 1, 0)
        for seg in self.segments[i:]:
            found = seg.translate_offset(offset)
            if found is not None:
                pos, header = found
                if header.base_offset < offset:
                    pos += header.size  # never expose part of a batch beyond the bound
                return seg, pos
        return None

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after `timestamp` (ListOffsets)."""
        limit = rb.max_decompressed_bytes(self.config.max_message_bytes)
        for seg in self.segments:
            if seg.max_timestamp >= timestamp:
                found = seg.find_offset_by_timestamp(timestamp, limit)
                if found is not None and found[0] >= self.log_start_offset:
                    return found
        return None

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with the largest timestamp (ListOffsets v7)."""
        best = None
        for seg in self.segments:
            if seg.offset_of_max_timestamp >= 0 and (
                best is None or seg.max_timestamp > best.max_timestamp
            ):
                best = seg
        if best is None:
            return None
        # The segment tracks the batch holding the maximum; the record inside it is found by
        # decoding that one batch (Kafka answers with the record's own offset, KAFKA-16310).
        found = best.find_offset_by_timestamp(best.max_timestamp)
        return found if found is not None else (best.offset_of_max_timestamp, best.max_timestamp)

    # --- maintenance ------------------------------------------------------------------------

    def maybe_increment_log_start_offset(self, offset: int) -> None:
        """DeleteRecords: records below offset become unreadable; segments go later."""
        if offset > self.log_start_offset:
            previous, self.log_start_offset = self.log_start_offset, offset
            try:
                self._write_log_start_offset()
            except OSError as e:
                self.log_start_offset = previous
                raise self._storage_error(e, "writing the log start offset of") from None
            self.high_watermark = max(self.high_watermark, offset)

    def delete_segments(self, doomed: list[LogSegment]) -> None:
        """Remove the oldest segments; their files go after file.delete.delay.ms.

        The log always keeps an active segment: if every segment is doomed (retention found even
        the active one expired), a new empty one is rolled at the log end offset first, as Kafka
        does, and the log start offset moves up to it.
        """
        doomed = [s for s in doomed if s in self.segments]
        if not doomed:
            return
        if doomed[-1] is self.active_segment:
            self.roll()
        for seg in doomed:
            i = self.segments.index(seg)
            del self.segments[i]
            del self._bases[i]
            seg.rename_with_suffix("", DELETED_SUFFIX)
            seg.deleted = True
        if self.segments[0].base_offset > self.log_start_offset:
            self.log_start_offset = self.segments[0].base_offset
            try:
                self._write_log_start_offset()
            except OSError as e:  # the oldest segment's base says as much after a restart
                if not is_out_of_space(e):
                    self._storage_error(e, "writing the log start offset of")
            self.high_watermark = max(self.high_watermark, self.log_start_offset)
        self._delete_files_later(doomed)

    def replace_segments(self, cleaned: LogSegment, old: list[LogSegment],
                         removed_aborts: set[int] = frozenset()) -> bool:  # fmt: skip
        """Swap a cleaned segment (files `<base>.*.cleaned`, flushed) in for `old`.

        Runs on the event loop between reads, so no reader sees a half-swapped log; a fetch
        already holding an old segment keeps its open file until file.delete.delay.ms. The
        rename order is what `_complete_swaps` relies on after a crash. False (nothing done)
        if `old` is no longer a run of non-active segments of this log (retention, deletion
        or truncation got there first).
        """
        try:
            i = next(k for k, seg in enumerate(self.segments) if seg is old[0])
        except StopIteration:
            return False
        n = len(old)
        current = self.segments[i : i + n]
        if (
            self.closed
            or len(current) != n
            or any(a is not b for a, b in zip(current, old, strict=True))
            or i + n >= len(self.segments)  # the active segment is never cleaned
            or any(seg.deleted for seg in old)
        ):
            return False
        # Aborted transactions whose markers the cleaned segment keeps (`removed_aborts`: the
        # offsets of ABORT markers the cleaner removed, whose records went before them).
        cleaned.txn_index.replace(
            [e for seg in old for e in seg.txn_index.entries if e.last_offset not in removed_aborts]
        )
        cleaned.rename_with_suffix(CLEANED_SUFFIX, SWAP_SUFFIX)  # <base>.log.swap: committed
        fsync_dir(self.dir)  # the commit point must survive a power loss, as Kafka flushes it
        for seg in old:
            seg.rename_with_suffix("", DELETED_SUFFIX)
            seg.deleted = True
        self.segments[i : i + n] = [cleaned]
        self._bases[i : i + n] = [cleaned.base_offset]
        cleaned.rename_with_suffix(SWAP_SUFFIX, "")
        self._delete_files_later(old)
        return True

    def _delete_files_later(self, segments: list[LogSegment]) -> None:
        if self.on_delete_files is not None:
            self.on_delete_files(segments, self.config["file.delete.delay.ms"])
        else:
            remove_segment_files(segments)

    def truncate_to(self, offset: int) -> None:
        """Remove everything at or above offset (a follower diverging from its leader)."""
        if offset >= self.log_end_offset:
            return
        doomed = [s for s in self.segments if s.base_offset >= offset and s is not self.segments[0]]
        for seg in doomed:
            i = self.segments.index(seg)
            del self.segments[i]
            del self._bases[i]
            seg.close()
            for path in seg.paths():
                os.unlink(path)
        self.active_segment.truncate_to(offset)
        seg = self.active_segment
        seg.synced_size = min(seg.synced_size, seg.size)  # what's appended next isn't synced
        lowered = self.log_end_offset < self.recovery_point
        self.recovery_point = min(self.recovery_point, self.log_end_offset)
        self.producer_state.truncate_snapshots_after(offset)
        self._rebuild_producer_state()
        self.high_watermark = min(self.high_watermark, self.log_end_offset)
        if lowered and self.on_recovery_point_lowered is not None:
            self.on_recovery_point_lowered()
        if self.on_truncated is not None:  # a copy being made of this log cuts back too
            self.on_truncated(self.log_end_offset)

    def write_snapshot(self) -> None:
        """Snapshot producer state at the LEO. Optional (recovery replays from an older one), so
        a full disk only logs it; skipped while a `.txnindex` waits for space, so that
        recovery replays the markers its file lacks."""
        if any(seg.txn_index.stale for seg in self.segments):
            return
        try:
            self.producer_state.write_snapshot(self.log_end_offset)
        except OSError as e:
            if not is_out_of_space(e):
                raise
            log.warning(
                "producer_snapshot_skipped", topic=self.topic, partition=self.partition,
                error=str(e),
            )  # fmt: skip

    def close(self) -> None:
        self.closed = True
        for seg in self.segments:
            seg.close()

    def __repr__(self) -> str:
        return f"Log({self.topic}-{self.partition}, start={self.log_start_offset}, end={self.log_end_offset})"


def remove_segment_files(segments: list[LogSegment]) -> None:
    for seg in segments:
        seg.close()
        for path in seg.paths():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

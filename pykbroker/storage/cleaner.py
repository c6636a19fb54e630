"""Log compaction (Kafka's LogCleaner): keep the newest record per key in compacted topics.

One cleaner task runs on the broker's event loop and one worker thread does the heavy work:

1. Pick the filthiest log among those with `compact` in cleanup.policy: the dirty section runs
   from the cleaner checkpoint (`cleaner-offset-checkpoint` in each log dir, Kafka's format) to
   the first uncleanable offset — never the active segment, nothing at or past the last stable
   offset, nothing in a segment newer than min.compaction.lag.ms. A log is cleaned when its
   dirty ratio passes min.cleanable.dirty.ratio, when max.compaction.lag.ms says a dirty
   segment waited too long, or when tombstones it kept have reached their delete horizon.
2. In the thread, build a key -> newest offset map over the dirty section (records of aborted
   transactions left out, records of still-open transactions ending the section).
3. Rewrite the log below the map's end in groups of segments (each group at most segment.bytes):
   a record stays if it is the newest for its key, or is at/after the end; a tombstone stays
   until its batch's delete horizon (KIP-534: the first cleaning that keeps a tombstone stamps
   now + delete.retention.ms into the batch) has passed. Batches keep their base and last
   offsets, producer id/epoch/sequence and codec: an untouched batch is copied byte for byte, a
   thinned one is rebuilt from the raw bytes of the records it keeps (recompressed with its
   codec), an emptied one disappears unless it holds an active producer's last sequence or ends
   the group, in which case an empty batch keeps its offsets. Batches of aborted transactions
   (ABORT seen in the map's scan, or a `.txnindex` entry) lose all their records. A transaction
   marker goes like a tombstone (KIP-98/534, Kafka's CleanedTransactionMetadata) once no batch
   of its transaction was written out before it in the round: the first such cleaning stamps
   its delete horizon, a cleaning after it drops the marker (and a removed ABORT marker's
   `.txnindex` entry) — unless the marker ends the group, where it waits for a later round.
4. Back on the event loop, swap each cleaned segment in (`Log.replace_segments`): `.cleaned` ->
   `.swap` -> final names, old segments renamed `.deleted` and closed after
   file.delete.delay.ms, so a fetch in flight on them completes. `Log._complete_swaps` finishes
   or rolls back a swap that a crash interrupted.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog
from crc32c import crc32c

from protocol import compression
from protocol import records as rb
from protocol.errors import ErrorCode, KafkaError

from .files import atomic_write
from .log import CLEANED_SUFFIX, Log, now_ms, remove_segment_files
from .log_dir_failure import is_out_of_space
from .segment import LogSegment

log = structlog.get_logger(__name__)

CHECKPOINT_FILE = "cleaner-offset-checkpoint"
_CHUNK = 1 << 20
_OUT_FLUSH = 1 << 20
_DEDUPE_ENTRY_BYTES = 24  # Kafka's SkimpyOffsetMap: a 16-byte MD5 and an 8-byte offset per key
_DEDUPE_LOAD_FACTOR = 0.9
_NO_HORIZON = 1 << 62


class CleaningAborted(Exception):
    """The broker is stopping: drop the cleaning in progress (its `.cleaned` files go)."""


@dataclass(slots=True)
class LogToClean:
    log: Log
    first_dirty: int
    first_uncleanable: int
    clean_bytes: int
    cleanable_bytes: int
    compact_now: bool  # max.compaction.lag.ms has passed for some dirty segment
    tombstones_due: bool  # kept tombstones have reached their delete horizon

    @property
    def total_bytes(self) -> int:
        return self.clean_bytes + self.cleanable_bytes

    @property
    def ratio(self) -> float:
        return self.cleanable_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(slots=True)
class Source:
    """A segment as the cleaner reads it: fixed bounds and a file descriptor of its own.

    The event loop dups the segment's descriptor (`of`), which keeps the file readable whatever
    happens to the segment meanwhile (renamed `.deleted`, closed, its topic deleted); the
    cleaner thread or worker process then opens its own descriptor from it (`opened`), the
    worker through /proc/<broker pid>/fd. Picklable.
    """

    pid: int
    fd: int
    base_offset: int
    size: int
    next_offset: int
    mtime_ns: int

    @classmethod
    def of(cls, seg: LogSegment) -> Source:
        fd = os.dup(seg.fd)
        return cls(os.getpid(), fd, seg.base_offset, seg.size, seg.next_offset,
                   os.fstat(fd).st_mtime_ns)  # fmt: skip

    def opened(self) -> Source:
        if self.pid == os.getpid():
            fd = os.dup(self.fd)
        else:
            fd = os.open(f"/proc/{self.pid}/fd/{self.fd}", os.O_RDONLY)
        return Source(self.pid, fd, self.base_offset, self.size, self.next_offset, self.mtime_ns)


def _close_sources(sources: list[Source]) -> None:
    for src in sources:
        if src.fd >= 0:
            os.close(src.fd)
            src.fd = -1


@dataclass(slots=True)
class CleanerStats:
    """Totals since start-up, and the last round's figures (for logs, tests and bench)."""

    rounds: int = 0
    groups_swapped: int = 0
    groups_discarded: int = 0
    bytes_read: int = 0  # segment bytes rewritten
    map_bytes_read: int = 0  # dirty bytes scanned to build the offset map
    bytes_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    markers_removed: int = 0
    seconds: float = 0.0
    last_round: dict = field(default_factory=dict)


class OffsetMap:
    """key -> offset of its newest record in the dirty section; `end` bounds what it covers."""

    __slots__ = ("offsets", "capacity", "end")

    def __init__(self, capacity: int):
        self.offsets: dict[bytes, int] = {}
        self.capacity = max(capacity, 1)
        self.end = 0


# --- record and batch coding (raw bytes: records are kept verbatim, never re-encoded) -------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "varint too long")


def _zigzag(value: int) -> bytes:
    v = ((value << 1) ^ (value >> 63)) & ((1 << 64) - 1)
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


# A parsed record: (start, attributes position, offset-delta position, end, offset, timestamp,
# key, is_tombstone). Positions index the batch body (decompressed).
RecordSpan = tuple[int, int, int, int, int, int, bytes | None, bool]


def parse_records(body: bytes, header: rb.BatchHeader) -> list[RecordSpan]:
    """Every record's span, offset, timestamp, key and tombstone flag (headers not parsed).

    The hot loop of the cleaner: one-byte varints (most of them) are decoded inline.
    """
    base_offset, base_ts = header.base_offset, header.base_timestamp
    out: list[RecordSpan] = []
    append = out.append
    varint = _varint
    pos = 0
    n = len(body)
    try:
        for _ in range(header.record_count):
            b = body[pos]
            if b < 0x80:
                length, attr = (b >> 1) ^ -(b & 1), pos + 1
            elif body[pos + 1] < 0x80:
                v = (b & 0x7F) | (body[pos + 1] << 7)
                length, attr = (v >> 1) ^ -(v & 1), pos + 2
            else:
                length, attr = varint(body, pos)
            end = attr + length
            if length <= 0 or end > n:
                raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "record length out of bounds")
            b = body[attr + 1]
            if b < 0x80:
                ts_delta, off = (b >> 1) ^ -(b & 1), attr + 2
            else:
                ts_delta, off = varint(body, attr + 1)
            b = body[off]
            if b < 0x80:
                off_delta, p = (b >> 1) ^ -(b & 1), off + 1
            elif body[off + 1] < 0x80:
                v = (b & 0x7F) | (body[off + 1] << 7)
                off_delta, p = (v >> 1) ^ -(v & 1), off + 2
            else:
                off_delta, p = varint(body, off)
            b = body[p]
            if b < 0x80:
                klen, p = (b >> 1) ^ -(b & 1), p + 1
            else:
                klen, p = varint(body, p)
            if klen >= 0:
                key = body[p : p + klen]
                p += klen
            else:
                key = None
            # A null value is length -1, zigzag 1: the single byte 0x01.
            append((pos, attr, off, end, base_offset + off_delta, base_ts + ts_delta, key,
                    body[p] == 1))  # fmt: skip
            pos = end
    except IndexError:
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "truncated record") from None
    return out


def parse_keys(body: bytes, header: rb.BatchHeader) -> list[tuple[bytes, int]]:
    """(key, offset) of each keyed record: what the offset map needs, nothing more."""
    base_offset = header.base_offset
    out: list[tuple[bytes, int]] = []
    append = out.append
    varint = _varint
    pos = 0
    n = len(body)
    try:
        for _ in range(header.record_count):
            b = body[pos]
            if b < 0x80:
                length, p = (b >> 1) ^ -(b & 1), pos + 1
            elif body[pos + 1] < 0x80:
                v = (b & 0x7F) | (body[pos + 1] << 7)
                length, p = (v >> 1) ^ -(v & 1), pos + 2
            else:
                length, p = varint(body, pos)
            end = p + length
            if length <= 0 or end > n:
                raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "record length out of bounds")
            p += 1  # attributes
            if body[p] < 0x80:
                p += 1
            else:
                _, p = varint(body, p)
            b = body[p]
            if b < 0x80:
                off_delta, p = (b >> 1) ^ -(b & 1), p + 1
            elif body[p + 1] < 0x80:
                v = (b & 0x7F) | (body[p + 1] << 7)
                off_delta, p = (v >> 1) ^ -(v & 1), p + 2
            else:
                off_delta, p = varint(body, p)
            b = body[p]
            if b < 0x80:
                klen, p = (b >> 1) ^ -(b & 1), p + 1
            else:
                klen, p = varint(body, p)
            if klen >= 0:
                append((body[p : p + klen], base_offset + off_delta))
            pos = end
    except IndexError:
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "truncated record") from None
    return out


def batch_body(buf: bytes, pos: int, header: rb.BatchHeader,
               limit: int = compression.DEFAULT_LIMIT) -> bytes:  # fmt: skip
    """The records section, decompressed (at most `limit` bytes); KafkaError if unreadable."""
    if header.compression:
        return bytes(rb.decompress_records(buf, pos, header, limit))
    return bytes(buf[pos + rb.HEADER_SIZE : pos + header.size])


def _unreadable(header: rb.BatchHeader, e: KafkaError) -> None:
    """A batch the cleaner cannot read (written corrupt by an older broker, or inflating past
    the bound) is left as it is: logged, its keys unknown, never rewritten."""
    log.warning("cleaner_skipped_unreadable_batch", base_offset=header.base_offset,
                last_offset=header.last_offset, error=ErrorCode(e.code).name, reason=e.message)  # fmt: skip


def readable_keys(buf: bytes, pos: int, header: rb.BatchHeader, limit: int):
    """parse_keys of the batch, or None (logged) when it cannot be read."""
    try:
        return parse_keys(batch_body(buf, pos, header, limit), header)
    except KafkaError as e:
        _unreadable(header, e)
        return None


def readable_records(buf: bytes, pos: int, header: rb.BatchHeader, limit: int):
    """(body, parse_records of it), or None (logged) when the batch cannot be read."""
    try:
        body = batch_body(buf, pos, header, limit)
        return body, parse_records(body, header)
    except KafkaError as e:
        _unreadable(header, e)
        return None


def _encode_batch(
    header: rb.BatchHeader, attributes: int, base_ts: int, max_ts: int, count: int, body: bytes
) -> bytes:
    buf = bytearray(rb.HEADER_SIZE + len(body))
    rb.HEADER.pack_into(
        buf, 0, header.base_offset, rb.HEADER_SIZE - rb.LOG_OVERHEAD + len(body),
        header.partition_leader_epoch, 2, 0, attributes, header.last_offset_delta, base_ts,
        max_ts, header.producer_id, header.producer_epoch, header.base_sequence, count,
    )  # fmt: skip
    buf[rb.HEADER_SIZE :] = body
    rb._UINT32.pack_into(buf, 17, crc32c(memoryview(buf)[rb.CRC_START :]))
    return bytes(buf)


def rebuild_batch(
    header: rb.BatchHeader, body: bytes, kept: list[RecordSpan], delete_horizon: int | None
) -> bytes:
    """The batch with only `kept` records: same offsets range, producer fields and codec.

    Record offset deltas stay valid (the base offset is kept); timestamp deltas too, unless a
    delete horizon becomes the base timestamp, in which case they are re-encoded against it.
    """
    attributes = header.attributes
    base_ts = header.base_timestamp
    if delete_horizon is None:
        new_body = b"".join(body[r[0] : r[3]] for r in kept)
    else:
        attributes |= rb.DELETE_HORIZON_MASK
        base_ts = delete_horizon
        parts = []
        for _start, attr, off, end, _offset, ts, _key, _tomb in kept:
            inner = body[attr : attr + 1] + _zigzag(ts - delete_horizon) + body[off:end]
            parts.append(_zigzag(len(inner)) + inner)
        new_body = b"".join(parts)
    max_ts = header.max_timestamp if header.is_log_append_time else max(r[5] for r in kept)
    if header.compression:
        new_body = compression.compress(header.compression, new_body)
    return _encode_batch(header, attributes, base_ts, max_ts, len(kept), new_body)


def empty_batch(header: rb.BatchHeader) -> bytes:
    """An empty batch keeping the offsets and producer fields of `header` (Kafka's RETAIN_EMPTY)."""
    attributes = header.attributes & ~(rb.COMPRESSION_MASK | rb.DELETE_HORIZON_MASK)
    return _encode_batch(header, attributes, header.max_timestamp, header.max_timestamp, 0, b"")


def control_type(buf: bytes, pos: int) -> int:
    """ABORT (0) or COMMIT (1) of a marker; a marker that cannot be decoded raises (the
    cleaning stops rather than guess)."""
    recs = rb.decode_records(buf, pos)
    return rb.parse_marker(recs[0])[0] if recs else -1


# --- reading segments in the cleaner thread ----------------------------------------------


def read_batches(
    src: Source, check: Callable[[int], None]
) -> Iterator[tuple[rb.BatchHeader, bytes, int]]:
    """(header, buffer, position in buffer) of each whole batch of a source segment."""
    pos = 0
    while src.size - pos >= rb.HEADER_SIZE:
        chunk = os.pread(src.fd, min(_CHUNK, src.size - pos), pos)
        check(len(chunk))
        n = len(chunk)
        p = 0
        while n - p >= rb.HEADER_SIZE:
            size = rb.peek_size(chunk, p)
            if size < rb.HEADER_SIZE:
                raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"bad batch length at {pos + p}")
            if p + size > n:
                break
            yield rb.read_header(chunk, p), chunk, p
            p += size
        if p == 0:  # one batch larger than the chunk
            size = rb.peek_size(chunk, 0)
            data = os.pread(src.fd, size, pos)
            if len(data) < size:
                return
            check(size)
            yield rb.read_header(data), data, 0
            p = size
        pos += p


# --- the cleaning itself (runs in the cleaner thread) -------------------------------------


class _Throttle:
    """log.cleaner.io.max.bytes.per.second over bytes read and written; interruptible."""

    def __init__(self, rate: float, stop: threading.Event):
        self.rate = rate
        self.stop = stop
        self.start = time.monotonic()
        self.done = 0

    def __call__(self, n: int) -> None:
        if self.stop.is_set():
            raise CleaningAborted()
        if self.rate >= 1e300:
            return
        self.done += n
        ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0.005 and self.stop.wait(ahead):
            raise CleaningAborted()


def build_offset_map(
    dirty: list[Source], first_dirty: int, upper: int, omap: OffsetMap,
    check: Callable[[int], None], stats: CleanerStats, limit: int = compression.DEFAULT_LIMIT,
) -> set[int]:  # fmt: skip
    """Fill `omap` from [first_dirty, upper); set omap.end; return aborted batches' base offsets.

    Transactional records count only once their COMMIT marker is seen; an ABORT marker makes
    their batches removable; a transaction still open when the scan ends ends the section there.
    """
    offsets = omap.offsets
    aborted: set[int] = set()
    pending: dict[int, list[tuple[int, list[tuple[bytes, int]]]]] = {}
    end = upper
    stopped = False
    for src in dirty:
        for header, buf, p in read_batches(src, check):
            if header.last_offset < first_dirty:
                continue
            if header.base_offset >= upper:
                stopped = True
                break
            stats.map_bytes_read += header.size
            if header.is_control:
                txn = pending.pop(header.producer_id, None)
                if txn is not None:
                    if control_type(buf, p) == rb.CONTROL_COMMIT:
                        for _base, pairs in txn:
                            for key, off in pairs:
                                if off > offsets.get(key, -1):
                                    offsets[key] = off
                    else:
                        aborted.update(base for base, _pairs in txn)
                continue
            if offsets and len(offsets) + header.record_count > omap.capacity:
                end = header.base_offset  # the map is full: clean up to here this round
                stopped = True
                break
            pairs = readable_keys(buf, p, header, limit)
            if pairs is None:
                continue
            if header.is_transactional:
                pending.setdefault(header.producer_id, []).append((header.base_offset, pairs))
            else:
                offsets.update(pairs)  # in offset order: the newest wins
        if stopped:
            break
    if pending:
        end = min(end, min(txn[0][0] for txn in pending.values()))
    omap.end = max(end, first_dirty)
    return aborted


class TxnCleaning:
    """What the rewrite knows of transactions as it walks the log in offset order (Kafka's
    CleanedTransactionMetadata), over all the groups of a round.

    A data batch is aborted if the dirty scan saw its ABORT marker, or if a `.txnindex` entry
    of its producer covers it. A marker may go once no batch of its transaction was written
    out before it in this round (Kafka asks whether one was read; asking whether one was kept
    lets a marker whose records this very round removed start its delete horizon at once).
    """

    __slots__ = ("entries", "next_entry", "in_aborted", "kept", "removed_aborts")

    def __init__(self, aborted_txns: list[tuple[int, int, int]]):
        # (first offset, producer id, marker offset) of each aborted transaction, by first offset
        self.entries = sorted(aborted_txns)
        self.next_entry = 0
        self.in_aborted: set[int] = set()  # producers inside an aborted transaction
        self.kept: dict[int, bool] = {}  # producer -> a batch of its open transaction was kept
        self.removed_aborts: list[int] = []  # offsets of ABORT markers removed (index entries)

    def _enter_aborted(self, offset: int) -> None:
        entries = self.entries
        while self.next_entry < len(entries) and entries[self.next_entry][0] <= offset:
            self.in_aborted.add(entries[self.next_entry][1])
            self.next_entry += 1

    def data_aborted(self, header: rb.BatchHeader) -> bool:
        self._enter_aborted(header.last_offset)
        return header.is_transactional and header.producer_id in self.in_aborted

    def data_written(self, header: rb.BatchHeader, written: bool) -> None:
        if header.is_transactional:
            pid = header.producer_id
            self.kept[pid] = self.kept.get(pid, False) or written

    def marker_read(self, header: rb.BatchHeader) -> bool:
        """The transaction ends here: True if nothing of it is left before the marker."""
        self._enter_aborted(header.last_offset)
        self.in_aborted.discard(header.producer_id)
        return not self.kept.pop(header.producer_id, False)


@dataclass(slots=True)
class GroupResult:
    cleaned: LogSegment | None  # flushed `<base>.*.cleaned`; the tasks hand back just `base`
    min_horizon: int  # earliest delete horizon of tombstones kept below the map's end
    base: int = -1
    records_read: int = 0
    records_kept: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    markers_removed: int = 0
    removed_aborts: list[int] = field(default_factory=list)  # ABORT markers gone (.txnindex)


def clean_group(
    directory: str, group: list[Source], omap: OffsetMap, aborted: set[int],
    active_producers: dict[int, int], now: int, delete_retention_ms: int,
    index_interval: int, check: Callable[[int], None], txns: TxnCleaning | None = None,
    limit: int = compression.DEFAULT_LIMIT,
) -> GroupResult:  # fmt: skip
    """Write the retained batches of `group` into `<base>.*.cleaned` (flushed), or None if the
    group holds no batch at all."""
    result = GroupResult(None, _NO_HORIZON)
    if not any(src.size for src in group):
        return result
    if txns is None:
        txns = TxnCleaning([])
    offsets = omap.offsets
    end = omap.end
    # The group's last batch always stays (empty if need be): the cleaned segment then ends
    # exactly where the group did, which is how crash recovery knows what it replaced.
    upper = next(src.next_offset for src in reversed(group) if src.size)
    base = group[0].base_offset
    for ext in (".log", ".index", ".timeindex"):  # leftovers of an aborted attempt
        try:
            os.unlink(os.path.join(directory, f"{base:020d}{ext}{CLEANED_SUFFIX}"))
        except FileNotFoundError:
            pass
    dest = LogSegment(directory, base, create=True, suffix=CLEANED_SUFFIX)
    out = bytearray()
    headers: list[tuple[int, rb.BatchHeader]] = []

    def emit(data: bytes, header: rb.BatchHeader | None = None) -> None:
        headers.append((len(out), header or rb.read_header(data)))
        out.extend(data)

    try:
        for src in group:
            for header, buf, p in read_batches(src, check):
                size = header.size
                result.bytes_read += size
                if header.is_control:
                    done = txns.marker_read(header)
                    if header.base_offset >= end or not done:
                        emit(buf[p : p + size], header)  # its transaction has records left
                    elif header.attributes & rb.DELETE_HORIZON_MASK:
                        horizon = header.base_timestamp
                        if now < horizon:
                            emit(buf[p : p + size], header)
                            result.min_horizon = min(result.min_horizon, horizon)
                        elif header.next_offset == upper:
                            # The group's last batch stays, and an empty control batch is
                            # something some clients refuse: it goes in a later cleaning.
                            emit(buf[p : p + size], header)
                        else:
                            result.markers_removed += 1
                            if control_type(buf, p) == rb.CONTROL_ABORT:
                                result.removed_aborts.append(header.base_offset)
                    else:  # first found removable: it goes after delete.retention.ms
                        new_horizon = now + delete_retention_ms
                        body = batch_body(buf, p, header)
                        emit(rebuild_batch(header, body, parse_records(body, header), new_horizon))
                        result.min_horizon = min(result.min_horizon, new_horizon)
                    continue
                if header.base_offset >= end:
                    txns.data_aborted(header)
                    txns.data_written(header, True)
                    emit(buf[p : p + size], header)
                    continue
                result.records_read += header.record_count
                keep_empty = header.next_offset == upper or (
                    header.has_producer_id
                    and active_producers.get(header.producer_id) == header.last_offset
                )
                kept: list[RecordSpan] = []
                body = b""
                tombstones = False
                horizon = None
                txn_aborted = txns.data_aborted(header)
                if header.base_offset not in aborted and not txn_aborted:
                    readable = readable_records(buf, p, header, limit)
                    if readable is None:  # left as it is
                        txns.data_written(header, True)
                        emit(buf[p : p + size], header)
                        continue
                    body, records = readable
                    if header.attributes & rb.DELETE_HORIZON_MASK:
                        horizon = header.base_timestamp
                    for rec in records:
                        key = rec[6]
                        if key is None or rec[4] < offsets.get(key, -1):
                            continue  # superseded (or keyless: not compactable)
                        if rec[7]:
                            if horizon is not None and now >= horizon:
                                continue  # a tombstone past its delete horizon
                            tombstones = True
                        kept.append(rec)
                new_horizon = now + delete_retention_ms if tombstones and horizon is None else None
                if tombstones:
                    result.min_horizon = min(result.min_horizon, horizon or new_horizon)
                result.records_kept += len(kept)
                txns.data_written(header, bool(kept) or keep_empty)
                if len(kept) == header.record_count and new_horizon is None:
                    emit(buf[p : p + size], header)
                elif kept:
                    emit(rebuild_batch(header, body, kept, new_horizon))
                elif keep_empty:
                    emit(empty_batch(header))
                if len(out) >= _OUT_FLUSH:
                    check(len(out))
                    dest.append(out, headers, index_interval)
                    result.bytes_written += len(out)
                    out, headers = bytearray(), []
        if out:
            check(len(out))
            dest.append(out, headers, index_interval)
            result.bytes_written += len(out)
        dest.flush()
        # Keep the replaced segments' mtime: retention falls back on it without timestamps.
        os.utime(dest.fd, ns=(group[-1].mtime_ns, group[-1].mtime_ns))
    except BaseException:
        remove_segment_files([dest])
        raise
    result.cleaned = dest
    return result


def group_segments(segments: list[LogSegment], max_bytes: int, max_index_bytes: int) -> list[list[LogSegment]]:  # fmt: skip
    """Consecutive segments whose total size and index sizes fit one segment (Kafka's rule)."""
    groups: list[list[LogSegment]] = []
    i = 0
    while i < len(segments):
        group = [segments[i]]
        size = segments[i].size
        index = len(segments[i].offset_index) * 8
        times = len(segments[i].time_index) * 12
        i += 1
        while i < len(segments):
            nxt = segments[i]
            if (
                size + nxt.size > max_bytes
                or index + len(nxt.offset_index) * 8 > max_index_bytes
                or times + len(nxt.time_index) * 12 > max_index_bytes
                or nxt.next_offset - 1 - group[0].base_offset > (1 << 31) - 1
            ):
                break
            group.append(nxt)
            size += nxt.size
            index += len(nxt.offset_index) * 8
            times += len(nxt.time_index) * 12
            i += 1
        groups.append(group)
    return groups


# --- tasks: what the thread or worker process runs, with picklable arguments --------------

# round id -> its offset map, aborted batches and transactions met so far
_ROUNDS: dict[str, tuple[OffsetMap, set[int], TxnCleaning]] = {}


def task_build_map(
    round_id: str, dirty: list[Source], first_dirty: int, upper: int, capacity: int,
    aborted_txns: list[tuple[int, int, int]] = (), limit: int = compression.DEFAULT_LIMIT, *,
    check,
) -> tuple[int, int, int]:  # fmt: skip
    """Build and keep the round's offset map; returns (end, keys, dirty bytes scanned)."""
    sources = [src.opened() for src in dirty]
    stats = CleanerStats()
    omap = OffsetMap(capacity)
    try:
        aborted = build_offset_map(sources, first_dirty, upper, omap, check, stats, limit)
    finally:
        _close_sources(sources)
    _ROUNDS[round_id] = (omap, aborted, TxnCleaning(list(aborted_txns)))
    return omap.end, len(omap.offsets), stats.map_bytes_read


def task_clean_group(
    round_id: str, directory: str, group: list[Source], active_producers: dict[int, int],
    now: int, delete_retention_ms: int, index_interval: int,
    limit: int = compression.DEFAULT_LIMIT, *, check,
) -> GroupResult:  # fmt: skip
    omap, aborted, txns = _ROUNDS[round_id]
    sources = [src.opened() for src in group]
    try:
        result = clean_group(directory, sources, omap, aborted, active_producers, now,
                             delete_retention_ms, index_interval, check, txns, limit)  # fmt: skip
    finally:
        _close_sources(sources)
    if result.cleaned is not None:
        result.base = result.cleaned.base_offset
        result.cleaned.close()  # the event loop opens it again to swap it in
        result.cleaned = None
    return result


def task_end_round(round_id: str, *, check) -> None:
    _ROUNDS.pop(round_id, None)


TASKS = {f.__name__: f for f in (task_build_map, task_clean_group, task_end_round)}


class ThreadRunner:
    """Tasks on one thread of this process (shares the GIL with the event loop)."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="kafka-log-cleaner-thread")

    async def call(self, task, io_rate: float, *args):
        check = _Throttle(io_rate, self.stop)
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, functools.partial(task, *args, check=check)
        )

    def close(self) -> None:
        self.stop.set()  # a task in progress aborts at its next read and removes its files
        self.executor.shutdown(wait=True)


class WorkerError(Exception):
    """A task failed in the worker process (the message carries its traceback)."""


class ProcessRunner:
    """Tasks in a worker process (`python -m pykbroker.storage.cleaner`): cleaning then runs
    on another core instead of taking turns with the event loop for the GIL.

    Requests and replies are length-prefixed pickles over the worker's stdin and stdout; one
    task at a time. The worker dies with the broker (PR_SET_PDEATHSIG, and EOF on stdin).
    Create it on the event loop's thread: the death signal follows the creating thread.
    """

    def __init__(self):
        import subprocess
        import sys

        import pykbroker

        root = os.path.dirname(os.path.dirname(os.path.abspath(pykbroker.__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        )}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pykbroker.storage.cleaner", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        self.io = ThreadPoolExecutor(1, thread_name_prefix="kafka-log-cleaner-io")

    async def call(self, task, io_rate: float, *args):
        return await asyncio.get_running_loop().run_in_executor(
            self.io, self._call, task.__name__, io_rate, args
        )

    def _call(self, name: str, io_rate: float, args: tuple):
        _write_frame(self.proc.stdin, (name, io_rate, args))
        reply = _read_frame(self.proc.stdout)
        if reply is None:
            raise CleaningAborted("the cleaner worker exited")
        ok, value = reply
        if not ok:
            raise WorkerError(value)
        return value

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        self.io.shutdown(wait=True)


def _write_frame(pipe, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(len(data).to_bytes(8, "big") + data)
    pipe.flush()


def _read_frame(pipe):
    head = pipe.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "big")
    data = pipe.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def worker_main(parent_pid: int) -> None:
    """The worker process: run tasks until stdin closes; die with the broker."""
    import sys
    import traceback

    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL (Linux)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        return  # the broker is already gone
    try:
        os.nice(10)  # background work: when cores are busy, requests come first
    except OSError:
        pass
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the reply pipe
    never = threading.Event()
    while True:
        request = _read_frame(stdin)
        if request is None:
            return
        name, io_rate, args = request
        try:
            reply = (True, TASKS[name](*args, check=_Throttle(io_rate, never)))
        except Exception:
            reply = (False, traceback.format_exc())
        _write_frame(stdout, reply)


# --- the cleaner: scheduling, checkpoints, swaps (on the event loop) -----------------------


class LogCleaner:
    """Chooses logs, runs cleaning rounds (tasks in a thread or a worker process), swaps the
    cleaned segments in and keeps the checkpoints. Lives on the broker's event loop."""

    def __init__(self, logs: Callable[[], list[Log]], log_dirs: list[str], config,
                 process: bool = False):  # fmt: skip
        self.logs = logs
        self.process = process and os.path.isdir("/proc/self/fd")
        self.log_dirs = log_dirs
        self.backoff_ms = config.get("log.cleaner.backoff.ms")
        self.capacity = int(
            config.get("log.cleaner.dedupe.buffer.size") / _DEDUPE_ENTRY_BYTES * _DEDUPE_LOAD_FACTOR
        )
        self.io_rate = config.get("log.cleaner.io.max.bytes.per.second")
        self.stats = CleanerStats()
        self.checkpoints: dict[tuple[str, int], int] = {}
        self.horizons: dict[tuple[str, int], int] = {}
        self.uncleanable: set[tuple[str, int]] = set()
        self._backoff_until: dict[tuple[str, int], float] = {}  # out of space: monotonic time
        self.in_progress: Log | None = None
        self._stop = threading.Event()
        self._runner: ThreadRunner | ProcessRunner | None = None
        self._wake: asyncio.Event | None = None
        for d in log_dirs:
            self.checkpoints.update(read_checkpoint(os.path.join(d, CHECKPOINT_FILE)))

    # --- choosing a log ---------------------------------------------------------------------

    def checkpoint(self, lg: Log) -> int | None:
        return self.checkpoints.get((lg.topic, lg.partition))

    def log_to_clean(self, lg: Log, now: int) -> LogToClean:
        cfg = lg.config
        start, leo = lg.log_start_offset, lg.log_end_offset
        cp = self.checkpoint(lg)
        first_dirty = cp if cp is not None and start <= cp <= leo else start
        active = lg.active_segment
        uncleanable = min(lg.last_stable_offset(), active.base_offset)
        non_active = [s for s in lg.segments_in_range(first_dirty, active.base_offset)]
        lag = max(cfg["min.compaction.lag.ms"], 0)
        if lag > 0:
            for seg in non_active:
                if seg.largest_timestamp > now - lag:
                    uncleanable = min(uncleanable, seg.base_offset)
                    break
        uncleanable = max(first_dirty, uncleanable)
        holder = lg.segments_in_range(uncleanable, uncleanable + 1)
        first_uncleanable = holder[0].base_offset if holder else active.base_offset
        first_uncleanable = min(first_uncleanable, active.base_offset)
        clean = sum(s.size for s in lg.segments_in_range(0, first_dirty)) if first_dirty else 0
        cleanable = sum(
            s.size
            for s in lg.segments_in_range(min(first_dirty, first_uncleanable), first_uncleanable)
        )
        max_lag = max(cfg["max.compaction.lag.ms"], 0)
        firsts = [s.first_batch_timestamp for s in non_active if (s.first_batch_timestamp or 0) > 0]
        compact_now = bool(firsts) and min(firsts) < now - max_lag
        horizon = self.horizons.get((lg.topic, lg.partition))
        return LogToClean(
            lg, first_dirty, first_uncleanable, clean, cleanable, compact_now,
            horizon is not None and horizon <= now,
        )  # fmt: skip

    def grab_filthiest(self, now: int | None = None) -> LogToClean | None:
        now = now_ms() if now is None else now
        best = None
        for lg in self.logs():
            if (
                lg.closed
                or not lg.config.compact
                or lg.log_dir.offline
                or (lg.topic, lg.partition) in self.uncleanable
                or self._backoff_until.get((lg.topic, lg.partition), 0) > time.monotonic()
            ):
                continue
            ltc = self.log_to_clean(lg, now)
            if ltc.total_bytes == 0:
                continue
            if (
                (ltc.compact_now and ltc.cleanable_bytes > 0)
                or ltc.ratio > lg.config["min.cleanable.dirty.ratio"]
                or ltc.tombstones_due
            ) and (best is None or ltc.ratio > best.ratio):
                best = ltc
        return best

    # --- running ----------------------------------------------------------------------------

    def start(self) -> asyncio.Task:
        self._wake = asyncio.Event()
        return asyncio.get_running_loop().create_task(self.run())

    def wakeup(self) -> None:
        """Look for work now instead of after log.cleaner.backoff.ms (tests, config changes)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            ltc = self.grab_filthiest()
            if ltc is None:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.backoff_ms / 1000)
                except TimeoutError:
                    pass
                continue
            try:
                await self.clean(ltc)
            except CleaningAborted:
                return
            except OSError as e:
                if not self._is_live(ltc.log):
                    continue
                if is_out_of_space(e):
                    self._out_of_space(ltc.log, e)
                    continue
                # A failed disk takes its log dir offline.
                ltc.log.log_dir.failed(e, f"cleaning {ltc.log.topic}-{ltc.log.partition}")
                if ltc.log.log_dir.offline:
                    self.uncleanable.add((ltc.log.topic, ltc.log.partition))
                await asyncio.sleep(self.backoff_ms / 1000)
            except Exception as e:
                tp = (ltc.log.topic, ltc.log.partition)
                if not self._is_live(ltc.log):
                    continue  # deleted while being cleaned: nothing wrong with the partition
                self.uncleanable.add(tp)
                log.error(
                    "log_cleaning_failed", topic=tp[0], partition=tp[1], error=repr(e),
                    exc_info=True,
                )  # fmt: skip

    def _out_of_space(self, lg: Log, e: OSError) -> None:
        """No room for a `.cleaned` copy: not a reason to refuse appends (FULL) and give up
        leadership of the whole dir. Drop what was written and retry this log after the backoff."""
        tp = (lg.topic, lg.partition)
        log.warning("log_cleaning_out_of_space", topic=tp[0], partition=tp[1], error=str(e))
        try:
            for name in os.listdir(lg.dir):
                if name.endswith(CLEANED_SUFFIX):
                    os.unlink(os.path.join(lg.dir, name))
        except OSError:
            pass  # a load removes leftover `.cleaned` files anyway
        self._backoff_until[tp] = time.monotonic() + self.backoff_ms / 1000

    async def clean(self, ltc: LogToClean, now: int | None = None) -> None:
        """One cleaning round of one log: heavy work in the runner, swaps on the event loop."""
        lg = ltc.log
        cfg = lg.config
        started = time.monotonic()
        now = now_ms() if now is None else now
        stats = self.stats
        round_id = uuid.uuid4().hex
        limit = rb.max_decompressed_bytes(cfg.max_message_bytes)
        bytes_read = bytes_written = records_read = records_kept = 0
        min_horizon = _NO_HORIZON
        swapped = discarded = markers_removed = 0
        self.in_progress = lg
        try:
            dirty = [Source.of(s) for s in lg.segments_in_range(ltc.first_dirty, ltc.first_uncleanable)]  # fmt: skip
            aborted_txns = [
                (e.first_offset, e.producer_id, e.last_offset)
                for seg in lg.segments
                for e in seg.txn_index.entries
            ]
            try:
                end, keys, map_bytes = await self._call(
                    task_build_map, round_id, dirty, ltc.first_dirty, ltc.first_uncleanable,
                    self.capacity, aborted_txns, limit,
                )  # fmt: skip
            finally:
                _close_sources(dirty)
            # Whatever the map covers, the log below its end is rewritten (the clean part too:
            # its keys may have newer values, its tombstones may have expired).
            active_producers = {
                pid: e.batches[-1].last_offset
                for pid, e in lg.producer_state.producers.items()
                if e.batches
            }
            groups = group_segments(
                lg.segments_in_range(0, end) if end > 0 else [],
                cfg.segment_bytes,
                cfg["segment.index.bytes"],
            )
            for group in groups:
                if not self._is_live(lg):
                    break
                if any(seg.deleted for seg in group):
                    continue
                sources = [Source.of(s) for s in group]
                try:
                    result = await self._call(
                        task_clean_group, round_id, lg.dir, sources, active_producers, now,
                        cfg["delete.retention.ms"], cfg.index_interval_bytes, limit,
                    )  # fmt: skip
                finally:
                    _close_sources(sources)
                bytes_read += result.bytes_read
                bytes_written += result.bytes_written
                records_read += result.records_read
                records_kept += result.records_kept
                min_horizon = min(min_horizon, result.min_horizon)
                if result.base < 0:
                    continue
                cleaned = LogSegment(lg.dir, result.base, suffix=CLEANED_SUFFIX)
                cleaned.load(recover=False, index_interval=cfg.index_interval_bytes)
                if lg.replace_segments(cleaned, group, set(result.removed_aborts)):
                    swapped += 1
                    markers_removed += result.markers_removed
                else:
                    remove_segment_files([cleaned])
                    discarded += 1
        finally:
            self.in_progress = None
            if self._runner is not None and not self._stop.is_set():
                try:
                    await self._call(task_end_round, round_id)
                except Exception:
                    pass
        stats.bytes_read += bytes_read
        stats.bytes_written += bytes_written
        stats.records_read += records_read
        stats.records_kept += records_kept
        stats.markers_removed += markers_removed
        stats.map_bytes_read += map_bytes
        if not self._is_live(lg):
            return  # deleted meanwhile: its checkpoint went with it
        key = (lg.topic, lg.partition)
        self.checkpoints[key] = end
        if min_horizon < _NO_HORIZON:
            self.horizons[key] = min_horizon
        else:
            self.horizons.pop(key, None)
        self.write_checkpoints()
        elapsed = time.monotonic() - started
        stats.rounds += 1
        stats.groups_swapped += swapped
        stats.groups_discarded += discarded
        stats.seconds += elapsed
        stats.last_round = {
            "topic": lg.topic, "partition": lg.partition, "first_dirty": ltc.first_dirty,
            "end": end, "keys": keys, "bytes_read": bytes_read, "map_bytes_read": map_bytes,
            "bytes_written": bytes_written, "records_read": records_read,
            "records_kept": records_kept, "markers_removed": markers_removed,
            "seconds": round(elapsed, 3),
            "segments_swapped": swapped, "in_process": not self.process,
        }  # fmt: skip
        log.info("log_cleaned", **stats.last_round,
                 mb_per_s=round(bytes_read / 1e6 / elapsed, 2) if elapsed else None)  # fmt: skip

    def _is_live(self, lg: Log) -> bool:
        return not lg.closed and any(x is lg for x in self.logs())

    async def _call(self, task, *args):
        if self._runner is None:
            self._runner = ProcessRunner() if self.process else ThreadRunner(self._stop)
        try:
            return await self._runner.call(task, self.io_rate, *args)
        except asyncio.CancelledError:
            self._stop.set()  # the broker is stopping: shutdown() ends the task in progress
            raise

    # --- bookkeeping ------------------------------------------------------------------------

    def forget(self, topic: str, partition: int) -> None:
        """A deleted partition: drop its checkpoint."""
        key = (topic, partition)
        self.horizons.pop(key, None)
        self.uncleanable.discard(key)
        if self.checkpoints.pop(key, None) is not None:
            self.write_checkpoints()

    def write_checkpoints(self) -> None:
        by_dir: dict[str, dict[tuple[str, int], int]] = {d: {} for d in self.log_dirs}
        for lg in self.logs():
            key = (lg.topic, lg.partition)
            parent = os.path.dirname(lg.dir)
            if key in self.checkpoints and parent in by_dir:
                by_dir[parent][key] = self.checkpoints[key]
        for d, entries in by_dir.items():
            write_checkpoint(os.path.join(d, CHECKPOINT_FILE), entries)

    def shutdown(self) -> None:
        """Abort a cleaning in progress: the thread stops at its next read and removes its
        files; the worker process is killed (its `.cleaned` files go at the next start-up)."""
        self._stop.set()
        if self._runner is not None:
            self._runner.close()


def read_checkpoint(path: str) -> dict[tuple[str, int], int]:
    """Kafka's offset checkpoint file: version 0, a count, then `topic partition offset` lines."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out = {}
    try:
        if lines[0].strip() != "0":
            return {}
        for line in lines[2 : 2 + int(lines[1])]:
            topic, partition, offset = line.split()
            out[(topic, int(partition))] = int(offset)
    except (IndexError, ValueError):
        log.warning("cleaner_checkpoint_unreadable", path=path)
        return {}
    return out


def write_checkpoint(path: str, entries: dict[tuple[str, int], int]) -> None:
    lines = ["0", str(len(entries))] + [f"{t} {p} {o}" for (t, p), o in sorted(entries.items())]
    atomic_write(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    import sys

    # Through the package, so that what is pickled names pykbroker.storage.cleaner, not __main__.
    from pykbroker.storage.cleaner import worker_main as main

    main(int(sys.argv[1]))

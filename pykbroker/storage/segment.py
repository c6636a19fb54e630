"""LogSegment: one `.log` file of record batches plus its `.index`, `.timeindex` and (once a
transaction aborts in it) `.txnindex`."""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import dataclass

import structlog
from crc32c import crc32c

from protocol import compression
from protocol import records as rb
from protocol.errors import KafkaError

from .index import CorruptIndexError, OffsetIndex, TimeIndex
from .txn_index import TransactionIndex

_SCAN_CHUNK = 64 * 1024

log = structlog.get_logger(__name__)


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


@dataclass(slots=True)
class FileRegion:
    """Bytes [position, position+length) of a segment file, to be sent as fetched records."""

    segment: LogSegment
    position: int
    length: int

    @property
    def fd(self) -> int:
        return self.segment.fd

    def read(self) -> bytes:
        """The copying path: used over TLS, for small regions and by tests."""
        return os.pread(self.segment.fd, self.length, self.position)


class LogSegment:
    def __init__(self, directory: str, base_offset: int, *, create: bool = False, suffix: str = ""):
        self.directory = directory
        self.base_offset = base_offset
        stem = os.path.join(directory, segment_name(base_offset))
        self.log_path = stem + ".log" + suffix
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self.fd = os.open(self.log_path, flags, 0o644)
        self.size = os.fstat(self.fd).st_size
        try:
            self.offset_index = OffsetIndex(stem + ".index" + suffix, base_offset)
            self.time_index = TimeIndex(stem + ".timeindex" + suffix, base_offset)
            self.txn_index = TransactionIndex(stem + ".txnindex" + suffix)
        except OSError:
            os.close(self.fd)
            if create and not self.size:  # a roll that failed half-way leaves nothing behind
                for ext in (".log", ".index", ".timeindex"):
                    try:
                        os.unlink(stem + ext + suffix)
                    except OSError:
                        pass
            raise
        self.next_offset = base_offset  # one past the last offset in this segment
        self.max_timestamp = rb.NO_TIMESTAMP
        self.offset_of_max_timestamp = -1
        self.first_batch_timestamp: int | None = None  # for segment.ms rolling
        self.created_ms = int(time.time() * 1000)
        self.roll_jitter_ms = 0  # set by the Log from segment.jitter.ms when it creates a segment
        self._bytes_since_index = 0
        self.deleted = False
        self.synced_size = 0  # bytes known to be on disk (fsynced); the log's recovery point

    # --- loading and recovery ----------------------------------------------------------

    def load(self, *, recover: bool, index_interval: int = 4096) -> int:
        """Open indexes and find the segment's end. Returns bytes truncated by recovery.

        With recover=False (after a clean shutdown) the indexes are trusted and only the batches
        after the last index entry are read. A missing, empty or corrupt index forces recovery
        (every non-empty segment indexes its first batch), and so does a tail that doesn't end
        on a batch boundary.
        """
        if not recover:
            try:
                self.offset_index.load(self.size)
                self.time_index.load()
                self._check_last_index_entry()
                recover = not self._scan_tail(self.offset_index.last_position)
            except CorruptIndexError as e:
                log.warning("index_corrupt", segment=self.log_path, reason=str(e))
                recover = True
        if recover:
            return self.recover(index_interval)
        self.txn_index.truncate_to(self.next_offset)
        last = self.time_index.last_entry
        if last is not None and last[0] > self.max_timestamp:
            self.max_timestamp, self.offset_of_max_timestamp = last
        return 0

    def _check_last_index_entry(self) -> None:
        if not self.size:
            return
        if not len(self.offset_index) or not len(self.time_index):
            raise CorruptIndexError(f"{self.offset_index.path}: missing or empty index")
        position = self.offset_index.last_position
        header = self.batch_at(position)
        if header is None or header.last_offset != self.offset_index.last_offset:
            raise CorruptIndexError(
                f"{self.offset_index.path}: last entry does not point at its batch"
            )

    def _scan_tail(self, position: int) -> bool:
        """Find next_offset (and timestamps) by reading headers from a known batch boundary.

        False if the file doesn't end where its last whole batch does (a damaged tail).
        """
        end = position
        for pos, header in self.iter_batches(position):
            self._note_batch(header)
            end = pos + header.size
        if self.size:
            first = self.batch_at(0)
            if first is not None:
                self.first_batch_timestamp = first.max_timestamp
        return end == self.size

    def recover(self, index_interval: int = 4096) -> int:
        """Rebuild indexes from the log, checking every CRC; truncate a torn or corrupt tail."""
        self.offset_index.reset()
        self.time_index.reset()
        self.next_offset = self.base_offset
        self.max_timestamp, self.offset_of_max_timestamp = rb.NO_TIMESTAMP, -1
        self.first_batch_timestamp = None
        self._bytes_since_index = 0
        valid = 0
        if self.size:
            with mmap.mmap(self.fd, self.size, access=mmap.ACCESS_READ) as m:
                for pos, header in rb.scan_batches(m):
                    if (
                        header.magic != 2
                        or crc32c(m[pos + rb.CRC_START : pos + header.size]) != header.crc
                    ):
                        break
                    if header.base_offset < self.next_offset and pos > 0:
                        break
                    self._add_batch(header, pos, index_interval)
                    valid = pos + header.size
        truncated = self.size - valid
        if truncated:
            os.ftruncate(self.fd, valid)
            self.size = valid
        self.txn_index.truncate_to(self.next_offset)
        return truncated

    def _note_batch(self, header: rb.BatchHeader) -> None:
        self.next_offset = header.next_offset
        if header.max_timestamp > self.max_timestamp:
            self.max_timestamp = header.max_timestamp
            self.offset_of_max_timestamp = header.last_offset
        if self.first_batch_timestamp is None:
            self.first_batch_timestamp = header.max_timestamp

    def _add_batch(self, header: rb.BatchHeader, position: int, interval: int = 4096) -> None:
        """Account for a batch at `position`; every `interval` bytes, add index entries."""
        self._note_batch(header)
        if self._bytes_since_index >= interval or position == 0:
            self.offset_index.append(header.last_offset, position)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self._bytes_since_index = 0
        self._bytes_since_index += header.size

    # --- appends ----------------------------------------------------------------------------

    def append(self, data, headers: list[tuple[int, rb.BatchHeader]], index_interval: int) -> None:
        """Append `data` (whole batches, offsets already assigned) at the end of the file."""
        start = self.size
        try:
            written = os.pwrite(self.fd, data, start)
            while written < len(data):  # short only when the disk is (nearly) full
                written += os.pwrite(self.fd, memoryview(data)[written:], start + written)
        except OSError:
            # Nothing half-appended may stay: cut the file back (shrinking needs no space).
            try:
                os.ftruncate(self.fd, start)
            except OSError:
                pass  # the disk itself failed: its log dir goes offline
            raise
        self.size += len(data)
        for pos, header in headers:
            self._add_batch(header, start + pos, index_interval)

    # --- reads ------------------------------------------------------------------------------

    def batch_at(self, position: int) -> rb.BatchHeader | None:
        data = os.pread(self.fd, rb.HEADER_SIZE, position)
        if len(data) < rb.HEADER_SIZE:
            return None
        return rb.read_header(data)

    def iter_batches(self, position: int = 0, end: int | None = None):
        """(position, header) of each whole batch from `position`, reading headers in chunks."""
        end = self.size if end is None else end
        while end - position >= rb.HEADER_SIZE:
            chunk = os.pread(self.fd, min(_SCAN_CHUNK, end - position), position)
            p = 0
            while len(chunk) - p >= rb.HEADER_SIZE:
                header = rb.read_header(chunk, p)
                if header.size < rb.HEADER_SIZE or position + p + header.size > end:
                    return
                yield position + p, header
                p += header.size  # may jump past the chunk: the next pread starts there
            if p == 0:
                return
            position += p

    def translate_offset(
        self, offset: int, end: int | None = None
    ) -> tuple[int, rb.BatchHeader] | None:
        """(position, header) of the first batch whose last offset is >= offset."""
        for pos, header in self.iter_batches(self.offset_index.lookup(offset), end):
            if header.last_offset >= offset:
                return pos, header
        return None

    def read(
        self, offset: int, max_bytes: int, max_position: int | None, min_one: bool
    ) -> FileRegion | None:
        """Whole batches starting with the one holding `offset`, up to max_bytes.

        At least one whole batch is returned when min_one, even if it exceeds max_bytes (so a
        consumer never stalls on a large batch). None if this segment has nothing at `offset`.
        """
        end = self.size if max_position is None else max_position
        found = self.translate_offset(offset, end)
        if found is None:
            return None
        start, first = found
        available = end - start
        if available <= max_bytes:
            return FileRegion(self, start, available)
        if first.size > max_bytes:
            return FileRegion(self, start, first.size) if min_one else FileRegion(self, start, 0)
        limit = start + max_bytes
        pos = max(self.offset_index.lookup_position(limit), start)
        stop = pos
        for p, header in self.iter_batches(pos, end):
            if p + header.size > limit:
                break
            stop = p + header.size
        return FileRegion(self, start, max(stop - start, first.size))

    def find_offset_by_timestamp(
        self, timestamp: int, limit: int = compression.DEFAULT_LIMIT
    ) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= `timestamp`, or None. A
        batch that cannot be read (or inflates past `limit` bytes) is logged and skipped."""
        if self.max_timestamp < timestamp:
            return None
        start = self.translate_offset(self.time_index.lookup(timestamp))
        if start is None:
            return None
        for pos, header in self.iter_batches(start[0]):
            if header.max_timestamp >= timestamp:
                if header.is_log_append_time:
                    return header.base_offset, header.max_timestamp
                data = os.pread(self.fd, header.size, pos)
                try:
                    records = rb.decode_records(data, 0, limit)
                except KafkaError as e:  # corrupt (an older broker took it) or past the bound
                    log.warning("unreadable_batch_skipped", path=self.log_path, position=pos,
                                base_offset=header.base_offset, reason=e.message)  # fmt: skip
                    continue
                for rec in records:
                    if rec.timestamp >= timestamp:
                        return rec.offset, rec.timestamp
        return None

    # --- maintenance ------------------------------------------------------------------------

    def truncate_to(self, offset: int) -> int:
        """Remove batches with base offset >= offset. Returns bytes removed."""
        found = self.translate_offset(offset)
        if found is None:
            return 0
        pos, header = found
        if header.base_offset < offset:
            pos += header.size  # keep a batch that straddles offset; it ends before or at LEO
        removed = self.size - pos
        if removed <= 0:
            return 0
        os.ftruncate(self.fd, pos)
        self.size = pos
        self.offset_index.truncate_to_position(pos)
        self.time_index.truncate_to_offset(offset)
        self.txn_index.truncate_to(offset)
        self.next_offset = self.base_offset
        self.max_timestamp, self.offset_of_max_timestamp = self.time_index.last_entry or (
            rb.NO_TIMESTAMP,
            -1,
        )
        self.first_batch_timestamp = None
        self._scan_tail(self.offset_index.last_position)
        self._bytes_since_index = 0
        return removed

    def flush(self) -> None:
        size = self.size  # appends racing this fsync (it may run in a thread) aren't covered
        os.fsync(self.fd)
        self.synced_size = size
        self.offset_index.flush()
        self.time_index.flush()
        self.txn_index.flush()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.offset_index.close()
        self.time_index.close()
        self.txn_index.close()

    def paths(self) -> list[str]:
        paths = [self.log_path]
        for index in (self.offset_index, self.time_index):  # never created on a full disk
            if index.stale and not os.path.exists(index.path):
                continue
            paths.append(index.path)
        if self.txn_index.exists:
            paths.append(self.txn_index.path)
        return paths

    @property
    def last_modified_ms(self) -> int:
        return int(os.fstat(self.fd).st_mtime * 1000) if self.fd >= 0 else 0

    @property
    def largest_timestamp(self) -> int:
        """The newest record timestamp, or the file's mtime when no record carries one (Kafka's)."""
        return self.max_timestamp if self.max_timestamp >= 0 else self.last_modified_ms

    def rename_with_suffix(self, old_suffix: str, new_suffix: str) -> None:
        """Rename the files; the `.log` goes last, so its name marks a finished set (log
        compaction's `.cleaned` -> `.swap` -> final renames rely on that order)."""
        for path, rename in (
            (self.offset_index.path, self.offset_index.rename),
            (self.time_index.path, self.time_index.rename),
            (self.txn_index.path, self.txn_index.rename),
            (self.log_path, None),
        ):
            new = (
                path[: len(path) - len(old_suffix)] + new_suffix
                if old_suffix
                else path + new_suffix
            )
            if rename is None:
                os.rename(path, new)
                self.log_path = new
            else:
                rename(new)

    def time_waiting_to_roll(self, now_ms: int) -> int:
        # Wall-clock age, not the first record's CreateTime: a producer replaying old timestamps
        # must not make every append roll a segment.
        return now_ms - self.created_ms

    def __repr__(self) -> str:
        return f"LogSegment({self.log_path}, next_offset={self.next_offset}, size={self.size})"

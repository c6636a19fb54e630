"""Sparse segment indexes, in Kafka's on-disk formats.

OffsetIndex (`.index`): 8-byte entries (relative offset int32, file position int32) mapping the
last offset of a batch to the batch's position, one entry every `index.interval.bytes`.
TimeIndex (`.timeindex`): 12-byte entries (timestamp int64, relative offset int32), appended when
a segment's max timestamp grows. Both are kept in memory as arrays and appended to their files;
lookups are binary searches.

The arrays are the truth and the files a persisted prefix of them: an index can always be
rebuilt from its segment. When a write fails for lack of space the file is cut back to its last
whole entry and marked `stale`; later entries stay in memory until a flush finds room (or
recovery rebuilds them), so a full disk never fails an append or a start-up because of an index.
"""

from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_right

import structlog

from .log_dir_failure import is_out_of_space

log = structlog.get_logger(__name__)

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


class CorruptIndexError(Exception):
    pass


class _IndexFile:
    entry: struct.Struct

    def __init__(self, path: str, base_offset: int):
        self.path = path
        self.base_offset = base_offset
        self.stale = False  # the file holds fewer entries than memory (a write found no space)
        self._fd = -1
        self._file_bytes = 0
        self._open()

    def _open(self) -> bool:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if not is_out_of_space(e):
                raise
            self.stale = True  # no room even for the file: kept in memory until there is
            return False
        self._file_bytes = os.fstat(self._fd).st_size
        return True

    def __len__(self) -> int:
        raise NotImplementedError

    def _encoded_from(self, first: int) -> bytes:
        raise NotImplementedError

    def _read_entries(self):
        if self._fd < 0:
            return []
        size = self.entry.size
        data = os.pread(self._fd, self._file_bytes, 0)
        whole = len(data) - len(data) % size
        return [self.entry.unpack_from(data, i) for i in range(0, whole, size)]

    def _drop_torn_entry(self) -> None:
        """A crash mid-append left part of an entry: cut it (shrinking needs no space)."""
        whole = self._file_bytes - self._file_bytes % self.entry.size
        if whole != self._file_bytes:
            os.ftruncate(self._fd, whole)
            self._file_bytes = whole

    def _write(self, payload: bytes) -> None:
        if self.stale:
            return  # entries must stay contiguous on disk: the whole tail waits for a flush
        try:
            if os.pwrite(self._fd, payload, self._file_bytes) != len(payload):
                raise OSError(28, os.strerror(28))  # a short write: the file system is full
        except OSError as e:
            self._cut_back()
            if not is_out_of_space(e):
                raise
            self.stale = True
            log.warning("index_write_deferred", index=self.path, error=str(e))
            return
        self._file_bytes += len(payload)

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._fd, self._file_bytes)
        except OSError:
            pass

    def _truncate_entries(self, kept: int) -> None:
        """Memory now holds `kept` entries: the file keeps at most those (no writing)."""
        size = self.entry.size
        on_disk = min(kept, self._file_bytes // size)
        if self._fd >= 0 and on_disk * size != self._file_bytes:
            os.ftruncate(self._fd, on_disk * size)
        self._file_bytes = on_disk * size
        self.stale = kept > on_disk

    def _catch_up(self) -> None:
        """Write the entries a full disk held back, if there is room now."""
        if self._fd < 0 and not self._open():
            return
        first = self._file_bytes // self.entry.size
        payload = self._encoded_from(first)
        try:
            if os.pwrite(self._fd, payload, self._file_bytes) != len(payload):
                raise OSError(28, os.strerror(28))
        except OSError as e:
            self._cut_back()
            if not is_out_of_space(e):
                raise
            return
        self._file_bytes += len(payload)
        self.stale = False

    def flush(self) -> None:
        if self.stale:
            self._catch_up()
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def rename(self, path: str) -> None:
        if self._fd >= 0 or os.path.exists(self.path):
            os.rename(self.path, path)
        self.path = path


class OffsetIndex(_IndexFile):
    entry = _OFFSET_ENTRY

    def __init__(self, path: str, base_offset: int):
        super().__init__(path, base_offset)
        self._offsets = array("q")
        self._positions = array("q")

    def __len__(self) -> int:
        return len(self._offsets)

    def load(self, segment_bytes: int) -> None:
        """Read entries from disk; CorruptIndexError if they are not a valid index."""
        prev_off = prev_pos = -1
        for rel, pos in self._read_entries():
            off = self.base_offset + rel
            if off < prev_off or pos <= prev_pos or pos > segment_bytes or rel < 0:
                raise CorruptIndexError(f"{self.path}: entries out of order or past the log")
            self._offsets.append(off)
            self._positions.append(pos)
            prev_off, prev_pos = off, pos
        self._drop_torn_entry()

    def _encoded_from(self, first: int) -> bytes:
        base = self.base_offset
        return b"".join(
            _OFFSET_ENTRY.pack(self._offsets[i] - base, self._positions[i])
            for i in range(first, len(self._offsets))
        )

    def append(self, offset: int, position: int) -> None:
        if self._offsets and (offset < self._offsets[-1] or position <= self._positions[-1]):
            return
        self._offsets.append(offset)
        self._positions.append(position)
        self._write(_OFFSET_ENTRY.pack(offset - self.base_offset, position))

    def lookup(self, offset: int) -> int:
        """Position of the last indexed batch whose last offset is below `offset` (a safe scan start)."""
        i = bisect_right(self._offsets, offset - 1) - 1
        return self._positions[i] if i >= 0 else 0

    def lookup_position(self, position: int) -> int:
        """The largest indexed batch position <= position (0 if none)."""
        i = bisect_right(self._positions, position) - 1
        return self._positions[i] if i >= 0 else 0

    @property
    def last_offset(self) -> int:
        return self._offsets[-1] if self._offsets else self.base_offset

    @property
    def last_position(self) -> int:
        return self._positions[-1] if self._positions else 0

    def truncate_to_position(self, position: int) -> None:
        """Drop entries for batches at or after `position`."""
        i = bisect_right(self._positions, position - 1)
        if i < len(self._positions):
            del self._offsets[i:]
            del self._positions[i:]
            self._truncate_entries(i)

    def reset(self) -> None:
        self._offsets = array("q")
        self._positions = array("q")
        self._truncate_entries(0)


class TimeIndex(_IndexFile):
    entry = _TIME_ENTRY

    def __init__(self, path: str, base_offset: int):
        super().__init__(path, base_offset)
        self._timestamps = array("q")
        self._offsets = array("q")

    def __len__(self) -> int:
        return len(self._timestamps)

    def load(self) -> None:
        prev_ts = prev_off = -(1 << 63)
        for ts, rel in self._read_entries():
            off = self.base_offset + rel
            if ts < prev_ts or off < prev_off or rel < 0:
                raise CorruptIndexError(f"{self.path}: entries out of order")
            self._timestamps.append(ts)
            self._offsets.append(off)
            prev_ts, prev_off = ts, off
        self._drop_torn_entry()

    def _encoded_from(self, first: int) -> bytes:
        base = self.base_offset
        return b"".join(
            _TIME_ENTRY.pack(self._timestamps[i], self._offsets[i] - base)
            for i in range(first, len(self._timestamps))
        )

    @property
    def last_entry(self) -> tuple[int, int] | None:
        if not self._timestamps:
            return None
        return self._timestamps[-1], self._offsets[-1]

    def maybe_append(self, timestamp: int, offset: int) -> None:
        if self._timestamps and timestamp <= self._timestamps[-1]:
            return
        self._timestamps.append(timestamp)
        self._offsets.append(offset)
        self._write(_TIME_ENTRY.pack(timestamp, offset - self.base_offset))

    def lookup(self, timestamp: int) -> int:
        """An offset from which to scan for the first record with timestamp >= `timestamp`."""
        i = bisect_right(self._timestamps, timestamp - 1) - 1
        return self._offsets[i] if i >= 0 else self.base_offset

    def truncate_to_offset(self, offset: int) -> None:
        """Drop entries at or beyond offset."""
        keep = bisect_right(self._offsets, offset - 1)
        if keep < len(self._offsets):
            del self._timestamps[keep:]
            del self._offsets[keep:]
            self._truncate_entries(keep)

    def reset(self) -> None:
        self._timestamps = array("q")
        self._offsets = array("q")
        self._truncate_entries(0)

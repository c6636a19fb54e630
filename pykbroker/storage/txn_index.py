"""TransactionIndex: a segment's `.txnindex`, the aborted transactions whose ABORT marker it holds.

Kafka's format: 34-byte entries (version int16 = 0, producer id int64, first offset int64, last
offset int64, last stable offset int64). `first offset` is the transaction's first record in this
partition, `last offset` its marker's offset, and `last stable offset` the partition's LSO right
after the marker was written: once an entry's LSO reaches a fetch's upper bound, no later entry
can overlap that fetch, so the search stops there (Kafka's TransactionIndex.collectAbortedTxns).

The file is created on the first abort, as Kafka does, so most segments have none. Entries are
kept in memory too (a few per segment at most in practice): read_committed fetches look them up
without touching the disk. As with the other indexes, a write that finds no space leaves the file
a prefix of the entries (`stale`) until a flush finds room; the Log writes no producer-state
snapshot meanwhile, so recovery replays the markers and rebuilds what the file lacks.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

from protocol import records as rb

from .log_dir_failure import is_out_of_space

_ENTRY = struct.Struct(">hqqqq")
ENTRY_SIZE = _ENTRY.size  # 34
_VERSION = 0


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


def parse_marker(buf, pos: int = 0) -> tuple[int, int]:
    """(type, coordinator epoch) of the control batch at `pos`; (-1, -1) if unreadable."""
    try:
        recs = rb.decode_records(buf, pos)
    except Exception:
        return -1, -1
    return rb.parse_marker(recs[0]) if recs else (-1, -1)


class TransactionIndex:
    __slots__ = ("path", "entries", "_fd", "_file_entries")

    def __init__(self, path: str):
        self.path = path
        self.entries: list[AbortedTxn] = []
        self._fd = -1
        self._file_entries = 0  # how many of `entries` the file holds, in order
        self._load()

    @property
    def stale(self) -> bool:
        return self._file_entries < len(self.entries)

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        whole = len(data) - len(data) % ENTRY_SIZE
        for pos in range(0, whole, ENTRY_SIZE):
            version, pid, first, last, lso = _ENTRY.unpack_from(data, pos)
            if version != _VERSION:
                break
            self.entries.append(AbortedTxn(pid, first, last, lso))
        self._file_entries = len(self.entries)
        if len(self.entries) * ENTRY_SIZE != len(data):
            # A torn or unreadable tail (a crash mid-write): cut it, which needs no space.
            os.ftruncate(self._open(), len(self.entries) * ENTRY_SIZE)

    @property
    def exists(self) -> bool:
        return self._fd >= 0 or os.path.exists(self.path)

    def _open(self) -> int:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        return self._fd

    def append(self, txn: AbortedTxn) -> bool:
        """Add an entry (False if one with this marker offset is already there: a replay)."""
        if self.entries and txn.last_offset <= self.entries[-1].last_offset:
            if any(e.last_offset == txn.last_offset for e in self.entries):
                return False
            self.entries.append(txn)
            self.entries.sort(key=lambda e: e.last_offset)
            self._rewrite()
            return True
        self.entries.append(txn)
        self._write_tail()
        return True

    def _write_tail(self) -> None:
        """Append the entries the file lacks; on a full disk they wait in memory."""
        try:
            fd = self._open()
            payload = b"".join(
                _ENTRY.pack(_VERSION, *e) for e in self.entries[self._file_entries :]
            )
            if os.write(fd, payload) != len(payload):
                raise OSError(28, os.strerror(28))
        except OSError as e:
            if self._fd >= 0:
                try:
                    os.ftruncate(self._fd, self._file_entries * ENTRY_SIZE)
                except OSError:
                    pass
            if not is_out_of_space(e):
                raise
            return
        self._file_entries = len(self.entries)

    def truncate_to(self, offset: int) -> None:
        """Forget transactions whose marker is at or after `offset` (log truncation)."""
        kept = [e for e in self.entries if e.last_offset < offset]
        if len(kept) != len(self.entries):
            self.entries = kept  # sorted by marker offset: the file loses only a tail
            if self._file_entries > len(kept):
                os.ftruncate(self._open(), len(kept) * ENTRY_SIZE)
                self._file_entries = len(kept)

    def replace(self, entries: list[AbortedTxn]) -> None:
        """Set the whole content (a cleaned segment takes the entries of those it replaces)."""
        self.entries = sorted(entries, key=lambda e: e.last_offset)
        if self.entries:
            self._rewrite()
        elif self.exists:
            self.close()
            os.unlink(self.path)

    def _rewrite(self) -> None:
        if not self.entries and self._fd < 0 and not os.path.exists(self.path):
            return
        fd = self._open()
        os.ftruncate(fd, 0)
        self._file_entries = 0
        if self.entries:
            self._write_tail()

    def collect(self, fetch_offset: int, upper_bound: int, out: list) -> bool:
        """Add (producer id, first offset) of entries overlapping [fetch_offset, upper_bound);
        True once no later entry (here or in later segments) can overlap."""
        for e in self.entries:
            if e.last_offset >= fetch_offset and e.first_offset < upper_bound:
                out.append((e.producer_id, e.first_offset))
            if e.last_stable_offset >= upper_bound:
                return True
        return False

    def rename(self, new_path: str) -> None:
        if self.exists:
            os.rename(self.path, new_path)
        self.path = new_path

    def flush(self) -> None:
        if self.stale:
            self._write_tail()
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

"""Leader epoch cache: where each leader epoch starts in a partition's log (Kafka's
LeaderEpochFileCache, file `leader-epoch-checkpoint` in the partition directory).

A leader records (its epoch, its LEO) when it takes over; a follower records the epoch of each
batch it copies whose epoch is new. With it a leader answers OffsetsForLeaderEpoch ("where does
epoch N end in your log?"), and a follower that starts following a new leader truncates exactly
where its log and the leader's diverge (KIP-101/KIP-279) instead of cutting back to its HW.
"""

from __future__ import annotations

import os
from bisect import bisect_right

import structlog

from pykbroker.storage.files import atomic_write
from pykbroker.storage.log_dir_failure import is_out_of_space

log = structlog.get_logger(__name__)

CHECKPOINT_FILE = "leader-epoch-checkpoint"
UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1


class LeaderEpochCache:
    def __init__(self, directory: str | None):
        self.path = os.path.join(directory, CHECKPOINT_FILE) if directory else None
        self.epochs: list[int] = []
        self.offsets: list[int] = []  # start offset of each epoch, non-decreasing

    # --- persistence --------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str, log_end_offset: int, scan=None) -> LeaderEpochCache:
        """Read the checkpoint; without one, rebuild from the batches' epochs (`scan` yields
        (partition_leader_epoch, base_offset) per batch). Entries past the LEO are dropped."""
        cache = cls(directory)
        found = cache._read()
        if found is None and scan is not None:
            for epoch, base_offset in scan():
                cache._append(epoch, base_offset)
            cache.flush()
        elif found:
            for epoch, offset in found:
                cache._append(epoch, offset)
        cache.truncate_from_end(log_end_offset)
        return cache

    def _read(self) -> list[tuple[int, int]] | None:
        try:
            with open(self.path) as f:
                lines = f.read().split("\n")
        except FileNotFoundError:
            return None
        try:
            count = int(lines[1])
            return [tuple(map(int, line.split())) for line in lines[2 : 2 + count]]
        except (IndexError, ValueError):
            log.warning("bad_leader_epoch_checkpoint", path=self.path)
            return None

    def flush(self) -> None:
        if self.path is None:
            return
        body = "".join(f"{e} {o}\n" for e, o in zip(self.epochs, self.offsets, strict=True))
        try:
            atomic_write(self.path, f"0\n{len(self.epochs)}\n{body}")
        except OSError as e:
            if not is_out_of_space(e):
                raise
            # No stale checkpoint may outlive this: without one, a restart rebuilds the cache
            # from the batches' epochs; the next change writes it again.
            try:
                os.unlink(self.path)
            except OSError:
                pass
            log.warning("leader_epoch_checkpoint_deferred", path=self.path, error=str(e))

    # --- changes ------------------------------------------------------------------------------

    @property
    def latest_epoch(self) -> int:
        return self.epochs[-1] if self.epochs else UNDEFINED_EPOCH

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Epoch `epoch` starts at `start_offset` (ignored unless newer than the latest)."""
        if epoch < 0 or (self.epochs and epoch <= self.epochs[-1]):
            return False
        self._append(epoch, start_offset)
        self.flush()
        return True

    def _append(self, epoch: int, offset: int) -> None:
        if self.epochs and epoch <= self.epochs[-1]:
            return
        # An older epoch that starts at or after this one never had records of its own.
        while self.offsets and self.offsets[-1] >= offset:
            self.epochs.pop()
            self.offsets.pop()
        self.epochs.append(epoch)
        self.offsets.append(offset)

    def truncate_from_end(self, end_offset: int) -> None:
        """The log was truncated to end_offset: forget epochs that start at or after it."""
        n = len(self.offsets)
        while self.offsets and self.offsets[-1] >= end_offset:
            self.epochs.pop()
            self.offsets.pop()
        if len(self.offsets) != n:
            self.flush()

    # --- queries ------------------------------------------------------------------------------

    def end_offset_for(self, requested: int, log_end_offset: int) -> tuple[int, int]:
        """(epoch, end offset): the largest epoch <= requested, and where the next epoch starts
        (the LEO for the latest epoch); (-1, -1) if nothing is known of it (Kafka's endOffsetFor)."""
        if requested == UNDEFINED_EPOCH or not self.epochs:
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET
        if requested == self.epochs[-1]:
            return requested, log_end_offset
        higher = bisect_right(self.epochs, requested)  # first epoch > requested
        if higher == len(self.epochs):
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET  # newer than anything we know
        if higher == 0:
            return requested, self.offsets[0]  # older than anything we know
        return self.epochs[higher - 1], self.offsets[higher]

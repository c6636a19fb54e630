"""AlterReplicaLogDirs: move a partition's log to another log dir while it keeps serving.

Kafka's way (ReplicaAlterLogDirsThread): a *future* log, `<dest>/<topic>-<partition>.<id>-future`,
copies the current one batch by batch (as a follower copies a leader: same offsets, same
batches, appended with `append_as_follower`), in the background and off the request path;
once it has caught up, in one step on the event loop (where every append happens, so none can
slip in between) the last batches are copied, the future dir is renamed to the partition's
name in its new dir, the Partition switches to it, and the old dir is deleted like a deleted
log (renamed at once, files closed after `file.delete.delay.ms`, so fetches still sending from
them finish). A future dir left by a crash is deleted at start-up (the move is lost, the
current log is intact; Kafka would resume it).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import structlog

from .log import Log

log = structlog.get_logger(__name__)

FUTURE_DIR_SUFFIX = "-future"
CHUNK = 1 << 20  # bytes copied per step; the loop is free between steps
TAIL = 1000  # offsets left for the final, synchronous step (which flushes nothing large)


class ReplicaMove:
    """One partition's move to `dest`: its future log and the task copying into it."""

    def __init__(self, log_manager, partition, dest: str):
        self.lm = log_manager
        self.p = partition
        self.dest = dest
        source: Log = partition.log
        name = os.path.basename(source.dir)
        self.final_path = os.path.join(dest, name)
        self.future_path = os.path.join(dest, f"{name}.{uuid.uuid4().hex}{FUTURE_DIR_SUFFIX}")
        self.future = log_manager.open_future(self.future_path, source)
        self.task: asyncio.Task | None = None
        self.done = False

    @property
    def lag(self) -> int:
        """Offsets the future log is behind (DescribeLogDirs' offset_lag)."""
        return max(self.p.log.log_end_offset - self.future.log_end_offset, 0)

    def _copy(self, max_bytes: int) -> int:
        """Append the next batches of the current log to the future one; bytes copied."""
        source, future = self.p.log, self.future
        offset = max(future.log_end_offset, source.log_start_offset)
        if offset >= source.log_end_offset:
            return 0
        region = source.read(offset, max_bytes, source.log_end_offset)
        if region is None:
            return 0
        data = region.read()
        future.append_as_follower(data)
        return len(data)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        source = self.p.log
        if source.log_start_offset > 0:
            self.future.maybe_increment_log_start_offset(source.log_start_offset)
        source.on_truncated = self._source_truncated
        try:
            while True:
                if self.p.log is not source:  # the partition went meanwhile
                    raise asyncio.CancelledError
                quota = self.lm.alter_log_dirs_quota
                now = int(time.monotonic() * 1000)
                if self.lag > TAIL and quota.exceeded(now):
                    # replica.alter.log.dirs.io.max.bytes.per.second: wait until back within it
                    await asyncio.sleep(max(quota.delay_ms(now), 10) / 1000)
                    continue
                copied = self._copy(CHUNK)
                quota.record(copied, int(time.monotonic() * 1000))
                if self.lag <= TAIL:
                    await loop.run_in_executor(None, self.future.flush)
                    if self.p.log is not source:
                        raise asyncio.CancelledError
                    if self.lag <= TAIL:
                        self._swap()
                        return
                await asyncio.sleep(0 if copied else 0.01)
        except asyncio.CancelledError:
            self._abandon()
            raise
        except Exception as e:  # noqa: BLE001 - a failed move leaves the current log serving
            log.error("replica_move_failed", topic=source.topic, partition=source.partition,
                      dest=self.dest, error=repr(e))  # fmt: skip
            self._abandon()
        finally:
            source.on_truncated = None
            self.lm.moves.pop((source.topic, source.partition), None)

    def _source_truncated(self, end: int) -> None:
        """The current log was cut back (a follower truncating to its leader): so is the copy."""
        if self.future.log_end_offset > end:
            self.future.truncate_to(max(end, self.future.log_start_offset))

    def _swap(self) -> None:
        """Synchronous: copy what is left, then switch the partition to the moved log."""
        old: Log = self.p.log
        while self._copy(CHUNK):
            pass
        future = self.future
        future.high_watermark = old.high_watermark
        future.recovery_point = future.log_end_offset
        future.flush()
        future.write_snapshot()
        future.close()
        os.rename(self.future_path, self.final_path)
        moved = self.lm.reopen(self.final_path, old)
        if old.topic_id is not None:
            moved.assign_topic_id(old.topic_id)
        cache = self.p.epoch_cache
        if cache is not None and cache.path is not None:
            cache.path = os.path.join(self.final_path, os.path.basename(cache.path))
            cache.flush()
        self.p.log = moved
        self.lm.retire(old)
        self.done = True
        log.info("replica_moved", topic=old.topic, partition=old.partition,
                 from_dir=os.path.dirname(old.dir), to_dir=self.dest,
                 log_end_offset=moved.log_end_offset)  # fmt: skip

    def _abandon(self) -> None:
        if self.done:
            return
        self.future.close()
        self.lm.discard_future(self.future_path)

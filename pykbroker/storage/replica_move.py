"""AlterReplicaLogDirs: move a partition's log to another log dir while it keeps serving.

Kafka's way (ReplicaAlterLogDirsThread): a *future* log, `<dest>/<topic>-<partition>.<id>-future`,
copies the current one batch by batch (as a follower copies a leader: same offsets, same
batches, appended with `append_as_follower`), in the background and off the request path;
once it has caught up, in one step on the event loop (where every append happens, so none can
slip in between) the last batches are copied, the future dir is renamed to the partition's
name in its new dir, the Partition switches to it, and the old dir is deleted like a deleted
log (renamed at once, files closed after `file.delete.delay.ms`, so fetches still sending from
them finish). A future dir left by a stop or a crash is kept and the move resumes when the
broker starts again (as Kafka's): the future log is recovered (a crash may have torn its
unflushed tail), cut back to the current log's end if it is past it, and copying goes on from
its end.
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

    def __init__(self, log_manager, partition, dest: str, future_path: str | None = None):
        self.lm = log_manager
        self.p = partition
        self.dest = dest
        source: Log = partition.log
        name = os.path.basename(source.dir)
        self.final_path = os.path.join(dest, name)
        self.task: asyncio.Task | None = None
        self.done = False
        self.suspended = False
        if future_path is not None:  # resumed: the copy an earlier run left
            future = log_manager.open_future(future_path, source, recover=True)
            if future.log_end_offset > source.log_end_offset:
                future.truncate_to(max(source.log_end_offset, future.log_start_offset))
            if future.log_end_offset >= source.log_start_offset:
                self.future_path, self.future = future_path, future
                source.on_truncated = self._source_truncated
                return
            # Retention went past the copy's end meanwhile: start it again.
            future.close()
            log_manager.discard_future(future_path)
        self.future_path = os.path.join(dest, f"{name}.{uuid.uuid4().hex}{FUTURE_DIR_SUFFIX}")
        self.future = log_manager.open_future(self.future_path, source)
        # At once, not when the task starts: a follower may truncate before it runs.
        source.on_truncated = self._source_truncated

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
            if source.on_truncated == self._source_truncated:
                source.on_truncated = None
            if self.lm.moves.get((source.topic, source.partition)) is self:
                del self.lm.moves[(source.topic, source.partition)]

    def _source_truncated(self, end: int) -> None:
        """The current log was cut back (a follower truncating to its leader): so is the copy."""
        if self.done or self.suspended:
            return
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

    def suspend(self) -> None:
        """The broker stops: keep the copy made so far (flushed) for the next start."""
        if self.done or self.suspended:
            return
        self.suspended = True
        if self.p.log.on_truncated == self._source_truncated:
            self.p.log.on_truncated = None
        if self.task is not None:
            self.task.cancel()
        try:
            self.future.flush()
        except OSError as e:  # recovered (torn tail cut) at the next start
            log.warning("replica_move_flush_failed", path=self.future_path, error=repr(e))
        self.future.close()
        log.info("replica_move_suspended", topic=self.p.topic, partition=self.p.index,
                 dest=self.dest, future_log_end_offset=self.future.log_end_offset)  # fmt: skip

    def _abandon(self) -> None:
        if self.done or self.suspended:
            return
        self.future.close()
        self.lm.discard_future(self.future_path)

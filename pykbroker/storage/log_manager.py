"""LogManager: every partition Log in this broker's log directories.

Loads logs at start-up (recovering the newest segment of each unless the last shutdown was
clean), creates and deletes them, flushes on schedule, and writes the clean-shutdown marker.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Callable

import structlog

from pykbroker.config import BrokerConfig, LogConfig
from pykbroker.quota.replication import ReplicationQuota

from .checkpoints import RECOVERY_POINT_FILE, format_offsets, read_offsets
from .cleaner import LogCleaner
from .files import atomic_write
from .log import Log, now_ms, remove_segment_files
from .log_dir_failure import LogDirFailureChannel
from .replica_move import FUTURE_DIR_SUFFIX, ReplicaMove
from .retention import LogRetention
from .segment import LogSegment

log = structlog.get_logger(__name__)

CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
DELETE_DIR_SUFFIX = "-delete"
STRAY_DIR_SUFFIX = "-stray"


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def parse_partition_dir(name: str) -> tuple[str, int] | None:
    topic, sep, index = name.rpartition("-")
    if not sep or not topic or not index.isdigit():
        return None
    return topic, int(index)


class Scheduler:
    """What storage needs from its host: run later, run off the event loop. Sync by default."""

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        fn()

    def run_blocking(self, fn: Callable[[], None]) -> None:
        fn()


class LogManager:
    def __init__(self, config: BrokerConfig, scheduler: Scheduler | None = None):
        self.config = config
        self.scheduler = scheduler or Scheduler()
        self.log_dirs = [os.path.abspath(d) for d in config.log_dirs]
        self.logs: dict[tuple[str, int], Log] = {}
        self.had_clean_shutdown = True
        self.retention = LogRetention(
            lambda: list(self.logs.values()), config.get("log.retention.check.interval.ms")
        )
        self.cleaner: LogCleaner | None = None
        self.moves: dict[tuple[str, int], ReplicaMove] = {}  # AlterReplicaLogDirs in progress
        # Future logs found at start-up (a move cut short by a stop or crash), by partition:
        # the move resumes when the partition is opened (Kafka keeps `-future` dirs too).
        self.resumable: dict[tuple[str, int], str] = {}
        # replica.alter.log.dirs.io.max.bytes.per.second, over every move at once
        self.alter_log_dirs_quota = ReplicationQuota("alter_log_dirs", -1, config)
        self._pending_removals: dict[int, Callable[[], None]] = {}  # run at shutdown if still due
        self.failure_channel = LogDirFailureChannel(self.log_dirs)
        for d in self.log_dirs:
            os.makedirs(d, exist_ok=True)

    @property
    def data_dir(self) -> str:
        return self.log_dirs[0]

    def load_logs(self, log_configs: Callable[[str], LogConfig]) -> None:
        """Open every partition directory; `log_configs(topic)` gives each topic's config."""
        started = now_ms()
        futures: list[str] = []
        for d in self.log_dirs:
            marker = os.path.join(d, CLEAN_SHUTDOWN_FILE)
            clean = os.path.exists(marker)
            self.had_clean_shutdown &= clean
            points = {} if clean else read_offsets(os.path.join(d, RECOVERY_POINT_FILE))
            for name in sorted(os.listdir(d)):
                path = os.path.join(d, name)
                if not os.path.isdir(path):
                    continue
                if name.endswith(DELETE_DIR_SUFFIX):
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                if name.endswith(FUTURE_DIR_SUFFIX):
                    # A move between log dirs cut short: resumed once its partition opens.
                    futures.append(path)
                    continue
                tp = parse_partition_dir(name)
                if tp is None:
                    continue
                opened = self._open(
                    path,
                    tp,
                    log_configs(tp[0]),
                    recover=not clean,
                    recovery_point=points.get(tp, 0),
                )
                if tp in self.logs:
                    opened = self._drop_duplicate(self.logs[tp], opened)
                self.logs[tp] = opened
            if clean:
                os.unlink(marker)  # from here on a crash must be noticed
                _fsync_dir(d)
        for path in futures:
            tp = parse_partition_dir(os.path.basename(path)[: -len(FUTURE_DIR_SUFFIX)]
                                     .rpartition(".")[0])  # fmt: skip
            current = self.logs.get(tp) if tp is not None else None
            if current is None or tp in self.resumable or os.path.dirname(current.dir) == \
                    os.path.dirname(path):  # fmt: skip
                shutil.rmtree(path, ignore_errors=True)  # nothing to move (or a second copy)
            else:
                self.resumable[tp] = path
        log.info(
            "logs_loaded", partitions=len(self.logs), clean_shutdown=self.had_clean_shutdown,
            ms=now_ms() - started,
        )  # fmt: skip

    def _drop_duplicate(self, first: Log, second: Log) -> Log:
        """One partition in two log dirs: a crash inside a move's swap (the copy renamed into
        place, the old dir not yet retired). Both hold the same records up to the swap; keep
        the longer (on a tie, the one in the later log dir) and delete the other, where Kafka
        would refuse to start."""
        keep, drop = (first, second) if first.log_end_offset > second.log_end_offset else (
            second, first)  # fmt: skip
        drop.close()
        doomed = f"{drop.dir}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}"
        os.rename(drop.dir, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        log.warning("duplicate_log_dropped", topic=keep.topic, partition=keep.partition,
                    kept=keep.dir, dropped=drop.dir, kept_log_end_offset=keep.log_end_offset,
                    dropped_log_end_offset=drop.log_end_offset)  # fmt: skip
        return keep

    def start_background(self) -> list:
        """Start retention and (with log.cleaner.enable) the log cleaner on the running loop;
        returns their tasks for the broker to cancel at shutdown."""
        import asyncio

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self.retention.run()), loop.create_task(self._checkpoint_loop())]
        if self.config.get("log.cleaner.enable"):
            self.cleaner = LogCleaner(
                lambda: list(self.logs.values()), self.log_dirs, self.config,
                process=self.config.get("pykbroker.log.cleaner.process"),
            )  # fmt: skip
            tasks.append(self.cleaner.start())
        return tasks

    # --- recovery points ---------------------------------------------------------------------

    def recovery_point_checkpoints(self) -> dict[str, str]:
        """The `recovery-point-offset-checkpoint` of each log dir: path -> contents."""
        by_dir: dict[str, dict[tuple[str, int], int]] = {d: {} for d in self.log_dirs}
        for tp, lg in self.logs.items():
            by_dir.setdefault(os.path.dirname(lg.dir), {})[tp] = lg.update_recovery_point()
        return {
            os.path.join(d, RECOVERY_POINT_FILE): format_offsets(offsets)
            for d, offsets in by_dir.items()
            if not self.failure_channel.dir_of(d).offline  # its logs get recovered anyway
        }

    def checkpoint_recovery_points(self) -> None:
        write_checkpoints(self.recovery_point_checkpoints())

    async def _checkpoint_loop(self) -> None:
        """Kafka's log.flush.offset.checkpoint.interval.ms: the recovery points, periodically."""
        import asyncio

        interval = self.config.get("log.flush.offset.checkpoint.interval.ms") / 1000
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            files = self.recovery_point_checkpoints()
            try:
                await loop.run_in_executor(None, write_checkpoints, files)
            except OSError as e:
                log.error("recovery_point_checkpoint_failed", error=repr(e))

    def _open(self, path: str, tp: tuple[str, int], config: LogConfig, *, recover: bool,
              recovery_point: int = 0) -> Log:  # fmt: skip
        lg = Log(
            path, tp[0], tp[1], config, recover=recover, recovery_point=recovery_point,
            on_roll=self._flush_rolled, on_delete_files=self._delete_files_later,
            log_dir=self.failure_channel.dir_of(os.path.dirname(path)),
        )  # fmt: skip
        lg.on_recovery_point_lowered = self.checkpoint_recovery_points
        return lg

    def _flush_rolled(self, segment: LogSegment) -> None:
        def flush() -> None:
            if segment.fd >= 0 and not segment.deleted:
                try:
                    segment.flush()
                except OSError as e:
                    if segment.fd >= 0 and not segment.deleted:  # else closed under us by deletion
                        self.failure_channel.dir_of(os.path.dirname(segment.directory)).flush_failed(
                            e, f"flushing {segment.log_path}"
                        )  # fmt: skip

        self.scheduler.run_blocking(flush)

    def _delete_files_later(self, segments: list[LogSegment], delay_ms: int) -> None:
        # Readers may still be sending from these files (a fetch in flight): wait before closing.
        self._remove_later(delay_ms, lambda: remove_segment_files(segments))

    def _remove_later(self, delay_ms: int, remove: Callable[[], None]) -> None:
        key = id(remove)
        self._pending_removals[key] = remove

        def run() -> None:
            if self._pending_removals.pop(key, None) is not None:
                remove()

        self.scheduler.call_later(delay_ms / 1000, run)

    # --- moves between log dirs (AlterReplicaLogDirs, replica_move.py) -----------------------

    def resume_move(self, partition) -> None:
        """Go on with a move found at start-up (its future dir), if `partition` had one."""
        path = self.resumable.pop((partition.topic, partition.index), None)
        if path is None:
            return
        tp = (partition.topic, partition.index)
        try:
            mv = ReplicaMove(self, partition, os.path.dirname(path), future_path=path)
        except Exception as e:  # noqa: BLE001 - an unreadable copy: the current log serves on
            log.error("replica_move_not_resumed", topic=tp[0], partition=tp[1], error=repr(e))
            shutil.rmtree(path, ignore_errors=True)
            return
        self.moves[tp] = mv
        mv.task = asyncio.get_running_loop().create_task(mv.run())
        log.info("replica_move_resumed", topic=tp[0], partition=tp[1], dest=mv.dest,
                 future_log_end_offset=mv.future.log_end_offset)  # fmt: skip

    def move(self, partition, dest: str) -> None:
        """Start moving a partition's log to the log dir `dest` (nothing if it is there, and a
        move elsewhere in progress is abandoned)."""
        tp = (partition.topic, partition.index)
        self.resumable.pop(tp, None)
        current = self.moves.pop(tp, None)
        if current is not None:
            if current.dest == dest:
                self.moves[tp] = current
                return
            if current.task is not None:
                current.task.cancel()
        if os.path.dirname(partition.log.dir) == dest:
            return
        mv = self.moves[tp] = ReplicaMove(self, partition, dest)
        mv.task = asyncio.get_running_loop().create_task(mv.run())
        log.info("replica_move_started", topic=tp[0], partition=tp[1], dest=dest)

    def open_future(self, path: str, source: Log, recover: bool = False) -> Log:
        """A future log: created, or (`recover`) one left by an earlier run, whose unflushed
        tail a crash may have torn (recovered from its start, as it has no recovery point)."""
        try:
            return self._open(path, (source.topic, source.partition), source.config,
                              recover=recover)  # fmt: skip
        except OSError as e:
            shutil.rmtree(path, ignore_errors=True)
            raise self.failure_channel.maybe_add_offline_log_dir(
                os.path.dirname(path), e, f"creating the future log of {source!r}"
            ) from None

    def reopen(self, path: str, old: Log) -> Log:
        """The moved log, opened where it now lives, in place of `old`."""
        moved = self._open(path, (old.topic, old.partition), old.config, recover=False,
                           recovery_point=old.recovery_point)  # fmt: skip
        moved.high_watermark = min(old.high_watermark, moved.log_end_offset)
        if old.log_start_offset > moved.log_start_offset:
            moved.maybe_increment_log_start_offset(old.log_start_offset)
        self.logs[(old.topic, old.partition)] = moved
        return moved

    def retire(self, old: Log) -> None:
        """The log a move replaced: deleted like a deleted log (readers may still send from it)."""
        if self.cleaner is not None:
            self.cleaner.forget(old.topic, old.partition)
        doomed = f"{old.dir}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}"
        os.rename(old.dir, doomed)
        for seg in old.segments:
            seg.deleted = True
        self.checkpoint_recovery_points()

        def remove() -> None:
            old.close()
            shutil.rmtree(doomed, ignore_errors=True)

        self._remove_later(old.config["file.delete.delay.ms"], remove)

    def discard_future(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def get(self, topic: str, partition: int) -> Log | None:
        return self.logs.get((topic, partition))

    def get_or_create(self, topic: str, partition: int, config: LogConfig) -> Log:
        existing = self.logs.get((topic, partition))
        if existing is not None:
            return existing
        parent = self._dir_for_new_log()
        path = os.path.join(parent, partition_dir_name(topic, partition))
        try:
            created = self._open(path, (topic, partition), config, recover=False)
        except OSError as e:
            shutil.rmtree(path, ignore_errors=True)
            raise self.failure_channel.maybe_add_offline_log_dir(
                parent, e, f"creating the log of {topic}-{partition}"
            ) from None
        self.logs[(topic, partition)] = created
        return created

    def _dir_for_new_log(self) -> str:
        """The online dir holding the fewest logs (Kafka's choice), offline ones never."""
        if len(self.log_dirs) == 1:  # the common case, without a scan of every log
            return self.log_dirs[0]
        online = [d for d in self.log_dirs if not self.failure_channel.dir_of(d).offline]
        counts = dict.fromkeys(online or self.log_dirs, 0)
        for lg in self.logs.values():
            parent = os.path.dirname(lg.dir)
            if parent in counts:
                counts[parent] += 1
        return min(counts, key=counts.__getitem__)

    def delete(self, topic: str, partition: int) -> None:
        mv = self.moves.pop((topic, partition), None)
        if mv is not None and mv.task is not None:
            mv.task.cancel()
        lg = self.logs.pop((topic, partition), None)
        if lg is None:
            return
        if self.cleaner is not None:
            self.cleaner.forget(topic, partition)
        doomed = f"{lg.dir}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}"
        os.rename(lg.dir, doomed)
        for seg in lg.segments:
            seg.deleted = True
        # Its recovery point goes from the checkpoint now: a log created again under the same
        # name must not inherit it (Kafka checkpoints on delete too).
        self.checkpoint_recovery_points()

        def remove() -> None:
            lg.close()
            shutil.rmtree(doomed, ignore_errors=True)

        # Fetches may still be sending from these files: close them (and free their file
        # descriptors for reuse) only after file.delete.delay.ms, as retention does.
        self._remove_later(lg.config["file.delete.delay.ms"], remove)

    def mark_stray(self, topic: str, partition: int) -> None:
        """Set aside a log no topic owns (Kafka's stray logs): renamed, kept, never loaded again."""
        lg = self.logs.pop((topic, partition), None)
        if lg is None:
            return
        lg.close()
        stray = f"{lg.dir}.{uuid.uuid4().hex}{STRAY_DIR_SUFFIX}"
        os.rename(lg.dir, stray)
        log.warning("stray_log", topic=topic, partition=partition, moved_to=stray)

    def flush_due(self) -> None:
        """Fsync logs whose flush.ms has passed (only when a topic or log.flush.interval.ms sets it)."""
        now = now_ms()
        for lg in self.logs.values():
            if lg.unflushed_records and now - lg.last_flush_ms >= lg.config.flush_ms:
                if lg.log_dir.offline:
                    continue
                try:
                    lg.flush()
                except OSError as e:
                    lg.log_dir.flush_failed(e, f"flushing {lg.topic}-{lg.partition}")

    def shutdown(self) -> None:
        """Flush, snapshot producer state, close, and leave the clean-shutdown marker."""
        if self.cleaner is not None:
            self.cleaner.shutdown()  # aborts a cleaning in progress; its `.cleaned` files go
        for mv in list(self.moves.values()):  # unfinished moves are kept, resumed at start-up
            mv.suspend()
        self.moves.clear()
        for lg in self.logs.values():
            try:
                if not lg.log_dir.offline:
                    try:
                        lg.flush()
                    except OSError as e:  # offline: no clean-shutdown marker for this dir
                        lg.log_dir.flush_failed(e, f"flushing {lg.topic}-{lg.partition}")
                    else:
                        lg.write_snapshot()
            except OSError as e:
                lg.log_dir.failed(e, f"snapshotting {lg.topic}-{lg.partition}")
            finally:
                lg.close()
        for remove in list(self._pending_removals.values()):  # no reader is left to wait for
            remove()
        self._pending_removals.clear()
        self.checkpoint_recovery_points()
        for d in self.log_dirs:
            if self.failure_channel.dir_of(d).offline:
                continue  # what it holds must be recovered at the next start
            marker = os.path.join(d, CLEAN_SHUTDOWN_FILE)
            try:
                with open(marker, "w"):
                    pass
                _fsync_dir(d)
            except OSError as e:  # no room even for an empty file: the next start recovers
                log.warning("clean_shutdown_marker_not_written", log_dir=d, error=str(e))
        log.info("logs_closed", partitions=len(self.logs))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoints(files: dict[str, str]) -> None:
    for path, text in files.items():
        try:
            atomic_write(path, text)
        except OSError as e:  # e.g. a failed or full log dir: the next start recovers more
            log.warning("recovery_point_checkpoint_not_written", path=path, error=str(e))

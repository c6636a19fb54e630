"""LogDirFailureChannel: what storage does when a log directory's disk fails or fills up.

Every write path of a Log turns an OSError into a KafkaError(KAFKA_STORAGE_ERROR) for the
request and reports it here, as Kafka's classes report IOExceptions to its LogDirFailureChannel.
Two kinds of failure, handled differently:

- Out of space (ENOSPC, EDQUOT) on a write or create: the dir becomes FULL. Appends to its logs are refused with
  KAFKA_STORAGE_ERROR without touching the disk; reads go on as before. Whoever appends next,
  at most once per PROBE_INTERVAL_S, writes a probe file of PROBE_BYTES: when that succeeds,
  space is back (freed by retention, an operator, a bigger volume) and the dir is ONLINE again.
  Kafka takes the dir offline until a restart instead; a full disk is transient, so we don't.
- Out of descriptors or memory (EMFILE, ENFILE, ENOMEM): the process, not the disk, is short.
  That one operation fails with KAFKA_STORAGE_ERROR and the dir stays ONLINE: a CreateTopics of
  thousands of partitions past the fd limit must not take every partition of the dir down
  (Kafka would fail the dir on any IOException here).
- Anything else (EIO, EROFS...): the disk itself is suspect. The dir goes OFFLINE until the
  broker restarts, as in Kafka: its partitions answer KAFKA_STORAGE_ERROR to produce and fetch
  alike (what is on it may no longer read back as written).

A failed fsync is always the last kind, ENOSPC or not (see LogDir.flush_failed).

Either way listeners hear of it (the ReplicaManager, which gives up leadership of the dir's
partitions in a cluster).
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Callable

import structlog

from protocol.errors import ErrorCode, KafkaError

log = structlog.get_logger(__name__)

ONLINE, FULL, OFFLINE = "online", "full", "offline"
PROBE_FILE = ".kafka_write_probe"
PROBE_BYTES = 1 << 20  # headroom a full dir must show before it takes appends again
PROBE_INTERVAL_S = 0.5
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)
_ZEROS = bytes(PROBE_BYTES)


def is_out_of_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _OUT_OF_SPACE


class LogDir:
    """One log directory's health. `writable` is the one attribute the append path reads."""

    __slots__ = ("path", "state", "writable", "error", "_next_probe", "_channel")

    def __init__(self, path: str, channel: LogDirFailureChannel | None = None):
        self.path = path
        self.state = ONLINE
        self.writable = True
        self.error: str | None = None
        self._next_probe = 0.0
        self._channel = channel

    @property
    def offline(self) -> bool:
        return self.state == OFFLINE

    def storage_error(self, what: str) -> KafkaError:
        return KafkaError(
            ErrorCode.KAFKA_STORAGE_ERROR, f"Error while {what} in dir {self.path}: {self.error}"
        )

    def failed(self, e: OSError, what: str) -> KafkaError:
        """Record a failed write (or read); returns the error to answer the request with."""
        reason = f"[Errno {e.errno}] {e.strerror}"
        if e.errno in _OUT_OF_RESOURCES:
            log.warning("storage_operation_failed", log_dir=self.path, error=reason, during=what)
            return KafkaError(
                ErrorCode.KAFKA_STORAGE_ERROR, f"Error while {what} in dir {self.path}: {reason}"
            )
        if is_out_of_space(e):
            if self.state == ONLINE:
                self.state, self.writable, self.error = FULL, False, reason
                self._next_probe = time.monotonic() + PROBE_INTERVAL_S
                log.warning("log_dir_full", log_dir=self.path, error=reason, during=what)
                if self._channel is not None:
                    self._channel.notify_failed(self.path)
        elif self.state != OFFLINE:
            self.state, self.writable, self.error = OFFLINE, False, reason
            log.error("log_dir_offline", log_dir=self.path, error=reason, during=what)
            if self._channel is not None:
                self._channel.notify_failed(self.path)
        return self.storage_error(what)

    def flush_failed(self, e: OSError, what: str) -> KafkaError:
        """A failed fsync takes the dir OFFLINE whatever the errno, ENOSPC included: Linux
        reports a failed writeback once and may drop the dirty pages, so a later fsync that
        succeeds proves nothing and must not move a recovery point (Kafka fails the dir on
        any flush IOException)."""
        reason = f"[Errno {e.errno}] {e.strerror}"
        if self.state != OFFLINE:
            self.state, self.writable, self.error = OFFLINE, False, reason
            log.error("log_dir_offline", log_dir=self.path, error=reason, during=what)
            if self._channel is not None:
                self._channel.notify_failed(self.path)
        return self.storage_error(what)

    def check_writable(self, what: str) -> None:
        """Called only when not `writable`: raise KAFKA_STORAGE_ERROR unless a FULL dir's
        probe now succeeds."""
        if self.state == FULL and time.monotonic() >= self._next_probe:
            self._next_probe = time.monotonic() + PROBE_INTERVAL_S
            if self._probe():
                self.state, self.writable, self.error = ONLINE, True, None
                log.info("log_dir_writable", log_dir=self.path)
                return
            if self._channel is not None:  # still full: e.g. leadership came back meanwhile
                self._channel.notify_failed(self.path)
        if not self.writable:
            raise self.storage_error(what)

    def _probe(self) -> bool:
        path = os.path.join(self.path, PROBE_FILE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                written = 0
                while written < PROBE_BYTES:
                    written += os.write(fd, memoryview(_ZEROS)[written:])
            finally:
                os.close(fd)
            return True
        except OSError as e:
            if not is_out_of_space(e):
                self.failed(e, "probing for free space")
            return False
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass


class LogDirFailureChannel:
    """The broker's log dirs and their state; tells listeners when one fills up or fails."""

    def __init__(self, paths: list[str]):
        self.dirs = {p: LogDir(p, self) for p in paths}
        self.failure_listeners: list[Callable[[str], None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the broker: listeners run there

    def dir_of(self, path: str) -> LogDir:
        found = self.dirs.get(path)
        if found is None:
            found = self.dirs[path] = LogDir(path, self)
        return found

    def maybe_add_offline_log_dir(self, path: str, e: OSError, what: str) -> KafkaError:
        return self.dir_of(path).failed(e, what)

    @property
    def offline_dirs(self) -> list[str]:
        return [p for p, d in self.dirs.items() if d.offline]

    def notify_failed(self, path: str) -> None:
        """Listeners run on the event loop, even when a flush thread found the failure."""
        for fn in self.failure_listeners:
            if self.loop is not None:
                self.loop.call_soon_threadsafe(fn, path)
            else:
                fn(path)

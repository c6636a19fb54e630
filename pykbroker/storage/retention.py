"""Retention: delete whole segments past retention.ms / retention.bytes or below the log start.

Kafka's rules (UnifiedLog.deleteOldSegments), checked every log.retention.check.interval.ms:

- segments wholly below the log start offset (moved by DeleteRecords) go, whatever the policy;
- with `delete` in cleanup.policy, the oldest segments go while the log is larger than
  retention.bytes by at least their size, and while their largest timestamp (the file's mtime
  when no record has one) is older than retention.ms;
- a segment is only deleted if everything in it is below the high watermark, so the log start
  offset never passes the HW; deletion stops at the first segment that must stay;
- the active segment counts too: if it is non-empty and expired, a new empty segment is rolled
  at the log end offset and the old one deleted, so the log start offset becomes the LEO.

A consumer whose position is now below the log start gets OFFSET_OUT_OF_RANGE from Fetch and
applies its auto.offset.reset policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from .log import Log, now_ms
from .segment import LogSegment

log = structlog.get_logger(__name__)

Predicate = Callable[[LogSegment, LogSegment | None], bool]


def deletable_segments(lg: Log, predicate: Predicate) -> list[LogSegment]:
    """The oldest run of segments satisfying `predicate`, all below the high watermark."""
    out: list[LogSegment] = []
    segments = lg.segments
    for i, seg in enumerate(segments):
        nxt = segments[i + 1] if i + 1 < len(segments) else None
        if nxt is None and seg.size == 0:
            break  # an empty active segment: nothing to delete, nothing to roll
        upper = nxt.base_offset if nxt is not None else lg.log_end_offset
        if lg.high_watermark < upper or not predicate(seg, nxt):
            break
        out.append(seg)
    return out


def _delete(lg: Log, predicate: Predicate, reason: str) -> int:
    doomed = deletable_segments(lg, predicate)
    if doomed:
        lg.delete_segments(doomed)
        log.info(
            "segments_deleted", topic=lg.topic, partition=lg.partition, reason=reason,
            segments=[s.base_offset for s in doomed], log_start_offset=lg.log_start_offset,
        )  # fmt: skip
    return len(doomed)


def delete_log_start_offset_breached(lg: Log) -> int:
    start = lg.log_start_offset
    return _delete(
        lg, lambda seg, nxt: nxt is not None and nxt.base_offset <= start, "log_start_offset"
    )


def delete_retention_size_breached(lg: Log) -> int:
    limit = lg.config["retention.bytes"]
    size = lg.size
    if limit < 0 or size < limit:
        return 0
    excess = size - limit

    def over(seg: LogSegment, nxt: LogSegment | None) -> bool:
        nonlocal excess
        if excess - seg.size >= 0:
            excess -= seg.size
            return True
        return False

    return _delete(lg, over, "retention.bytes")


def delete_retention_ms_breached(lg: Log, now: int) -> int:
    retention_ms = lg.config["retention.ms"]
    if retention_ms < 0:
        return 0
    return _delete(lg, lambda seg, nxt: now - seg.largest_timestamp > retention_ms, "retention.ms")


def delete_old_segments(lg: Log, now: int | None = None) -> int:
    """Apply the log's retention once; returns the number of segments deleted."""
    if lg.closed:
        return 0
    now = now_ms() if now is None else now
    deleted = delete_log_start_offset_breached(lg)
    if lg.config.delete:
        deleted += delete_retention_size_breached(lg)
        deleted += delete_retention_ms_breached(lg, now)
    return deleted


class LogRetention:
    """The periodic retention check over every log of a LogManager, on the event loop.

    Each check only compares sizes and timestamps already in memory and renames files, so it
    runs between requests; the files themselves are removed later, off the loop.
    """

    def __init__(self, logs: Callable[[], list[Log]], interval_ms: int):
        self.logs = logs
        self.interval_ms = interval_ms
        self.checks = 0
        self.segments_deleted = 0

    def check(self, now: int | None = None) -> int:
        deleted = 0
        for lg in self.logs():
            try:
                deleted += delete_old_segments(lg, now)
            except OSError as e:
                log.error("retention_failed", topic=lg.topic, partition=lg.partition, error=repr(e))
        self.checks += 1
        self.segments_deleted += deleted
        return deleted

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_ms / 1000)
            self.check()

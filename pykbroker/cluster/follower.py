"""A follower's replication decisions as plain code: no sockets, no asyncio, no ZooKeeper.

The replica fetcher (replica_fetcher.py) is the I/O shell: it sends the requests, and hands the
answers to these functions, which say what to do with the follower's log (truncate where, append
or refuse what). Deterministic tests drive them directly with real logs and epoch caches.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from crc32c import crc32c

from protocol import records as rb
from protocol.errors import ErrorCode, KafkaError

from .leader_epoch import UNDEFINED_EPOCH, UNDEFINED_OFFSET, LeaderEpochCache

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Truncation:
    """Truncate the follower's log to `offset` (its LEO: nothing to cut). Not `complete`: the
    leader answered an epoch the follower lacks; ask again with the follower's new latest epoch."""

    offset: int
    complete: bool
    reason: str


def truncation_for(
    cache: LeaderEpochCache | None, log_end_offset: int, high_watermark: int,
    leader_epoch: int, leader_end_offset: int,
) -> Truncation:  # fmt: skip
    """Where to truncate, given the leader's (epoch, end offset) answer for the follower's latest
    epoch -- from OffsetsForLeaderEpoch or a Fetch response's diverging_epoch (Kafka's
    AbstractFetcherThread.getOffsetTruncationState, KIP-101/279/320)."""
    if leader_end_offset == UNDEFINED_OFFSET:
        # The leader knows nothing of our epoch: our HW is all we know to be committed.
        return Truncation(min(high_watermark, log_end_offset), True, "leader_has_no_such_epoch")
    if leader_epoch == UNDEFINED_EPOCH or cache is None or cache.latest_epoch < 0:
        return Truncation(min(leader_end_offset, log_end_offset), True, "leader_end_offset")
    follower_epoch, follower_end = cache.end_offset_for(leader_epoch, log_end_offset)
    if follower_epoch == UNDEFINED_EPOCH:
        return Truncation(min(leader_end_offset, log_end_offset), True, "leader_end_offset")
    if follower_epoch != leader_epoch:
        # We never had the leader's epoch: cut back to where our largest epoch below it ends;
        # the next round asks about that one (its end on the leader may be earlier still).
        return Truncation(min(follower_end, log_end_offset), False, "follower_lacks_epoch")
    offset = min(follower_end, leader_end_offset, log_end_offset)
    return Truncation(offset, True, "leader_epoch_end")


def truncate(p, offset: int, reason: str) -> None:
    """Cut a follower partition's log back to `offset`, and its epoch cache with it."""
    lg = p.log
    try:
        if offset < lg.log_end_offset:
            log.info("follower_truncating", topic=p.topic, partition=p.index, reason=reason,
                     log_end_offset=lg.log_end_offset, truncate_to=offset)  # fmt: skip
            lg.truncate_to(max(offset, lg.log_start_offset))
        if p.epoch_cache is not None:
            p.epoch_cache.truncate_from_end(lg.log_end_offset)
    except OSError as e:  # as an append's: the dir's state changes, not a connection failure
        raise lg._storage_error(e, "truncating") from None


def apply_epoch_end(p, leader_epoch: int, leader_end_offset: int, source: str = "") -> bool:
    """Truncate a follower partition per the leader's (epoch, end offset) answer; True once
    truncation is complete, False when the leader must be asked again (about the follower's
    new latest epoch)."""
    lg = p.log
    t = truncation_for(p.epoch_cache, lg.log_end_offset, lg.high_watermark,
                       leader_epoch, leader_end_offset)  # fmt: skip
    truncate(p, t.offset, source + t.reason)
    return t.complete


def last_fetched_epoch(cache: LeaderEpochCache | None) -> int:
    """The epoch of the last batch in the follower's log, sent with each Fetch (v12+) so the
    leader can tell whether the log diverges from its own (KIP-320)."""
    return cache.latest_epoch if cache is not None else UNDEFINED_EPOCH


def diverging_epoch(
    cache: LeaderEpochCache, log_end_offset: int, fetch_offset: int, last_fetched: int
) -> tuple[int, int] | None:
    """The leader's check of a Fetch's (fetch offset, last fetched epoch) (Kafka's
    Partition.validateFetchOffsetAndMaybeGetDivergingEpoch): None if the fetcher's log is a
    prefix of the leader's; else (epoch, end offset) to answer as diverging_epoch. Raises
    OFFSET_OUT_OF_RANGE when the leader knows nothing of that epoch."""
    if last_fetched < 0:
        return None
    epoch, end = cache.end_offset_for(last_fetched, log_end_offset)
    if epoch == UNDEFINED_EPOCH or end == UNDEFINED_OFFSET:
        raise KafkaError(
            ErrorCode.OFFSET_OUT_OF_RANGE,
            f"Leader has no end offset for epoch {last_fetched} (fetch offset {fetch_offset})",
        )
    if epoch < last_fetched or end < fetch_offset:
        return epoch, end
    return None


def corrupt_batch(records, start: int = 0) -> tuple[int, str] | None:
    """A follower checks what it copies as the leader checked what it was sent: (base offset,
    why) of the first batch whose CRC or framing is wrong, else None."""
    for pos, header in rb.scan_batches(records, start):
        if header.magic != 2:
            return header.base_offset, f"invalid magic {header.magic}"
        if crc32c(records[pos + rb.CRC_START : pos + header.size]) != header.crc:
            return header.base_offset, "record batch CRC mismatch"
    return None

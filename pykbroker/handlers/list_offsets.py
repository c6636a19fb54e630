"""ListOffsets: earliest, latest, by timestamp, max timestamp (v7+), earliest local (v8+) and
latest tiered (v9+) offsets.

Without tiered storage (KIP-405) the local log is the whole log: the earliest local offset is
the log start offset, and there is no tiered offset (-1, epoch -1), as Kafka answers with
remote storage off. v10's timeout_ms bounds remote lookups (KIP-1075): there are none here."""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.checks import RT, Op, filter_allowed

from . import REGISTRY

LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL, LATEST_TIERED = -1, -2, -3, -4, -5
# The first version that may ask for each special timestamp (a client's ListOffsetsRequest
# builder picks at least it).
_MIN_VERSION = {MAX_TIMESTAMP: 7, EARLIEST_LOCAL: 8, LATEST_TIERED: 9}
READ_COMMITTED = 1


def _lagging(partition) -> KafkaError:
    return KafkaError(
        ErrorCode.OFFSET_NOT_AVAILABLE,
        f"Failed to fetch offsets for partition {partition.topic}-{partition.index} with leader "
        f"epoch {partition.leader_epoch} as this partition's high watermark "
        f"({partition.log.high_watermark}) is lagging behind the start offset from the "
        f"beginning of this epoch ({partition.epoch_start_offset()}).",
    )


def list_offset(partition, timestamp: int, isolation_level: int) -> tuple[int, int]:
    """(timestamp, offset) answering one ListOffsets partition query.

    A leader elected moments ago may not know yet how far its followers (and so the previous
    leader's acknowledgements) reach: then the latest offset, and a timestamp found at or past
    its HW, are OFFSET_NOT_AVAILABLE (retriable), as Kafka's fetchOffsetForTimestamp answers
    (KIP-207), never an end offset below records already acknowledged."""
    log = partition.log
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return -1, log.log_start_offset
    if timestamp == LATEST_TIERED:
        return -1, -1
    if timestamp == LATEST:
        if partition.high_watermark_lagging():
            raise _lagging(partition)
        bound = (
            partition.last_stable_offset()
            if isolation_level == READ_COMMITTED
            else log.high_watermark
        )
        return -1, bound
    if timestamp == MAX_TIMESTAMP:
        found = log.max_timestamp_offset()
        return (found[1], found[0]) if found else (-1, -1)
    if timestamp < 0:
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"unsupported timestamp {timestamp}")
    found = log.offset_for_timestamp(timestamp)
    if found is None or found[0] >= log.high_watermark:
        if partition.high_watermark_lagging():
            raise _lagging(partition)
        return -1, -1
    return found[1], found[0]


def _duplicate_partitions(topics) -> set[tuple[str, int]]:
    seen: set[tuple[str, int]] = set()
    duplicates = set()
    for t in topics:
        for p in t.partitions:
            tp = (t.name, p.partition_index)
            (duplicates if tp in seen else seen).add(tp)
    return duplicates


@REGISTRY.register(ApiKey.LIST_OFFSETS, 1, 10)
def handle_list_offsets(ctx, request) -> dict:
    rm = ctx.broker.replica_manager
    isolation = request.isolation_level if ctx.api_version >= 2 else 0
    duplicates = _duplicate_partitions(request.topics)
    describable = None
    if ctx.broker.authorizer is not None:  # Kafka: DESCRIBE on each topic
        describable = filter_allowed(ctx, Op.DESCRIBE, RT.TOPIC, {t.name for t in request.topics})
    topics = []
    for t in request.topics:
        partitions = []
        for p in t.partitions:
            entry = {"partition_index": p.partition_index, "error_code": ErrorCode.NONE,
                     "timestamp": -1, "offset": -1, "leader_epoch": -1}  # fmt: skip
            try:
                if describable is not None and t.name not in describable:
                    raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
                if (t.name, p.partition_index) in duplicates:
                    # Kafka answers every row of a partition named twice with INVALID_REQUEST
                    # (so a request repeating one partition can't repeat a log search either).
                    raise KafkaError(ErrorCode.INVALID_REQUEST)
                part = rm.get_leader(
                    t.name,
                    p.partition_index,
                    p.current_leader_epoch if ctx.api_version >= 4 else -1,
                )
                if ctx.api_version < _MIN_VERSION.get(p.timestamp, 0):
                    raise KafkaError(ErrorCode.UNSUPPORTED_VERSION)
                entry["timestamp"], entry["offset"] = list_offset(part, p.timestamp, isolation)
                # No tiered offset: no epoch either (Kafka's Optional.of(-1)).
                entry["leader_epoch"] = -1 if p.timestamp == LATEST_TIERED else part.leader_epoch
            except KafkaError as e:
                entry["error_code"] = e.code
            partitions.append(entry)
        topics.append({"name": t.name, "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}

"""Committed offsets: OffsetCommit, OffsetFetch (incl. multi-group v8), OffsetDelete."""

from __future__ import annotations

from collections.abc import Awaitable

from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from pykbroker.acl.checks import RT, Op, allowed, filter_allowed
from pykbroker.coordinator.group import now_ms
from pykbroker.coordinator.schema import OffsetAndMetadata

from . import REGISTRY

UNKNOWN_OFFSET = -1
NO_LEADER_EPOCH = -1
NO_METADATA = ""


def _coordinator(ctx):
    coordinator = ctx.broker.group_coordinator
    return coordinator if coordinator is not None and coordinator.active else None


def partition_exists(broker, topic: str, partition: int) -> bool:
    info = broker.metadata.topic(topic)
    return info is not None and 0 <= partition < len(info.partitions)


def unauthorized_commit(ctx, group_id: str, topics) -> dict[tuple[str, int], int]:
    """Partitions an OffsetCommit/TxnOffsetCommit may not commit, with their error (Kafka: READ
    on the group, else every partition fails; then READ on each topic)."""
    tps = [(t.name, p.partition_index) for t in topics for p in t.partitions]
    if not allowed(ctx, Op.READ, RT.GROUP, group_id):
        return dict.fromkeys(tps, ErrorCode.GROUP_AUTHORIZATION_FAILED)
    readable = filter_allowed(ctx, Op.READ, RT.TOPIC, {t.name for t in topics})
    return {tp: ErrorCode.TOPIC_AUTHORIZATION_FAILED for tp in tps if tp[0] not in readable}


def requested_offsets(broker, topics, with_leader_epoch: bool, now: int, expire: int = -1,
                      refused: dict | None = None):  # fmt: skip
    """What an OffsetCommit or TxnOffsetCommit asks to commit: (the (topic, partition)s in
    request order, UNKNOWN_TOPIC_OR_PARTITION for those that don't exist, the offsets of the
    others); `refused`: partitions the authorizer refused, with their error."""
    order: list[tuple[str, int]] = []
    errors: dict[tuple[str, int], int] = {}
    offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
    for topic in topics:
        for p in topic.partitions:
            tp = (topic.name, p.partition_index)
            order.append(tp)
            if refused and tp in refused:
                errors[tp] = refused[tp]
                continue
            if not partition_exists(broker, *tp):
                errors[tp] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                continue
            offsets[tp] = OffsetAndMetadata(
                p.committed_offset,
                p.committed_leader_epoch if with_leader_epoch else NO_LEADER_EPOCH,
                p.committed_metadata if p.committed_metadata is not None else NO_METADATA,
                now,
                expire,
            )
    return order, errors, offsets


# --- OffsetCommit -------------------------------------------------------------------------


INT64_MAX = 2**63 - 1


@REGISTRY.register(ApiKey.OFFSET_COMMIT, 2, 9)
def handle_offset_commit(ctx, request):
    v = ctx.api_version
    now = now_ms()
    retention = request.retention_time_ms if v <= 4 else -1
    # Saturate: the sum must fit the int64 of the stored OffsetCommitValue (Java's would wrap).
    expire = min(now + retention, INT64_MAX) if retention >= 0 else -1
    refused = (
        unauthorized_commit(ctx, request.group_id, request.topics)
        if ctx.broker.authorizer is not None
        else None
    )
    order, errors, offsets = requested_offsets(ctx.broker, request.topics, v >= 6, now, expire,
                                               refused)  # fmt: skip
    coordinator = _coordinator(ctx)
    if not offsets:
        result: dict | Awaitable = {}
    elif coordinator is None:
        result = dict.fromkeys(offsets, ErrorCode.COORDINATOR_NOT_AVAILABLE)
    else:
        result = coordinator.commit_offsets(
            request.group_id,
            request.member_id,
            request.group_instance_id if v >= 7 else None,
            request.generation_id_or_member_epoch,
            offsets,
            v,
        )
    if isinstance(result, Awaitable):
        return _await_commit(result, order, errors)
    return _commit_response(order, {**errors, **result})


async def _await_commit(pending, order, errors) -> dict:
    return _commit_response(order, {**errors, **(await pending)})


def _commit_response(order: list[tuple[str, int]], errors: dict[tuple[str, int], int]) -> dict:
    topics: dict[str, list[dict]] = {}
    for topic, partition in order:
        topics.setdefault(topic, []).append(
            {"partition_index": partition, "error_code": errors[(topic, partition)]}
        )
    return {
        "throttle_time_ms": 0,
        "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
    }


# --- OffsetFetch --------------------------------------------------------------------------


def _fetch_group(
    ctx, group_id: str, topics, require_stable: bool = False,
    member_id: str | None = None, member_epoch: int = -1,
) -> tuple[int, list[dict]]:  # fmt: skip
    """(group error, topic entries) for one group; topics None means every committed offset.
    require_stable (v7+): partitions with transactional offsets awaiting their marker answer
    UNSTABLE_OFFSET_COMMIT, so the consumer retries instead of reading a stale offset."""
    partitions = (
        None if topics is None else [(t.name, p) for t in topics for p in t.partition_indexes]
    )
    refused: list = []
    describable = None
    if ctx.broker.authorizer is not None:
        # Kafka: DESCRIBE on the group; per topic DESCRIBE, unauthorized requested partitions
        # answer TOPIC_AUTHORIZATION_FAILED, and "all offsets" leaves those topics out.
        if not allowed(ctx, Op.DESCRIBE, RT.GROUP, group_id):
            return ErrorCode.GROUP_AUTHORIZATION_FAILED, []
        if partitions is not None:
            describable = filter_allowed(ctx, Op.DESCRIBE, RT.TOPIC, {t for t, _ in partitions})
            refused = [tp for tp in partitions if tp[0] not in describable]
            partitions = [tp for tp in partitions if tp[0] in describable]
    coordinator = _coordinator(ctx)
    if coordinator is None:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, []
    error, offsets = coordinator.fetch_offsets(group_id, partitions, member_id, member_epoch)
    if error:
        return error, []
    if ctx.broker.authorizer is not None and describable is None:
        describable = filter_allowed(ctx, Op.DESCRIBE, RT.TOPIC, {t for t, _ in offsets})
        offsets = {tp: om for tp, om in offsets.items() if tp[0] in describable}
    unstable = coordinator.unstable_partitions(group_id) if require_stable else ()
    by_topic: dict[str, list[dict]] = {}
    for (topic, partition), om in offsets.items():
        if (topic, partition) in unstable:
            om = None
        by_topic.setdefault(topic, []).append(
            {
                "partition_index": partition,
                "committed_offset": om.offset if om is not None else UNKNOWN_OFFSET,
                "committed_leader_epoch": om.leader_epoch if om is not None else NO_LEADER_EPOCH,
                "metadata": om.metadata if om is not None else NO_METADATA,
                "error_code": ErrorCode.UNSTABLE_OFFSET_COMMIT
                if (topic, partition) in unstable
                else ErrorCode.NONE,
            }
        )
    for topic, partition in refused:
        by_topic.setdefault(topic, []).append(
            {"partition_index": partition, "committed_offset": UNKNOWN_OFFSET,
             "committed_leader_epoch": NO_LEADER_EPOCH, "metadata": NO_METADATA,
             "error_code": ErrorCode.TOPIC_AUTHORIZATION_FAILED}
        )  # fmt: skip
    return ErrorCode.NONE, [{"name": t, "partitions": ps} for t, ps in by_topic.items()]


@REGISTRY.register(ApiKey.OFFSET_FETCH, 1, 9)
def handle_offset_fetch(ctx, request) -> dict:
    v = ctx.api_version
    if v >= 8:
        groups = []
        for g in request.groups:
            member = (g.member_id, g.member_epoch) if v >= 9 else (None, -1)
            error, topics = _fetch_group(ctx, g.group_id, g.topics, request.require_stable, *member)
            groups.append({"group_id": g.group_id, "topics": topics, "error_code": error})
        return {"throttle_time_ms": 0, "groups": groups}
    topics = request.topics if (request.topics is not None or v >= 2) else []
    error, entries = _fetch_group(ctx, request.group_id, topics, v >= 7 and request.require_stable)
    if error and v < 2:
        # v1 has no group-level error: every requested partition carries it.
        entries = [
            {
                "name": t.name,
                "partitions": [
                    {"partition_index": p, "committed_offset": UNKNOWN_OFFSET,
                     "committed_leader_epoch": NO_LEADER_EPOCH, "metadata": NO_METADATA,
                     "error_code": error}
                    for p in t.partition_indexes
                ],
            }
            for t in topics
        ]  # fmt: skip
    return {"throttle_time_ms": 0, "topics": entries, "error_code": error}


# --- OffsetDelete -------------------------------------------------------------------------


@REGISTRY.register(ApiKey.OFFSET_DELETE, 0, 0)
def handle_offset_delete(ctx, request) -> dict:
    broker = ctx.broker
    order: list[tuple[str, int]] = []
    errors: dict[tuple[str, int], int] = {}
    readable = None
    if broker.authorizer is not None:  # Kafka: DELETE on the group, READ on each topic
        if not allowed(ctx, Op.DELETE, RT.GROUP, request.group_id):
            return {"error_code": ErrorCode.GROUP_AUTHORIZATION_FAILED, "throttle_time_ms": 0,
                    "topics": []}  # fmt: skip
        readable = filter_allowed(ctx, Op.READ, RT.TOPIC, {t.name for t in request.topics})
    for topic in request.topics:
        for p in topic.partitions:
            tp = (topic.name, p.partition_index)
            order.append(tp)
            if readable is not None and topic.name not in readable:
                errors[tp] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif not partition_exists(broker, *tp):
                errors[tp] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    coordinator = _coordinator(ctx)
    if coordinator is None:
        error, results = ErrorCode.COORDINATOR_NOT_AVAILABLE, {}
    else:
        error, results = coordinator.delete_offsets(
            request.group_id, [tp for tp in order if tp not in errors]
        )
    if error:
        return {"error_code": error, "throttle_time_ms": 0, "topics": []}
    errors.update(results)
    topics: dict[str, list[dict]] = {}
    for topic, partition in order:
        topics.setdefault(topic, []).append(
            {"partition_index": partition, "error_code": errors[(topic, partition)]}
        )
    return {
        "error_code": ErrorCode.NONE,
        "throttle_time_ms": 0,
        "topics": [{"name": n, "partitions": ps} for n, ps in topics.items()],
    }

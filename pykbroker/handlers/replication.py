"""OffsetsForLeaderEpoch: where a leader epoch ends in the leader's log.

Followers ask it when they start following a new leader, to truncate exactly where their log
diverges (KIP-101/279); consumers ask it after a leader change to check their position still
exists (KIP-320).
"""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.checks import RT, Op, cluster_allowed, filter_allowed

from . import REGISTRY


@REGISTRY.register(ApiKey.OFFSET_FOR_LEADER_EPOCH, 2, 4)
def handle_offset_for_leader_epoch(ctx, request) -> dict:
    rm = ctx.broker.replica_manager
    describable = None
    if ctx.broker.authorizer is not None:
        # Kafka: a follower (replica_id >= 0) needs CLUSTER_ACTION, a consumer DESCRIBE on
        # each topic.
        if request.replica_id >= 0:
            describable = (
                {t.topic for t in request.topics}
                if cluster_allowed(ctx, Op.CLUSTER_ACTION)
                else set()
            )
            refusal = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
        else:
            describable = filter_allowed(
                ctx, Op.DESCRIBE, RT.TOPIC, {t.topic for t in request.topics}
            )
            refusal = ErrorCode.TOPIC_AUTHORIZATION_FAILED
    topics = []
    for t in request.topics:
        partitions = []
        for p in t.partitions:
            entry = {"error_code": ErrorCode.NONE, "partition": p.partition,
                     "leader_epoch": -1, "end_offset": -1}  # fmt: skip
            try:
                if describable is not None and t.topic not in describable:
                    raise KafkaError(refusal)
                part = rm.get_leader(t.topic, p.partition, p.current_leader_epoch)
                entry["leader_epoch"], entry["end_offset"] = part.end_offset_for_epoch(
                    p.leader_epoch
                )
            except KafkaError as e:
                entry["error_code"] = e.code
            partitions.append(entry)
        topics.append({"topic": t.topic, "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}

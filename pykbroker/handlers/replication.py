"""OffsetsForLeaderEpoch: where a leader epoch ends in the leader's log.

Followers ask it when they start following a new leader, to truncate exactly where their log
diverges (KIP-101/279); consumers ask it after a leader change to check their position still
exists (KIP-320).
"""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError

from . import REGISTRY


@REGISTRY.register(ApiKey.OFFSET_FOR_LEADER_EPOCH, 2, 4)
def handle_offset_for_leader_epoch(ctx, request) -> dict:
    rm = ctx.broker.replica_manager
    topics = []
    for t in request.topics:
        partitions = []
        for p in t.partitions:
            entry = {"error_code": ErrorCode.NONE, "partition": p.partition,
                     "leader_epoch": -1, "end_offset": -1}  # fmt: skip
            try:
                part = rm.get_leader(t.topic, p.partition, p.current_leader_epoch)
                entry["leader_epoch"], entry["end_offset"] = part.end_offset_for_epoch(
                    p.leader_epoch
                )
            except KafkaError as e:
                entry["error_code"] = e.code
            partitions.append(entry)
        topics.append({"topic": t.topic, "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}

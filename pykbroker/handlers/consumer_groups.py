"""KIP-848 consumer group APIs: ConsumerGroupHeartbeat and ConsumerGroupDescribe.
The state machine is pykbroker/coordinator/consumer_group.py."""

from __future__ import annotations

from collections.abc import Awaitable

from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from pykbroker.acl.checks import RT, Op, allowed, authorized_operations
from pykbroker.coordinator.consumer_group import HeartbeatRequest, HeartbeatResult

from . import REGISTRY
from .groups import GROUP_AUTHORIZED_OPERATIONS, client_host

_ERROR_MESSAGES = {
    ErrorCode.COORDINATOR_NOT_AVAILABLE: "The coordinator is not available.",
    ErrorCode.NOT_COORDINATOR: "This is not the correct coordinator.",
}
CLASSIC_MEMBER, CONSUMER_MEMBER = 0, 1


def _coordinator(ctx):
    coordinator = ctx.broker.group_coordinator
    return coordinator if coordinator is not None and coordinator.active else None


def _topic_partitions(assignment) -> list[dict]:
    return [
        {"topic_id": topic_id, "partitions": sorted(parts)}
        for topic_id, parts in sorted(assignment.items(), key=lambda kv: str(kv[0]))
    ]


def _heartbeat_response(r: HeartbeatResult) -> dict:
    return {
        "throttle_time_ms": 0,
        "error_code": r.error,
        "error_message": r.message if r.error else None,
        "member_id": r.member_id,
        "member_epoch": r.member_epoch,
        "heartbeat_interval_ms": r.heartbeat_interval_ms,
        "assignment": None
        if r.assignment is None
        else {"topic_partitions": _topic_partitions(r.assignment)},
    }


async def _await_heartbeat(pending) -> dict:
    return _heartbeat_response(await pending)


def _protocol_enabled(ctx) -> bool:
    """Kafka serves the consumer rebalance protocol once group.version is at least 1 (4.1's
    default); `kafka-features downgrade --feature group.version=0` turns it off."""
    return ctx.broker.metadata.features.get("group.version", 0) >= 1


@REGISTRY.register(ApiKey.CONSUMER_GROUP_HEARTBEAT, 0, 1)
def handle_consumer_group_heartbeat(ctx, request):
    if not _protocol_enabled(ctx):
        return _heartbeat_response(
            HeartbeatResult(
                ErrorCode.UNSUPPORTED_VERSION,
                "The consumer group protocol is disabled (group.version 0).",
            )
        )
    if not allowed(ctx, Op.READ, RT.GROUP, request.group_id):
        return _heartbeat_response(HeartbeatResult(ErrorCode.GROUP_AUTHORIZATION_FAILED))
    coordinator = _coordinator(ctx)
    if coordinator is None:
        return _heartbeat_response(HeartbeatResult(ErrorCode.COORDINATOR_NOT_AVAILABLE))
    owned = request.topic_partitions
    req = HeartbeatRequest(
        group_id=request.group_id,
        member_id=request.member_id or "",
        member_epoch=request.member_epoch,
        instance_id=request.instance_id,
        rack_id=request.rack_id,
        rebalance_timeout_ms=request.rebalance_timeout_ms,
        subscribed_topic_names=None
        if request.subscribed_topic_names is None
        else list(request.subscribed_topic_names),
        subscribed_topic_regex=request.subscribed_topic_regex if ctx.api_version >= 1 else None,
        server_assignor=request.server_assignor,
        owned=None
        if owned is None
        else {t.topic_id: frozenset(t.partitions) for t in owned if t.partitions},
        client_id=ctx.header.client_id or "",
        client_host=client_host(ctx),
        api_version=ctx.api_version,
    )
    result = coordinator.consumer_group_heartbeat(req)
    if isinstance(result, Awaitable):
        return _await_heartbeat(result)
    return _heartbeat_response(result)


def _described_assignment(assignment, topics_by_id) -> dict:
    parts = []
    for topic_id, ps in sorted(assignment.items(), key=lambda kv: str(kv[0])):
        info = topics_by_id.get(topic_id)
        parts.append(
            {
                "topic_id": topic_id,
                "topic_name": info.name if info else "",
                "partitions": sorted(ps),
            }
        )
    return {"topic_partitions": parts}


def describe_consumer_group(ctx, group_id: str, include_ops: bool) -> dict:
    coordinator = _coordinator(ctx)
    entry = {
        "error_code": ErrorCode.NONE,
        "error_message": None,
        "group_id": group_id,
        "group_state": "",
        "group_epoch": -1,
        "assignment_epoch": -1,
        "assignor_name": "",
        "members": [],
        "authorized_operations": _ops_bits(ctx, group_id) if include_ops else -(2**31),
    }
    if not allowed(ctx, Op.DESCRIBE, RT.GROUP, group_id):
        entry["error_code"] = ErrorCode.GROUP_AUTHORIZATION_FAILED
        entry["authorized_operations"] = -(2**31)
        return entry
    if coordinator is None:
        error, message, group = ErrorCode.COORDINATOR_NOT_AVAILABLE, None, None
    else:
        error, message, group = coordinator.consumer_group_describe(group_id)
    if error:
        entry.update(error_code=error, error_message=message or _ERROR_MESSAGES.get(error))
        return entry
    by_id = {info.topic_id: info for info in ctx.broker.metadata.topics.values()}
    entry.update(
        group_state=group.state.value,
        group_epoch=group.group_epoch,
        assignment_epoch=group.assignment_epoch,
        assignor_name=group.preferred_assignor(),
        members=[
            {
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "rack_id": m.rack_id,
                "member_epoch": m.member_epoch,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "subscribed_topic_names": list(m.subscribed_topic_names),
                "subscribed_topic_regex": m.subscribed_topic_regex,
                "assignment": _described_assignment(m.assigned, by_id),
                "target_assignment": _described_assignment(
                    group.target.get(m.member_id, {}), by_id
                ),
                "member_type": CLASSIC_MEMBER if m.is_classic else CONSUMER_MEMBER,
            }
            for m in group.members.values()
        ],
    )
    return entry


def _ops_bits(ctx, group_id: str) -> int:
    ops = GROUP_AUTHORIZED_OPERATIONS
    if ctx.broker.authorizer is not None:
        ops = authorized_operations(ctx, RT.GROUP, group_id)
    bits = 0
    for op in ops:
        bits |= 1 << op
    return bits


@REGISTRY.register(ApiKey.CONSUMER_GROUP_DESCRIBE, 0, 1)
def handle_consumer_group_describe(ctx, request) -> dict:
    return {
        "throttle_time_ms": 0,
        "groups": [
            describe_consumer_group(ctx, g, bool(request.include_authorized_operations))
            for g in request.group_ids
        ],
    }

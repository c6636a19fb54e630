"""Group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
DescribeGroups, ListGroups, DeleteGroups. The state machine is in pykbroker/coordinator."""

from __future__ import annotations

import asyncio

from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from pykbroker.acl.checks import (
    RT,
    Op,
    allowed,
    authorized_operations,
    cluster_allowed,
    filter_allowed,
)
from pykbroker.coordinator.classic_in_consumer import encode_assignment, encode_subscription
from pykbroker.coordinator.consumer_group import ConsumerGroup
from pykbroker.coordinator.group import GroupState, JoinResult, SyncResult
from pykbroker.coordinator.group_coordinator import JoinRequest

from . import REGISTRY

GROUP_KEY, TRANSACTION_KEY, SHARE_KEY = 0, 1, 2
CLASSIC_TYPE = "classic"  # ListGroups v5's group type of a classic group (Kafka's GroupType)
# AclOperation codes a group's authorized_operations reports without an authorizer:
# READ (3), DELETE (6), DESCRIBE (8).
GROUP_AUTHORIZED_OPERATIONS = {3, 6, 8}

_ERROR_MESSAGES = {
    ErrorCode.COORDINATOR_NOT_AVAILABLE: "The coordinator is not available.",
    ErrorCode.NOT_COORDINATOR: "This is not the correct coordinator.",
    ErrorCode.INVALID_REQUEST: "Unknown coordinator key type.",
}


def client_host(ctx) -> str:
    """Kafka shows a member's host as its address with a leading slash: /127.0.0.1."""
    peer = ctx.connection.peer
    return "/" + (peer.rsplit(":", 1)[0] if ":" in peer else peer)


def _coordinator(ctx):
    coordinator = ctx.broker.group_coordinator
    return coordinator if coordinator is not None and coordinator.active else None


# --- FindCoordinator ----------------------------------------------------------------------


def _find(ctx, key: str, key_type: int) -> tuple[int, object | None]:
    broker = ctx.broker
    if broker.authorizer is not None:  # Kafka: DESCRIBE on the group / transactional id
        if key_type == GROUP_KEY and not allowed(ctx, Op.DESCRIBE, RT.GROUP, key):
            return ErrorCode.GROUP_AUTHORIZATION_FAILED, None
        if key_type == TRANSACTION_KEY and not allowed(ctx, Op.DESCRIBE, RT.TRANSACTIONAL_ID, key):
            return ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, None
    if key_type == GROUP_KEY:
        coordinator = _coordinator(ctx)
        if coordinator is None:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, None
        return coordinator.store.coordinator_node(key)
    if key_type == TRANSACTION_KEY:
        txn = getattr(broker, "transaction_coordinator", None)
        if txn is None or not txn.active:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, None
        return txn.coordinator_node(key)
    if key_type == SHARE_KEY and broker.share_coordinator is not None:
        return broker.share_coordinator.coordinator_node(key)  # "group:topicId:partition"
    return ErrorCode.INVALID_REQUEST, None


def _coordinator_entry(error: int, node, listener: str | None = None) -> dict:
    host, port = node.address(listener) if node is not None else ("", -1)
    return {
        "error_code": error,
        "error_message": _ERROR_MESSAGES.get(error) if error else None,
        "node_id": node.node_id if node is not None else -1,
        "host": host,
        "port": port,
    }


@REGISTRY.register(ApiKey.FIND_COORDINATOR, 0, 6)
def handle_find_coordinator(ctx, request) -> dict:
    key_type = request.key_type if ctx.api_version >= 1 else GROUP_KEY
    if ctx.api_version >= 4:
        return {
            "throttle_time_ms": 0,
            "coordinators": [
                {"key": key, **_coordinator_entry(*_find(ctx, key, key_type), ctx.listener)}
                for key in request.coordinator_keys
            ],
        }
    return {
        "throttle_time_ms": 0,
        **_coordinator_entry(*_find(ctx, request.key, key_type), ctx.listener),
    }


# --- JoinGroup ----------------------------------------------------------------------------


def _join_response(version: int, r: JoinResult) -> dict:
    return {
        "throttle_time_ms": 0,
        "error_code": r.error,
        "generation_id": r.generation_id,
        "protocol_type": r.protocol_type,
        # Nullable only from v7; older versions carry an empty string.
        "protocol_name": r.protocol_name if version >= 7 else (r.protocol_name or ""),
        "leader": r.leader_id,
        "skip_assignment": r.skip_assignment,
        "member_id": r.member_id,
        "members": [
            {"member_id": mid, "group_instance_id": iid, "metadata": meta}
            for mid, iid, meta in r.members
        ],
    }


async def _await_join(version: int, fut: asyncio.Future) -> dict:
    return _join_response(version, await fut)


@REGISTRY.register(ApiKey.JOIN_GROUP, 0, 9)
def handle_join_group(ctx, request):
    v = ctx.api_version
    if not allowed(ctx, Op.READ, RT.GROUP, request.group_id):
        return _join_response(
            v, JoinResult(ErrorCode.GROUP_AUTHORIZATION_FAILED, request.member_id)
        )
    coordinator = _coordinator(ctx)
    if coordinator is None:
        return _join_response(v, JoinResult(ErrorCode.COORDINATOR_NOT_AVAILABLE, request.member_id))
    instance_id = request.group_instance_id if v >= 5 else None
    req = JoinRequest(
        group_id=request.group_id,
        member_id=request.member_id or "",
        group_instance_id=instance_id,
        require_known_member_id=v >= 4 and instance_id is None,
        supports_skip_assignment=v >= 9,
        client_id=ctx.header.client_id or "",
        client_host=client_host(ctx),
        # v0 has no rebalance timeout: the session timeout served as both.
        rebalance_timeout_ms=request.rebalance_timeout_ms if v >= 1 else request.session_timeout_ms,
        session_timeout_ms=request.session_timeout_ms,
        protocol_type=request.protocol_type,
        protocols=[(p.name, bytes(p.metadata or b"")) for p in request.protocols],
        reason=request.reason if v >= 8 else None,
    )
    fut = coordinator.join_group(req)
    if fut.done():
        return _join_response(v, fut.result())
    return _await_join(v, fut)


# --- SyncGroup ----------------------------------------------------------------------------


def _sync_response(r: SyncResult) -> dict:
    return {
        "throttle_time_ms": 0,
        "error_code": r.error,
        "protocol_type": r.protocol_type,
        "protocol_name": r.protocol_name,
        "assignment": r.assignment,
    }


async def _await_sync(fut: asyncio.Future) -> dict:
    return _sync_response(await fut)


@REGISTRY.register(ApiKey.SYNC_GROUP, 0, 5)
def handle_sync_group(ctx, request):
    v = ctx.api_version
    if not allowed(ctx, Op.READ, RT.GROUP, request.group_id):
        return _sync_response(SyncResult(ErrorCode.GROUP_AUTHORIZATION_FAILED))
    coordinator = _coordinator(ctx)
    if coordinator is None:
        return _sync_response(SyncResult(ErrorCode.COORDINATOR_NOT_AVAILABLE))
    fut = coordinator.sync_group(
        request.group_id,
        request.generation_id,
        request.member_id,
        request.group_instance_id if v >= 3 else None,
        request.protocol_type if v >= 5 else None,
        request.protocol_name if v >= 5 else None,
        {a.member_id: bytes(a.assignment or b"") for a in request.assignments},
    )
    if fut.done():
        return _sync_response(fut.result())
    return _await_sync(fut)


# --- Heartbeat, LeaveGroup ----------------------------------------------------------------


@REGISTRY.register(ApiKey.HEARTBEAT, 0, 4)
def handle_heartbeat(ctx, request) -> dict:
    if not allowed(ctx, Op.READ, RT.GROUP, request.group_id):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.GROUP_AUTHORIZATION_FAILED}
    coordinator = _coordinator(ctx)
    if coordinator is None:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.COORDINATOR_NOT_AVAILABLE}
    error = coordinator.heartbeat(
        request.group_id,
        request.member_id,
        request.group_instance_id if ctx.api_version >= 3 else None,
        request.generation_id,
    )
    return {"throttle_time_ms": 0, "error_code": error}


@REGISTRY.register(ApiKey.LEAVE_GROUP, 0, 5)
def handle_leave_group(ctx, request) -> dict:
    v = ctx.api_version
    if v <= 2:
        members = [(request.member_id, None, None)]
    else:
        members = [
            (m.member_id, m.group_instance_id, m.reason if v >= 5 else None)
            for m in request.members
        ]
    coordinator = _coordinator(ctx)
    if not allowed(ctx, Op.READ, RT.GROUP, request.group_id):
        error, errors = ErrorCode.GROUP_AUTHORIZATION_FAILED, []
    elif coordinator is None:
        error, errors = ErrorCode.COORDINATOR_NOT_AVAILABLE, []
    else:
        error, errors = coordinator.leave_group(request.group_id, members)
    if v <= 2:
        # One member, one error: the member's error is the response's.
        if error == ErrorCode.NONE and errors:
            error = errors[0]
        return {"throttle_time_ms": 0, "error_code": error}
    return {
        "throttle_time_ms": 0,
        "error_code": error,
        "members": [
            {"member_id": mid, "group_instance_id": iid, "error_code": e}
            for (mid, iid, _), e in zip(members, errors, strict=False)
        ],
    }


# --- DescribeGroups, ListGroups, DeleteGroups ---------------------------------------------


def _described_group(ctx, group_id: str, error: int, group, authorized) -> dict:
    entry = {
        "error_code": error,
        "group_id": group_id,
        "group_state": "",
        "protocol_type": "",
        "protocol_data": "",
        "members": [],
        "authorized_operations": authorized,
    }
    if error:
        return entry
    if group is None:
        entry["group_state"] = GroupState.DEAD.value
        return entry
    if isinstance(group, ConsumerGroup):
        entry.update(_described_consumer_group(ctx, group))
        return entry
    stable = group.is_(GroupState.STABLE)
    protocol = group.protocol_name or ""
    entry.update(
        group_state=group.state.value,
        protocol_type=group.protocol_type or "",
        # Kafka shows the protocol and member metadata only once the group is Stable.
        protocol_data=protocol if stable else "",
        members=[
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "member_metadata": m.metadata(protocol) if stable else b"",
                "member_assignment": m.assignment if stable else b"",
            }
            for m in group.members.values()
        ],
    )
    return entry


def _described_consumer_group(ctx, group: ConsumerGroup) -> dict:
    """A consumer-protocol group as DescribeGroups shows it (Kafka's asDescribedGroup): the
    server assignor as the protocol, consumer-protocol subscription and assignment bytes."""
    topics = {t.topic_id: t for t in ctx.broker.metadata.topics.values()}
    members = []
    for m in group.members.values():
        if m.classic is not None:
            metadata = m.classic.protocols[0][1] if m.classic.protocols else b""
        else:
            metadata = encode_subscription(m.subscribed_topic_names)
        members.append({
            "member_id": m.member_id,
            "group_instance_id": m.instance_id,
            "client_id": m.client_id,
            "client_host": m.client_host,
            "member_metadata": metadata,
            "member_assignment": encode_assignment(m.assigned, topics),
        })  # fmt: skip
    return {
        "group_state": group.state.value,
        "protocol_type": "consumer",
        "protocol_data": group.preferred_assignor(),
        "members": members,
    }


@REGISTRY.register(ApiKey.DESCRIBE_GROUPS, 0, 6)
def handle_describe_groups(ctx, request) -> dict:
    coordinator = _coordinator(ctx)
    include_ops = ctx.api_version >= 3 and request.include_authorized_operations
    authorized = GROUP_AUTHORIZED_OPERATIONS if include_ops else None
    groups = []
    authorizing = ctx.broker.authorizer is not None
    for group_id in request.groups:
        if authorizing and not allowed(ctx, Op.DESCRIBE, RT.GROUP, group_id):
            groups.append(_described_group(ctx, group_id, ErrorCode.GROUP_AUTHORIZATION_FAILED, None,
                                           None))  # fmt: skip
            continue
        if authorizing and include_ops:
            authorized = authorized_operations(ctx, RT.GROUP, group_id)
        if coordinator is None:
            error, group = ErrorCode.COORDINATOR_NOT_AVAILABLE, None
        else:
            error, group = coordinator.describe_group(group_id)
        entry = _described_group(ctx, group_id, error, group, authorized)
        if ctx.api_version >= 6 and error == ErrorCode.NONE and group is None:
            # KIP-1043: v6 says a group that doesn't exist is not found (older ones: Dead).
            share_groups = ctx.broker.share_groups
            kind = share_groups is not None and group_id in share_groups.groups
            entry.update(error_code=ErrorCode.GROUP_ID_NOT_FOUND,
                         error_message=f"Group {group_id} is not a classic group." if kind
                         else f"Group {group_id} not found.")  # fmt: skip
        groups.append(entry)
    return {"throttle_time_ms": 0, "groups": groups}


@REGISTRY.register(ApiKey.LIST_GROUPS, 0, 5)
def handle_list_groups(ctx, request) -> dict:
    coordinator = _coordinator(ctx)
    if coordinator is None:
        return {
            "throttle_time_ms": 0,
            "error_code": ErrorCode.COORDINATOR_NOT_AVAILABLE,
            "groups": [],
        }
    states = set(request.states_filter or []) if ctx.api_version >= 4 else None
    error, groups = coordinator.list_groups(states)
    if ctx.broker.authorizer is not None and not cluster_allowed(ctx, Op.DESCRIBE):
        # Kafka: DESCRIBE on the cluster lists every group, else those the principal may
        # describe, with no sign of the others.
        groups = [g for g in groups if allowed(ctx, Op.DESCRIBE, RT.GROUP, g.group_id)]
    listed = [
        {
            "group_id": g.group_id,
            "protocol_type": g.protocol_type or "",
            "group_state": g.state.value,
            "group_type": getattr(g, "group_type", CLASSIC_TYPE),
        }
        for g in groups
    ] + _share_groups(ctx, states)
    # v5 (KIP-848): only the group types asked for, named in any case ("classic", "consumer",
    # "share"; a name of no type matches nothing).
    types = {t.lower() for t in request.types_filter or ()} if ctx.api_version >= 5 else None
    if types:
        listed = [g for g in listed if g["group_type"] in types]
    return {"throttle_time_ms": 0, "error_code": error, "groups": listed}


def _share_groups(ctx, states: set[str] | None) -> list[dict]:
    """Share groups are listed with protocol type "share" (and group type "share" from v5)."""
    share_groups = ctx.broker.share_groups
    from .share import enabled

    if share_groups is None or not enabled(ctx.broker):
        return []
    return [
        {"group_id": g.group_id, "protocol_type": "share", "group_state": g.state,
         "group_type": "share"}
        for g in share_groups.list()
        if not states or g.state in states
    ]  # fmt: skip


@REGISTRY.register(ApiKey.DELETE_GROUPS, 0, 2)
def handle_delete_groups(ctx, request) -> dict:
    coordinator = _coordinator(ctx)
    names = list(request.groups_names)
    denied = {}
    if ctx.broker.authorizer is not None:  # Kafka: DELETE on each group
        denied = dict.fromkeys(
            set(names) - filter_allowed(ctx, Op.DELETE, RT.GROUP, names),
            ErrorCode.GROUP_AUTHORIZATION_FAILED,
        )
    todo = [g for g in names if g not in denied]
    share_groups = ctx.broker.share_groups
    shared = [n for n in todo if share_groups is not None and n in share_groups.groups]
    classic = [n for n in todo if n not in shared]
    if coordinator is None:
        results = dict.fromkeys(classic, ErrorCode.COORDINATOR_NOT_AVAILABLE)
    else:
        results = coordinator.delete_groups(classic) if classic else {}
    results.update(denied)

    def respond(share_results: dict) -> dict:
        results.update(share_results)
        return {
            "throttle_time_ms": 0,
            "results": [{"group_id": g, "error_code": results[g]} for g in names],
        }

    if not shared:
        return respond({})
    from .share import delete_share_groups

    async def delete_shared() -> dict:
        return respond(await delete_share_groups(ctx.broker, shared))

    return delete_shared()

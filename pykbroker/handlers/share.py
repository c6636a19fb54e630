"""Share groups (KIP-932): ShareGroupHeartbeat, ShareGroupDescribe, ShareFetch, ShareAcknowledge,
the share coordinator's state APIs and the share-group offsets APIs. The logic is in
pykbroker/coordinator/share_*.py and protocol/share_partition.py.

All of them answer UNSUPPORTED_VERSION, and ApiVersions leaves them out, until the share.version
feature is finalized at 1 (as Kafka 4.1 gates them) or `group.share.enable` is set.
"""

from __future__ import annotations

import asyncio
import uuid

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.checks import RT, Op, allowed, cluster_allowed
from pykbroker.coordinator.share_fetch import FINAL_EPOCH, INITIAL_EPOCH

from . import REGISTRY
from .groups import client_host

SHARE_APIS = frozenset({
    ApiKey.SHARE_GROUP_HEARTBEAT, ApiKey.SHARE_GROUP_DESCRIBE, ApiKey.SHARE_FETCH,
    ApiKey.SHARE_ACKNOWLEDGE, ApiKey.INITIALIZE_SHARE_GROUP_STATE, ApiKey.READ_SHARE_GROUP_STATE,
    ApiKey.WRITE_SHARE_GROUP_STATE, ApiKey.DELETE_SHARE_GROUP_STATE,
    ApiKey.READ_SHARE_GROUP_STATE_SUMMARY, ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS,
    ApiKey.ALTER_SHARE_GROUP_OFFSETS, ApiKey.DELETE_SHARE_GROUP_OFFSETS,
})  # fmt: skip
_UNKNOWN_PARTITION = "This server does not host this topic-partition."
_DISABLED = "Share groups are not enabled (share.version feature, or group.share.enable)."
# AclOperation codes of a group without an authorizer: READ (3), DELETE (6), DESCRIBE (8).
_GROUP_OPERATIONS = (1 << 3) | (1 << 6) | (1 << 8)


def enabled(broker) -> bool:
    """Kafka 4.1: the share.version feature finalized at 1 (`kafka-features upgrade --feature
    share.version=1`); group.share.enable, Kafka 4.0's early-access switch, also turns it on."""
    if broker.share_groups is None:
        return False
    if broker.config.get("group.share.enable"):
        return True
    features = getattr(broker.metadata, "features", None) or {}
    return features.get("share.version", 0) >= 1


def _require(ctx) -> None:
    if not enabled(ctx.broker):
        raise KafkaError(ErrorCode.UNSUPPORTED_VERSION, _DISABLED)


def _group_error(ctx, group_id: str) -> KafkaError | None:
    """NOT_COORDINATOR unless this broker coordinates the group (it leads its
    __consumer_offsets partition, as for every other group type)."""
    coordinator = ctx.broker.group_coordinator
    if coordinator is None or not coordinator.active:
        return KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "The coordinator is not available.")
    error = coordinator.store.coordinator_error(group_id)
    if error is not None:
        return KafkaError(error, "This is not the correct coordinator.")
    return None


# --- ShareGroupHeartbeat, ShareGroupDescribe ------------------------------------------------


@REGISTRY.register(ApiKey.SHARE_GROUP_HEARTBEAT, 1, 1)
def handle_share_group_heartbeat(ctx, request) -> dict:
    try:
        _require(ctx)
        if not allowed(ctx, Op.READ, RT.GROUP, request.group_id):  # Kafka: READ on the group
            raise KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED)
        error = _group_error(ctx, request.group_id)
        if error is not None:
            raise error
        return ctx.broker.share_groups.heartbeat(
            request.group_id, request.member_id, request.member_epoch, request.rack_id,
            request.subscribed_topic_names, ctx.header.client_id or "", client_host(ctx),
        )  # fmt: skip
    except KafkaError as e:
        return {"throttle_time_ms": 0, "error_code": e.code, "error_message": e.message,
                "member_id": None, "member_epoch": 0, "heartbeat_interval_ms": 0,
                "assignment": None}  # fmt: skip


@REGISTRY.register(ApiKey.SHARE_GROUP_DESCRIBE, 1, 1)
def handle_share_group_describe(ctx, request) -> dict:
    groups = []
    for group_id in request.group_ids:
        error = (
            None if enabled(ctx.broker) else KafkaError(ErrorCode.UNSUPPORTED_VERSION, _DISABLED)
        )
        if error is None and not allowed(ctx, Op.DESCRIBE, RT.GROUP, group_id):
            error = KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED)
        error = error or _group_error(ctx, group_id)
        if error is not None:
            groups.append({"error_code": error.code, "error_message": error.message,
                           "group_id": group_id, "group_state": "", "group_epoch": -1,
                           "assignment_epoch": -1, "assignor_name": "", "members": []})  # fmt: skip
            continue
        entry = ctx.broker.share_groups.describe(group_id)
        if request.include_authorized_operations:
            entry["authorized_operations"] = _GROUP_OPERATIONS
        groups.append(entry)
    return {"throttle_time_ms": 0, "groups": groups}


# --- ShareFetch, ShareAcknowledge -----------------------------------------------------------


def _topic_names(broker) -> dict[uuid.UUID, str]:
    return {t.topic_id: t.name for t in broker.metadata.topics.values()}


def _acks(names, topics) -> tuple[dict, list]:
    """(topic id, partition) -> (topic name, [(first, last, types)]) of a request's
    acknowledgement batches, and the partitions naming unknown topic ids."""
    acks, unknown = {}, []
    for t in topics:
        for p in t.partitions:
            if not p.acknowledgement_batches:
                continue
            name = names.get(t.topic_id)
            if name is None:
                unknown.append((t.topic_id, p.partition_index))
                continue
            acks[(t.topic_id, p.partition_index)] = (name, [
                (b.first_offset, b.last_offset, list(b.acknowledge_types))
                for b in p.acknowledgement_batches
            ])  # fmt: skip
    return acks, unknown


def _partition_entry(index: int, error=ErrorCode.NONE, message=None) -> dict:
    return {"partition_index": index, "error_code": error, "error_message": message,
            "acknowledge_error_code": 0, "acknowledge_error_message": None,
            "current_leader": {"leader_id": -1, "leader_epoch": -1}, "records": None,
            "acquired_records": []}  # fmt: skip


def _leader(broker, topic: str | None, partition: int) -> dict:
    if topic is not None:
        part = broker.replica_manager.partitions.get((topic, partition))
        if part is not None and part.is_leader:
            return {"leader_id": broker.node_id, "leader_epoch": part.leader_epoch}
    return {"leader_id": -1, "leader_epoch": -1}


def _fetch_error(code: int, message: str | None, lock_ms: int = 0) -> dict:
    return {"throttle_time_ms": 0, "error_code": code, "error_message": message,
            "acquisition_lock_timeout_ms": lock_ms, "responses": [], "node_endpoints": []}  # fmt: skip


@REGISTRY.register(ApiKey.SHARE_FETCH, 1, 1)
async def handle_share_fetch(ctx, request) -> dict:
    broker = ctx.broker
    if not enabled(broker):
        return _fetch_error(ErrorCode.UNSUPPORTED_VERSION, _DISABLED)
    manager = broker.share_partitions
    group_id, member_id, epoch = request.group_id, request.member_id, request.share_session_epoch
    if not group_id or not member_id:
        return _fetch_error(ErrorCode.INVALID_REQUEST, "GroupId and MemberId must be set.")
    if not allowed(ctx, Op.READ, RT.GROUP, group_id):  # Kafka: READ on the share group
        return _fetch_error(ErrorCode.GROUP_AUTHORIZATION_FAILED, None)
    names = _topic_names(broker)
    acks, unknown = _acks(names, request.topics)
    if epoch == INITIAL_EPOCH and (acks or unknown):
        return _fetch_error(ErrorCode.INVALID_REQUEST,
                            "Acknowledge data present on initial fetch request.")  # fmt: skip
    try:
        session = manager.session_for(group_id, member_id, epoch, ctx.connection)
    except KafkaError as e:
        return _fetch_error(e.code, e.message)
    lock_ms = manager.lock_duration(group_id)
    entries: dict[tuple[uuid.UUID, int], dict] = {}
    # The session's partitions: the request's topics add to it, forgotten ones leave it.
    if epoch != FINAL_EPOCH:
        for t in request.forgotten_topics_data:
            for p in t.partitions:
                session.partitions.pop((t.topic_id, p), None)
        for t in request.topics:
            for p in t.partitions:
                name = names.get(t.topic_id)
                if name is None:
                    entries[(t.topic_id, p.partition_index)] = _partition_entry(
                        p.partition_index, ErrorCode.UNKNOWN_TOPIC_ID, "unknown topic id"
                    )
                else:
                    session.partitions[(t.topic_id, p.partition_index)] = name
    for tid, index in unknown:
        entry = entries.setdefault((tid, index), _partition_entry(index))
        entry["acknowledge_error_code"] = ErrorCode.UNKNOWN_TOPIC_ID
    if acks:
        results = await manager.acknowledge(group_id, member_id, acks)
        for (tid, index), (code, message) in results.items():
            entry = entries.setdefault((tid, index), _partition_entry(index))
            entry["acknowledge_error_code"] = code
            entry["acknowledge_error_message"] = message
    if epoch == FINAL_EPOCH:
        manager.close_session(session)
        return _fetch_response(broker, entries, names, lock_ms)
    await _fetch(ctx, manager, session, request, entries)
    return _fetch_response(broker, entries, names, lock_ms)


async def _fetch(ctx, manager, session, request, entries: dict) -> None:
    broker = ctx.broker
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(request.max_wait_ms, 0) / 1000
    max_bytes = max(min(request.max_bytes, broker.config.get("fetch.max.bytes")), 1)
    max_records = request.max_records if request.max_records > 0 else 500
    while True:
        got_any, loaded = False, []
        remaining_bytes, remaining_records = max_bytes, max_records
        for (tid, index), topic in list(session.partitions.items()):
            entry = entries.setdefault((tid, index), _partition_entry(index))
            if entry["error_code"] or remaining_records <= 0:
                continue
            try:
                shared = await manager.get(session.group_id, tid, topic, index)
                loaded.append(shared)
                data, acquired = manager.acquire(shared, session.member_id, remaining_bytes,
                                                 remaining_records)  # fmt: skip
            except KafkaError as e:
                entry["error_code"], entry["error_message"] = e.code, e.message
                entry["current_leader"] = _leader(broker, topic, index)
                got_any = True  # answer now: the client has to look for the leader
                continue
            except OSError as e:
                part = broker.replica_manager.partitions.get((topic, index))
                code = part.log.log_dir.failed(e, f"reading {topic}-{index}").code if part else ErrorCode.KAFKA_STORAGE_ERROR  # fmt: skip
                entry["error_code"] = code
                got_any = True
                continue
            if acquired:
                entry["records"] = data
                entry["acquired_records"] = [
                    {"first_offset": a, "last_offset": b, "delivery_count": c}
                    for a, b, c in acquired
                ]
                remaining_bytes = max(remaining_bytes - len(data), 0)
                remaining_records -= sum(b - a + 1 for a, b, _ in acquired)
                got_any = True
        remaining = deadline - loop.time()
        if got_any or remaining <= 0 or not session.partitions or ctx.connection.closed:
            return
        fut = loop.create_future()
        keys = [(topic, index) for (_, index), topic in session.partitions.items()]
        watched = broker.replica_manager.add_waiter(keys, fut)
        manager.add_waiter(loaded, fut)
        try:
            await asyncio.wait((fut,), timeout=remaining)
        finally:
            for part in watched:
                part.waiters.discard(fut)
            for shared in loaded:
                shared.waiters.discard(fut)
        # Partitions not acquired from are answered empty; start over to fill them.
        for entry in entries.values():
            if not entry["acquired_records"] and not entry["error_code"]:
                entry["records"] = None


def _fetch_response(broker, entries: dict, names: dict, lock_ms: int) -> dict:
    topics: dict[uuid.UUID, list] = {}
    for (tid, _), entry in entries.items():
        if entry["error_code"] and entry["current_leader"]["leader_id"] < 0:
            entry["current_leader"] = _leader(broker, names.get(tid), entry["partition_index"])
        topics.setdefault(tid, []).append(entry)
    return {
        "throttle_time_ms": 0, "error_code": 0, "error_message": None,
        "acquisition_lock_timeout_ms": lock_ms,
        "responses": [{"topic_id": tid, "partitions": parts} for tid, parts in topics.items()],
        "node_endpoints": [],
    }  # fmt: skip


@REGISTRY.register(ApiKey.SHARE_ACKNOWLEDGE, 1, 1)
async def handle_share_acknowledge(ctx, request) -> dict:
    broker = ctx.broker

    def error(code, message):
        return {"throttle_time_ms": 0, "error_code": code, "error_message": message,
                "responses": [], "node_endpoints": []}  # fmt: skip

    if not enabled(broker):
        return error(ErrorCode.UNSUPPORTED_VERSION, _DISABLED)
    manager = broker.share_partitions
    group_id, member_id, epoch = request.group_id, request.member_id, request.share_session_epoch
    if not group_id or not member_id:
        return error(ErrorCode.INVALID_REQUEST, "GroupId and MemberId must be set.")
    if not allowed(ctx, Op.READ, RT.GROUP, group_id):  # Kafka: READ on the share group
        return error(ErrorCode.GROUP_AUTHORIZATION_FAILED, None)
    if epoch == INITIAL_EPOCH:
        return error(ErrorCode.INVALID_SHARE_SESSION_EPOCH,
                     "The share session epoch can't be 0 for ShareAcknowledge.")  # fmt: skip
    try:
        session = manager.session_for(group_id, member_id, epoch, ctx.connection)
    except KafkaError as e:
        return error(e.code, e.message)
    names = _topic_names(broker)
    acks, unknown = _acks(names, request.topics)
    results = await manager.acknowledge(group_id, member_id, acks)
    for tid, index in unknown:
        results[(tid, index)] = (ErrorCode.UNKNOWN_TOPIC_ID, "unknown topic id")
    if epoch == FINAL_EPOCH:
        manager.close_session(session)
    topics: dict[uuid.UUID, list] = {}
    for (tid, index), (code, message) in results.items():
        topics.setdefault(tid, []).append({
            "partition_index": index, "error_code": code, "error_message": message,
            "current_leader": _leader(broker, names.get(tid), index),
        })  # fmt: skip
    return {"throttle_time_ms": 0, "error_code": 0, "error_message": None,
            "responses": [{"topic_id": t, "partitions": ps} for t, ps in topics.items()],
            "node_endpoints": []}  # fmt: skip


# --- the share coordinator's state APIs (inter-broker: a share-partition leader's persister) --


async def _state_call(request, call) -> dict:
    results = []
    for t in request.topics:
        parts = []
        for p in t.partitions:
            entry = {"partition": p.partition, "error_code": 0, "error_message": None}
            try:
                entry.update(await call((request.group_id, t.topic_id, p.partition), p) or {})
            except KafkaError as e:
                entry.update(error_code=e.code, error_message=e.message)
            parts.append(entry)
        results.append({"topic_id": t.topic_id, "partitions": parts})
    return {"results": results}


def _state_disabled(request, code: int = ErrorCode.UNSUPPORTED_VERSION,
                    message: str | None = _DISABLED) -> dict:  # fmt: skip
    return {"results": [{"topic_id": t.topic_id, "partitions": [
        {"partition": p.partition, "error_code": code,
         "error_message": message} for p in t.partitions]} for t in request.topics]}  # fmt: skip


def _state_refused(ctx, request) -> dict | None:
    """The share-group state APIs are broker to share coordinator: Kafka wants CLUSTER_ACTION."""
    if cluster_allowed(ctx, Op.CLUSTER_ACTION):
        return None
    return _state_disabled(request, ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None)


@REGISTRY.register(ApiKey.INITIALIZE_SHARE_GROUP_STATE, 0, 0)
async def handle_initialize_share_group_state(ctx, request) -> dict:
    if (refused := _state_refused(ctx, request)) is not None:
        return refused
    if not enabled(ctx.broker):
        return _state_disabled(request)
    coordinator = ctx.broker.share_coordinator
    return await _state_call(
        request, lambda key, p: coordinator.initialize(key, p.state_epoch, p.start_offset)
    )


@REGISTRY.register(ApiKey.READ_SHARE_GROUP_STATE, 0, 0)
async def handle_read_share_group_state(ctx, request) -> dict:
    if (refused := _state_refused(ctx, request)) is not None:
        return refused
    if not enabled(ctx.broker):
        return _state_disabled(request)
    coordinator = ctx.broker.share_coordinator

    async def read(key, p):
        state = coordinator.read(key, p.leader_epoch)
        if state is None:
            return {"state_epoch": -1, "start_offset": -1, "state_batches": []}
        return {"state_epoch": state.state_epoch, "start_offset": state.start_offset,
                "state_batches": [{"first_offset": f, "last_offset": la, "delivery_state": s,
                                   "delivery_count": c} for f, la, s, c in state.batches]}  # fmt: skip

    return await _state_call(request, read)


@REGISTRY.register(ApiKey.WRITE_SHARE_GROUP_STATE, 0, 0)
async def handle_write_share_group_state(ctx, request) -> dict:
    if (refused := _state_refused(ctx, request)) is not None:
        return refused
    if not enabled(ctx.broker):
        return _state_disabled(request)
    coordinator = ctx.broker.share_coordinator
    return await _state_call(request, lambda key, p: coordinator.write(
        key, p.state_epoch, p.leader_epoch, p.start_offset,
        [(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
         for b in p.state_batches],
    ))  # fmt: skip


@REGISTRY.register(ApiKey.DELETE_SHARE_GROUP_STATE, 0, 0)
async def handle_delete_share_group_state(ctx, request) -> dict:
    if (refused := _state_refused(ctx, request)) is not None:
        return refused
    if not enabled(ctx.broker):
        return _state_disabled(request)
    coordinator = ctx.broker.share_coordinator
    return await _state_call(request, lambda key, p: coordinator.delete(key))


@REGISTRY.register(ApiKey.READ_SHARE_GROUP_STATE_SUMMARY, 0, 0)
async def handle_read_share_group_state_summary(ctx, request) -> dict:
    if (refused := _state_refused(ctx, request)) is not None:
        return refused
    if not enabled(ctx.broker):
        return _state_disabled(request)
    coordinator = ctx.broker.share_coordinator

    async def summary(key, p):
        state = coordinator.read(key)
        if state is None:
            return {"state_epoch": -1, "leader_epoch": -1, "start_offset": -1}
        return {"state_epoch": state.state_epoch, "leader_epoch": state.leader_epoch,
                "start_offset": state.start_offset}  # fmt: skip

    return await _state_call(request, summary)


# --- share-group offsets (kafka-share-groups --describe --offsets, --reset-offsets, ...) ------


def _group_topics(broker, group_id: str) -> set[str]:
    """The topics a share group may have state for: those its members subscribed to (since
    this broker coordinates it) and those with state in this broker's share coordinator."""
    names = _topic_names(broker)
    found = {
        names[k[1]] for k in broker.share_coordinator.states if k[0] == group_id and k[1] in names
    }
    group = broker.share_groups.groups.get(group_id)
    if group is not None:
        found |= {t for t in group.topics if broker.metadata.topic(t) is not None}
    return found


async def _group_states(broker, group_id: str, topics: dict[str, list[int]] | None) -> dict:
    """(topic, partition) -> (key, ShareState or None) through the persister; KafkaError."""
    if topics is None:
        topics = {}
        for t in _group_topics(broker, group_id):
            topics[t] = list(range(len(broker.metadata.topic(t).partitions)))
    out = {}
    for topic, partitions in topics.items():
        info = broker.metadata.topic(topic)
        for index in partitions:
            if info is None or not 0 <= index < len(info.partitions):
                out[(topic, index)] = (None, None)
                continue
            key = (group_id, info.topic_id, index)
            out[(topic, index)] = (key, await broker.share_persister.summary(key))
    return out


@REGISTRY.register(ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS, 0, 0)
async def handle_describe_share_group_offsets(ctx, request) -> dict:
    broker = ctx.broker
    groups = []
    for g in request.groups:
        entry = {"group_id": g.group_id, "topics": [], "error_code": 0, "error_message": None}
        error = None if enabled(broker) else KafkaError(ErrorCode.UNSUPPORTED_VERSION, _DISABLED)
        if error is None and not allowed(ctx, Op.DESCRIBE, RT.GROUP, g.group_id):
            error = KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED)  # Kafka: DESCRIBE on it
        error = error or _group_error(ctx, g.group_id)
        if error is None and g.group_id not in broker.share_groups.groups:
            error = KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {g.group_id} not found.")
        wanted = None if g.topics is None else {t.topic_name: list(t.partitions) for t in g.topics}
        try:
            states = {} if error else await _group_states(broker, g.group_id, wanted)
        except KafkaError as e:
            error = e
        if error is not None:
            entry.update(error_code=error.code, error_message=error.message)
            groups.append(entry)
            continue
        by_topic: dict[str, list] = {}
        for (topic, index), (key, state) in sorted(states.items()):
            if wanted is None and state is None:
                continue  # all topics: those with state only
            p = {"partition_index": index, "start_offset": -1, "leader_epoch": -1,
                 "error_code": 0, "error_message": None}  # fmt: skip
            if key is None:
                p.update(error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                         error_message=_UNKNOWN_PARTITION)  # fmt: skip
            elif state is not None:
                p.update(start_offset=state.start_offset, leader_epoch=state.leader_epoch)
            by_topic.setdefault(topic, []).append(p)
        for topic, parts in by_topic.items():
            info = broker.metadata.topic(topic)
            entry["topics"].append({"topic_name": topic, "partitions": parts,
                                    "topic_id": _topic_id(info)})  # fmt: skip
        groups.append(entry)
    return {"throttle_time_ms": 0, "groups": groups}


def _offsets_precheck(ctx, group_id: str, create: bool) -> KafkaError | None:
    broker = ctx.broker
    if not enabled(broker):
        return KafkaError(ErrorCode.UNSUPPORTED_VERSION, _DISABLED)
    # Kafka: READ on the group to alter its offsets, DELETE to delete them.
    if not allowed(ctx, Op.READ if create else Op.DELETE, RT.GROUP, group_id):
        return KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED)
    error = _group_error(ctx, group_id)
    if error is not None:
        return error
    groups = broker.share_groups.groups
    if group_id not in groups:
        if not create:
            return KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} not found.")
        try:
            broker.share_groups.create_empty(group_id)
        except KafkaError as e:
            return e
    if groups[group_id].members:
        return KafkaError(ErrorCode.NON_EMPTY_GROUP,
                          "The group is not empty.")  # fmt: skip
    return None


def _offsets_response(responses: list, error: KafkaError | None = None) -> dict:
    return {"throttle_time_ms": 0, "error_code": error.code if error else 0,
            "error_message": error.message if error else None, "responses": responses}  # fmt: skip


def _topic_id(info) -> uuid.UUID:
    return info.topic_id if info is not None else uuid.UUID(int=0)


@REGISTRY.register(ApiKey.ALTER_SHARE_GROUP_OFFSETS, 0, 0)
async def handle_alter_share_group_offsets(ctx, request) -> dict:
    broker = ctx.broker
    error = _offsets_precheck(ctx, request.group_id, create=True)
    if error is not None:
        return _offsets_response([], error)
    responses = []
    for t in request.topics:
        info = broker.metadata.topic(t.topic_name)
        parts = []
        for p in t.partitions:
            entry = {"partition_index": p.partition_index, "error_code": 0, "error_message": None}
            if info is None or not 0 <= p.partition_index < len(info.partitions):
                entry.update(error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             error_message=_UNKNOWN_PARTITION)  # fmt: skip
            else:
                key = (request.group_id, info.topic_id, p.partition_index)
                try:
                    old = await broker.share_persister.summary(key)
                    # A new state epoch: a leader still holding the old state is fenced.
                    await broker.share_persister.initialize(
                        key, (old.state_epoch + 1) if old else 0, p.start_offset
                    )
                    broker.share_groups.create_empty(request.group_id).topics.add(t.topic_name)
                    broker.share_partitions.invalidate(key)
                except KafkaError as e:
                    entry.update(error_code=e.code, error_message=e.message)
            parts.append(entry)
        responses.append({"topic_name": t.topic_name, "partitions": parts,
                          "topic_id": _topic_id(info)})  # fmt: skip
    return _offsets_response(responses)


@REGISTRY.register(ApiKey.DELETE_SHARE_GROUP_OFFSETS, 0, 0)
async def handle_delete_share_group_offsets(ctx, request) -> dict:
    broker = ctx.broker
    error = _offsets_precheck(ctx, request.group_id, create=False)
    if error is not None:
        return _offsets_response([], error)
    responses = []
    for t in request.topics:
        info = broker.metadata.topic(t.topic_name)
        entry = {"topic_name": t.topic_name, "error_code": 0, "error_message": None,
                 "topic_id": _topic_id(info)}  # fmt: skip
        if info is None:
            entry.update(error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                         error_message=_UNKNOWN_PARTITION)  # fmt: skip
            responses.append(entry)
            continue
        try:
            for index in range(len(info.partitions)):
                key = (request.group_id, info.topic_id, index)
                await broker.share_persister.delete(key)
                broker.share_partitions.invalidate(key)
            broker.share_groups.groups[request.group_id].topics.discard(t.topic_name)
        except KafkaError as e:
            entry.update(error_code=e.code, error_message=e.message)
        responses.append(entry)
    return _offsets_response(responses)


async def delete_share_groups(broker, names: list[str]) -> dict[str, int]:
    """DeleteGroups for share groups: an empty group goes, with all its share-partition state."""
    results = {}
    for group_id in names:
        topics = _group_topics(broker, group_id) if group_id in broker.share_groups.groups else ()
        code = broker.share_groups.delete(group_id)
        if code == ErrorCode.NONE:
            try:
                for topic in topics:
                    info = broker.metadata.topic(topic)
                    for index in range(len(info.partitions)):
                        await broker.share_persister.delete((group_id, info.topic_id, index))
            except KafkaError as e:
                code = e.code
            broker.share_partitions.invalidate_group(group_id)
        results[group_id] = code
    return results

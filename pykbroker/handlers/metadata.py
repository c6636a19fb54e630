"""Metadata and DescribeCluster."""

from __future__ import annotations

import uuid

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.authorizer import CLUSTER_NAME
from pykbroker.acl.checks import RT, Op, allowed, authorized_operations
from pykbroker.cluster.metadata import INTERNAL_TOPICS, TopicInfo, validate_topic_name

from . import REGISTRY
from .committed import wait_committed

ZERO_UUID = uuid.UUID(int=0)
AUTHORIZED_OPERATIONS_UNSET = None  # kafka-python encodes None as INT32_MIN ("not requested")


def broker_entries(broker, listener: str | None = None) -> list[dict]:
    """Every live broker at its address on `listener` (the one the client connected to)."""
    entries = []
    for b in broker.metadata.brokers():
        host, port = b.address(listener)
        entries.append({"node_id": b.node_id, "host": host, "port": port, "rack": b.rack})
    return entries


def topic_entry(info: TopicInfo, error: int = ErrorCode.NONE, live: set[int] | None = None) -> dict:
    """A topic's metadata; `live` (broker ids) marks offline replicas and leaderless partitions."""
    partitions = []
    for i, p in enumerate(info.partitions):
        entry = {
            "error_code": ErrorCode.NONE,
            "partition_index": i,
            "leader_id": p.leader,
            "leader_epoch": p.leader_epoch,
            "replica_nodes": p.replicas,
            "isr_nodes": p.isr,
            "offline_replicas": [],
        }
        if live is not None:
            entry["offline_replicas"] = [r for r in p.replicas if r not in live]
            if p.leader not in live:
                entry["error_code"] = ErrorCode.LEADER_NOT_AVAILABLE
                entry["leader_id"] = -1
        partitions.append(entry)
    return {
        "error_code": error,
        "name": info.name,
        "topic_id": info.topic_id,
        "is_internal": info.internal,
        "partitions": partitions,
        "authorized_operations": AUTHORIZED_OPERATIONS_UNSET,
    }


def _entry(broker, info: TopicInfo, live: set[int] | None) -> dict:
    entry = topic_entry(info, live=live)
    if broker.log_manager.failure_channel.offline_dirs:
        _mark_offline_replicas(broker, entry)
    return entry


def _mark_offline_replicas(broker, entry: dict) -> None:
    """Replicas in an offline log dir of this broker are offline replicas, as Kafka's
    controller reports them; one it leads has no leader until leadership moves."""
    rm, node = broker.replica_manager, broker.node_id
    for p in entry["partitions"]:
        part = rm.partitions.get((entry["name"], p["partition_index"]))
        if part is None or not part.log.log_dir.offline:
            continue
        if node not in p["offline_replicas"]:
            p["offline_replicas"] = [*p["offline_replicas"], node]
        if p["leader_id"] == node:
            p["leader_id"] = -1
            p["error_code"] = ErrorCode.LEADER_NOT_AVAILABLE


def _live(broker) -> set[int] | None:
    """Live broker ids in a cluster (None on a single broker: it leads everything)."""
    if broker.config.get("zookeeper.connect"):
        return set(broker.metadata.live_broker_ids())
    return None


def error_entry(name: str | None, error: int, topic_id=None) -> dict:
    entry = {"error_code": error, "name": name, "is_internal": False, "partitions": []}
    if topic_id is not None:
        entry["topic_id"] = topic_id
    return entry


def _requested_topic(broker, name: str, allow_auto: bool, writes: list | None = None) -> dict:
    info = broker.metadata.topic(name)
    if info is not None:
        return _entry(broker, info, _live(broker))
    try:
        validate_topic_name(name)
    except KafkaError as e:
        return error_entry(name, e.code)
    if not allow_auto:
        return error_entry(name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    try:
        entry = _entry(broker, broker.auto_create_topic(name), _live(broker))
    except KafkaError as e:
        return error_entry(name, e.code)
    write = broker.metadata.committed(name)
    if write is not None and writes is not None:
        writes.append(({}, write))
    return entry


def _may_auto_create(ctx, name: str) -> bool:
    """Kafka: auto-creating a topic through Metadata needs CREATE on the cluster or the topic."""
    return allowed(ctx, Op.CREATE, RT.CLUSTER, CLUSTER_NAME) or allowed(
        ctx, Op.CREATE, RT.TOPIC, name
    )


def _authorized_requested(ctx, t, allow_auto: bool, writes: list) -> dict:
    """A topic asked for by name or id, with the authorizer's say (Kafka's handleTopicMetadata):
    TOPIC_AUTHORIZATION_FAILED without DESCRIBE (nothing else about it: not whether it exists),
    and for an unknown topic that would be auto-created, without CREATE."""
    broker = ctx.broker
    if t.name is None:
        info = broker.metadata.topic_by_id(t.topic_id)
        if info is not None and not allowed(ctx, Op.DESCRIBE, RT.TOPIC, info.name):
            return error_entry(None, ErrorCode.TOPIC_AUTHORIZATION_FAILED, t.topic_id)
        return _by_id(broker, t.topic_id, info)
    if not allowed(ctx, Op.DESCRIBE, RT.TOPIC, t.name):
        return error_entry(t.name, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
    if (
        allow_auto
        and broker.metadata.topic(t.name) is None
        and broker.config.get("auto.create.topics.enable")
        and not _may_auto_create(ctx, t.name)
    ):
        return error_entry(t.name, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
    return _requested_topic(broker, t.name, allow_auto, writes)


def _by_id(broker, topic_id, info) -> dict:
    if info is None:
        return error_entry(None, ErrorCode.UNKNOWN_TOPIC_ID, topic_id)
    return _entry(broker, info, _live(broker))


@REGISTRY.register(ApiKey.METADATA, 0, 13)
def handle_metadata(ctx, request) -> dict:
    broker = ctx.broker
    version = ctx.api_version
    authorizing = broker.authorizer is not None
    allow_auto = request.allow_auto_topic_creation if version >= 4 else True
    writes: list = []
    if request.topics is None or (version == 0 and not request.topics):
        live = _live(broker)
        infos = broker.metadata.topics.values()
        if authorizing:  # all topics: the ones the principal may describe, silently
            infos = [i for i in infos if allowed(ctx, Op.DESCRIBE, RT.TOPIC, i.name)]
        topics = [_entry(broker, t, live) for t in infos]
    elif authorizing:
        topics = [_authorized_requested(ctx, t, allow_auto, writes) for t in request.topics]
    else:
        topics = []
        for t in request.topics:
            if t.name is None:  # v12: by topic id
                topics.append(_by_id(broker, t.topic_id, broker.metadata.topic_by_id(t.topic_id)))
            else:
                topics.append(_requested_topic(broker, t.name, allow_auto, writes))
    response = {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NONE,  # v13's top-level error: none a broker sets here (KIP-1102)
        "brokers": broker_entries(broker, ctx.listener),
        "cluster_id": broker.metadata.cluster_id,
        "controller_id": broker.metadata.controller_id,
        "topics": topics,
        "authorized_operations": AUTHORIZED_OPERATIONS_UNSET,
    }
    if version >= 8:
        _add_authorized_operations(ctx, request, response)
    return _after_auto_create(broker, writes, response) if writes else response


def _add_authorized_operations(ctx, request, response: dict) -> None:
    """Metadata v8+: the operations the principal may do on each topic (and, v8-10, the
    cluster), when the request asks for them."""
    if request.include_topic_authorized_operations:
        for entry in response["topics"]:
            if entry["error_code"] == ErrorCode.NONE and entry["name"]:
                entry["authorized_operations"] = authorized_operations(ctx, RT.TOPIC, entry["name"])
    if ctx.api_version <= 10 and request.include_cluster_authorized_operations:
        response["authorized_operations"] = authorized_operations(ctx, RT.CLUSTER, CLUSTER_NAME)


async def _after_auto_create(broker, writes: list, response: dict) -> dict:
    """Auto-created topics: answer once ZooKeeper holds them, with what it holds (another
    broker may have created the name first)."""
    await wait_committed(broker, writes)
    live = _live(broker)
    for i, entry in enumerate(response["topics"]):
        info = broker.metadata.topic(entry["name"]) if entry["name"] else None
        if info is not None:
            response["topics"][i] = _entry(broker, info, live)
        elif entry["error_code"] == ErrorCode.NONE:
            response["topics"][i] = error_entry(entry["name"], ErrorCode.LEADER_NOT_AVAILABLE)
    return response


BROKER_ENDPOINT = 1
ENDPOINT_TYPES = {1: "BROKER", 2: "CONTROLLER"}  # Kafka's EndpointType (0: UNKNOWN)


@REGISTRY.register(ApiKey.DESCRIBE_CLUSTER, 0, 2)
def handle_describe_cluster(ctx, request) -> dict:
    broker = ctx.broker
    endpoint_type = request.endpoint_type if ctx.api_version >= 1 else BROKER_ENDPOINT
    if endpoint_type != BROKER_ENDPOINT:
        # Kafka's AuthHelper.computeDescribeClusterResponse: an unknown type, or a controller
        # endpoint asked of a broker (v0 could only say INVALID_REQUEST).
        if endpoint_type not in ENDPOINT_TYPES:
            error = ErrorCode.UNSUPPORTED_ENDPOINT_TYPE
            message = f"Unsupported endpoint type {endpoint_type}"
        else:
            error = ErrorCode.MISMATCHED_ENDPOINT_TYPE
            message = ("The request was sent to an endpoint of type BROKER, but we wanted an "
                       f"endpoint of type {ENDPOINT_TYPES[endpoint_type]}")  # fmt: skip
        return {
            "error_code": error if ctx.api_version >= 1 else ErrorCode.INVALID_REQUEST,
            "error_message": message, "endpoint_type": 0, "cluster_id": "",
            "controller_id": -1, "brokers": [],
        }  # fmt: skip
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NONE,
        "error_message": None,
        "endpoint_type": 1,
        "cluster_id": broker.metadata.cluster_id,
        "controller_id": broker.metadata.controller_id,
        # v2 (KIP-1073): registered brokers are never fenced here (a broker that lost its
        # ZooKeeper session is not registered), so include_fenced_brokers adds none.
        "brokers": [
            {
                "broker_id": e["node_id"],
                "host": e["host"],
                "port": e["port"],
                "rack": e["rack"],
                "is_fenced": False,
            }
            for e in broker_entries(broker, ctx.listener)
        ],  # fmt: skip
        "authorized_operations": _cluster_operations(ctx, request),
    }


def _cluster_operations(ctx, request) -> set[int] | None:
    """DescribeCluster: the cluster's authorized operations when asked (0 without DESCRIBE)."""
    if not request.include_cluster_authorized_operations:
        return AUTHORIZED_OPERATIONS_UNSET
    if not allowed(ctx, Op.DESCRIBE, RT.CLUSTER, CLUSTER_NAME):
        return set()
    return authorized_operations(ctx, RT.CLUSTER, CLUSTER_NAME)


# --- DescribeTopicPartitions (KIP-966) ------------------------------------------------------


@REGISTRY.register(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, 0)
def handle_describe_topic_partitions(ctx, request) -> dict:
    """Topics in name order, from the cursor on, at most `response_partition_limit` partitions
    (and max.request.partition.size.limit) per answer; `next_cursor` says where to go on.
    Kafka's DescribeTopicPartitionsRequestHandler and KRaftMetadataCache, step for step."""
    broker = ctx.broker
    cursor = request.cursor
    start_topic = cursor.topic_name if cursor is not None else ""
    everything = not request.topics
    if cursor is not None and cursor.partition_index < 0:
        return _invalid_request(request)  # Kafka: "cursor partition must be valid"
    names = broker.metadata.topics if everything else {t.name for t in request.topics}
    names = sorted(n for n in names if n >= start_topic)
    if not everything and cursor is not None and start_topic not in names:
        return _invalid_request(request)  # Kafka: the topic list must contain the cursor's
    denied = []  # requested by name but not describable: named, nothing disclosed
    if broker.authorizer is not None:
        permitted = [n for n in names if allowed(ctx, Op.DESCRIBE, RT.TOPIC, n)]
        if not everything:
            denied = [n for n in names if n not in set(permitted)]
        names = permitted
    remaining = min(broker.config.get("max.request.partition.size.limit"),
                    request.response_partition_limit)  # fmt: skip
    live = _live(broker)
    topics: list[dict] = []
    next_cursor = None
    for name in names:
        if remaining == 0:  # the page is full: the next one starts at this topic
            next_cursor = {"topic_name": name, "partition_index": 0}
            break
        info = broker.metadata.topic(name)
        if info is None:
            if not everything:
                topics.append(_missing_topic(name))
            continue
        first = cursor.partition_index if name == start_topic and cursor is not None else 0
        entry = _entry(broker, info, live)
        upper = min(len(info.partitions), first + remaining)
        entry["partitions"] = entry["partitions"][first:upper]
        for p in entry["partitions"]:
            p["eligible_leader_replicas"] = []  # no ELR (eligible.leader.replicas.version 0)
            p["last_known_elr"] = []
        topics.append({
            "error_code": ErrorCode.NONE, "name": name, "topic_id": info.topic_id,
            "is_internal": info.internal, "partitions": entry["partitions"],
        })  # fmt: skip
        if upper < len(info.partitions):
            next_cursor = {"topic_name": name, "partition_index": upper}
            break
        remaining -= len(entry["partitions"])
    for t in topics:
        ops = authorized_operations(ctx, RT.TOPIC, t["name"])
        t["topic_authorized_operations"] = sum(1 << op for op in ops)  # an int32 bitfield here
    topics += [{"error_code": ErrorCode.TOPIC_AUTHORIZATION_FAILED, "name": n,
                "topic_id": ZERO_UUID, "is_internal": False, "partitions": []} for n in denied]  # fmt: skip
    return {"throttle_time_ms": 0, "topics": topics, "next_cursor": next_cursor}


def _invalid_request(request) -> dict:
    """Kafka's getErrorResponse for an InvalidRequestException: each topic named, with it."""
    return {"throttle_time_ms": 0, "next_cursor": None, "topics": [
        {"error_code": ErrorCode.INVALID_REQUEST, "name": t.name, "topic_id": ZERO_UUID,
         "is_internal": False, "partitions": []} for t in request.topics]}  # fmt: skip


def _missing_topic(name: str) -> dict:
    try:
        validate_topic_name(name)
        error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    except KafkaError:
        error = ErrorCode.INVALID_TOPIC_EXCEPTION
    return {"error_code": error, "name": name, "topic_id": ZERO_UUID,
            "is_internal": name in INTERNAL_TOPICS, "partitions": []}  # fmt: skip

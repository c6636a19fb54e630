"""Partition placement on request: ElectLeaders, AlterPartitionReassignments,
ListPartitionReassignments.

Kafka's admin client sends ElectLeaders and AlterPartitionReassignments to the controller; a
broker that isn't the controller answers NOT_CONTROLLER (the client finds the controller again
and retries). The controller's side is in cluster/controller.py and cluster/reassignment.py. A
single broker has nothing to elect or move: preferred election is never needed there, and a
reassignment can only name that broker.
"""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from pykbroker.acl.checks import Op, cluster_allowed

from . import REGISTRY

TIMEOUT_CAP_S = 60.0


def _controller(broker):
    c = getattr(broker, "controller", None)
    return c if c is not None and c.active else None


@REGISTRY.register(ApiKey.ELECT_LEADERS, 0, 2)
def handle_elect_leaders(ctx, request) -> dict:
    broker = ctx.broker
    election_type = getattr(request, "election_type", 0) if ctx.api_version >= 1 else 0
    wanted = None
    if request.topic_partitions is not None:
        wanted = [(t.topic, p) for t in request.topic_partitions for p in t.partitions]

    def response(results: dict) -> dict:
        by_topic: dict[str, list[dict]] = {}
        for (topic, index), (code, message) in results.items():
            by_topic.setdefault(topic, []).append(
                {"partition_id": index, "error_code": code, "error_message": message}
            )
        return {
            "throttle_time_ms": 0, "error_code": ErrorCode.NONE,
            "replica_election_results": [
                {"topic": t, "partition_result": parts} for t, parts in by_topic.items()
            ],
        }  # fmt: skip

    if not cluster_allowed(ctx, Op.ALTER):  # Kafka: ALTER on the cluster
        denied = response(
            {tp: (ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None) for tp in wanted or []}
        )
        if ctx.api_version >= 1:
            denied["error_code"] = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
        return denied
    controller = _controller(broker)
    if controller is None:
        if getattr(broker, "controller", None) is not None:  # a cluster, not its controller
            return response({tp: (ErrorCode.NOT_CONTROLLER, None) for tp in wanted or []})
        return response(_single_broker_election(broker, election_type, wanted))

    async def run() -> dict:
        timeout = min(max(request.timeout_ms, 0) / 1000, TIMEOUT_CAP_S)
        return response(await controller.elect_leaders(election_type, wanted, timeout))

    return run()


def _single_broker_election(broker, election_type: int, wanted) -> dict:
    """One broker leads every partition already: nothing to elect."""
    md = broker.metadata
    out = {}
    for topic, index in wanted or []:
        info = md.topic(topic)
        if info is None or not 0 <= index < len(info.partitions):
            out[(topic, index)] = (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                   "The partition does not exist.")  # fmt: skip
        else:
            out[(topic, index)] = (ErrorCode.ELECTION_NOT_NEEDED, None)
    return out


@REGISTRY.register(ApiKey.ALTER_PARTITION_REASSIGNMENTS, 0, 1)
def handle_alter_partition_reassignments(ctx, request) -> dict:
    changes = {
        (t.name, p.partition_index): (None if p.replicas is None else list(p.replicas))
        for t in request.topics
        for p in t.partitions
    }
    allow_rf_change = ctx.api_version < 1 or request.allow_replication_factor_change
    refused: dict = {}
    if not allow_rf_change:  # KIP-860: a move that changes the replica count is refused
        md = ctx.broker.metadata
        for (topic, index), target in list(changes.items()):
            info = md.topic(topic)
            if target is None or info is None or not 0 <= index < len(info.partitions):
                continue
            st = info.partitions[index]
            current = len([r for r in st.replicas if r not in getattr(st, "adding", ())])
            if len(target) != current:
                del changes[(topic, index)]
                refused[(topic, index)] = (
                    ErrorCode.INVALID_REPLICATION_FACTOR,
                    f"The replication factor is changed from {current} to {len(target)} but "
                    "allowReplicationFactorChange is false",
                )

    def response(results: dict, code: int = ErrorCode.NONE, message: str | None = None) -> dict:
        by_topic: dict[str, list[dict]] = {}
        for (topic, index), (error, text) in results.items():
            by_topic.setdefault(topic, []).append(
                {"partition_index": index, "error_code": error, "error_message": text}
            )
        for (topic, index), (error, text) in refused.items():
            by_topic.setdefault(topic, []).append(
                {"partition_index": index, "error_code": error, "error_message": text}
            )
        return {
            "throttle_time_ms": 0, "error_code": code, "error_message": message,
            "allow_replication_factor_change": allow_rf_change,
            "responses": [{"name": t, "partitions": parts} for t, parts in by_topic.items()],
        }  # fmt: skip

    if not cluster_allowed(ctx, Op.ALTER):  # Kafka: ALTER on the cluster
        return response(dict.fromkeys(changes, (ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None)),
                        ErrorCode.CLUSTER_AUTHORIZATION_FAILED)  # fmt: skip
    controller = _controller(ctx.broker)
    if controller is None:
        if getattr(ctx.broker, "controller", None) is not None:
            return response({}, ErrorCode.NOT_CONTROLLER, None)
        return response(_single_broker_reassignment(ctx.broker, changes))

    async def run() -> dict:
        return response(await controller.alter_reassignments(changes))

    return run()


def _single_broker_reassignment(broker, changes) -> dict:
    md = broker.metadata
    out = {}
    for (topic, index), target in changes.items():
        info = md.topic(topic)
        if info is None or not 0 <= index < len(info.partitions):
            out[(topic, index)] = (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                   "The partition does not exist.")  # fmt: skip
        elif target is None:
            out[(topic, index)] = (ErrorCode.NO_REASSIGNMENT_IN_PROGRESS, None)
        elif target == info.partitions[index].replicas:
            out[(topic, index)] = (ErrorCode.NONE, None)
        else:
            out[(topic, index)] = (
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"Replica assignment has brokers that are not alive. Replica list: {target}, "
                f"live broker list: {md.live_broker_ids()}",
            )
    return out


@REGISTRY.register(ApiKey.LIST_PARTITION_REASSIGNMENTS, 0, 0)
def handle_list_partition_reassignments(ctx, request) -> dict:
    """Partitions with adding or removing replicas, from this broker's cache of the topic
    znodes (every broker watches them)."""
    if not cluster_allowed(ctx, Op.DESCRIBE):  # Kafka: DESCRIBE on the cluster
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                "error_message": None, "topics": []}  # fmt: skip
    md = ctx.broker.metadata
    if request.topics is None:
        wanted = [
            (name, i) for name in sorted(md.topics) for i in range(len(md.topics[name].partitions))
        ]
    else:
        wanted = [(t.name, i) for t in request.topics for i in t.partition_indexes]
    by_topic: dict[str, list[dict]] = {}
    for topic, index in wanted:
        info = md.topic(topic)
        if info is None or not 0 <= index < len(info.partitions):
            continue
        st = info.partitions[index]
        if getattr(st, "reassigning", False):
            by_topic.setdefault(topic, []).append({
                "partition_index": index, "replicas": list(st.replicas),
                "adding_replicas": list(st.adding), "removing_replicas": list(st.removing),
            })  # fmt: skip
    return {
        "throttle_time_ms": 0, "error_code": ErrorCode.NONE, "error_message": None,
        "topics": [{"name": t, "partitions": parts} for t, parts in by_topic.items()],
    }  # fmt: skip

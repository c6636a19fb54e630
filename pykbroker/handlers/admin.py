"""Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords, DescribeLogDirs."""

from __future__ import annotations

import os
from collections import Counter

import structlog

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.checks import RT, Op, allowed, cluster_allowed, filter_allowed
from pykbroker.quota import THROTTLING_QUOTA_EXCEEDED_MESSAGE, ControllerMutation

from . import REGISTRY
from .committed import pending_write, wait_committed

logger = structlog.get_logger(__name__)

# Kafka's ReplicationControlManager.MAX_PARTITIONS_PER_BATCH: a CreateTopics (or CreatePartitions)
# request may create at most this many partitions in all; checked before anything is allocated.
MAX_PARTITIONS_PER_REQUEST = 10_000
EXCESSIVE_PARTITIONS = "Excessively large number of partitions per request."


def _partitions_requested(topics, default_partitions: int) -> int:
    """Kafka's validateTotalNumberOfPartitions count: assignments, else num_partitions (-1 is
    the default), non-positive counts adding nothing (they fail on their own later)."""
    total = 0
    for t in topics:
        if t.assignments:
            total += len(t.assignments)
        elif t.num_partitions == -1:
            total += default_partitions
        elif t.num_partitions > 0:
            total += t.num_partitions
    return total


def _refuse_all(topics, result_fn) -> list[dict]:
    """Every topic of a request over the partition bound gets POLICY_VIOLATION (Kafka fails the
    whole request, so each topic carries the error)."""
    return [
        result_fn(t.name, error_code=ErrorCode.POLICY_VIOLATION, error_message=EXCESSIVE_PARTITIONS)
        for t in topics
    ]


@REGISTRY.register(ApiKey.CREATE_TOPICS, 2, 7)
def handle_create_topics(ctx, request) -> dict:
    broker = ctx.broker
    if (
        _partitions_requested(request.topics, broker.config.get("num.partitions"))
        > MAX_PARTITIONS_PER_REQUEST
    ):
        topics = _refuse_all(request.topics, _create_topic_result)
        return {"throttle_time_ms": 0, "topics": topics}
    opening: list = []
    results: list = []
    denied: set[str] = set()
    if broker.authorizer is not None and not cluster_allowed(ctx, Op.CREATE):
        # Kafka: CREATE on the cluster, or else on each topic.
        names = {t.name for t in request.topics}
        denied = names - filter_allowed(ctx, Op.CREATE, RT.TOPIC, names)
    quota = ControllerMutation.of(ctx, strict_from=6)
    try:
        with broker.metadata.batch():  # one metadata write for the whole request
            results, writes = _create_topics(broker, request, opening, denied, quota)
    except KafkaError as e:  # that write failed (a full disk): the batch took its changes back
        return _finish(ctx, quota, {"throttle_time_ms": 0, "topics": _failed_write(results, e)})
    response = _finish(ctx, quota, {"throttle_time_ms": 0, "topics": results})
    return _after(broker, writes, response, opening) if writes or opening else response


def _finish(ctx, quota: ControllerMutation | None, response: dict) -> dict:
    return response if quota is None else quota.finish(ctx, response)


def _throttled() -> KafkaError:
    return KafkaError(ErrorCode.THROTTLING_QUOTA_EXCEEDED, THROTTLING_QUOTA_EXCEEDED_MESSAGE)


def _create_topics(broker, request, opening: list, denied: set[str],
                   quota: ControllerMutation | None) -> tuple[list[dict], list]:  # fmt: skip
    results = []
    writes: list = []
    seen: set[str] = set()
    for t in request.topics:
        result = _create_topic_result(t.name)
        if t.name in seen:
            result.update(
                error_code=ErrorCode.INVALID_REQUEST, error_message=f"Duplicate topic name {t.name}"
            )
            results.append(result)
            continue
        seen.add(t.name)
        if t.name in denied:
            result.update(error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                          error_message="Authorization failed.")  # fmt: skip
            results.append(result)
            continue
        configs = {c.name: c.value for c in t.configs}
        assignments = {a.partition_index: list(a.broker_ids) for a in t.assignments}
        try:
            if quota is not None and not request.validate_only:
                # Kafka records the quota once the topic is valid, just before creating it.
                broker.create_topic(t.name, t.num_partitions, t.replication_factor, configs,
                                    assignments or None, validate_only=True, open_logs=False)  # fmt: skip
                partitions = len(assignments) or (
                    t.num_partitions
                    if t.num_partitions > 0
                    else broker.config.get("num.partitions")
                )
                if not quota.admit(partitions):
                    raise _throttled()
            info = broker.create_topic(
                t.name, t.num_partitions, t.replication_factor, configs, assignments or None,
                validate_only=request.validate_only, open_logs=False,
            )  # fmt: skip
            if info is not None:
                opening.append((info, 0, result))
                result.update(topic_id=info.topic_id, num_partitions=len(info.partitions),
                              replication_factor=info.replication_factor)  # fmt: skip
                pending_write(broker, t.name, result, writes)
            else:
                result.update(
                    num_partitions=t.num_partitions if t.num_partitions > 0 else broker.config.get("num.partitions"),
                    replication_factor=t.replication_factor if t.replication_factor > 0 else broker.config.get("default.replication.factor"),
                )  # fmt: skip
        except KafkaError as e:
            result.update(error_code=e.code, error_message=e.message)
        results.append(result)
    return results, writes


def _create_topic_result(name: str, **fields) -> dict:
    return {"name": name, "error_code": ErrorCode.NONE, "error_message": None,
            "num_partitions": -1, "replication_factor": -1, "configs": None, **fields}  # fmt: skip


async def _after(broker, writes: list, response: dict, opening: list = ()) -> dict:
    """Answer once the new partitions' logs are open (a few per event-loop turn: other requests
    run meanwhile) and ZooKeeper holds the changes (a cluster writes them in the background)."""
    for info, first, result in opening:
        try:
            await broker.open_partition_logs(info, first)
        except KafkaError as e:  # e.g. KAFKA_STORAGE_ERROR creating a log
            result.update(error_code=e.code, error_message=e.message)
    await wait_committed(broker, writes)
    return response


@REGISTRY.register(ApiKey.DELETE_TOPICS, 1, 6)
def handle_delete_topics(ctx, request) -> dict:
    broker = ctx.broker
    if ctx.api_version >= 6:
        targets = [(t.name, t.topic_id) for t in request.topics]
    else:
        targets = [(name, None) for name in request.topic_names]
    responses: list = []
    quota = ControllerMutation.of(ctx, strict_from=5)
    try:
        with broker.metadata.batch():
            for name, topic_id in targets:
                refused = _delete_refused(ctx, name, topic_id)
                responses.append(refused or _delete_topic(broker, name, topic_id, quota))
    except KafkaError as e:  # the deletions are done in memory but not on disk yet
        return _finish(ctx, quota, {"throttle_time_ms": 0,
                                    "responses": _failed_write(responses, e)})  # fmt: skip
    return _finish(ctx, quota, {"throttle_time_ms": 0, "responses": responses})


def _failed_write(results: list[dict], e: KafkaError) -> list[dict]:
    """The metadata write at the end of a batch failed: every result that was a success is
    answered with its error instead."""
    for r in results:
        if r["error_code"] == ErrorCode.NONE:
            r.update(error_code=e.code, error_message=e.message)
    return results


def _delete_refused(ctx, name, topic_id) -> dict | None:
    """Kafka: DELETE on the topic; a topic named by id without DESCRIBE on it is answered
    without its name."""
    broker = ctx.broker
    if broker.authorizer is None:
        return None
    entry = {"name": name, "error_code": ErrorCode.TOPIC_AUTHORIZATION_FAILED,
             "error_message": "Authorization failed."}  # fmt: skip
    if name is None and topic_id is not None:
        info = broker.metadata.topic_by_id(topic_id)
        if info is None:
            return None  # UNKNOWN_TOPIC_ID, as without an authorizer
        entry["topic_id"] = topic_id
        if not allowed(ctx, Op.DESCRIBE, RT.TOPIC, info.name):
            return entry
        name = info.name
    if allowed(ctx, Op.DELETE, RT.TOPIC, name):
        return None
    entry["name"] = name
    return entry


def _delete_topic(broker, name, topic_id, quota: ControllerMutation | None = None) -> dict:
    entry = {"name": name, "error_code": ErrorCode.NONE, "error_message": None}
    try:
        if name is None and topic_id is not None:
            info = broker.metadata.topic_by_id(topic_id)
            if info is None:
                raise KafkaError(
                    ErrorCode.UNKNOWN_TOPIC_ID, "This server does not host this topic ID."
                )
            name = entry["name"] = info.name
        if quota is not None:
            # Kafka's deleteTopics: the topic's partition count, just before deleting it.
            existing = broker.metadata.topic(name)
            if existing is not None and not quota.admit(len(existing.partitions)):
                raise _throttled()
        info = broker.delete_topic(name)
        entry["topic_id"] = info.topic_id
    except KafkaError as e:
        entry.update(error_code=e.code, error_message=e.message)
    return entry


# --- CreatePartitions ---------------------------------------------------------------------------


def _new_partition_assignment(broker, info, count: int, assignments) -> list[list[int]]:
    """Replicas for partitions [current, count): as requested, or Kafka's round-robin."""
    current = len(info.partitions)
    if count < current:
        raise KafkaError(
            ErrorCode.INVALID_PARTITIONS,
            f"Topic currently has {current} partitions, which is higher than the requested {count}.",
        )
    if count == current:
        raise KafkaError(ErrorCode.INVALID_PARTITIONS, f"Topic already has {current} partitions.")
    if info.internal:
        raise KafkaError(
            ErrorCode.INVALID_PARTITIONS,
            f"Cannot increase the number of partitions of internal topic {info.name}.",
        )
    added = count - current
    rf = info.replication_factor
    if assignments is None:
        return broker.metadata.assign_replicas(count, rf, start=current)
    if len(assignments) != added:
        raise KafkaError(
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            f"Increasing the number of partitions by {added} but {len(assignments)} assignments "
            "provided.",
        )
    live = set(broker.metadata.live_broker_ids())
    out = []
    for i, a in enumerate(assignments):
        replicas = list(a.broker_ids)
        if len(replicas) != rf:
            raise KafkaError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"Inconsistent replication factor between partitions, partition 0 has {rf} while "
                f"partition {current + i} has replication factor {len(replicas)}.",
            )
        if len(set(replicas)) != len(replicas):
            raise KafkaError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"Duplicate brokers not allowed in replica assignment: {replicas} for partition "
                f"id {current + i}.",
            )
        unknown = [b for b in replicas if b not in live]
        if unknown:
            raise KafkaError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"Unknown broker(s) in replica assignment: {unknown}.",
            )
        out.append(replicas)
    return out


def _partitions_added(broker, topics) -> int:
    """Partitions a CreatePartitions request would add in all (the same bound as CreateTopics)."""
    total = 0
    for t in topics:
        info = broker.metadata.topic(t.name)
        if info is not None:  # unknown topics add nothing (they get UNKNOWN_TOPIC_OR_PARTITION)
            total += max(t.count - len(info.partitions), len(t.assignments or ()), 0)
    return total


def _create_partitions_result(name: str, **fields) -> dict:
    return {"name": name, "error_code": ErrorCode.NONE, "error_message": None, **fields}


@REGISTRY.register(ApiKey.CREATE_PARTITIONS, 0, 3)
def handle_create_partitions(ctx, request) -> dict:
    broker = ctx.broker
    if _partitions_added(broker, request.topics) > MAX_PARTITIONS_PER_REQUEST:
        results = _refuse_all(request.topics, _create_partitions_result)
        return {"throttle_time_ms": 0, "results": results}
    opening: list = []
    results: list = []
    denied: set[str] = set()
    if broker.authorizer is not None:  # Kafka: ALTER on each topic
        names = {t.name for t in request.topics}
        denied = names - filter_allowed(ctx, Op.ALTER, RT.TOPIC, names)
    quota = ControllerMutation.of(ctx, strict_from=3)
    try:
        with broker.metadata.batch():
            results, writes = _create_partitions(broker, request, opening, denied, quota)
    except KafkaError as e:
        return _finish(ctx, quota, {"throttle_time_ms": 0, "results": _failed_write(results, e)})
    response = _finish(ctx, quota, {"throttle_time_ms": 0, "results": results})
    return _after(broker, writes, response, opening) if writes or opening else response


def _create_partitions(broker, request, opening: list, denied: set[str],
                       quota: ControllerMutation | None) -> tuple[list[dict], list]:  # fmt: skip
    names = Counter(t.name for t in request.topics)
    results = []
    writes: list = []
    for t in request.topics:
        result = {"name": t.name, "error_code": ErrorCode.NONE, "error_message": None}
        try:
            if names[t.name] > 1:
                raise KafkaError(ErrorCode.INVALID_REQUEST, "Duplicate topic in request.")
            if t.name in denied:
                raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Authorization failed.")
            info = broker.metadata.topic(t.name)
            if info is None:
                raise KafkaError(
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{t.name}' does not exist."
                )
            assignment = _new_partition_assignment(broker, info, t.count, t.assignments)
            if not request.validate_only:
                if quota is not None and not quota.admit(len(assignment)):
                    raise _throttled()
                current = len(info.partitions)
                broker.metadata.add_partitions(t.name, assignment)
                opening.append((broker.metadata.topic(t.name), current, result))
                pending_write(broker, t.name, result, writes)
        except KafkaError as e:
            result.update(error_code=e.code, error_message=e.message)
        results.append(result)
    return results, writes


# --- DeleteRecords ------------------------------------------------------------------------------

HIGH_WATERMARK = -1  # DeleteRecords' "delete everything up to the high watermark"


def delete_records(partition, offset: int) -> int:
    """Move the log start offset up to `offset`; returns the new low watermark."""
    partition.check_leader()
    log = partition.log
    hw = log.high_watermark
    if offset == HIGH_WATERMARK:
        offset = hw
    if offset < 0 or offset > hw:
        raise KafkaError(
            ErrorCode.OFFSET_OUT_OF_RANGE,
            f"Cannot increment the log start offset to {offset} of partition "
            f"{partition.topic}-{partition.index} since it is larger than the high watermark {hw}",
        )
    log.maybe_increment_log_start_offset(offset)
    return log.log_start_offset


@REGISTRY.register(ApiKey.DELETE_RECORDS, 0, 2)
def handle_delete_records(ctx, request) -> dict:
    rm = ctx.broker.replica_manager
    topics = []
    deletable = None
    if ctx.broker.authorizer is not None:  # Kafka: DELETE on each topic
        deletable = filter_allowed(ctx, Op.DELETE, RT.TOPIC, {t.name for t in request.topics})
    for t in request.topics:
        partitions = []
        for p in t.partitions:
            entry = {"partition_index": p.partition_index, "low_watermark": -1,
                     "error_code": ErrorCode.NONE}  # fmt: skip
            if deletable is not None and t.name not in deletable:
                entry["error_code"] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
                partitions.append(entry)
                continue
            try:
                entry["low_watermark"] = delete_records(rm.get(t.name, p.partition_index), p.offset)
            except KafkaError as e:
                entry["error_code"] = e.code
            partitions.append(entry)
        topics.append({"name": t.name, "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}


# --- DescribeLogDirs ----------------------------------------------------------------------------


@REGISTRY.register(ApiKey.DESCRIBE_LOG_DIRS, 1, 4)
def handle_describe_log_dirs(ctx, request) -> dict:
    """Each log dir with the size of the partitions it holds (all, or those requested)."""
    broker = ctx.broker
    if not cluster_allowed(ctx, Op.DESCRIBE):  # Kafka: DESCRIBE on the cluster
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                "results": []}  # fmt: skip
    wanted = None
    if request.topics is not None:
        wanted = {(t.topic, p) for t in request.topics for p in t.partitions}
    by_dir: dict[str, dict[str, list[dict]]] = {d: {} for d in broker.log_manager.log_dirs}
    for (topic, index), p in sorted(broker.replica_manager.partitions.items()):
        if wanted is not None and (topic, index) not in wanted:
            continue
        log_dir = os.path.dirname(os.path.abspath(p.log.dir))
        by_dir.setdefault(log_dir, {}).setdefault(topic, []).append(
            {
                "partition_index": index,
                "partition_size": p.log.size,
                "offset_lag": 0,
                "is_future_key": False,
            }  # fmt: skip
        )
        move = broker.log_manager.moves.get((topic, index))
        if move is not None:  # the future replica in its destination dir (AlterReplicaLogDirs)
            by_dir.setdefault(move.dest, {}).setdefault(topic, []).append({
                "partition_index": index, "partition_size": move.future.size,
                "offset_lag": move.lag, "is_future_key": True,
            })  # fmt: skip
    results = []
    channel = broker.log_manager.failure_channel
    for log_dir, topics in by_dir.items():
        if channel.dir_of(log_dir).offline:  # as Kafka answers for an offline log dir
            results.append({"error_code": ErrorCode.KAFKA_STORAGE_ERROR, "log_dir": log_dir,
                            "topics": [], "total_bytes": -1, "usable_bytes": -1})  # fmt: skip
            continue
        total, usable = _disk_space(log_dir)
        results.append({
            "error_code": ErrorCode.NONE, "log_dir": log_dir,
            "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
            "total_bytes": total, "usable_bytes": usable,
        })  # fmt: skip
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "results": results}


@REGISTRY.register(ApiKey.ALTER_REPLICA_LOG_DIRS, 1, 2)
def handle_alter_replica_log_dirs(ctx, request) -> dict:
    """Move replicas between this broker's log dirs while they serve (storage/replica_move.py).
    Kafka's errors: LOG_DIR_NOT_FOUND for a path that isn't a log dir, KAFKA_STORAGE_ERROR for
    an offline one, the partition's own error when this broker holds no replica of it."""
    broker = ctx.broker
    lm = broker.log_manager
    dirs = {os.path.abspath(d): d for d in lm.log_dirs}
    results: dict[str, list[dict]] = {}
    authorized = cluster_allowed(ctx, Op.ALTER)  # Kafka: ALTER on the cluster
    for d in request.dirs:
        path = os.path.abspath(d.path)
        for t in d.topics:
            for index in t.partitions:
                code = ErrorCode.NONE
                try:
                    if not authorized:
                        raise KafkaError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
                    if path not in dirs:
                        raise KafkaError(ErrorCode.LOG_DIR_NOT_FOUND,
                                         f"Log dir {d.path} is not found in the config.")  # fmt: skip
                    if lm.failure_channel.dir_of(dirs[path]).offline:
                        raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR,
                                         f"Log dir {d.path} is offline")  # fmt: skip
                    lm.move(broker.replica_manager.get(t.name, index), dirs[path])
                except KafkaError as e:
                    code = e.code
                except OSError as e:  # creating the future log failed: that dir is offline now
                    logger.warning("replica_move_refused", topic=t.name, partition=index,
                                error=repr(e))  # fmt: skip
                    code = ErrorCode.KAFKA_STORAGE_ERROR
                results.setdefault(t.name, []).append(
                    {"partition_index": index, "error_code": code}
                )
    return {
        "throttle_time_ms": 0,
        "results": [{"topic_name": t, "partitions": ps} for t, ps in results.items()],
    }


def _disk_space(path: str) -> tuple[int, int]:
    try:
        st = os.statvfs(path)
    except OSError:
        return -1, -1
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

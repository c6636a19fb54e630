"""Topic administration: CreateTopics, DeleteTopics."""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError

from . import REGISTRY


@REGISTRY.register(ApiKey.CREATE_TOPICS, 2, 7)
def handle_create_topics(ctx, request) -> dict:
    broker = ctx.broker
    results = []
    seen: set[str] = set()
    for t in request.topics:
        result = {"name": t.name, "error_code": ErrorCode.NONE, "error_message": None,
                  "num_partitions": -1, "replication_factor": -1, "configs": None}  # fmt: skip
        if t.name in seen:
            result.update(
                error_code=ErrorCode.INVALID_REQUEST, error_message=f"Duplicate topic name {t.name}"
            )
            results.append(result)
            continue
        seen.add(t.name)
        configs = {c.name: c.value for c in t.configs}
        assignments = {a.partition_index: list(a.broker_ids) for a in t.assignments}
        try:
            info = broker.create_topic(
                t.name, t.num_partitions, t.replication_factor, configs, assignments or None,
                validate_only=request.validate_only,
            )  # fmt: skip
            if info is not None:
                result.update(topic_id=info.topic_id, num_partitions=len(info.partitions),
                              replication_factor=info.replication_factor)  # fmt: skip
            else:
                result.update(
                    num_partitions=t.num_partitions if t.num_partitions > 0 else broker.config.get("num.partitions"),
                    replication_factor=t.replication_factor if t.replication_factor > 0 else broker.config.get("default.replication.factor"),
                )  # fmt: skip
        except KafkaError as e:
            result.update(error_code=e.code, error_message=e.message)
        results.append(result)
    return {"throttle_time_ms": 0, "topics": results}


@REGISTRY.register(ApiKey.DELETE_TOPICS, 1, 6)
def handle_delete_topics(ctx, request) -> dict:
    broker = ctx.broker
    if ctx.api_version >= 6:
        targets = [(t.name, t.topic_id) for t in request.topics]
    else:
        targets = [(name, None) for name in request.topic_names]
    responses = []
    for name, topic_id in targets:
        entry = {"name": name, "error_code": ErrorCode.NONE, "error_message": None}
        try:
            if name is None and topic_id is not None:
                info = broker.metadata.topic_by_id(topic_id)
                if info is None:
                    raise KafkaError(
                        ErrorCode.UNKNOWN_TOPIC_ID, "This server does not host this topic ID."
                    )
                name = entry["name"] = info.name
            info = broker.delete_topic(name)
            entry["topic_id"] = info.topic_id
        except KafkaError as e:
            entry.update(error_code=e.code, error_message=e.message)
        responses.append(entry)
    return {"throttle_time_ms": 0, "responses": responses}

"""DescribeProducers (KIP-664): the active producers of partitions this broker leads, for
`kafka-transactions describe-producers`, `find-hanging` and `abort`."""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.checks import RT, Op, filter_allowed
from pykbroker.cluster.metadata import validate_topic_name

from . import REGISTRY


def _topic_error(ctx, name: str, readable: set[str] | None) -> KafkaError | None:
    """Kafka's order: a name that can't be a topic, no READ on it, a topic that isn't there."""
    try:
        validate_topic_name(name)
    except KafkaError as e:
        return e
    # With their messages: Kafka's ApiError(error) carries the error's default one.
    if readable is not None and name not in readable:
        return KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed.")
    if ctx.broker.metadata.topic(name) is None:
        return KafkaError(
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "This server does not host this topic-partition."
        )
    return None


def active_producers(partition) -> list[dict]:
    """Kafka's Partition.activeProducerState: every producer the partition's state holds."""
    return [
        {
            "producer_id": e.producer_id,
            "producer_epoch": e.epoch,
            "last_sequence": e.last_seq,
            "last_timestamp": e.last_timestamp,
            "coordinator_epoch": e.coordinator_epoch,
            "current_txn_start_offset": (
                -1 if e.current_txn_first_offset is None else e.current_txn_first_offset
            ),
        }
        for e in partition.log.producer_state.producers.values()
    ]


@REGISTRY.register(ApiKey.DESCRIBE_PRODUCERS, 0, 0)
def handle_describe_producers(ctx, request) -> dict:
    rm = ctx.broker.replica_manager
    readable = None
    if ctx.broker.authorizer is not None:  # Kafka: READ on each topic
        readable = filter_allowed(ctx, Op.READ, RT.TOPIC, {t.name for t in request.topics})
    topics = []
    for t in request.topics:
        topic_error = _topic_error(ctx, t.name, readable)
        partitions = []
        for index in t.partition_indexes:
            entry = {"partition_index": index, "error_code": ErrorCode.NONE,
                     "error_message": None, "active_producers": []}  # fmt: skip
            try:
                if topic_error is not None:
                    raise topic_error
                entry["active_producers"] = active_producers(rm.get_leader(t.name, index))
            except KafkaError as e:
                entry["error_code"] = e.code
                # Kafka gives a message only for the topic-level errors.
                entry["error_message"] = e.message if e is topic_error else None
            partitions.append(entry)
        topics.append({"name": t.name, "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}

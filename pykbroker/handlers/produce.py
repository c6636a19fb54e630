"""Produce: one batch per partition, appended as sent (base offset patched in place)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from protocol import compression
from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from protocol.hotpath import (
    ProducePartitionResult,
    ProduceRequestData,
    decode_produce_request,
    encode_produce_response,
)
from pykbroker.acl.authorizer import CLUSTER_NAME
from pykbroker.acl.checks import RT, Op, allowed, filter_allowed
from pykbroker.cluster.metadata import INTERNAL_TOPICS, validate_topic_name
from pykbroker.coordinator.transaction_coordinator import abortable_for
from pykbroker.server import CLOSE

from . import REGISTRY


def _topic_error(broker, name: str) -> KafkaError | None:
    """Why a topic can't take this produce (None: it exists, or was just auto-created)."""
    if name in INTERNAL_TOPICS:
        return KafkaError(
            ErrorCode.INVALID_TOPIC_EXCEPTION, f"Cannot append to internal topic {name}"
        )
    if broker.metadata.topic(name) is not None:
        return None
    try:
        validate_topic_name(name)
        broker.auto_create_topic(name)
    except KafkaError as e:
        return e
    return None


def _check_client_batch(records, version: int) -> None:
    """What clients may not write, judged from the batch attributes (as Kafka's ProduceRequest
    validation and LogValidator do); the log checks framing and CRC."""
    if len(records) <= rb.ATTRIBUTES_OFFSET + 1 or records[rb.MAGIC_OFFSET] != 2:
        return  # the log refuses it anyway
    attributes = records[rb.ATTRIBUTES_OFFSET + 1]  # the low byte of the int16
    if attributes & rb.CONTROL_MASK:
        raise KafkaError(
            ErrorCode.INVALID_RECORD, "Clients are not allowed to write control records"
        )
    if attributes & rb.COMPRESSION_MASK == compression.ZSTD and version < 7:
        raise KafkaError(
            ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
            f"Produce requests with version {version} are not allowed to use ZStandard compression",
        )


def _is_transactional(records) -> bool:
    return (
        records is not None
        and len(records) >= rb.HEADER_SIZE
        and records[rb.MAGIC_OFFSET] == 2
        and bool(records[rb.ATTRIBUTES_OFFSET + 1] & rb.TRANSACTIONAL_MASK)
    )


def _in_ongoing_txn(partition, header: rb.BatchHeader) -> bool:
    """The producer already has a transaction open in this partition with this epoch: the
    partition was verified when that transaction's first batch came (the common case)."""
    ps = partition.log.producer_state
    entry = ps.producers.get(header.producer_id)
    return (
        entry is not None
        and entry.epoch == header.producer_epoch
        and header.producer_id in ps.ongoing_txns
    )


def _verification_needed(broker, request) -> bool:
    return (
        request.transactional_id is not None
        and getattr(broker, "transaction_coordinator", None) is not None
        and broker.config.get("transaction.partition.verification.enable")
    )


def _new_in_txn(broker, request, denied: dict | None = None):
    """(topic-partition, batch header) of each transactional batch for a partition this broker
    leads (and the authorizer let through) whose producer has no transaction open there at
    this epoch: the ones to verify with, or (transactions v2) add to, the coordinator."""
    rm = broker.replica_manager
    for topic in request.topics:
        if denied and topic.name in denied:
            continue
        for p in topic.partitions:
            if not _is_transactional(p.records):
                continue
            part = rm.partitions.get((topic.name, p.index))
            if part is None or not part.is_leader:
                continue
            header = rb.read_header(p.records)
            if not _in_ongoing_txn(part, header):
                yield (topic.name, p.index), header


def _remote_verifications(broker, request) -> dict:
    """Partitions whose transactional batch must be checked with a coordinator on another
    broker: {(topic, partition): (producer id, epoch)}."""
    from .txn import verify_locally

    out = {}
    for tp, header in _new_in_txn(broker, request):
        found = verify_locally(broker, request.transactional_id, header.producer_id,
                               header.producer_epoch, {tp})  # fmt: skip
        if found is None:
            out[tp] = (header.producer_id, header.producer_epoch)
    return out


# Verification outcomes as a produce reports them (Kafka's ReplicaManager): retriable
# coordinator trouble becomes NOT_ENOUGH_REPLICAS, which every client retries.
_VERIFY_ERRORS = {
    ErrorCode.PRODUCER_FENCED: ErrorCode.INVALID_PRODUCER_EPOCH,
    ErrorCode.CONCURRENT_TRANSACTIONS: ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.NETWORK_EXCEPTION: ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS: ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.COORDINATOR_NOT_AVAILABLE: ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.NOT_COORDINATOR: ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.REQUEST_TIMED_OUT: ErrorCode.NOT_ENOUGH_REPLICAS,
}


def _check_txn_batch(
    broker, request, tp, partition, records, verified: dict | None, version: int
) -> None:
    """A transactional batch is accepted only for a partition added to its producer's ongoing
    transaction (KIP-890's verification; Kafka's transaction.partition.verification.enable).
    From v12 (transactions v2) the partition was added for the producer just before."""
    tv2 = version >= 12
    header = rb.read_header(records)
    if _in_ongoing_txn(partition, header):
        return
    if verified is not None and tp in verified:
        code = verified[tp]
    else:
        from .txn import verify_locally

        found = verify_locally(broker, request.transactional_id, header.producer_id,
                               header.producer_epoch, {tp})  # fmt: skip
        code = ErrorCode.NOT_COORDINATOR if found is None else found[tp]
    if code != ErrorCode.NONE:
        code = abortable_for(code, version >= 11)
        if not (tv2 and code == ErrorCode.CONCURRENT_TRANSACTIONS):
            # Kafka keeps CONCURRENT_TRANSACTIONS for v2 clients: common while the previous
            # transaction completes, and clearer to them than NOT_ENOUGH_REPLICAS.
            code = _VERIFY_ERRORS.get(code, code)
        message = (
            f"Partition {tp[0]}-{tp[1]} was not added to the transaction"
            if code in (ErrorCode.INVALID_TXN_STATE, ErrorCode.TRANSACTION_ABORTABLE)
            else f"Unable to verify the partition has been added to the transaction ({ErrorCode(code).name})"
        )
        raise KafkaError(code, message)


def _unauthorized(ctx, request) -> dict[str, KafkaError]:
    """Topics this produce may not write, with their error (Kafka's handleProduceRequest: WRITE
    on the transactional id, else every partition fails; then WRITE on each topic)."""
    if request.transactional_id is not None and not allowed(
        ctx, Op.WRITE, RT.TRANSACTIONAL_ID, request.transactional_id
    ):
        error = KafkaError(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        return {t.name: error for t in request.topics}
    names = {t.name for t in request.topics if t.name is not None}  # None: an unknown id
    refused = names - filter_allowed(ctx, Op.WRITE, RT.TOPIC, names)
    out = (
        dict.fromkeys(refused, KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED)) if refused else {}
    )
    # Kafka never creates a topic on Produce; where pykbroker does (auto.create.topics.enable),
    # it takes what Metadata's auto-creation takes: CREATE on the cluster or the topic.
    metadata = ctx.broker.metadata
    for name in names - refused:
        if metadata.topic(name) is None and not (
            allowed(ctx, Op.CREATE, RT.CLUSTER, CLUSTER_NAME)
            or allowed(ctx, Op.CREATE, RT.TOPIC, name)
        ):
            out[name] = KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                   "This server does not host this topic-partition.")  # fmt: skip
    return out


@REGISTRY.register(ApiKey.PRODUCE, 3, 13, decoder=decode_produce_request)
def handle_produce(ctx, request: ProduceRequestData):
    if ctx.api_version >= 13:
        by_id = ctx.broker.metadata.topic_by_id
        for topic in request.topics:  # None: UNKNOWN_TOPIC_ID (no auto-creation by id)
            topic.name = (info := by_id(topic.topic_id)) and info.name
    denied = _unauthorized(ctx, request) if ctx.broker.authorizer is not None else None
    if denied and len(denied) == len({t.name for t in request.topics}):
        return _produce(ctx, request, None, denied)  # nothing to verify
    if ctx.api_version >= 12 and request.transactional_id is not None:
        # v12 is transactions v2 (KIP-890 part 2): the producer sends no AddPartitionsToTxn,
        # the leader adds each partition new to the transaction (verification setting or not).
        pending = _partitions_to_add(ctx.broker, request, denied)
        if pending:
            return _add_then_produce(ctx, request, pending, denied)
        return _produce(ctx, request, {}, denied)
    if _verification_needed(ctx.broker, request):
        remote = _remote_verifications(ctx.broker, request)
        if remote:
            return _verify_then_produce(ctx, request, remote, denied)
        return _produce(ctx, request, {}, denied)
    return _produce(ctx, request, None, denied)


def _partitions_to_add(broker, request, denied: dict | None) -> dict:
    """Transactions v2: {(topic, partition): (producer id, epoch)} to add for the producer."""
    if getattr(broker, "transaction_coordinator", None) is None:
        return {}
    return {tp: (h.producer_id, h.producer_epoch) for tp, h in _new_in_txn(broker, request, denied)}


async def _add_then_produce(ctx, request, pending: dict, denied: dict | None):
    from .txn import add_to_transaction

    added = {}
    by_producer: dict[tuple[int, int], set] = {}
    for tp, producer in pending.items():
        by_producer.setdefault(producer, set()).add(tp)
    for (pid, epoch), tps in by_producer.items():
        added.update(
            await add_to_transaction(ctx.broker, request.transactional_id, pid, epoch, tps)
        )
    result = _produce(ctx, request, added, denied)
    if isinstance(result, Awaitable):
        result = await result
    return result


async def _verify_then_produce(ctx, request, remote: dict, denied: dict | None):
    txn = ctx.broker.transaction_coordinator
    verified = {}
    by_producer: dict[tuple[int, int], set] = {}
    for tp, producer in remote.items():
        by_producer.setdefault(producer, set()).add(tp)
    for (pid, epoch), tps in by_producer.items():
        verified.update(await txn.verify_remote(request.transactional_id, pid, epoch, tps))
    result = _produce(ctx, request, verified, denied)
    if isinstance(result, Awaitable):
        result = await result
    return result


def _produce(ctx, request: ProduceRequestData, verified: dict | None, denied: dict | None = None):
    """verified: None without verification, else remote verification (from v12: adding)
    results by partition; denied: topics refused by the authorizer, with their error."""
    broker = ctx.broker
    rm = broker.replica_manager
    metrics = broker.metrics
    acks = request.acks
    if (
        request.transactional_id is not None
        and getattr(broker, "transaction_coordinator", None) is None
    ):
        bad_acks = KafkaError(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    elif acks not in (0, 1, -1):
        bad_acks = KafkaError(ErrorCode.INVALID_REQUIRED_ACKS)
    else:
        bad_acks = None
    responses = []
    failed = False
    waiting: list[
        tuple[object, int, dict]
    ] = []  # acks=all: (partition, offset the HW must pass, entry)
    by_id = ctx.api_version >= 13
    for topic in request.topics:
        if bad_acks is not None:
            topic_error = bad_acks
        elif topic.name is None:
            topic_error = KafkaError(ErrorCode.UNKNOWN_TOPIC_ID)
        elif denied and topic.name in denied:
            topic_error = denied[topic.name]
        else:
            topic_error = _topic_error(broker, topic.name)
        entries = []
        for p in topic.partitions:
            entry = ProducePartitionResult(p.index)
            try:
                if topic_error is not None:
                    raise topic_error
                if p.records is None:
                    raise KafkaError(ErrorCode.INVALID_RECORD, "null records")
                _check_client_batch(p.records, ctx.api_version)
                partition = rm.get(topic.name, p.index)
                if by_id and partition.log.topic_id not in (None, topic.topic_id):
                    raise KafkaError(ErrorCode.INCONSISTENT_TOPIC_ID)
                if request.transactional_id is None and _is_transactional(p.records):
                    raise KafkaError(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                if verified is not None and _is_transactional(p.records):
                    partition.check_leader()
                    _check_txn_batch(broker, request, (topic.name, p.index), partition,
                                     p.records, verified, ctx.api_version)  # fmt: skip
                info = partition.append_as_leader(p.records, acks)
                entry.base_offset = info.first_offset
                entry.log_append_time_ms = info.log_append_time
                entry.log_start_offset = info.log_start_offset
                if not info.duplicate:
                    metrics.record_produce(topic.name, len(p.records), info.record_count)
                if acks == -1 and partition.log.high_watermark <= info.last_offset:
                    waiting.append((partition, info.last_offset + 1, entry))
            except KafkaError as e:
                failed = True
                entry.error_code = e.code
                entry.error_message = e.message
                if isinstance(e, rb.RecordValidationError):
                    entry.record_errors = e.record_errors
                    entry.log_start_offset = e.log_start_offset
            entries.append(entry)
        responses.append((topic.topic_id if by_id else topic.name, entries))
    quotas = broker.quotas
    throttle = 0
    if quotas.produce.enabled or ctx.started:
        if waiting:  # recorded when the replicas answer, as Kafka's response callback does
            return _await_replication(
                waiting, request.timeout_ms, ctx.header.api_version, ctx.header.correlation_id,
                responses, metrics, ctx, acks,
            )  # fmt: skip
        throttle = quotas.produce_throttle_ms(ctx, acks)
    if acks == 0:
        # No response is sent; on error Kafka closes the connection so the client notices.
        if failed:
            errors = sorted({ErrorCode(e.error_code).name for _, entries in responses
                             for e in entries if e.error_code})  # fmt: skip
            ctx.connection.abort("acks_zero_produce_failed", errors=errors,
                                 client_id=ctx.header.client_id)  # fmt: skip
            return CLOSE
        return None
    header = ctx.header
    if waiting:
        return _await_replication(
            waiting, request.timeout_ms, header.api_version, header.correlation_id, responses,
            metrics,
        )  # fmt: skip
    return encode_produce_response(header.api_version, header.correlation_id, responses, throttle)


async def _await_replication(
    waiting,
    timeout_ms: int,
    version: int,
    correlation_id: int,
    responses,
    metrics,
    ctx=None,
    acks: int = -1,
) -> bytes:
    """acks=all: answer once every partition's HW has passed its batch, or time out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_ms / 1000
    metrics.produce_purgatory += 1
    try:
        for partition, offset, entry in waiting:
            entry.error_code = await partition.wait_for_replication(offset, deadline)
    finally:
        metrics.produce_purgatory -= 1
    throttle = 0
    if ctx is not None:  # handler time excludes the wait for replicas (ctx.handler_seconds)
        throttle = ctx.broker.quotas.produce_throttle_ms(ctx, acks)
    return encode_produce_response(version, correlation_id, responses, throttle)

"""Transactions: InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit,
WriteTxnMarkers, DescribeTransactions, ListTransactions. The state machine is in
pykbroker/coordinator/transaction_coordinator.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.checks import RT, Op, allowed, allowed_on_any, cluster_allowed, filter_allowed
from pykbroker.coordinator.group import now_ms
from pykbroker.coordinator.transaction_coordinator import abortable_for, offsets_partition
from pykbroker.coordinator.txn_markers import write_markers

from . import REGISTRY
from .offsets import partition_exists, requested_offsets, unauthorized_commit


def _coordinator(ctx):
    txn = getattr(ctx.broker, "transaction_coordinator", None)
    return txn if txn is not None and txn.active else None


def _fenced(code: int, version: int, first_version: int) -> int:
    """PRODUCER_FENCED is newer than some request versions: older clients get
    INVALID_PRODUCER_EPOCH, which they handle the same way (KIP-588)."""
    if code == ErrorCode.PRODUCER_FENCED and version < first_version:
        return ErrorCode.INVALID_PRODUCER_EPOCH
    return code


# --- InitProducerId -------------------------------------------------------------------------


@REGISTRY.register(ApiKey.INIT_PRODUCER_ID, 0, 5)
def handle_init_producer_id(ctx, request):
    broker = ctx.broker
    if broker.authorizer is not None:
        error = _init_unauthorized(ctx, request.transactional_id)
        if error:
            return {"throttle_time_ms": 0, "error_code": error, "producer_id": -1,
                    "producer_epoch": -1}  # fmt: skip
    if request.transactional_id is None:
        # An idempotent producer always gets a fresh id, epoch 0 (as Kafka's coordinator does).
        try:
            pid = broker.metadata.next_producer_id()
        except KafkaError as e:
            return {"throttle_time_ms": 0, "error_code": e.code, "producer_id": -1,
                    "producer_epoch": -1}  # fmt: skip
        return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "producer_id": pid,
                "producer_epoch": 0}  # fmt: skip
    txn = _coordinator(ctx)
    if txn is None:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.COORDINATOR_NOT_AVAILABLE,
                "producer_id": -1, "producer_epoch": -1}  # fmt: skip
    version = ctx.api_version
    expected = (request.producer_id, request.producer_epoch) if version >= 3 else (-1, -1)
    return _init(txn, request, expected, version)


def _init_unauthorized(ctx, txn_id: str | None) -> int:
    """Kafka: WRITE on the transactional id; an idempotent producer needs IDEMPOTENT_WRITE on
    the cluster or, since KIP-679, WRITE on any topic."""
    if txn_id is not None:
        if allowed(ctx, Op.WRITE, RT.TRANSACTIONAL_ID, txn_id):
            return ErrorCode.NONE
        return ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    if cluster_allowed(ctx, Op.IDEMPOTENT_WRITE) or allowed_on_any(ctx, Op.WRITE, RT.TOPIC):
        return ErrorCode.NONE
    return ErrorCode.CLUSTER_AUTHORIZATION_FAILED


def _txn_denied(ctx, txn_id: str) -> bool:
    return not allowed(ctx, Op.WRITE, RT.TRANSACTIONAL_ID, txn_id)


async def _init(txn, request, expected, version) -> dict:
    error, pid, epoch = await txn.init_producer_id(
        request.transactional_id, request.transaction_timeout_ms, *expected
    )
    return {"throttle_time_ms": 0, "error_code": _fenced(error, version, 4),
            "producer_id": pid, "producer_epoch": epoch}  # fmt: skip


# --- AddPartitionsToTxn -----------------------------------------------------------------------


def _topic_results(partitions: dict[tuple[str, int], int]) -> list[dict]:
    by_topic: dict[str, list[dict]] = {}
    for (topic, p), code in partitions.items():
        by_topic.setdefault(topic, []).append({"partition_index": p, "partition_error_code": code})
    return [{"name": t, "results_by_partition": ps} for t, ps in by_topic.items()]


async def _add_partitions(ctx, txn, txn_id, pid, epoch, topics, verify_only, client_tv=0) -> dict:
    """Errors per partition for one transaction (AddPartitionsToTxn, any version)."""
    broker = ctx.broker
    wanted = [(t.name, p) for t in topics for p in t.partitions]
    if broker.authorizer is not None and ctx.api_version <= 3:
        # Kafka: WRITE on the transactional id, then on each topic (the other partitions are
        # not attempted). v4+ comes from brokers, authorized as a whole (CLUSTER_ACTION).
        if _txn_denied(ctx, txn_id):
            return dict.fromkeys(wanted, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        writable = filter_allowed(ctx, Op.WRITE, RT.TOPIC, {t for t, _ in wanted})
        if len(writable) < len({t for t, _ in wanted}):
            return {tp: ErrorCode.OPERATION_NOT_ATTEMPTED if tp[0] in writable
                    else ErrorCode.TOPIC_AUTHORIZATION_FAILED for tp in wanted}  # fmt: skip
    unknown = {tp for tp in wanted if not partition_exists(broker, *tp)}
    if unknown:
        return {tp: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if tp in unknown
                else ErrorCode.OPERATION_NOT_ATTEMPTED for tp in wanted}  # fmt: skip
    if txn is None:
        return dict.fromkeys(wanted, ErrorCode.COORDINATOR_NOT_AVAILABLE)
    if verify_only:
        return txn.verify_partitions(txn_id, pid, epoch, set(wanted))
    error = await txn.add_partitions(txn_id, pid, epoch, set(wanted), client_tv)
    return dict.fromkeys(wanted, _fenced(error, ctx.api_version, 2))


@REGISTRY.register(ApiKey.ADD_PARTITIONS_TO_TXN, 0, 5)
async def handle_add_partitions_to_txn(ctx, request) -> dict:
    txn = _coordinator(ctx)
    if ctx.api_version <= 3:
        results = await _add_partitions(
            ctx, txn, request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch, request.v3_and_below_topics, False,
        )  # fmt: skip
        return {"throttle_time_ms": 0, "results_by_topic_v3_and_below": _topic_results(results)}
    if not cluster_allowed(ctx, Op.CLUSTER_ACTION):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                "results_by_transaction": []}  # fmt: skip
    out = []
    for t in request.transactions:
        # v5 without verify_only comes from the leader of a partition a transactions-v2
        # producer wrote to (Produce v12, TxnOffsetCommit v5): it adds the partition.
        client_tv = 2 if ctx.api_version >= 5 and not t.verify_only else 0
        results = await _add_partitions(
            ctx, txn, t.transactional_id, t.producer_id, t.producer_epoch, t.topics,
            t.verify_only, client_tv,
        )  # fmt: skip
        out.append({"transactional_id": t.transactional_id,
                    "topic_results": _topic_results(results)})  # fmt: skip
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "results_by_transaction": out}


# --- AddOffsetsToTxn --------------------------------------------------------------------------


@REGISTRY.register(ApiKey.ADD_OFFSETS_TO_TXN, 0, 4)
async def handle_add_offsets_to_txn(ctx, request) -> dict:
    txn = _coordinator(ctx)
    if _txn_denied(ctx, request.transactional_id):
        error = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif not allowed(ctx, Op.READ, RT.GROUP, request.group_id):
        error = ErrorCode.GROUP_AUTHORIZATION_FAILED
    elif txn is None or ctx.broker.group_coordinator is None:
        error = ErrorCode.COORDINATOR_NOT_AVAILABLE
    elif not request.group_id:
        error = ErrorCode.INVALID_GROUP_ID
    else:
        try:
            tp = offsets_partition(ctx.broker, request.group_id)
        except KafkaError:
            error = ErrorCode.COORDINATOR_NOT_AVAILABLE
        else:
            error = await txn.add_partitions(
                request.transactional_id, request.producer_id, request.producer_epoch, {tp}
            )
    return {"throttle_time_ms": 0, "error_code": _fenced(error, ctx.api_version, 2)}


# --- EndTxn -----------------------------------------------------------------------------------


@REGISTRY.register(ApiKey.END_TXN, 0, 5)
async def handle_end_txn(ctx, request) -> dict:
    """v5 is transactions v2 (KIP-890 part 2): the epoch is bumped on every commit and abort and
    the answer carries the producer id and epoch the client goes on with."""
    txn = _coordinator(ctx)
    version = ctx.api_version
    if _txn_denied(ctx, request.transactional_id):
        error, pid, epoch = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, -1, -1
    elif txn is None:
        error, pid, epoch = ErrorCode.COORDINATOR_NOT_AVAILABLE, -1, -1
    else:
        error, pid, epoch = await txn.end_txn(
            request.transactional_id, request.producer_id, request.producer_epoch,
            bool(request.committed), tv2=version >= 5,
        )  # fmt: skip
    return {"throttle_time_ms": 0, "error_code": _fenced(error, version, 2),
            "producer_id": pid, "producer_epoch": epoch}  # fmt: skip


# --- TxnOffsetCommit --------------------------------------------------------------------------


@REGISTRY.register(ApiKey.TXN_OFFSET_COMMIT, 0, 5)
async def handle_txn_offset_commit(ctx, request) -> dict:
    broker = ctx.broker
    v = ctx.api_version
    now = now_ms()
    refused = None
    if broker.authorizer is not None:  # Kafka: WRITE on the transactional id, then as OffsetCommit
        if _txn_denied(ctx, request.transactional_id):
            refused = {(t.name, p.partition_index): ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                       for t in request.topics for p in t.partitions}  # fmt: skip
        else:
            refused = unauthorized_commit(ctx, request.group_id, request.topics)
    order, errors, offsets = requested_offsets(broker, request.topics, v >= 2, now, -1, refused)
    gc = broker.group_coordinator
    if offsets:
        if gc is None or not gc.active:
            errors.update(dict.fromkeys(offsets, ErrorCode.COORDINATOR_NOT_AVAILABLE))
        else:
            error = abortable_for(await _verify_offsets_partition(ctx, request), v >= 4)
            if error:
                errors.update(dict.fromkeys(offsets, error))
            else:
                result = gc.commit_txn_offsets(
                    request.group_id, request.producer_id, request.producer_epoch,
                    request.member_id if v >= 3 else "",
                    request.group_instance_id if v >= 3 else None,
                    request.generation_id if v >= 3 else -1, offsets,
                )  # fmt: skip
                if isinstance(result, Awaitable):
                    result = await result
                errors.update(result)
    topics: dict[str, list[dict]] = {}
    for topic, partition in order:
        code = errors[(topic, partition)]
        if code == ErrorCode.PRODUCER_FENCED:
            code = ErrorCode.INVALID_PRODUCER_EPOCH
        topics.setdefault(topic, []).append({"partition_index": partition, "error_code": code})
    return {
        "throttle_time_ms": 0,
        "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
    }


async def _verify_offsets_partition(ctx, request) -> int:
    """The group's __consumer_offsets partition must be in the producer's transaction
    (AddOffsetsToTxn), checked with its coordinator like a produce (KIP-890). From v5
    (transactions v2) the client sends no AddOffsetsToTxn: the partition is added here."""
    broker = ctx.broker
    tv2 = ctx.api_version >= 5
    if not tv2 and not broker.config.get("transaction.partition.verification.enable"):
        return ErrorCode.NONE
    txn = getattr(broker, "transaction_coordinator", None)
    if txn is None or not request.group_id:
        return ErrorCode.NONE  # the group coordinator answers for a bad group id
    try:
        tp = offsets_partition(broker, request.group_id)
    except KafkaError:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    part = broker.replica_manager.partitions.get(tp)
    ps = part.log.producer_state if part is not None else None
    entry = ps.producers.get(request.producer_id) if ps is not None else None
    if (
        entry is not None
        and entry.epoch == request.producer_epoch
        and request.producer_id in ps.ongoing_txns
    ):
        return ErrorCode.NONE  # already writing in this transaction here
    if tv2:
        results = await add_to_transaction(
            broker, request.transactional_id, request.producer_id, request.producer_epoch, {tp}
        )
        return results[tp]
    results = await verify_transaction(
        broker, request.transactional_id, request.producer_id, request.producer_epoch, {tp}
    )
    return results[tp]


# --- verification of transactional writes ----------------------------------------------------


def verify_locally(broker, txn_id, producer_id, producer_epoch, partitions) -> dict | None:
    """Errors per partition if this broker coordinates `txn_id`, else None (ask its coordinator)."""
    txn = getattr(broker, "transaction_coordinator", None)
    if txn is None:
        return dict.fromkeys(partitions, ErrorCode.COORDINATOR_NOT_AVAILABLE)
    if txn.coordinator_error(txn_id) == ErrorCode.NOT_COORDINATOR:
        return None
    return txn.verify_partitions(txn_id, producer_id, producer_epoch, partitions)


async def add_to_transaction(broker, txn_id, producer_id, producer_epoch, partitions) -> dict:
    """Transactions v2 (Produce v12, TxnOffsetCommit v5): add the partitions to the producer's
    transaction on its behalf. CONCURRENT_TRANSACTIONS (the previous transaction's markers are
    still being written) is retried every add.partitions.to.txn.retry.backoff.ms for up to
    add.partitions.to.txn.retry.backoff.max.ms, as Kafka's ReplicaManager does, then answered."""
    config = broker.config
    loop = asyncio.get_running_loop()
    backoff = config.get("add.partitions.to.txn.retry.backoff.ms") / 1000
    limit = min(config.get("add.partitions.to.txn.retry.backoff.max.ms"),
                config.get("request.timeout.ms"))  # fmt: skip
    deadline = loop.time() + limit / 1000
    txn = getattr(broker, "transaction_coordinator", None)
    while True:
        if txn is None:
            return dict.fromkeys(partitions, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if txn.coordinator_error(txn_id) == ErrorCode.NOT_COORDINATOR:
            results = await txn.add_remote(txn_id, producer_id, producer_epoch, partitions)
        else:
            error = await txn.add_partitions(txn_id, producer_id, producer_epoch, partitions, 2)
            results = dict.fromkeys(partitions, error)
        retry = ErrorCode.CONCURRENT_TRANSACTIONS in results.values()
        if not retry or loop.time() + backoff > deadline:
            return results
        await asyncio.sleep(backoff)


async def verify_transaction(broker, txn_id, producer_id, producer_epoch, partitions) -> dict:
    found = verify_locally(broker, txn_id, producer_id, producer_epoch, partitions)
    if found is None:
        found = await broker.transaction_coordinator.verify_remote(
            txn_id, producer_id, producer_epoch, partitions
        )
    return found


# --- WriteTxnMarkers (coordinator to partition leader) ----------------------------------------


@REGISTRY.register(ApiKey.WRITE_TXN_MARKERS, 1, 1)
async def handle_write_txn_markers(ctx, request) -> dict:
    out = []
    permitted = cluster_allowed(ctx, Op.CLUSTER_ACTION)  # Kafka: brokers only
    for marker in request.markers:
        tps = [(t.name, p) for t in marker.topics for p in t.partition_indexes]
        if not permitted:
            results = dict.fromkeys(tps, ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
        else:
            results = write_markers(
            ctx.broker, marker.producer_id, marker.producer_epoch, bool(marker.transaction_result),
                marker.coordinator_epoch, tps,
            )  # fmt: skip
        if isinstance(results, Awaitable):
            results = await results
        by_topic: dict[str, list[dict]] = {}
        for (topic, p), code in results.items():
            by_topic.setdefault(topic, []).append({"partition_index": p, "error_code": code})
        out.append({
            "producer_id": marker.producer_id,
            "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
        })  # fmt: skip
    return {"markers": out}


# --- DescribeTransactions / ListTransactions --------------------------------------------------


@REGISTRY.register(ApiKey.DESCRIBE_TRANSACTIONS, 0, 0)
def handle_describe_transactions(ctx, request) -> dict:
    txn = _coordinator(ctx)
    states = []
    for txn_id in request.transactional_ids:
        denied = ctx.broker.authorizer is not None and not allowed(
            ctx, Op.DESCRIBE, RT.TRANSACTIONAL_ID, txn_id
        )
        if txn is None or denied:
            code = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED if denied else (
                ErrorCode.COORDINATOR_NOT_AVAILABLE)  # fmt: skip
            states.append({"error_code": code,
                           "transactional_id": txn_id, "transaction_state": "",
                           "transaction_timeout_ms": 0, "transaction_start_time_ms": -1,
                           "producer_id": -1, "producer_epoch": -1, "topics": []})  # fmt: skip
        else:
            states.append(txn.describe(txn_id))
    return {"throttle_time_ms": 0, "transaction_states": states}


@REGISTRY.register(ApiKey.LIST_TRANSACTIONS, 0, 2)
def handle_list_transactions(ctx, request) -> dict:
    from pykbroker.coordinator.txn_log import STATE_BY_NAME

    txn = _coordinator(ctx)
    if txn is None:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.COORDINATOR_NOT_AVAILABLE,
                "unknown_state_filters": [], "transaction_states": []}  # fmt: skip
    wanted = set(request.state_filters or [])
    unknown = sorted(s for s in wanted if s not in STATE_BY_NAME)
    duration = request.duration_filter if ctx.api_version >= 1 else -1
    pattern = request.transactional_id_pattern if ctx.api_version >= 2 else None
    if pattern:  # v2 (KIP-1152): ids matching the regular expression as a whole
        try:
            matcher = re.compile(pattern).fullmatch
        except re.error:
            return {"throttle_time_ms": 0, "error_code": ErrorCode.INVALID_REGULAR_EXPRESSION,
                    "unknown_state_filters": [], "transaction_states": []}  # fmt: skip
    states = txn.list_transactions(wanted - set(unknown), set(request.producer_id_filters or []),
                                   duration)  # fmt: skip
    if unknown and wanted == set(unknown):
        states = []
    if pattern:
        states = [s for s in states if matcher(s["transactional_id"])]
    if ctx.broker.authorizer is not None:  # Kafka lists the ones the principal may describe
        states = [s for s in states
                  if allowed(ctx, Op.DESCRIBE, RT.TRANSACTIONAL_ID, s["transactional_id"])]  # fmt: skip
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE,
            "unknown_state_filters": unknown, "transaction_states": states}  # fmt: skip

"""Transaction markers: the COMMIT or ABORT control batch a coordinator writes to every partition
of a transaction (Kafka's WriteTxnMarkers), on the partition's leader.

A marker is a control batch (attributes: transactional + control) with the producer's id and
epoch and one record: key = (version int16 0, type int16: 0 abort, 1 commit), value =
EndTransactionMarker (version int16 0, coordinator epoch int32). It ends the producer's
transaction in that partition: the LSO moves past it, an ABORT enters the segment's
transaction index, and for `__consumer_offsets` the group coordinator makes the transaction's
offsets visible (commit) or drops them (abort).

Both the WriteTxnMarkers handler and a coordinator leading the partition itself use
`write_markers`; markers go with acks=-1 and count once replicated.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from protocol import records as rb
from protocol.errors import ErrorCode, KafkaError

from .group import now_ms
from .offsets_log import GROUP_METADATA_TOPIC

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

    from pykbroker.broker import Broker

TopicPartition = tuple[str, int]


def write_markers(
    broker: Broker, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
    partitions: Iterable[TopicPartition],
) -> dict[TopicPartition, int] | Awaitable[dict[TopicPartition, int]]:  # fmt: skip
    """Append a marker to each partition (this broker must lead it): an error code per
    partition, or an awaitable of them while some wait for replication."""
    rm = broker.replica_manager
    results: dict[TopicPartition, int] = {}
    waiting = []
    for tp in partitions:
        try:
            part = rm.get_leader(*tp)
            entry = part.log.producer_state.producers.get(producer_id)
            if entry is not None and coordinator_epoch < entry.coordinator_epoch:
                # A coordinator that lost its partition (Kafka's TRANSACTION_COORDINATOR_FENCED).
                raise KafkaError(ErrorCode.TRANSACTION_COORDINATOR_FENCED)
            batch = rb.build_marker(
                producer_id, producer_epoch, commit, coordinator_epoch, now_ms()
            )
            info = part.append_as_leader(memoryview(batch), required_acks=-1)
        except KafkaError as e:
            results[tp] = e.code
            continue
        status = part.replication_status(info.last_offset + 1)
        if status is None:
            waiting.append((tp, part, info.last_offset + 1))
        else:
            results[tp] = status
    if not waiting:
        _completed(broker, producer_id, commit, results)
        return results
    return _await_replication(broker, producer_id, commit, results, waiting)


async def _await_replication(broker, producer_id, commit, results, waiting):
    deadline = asyncio.get_running_loop().time() + broker.config.get("request.timeout.ms") / 1000
    for tp, part, offset in waiting:
        results[tp] = await part.wait_for_replication(offset, deadline)
    _completed(broker, producer_id, commit, results)
    return results


def _completed(broker, producer_id: int, commit: bool, results: dict) -> None:
    """Markers written to __consumer_offsets end the producer's transactional offset commits."""
    gc = broker.group_coordinator
    if gc is None:
        return
    for (topic, index), code in results.items():
        if topic == GROUP_METADATA_TOPIC and code == ErrorCode.NONE:
            gc.complete_txn_offsets(producer_id, index, commit)

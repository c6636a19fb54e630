"""InitProducerId (idempotent producers; transactional ids once the transaction coordinator exists)."""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode

from . import REGISTRY


@REGISTRY.register(ApiKey.INIT_PRODUCER_ID, 0, 4)
def handle_init_producer_id(ctx, request) -> dict:
    broker = ctx.broker
    if request.transactional_id is not None:
        txn = getattr(broker, "transaction_coordinator", None)
        if txn is None:
            return {"throttle_time_ms": 0, "error_code": ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    "producer_id": -1, "producer_epoch": -1}  # fmt: skip
        return txn.handle_init_producer_id(ctx, request)
    # An idempotent producer always gets a fresh id, epoch 0 (as Kafka's coordinator does).
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE,
            "producer_id": broker.metadata.next_producer_id(), "producer_epoch": 0}  # fmt: skip

"""producer.id.expiration.ms / producer.id.expiration.check.interval.ms: a partition forgets a
producer whose last batch's timestamp is older than the expiration (Kafka's
removeExpiredProducers), unless it has a transaction open there. A forgotten producer's next
batch is taken with any sequence number, as from a new producer (Kafka >= 2.5, KIP-360; older
brokers answered UNKNOWN_PRODUCER_ID), so a retry of a batch from before is appended again.

Expiry is driven by the batches' own timestamps, as in Kafka: batches stamped just under the
expiration in the past expire at the next check, so nothing here waits long.
"""

from __future__ import annotations

import time

from helpers import RawClient
from storage_helpers import broker_log, wait_for
from wire import init_producer_id, partition_response, produce_body, values_batch

from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from pykbroker.storage.producer_state import ProducerStateManager

EXPIRATION_MS = 60_000
FAST_CHECKS = {"producer.id.expiration.ms": str(EXPIRATION_MS),
               "producer.id.expiration.check.interval.ms": "50"}  # fmt: skip


def now_ms() -> int:
    return int(time.time() * 1000)


def send(client, topic: str, pid: int, seq: int, ts: int, value: bytes = b"v"):
    batch = values_batch([value], timestamp=ts, producer_id=pid, producer_epoch=0,
                         base_sequence=seq)  # fmt: skip
    return partition_response(client.request(ApiKey.PRODUCE, 9, produce_body(topic, bytes(batch))))


def known_producers(broker, topic: str) -> set[int]:
    lg = broker_log(broker, topic)
    return broker.call(lambda: set(lg.producer_state.producers))


def test_expired_producer_is_forgotten_and_its_next_write_taken(make_broker):
    broker = make_broker(FAST_CHECKS)
    c = RawClient(broker.port)
    pid, _ = init_producer_id(c)
    assert send(c, "t", pid, 0, now_ms()).error_code == 0
    # Known: a gap is refused, a retry is answered with the original offset.
    assert send(c, "t", pid, 5, now_ms()).error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    old = now_ms() - EXPIRATION_MS + 3_000  # expires about three seconds from now
    r = send(c, "t", pid, 1, old, b"retried")
    assert (r.error_code, r.base_offset) == (0, 1)
    assert send(c, "t", pid, 1, old, b"retried").base_offset == 1  # deduplicated
    assert pid in known_producers(broker, "t")
    wait_for(lambda: pid not in known_producers(broker, "t"), what="producer expiry")
    # Forgotten: the same retry is a new batch now, appended again.
    r = send(c, "t", pid, 1, now_ms(), b"retried")
    assert (r.error_code, r.base_offset) == (0, 2)
    assert send(c, "t", pid, 9, now_ms()).error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    c.close()


def test_producer_state_does_not_grow_without_bound(make_broker):
    broker = make_broker(FAST_CHECKS)
    c = RawClient(broker.port)
    old = now_ms() - EXPIRATION_MS + 500
    for pid in range(1000, 1300):
        assert send(c, "many", pid, 0, old).error_code == 0
    wait_for(lambda: not known_producers(broker, "many"), what="all 300 producers expired")
    assert send(c, "many", 5000, 0, now_ms()).error_code == 0
    assert known_producers(broker, "many") == {5000}
    c.close()


def _batch_header(pid: int, ts: int, offset: int, *, transactional=False, control=False):
    recs = [rb.Record(0, ts, None, b"x")]
    if control:
        h = rb.read_header(rb.build_marker(pid, 0, True, 0, ts))
    else:
        h = rb.read_header(rb.build_batch(recs, producer_id=pid, producer_epoch=0,
                                          base_sequence=0, transactional=transactional))  # fmt: skip
    h.base_offset = offset
    return h


def test_open_transactions_keep_their_producer_and_snapshots_drop_expired_ones(tmp_path):
    psm = ProducerStateManager(str(tmp_path))
    long_ago = 1_000
    psm.update(_batch_header(1, long_ago, 0))  # idempotent, idle since long ago
    psm.update(_batch_header(2, long_ago, 1, transactional=True))  # transaction still open
    psm.update(_batch_header(3, now_ms(), 2))  # active
    assert psm.remove_expired(now_ms(), EXPIRATION_MS) == 1
    assert set(psm.producers) == {2, 3}
    psm.update(_batch_header(2, long_ago, 3, control=True))  # its transaction ends
    assert psm.remove_expired(now_ms(), EXPIRATION_MS) == 1
    assert set(psm.producers) == {3}
    psm.write_snapshot(4)
    reloaded = ProducerStateManager(str(tmp_path))
    assert reloaded.load_snapshot(4) == 4 and set(reloaded.producers) == {3}
    # Exactly at the expiration counts as expired (Kafka's >=).
    assert reloaded.remove_expired(reloaded.producers[3].last_timestamp + EXPIRATION_MS,
                                   EXPIRATION_MS) == 1  # fmt: skip

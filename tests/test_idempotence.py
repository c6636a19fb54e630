"""Idempotent producers: retried batches are appended exactly once, state survives restarts.

The end-to-end tests put a CuttingProxy between each client and the broker: it forwards some
produce requests, lets the broker append them, then drops their responses and the connection,
so the client retries batches the broker already has. The log must hold every record once, in
the order sent.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from helpers import BrokerProcess, RawClient
from wire import (
    CuttingProxy,
    init_producer_id,
    partition_response,
    produce_body,
    read_log_records,
    values_batch,
)

from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.config import BrokerConfig, LogConfig
from pykbroker.storage.log import Log
from pykbroker.storage.producer_state import ProducerStateManager

N = 120
CUT_AT = {3, 8}


@pytest.fixture
def proxied_broker(make_broker):
    proxy = CuttingProxy(CUT_AT)
    broker = make_broker({"advertised.listeners": f"PLAINTEXT://127.0.0.1:{proxy.port}"})
    proxy.upstream_port = broker.port
    yield proxy, broker
    proxy.close()


def _values() -> list[bytes]:
    return [f"m-{i:04d}".encode() for i in range(N)]


def _assert_exactly_once(broker, proxy, topic: str) -> None:
    assert proxy.cuts == len(CUT_AT), f"only {proxy.cuts} cuts in {proxy.produce_count} produces"
    assert proxy.errors == {}  # retried duplicates were answered as successes
    records = read_log_records(os.path.join(broker.data_dir, f"{topic}-0"))
    assert [r.value for r in records] == _values()
    assert [r.offset for r in records] == list(range(N))


def test_kafka_python_default_producer_retries_exactly_once(proxied_broker):
    from kafka import KafkaProducer

    proxy, broker = proxied_broker
    producer = KafkaProducer(
        bootstrap_servers=f"127.0.0.1:{proxy.port}", batch_size=64, linger_ms=2,
        retry_backoff_ms=20, reconnect_backoff_ms=20,
    )  # fmt: skip
    assert producer.config["enable_idempotence"]  # kafka-python 3's default
    futures = [producer.send("idem-kp", value=v) for v in _values()]
    producer.flush(timeout=60)
    offsets = [f.get(timeout=10).offset for f in futures]
    producer.close()
    assert offsets == list(range(N))
    _assert_exactly_once(broker, proxy, "idem-kp")


def test_confluent_idempotent_producer_retries_exactly_once(proxied_broker):
    from confluent_kafka import Producer

    proxy, broker = proxied_broker
    offsets: dict[bytes, int] = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            offsets[msg.value()] = msg.offset()

    producer = Producer(
        {"bootstrap.servers": f"127.0.0.1:{proxy.port}", "enable.idempotence": True,
         "linger.ms": 2, "batch.num.messages": 4, "reconnect.backoff.ms": 20,
         "retry.backoff.ms": 20, "broker.address.family": "v4"}
    )  # fmt: skip
    for v in _values():
        producer.produce("idem-ck", value=v, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors
    assert [offsets[v] for v in _values()] == list(range(N))
    _assert_exactly_once(broker, proxy, "idem-ck")


def test_confluent_idempotent_producer_recovers_from_a_sequence_gap(make_broker):
    """A produce request lost on the way in: the broker refuses the next one (a sequence gap)
    with OUT_OF_ORDER_SEQUENCE_NUMBER, the client resends both, nothing is lost or doubled."""
    from confluent_kafka import Producer

    proxy = CuttingProxy(set(), drop_at={5, 20})
    broker = make_broker({"advertised.listeners": f"PLAINTEXT://127.0.0.1:{proxy.port}"})
    proxy.upstream_port = broker.port
    errors = []
    producer = Producer(
        {"bootstrap.servers": f"127.0.0.1:{proxy.port}", "enable.idempotence": True,
         "linger.ms": 2, "batch.num.messages": 4, "reconnect.backoff.ms": 20,
         "retry.backoff.ms": 20, "request.timeout.ms": 5000, "broker.address.family": "v4"}
    )  # fmt: skip
    try:
        for v in _values():
            producer.produce("idem-gap", value=v, on_delivery=lambda e, _m: e and errors.append(e))
            producer.poll(0)
        assert producer.flush(60) == 0
    finally:
        proxy.close()
    assert not errors and proxy.drops == 2
    assert proxy.errors == {ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER: 2}
    records = read_log_records(os.path.join(broker.data_dir, "idem-gap-0"))
    assert [r.value for r in records] == _values()


def test_aiokafka_idempotent_producer_retries_exactly_once(proxied_broker):
    from aiokafka import AIOKafkaProducer

    proxy, broker = proxied_broker

    async def produce() -> list[int]:
        producer = AIOKafkaProducer(
            bootstrap_servers=f"127.0.0.1:{proxy.port}", enable_idempotence=True,
            linger_ms=2, max_batch_size=64, retry_backoff_ms=20,
        )  # fmt: skip
        await producer.start()
        try:
            futures = [await producer.send("idem-aio", value=v) for v in _values()]
            return [(await f).offset for f in futures]
        finally:
            await producer.stop()

    assert asyncio.run(produce()) == list(range(N))
    _assert_exactly_once(broker, proxy, "idem-aio")


# --- ProducerStateManager ----------------------------------------------------------------------


def _header(pid: int, epoch: int, seq: int, count: int = 1, base_offset: int = 0):
    batch = values_batch([b"x"] * count, producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    header = rb.read_header(batch)
    header.base_offset = base_offset
    return header


def test_producer_state_validates_epoch_and_sequence(tmp_path):
    psm = ProducerStateManager(str(tmp_path))
    offset = 0
    for seq in range(0, 12, 2):  # six batches of two records
        h = _header(7, 3, seq, count=2, base_offset=offset)
        assert psm.check(h) is None
        psm.update(h)
        offset += 2
    # A retry of one of the last five batches is answered with its original offsets.
    dup = psm.check(_header(7, 3, 6, count=2))
    assert (dup.first_offset, dup.last_offset) == (6, 7)
    dup = psm.check(_header(7, 3, 10, count=2))
    assert (dup.first_offset, dup.last_offset) == (10, 11)
    # The sixth-newest batch has been forgotten: it is out of order now.
    with pytest.raises(KafkaError) as e:
        psm.check(_header(7, 3, 0, count=2))
    assert e.value.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    # A gap.
    with pytest.raises(KafkaError) as e:
        psm.check(_header(7, 3, 13))
    assert e.value.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    # The next sequence is fine.
    assert psm.check(_header(7, 3, 12)) is None
    # A stale epoch.
    with pytest.raises(KafkaError) as e:
        psm.check(_header(7, 2, 12))
    assert e.value.code == ErrorCode.INVALID_PRODUCER_EPOCH
    # A new epoch must start at sequence 0.
    with pytest.raises(KafkaError) as e:
        psm.check(_header(7, 4, 5))
    assert e.value.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert psm.check(_header(7, 4, 0)) is None
    # An unknown producer may start anywhere (its earlier batches may have been deleted).
    assert psm.check(_header(8, 0, 42)) is None


def test_producer_state_wraps_sequence_numbers(tmp_path):
    psm = ProducerStateManager(str(tmp_path))
    h = _header(1, 0, (1 << 31) - 2, count=2)
    psm.update(h)
    assert h.last_sequence == (1 << 31) - 1
    assert psm.check(_header(1, 0, 0, base_offset=2)) is None


def _log(path) -> Log:
    config = BrokerConfig({"log.dir": str(path)})
    return Log(str(path / "t-0"), "t", 0, LogConfig(config.topic_defaults(), {}))


def test_producer_state_survives_reopen_from_snapshot_and_scan(tmp_path):
    lg = _log(tmp_path)
    for seq in range(3):
        lg.append_as_leader(memoryview(values_batch([b"a"], producer_id=5, producer_epoch=1,
                                                    base_sequence=seq)))  # fmt: skip
    lg.write_snapshot()  # as at a roll or a clean shutdown: covers offsets 0..2
    for seq in range(3, 5):
        lg.append_as_leader(memoryview(values_batch([b"b"], producer_id=5, producer_epoch=1,
                                                    base_sequence=seq)))  # fmt: skip
    lg.close()
    for snapshot_kept in (True, False):
        if not snapshot_kept:
            for name in os.listdir(tmp_path / "t-0"):
                if name.endswith(".snapshot"):
                    os.unlink(tmp_path / "t-0" / name)
        lg = _log(tmp_path)
        for seq, offset in ((1, 1), (4, 4)):  # one from the snapshot, one from the scan
            info = lg.append_as_leader(memoryview(values_batch(
                [b"a"], producer_id=5, producer_epoch=1, base_sequence=seq)))  # fmt: skip
            assert info.duplicate and info.first_offset == offset
        with pytest.raises(KafkaError) as e:
            lg.append_as_leader(memoryview(values_batch([b"c"], producer_id=5, producer_epoch=1,
                                                        base_sequence=9)))  # fmt: skip
        assert e.value.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        with pytest.raises(KafkaError) as e:
            lg.append_as_leader(memoryview(values_batch([b"c"], producer_id=5, producer_epoch=0,
                                                        base_sequence=5)))  # fmt: skip
        assert e.value.code == ErrorCode.INVALID_PRODUCER_EPOCH
        assert lg.log_end_offset == 5
        lg.close()


@pytest.mark.parametrize("segment_bytes", [1 << 30, 300])
def test_producer_state_survives_sigkill(tmp_path, segment_bytes):
    """After SIGKILL the state comes back from the log (and the snapshots written at rolls)."""
    bp = BrokerProcess(str(tmp_path / "data"), {"log.segment.bytes": str(segment_bytes)}).start()
    try:
        c = RawClient(bp.port)
        pid, _ = init_producer_id(c)
        epoch = 1  # so that epoch 0 is a stale one
        for seq in range(8):
            batch = values_batch([b"v%d" % seq], producer_id=pid, producer_epoch=epoch,
                                 base_sequence=seq)  # fmt: skip
            r = partition_response(c.request(ApiKey.PRODUCE, 9, produce_body("idem-kill", batch)))
            assert (r.error_code, r.base_offset) == (0, seq)
        c.close()
        bp.kill()
        bp.start()
        c = RawClient(bp.port)

        def send(seq: int, ep: int = epoch, value: bytes | None = None):
            batch = values_batch([value or b"v%d" % seq], producer_id=pid, producer_epoch=ep,
                                 base_sequence=seq)  # fmt: skip
            return partition_response(
                c.request(ApiKey.PRODUCE, 9, produce_body("idem-kill", batch))
            )

        for seq in (3, 7):  # among the last five: original offsets, nothing appended
            r = send(seq)
            assert (r.error_code, r.base_offset) == (0, seq)
        assert send(10).error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert send(8, ep=0).error_code == ErrorCode.INVALID_PRODUCER_EPOCH
        r = send(8)
        assert (r.error_code, r.base_offset) == (0, 8)
        c.close()
    finally:
        bp.kill()
    records = read_log_records(str(tmp_path / "data" / "idem-kill-0"))
    assert [r.value for r in records] == [b"v%d" % i for i in range(9)]


def test_duplicate_answer_carries_the_original_log_append_time(broker):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics([NewTopic("idem-lat", 1, 1,
                                  topic_configs={"message.timestamp.type": "LogAppendTime"})])  # fmt: skip
    admin.close()
    c = RawClient(broker.port)
    pid, epoch = init_producer_id(c)
    batch = bytes(values_batch([b"a", b"b"], timestamp=1, producer_id=pid, producer_epoch=epoch,
                               base_sequence=0))  # fmt: skip
    first = partition_response(c.request(ApiKey.PRODUCE, 9, produce_body("idem-lat", batch)))
    again = partition_response(c.request(ApiKey.PRODUCE, 9, produce_body("idem-lat", batch)))
    c.close()
    assert first.error_code == again.error_code == 0
    assert first.log_append_time_ms > 1
    assert (again.base_offset, again.log_append_time_ms) == (0, first.log_append_time_ms)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_idempotent_producer_across_a_broker_restart(tmp_path, sig):
    """librdkafka keeps its producer id across a broker restart; the restarted broker knows it
    (snapshot, or a scan of the log after SIGKILL), so retries stay exactly-once."""
    import signal
    import time

    from confluent_kafka import Producer

    bp = BrokerProcess(str(tmp_path / "data"), {"log.segment.bytes": "20000"},
                       port=_free_port()).start()  # fmt: skip
    acked: dict[bytes, int] = {}
    errors = []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = msg.offset()
        else:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bp.bootstrap_servers, "enable.idempotence": True,
                         "linger.ms": 5, "batch.num.messages": 20, "reconnect.backoff.ms": 50,
                         "reconnect.backoff.max.ms": 200, "broker.address.family": "v4"})  # fmt: skip
    values = [b"r-%05d" % i for i in range(2000)]
    try:
        restarted = False
        deadline = time.monotonic() + 60
        for v in values:
            producer.produce("idem-restart", value=v, on_delivery=on_delivery)
            producer.poll(0)
            if not restarted and len(acked) >= 500:
                bp.proc.send_signal(getattr(signal, sig))
                bp.proc.wait(30)
                bp.start()
                restarted = True
            assert time.monotonic() < deadline
        while not restarted and len(acked) < 500:  # a fast client may queue everything first
            producer.poll(0.05)
            assert time.monotonic() < deadline
        if not restarted:
            bp.proc.send_signal(getattr(signal, sig))
            bp.proc.wait(30)
            bp.start()
        assert producer.flush(60) == 0
        assert not errors
    finally:
        bp.kill()
    records = read_log_records(str(tmp_path / "data" / "idem-restart-0"))
    assert [r.value for r in records] == values
    assert [acked[v] for v in values] == list(range(len(values)))

"""Persistence: restarts after SIGTERM and SIGKILL, torn tails, damaged indexes.

Brokers run as subprocesses (helpers.BrokerProcess) so they can be signalled; their JSON log
lines are collected and checked.
"""

from __future__ import annotations

import os
import time

import pytest
from helpers import BrokerProcess, RawClient
from wire import (
    batches_in,
    fetch_records,
    partition_response,
    produce_body,
    read_log_records,
    values_batch,
    wait_for,
)

from protocol import records as rb
from protocol.apis import ApiKey


def _all_records(client, topic: str, partition: int = 0) -> list[rb.Record]:
    """Every record of a partition, fetched from offset 0 to the high watermark."""
    out: list[rb.Record] = []
    while True:
        p, recs = fetch_records(client, topic, partition, len(out))
        assert p.error_code == 0
        recs = [r for r in recs if r.offset >= len(out)]
        out.extend(recs)
        if len(out) >= p.high_watermark or not recs:
            return out


def _metadata(client, topics: list[str]):
    return client.request(
        ApiKey.METADATA, 12,
        {"topics": [{"name": t, "topic_id": None} for t in topics],
         "allow_auto_topic_creation": False, "include_topic_authorized_operations": False},
    )  # fmt: skip


def test_restart_after_sigterm(tmp_path):
    from kafka import KafkaProducer

    data = tmp_path / "data"
    bp = BrokerProcess(str(data), {"num.partitions": "2"}).start()
    try:
        producer = KafkaProducer(bootstrap_servers=bp.bootstrap_servers, linger_ms=5)
        sent = {}
        for t in ("alpha", "beta"):
            for i in range(50):
                md = producer.send(t, key=b"%d" % i, value=f"{t}-{i}".encode()).get(10)
                sent.setdefault((t, md.partition), []).append((md.offset, f"{t}-{i}".encode()))
        producer.close()
        c = RawClient(bp.port)
        ids = {t.name: t.topic_id for t in _metadata(c, ["alpha", "beta"]).topics}
        c.close()
        assert bp.terminate() == 0
    finally:
        bp.kill()
    assert os.path.exists(data / ".kafka_cleanshutdown")
    assert bp.events("broker_stopped")

    bp = BrokerProcess(str(data)).start()
    try:
        assert bp.events("logs_loaded")[-1]["clean_shutdown"] is True
        assert not os.path.exists(data / ".kafka_cleanshutdown")  # a crash from now is noticed
        c = RawClient(bp.port)
        md = _metadata(c, ["alpha", "beta"])
        assert {t.name: t.topic_id for t in md.topics} == ids
        assert all(len(t.partitions) == 2 and t.error_code == 0 for t in md.topics)
        for (t, p), expected in sent.items():
            got = [(r.offset, r.value) for r in _all_records(c, t, p)]
            assert got == expected
        batch = values_batch([b"after-restart"])
        r = partition_response(c.request(ApiKey.PRODUCE, 9, produce_body("alpha", batch)))
        assert r.error_code == 0 and r.base_offset == len(sent[("alpha", 0)])
        c.close()
    finally:
        bp.kill()


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_signal_during_acks_all_burst_keeps_every_acknowledged_record(tmp_path, sig):
    import signal

    from confluent_kafka import Producer

    data = tmp_path / "data"
    bp = BrokerProcess(str(data), {"log.segment.bytes": str(64 * 1024)}).start()
    acked: dict[int, bytes] = {}
    failed = []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.offset()] = msg.value()
        else:
            failed.append(err)

    producer = Producer({
        "bootstrap.servers": bp.bootstrap_servers, "acks": "all", "linger.ms": 1,
        "batch.num.messages": 20, "message.timeout.ms": 3000, "broker.address.family": "v4",
        "enable.idempotence": False, "retries": 0,
    })  # fmt: skip
    try:
        i = 0
        deadline = time.monotonic() + 60
        while len(acked) < 1500:
            assert time.monotonic() < deadline, "the broker acknowledged too little"
            if i - len(acked) - len(failed) > 1000:  # keep a bounded burst in flight
                producer.poll(0.01)
                continue
            producer.produce(
                "burst", value=b"burst-%06d-" % i + b"x" * 100, on_delivery=on_delivery
            )
            producer.poll(0)
            i += 1
        bp.proc.send_signal(getattr(signal, sig))  # with produce requests in flight
        rc = bp.proc.wait(30)
        for j in range(i, i + 200):  # the burst goes on into a dead broker
            producer.produce("burst", value=b"burst-%06d-" % j, on_delivery=on_delivery)
        producer.flush(15)
    finally:
        bp.kill()
    assert len(acked) >= 1500
    assert rc == (0 if sig == "SIGTERM" else -signal.SIGKILL)

    bp = BrokerProcess(str(data)).start()
    try:
        assert bp.events("logs_loaded")[-1]["clean_shutdown"] is (sig == "SIGTERM")
        c = RawClient(bp.port)
        records = _all_records(c, "burst")
        c.close()
    finally:
        bp.kill()
    assert [r.offset for r in records] == list(range(len(records)))  # contiguous
    stored = {r.offset: r.value for r in records}
    for offset, value in acked.items():
        assert stored.get(offset) == value
    assert len(set(stored.values())) == len(stored)  # nothing written twice


def _produce_values(port: int, topic: str, batches: list[list[bytes]]) -> None:
    c = RawClient(port)
    for values in batches:
        r = partition_response(
            c.request(ApiKey.PRODUCE, 9, produce_body(topic, values_batch(values)))
        )
        assert r.error_code == 0
    c.close()


TORN_TAILS = {
    "partial_header": lambda good: good[:7],
    "bad_crc": lambda good: good[:-1] + bytes([good[-1] ^ 0xFF]),
    "short_batch": lambda good: good[: len(good) // 2],
    "zero_fill": lambda good: b"\x00" * 4096,
}


@pytest.mark.parametrize("tail", list(TORN_TAILS))
def test_torn_tail_is_truncated_at_startup(tmp_path, tail):
    data = tmp_path / "data"
    bp = BrokerProcess(str(data)).start()
    try:
        _produce_values(bp.port, "torn", [[b"a%d" % i for i in range(3)], [b"b"], [b"c"]])
    finally:
        bp.kill()  # SIGKILL: no clean-shutdown marker, so start-up checks the tail
    log_path = data / "torn-0" / "00000000000000000000.log"
    good_size = log_path.stat().st_size
    extra = TORN_TAILS[tail](bytes(values_batch([b"torn-away"], timestamp=1)))
    with open(log_path, "ab") as f:
        f.write(extra)

    bp = BrokerProcess(str(data)).start()
    try:
        recovered = bp.events("log_recovered")
        assert recovered and recovered[0]["truncated_bytes"] == len(extra)
        assert log_path.stat().st_size == good_size
        _produce_values(bp.port, "torn", [[b"d"]])
        c = RawClient(bp.port)
        values = [r.value for r in _all_records(c, "torn")]
        c.close()
    finally:
        bp.kill()
    assert values == [b"a0", b"a1", b"a2", b"b", b"c", b"d"]


def test_torn_tail_after_clean_shutdown_is_still_truncated(tmp_path):
    """Even a tail damaged after a clean shutdown (so no full recovery) never stays in the log."""
    data = tmp_path / "data"
    bp = BrokerProcess(str(data)).start()
    try:
        _produce_values(bp.port, "torn", [[b"a"], [b"b"]])
        assert bp.terminate() == 0
    finally:
        bp.kill()
    log_path = data / "torn-0" / "00000000000000000000.log"
    with open(log_path, "ab") as f:
        f.write(b"\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x01\x00garbage")
    bp = BrokerProcess(str(data)).start()
    try:
        _produce_values(bp.port, "torn", [[b"c"]])
        c = RawClient(bp.port)
        values = [r.value for r in _all_records(c, "torn")]
        c.close()
    finally:
        bp.kill()
    assert values == [b"a", b"b", b"c"]
    assert [r.value for r in read_log_records(str(data / "torn-0"))] == [b"a", b"b", b"c"]


INDEX_DAMAGE = {
    "missing": lambda path: os.unlink(path),
    "garbage": lambda path: path.write_bytes(os.urandom(path.stat().st_size or 64)),
    "past_the_log": lambda path: path.write_bytes(
        path.read_bytes()[:-8] + (0).to_bytes(4, "big") + (10**8).to_bytes(4, "big")
    ),
    "empty": lambda path: path.write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
@pytest.mark.parametrize("shutdown", ["sigterm", "sigkill"])
def test_damaged_index_is_rebuilt(tmp_path, damage, shutdown):
    data = tmp_path / "data"
    overrides = {"log.segment.bytes": "2000", "log.index.interval.bytes": "150"}
    bp = BrokerProcess(str(data), overrides).start()
    try:
        _produce_values(bp.port, "idx", [[b"v%03d" % i, b"w%03d" % i] for i in range(60)])
        if shutdown == "sigterm":
            assert bp.terminate() == 0
    finally:
        bp.kill()
    part = data / "idx-0"
    indexes = sorted(part.glob("*.index"))
    assert len(indexes) >= 3
    originals = {p: p.read_bytes() for p in indexes}
    assert all(len(b) >= 16 for b in originals.values())  # several entries in each
    for path in (indexes[0], indexes[-1]):  # an old segment and the active one
        INDEX_DAMAGE[damage](path)

    bp = BrokerProcess(str(data), overrides).start()
    try:
        for path, original in originals.items():
            assert path.read_bytes() == original, path.name
        c = RawClient(bp.port)
        for offset in (0, 17, 60, 119):
            _p, recs = fetch_records(c, "idx", 0, offset, partition_max_bytes=1)
            assert recs and recs[0].offset <= offset <= recs[-1].offset
            want = (b"v%03d" if offset % 2 == 0 else b"w%03d") % (offset // 2)
            assert [r.value for r in recs if r.offset == offset] == [want]
        c.close()
    finally:
        bp.kill()


def test_restart_keeps_segments_and_offsets_after_many_rolls(tmp_path):
    data = tmp_path / "data"
    overrides = {"log.segment.bytes": "1000"}
    bp = BrokerProcess(str(data), overrides).start()
    try:
        _produce_values(bp.port, "rolls", [[b"r%03d" % i] for i in range(40)])
        assert bp.terminate() == 0
        segments = sorted(p.name for p in (data / "rolls-0").glob("*.log"))
        assert len(segments) > 3
        bp.start()
        _produce_values(bp.port, "rolls", [[b"r%03d" % i] for i in range(40, 50)])
        c = RawClient(bp.port)
        records = _all_records(c, "rolls")
        c.close()
    finally:
        bp.kill()
    assert [(r.offset, r.value) for r in records] == [(i, b"r%03d" % i) for i in range(50)]
    for name in segments:  # segments are named by their base offset
        with open(data / "rolls-0" / name, "rb") as f:
            assert batches_in(f.read())[0].base_offset == int(name[:-4])


def _unflushed(broker, topic: str) -> int:
    return broker.call(lambda: broker.broker.replica_manager.get(topic, 0).log.unflushed_records)


def test_flush_policies(make_broker):
    """Page cache by default; log.flush.interval.messages / .ms fsync when set."""
    lazy = make_broker()
    by_count = make_broker({"log.flush.interval.messages": 3})
    by_time = make_broker({"log.flush.interval.ms": 50})
    for b in (lazy, by_count, by_time):
        _produce_values(b.port, "fl", [[b"1"], [b"2"]])
    assert _unflushed(lazy, "fl") == 2
    assert _unflushed(by_count, "fl") == 2
    _produce_values(by_count.port, "fl", [[b"3"]])
    assert _unflushed(by_count, "fl") == 0
    wait_for(lambda: _unflushed(by_time, "fl") == 0, what="the time-based flush")
    assert _unflushed(lazy, "fl") == 2


def test_sigint_is_a_clean_shutdown_too(tmp_path):
    import signal

    data = tmp_path / "data"
    bp = BrokerProcess(str(data)).start()
    try:
        _produce_values(bp.port, "ctrl-c", [[b"a"], [b"b"]])
        bp.proc.send_signal(signal.SIGINT)
        assert bp.proc.wait(30) == 0
    finally:
        bp.kill()
    assert (data / ".kafka_cleanshutdown").exists()
    assert bp.events("broker_stopped")
    snapshots = list((data / "ctrl-c-0").glob("*.snapshot"))
    assert [p.name for p in snapshots] == ["00000000000000000002.snapshot"]

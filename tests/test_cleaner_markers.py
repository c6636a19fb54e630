"""Transaction markers and aborted records under compaction (KIP-98 / KIP-534): aborted
records go; a marker whose transaction has nothing left gets a delete horizon, then goes after
delete.retention.ms; producers' last batches stay (empty) so their sequence state survives."""

from __future__ import annotations

import pytest
from ports import restartable_port
from storage_helpers import append, batches, clean, cleaner_for, crc_ok, make_log, records, reopen

from protocol import records as rb

T0 = 1_700_000_000_000
RETENTION = 1_000
COMPACT = {"cleanup.policy": ["compact"], "segment.bytes": 4096, "delete.retention.ms": RETENTION}
PID = 5


def txn(lg, pairs, seq, commit, pid=PID, epoch=0):
    """A transaction of one batch and its marker; returns (first offset, marker offset)."""
    base = append(lg, pairs, producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                  transactional=True)  # fmt: skip
    marker = rb.build_marker(pid, epoch, commit=commit, coordinator_epoch=0, timestamp=1_000)
    info = lg.append_as_leader(memoryview(marker))
    lg.update_high_watermark(lg.log_end_offset)
    return base, info.first_offset


def markers(lg):
    """marker offset -> (type, delete horizon or None)"""
    out = {}
    for h, data in batches(lg):
        if h.is_control:
            assert crc_ok(data)
            kind = rb.parse_marker(rb.decode_records(data)[0])[0]
            horizon = h.base_timestamp if h.attributes & rb.DELETE_HORIZON_MASK else None
            out[h.base_offset] = (kind, horizon)
    return out


def aborted_entries(lg):
    return [(e.producer_id, e.first_offset, e.last_offset)
            for seg in lg.segments for e in seg.txn_index.entries]  # fmt: skip


def test_markers_go_once_their_transactions_are_empty(tmp_path):
    lg = make_log(tmp_path, **COMPACT)
    _, m_a = txn(lg, [(b"k1", b"a1"), (b"k2", b"a2")], 0, commit=True)  # all superseded below
    b_first, m_b = txn(lg, [(b"k1", b"b1")], 2, commit=False)  # aborted
    _, m_c = txn(lg, [(b"k2", b"c2"), (b"k3", b"c3")], 3, commit=True)  # c2 survives
    append(lg, [(b"k1", b"n1")])
    d_first, m_d = txn(lg, [(b"k3", b"d3")], 5, commit=True)
    lg.roll()
    size_before = lg.size
    assert aborted_entries(lg) == [(PID, b_first, m_b)]
    cl = cleaner_for(lg)

    clean(cl, lg, now=T0)
    view = {r.key: r.value for r in records(lg)}
    assert view == {b"k1": b"n1", b"k2": b"c2", b"k3": b"d3"}  # b1 (aborted) is gone
    assert markers(lg) == {
        m_a: (rb.CONTROL_COMMIT, T0 + RETENTION),
        m_b: (rb.CONTROL_ABORT, T0 + RETENTION),
        m_c: (rb.CONTROL_COMMIT, None),  # c2 is still there
        m_d: (rb.CONTROL_COMMIT, None),
    }
    assert cl.horizons[(lg.topic, lg.partition)] == T0 + RETENTION
    assert cl.grab_filthiest(T0 + RETENTION - 1) is None
    assert cl.grab_filthiest(T0 + RETENTION) is not None  # the horizon brings the cleaner back

    clean(cl, lg, now=T0 + RETENTION)
    assert markers(lg) == {m_c: (rb.CONTROL_COMMIT, None), m_d: (rb.CONTROL_COMMIT, None)}
    assert aborted_entries(lg) == []  # its marker is gone: no reader must skip pid 5 any more
    assert {r.key: r.value for r in records(lg)} == view
    assert cl.stats.markers_removed == 2
    assert (lg.topic, lg.partition) not in cl.horizons
    assert lg.size < size_before

    # Nothing more to do, and what is left survives a restart with the producer's state.
    lg.producer_state.producers.clear()
    lg = reopen(lg)
    assert markers(lg) == {m_c: (rb.CONTROL_COMMIT, None), m_d: (rb.CONTROL_COMMIT, None)}
    assert lg.last_stable_offset() == lg.log_end_offset
    dup = append(lg, [(b"k3", b"d3")], producer_id=PID, producer_epoch=0, base_sequence=5,
                 transactional=True)  # fmt: skip
    assert dup == d_first  # a retry of the producer's last batch is still recognised
    with pytest.raises(Exception, match="sequence"):
        append(lg, [(b"k", b"v")], producer_id=PID, producer_epoch=0, base_sequence=9,
               transactional=True)  # fmt: skip
    nxt, m_e = txn(lg, [(b"k4", b"e4")], 6, commit=True)
    assert m_e == nxt + 1


def test_the_last_batch_of_a_producer_keeps_its_transaction_marker(tmp_path):
    lg = make_log(tmp_path, **COMPACT)
    append(lg, [(b"k", b"v1")])
    first, m_abort = txn(lg, [(b"k", b"aborted")], 0, commit=False)
    append(lg, [(b"k", b"v2")])
    lg.roll()
    cl = cleaner_for(lg)
    for now in (T0, T0 + RETENTION, T0 + 10 * RETENTION):
        clean(cl, lg, now=now)
        got = [(h.base_offset, h.record_count, h.is_control) for h, _ in batches(lg)]
        # The aborted batch is emptied but stays (the producer's sequence); so does its marker,
        # and the index entry that tells read_committed readers to skip it.
        assert got == [(first, 0, False), (m_abort, 1, True), (m_abort + 1, 1, False)]
        assert markers(lg) == {m_abort: (rb.CONTROL_ABORT, None)}
        assert aborted_entries(lg) == [(PID, first, m_abort)]
        assert [r.value for r in records(lg)] == [b"v2"]


def test_a_marker_ending_a_cleaned_group_waits(tmp_path):
    lg = make_log(tmp_path, **COMPACT)
    _, m_old = txn(lg, [(b"k", b"old")], 0, commit=True, pid=6)
    _, m_kept = txn(lg, [(b"j", b"x")], 1, commit=True, pid=6)
    append(lg, [(b"k", b"new")], producer_id=7, producer_epoch=0, base_sequence=0)
    # A transaction that wrote nothing here ends the segment, hence the cleaned group.
    info = lg.append_as_leader(memoryview(rb.build_marker(8, 0, False, 0, 1_000)))
    lg.update_high_watermark(lg.log_end_offset)
    m_last = info.first_offset
    lg.roll()
    cl = cleaner_for(lg)
    clean(cl, lg, now=T0)
    assert markers(lg) == {
        m_old: (rb.CONTROL_COMMIT, T0 + RETENTION),
        m_kept: (rb.CONTROL_COMMIT, None),
        m_last: (rb.CONTROL_ABORT, T0 + RETENTION),
    }
    clean(cl, lg, now=T0 + RETENTION)
    # The cleaned segment must end where the group did, and an empty control batch is refused
    # by some clients: the last marker waits for a cleaning where it is no longer the last.
    assert markers(lg) == {
        m_kept: (rb.CONTROL_COMMIT, None),
        m_last: (rb.CONTROL_ABORT, T0 + RETENTION),
    }
    assert {r.key: r.value for r in records(lg)} == {b"j": b"x", b"k": b"new"}
    assert cl.grab_filthiest(T0 + 100 * RETENTION) is None  # and it does not loop the cleaner


# --- against a running broker, with a transactional confluent-kafka producer ------------------


def control_offsets(b, lg):
    return b.call(lambda: [h.base_offset for s in lg.segments for _, h in s.iter_batches()
                           if h.is_control])  # fmt: skip


def read_all(bootstrap, topic, isolation):
    """offset -> (key, value) of everything a consumer of this isolation level reads."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "isolation.level": isolation,
                  "enable.auto.commit": False, "enable.partition.eof": True})  # fmt: skip
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = {}
        while True:
            m = c.poll(10)
            assert m is not None, "no end of partition within 10 s"
            if m.error() is not None:
                assert m.error().code() == -191, m.error()  # _PARTITION_EOF
                return got
            got[m.offset()] = (m.key(), m.value())
    finally:
        c.close()


def test_exactly_once_app_markers_are_compacted_away(make_broker):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from storage_helpers import broker_log, wait_for
    from test_compaction import COMPACT as TOPIC_COMPACT
    from test_compaction import FAST, create, expected_view, roll_and_wait_for_cleaning

    overrides = {**FAST, "offsets.topic.num.partitions": 1,
                 "transaction.state.log.num.partitions": 1}  # fmt: skip
    port = restartable_port()  # restarted on it below
    b = make_broker({**overrides, "listeners": f"PLAINTEXT://127.0.0.1:{port}"})
    create(b, "eos", **{**TOPIC_COMPACT, "segment.bytes": 1 << 20})  # one segment: one group
    create(b, "src")
    producer = Producer({"bootstrap.servers": b.bootstrap_servers, "transactional.id": "mk-app",
                         "linger.ms": 0})  # fmt: skip
    producer.init_transactions(30)
    group = Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "mk-group"})
    sent = {}  # offset -> (key, value, committed)

    def transaction(i, commit, offsets=True):
        producer.begin_transaction()
        value = b"v%d" % i
        producer.produce("eos", value, key=b"k%d" % (i % 3), partition=0,
                         on_delivery=lambda err, m: sent.__setitem__(
                             m.offset(), (m.key(), m.value(), commit)))  # fmt: skip
        producer.flush(30)
        if offsets:
            producer.send_offsets_to_transaction(
                [TopicPartition("src", 0, i + 1)], group.consumer_group_metadata(), 30
            )
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    for i in range(30):
        transaction(i, commit=i % 5 != 3)
    lg = broker_log(b, "eos")
    # Each transaction: one data batch, then its marker (one producer, one partition).
    txn_of_marker = {m: m - 1 for m in control_offsets(b, lg)}
    assert len(txn_of_marker) == 30
    committed = {off: (k, v) for off, (k, v, ok) in sent.items() if ok}
    view = expected_view(committed)
    size_before = b.call(lambda: lg.size)

    roll_and_wait_for_cleaning(b, "eos")
    expected = sorted(m for m, data in txn_of_marker.items() if data in view)
    # The cleaner comes back by itself once the markers' delete horizon (1 s) has passed.
    wait_for(lambda: control_offsets(b, lg) == expected, what="the markers to go")
    size_after = b.call(lambda: lg.size)
    print(f"eos-0: {size_before} -> {size_after} bytes, 30 -> {len(expected)} markers")
    assert size_after < size_before
    end = b.call(lambda: lg.log_end_offset)
    for isolation in ("read_committed", "read_uncommitted"):
        got = read_all(b.bootstrap_servers, "eos", isolation)
        assert got == view, isolation

    # __consumer_offsets: only the last transaction's offset commit and marker stay.
    offsets_log = broker_log(b, "__consumer_offsets")
    offsets_log.config.values["min.cleanable.dirty.ratio"] = 0.01
    offsets_log.config.values["delete.retention.ms"] = 1000
    before = len(control_offsets(b, offsets_log))
    assert before == 30
    roll_and_wait_for_cleaning(b, "__consumer_offsets")
    wait_for(lambda: len(control_offsets(b, offsets_log)) == 1, what="offsets markers to go")

    # The producer goes on (its sequence state is intact), also after a restart.
    transaction(30, commit=True)
    b.stop()
    b = make_broker(
        {**overrides, "listeners": f"PLAINTEXT://127.0.0.1:{port}"}, data_dir=b.data_dir
    )
    # The replay of __consumer_offsets (at most its last marker is left) gives the last commit.
    reader = Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "mk-group"})
    try:
        (tp,) = reader.committed([TopicPartition("src", 0)], timeout=10)
        assert tp.offset == 31
    finally:
        reader.close()
    transaction(31, commit=True, offsets=False)
    new = {off: (k, v) for off, (k, v, ok) in sent.items() if ok and off >= end}
    assert len(new) == 2
    assert read_all(b.bootstrap_servers, "eos", "read_committed") == {**view, **new}
    group.close()
    producer.flush(10)

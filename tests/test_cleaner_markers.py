"""Transaction markers and aborted records under compaction (KIP-98 / KIP-534): aborted
records go; a marker whose transaction has nothing left gets a delete horizon, then goes after
delete.retention.ms; producers' last batches stay (empty) so their sequence state survives."""

from __future__ import annotations

import pytest
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

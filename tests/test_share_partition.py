"""The share-partition state machine (KIP-932), driven deterministically: time is passed in.

Expected values are Kafka's rules: SPSO moves over finished records only, a record's delivery
count goes up on each acquisition, a released record that reached
group.share.delivery.count.limit is ARCHIVED, at most group.share.partition.max.record.locks
offsets are in flight, ACCEPT/RELEASE/REJECT/GAP are 1/2/3/0 and the persisted states 0/2/4.
"""

import pytest

from protocol.share_partition import (
    ACCEPT,
    ACKNOWLEDGED,
    ARCHIVED,
    AVAILABLE,
    GAP,
    REJECT,
    RELEASE,
    InvalidAcknowledgement,
    InvalidRecordState,
    SharePartition,
    merge_state,
)


def batches(*ranges, skip=()):
    return [(a, b, (a, b) in skip) for a, b in ranges]


def test_acquire_whole_batches_and_lock_expiry_redelivers_with_count_2():
    sp = SharePartition(0, lock_ms=1000)
    assert sp.fetch_offset() == 0
    # max_records 3 still takes the whole first batch (0-4): Kafka aligns to batches.
    assert sp.acquire("a", batches((0, 4), (5, 9)), 3, now_ms=0) == [(0, 4, 1)]
    assert (sp.start_offset, sp.end_offset) == (0, 5)
    assert sp.fetch_offset() == 5
    assert sp.acquire("b", batches((5, 9)), 100, now_ms=0) == [(5, 9, 1)]
    assert sp.next_deadline() == 1000
    assert sp.expire_locks(999) == []
    # Both members' locks run out: the records are available again, count kept.
    assert sp.expire_locks(1000) == [(0, 9, AVAILABLE, 1)]
    assert sp.fetch_offset() == 0
    assert sp.acquire("b", batches((0, 4), (5, 9)), 100, now_ms=2000) == [(0, 9, 2)]


def test_accept_release_reject_and_spso():
    sp = SharePartition(10)
    sp.acquire("a", batches((10, 14)), 500, now_ms=0)
    changed = sp.acknowledge("a", [(10, 11, [ACCEPT]), (12, 14, [RELEASE, REJECT, GAP])])
    assert changed == [(10, 11, ACKNOWLEDGED, 1), (12, 12, AVAILABLE, 1), (13, 14, ARCHIVED, 1)]
    assert sp.start_offset == 12  # 12 is available again, so the start stays there
    assert sp.acquire("b", batches((10, 14)), 500, now_ms=0) == [(12, 12, 2)]
    sp.acknowledge("b", [(12, 12, [ACCEPT])])
    assert (sp.start_offset, sp.end_offset) == (15, 15)
    assert sp.records == {}


def test_acknowledging_what_another_member_holds_changes_nothing():
    sp = SharePartition(0)
    sp.acquire("a", batches((0, 3)), 500, now_ms=0)
    with pytest.raises(InvalidRecordState):
        sp.acknowledge("b", [(0, 0, [ACCEPT])])
    with pytest.raises(InvalidRecordState):  # 4 was never acquired: the whole request fails
        sp.acknowledge("a", [(0, 0, [ACCEPT]), (3, 4, [ACCEPT])])
    assert sp.start_offset == 0
    with pytest.raises(InvalidAcknowledgement):
        sp.acknowledge("a", [(0, 2, [ACCEPT, ACCEPT])])  # 2 types for 3 offsets
    with pytest.raises(InvalidAcknowledgement):
        sp.acknowledge("a", [(0, 0, [7])])
    sp.acknowledge("a", [(0, 3, [ACCEPT])])
    with pytest.raises(InvalidRecordState):  # accepted already
        sp.acknowledge("a", [(0, 0, [ACCEPT])])


def test_delivery_count_limit_archives_a_poison_record():
    sp = SharePartition(0, delivery_limit=3, lock_ms=10)
    now = 0
    for count in (1, 2, 3):
        assert sp.acquire("a", batches((0, 1)), 500, now_ms=now) in (
            [(0, 1, count)],
            [(0, 0, count)],
        )
        changed = sp.acknowledge(
            "a", [(0, 0, [RELEASE])] + ([(1, 1, [ACCEPT])] if count == 1 else [])
        )
        now += 100
    # The third release reached the limit (3): archived, never delivered again.
    assert changed == [(0, 0, ARCHIVED, 3)]
    assert (sp.start_offset, sp.end_offset) == (2, 2)
    assert sp.fetch_offset() == 2


def test_lock_expiry_counts_towards_the_limit():
    sp = SharePartition(0, delivery_limit=2, lock_ms=10)
    sp.acquire("a", batches((0, 0)), 500, now_ms=0)
    assert sp.expire_locks(10) == [(0, 0, AVAILABLE, 1)]
    sp.acquire("b", batches((0, 0)), 500, now_ms=20)
    assert sp.expire_locks(30) == [(0, 0, ARCHIVED, 2)]
    assert sp.start_offset == 1


def test_in_flight_window_is_bounded_by_max_record_locks():
    sp = SharePartition(0, max_in_flight=10)
    assert sp.acquire("a", batches((0, 5), (6, 11), (12, 20)), 500, now_ms=0) == [(0, 9, 1)]
    assert sp.fetch_offset() is None  # full: nothing to acquire until the start moves
    sp.acknowledge("a", [(0, 3, [ACCEPT])])
    assert sp.fetch_offset() == 10
    assert sp.acquire("b", batches((6, 11), (12, 20)), 500, now_ms=0) == [(10, 13, 1)]


def test_member_release_and_control_batches():
    sp = SharePartition(0)
    got = sp.acquire("a", batches((0, 2), (3, 3), (4, 6), skip={(3, 3)}), 500, now_ms=0)
    assert got == [(0, 2, 1), (4, 6, 1)]  # 3 is a transaction marker: archived, not delivered
    assert sp.release_member("a") == [(0, 2, AVAILABLE, 1), (4, 6, AVAILABLE, 1)]
    assert sp.state_batches() == [(0, 2, AVAILABLE, 1), (3, 3, ARCHIVED, 0), (4, 6, AVAILABLE, 1)]


def test_gaps_between_batches_are_archived():
    sp = SharePartition(0)
    assert sp.acquire("a", batches((0, 1), (5, 6)), 500, now_ms=0) == [(0, 1, 1), (5, 6, 1)]
    sp.acknowledge("a", [(0, 1, [ACCEPT])])
    assert sp.start_offset == 5  # 2-4 held no records (compacted away)


def test_reload_from_persisted_state():
    persisted = [(3, 4, ACKNOWLEDGED, 1), (5, 5, AVAILABLE, 2), (7, 8, ARCHIVED, 5)]
    sp = SharePartition(3, state_batches=persisted)
    assert (sp.start_offset, sp.end_offset) == (5, 9)
    assert sp.fetch_offset() == 5
    assert sp.acquire("a", batches((5, 9)), 500, now_ms=0) == [(5, 5, 3), (6, 6, 1), (9, 9, 1)]


def test_move_start_past_retention():
    sp = SharePartition(0)
    sp.acquire("a", batches((0, 9)), 500, now_ms=0)
    sp.move_start(5)
    assert sp.start_offset == 5
    with pytest.raises(InvalidRecordState):
        sp.acknowledge("a", [(4, 4, [ACCEPT])])
    sp.acknowledge("a", [(5, 9, [ACCEPT])])
    assert sp.start_offset == 10


def test_merge_state_overlays_and_drops_below_start():
    base = [(0, 9, AVAILABLE, 1), (10, 19, ARCHIVED, 5)]
    merged, start = merge_state(base, 0, [(3, 4, ACKNOWLEDGED, 1), (12, 12, AVAILABLE, 2)], -1)
    assert start == 0
    assert merged == [
        (0, 2, AVAILABLE, 1), (3, 4, ACKNOWLEDGED, 1), (5, 9, AVAILABLE, 1),
        (10, 11, ARCHIVED, 5), (12, 12, AVAILABLE, 2), (13, 19, ARCHIVED, 5),
    ]  # fmt: skip
    merged, start = merge_state(merged, 0, [(0, 2, ACKNOWLEDGED, 1)], 5)
    assert start == 5
    assert merged[0] == (5, 9, AVAILABLE, 1)
    assert merge_state([], 0, [], 7) == ([], 7)

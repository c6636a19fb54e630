"""Retention on a Log, without a broker: which segments go, the log start, the active segment."""

from __future__ import annotations

import os

from storage_helpers import append, make_log, records, reopen

from pykbroker.storage.retention import LogRetention, delete_old_segments

NOW = 1_700_000_000_000
DAY = 86_400_000


def segment_files(lg):
    return sorted(n for n in os.listdir(lg.dir) if n.endswith(".log"))


def fill(lg, timestamps, per_segment=3):
    for i, ts in enumerate(timestamps):
        append(lg, [(b"k%d" % i, b"x" * 50)], ts=ts)
        if i % per_segment == per_segment - 1:
            lg.roll()


def test_time_retention_deletes_whole_expired_segments(tmp_path):
    doomed = []
    lg = make_log(tmp_path, on_delete_files=lambda segs, delay: doomed.append(delay),
                  **{"retention.ms": DAY, "file.delete.delay.ms": 1234})  # fmt: skip
    # Segments [0-2] and [3-5] are two days old; [6-8] has one fresh record; [9] is active.
    fill(lg, [NOW - 2 * DAY] * 6 + [NOW - 2 * DAY, NOW - 2 * DAY, NOW - 1000, NOW])
    assert [s.base_offset for s in lg.segments] == [0, 3, 6, 9]
    assert delete_old_segments(lg, NOW) == 2
    assert [s.base_offset for s in lg.segments] == [6, 9]
    assert lg.log_start_offset == 6
    assert doomed == [1234]  # files go after file.delete.delay.ms
    assert len([n for n in os.listdir(lg.dir) if n.endswith(".log.deleted")]) == 2
    assert delete_old_segments(lg, NOW) == 0
    assert [r.offset for r in records(lg)] == [6, 7, 8, 9]
    lg = reopen(lg)
    assert lg.log_start_offset == 6


def test_an_expired_active_segment_is_rolled_then_deleted(tmp_path):
    lg = make_log(tmp_path, **{"retention.ms": DAY})
    fill(lg, [NOW - 2 * DAY] * 5)  # [0-2], active [3-4]
    leo = lg.log_end_offset
    assert delete_old_segments(lg, NOW) == 2
    assert len(lg.segments) == 1
    assert lg.active_segment.size == 0 and lg.active_segment.base_offset == leo
    assert lg.log_start_offset == leo == lg.high_watermark
    assert append(lg, [(b"k", b"v")], ts=NOW) == leo  # appends carry on at the LEO
    assert delete_old_segments(lg, NOW) == 0  # an empty or fresh active segment stays


def test_size_retention_keeps_the_newest_bytes(tmp_path):
    lg = make_log(tmp_path)
    fill(lg, [NOW] * 12)  # four segments of three batches
    seg_size = lg.segments[0].size
    lg.config.values["retention.bytes"] = 2 * seg_size - 10  # a live config change
    assert delete_old_segments(lg, NOW) == 2
    assert [s.base_offset for s in lg.segments] == [6, 9, 12]
    assert lg.log_start_offset == 6
    lg.config.values["retention.bytes"] = -1
    assert delete_old_segments(lg, NOW) == 0


def test_segments_above_the_high_watermark_stay(tmp_path):
    lg = make_log(tmp_path, **{"retention.ms": DAY})
    fill(lg, [NOW - 2 * DAY] * 9)
    lg.high_watermark = 4  # replication has not caught up: only [0-2] is below the HW
    assert delete_old_segments(lg, NOW) == 1
    assert lg.log_start_offset == 3


def test_log_start_offset_breach_deletes_whatever_the_policy(tmp_path):
    lg = make_log(tmp_path, **{"cleanup.policy": ["compact"], "retention.ms": 1})
    fill(lg, [NOW - 2 * DAY] * 9)
    assert delete_old_segments(lg, NOW) == 0  # compact only: no time or size retention
    lg.maybe_increment_log_start_offset(7)  # DeleteRecords
    assert delete_old_segments(lg, NOW) == 2
    assert [s.base_offset for s in lg.segments] == [6, 9]
    assert lg.log_start_offset == 7
    assert [r.offset for r in records(lg)] == [7, 8]


def test_compact_delete_applies_both(tmp_path):
    lg = make_log(tmp_path, **{"cleanup.policy": ["compact", "delete"], "retention.ms": DAY})
    fill(lg, [NOW - 2 * DAY] * 3 + [NOW] * 3)
    assert delete_old_segments(lg, NOW) == 1


def test_segments_without_timestamps_age_by_file_mtime(tmp_path):
    lg = make_log(tmp_path, **{"retention.ms": DAY})
    fill(lg, [-1] * 6)
    old = (NOW - 2 * DAY) * 1_000_000
    os.utime(lg.segments[0].log_path, ns=(old, old))
    assert lg.segments[0].largest_timestamp == NOW - 2 * DAY
    assert delete_old_segments(lg, NOW) == 1


def test_retention_task_checks_every_log(tmp_path):
    logs = [make_log(tmp_path, name=f"t-{i}", **{"retention.ms": DAY}) for i in range(3)]
    for lg in logs:
        fill(lg, [NOW - 2 * DAY] * 3 + [NOW])
    task = LogRetention(lambda: logs, 100)
    assert task.check(NOW) == 3
    assert task.segments_deleted == 3 and task.checks == 1
    assert all(lg.log_start_offset == 3 for lg in logs)


def test_segments_roll_on_size_and_full_indexes(tmp_path):
    lg = make_log(tmp_path, **{"segment.bytes": 1_000, "index.interval.bytes": 0})
    for i in range(30):
        append(lg, [(b"k", b"x" * 100)], ts=NOW + i)
    assert all(s.size <= 1_000 for s in lg.segments)
    lg = make_log(tmp_path, name="t-1", **{"segment.index.bytes": 36, "index.interval.bytes": 0})
    for i in range(12):  # every batch is indexed; a new timestamp every batch: 3 entries fit
        append(lg, [(b"k", b"v")], ts=NOW + i)
    assert [s.base_offset for s in lg.segments] == [0, 3, 6, 9]

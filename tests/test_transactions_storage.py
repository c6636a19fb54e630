"""The transaction index (`.txnindex`) and the LSO at the storage level: ABORT markers index
their transaction, the index follows its segment through retention, compaction (the cleaned
segment takes the entries of those it replaces, crash-safely) and truncation, and the LSO
waits for a marker to be replicated."""

from __future__ import annotations

import os
import struct

from storage_helpers import append, clean, cleaner_for, make_log, records, reopen

from protocol import records as rb
from pykbroker.storage.txn_index import AbortedTxn

TXN = {"producer_id": 7, "producer_epoch": 0, "transactional": True}
ABORT = (b"\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00\x00")
COMMIT = (b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00")
MARKER = {"producer_id": 7, "producer_epoch": 0, "transactional": True, "control": True}


def txnindex_files(lg) -> list[str]:
    return sorted(n for n in os.listdir(lg.dir) if ".txnindex" in n)


def region_from(lg, offset: int):
    return lg.read(offset, 1 << 20, lg.log_end_offset)


def test_abort_marker_indexes_its_transaction(tmp_path):
    lg = make_log(tmp_path)
    append(lg, [(b"k", b"plain")])  # 0
    append(lg, [(b"k", b"t1")], base_sequence=0, **TXN)  # 1, committed by 2
    append(lg, [COMMIT], **MARKER)
    assert txnindex_files(lg) == []  # created on the first abort only, as Kafka's
    append(lg, [(b"k", b"t2a"), (b"k", b"t2b")], base_sequence=1, **TXN)  # 3-4
    append(lg, [ABORT], **MARKER)  # 5
    assert txnindex_files(lg) == ["00000000000000000000.txnindex"]
    index = lg.active_segment.txn_index
    assert index.entries == [AbortedTxn(7, 3, 5, 6)]
    with open(os.path.join(lg.dir, "00000000000000000000.txnindex"), "rb") as f:
        assert f.read() == struct.pack(">hqqqq", 0, 7, 3, 5, 6)  # Kafka's 34-byte entry
    assert lg.aborted_transactions(0, region_from(lg, 0)) == [(7, 3)]
    assert lg.aborted_transactions(6, region_from(lg, 5)) == []  # past it
    # A fetch stopping before the transaction doesn't get it.
    first_two = lg.read(0, 1, lg.log_end_offset)  # one batch: offset 0
    assert lg.aborted_transactions(0, first_two) == []


def test_lso_waits_for_the_marker_to_be_replicated(tmp_path):
    lg = make_log(tmp_path)
    batch = rb.build_batch([rb.Record(0, 1000, b"k", b"v")], base_sequence=0, **TXN)
    lg.append_as_leader(memoryview(batch))
    lg.update_high_watermark(1)
    assert lg.last_stable_offset() == 0
    marker = rb.build_batch([rb.Record(0, 1000, *COMMIT)], **MARKER)
    lg.append_as_leader(memoryview(marker))
    assert lg.last_stable_offset() == 0  # HW 1: the marker at 1 isn't replicated
    lg.update_high_watermark(2)
    assert lg.last_stable_offset() == 2


def test_index_follows_segments_through_retention_truncation_and_reload(tmp_path):
    deleted = []
    lg = make_log(tmp_path, on_delete_files=lambda segs, delay: deleted.extend(segs))
    append(lg, [(b"k", b"a")], base_sequence=0, **TXN)  # 0
    append(lg, [ABORT], **MARKER)  # 1
    lg.roll()
    append(lg, [(b"k", b"b")], base_sequence=1, **TXN)  # 2
    append(lg, [ABORT], **MARKER)  # 3
    append(lg, [(b"k", b"c")], base_sequence=2, **TXN)  # 4
    append(lg, [ABORT], **MARKER)  # 5
    assert txnindex_files(lg) == [
        "00000000000000000000.txnindex", "00000000000000000002.txnindex",
    ]  # fmt: skip
    # A fetch in the first segment collects from the later one until an entry's LSO shows
    # that nothing later overlaps.
    assert lg.aborted_transactions(0, region_from(lg, 0)) == [(7, 0)]
    assert lg.aborted_transactions(2, region_from(lg, 2)) == [(7, 2), (7, 4)]
    # Truncation (a follower diverging) drops the entries of markers it removes.
    lg.truncate_to(4)
    assert lg.active_segment.txn_index.entries == [AbortedTxn(7, 2, 3, 4)]
    lg = reopen(lg)
    assert lg.segments[-1].txn_index.entries == [AbortedTxn(7, 2, 3, 4)]
    # Retention takes the index with its segment (renamed .deleted, removed later).
    lg.on_delete_files = lambda segs, delay: deleted.extend(segs)
    lg.delete_segments([lg.segments[0]])
    assert "00000000000000000000.txnindex.deleted" in os.listdir(lg.dir)
    assert deleted[0].txn_index.path.endswith(".txnindex.deleted")


def test_compaction_keeps_the_index_of_the_markers_it_keeps(tmp_path):
    lg = make_log(tmp_path, **{"cleanup.policy": "compact"})
    append(lg, [(b"k", b"v1")])  # 0
    append(lg, [(b"k", b"aborted")], base_sequence=0, **TXN)  # 1
    append(lg, [ABORT], **MARKER)  # 2
    lg.roll()
    append(lg, [(b"k", b"v2")])  # 3
    lg.roll()
    append(lg, [(b"z", b"active")])
    clean(cleaner_for(lg), lg)
    # Both cleaned segments became one, holding the marker and its index entry.
    assert [s.base_offset for s in lg.segments] == [0, 4]
    assert [(r.offset, r.value) for r in records(lg)] == [(3, b"v2"), (4, b"active")]
    assert lg.segments[0].txn_index.entries == [AbortedTxn(7, 1, 2, 3)]
    assert "00000000000000000000.txnindex" in txnindex_files(lg)
    lg = reopen(lg, close=True)
    assert lg.segments[0].txn_index.entries == [AbortedTxn(7, 1, 2, 3)]


def test_swap_interrupted_by_a_crash_carries_the_index(tmp_path):
    """A crash after the cleaned segment's `.log.swap` was committed: start-up finishes the
    swap, `.txnindex.swap` included."""
    lg = make_log(tmp_path)
    append(lg, [(b"k", b"a")], base_sequence=0, **TXN)
    append(lg, [ABORT], **MARKER)
    lg.roll()
    append(lg, [(b"z", b"z")])
    seg = lg.segments[0]
    lg.close()
    for ext in (".index", ".timeindex", ".txnindex", ".log"):  # as replace_segments leaves them
        name = os.path.join(lg.dir, f"{0:020d}{ext}")
        os.replace(name, name + ".swap")
    lg = reopen(lg, close=False)
    assert lg.segments[0].base_offset == seg.base_offset
    assert lg.segments[0].txn_index.entries == [AbortedTxn(7, 0, 1, 2)]
    assert txnindex_files(lg) == ["00000000000000000000.txnindex"]

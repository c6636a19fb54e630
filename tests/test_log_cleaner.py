"""Log compaction on a Log, without a broker: what is kept, how batches look, crash recovery."""

from __future__ import annotations

import asyncio
import errno
import os
import random

import pytest
from storage_helpers import (
    append,
    batches,
    clean,
    cleaner_for,
    crc_ok,
    make_log,
    records,
    reopen,
)

from protocol import records as rb
from pykbroker.storage import cleaner as cleaner_mod
from pykbroker.storage.cleaner import CHECKPOINT_FILE, read_checkpoint

COMPACT = {"cleanup.policy": ["compact"], "segment.bytes": 4096}


def fill(lg, n_batches=150, keys=12, seed=1, codecs=(0,), tombstone_every=9):
    """Random updates to few keys; returns {offset: (key, value)} of everything written."""
    rnd = random.Random(seed)
    written = {}
    for i in range(n_batches):
        pairs = []
        for j in range(rnd.randint(1, 4)):
            key = f"key-{rnd.randrange(keys)}".encode()
            value = None if (i * 4 + j) % tombstone_every == 0 else f"v{i}.{j}".encode() * 3
            pairs.append((key, value))
        base = append(lg, pairs, codec=rnd.choice(codecs), ts=1_000 + i)
        for j, pair in enumerate(pairs):
            written[base + j] = pair
    return written


def newest(written, below):
    latest = {}
    for off in sorted(written):
        if off < below:
            latest[written[off][0]] = off
    return latest


def check_compacted(lg, written, end, tombstones_kept=True):
    """Below `end` exactly the newest record per key (tombstones optional); above it everything."""
    latest = newest(written, end)
    got = records(lg)
    for r in got:
        assert written[r.offset] == (r.key, r.value), "a record changed its offset or content"
    below = {r.offset for r in got if r.offset < end}
    expected = {off for off in latest.values() if tombstones_kept or written[off][1] is not None}
    assert below == expected
    above = [r.offset for r in got if r.offset >= end]
    assert above == sorted(off for off in written if off >= end)


@pytest.mark.parametrize("codecs", [(0,), (1, 2, 3, 4)], ids=["uncompressed", "compressed"])
def test_newest_record_per_key_at_original_offsets(tmp_path, codecs):
    lg = make_log(tmp_path, **COMPACT)
    written = fill(lg, codecs=codecs)
    leo = lg.log_end_offset
    cl = cleaner_for(lg)
    clean(cl, lg)
    end = cl.checkpoint(lg)
    assert end == lg.active_segment.base_offset
    check_compacted(lg, written, end)
    assert lg.log_end_offset == leo
    for header, data in batches(lg):
        assert crc_ok(data)
        assert header.record_count <= header.last_offset_delta + 1
    # The same holds after a restart, and reads through the offset index land on the records.
    lg = reopen(lg)
    check_compacted(lg, written, end)
    for off in newest(written, end).values():
        region = lg.read(off, 1 << 20, lg.log_end_offset)
        first = rb.read_header(region.read())
        assert first.base_offset <= off <= first.last_offset


def test_compressed_batches_keep_their_codec(tmp_path):
    lg = make_log(tmp_path, **COMPACT)
    codec_of = {}
    for i in range(40):
        codec = 1 + i % 4
        base = append(lg, [(b"a", b"%d" % i), (b"b", b"%d" % i), (f"u{i}".encode(), b"x")],
                      codec=codec)  # fmt: skip
        codec_of[base] = codec
    cl = cleaner_for(lg)
    clean(cl, lg)
    thinned = 0
    for header, data in batches(lg):
        if header.base_offset < cl.checkpoint(lg):
            assert header.compression == codec_of[header.base_offset]
            thinned += header.record_count < 3
            assert crc_ok(data)
            rb.decode_records(data)  # decompresses
    assert thinned > 30


def test_tombstones_go_after_delete_retention(tmp_path):
    lg = make_log(tmp_path, **COMPACT, **{"delete.retention.ms": 60_000})
    written = fill(lg, tombstone_every=3)
    cl = cleaner_for(lg)
    t0 = 1_700_000_000_000
    clean(cl, lg, now=t0)
    end = cl.checkpoint(lg)
    check_compacted(lg, written, end, tombstones_kept=True)
    stamped = [
        h for h, data in batches(lg)
        if h.attributes & rb.DELETE_HORIZON_MASK and h.base_offset < end
    ]  # fmt: skip
    assert stamped and all(h.base_timestamp == t0 + 60_000 for h in stamped)
    # Record timestamps survive the delete horizon becoming the batches' base timestamp.
    for r in records(lg):
        if r.offset < end:
            assert r.timestamp < 2_000
    assert cl.horizons[(lg.topic, lg.partition)] == t0 + 60_000
    assert not cl.log_to_clean(lg, t0 + 59_999).tombstones_due
    assert cl.log_to_clean(lg, t0 + 60_000).tombstones_due
    assert cl.grab_filthiest(t0 + 60_000) is not None  # nothing dirty, but tombstones are due
    clean(cl, lg, now=t0 + 60_000)
    check_compacted(lg, written, end, tombstones_kept=False)
    assert (lg.topic, lg.partition) not in cl.horizons
    assert cl.grab_filthiest(t0 + 10**9) is None


def test_empty_batches_keep_producer_state_and_offsets(tmp_path):
    lg = make_log(tmp_path, **COMPACT)
    for seq in range(30):  # an idempotent producer rewriting one key
        append(lg, [(b"k", b"%d" % seq)], producer_id=7, producer_epoch=0, base_sequence=seq)
    append(lg, [(b"other", b"x")])
    lg.roll()
    last = lg.log_end_offset - 2  # the producer's last batch
    cl = cleaner_for(lg)
    clean(cl, lg)
    kept = [(h.base_offset, h.record_count) for h, _ in batches(lg)]
    # The producer's last batch holds the newest value; the segment's last batch stays too.
    assert kept == [(last, 1), (last + 1, 1)]
    lg.producer_state.producers.clear()
    lg = reopen(lg)
    with pytest.raises(Exception, match="sequence"):
        append(lg, [(b"k", b"late")], producer_id=7, producer_epoch=0, base_sequence=35)
    dup = append(lg, [(b"k", b"29")], producer_id=7, producer_epoch=0, base_sequence=29)
    assert dup == last  # a retry of the last batch is still recognised


def test_emptied_last_batch_of_a_segment_stays_empty(tmp_path):
    lg = make_log(tmp_path, **{**COMPACT, "segment.bytes": 150})  # each segment its own group
    append(lg, [(b"a", b"1")])
    append(lg, [(b"b", b"1")])
    lg.roll()
    append(lg, [(b"b", b"2")])
    lg.roll()
    cl = cleaner_for(lg)
    clean(cl, lg)
    got = [(h.base_offset, h.record_count) for h, _ in batches(lg)]
    assert got == [(0, 1), (1, 0), (2, 1)]


def test_aborted_transactions_never_shadow_committed_values(tmp_path):
    lg = make_log(tmp_path, **COMPACT)
    append(lg, [(b"k", b"committed")])
    txn = {"producer_id": 9, "producer_epoch": 0, "transactional": True}
    append(lg, [(b"k", b"aborted")], base_sequence=0, **txn)
    marker = {"control": True, "producer_id": 9, "producer_epoch": 0}
    abort_key, commit_key = b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"
    append(lg, [(abort_key, b"\x00\x00\x00\x00\x00\x00")], **marker)
    append(lg, [(b"j", b"in-txn")], base_sequence=1, **txn)
    append(lg, [(commit_key, b"\x00\x00\x00\x00\x00\x00")], **marker)
    append(lg, [(b"j", b"old")])  # a later non-transactional write wins over the txn's value
    lg.roll()
    append(lg, [(b"open", b"1")], base_sequence=2, **txn)  # still open: the LSO stops cleaning
    append(lg, [(b"x", b"after")])
    lg.roll()
    cl = cleaner_for(lg)
    assert lg.last_stable_offset() == 6
    clean(cl, lg)
    assert cl.checkpoint(lg) == 6
    got = [(r.offset, r.key, r.value) for r in records(lg)]
    assert got == [
        (0, b"k", b"committed"),
        (5, b"j", b"old"),
        (6, b"open", b"1"),
        (7, b"x", b"after"),
    ]
    markers = [h.base_offset for h, _ in batches(lg) if h.is_control]
    assert markers == [2, 4]


def test_keyless_records_are_dropped(tmp_path):
    """Keyless records a compacted topic holds (written before it was compacted; produce now
    refuses them) go at the first cleaning."""
    lg = make_log(tmp_path, **COMPACT)
    recs = [rb.Record(0, 1_000, None, b"nokey"), rb.Record(1, 1_000, b"k", b"v")]
    lg.append_as_follower(rb.build_batch(recs))  # replication appends are not validated
    lg.update_high_watermark(lg.log_end_offset)
    append(lg, [(b"z", b"z")])
    lg.roll()
    clean(cleaner_for(lg), lg)
    assert [(r.key, r.value) for r in records(lg)] == [(b"k", b"v"), (b"z", b"z")]


def test_min_compaction_lag_and_dirty_ratio(tmp_path):
    lg = make_log(tmp_path, **COMPACT, **{"min.compaction.lag.ms": 10_000})
    for i in range(20):
        append(lg, [(b"k%d" % i, b"v")], ts=1_000 + i * 1_000)
        if i % 5 == 4:
            lg.roll()
    cl = cleaner_for(lg)
    # Segments whose newest record is younger than the lag stay dirty.
    ltc = cl.log_to_clean(lg, now=15_000)
    assert ltc.first_uncleanable == 5
    ltc = cl.log_to_clean(lg, now=19_000 + 20_000)
    assert ltc.first_uncleanable == lg.active_segment.base_offset == 20
    clean(cl, lg, now=40_000)
    assert cl.checkpoint(lg) == 20
    # Nothing dirty now; a little new data is below min.cleanable.dirty.ratio (0.5).
    assert cl.grab_filthiest(now=40_000) is None
    append(lg, [(b"k", b"new")], ts=40_000)
    lg.roll()
    assert cl.log_to_clean(lg, 10**13).ratio < 0.5
    assert cl.grab_filthiest(now=10**13) is None
    lg.config.values["min.cleanable.dirty.ratio"] = 0.01  # a live config change
    assert cl.grab_filthiest(now=10**13).log is lg


def test_max_compaction_lag_rolls_and_forces_cleaning(tmp_path):
    lg = make_log(tmp_path, **COMPACT, **{"max.compaction.lag.ms": 1, "segment.ms": 10**9})
    append(lg, [(b"k", b"1")], ts=1_000)
    while lg.active_segment.base_offset == 0:  # max.compaction.lag.ms < segment.ms rolls
        append(lg, [(b"k", b"2")], ts=1_000)
    lg.config.values["min.cleanable.dirty.ratio"] = 1.0  # the ratio alone would never clean
    ltc = cl_ltc = cleaner_for(lg).log_to_clean(lg, now=10_000)
    assert ltc.compact_now and cl_ltc.cleanable_bytes > 0


def test_cleaned_segments_merge_and_checkpoint_is_kafkas_format(tmp_path):
    lg = make_log(tmp_path, **COMPACT)
    written = fill(lg, n_batches=300)
    cl = cleaner_for(lg)
    clean(cl, lg)
    first_round = len(lg.segments)
    more = fill(lg, n_batches=100, seed=2)
    written.update(more)
    clean(cl, lg)
    assert len(lg.segments) < first_round  # small cleaned segments are grouped together
    check_compacted(lg, written, cl.checkpoint(lg))
    path = os.path.join(str(tmp_path), CHECKPOINT_FILE)
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[:2] == ["0", "1"] and lines[2] == f"t 0 {cl.checkpoint(lg)}"
    assert read_checkpoint(path) == {("t", 0): cl.checkpoint(lg)}


def test_a_fetch_in_flight_keeps_reading_the_old_segment(tmp_path):
    doomed = []
    lg = make_log(tmp_path, on_delete_files=lambda segs, delay: doomed.extend(segs), **COMPACT)
    fill(lg)
    region = lg.read(0, 1 << 20, lg.log_end_offset)
    before = region.read()
    clean(cleaner_for(lg), lg)
    assert region.segment in doomed and region.segment.log_path.endswith(".deleted")
    assert region.read() == before  # same open file, renamed but not yet closed
    assert lg.read(0, 1 << 20, lg.log_end_offset).read() != before


class Crash(Exception):
    pass


def crash_at(monkeypatch, n: int, name: str):
    """Make the n-th call of os.<name> raise, as if the process died there."""
    real = getattr(os, name)
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Crash()
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)
    return calls


def leftovers(lg):
    return [n for n in os.listdir(lg.dir) if n.endswith((".cleaned", ".swap", ".deleted"))]


@pytest.mark.parametrize("step", range(1, 10))
def test_crash_during_swap_leaves_an_old_or_new_log(tmp_path, monkeypatch, step):
    """A crash at each rename of the swap: restart finds either the old log or the new one."""
    lg = make_log(tmp_path, **{**COMPACT, "segment.bytes": 1 << 20})
    written = fill(lg, n_batches=60)
    end = lg.log_end_offset
    lg.roll()
    before = [(r.offset, r.key, r.value) for r in records(lg)]
    cl = cleaner_for(lg)
    calls = crash_at(monkeypatch, step, "rename")
    with pytest.raises(Crash):
        clean(cl, lg)
    monkeypatch.undo()
    assert calls["n"] == step
    # One group: 3 renames (.cleaned -> .swap), 3 (old -> .deleted), 3 (.swap -> final).
    lg = reopen(lg)
    assert leftovers(lg) == []
    after = [(r.offset, r.key, r.value) for r in records(lg)]
    if step <= 3:
        assert after == before  # not committed: the originals stand
    else:
        check_compacted(lg, written, end)  # committed: recovery finished the swap
    assert lg.log_end_offset == end
    clean(cleaner_for(lg), lg)  # and the log cleans normally afterwards
    check_compacted(lg, written, end)


def test_crash_while_writing_cleaned_files(tmp_path, monkeypatch):
    lg = make_log(tmp_path, **COMPACT)
    fill(lg)
    before = [(r.offset, r.value) for r in records(lg)]
    real = cleaner_mod.LogSegment.flush

    def die(self):
        real(self)
        raise Crash()

    monkeypatch.setattr(cleaner_mod.LogSegment, "flush", die)
    cl = cleaner_for(lg)
    with pytest.raises(Crash):
        clean(cl, lg)
    monkeypatch.undo()
    assert leftovers(lg) == []  # the failed group removed its own files
    # Leave a half-written cleaned segment behind, as a SIGKILL would.
    seg = lg.segments[0]
    for ext in (".log", ".index", ".timeindex"):
        with open(os.path.join(lg.dir, f"{seg.base_offset:020d}{ext}.cleaned"), "wb") as f:
            f.write(b"\x00" * 100)
    with open(os.path.join(lg.dir, f"{seg.base_offset:020d}.index.swap"), "wb") as f:
        f.write(b"\x00" * 16)
    lg = reopen(lg, close=False)
    assert leftovers(lg) == []
    assert [(r.offset, r.value) for r in records(lg)] == before


def test_record_parsing_agrees_with_the_codec():
    """The cleaner's inline varint parsing against protocol.records, on awkward records."""
    rnd = random.Random(5)
    for _ in range(200):
        n = rnd.randint(1, 30)
        offsets = sorted(rnd.sample(range(100_000), n))
        recs = []
        for off in offsets:
            key = None if rnd.random() < 0.1 else os.urandom(rnd.choice([0, 1, 63, 64, 200, 9000]))
            value = None if rnd.random() < 0.2 else os.urandom(rnd.choice([0, 1, 60, 70, 20000]))
            ts = 1_700_000_000_000 + rnd.randint(-(10**9), 10**9)
            recs.append(rb.Record(off, ts, key, value, [("h", b"x")] if rnd.random() < 0.3 else []))
        batch = bytes(rb.build_batch(recs))
        header = rb.read_header(batch)
        body = cleaner_mod.batch_body(batch, 0, header)
        spans = cleaner_mod.parse_records(body, header)
        assert [(s[4], s[5], s[6], s[7]) for s in spans] == [
            (r.offset, r.timestamp, r.key, r.value is None) for r in rb.decode_records(batch)
        ]
        assert cleaner_mod.parse_keys(body, header) == [
            (r.key, r.offset) for r in recs if r.key is not None
        ]
        # Re-encoding against a delete horizon keeps every timestamp.
        rebuilt = cleaner_mod.rebuild_batch(header, body, spans, 1_800_000_000_000)
        assert [
            (r.offset, r.timestamp, r.key, r.value, r.headers) for r in rb.decode_records(rebuilt)
        ] == [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in recs]
        assert crc_ok(rebuilt)


def test_retention_deleting_a_segment_being_cleaned(tmp_path, monkeypatch):
    """compact,delete: retention removes a segment while its cleaned copy is being written;
    the copy is discarded instead of swapped in, the rest of the round goes on."""
    doomed = []
    lg = make_log(tmp_path, on_delete_files=lambda segs, delay: doomed.extend(segs),
                  **{**COMPACT, "cleanup.policy": ["compact", "delete"], "segment.bytes": 1200})  # fmt: skip
    written = fill(lg, n_batches=80)
    real = cleaner_mod.task_clean_group
    calls = []

    def racing(*args, **kwargs):
        if not calls:
            lg.delete_segments([lg.segments[0]])  # as retention would, meanwhile
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cleaner_mod, "task_clean_group", racing)
    cl = cleaner_for(lg)
    clean(cl, lg)
    assert cl.stats.groups_discarded == 1 and cl.stats.groups_swapped == len(calls) - 1
    assert not [n for n in os.listdir(lg.dir) if n.endswith((".cleaned", ".swap"))]
    end = cl.checkpoint(lg)
    start = lg.log_start_offset
    kept = {off: kv for off, kv in written.items() if off >= start}
    check_compacted(lg, kept, end)


def test_out_of_space_while_cleaning_backs_off_that_log_only(tmp_path):
    """No room for the `.cleaned` copy must not mark the dir FULL (that refuses appends and
    gives up leadership of every partition on it): the partial file goes, the log waits."""
    lg = make_log(tmp_path, **COMPACT)
    fill(lg)
    cl = cleaner_for(lg, **{"log.cleaner.backoff.ms": 60_000})
    assert cl.grab_filthiest(10**13) is not None
    partial = os.path.join(lg.dir, "00000000000000000000.log.cleaned")

    async def clean_without_space(ltc, now=None):
        with open(partial, "wb") as f:
            f.write(b"partial")
        cl._stop.set()  # one round is enough
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    cl.clean = clean_without_space

    async def run_once():
        cl._wake = asyncio.Event()
        await asyncio.wait_for(cl.run(), 10)

    asyncio.run(run_once())
    assert lg.log_dir.writable and lg.log_dir.state == "online"
    assert not os.path.exists(partial)
    assert (lg.topic, lg.partition) not in cl.uncleanable
    assert cl.grab_filthiest(10**13) is None  # backed off for log.cleaner.backoff.ms
    append(lg, [(b"k", b"still appendable")])

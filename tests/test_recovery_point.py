"""The recovery point (Kafka's `recovery-point-offset-checkpoint`): how far each log is known to
be on disk. After an unclean stop every segment above it is recovered -- not only the newest --
and a damaged one takes everything after it along; below it nothing is re-read."""

from __future__ import annotations

import os

from cluster_helpers import wait_until
from kafka import KafkaProducer

from protocol import records as rb
from pykbroker.config import BrokerConfig, LogConfig
from pykbroker.storage.checkpoints import RECOVERY_POINT_FILE, read_offsets
from pykbroker.storage.log_manager import LogManager, Scheduler

RECORD = b"x" * 200  # ~270 bytes a batch: four batches a 1 KiB segment


class CrashBeforeBackgroundWork(Scheduler):
    """A host whose background work (the flush of a rolled segment) never gets to run, as when
    the machine stops first."""

    def __init__(self):
        self.pending = []

    def call_later(self, delay_s, fn) -> None:
        self.pending.append(fn)

    def run_blocking(self, fn) -> None:
        self.pending.append(fn)


def manager(tmp_path, scheduler=None) -> tuple[LogManager, LogConfig]:
    config = BrokerConfig({"log.dir": str(tmp_path), "log.segment.bytes": "1024"})
    lm = LogManager(config, scheduler)
    log_config = LogConfig(config.topic_defaults(), {})
    lm.load_logs(lambda topic: log_config)
    return lm, log_config


def append(lg, n: int) -> None:
    for _ in range(n):
        offset = lg.log_end_offset
        batch = rb.build_batch([rb.Record(offset, 1_000, None, RECORD)])
        lg.append_as_leader(memoryview(batch))


def checkpoint(tmp_path) -> dict:
    return read_offsets(os.path.join(str(tmp_path), RECOVERY_POINT_FILE))


def test_unclean_stop_recovers_every_segment_above_the_recovery_point(tmp_path):
    lm, log_config = manager(tmp_path)
    lg = lm.get_or_create("t", 0, log_config)
    append(lg, 12)  # three segments, each flushed when rolled (the default host runs it now)
    lg.flush()
    lm.checkpoint_recovery_points()
    assert checkpoint(tmp_path) == {("t", 0): 12}
    # From here on rolled segments are never flushed: nothing above 12 is known to be on disk.
    lm.scheduler = lg_scheduler = CrashBeforeBackgroundWork()
    append(lg, 12)
    lm.checkpoint_recovery_points()
    assert checkpoint(tmp_path) == {("t", 0): 12}
    assert lg_scheduler.pending  # the flushes that never happened
    bases = [s.base_offset for s in lg.segments]
    assert len(bases) >= 5 and bases[-1] > 17 > bases[-3] >= 12
    damaged = next(s for s in reversed(lg.segments) if s.base_offset <= 17)
    pos = damaged.translate_offset(17)[0]
    path = damaged.log_path
    lg.close()  # the crash: no flush, no clean-shutdown marker
    with open(path, "r+b") as f:  # a write of offset 17 that never reached the disk
        f.seek(pos + rb.HEADER_SIZE + 5)
        f.write(b"\0\0\0")

    lm2, _ = manager(tmp_path)
    recovered = lm2.logs[("t", 0)]
    try:
        # Offset 17 is in a segment that is neither the newest nor below the recovery point.
        assert recovered.log_end_offset == 17
        assert [s.base_offset for s in recovered.segments][-1] <= 17
        assert not [b for b in bases if b > 17 and os.path.exists(_segment(lg.dir, b))]
        assert recovered.recovery_point == 12  # recovered, but not known to be on disk
    finally:
        lm2.shutdown()
    assert checkpoint(tmp_path) == {("t", 0): 17}  # a clean stop: all of it


def test_recovery_points_checkpointed_while_running_and_at_a_clean_stop(make_broker):
    b = make_broker({"log.segment.bytes": "1024", "log.flush.offset.checkpoint.interval.ms": "100"})
    data_dir = b.data_dir
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers)
    for _ in range(20):
        producer.send("points", RECORD, partition=0).get(timeout=10)
    producer.close()
    # Rolled segments are fsynced in the background; the checkpoint follows within 100 ms.
    # The active segment is not fsynced (no flush.messages): the point stays below the end.
    running = wait_until(lambda: checkpoint(data_dir).get(("points", 0)), what="a checkpoint")
    assert 0 < running < 20
    b.stop()
    assert checkpoint(data_dir)[("points", 0)] == 20


def _segment(directory: str, base: int) -> str:
    return os.path.join(directory, f"{base:020d}.log")


def _checkpointed(data_dir) -> dict:
    return read_offsets(os.path.join(str(data_dir), RECOVERY_POINT_FILE))


def test_truncation_below_the_recovery_point_and_delete_checkpoint_it(tmp_path):
    """Kafka checkpoints recovery points in truncateTo and on delete: a crash after either must
    not trust the old, higher point for bytes written since."""
    data = tmp_path / "data"
    manager = LogManager(BrokerConfig({"log.dir": str(data)}))
    config = LogConfig(manager.config.topic_defaults(), {})
    manager.load_logs(lambda topic: config)
    lg = manager.get_or_create("t", 0, config)
    for i in range(10):
        lg.append_as_leader(memoryview(rb.build_batch([rb.Record(0, 1_000, None, b"v%d" % i)])))
    lg.flush()
    manager.checkpoint_recovery_points()
    assert _checkpointed(data)[("t", 0)] == 10
    lg.truncate_to(4)
    assert _checkpointed(data)[("t", 0)] == 4
    manager.delete("t", 0)
    assert ("t", 0) not in _checkpointed(data)
    manager.shutdown()

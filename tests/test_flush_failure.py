"""A failed fsync takes the log dir OFFLINE, ENOSPC included (Linux reports a failed writeback
once and may drop the dirty pages, so a later fsync that succeeds proves nothing), and a dir
whose flush failed gets no clean-shutdown marker. Kafka fails the dir on any flush IOException.

fsync failures can't be provoked on a real filesystem without a device-mapper fault target, so
these tests make os.fsync fail for the storage module that calls it."""

from __future__ import annotations

import errno
import os

import pytest
from storage_helpers import append, broker_config, make_log

from protocol.errors import ErrorCode, KafkaError
from pykbroker.config import LogConfig
from pykbroker.storage import log as log_module
from pykbroker.storage import segment as segment_module
from pykbroker.storage.log_dir_failure import OFFLINE, LogDir
from pykbroker.storage.log_manager import CLEAN_SHUTDOWN_FILE, LogManager


def _failing_fsync(monkeypatch, err: int) -> None:
    def fsync(fd):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(segment_module.os, "fsync", fsync)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_failed_flush_after_append_takes_the_dir_offline(tmp_path, monkeypatch, err):
    lg = make_log(tmp_path, **{"flush.messages": 1})
    lg.log_dir = LogDir(str(tmp_path))
    append(lg, [(None, b"synced")])
    point = lg.recovery_point
    _failing_fsync(monkeypatch, err)
    with pytest.raises(KafkaError) as raised:
        append(lg, [(None, b"lost?")])
    assert raised.value.code == ErrorCode.KAFKA_STORAGE_ERROR
    assert lg.log_dir.state == OFFLINE  # not FULL: no probe may bring it back
    monkeypatch.undo()  # fsync works again: the dir stays offline and the point stays put
    with pytest.raises(KafkaError):
        append(lg, [(None, b"after")])
    assert lg.log_dir.state == OFFLINE
    assert lg.recovery_point == point
    lg.close()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_no_clean_shutdown_marker_after_a_failed_flush(tmp_path, monkeypatch, err):
    data = tmp_path / "data"
    manager = LogManager(broker_config(data))
    manager.load_logs(lambda topic: LogConfig(manager.config.topic_defaults(), {}))
    lg = manager.get_or_create("t", 0, LogConfig(manager.config.topic_defaults(), {}))
    append(lg, [(None, b"unflushed")])
    _failing_fsync(monkeypatch, err)
    manager.shutdown()
    assert manager.failure_channel.dir_of(str(data)).state == OFFLINE
    assert not os.path.exists(data / CLEAN_SHUTDOWN_FILE)


def test_failed_directory_fsync_on_roll_leaks_no_descriptor(tmp_path, monkeypatch):
    lg = make_log(tmp_path)
    append(lg, [(None, b"v")])
    before = len(os.listdir("/proc/self/fd"))

    def fsync_dir(path):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(log_module, "fsync_dir", fsync_dir)
    for _ in range(3):
        with pytest.raises(OSError):
            lg.roll()
    assert len(os.listdir("/proc/self/fd")) == before
    monkeypatch.undo()
    lg.close()

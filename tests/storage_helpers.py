"""Helpers for storage unit tests: a Log in a temp dir, batch building, reading it all back."""

from __future__ import annotations

import asyncio
import os

from crc32c import crc32c

from protocol import records as rb
from pykbroker.config import BrokerConfig, LogConfig
from pykbroker.storage.cleaner import LogCleaner
from pykbroker.storage.log import Log


def broker_config(tmp_path, **props) -> BrokerConfig:
    return BrokerConfig({"log.dir": str(tmp_path), **{k: str(v) for k, v in props.items()}})


def make_log(tmp_path, *, on_delete_files=None, name="t-0", **overrides) -> Log:
    bc = broker_config(tmp_path)
    cfg = LogConfig(bc.topic_defaults(), overrides)
    topic, _, part = name.rpartition("-")
    return Log(
        os.path.join(str(tmp_path), name), topic, int(part), cfg, on_delete_files=on_delete_files
    )


def reopen(lg: Log, *, close: bool = True) -> Log:
    """The same log loaded again from disk (after a clean close, or as after a crash)."""
    if close:
        lg.close()
    return Log(lg.dir, lg.topic, lg.partition, lg.config, recover=True)


def append(lg: Log, pairs, *, ts: int = 1_000, codec: int = 0, **batch_args) -> int:
    """Append one batch of (key, value) pairs; returns its base offset. HW follows the LEO."""
    recs = [rb.Record(i, ts, k, v) for i, (k, v) in enumerate(pairs)]
    batch = rb.build_batch(recs, compression_type=codec, **batch_args)
    info = lg.append_as_leader(memoryview(batch))
    lg.update_high_watermark(lg.log_end_offset)
    return info.first_offset


def batches(lg: Log) -> list[tuple[rb.BatchHeader, bytes]]:
    """(header, raw bytes) of every batch from the log start offset."""
    out = []
    for seg in lg.segments:
        for pos, header in seg.iter_batches():
            if header.last_offset >= lg.log_start_offset:
                out.append((header, os.pread(seg.fd, header.size, pos)))
    return out


def records(lg: Log) -> list[rb.Record]:
    out = []
    for header, data in batches(lg):
        if not header.is_control:
            out.extend(r for r in rb.decode_records(data) if r.offset >= lg.log_start_offset)
    return out


def crc_ok(data: bytes) -> bool:
    return crc32c(data[rb.CRC_START :]) == rb.read_header(data).crc


def cleaner_for(*logs: Log, tmp_path=None, **props) -> LogCleaner:
    dirs = sorted({os.path.dirname(lg.dir) for lg in logs})
    bc = BrokerConfig({"log.dir": dirs[0], **{k: str(v) for k, v in props.items()}})
    return LogCleaner(lambda: list(logs), dirs, bc)


def clean(cleaner: LogCleaner, lg: Log, now: int = 10**13) -> None:
    """One cleaning round of `lg`, as the background task would run it at time `now`."""
    asyncio.run(cleaner.clean(cleaner.log_to_clean(lg, now), now=now))


def wait_for(condition, timeout: float = 30, what: str = "condition"):
    """Poll `condition` until it returns something truthy (returned) or fail after `timeout`."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def broker_log(embedded, topic: str, partition: int = 0) -> Log:
    return embedded.call(lambda: embedded.broker.log_manager.get(topic, partition))


def set_topic_configs(embedded, topic: str, configs: dict[str, str]) -> None:
    """Change topic configs at runtime with the admin client (IncrementalAlterConfigs)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=embedded.bootstrap_servers)
    try:
        result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        admin.close()
    assert result == {"topic": {topic: "OK"}}, result

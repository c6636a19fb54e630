"""Broker start-up time, idle RSS, and recovery time after SIGKILL with a given amount of log.

Start-up: from spawning `python -m pykbroker` to its port accepting connections (the broker's
own `startup_ms`, from its log, is shown beside it), on an empty log dir; median of `runs`.
Idle RSS: resident memory a few seconds after start-up with no clients.
Recovery: fill a topic with `log_bytes` of 1 KiB records, SIGKILL the broker (no clean-shutdown
marker), start it again on the same log dir and time until it accepts connections; then check
that every acknowledged record is still there. A clean restart (SIGTERM) is timed beside it.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time

from . import throughput
from .common import Broker


def startup(runs: int = 3, idle_seconds: float = 3.0) -> dict:
    ready, own, rss_ready, rss_idle = [], [], [], []
    for _ in range(runs):
        with Broker() as b:
            ready.append(b.ready_seconds)
            rss_ready.append(b.rss())
            started = []
            deadline = time.monotonic() + 5
            while not started and time.monotonic() < deadline:  # the line follows the listen
                started = b.events("broker_started")
                time.sleep(0.01)
            if started and "startup_ms" in started[0]:
                own.append(started[0]["startup_ms"] / 1000)
            time.sleep(idle_seconds)  # idling is the point: RSS of a broker with nothing to do
            rss_idle.append(b.rss())
    return {"runs": runs, "ready_s": statistics.median(ready), "ready_all": ready,
            "own_startup_s": statistics.median(own) if own else None,
            "rss_ready": statistics.median(rss_ready), "rss_idle": statistics.median(rss_idle)}  # fmt: skip


def recovery(log_bytes: int, partitions: int = 4) -> dict:
    data_dir = tempfile.mkdtemp(prefix="pykbroker-bench-recovery-")
    topic = "bench-recovery"
    try:
        b = Broker(data_dir=data_dir).start()
        throughput.create_topic(b.bootstrap, topic, partitions)
        t0 = time.monotonic()
        r = throughput.produce("confluent", b.bootstrap, topic, 1024, "1", seconds=3600,
                               max_bytes=log_bytes)  # fmt: skip
        fill_s = time.monotonic() - t0
        acked = throughput.high_watermarks(b.bootstrap, topic, partitions)
        b.kill()
        b2 = Broker(data_dir=data_dir, port=b.port).start()
        killed_ready = b2.ready_seconds
        after = throughput.high_watermarks(b2.bootstrap, topic, partitions)
        b2.stop()
        b3 = Broker(data_dir=data_dir, port=b.port).start()
        clean_ready = b3.ready_seconds
        b3.stop()
        return {"log_bytes": r["bytes"], "records": acked, "fill_seconds": fill_s,
                "recovery_s": killed_ready, "records_after": after,
                "clean_restart_s": clean_ready}  # fmt: skip
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

"""Log cleaner (compaction) throughput, and what a cleaning costs produce throughput.

    python -m bench.cleaner                 # ~2 minutes
    python -m bench.cleaner --quick         # smaller logs, shorter windows
    python -m bench.cleaner --codecs none,lz4,gzip --log-mb 200

1. Cleaner throughput, in a thread of this process, without a broker: a Log of `--log-mb` MB of keyed
   records (`--keys` distinct keys, `--value-size` byte values, 100 records a batch, one codec)
   is cleaned in one round by the broker's own LogCleaner (map build + rewrite, in its thread).
   Figures: MB of log processed per second (Kafka's "MB/sec" line: bytes read by the rewrite
   over the round's wall time), the map phase alone, records/s. Ceiling: reading the same
   segment files (page cache) in 1 MiB chunks.
2. Produce throughput with and without a cleaning, the cleaner in its worker process (the
   default) and in a thread of the broker (pykbroker.log.cleaner.process=false, where it takes
   turns with the event loop for the GIL): a broker process; confluent-kafka produces
   `--value-size` values for `--seconds` to a delete-policy topic, once with the cleaner idle
   and once right after a large dirty topic is switched to cleanup.policy=compact (through
   IncrementalAlterConfigs). Deliveries are bucketed by time; the figure for "during" counts
   only deliveries inside the cleaning round (its start and end come from the broker's
   `log_cleaned` event), so a round shorter than the window is not diluted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import shutil
import tempfile
import threading
import time

from .common import MB, Broker, machine

RECORDS_PER_BATCH = 100


# --- 1. the cleaner alone ----------------------------------------------------------------------


def build_log(directory: str, log_mb: int, keys: int, value_size: int, codec: int):
    from protocol import records as rb
    from pykbroker.config import BrokerConfig, LogConfig
    from pykbroker.storage.log import Log

    bc = BrokerConfig({"log.dir": directory})
    cfg = LogConfig(bc.topic_defaults(), {"cleanup.policy": ["compact"],
                                          "segment.bytes": 64 << 20})  # fmt: skip
    lg = Log(os.path.join(directory, "bench-0"), "bench", 0, cfg)
    rnd = random.Random(7)
    values = [os.urandom(value_size) for _ in range(64)]
    now = int(time.time() * 1000)
    target = log_mb * MB
    while lg.size < target:
        recs = [
            rb.Record(i, now, b"key-%08d" % rnd.randrange(keys), values[rnd.randrange(64)])
            for i in range(RECORDS_PER_BATCH)
        ]
        lg.append_as_leader(memoryview(rb.build_batch(recs, compression_type=codec)))
    lg.roll()
    lg.update_high_watermark(lg.log_end_offset)
    lg.flush()
    return lg, bc


def read_ceiling(lg) -> float:
    """MB/s reading the log's segment files in 1 MiB chunks (they are in the page cache)."""
    total = 0
    t0 = time.perf_counter()
    for seg in lg.segments:
        pos = 0
        while pos < seg.size:
            chunk = os.pread(seg.fd, 1 << 20, pos)
            total += len(chunk)
            pos += len(chunk)
    return total / MB / (time.perf_counter() - t0)


def cleaner_throughput(log_mb: int, keys: int, value_size: int, codec_name: str) -> dict:
    from protocol import compression
    from pykbroker.storage.cleaner import LogCleaner

    codec = {v: k for k, v in compression.NAMES.items()}[codec_name]
    directory = tempfile.mkdtemp(prefix="pykbroker-bench-cleaner-")
    try:
        lg, bc = build_log(directory, log_mb, keys, value_size, codec)
        size = lg.size
        ceiling = read_ceiling(lg)
        cleaner = LogCleaner(lambda: [lg], [directory], bc)
        ltc = cleaner.log_to_clean(lg, int(time.time() * 1000))
        t0 = time.perf_counter()
        asyncio.run(cleaner.clean(ltc))
        seconds = time.perf_counter() - t0
        cleaner.shutdown()
        r = cleaner.stats.last_round
        return {
            "codec": codec_name, "log_mb": size / MB, "seconds": seconds,
            "mb_per_s": r["bytes_read"] / MB / seconds,
            "records_per_s": r["records_read"] / seconds,
            "kept_mb": lg.size / MB, "keys": r["keys"], "read_ceiling_mb_per_s": ceiling,
        }  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- 2. produce throughput while the cleaner works -------------------------------------------


class TimedProducer:
    """confluent-kafka producing to `topic` for `seconds`; delivery times kept per record."""

    def __init__(self, bootstrap: str, topic: str, value_size: int):
        from confluent_kafka import Producer

        self.topic = topic
        self.values = [os.urandom(value_size) for _ in range(64)]
        self.size = value_size
        self.delivered: list[float] = []
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5,
                                  "batch.size": 1_000_000,
                                  "queue.buffering.max.kbytes": 256 * 1024})  # fmt: skip

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            self.delivered.append(time.time())

    def run(self, seconds: float) -> tuple[float, float]:
        """Produce for `seconds`; returns the (start, end) wall-clock window."""
        p = self.producer
        start = time.time()
        end = start + seconds
        i = 0
        while time.time() < end:
            try:
                p.produce(self.topic, self.values[i % 64], on_delivery=self._on_delivery)
            except BufferError:
                p.poll(0.005)
                continue
            i += 1
            if i % 2000 == 0:
                p.poll(0)
        p.flush(120)
        return start, end

    def mb_per_s(self, start: float, end: float) -> float:
        n = sum(1 for t in self.delivered if start <= t <= end)
        return n * self.size / MB / (end - start) if end > start else float("nan")


def fill_dirty_topic(bootstrap: str, topic: str, mb: int, keys: int, value_size: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 20,
                  "batch.size": 1_000_000, "queue.buffering.max.kbytes": 256 * 1024})  # fmt: skip
    values = [os.urandom(value_size) for _ in range(64)]
    rnd = random.Random(3)
    for i in range(mb * MB // value_size):
        while True:
            try:
                p.produce(topic, key=b"key-%08d" % rnd.randrange(keys), value=values[i % 64])
                break
            except BufferError:
                p.poll(0.01)
        if i % 5000 == 0:
            p.poll(0)
    if p.flush(300):
        raise RuntimeError("the dirty topic was not written")


def create(bootstrap: str, topic: str, configs: dict) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(60)


def set_compact(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
    ])  # fmt: skip
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result(60)


def produce_during_cleaning(dirty_mb: int, keys: int, value_size: int, seconds: float,
                            process: bool) -> dict:  # fmt: skip
    overrides = {"log.cleaner.backoff.ms": "100", "log.segment.bytes": str(64 << 20),
                 "pykbroker.log.cleaner.process": str(process).lower()}  # fmt: skip
    with Broker(overrides) as broker:
        bs = broker.bootstrap
        create(bs, "load", {})
        create(bs, "dirty", {"segment.bytes": str(64 << 20)})
        fill_dirty_topic(bs, "dirty", dirty_mb, keys, value_size)
        producer = TimedProducer(bs, "load", value_size)
        producer.run(1.0)  # warm-up: connections, metadata
        base_start, base_end = producer.run(seconds)
        baseline = producer.mb_per_s(base_start, base_end)
        set_compact(bs, "dirty")
        start, end = producer.run(seconds)
        deadline = time.monotonic() + 600
        while not broker.events("log_cleaned") and time.monotonic() < deadline:
            time.sleep(0.2)  # waiting for the round to finish: its end is what we measure
        event = broker.events("log_cleaned")[0]
        clean_end = dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        clean_start = clean_end - event["seconds"]
        lo, hi = max(start, clean_start), min(end, clean_end)
        return {
            "baseline_mb_per_s": baseline,
            "during_mb_per_s": producer.mb_per_s(lo, hi),
            "overlap_seconds": max(hi - lo, 0.0),
            "cleaner_seconds": event["seconds"],
            "cleaner_mb_per_s": event["bytes_read"] / MB / event["seconds"],
            "dirty_mb": event["bytes_read"] / MB,
        }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.cleaner", description=__doc__.split("\n")[0])
    ap.add_argument("--log-mb", type=int, default=100)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--value-size", type=int, default=200)
    ap.add_argument("--codecs", default="none,lz4,zstd,gzip")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--dirty-mb", type=int, default=0, help="default: enough for --seconds")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.log_mb, args.seconds, args.codecs = 30, 4.0, "none,lz4"
    m = machine()
    print(f"# pykbroker log cleaner — {m['cpu']}, {m['cores']} cores, Python {m['python']}")
    print(f"\n## Cleaner throughput ({args.log_mb} MB log, {args.keys} keys, "
          f"{args.value_size} B values, {RECORDS_PER_BATCH} records/batch)\n")  # fmt: skip
    print("| codec | log MB | kept MB | seconds | MB/s processed | records/s | read ceiling MB/s |")
    print("|---|---|---|---|---|---|---|")
    rates = []
    for codec in args.codecs.split(","):
        r = cleaner_throughput(args.log_mb, args.keys, args.value_size, codec)
        rates.append(r["mb_per_s"])
        print(f"| {codec} | {r['log_mb']:.0f} | {r['kept_mb']:.1f} | {r['seconds']:.2f} | "
              f"{r['mb_per_s']:.1f} | {r['records_per_s']:,.0f} | "
              f"{r['read_ceiling_mb_per_s']:.0f} |", flush=True)  # fmt: skip
    dirty = args.dirty_mb or int(min(max(rates[0] * args.seconds * 1.5, 20), 400))
    print(f"\n## Produce throughput while the cleaner works (confluent-kafka, acks=1, "
          f"{args.value_size} B values, {dirty} MB dirty topic, uncompressed)\n")  # fmt: skip
    print("| cleaner runs in | produce alone MB/s | produce during cleaning MB/s | overlap s "
          "| cleaner MB/s | dirty MB cleaned in |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for process in (True, False):
        r = produce_during_cleaning(dirty, args.keys, args.value_size, args.seconds, process)
        print(f"| {'a worker process' if process else 'a broker thread'} | "
              f"{r['baseline_mb_per_s']:.1f} | {r['during_mb_per_s']:.1f} | "
              f"{r['overlap_seconds']:.1f} | {r['cleaner_mb_per_s']:.1f} | "
              f"{r['dirty_mb']:.0f} MB, {r['cleaner_seconds']:.1f} s |", flush=True)  # fmt: skip


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()

"""The event loop's longest stall, read from the broker's own loop-lag probe.

    python -m bench.loop_stall                      # both scenarios: fuzz pass, cold 1 GiB read
    python -m bench.loop_stall fuzz --frames 20000
    python -m bench.loop_stall cold-read --gib 1

Every connection of a broker is served by one asyncio loop, so the longest time that loop is
held by one piece of synchronous work is the longest any client waits on top of its own
request. The broker measures it itself (pykbroker_event_loop_lag_max_seconds: how late a 20 ms
timer fired, at worst, since the broker started; Kafka has no equivalent metric), read here
from its Prometheus endpoint after:

- fuzz: a pass of the fuzzer (tests/fuzzing) against a fresh broker, known findings excluded;
- cold-read: 1 GiB produced by confluent-kafka, the broker stopped, the page cache dropped
  (/proc/sys/vm/drop_caches, root), the broker started again on the same log dir and every
  record fetched by a confluent-kafka consumer. The ceiling is a plain sequential read of the
  same segment files after dropping the cache again (what the disk gives, with no broker).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .common import MB, REPO, Broker

GIB = 1 << 30


def metric(url: str, name: str) -> float | None:
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def metrics_url(broker: Broker) -> str:
    port = broker.events("broker_started")[-1]["metrics_port"]
    return f"http://127.0.0.1:{port}/metrics"


def start(broker: Broker) -> Broker:
    before = len(broker.events("broker_started")) if broker.log_path.exists() else 0
    broker.start()
    deadline = time.monotonic() + 30
    while len(broker.events("broker_started")) <= before and time.monotonic() < deadline:
        time.sleep(0.05)  # the log line carries the metrics port
    return broker


def drop_caches() -> bool:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def fuzz(frames: int, seed: int) -> dict:
    broker = start(Broker({"metrics.port": "0"}))
    try:
        url = metrics_url(broker)
        out = Path(broker.data_dir) / "fuzz-summary.json"
        env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
        subprocess.run(
            [sys.executable, "-m", "fuzzing", "--bootstrap", broker.bootstrap,
             "--broker-pid", str(broker.pid), "--metrics-url", url, "--frames", str(frames),
             "--seed", str(seed), "--summary", str(out)],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        s = json.loads(out.read_text())
        return {
            "frames": s["frames"], "seconds": s["seconds"],
            "frames_per_second": s["frames_per_second"], "faults": s["faults"],
            "loop_lag_max_s": metric(url, "pykbroker_event_loop_lag_max_seconds"),
            "probe_max_s": s["probe_max_s"], "slowest_response_s": s["slowest_response_s"],
            "slowest_case": s["slowest_case"], "rss_max_mib": s["rss_max_mib"],
        }  # fmt: skip
    finally:
        broker.cleanup()


def produce(bootstrap: str, topic: str, total: int, value_size: int) -> float:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 20,
                  "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20})  # fmt: skip
    value = os.urandom(value_size)
    t0 = time.monotonic()
    for i in range(total // value_size):
        while True:
            try:
                p.produce(topic, value, partition=i % 4)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(300) == 0
    return time.monotonic() - t0


def consume_all(bootstrap: str, topic: str, expected: int) -> tuple[int, float]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "loop-stall",
                  "enable.auto.commit": False, "fetch.max.bytes": 50 << 20,
                  "max.partition.fetch.bytes": 8 << 20, "queued.max.messages.kbytes": 256 << 10})  # fmt: skip
    c.assign([TopicPartition(topic, p, 0) for p in range(4)])
    got = 0
    t0 = time.monotonic()
    deadline = t0 + 600
    while got < expected and time.monotonic() < deadline:
        for msg in c.consume(1000, 0.5):
            if msg.error() is None:
                got += len(msg.value())
    took = time.monotonic() - t0
    c.close()
    return got, took


def raw_read(log_dir: Path) -> tuple[int, float]:
    total = 0
    t0 = time.monotonic()
    for path in sorted(log_dir.rglob("*.log")):
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(8 << 20):
                total += len(chunk)
    return total, time.monotonic() - t0


def cold_read(gib: float, value_size: int = 10_000) -> dict:
    total = int(gib * GIB)
    data_dir = tempfile.mkdtemp(prefix="pykbroker-bench-cold-")
    topic = "cold"
    broker = start(Broker({"metrics.port": "0"}, data_dir=data_dir))
    try:
        produce_s = produce(broker.bootstrap, topic, total, value_size)
        warm_lag = metric(metrics_url(broker), "pykbroker_event_loop_lag_max_seconds")
    finally:
        broker.stop()
    log_dir = Path(broker.overrides["log.dir"])
    if not drop_caches():
        raise SystemExit("cannot drop the page cache (needs root): no cold read to measure")
    raw_bytes, raw_s = raw_read(log_dir)
    drop_caches()
    broker = start(Broker({"metrics.port": "0"}, data_dir=data_dir, port=broker.port))
    try:
        url = metrics_url(broker)
        lag_before = metric(url, "pykbroker_event_loop_lag_max_seconds")
        got, took = consume_all(broker.bootstrap, topic, (total // value_size) * value_size)
        lag = metric(url, "pykbroker_event_loop_lag_max_seconds")
        count = metric(url, "pykbroker_event_loop_lag_seconds_count")
    finally:
        broker.cleanup()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "bytes_produced": total, "produce_s": round(produce_s, 1),
        "loop_lag_max_while_producing_s": warm_lag,
        "ceiling_raw_read_MBps": round(raw_bytes / raw_s / MB, 1),
        "cold_fetch_value_bytes": got, "cold_fetch_s": round(took, 1),
        "cold_fetch_MBps": round(got / took / MB, 1),
        "ratio_to_ceiling": round((got / took) / (raw_bytes / raw_s), 2),
        "loop_lag_max_after_start_s": lag_before, "loop_lag_max_cold_read_s": lag,
        "probe_observations": count,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loop_stall", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("scenario", nargs="?", choices=("all", "fuzz", "cold-read"), default="all")
    p.add_argument("--frames", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--gib", type=float, default=1.0)
    args = p.parse_args(argv)
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    if args.scenario in ("all", "fuzz"):
        print("fuzz pass:", json.dumps(fuzz(args.frames, args.seed)), flush=True)
    if args.scenario in ("all", "cold-read"):
        print(f"cold read of {args.gib:g} GiB:", json.dumps(cold_read(args.gib)), flush=True)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the shipped config/server.properties changes for a new user, against Kafka's built-in
defaults (`pykbroker /dev/null`), with `make broker`'s settings otherwise.

    .venv/bin/python -m bench.defaults [--runs 3]

- pattern: an aiokafka consumer of a new group subscribed by pattern to a topic already holding
  a record; seconds from its start() to that record.
- four: four kafka-python consumers of a new group (session_timeout_ms=3000,
  heartbeat_interval_ms=1000) on a 4-partition topic; seconds until each has its partition, or
  the error the broker answers.

The broker runs as a separate process (`python -m pykbroker FILE`), on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .common import free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"Kafka's defaults (/dev/null)": "/dev/null",
           "shipped config/server.properties": str(ROOT / "config" / "server.properties")}  # fmt: skip


class FileBroker:
    def __init__(self, properties: str):
        self.dir = tempfile.mkdtemp(prefix="pykbroker-bench-")
        self.port = free_port()
        self.args = [sys.executable, "-m", "pykbroker", properties,
                     "--override", f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
                     "--override", f"log.dir={self.dir}/data"]  # fmt: skip
        self.proc = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FileBroker:
        from kafka import KafkaAdminClient

        self.proc = subprocess.Popen(self.args, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                KafkaAdminClient(bootstrap_servers=self.bootstrap).close()
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def create(bootstrap: str, topic: str, partitions: int, records: int = 1) -> None:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for p in range(partitions):
        for _ in range(records):
            producer.send(topic, b"x", partition=p).get(10)
    producer.close()


async def pattern_first_record(bootstrap: str) -> float:
    from aiokafka import AIOKafkaConsumer

    topic = f"dev-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, 1)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"g-{topic}",
                                auto_offset_reset="earliest")  # fmt: skip
    t0 = time.monotonic()
    await consumer.start()
    consumer.subscribe(pattern=f"^{topic}$")
    try:
        await asyncio.wait_for(consumer.getone(), 60)
        return time.monotonic() - t0
    finally:
        await consumer.stop()


def four_join(bootstrap: str) -> float | str:
    from kafka import KafkaConsumer

    topic = f"four-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, 4, records=0)
    t0 = time.monotonic()
    consumers = [KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}",
                               session_timeout_ms=3000, heartbeat_interval_ms=1000)
                 for _ in range(4)]  # fmt: skip
    try:
        while time.monotonic() - t0 < 60:
            for c in consumers:
                c.poll(50)
            if all(len(c.assignment()) == 1 for c in consumers):
                return time.monotonic() - t0
        return "no assignment in 60 s"
    except Exception as e:  # the broker's refusal, as kafka-python raises it
        return type(e).__name__
    finally:
        for c in consumers:
            c.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    for label, path in CONFIGS.items():
        with FileBroker(path) as broker:
            pattern = [
                asyncio.run(pattern_first_record(broker.bootstrap)) for _ in range(args.runs)
            ]
            four = [four_join(broker.bootstrap) for _ in range(args.runs)]
        print(f"{label}:")
        print(
            f"  aiokafka pattern consumer, start to first record: median "
            f"{statistics.median(pattern):.2f} s (runs: {', '.join(f'{x:.2f}' for x in pattern)})"
        )
        shown = ", ".join(x if isinstance(x, str) else f"{x:.2f} s" for x in four)
        print(f"  4 kafka-python consumers, session_timeout_ms=3000, all assigned: {shown}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

"""End-to-end latency at a fixed, moderate rate: produce -> broker -> consume.

A producer thread sends `rate` messages/s (acks=all, no linger), each carrying its send time
(CLOCK_MONOTONIC, shared by every process of the machine); a consumer that is already waiting
at the end of the partition records when each arrives. Reports p50/p99/p999 in ms.
"""

from __future__ import annotations

import struct
import threading
import time

from .common import percentile

STAMP = struct.Struct(">q")


def e2e_latency(client: str, bootstrap: str, topic: str, rate: int = 1000, seconds: float = 10,
                size: int = 1024) -> dict:  # fmt: skip
    if client != "confluent":
        raise ValueError("e2e latency is measured with confluent-kafka")
    from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

    total = int(rate * seconds)
    pad = b"\0" * (size - STAMP.size)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-latency",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 500,
                  "fetch.min.bytes": 1})  # fmt: skip
    c.assign([TopicPartition(topic, 0, OFFSET_END)])
    # Wait until the consumer has its fetch position (a first empty poll round trip).
    c.consume(num_messages=1, timeout=1.0)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    p.produce(topic, b"warm-up", partition=0)
    p.flush(10)
    samples: list[float] = []
    done = threading.Event()

    def send() -> None:
        interval = 1.0 / rate
        t_next = time.monotonic()
        for _ in range(total):
            now = time.monotonic()
            if now < t_next:
                time.sleep(t_next - now)  # pacing the fixed rate, not a synchronization
            p.produce(topic, STAMP.pack(time.monotonic_ns()) + pad, partition=0)
            p.poll(0)
            t_next += interval
        p.flush(30)
        done.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    deadline = time.monotonic() + seconds * 3 + 30
    while len(samples) < total and time.monotonic() < deadline:
        # poll(), not consume(n): consume waits until it has n records or times out.
        m = c.poll(0.5)
        if m is None:
            continue
        now = time.monotonic_ns()
        v = m.value()
        if m.error() is None and v and len(v) == size:
            samples.append((now - STAMP.unpack_from(v)[0]) / 1e6)
    sender.join(30)
    c.close()
    samples.sort()
    return {"count": len(samples), "sent": total, "rate": rate,
            "p50": percentile(samples, 0.5), "p99": percentile(samples, 0.99),
            "p999": percentile(samples, 0.999), "max": samples[-1] if samples else None}  # fmt: skip

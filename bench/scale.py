"""Scale curves: throughput and broker RSS as partitions (1 -> 1,000) and concurrent
connections (1 -> 500) grow.

Partitions: confluent-kafka produces 1 KiB values (acks=1, no key, so spread over all
partitions) into a topic of N partitions. Connections: N raw connections, each sending
ProduceRequests (acks=1) of one 16 x 1 KiB record batch, one request in flight per
connection; the client side is a bare asyncio loop so the broker, not the client, is measured.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time

from . import throughput

RECORDS_PER_BATCH = 16


def partitions_step(broker, partitions: int, seconds: float, size: int = 1024) -> dict:
    topic = f"bench-scale-partitions-{partitions}"
    t0 = time.monotonic()
    throughput.create_topic(broker.bootstrap, topic, partitions)
    create_s = time.monotonic() - t0
    r = throughput.produce("confluent", broker.bootstrap, topic, size, "1", seconds)
    rss = broker.rss()
    hw = throughput.high_watermarks(broker.bootstrap, topic, partitions)
    throughput.delete_topic(broker.bootstrap, topic)
    return {"partitions": partitions, "msgs": r["msgs"], "bytes": r["bytes"],
            "seconds": r["seconds"], "rss": rss, "create_seconds": create_s,
            "acked": hw}  # fmt: skip


def _batch(size: int) -> bytes:
    from kafka.record.default_records import DefaultRecordBatchBuilder

    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 22)  # fmt: skip
    now = int(time.time() * 1000)
    for i in range(RECORDS_PER_BATCH):
        b.append(i, now, None, os.urandom(size), [])
    return bytes(b.build())


def _produce_frames(topic: str, partitions: int, size: int) -> list[bytes]:
    from protocol import codec

    records = _batch(size)
    frames = []
    for p in range(partitions):
        body = {"transactional_id": None, "acks": 1, "timeout_ms": 30000,
                "topic_data": [{"name": topic, "partition_data": [{"index": p,
                                                                   "records": records}]}]}  # fmt: skip
        frames.append(codec.encode_request(0, 7, 1, "bench-conn", body))
    return frames


async def _connections(port: int, frames: list[bytes], n: int, seconds: float, rss_probe) -> dict:
    conns = []
    for i in range(0, n, 50):  # open in waves: the listen backlog is finite
        conns += await asyncio.gather(*[asyncio.open_connection("127.0.0.1", port)
                                        for _ in range(min(50, n - i))])  # fmt: skip
    done = 0
    errors = 0
    stop = time.monotonic() + seconds
    start = time.monotonic()

    async def run(idx: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal done, errors
        frame = frames[idx % len(frames)]
        while time.monotonic() < stop:
            writer.write(frame)
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            body = await reader.readexactly(size)
            # ProduceResponse v7: correlation id, topics[1], name, partitions[1], index, error.
            name_len = struct.unpack_from(">h", body, 8)[0]
            error = struct.unpack_from(">h", body, 10 + name_len + 4 + 4)[0]
            if error:
                errors += 1
            else:
                done += 1

    await asyncio.gather(*[run(i, r, w) for i, (r, w) in enumerate(conns)])
    elapsed = time.monotonic() - start
    rss = rss_probe()
    for _, w in conns:
        w.close()
    return {"requests": done, "errors": errors, "seconds": elapsed, "rss": rss}


def connections_step(broker, n: int, seconds: float, size: int = 1024, partitions: int = 8) -> dict:
    topic = "bench-scale-connections"
    frames = _produce_frames(topic, partitions, size)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    r = runner(_connections(broker.port, frames, n, seconds, broker.rss))
    msgs = r["requests"] * RECORDS_PER_BATCH
    return {"connections": n, "msgs": msgs, "bytes": msgs * size, "seconds": r["seconds"],
            "rss": r["rss"], "errors": r["errors"]}  # fmt: skip

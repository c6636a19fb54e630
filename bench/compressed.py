"""Compressed produce with and without the broker's record validation, in one run.

    python -m bench.compressed              # ~2 minutes
    python -m bench.compressed --quick      # shorter windows
    python -m bench.compressed --codecs zstd --sizes 100 --seconds 10

Two broker processes run side by side: one as shipped, one started with an internal switch
(PYKBROKER_BENCH_SKIP_COMPRESSED_VALIDATION=1, for this bench only) that skips the walk of
compressed batches (decompression and the record-by-record check of Kafka's LogValidator), so
it appends them as it did before validation existed. The load is made so the broker is the
bottleneck: the bench pre-builds one batch per codec and record size (text values from a fixed
random vocabulary, ~3x compressible, 256 KiB of records uncompressed -- a librdkafka-sized
batch) and sends it over and over in Produce v9 requests (acks=1), 16 in flight on one
connection, for `--seconds` per row, to each broker in turn (the order alternates per row, so
drift on a shared machine hits both). Figures: MB/s of records (uncompressed bytes) acked, as
a fraction of the ceiling measured in the same run (the lower of loopback TCP and sequential
file write, bench.run's produce ceiling); the broker's CPU (cores); and MB/s per broker core,
which stays comparable when other processes take CPU from the broker (on a busy machine the
MB/s figures follow the CPU the broker happens to get). The uncompressed row is the per-batch
fast path, which validation leaves alone: its two columns differ only by noise.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import time

from protocol import codec
from protocol import records as rb
from protocol.apis import ApiKey

from . import ceilings, throughput
from .common import MB, Broker, machine

SKIP_SWITCH = "PYKBROKER_BENCH_SKIP_COMPRESSED_VALIDATION"
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
BATCH_BYTES = 256 * 1024
WINDOW = 16


def text_values(size: int, n: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 9)))
             for _ in range(300)]  # fmt: skip
    out = []
    for _ in range(n):
        text = " ".join(rnd.choice(words) for _ in range(size // 4 + 2))
        out.append(text.encode()[:size])
    return out


def build_batch(codec_name: str, size: int) -> tuple[bytes, int]:
    """One batch of ~256 KiB of records compressed with the codec, and its records' bytes
    uncompressed."""
    values = text_values(size, max(1, BATCH_BYTES // size))
    now = int(time.time() * 1000)
    recs = [rb.Record(i, now, None, v) for i, v in enumerate(values)]
    batch = rb.build_batch(recs, compression_type=CODECS[codec_name])
    uncompressed = len(rb.build_batch(recs)) - rb.HEADER_SIZE
    return bytes(batch), uncompressed


def _read_frame(sock: socket.socket, buf: bytearray) -> bytes:
    while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise RuntimeError("broker closed the connection")
        buf += chunk
    n = 4 + int.from_bytes(buf[:4], "big")
    frame = bytes(buf[4:n])  # without the size
    del buf[:n]
    return frame


def blast(bootstrap: str, topic: str, batch: bytes, seconds: float) -> int:
    """Send `batch` in Produce requests, WINDOW in flight, for `seconds`; returns how many were
    acked (each checked for error 0)."""
    host, port = bootstrap.rsplit(":", 1)
    body = {"transactional_id": None, "acks": 1, "timeout_ms": 30000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}]}  # fmt: skip
    frame = codec.encode_request(ApiKey.PRODUCE, 9, 1, "bench-compressed", body)
    acked = sent = 0
    buf = bytearray()
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = time.monotonic() + seconds
        while True:
            while sent - acked < WINDOW and time.monotonic() < end:
                sock.sendall(frame)
                sent += 1
            if acked == sent:
                return acked
            resp = codec.decode_response(ApiKey.PRODUCE, 9, _read_frame(sock, buf), 5)
            err = resp.responses[0].partition_responses[0].error_code
            if err:
                raise RuntimeError(f"produce failed: error {err}")
            acked += 1


def one_row(broker: Broker, codec_name: str, size: int, seconds: float) -> dict:
    batch, uncompressed = build_batch(codec_name, size)
    topic = f"bench-compressed-{codec_name}-{size}-{int(time.time() * 1000) % 10**8}"
    throughput.create_topic(broker.bootstrap, topic, 1)
    cpu0 = broker.cpu()
    t0 = time.monotonic()
    n = blast(broker.bootstrap, topic, batch, seconds)
    elapsed = time.monotonic() - t0
    cpu1 = broker.cpu()
    throughput.delete_topic(broker.bootstrap, topic)
    cores = (cpu1 - cpu0) / elapsed if cpu0 is not None and cpu1 is not None else None
    return {"bps": n * uncompressed / elapsed, "cores": cores, "ratio": len(batch) / uncompressed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.compressed",
                                 description=__doc__.split("\n")[0])  # fmt: skip
    ap.add_argument("--codecs", default="gzip,snappy,lz4,zstd")
    ap.add_argument("--sizes", default="1024,100")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    seconds = 2.0 if args.quick else args.seconds
    m = machine()
    print(f"# pykbroker compressed produce — {m['cpu']}, {m['cores']} cores, Python {m['python']}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    tcp = ceilings.tcp_throughput(2.0 if args.quick else 4.0)
    write, _ = ceilings.file_write_read((256 if args.quick else 1024) << 20)
    ceiling = min(tcp, write)
    print(f"\nCeiling: {ceiling / MB:,.0f} MB/s (loopback TCP {tcp / MB:,.0f} MB/s, "
          f"file write {write / MB:,.0f} MB/s)")  # fmt: skip
    print(f"\n## Produce v9, acks=1, 256 KiB batches, {WINDOW} in flight, {seconds:g} s a row\n")
    print("| codec | record B | compressed/raw | validated MB/s | (of ceiling) | broker cores | "
          "MB/s per core | not validated MB/s | (of ceiling) | broker cores | MB/s per core | "
          "validated / not, per core |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    os.environ[SKIP_SWITCH] = "1"
    try:
        unvalidated = Broker().start()
    finally:
        del os.environ[SKIP_SWITCH]
    validated = Broker().start()

    def per_core(r: dict) -> float | None:
        return r["bps"] / r["cores"] if r["cores"] else None

    def cells(r: dict) -> str:
        if r["cores"] is None:
            return f"{r['bps'] / MB:.1f} | {r['bps'] / ceiling:.1%} | ? | ?"
        return (f"{r['bps'] / MB:.1f} | {r['bps'] / ceiling:.1%} | {r['cores']:.2f} | "
                f"{per_core(r) / MB:.0f}")  # fmt: skip

    try:
        rows = [(c, int(s)) for s in args.sizes.split(",")
                for c in ["none", *args.codecs.split(",")]]  # fmt: skip
        for i, (codec_name, size) in enumerate(rows):
            order = [validated, unvalidated] if i % 2 == 0 else [unvalidated, validated]
            got = {id(b): one_row(b, codec_name, size, seconds) for b in order}
            on, off = got[id(validated)], got[id(unvalidated)]
            ratio = per_core(on) / per_core(off) if on["cores"] and off["cores"] else None
            shown = f"{ratio:.2f}" if ratio is not None else "?"
            print(f"| {codec_name} | {size} | {on['ratio']:.2f} | {cells(on)} | {cells(off)} | "
                  f"{shown} |", flush=True)  # fmt: skip
    finally:
        validated.cleanup()
        unvalidated.cleanup()
    print("\nload average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()

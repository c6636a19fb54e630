"""Start to first produce: how long until a fresh broker has acknowledged a record.

Three ways a user meets a new broker, each measured in fresh processes (imports included):

- embedded: `EmbeddedBroker()` in the test process (the pytest fixture), then kafka-python's
  KafkaProducer(...).send(...).get(); timed from before `import pykbroker.embedded`.
- embedded, warm: a second broker in the same process (imports already done), as a suite's
  second function-scoped `kafka_broker` is; with kafka-python, then with confluent-kafka (most
  of kafka-python's figure is its own wait for metadata before the first send, ~100 ms,
  whether or not the topic exists).
- cli: `python -m pykbroker` spawned as a subprocess, timed from the spawn until a producer in
  the parent (kafka-python already imported) has its first ack.

    .venv/bin/python bench/startup.py [--runs 5]

Prints one line per mode: median, min and max milliseconds over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

EMBEDDED = r"""
import json, sys, time
t0 = time.perf_counter()
from pykbroker.embedded import EmbeddedBroker
from kafka import KafkaProducer
imported = time.perf_counter()
out = {}
for name in ("embedded", "embedded_warm"):
    t = time.perf_counter() if name == "embedded_warm" else t0
    with EmbeddedBroker() as broker:
        started = time.perf_counter()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=0)
        producer.send("startup", b"first").get(10)
        acked = time.perf_counter()
        producer.close()
    out[name] = {"total_ms": (acked - t) * 1000, "broker_start_ms": (started - t) * 1000}
out["embedded"]["imports_ms"] = (imported - t0) * 1000
from confluent_kafka import Producer
t = time.perf_counter()
with EmbeddedBroker() as broker:
    started = time.perf_counter()
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
    producer.produce("startup", b"first")
    assert producer.flush(10) == 0
    acked = time.perf_counter()
    del producer
out["embedded_warm_confluent"] = {
    "total_ms": (acked - t) * 1000, "broker_start_ms": (started - t) * 1000
}
print(json.dumps(out))
"""


def run_embedded() -> dict:
    env = {**os.environ, "PYKBROKER_LOG_LEVEL": "WARNING"}
    out = subprocess.run(
        [sys.executable, "-c", EMBEDDED], capture_output=True, text=True, env=env, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli() -> dict:
    from kafka import KafkaProducer

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pykbroker-bench-") as data:
        env = {**os.environ, "PYKBROKER_LOG_FORMAT": "json"}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pykbroker", "--override", f"log.dir={data}",
             "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
        )  # fmt: skip
        try:
            startup_ms = None
            for line in proc.stderr:  # the broker says when it listens
                event = json.loads(line)
                if event.get("event") == "broker_started":
                    startup_ms = event.get("startup_ms")
                    break
            listening = time.perf_counter()
            producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", linger_ms=0)
            producer.send("startup", b"first").get(10)
            acked = time.perf_counter()
            producer.close()
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "total_ms": (acked - t0) * 1000,
        "listening_ms": (listening - t0) * 1000,
        "broker_start_ms": startup_ms,
    }


def summary(name: str, runs: list[dict]) -> str:
    totals = [r["total_ms"] for r in runs]
    extra = {
        k: round(statistics.median(r[k] for r in runs), 1)
        for k in runs[0]
        if k != "total_ms" and runs[0][k] is not None
    }
    return (
        f"{name:15s} start->first ack  median {statistics.median(totals):7.1f} ms  "
        f"min {min(totals):7.1f}  max {max(totals):7.1f}   (medians: {extra})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    embedded, warm, warm_confluent, cli = [], [], [], []
    for _ in range(args.runs):
        result = run_embedded()
        embedded.append(result["embedded"])
        warm.append(result["embedded_warm"])
        warm_confluent.append(result["embedded_warm_confluent"])
        cli.append(run_cli())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.runs} runs each")
    print(summary("embedded", embedded))
    print(summary("embedded, warm", warm))
    print(summary("warm, confluent", warm_confluent))
    print(summary("cli", cli))


if __name__ == "__main__":
    main()

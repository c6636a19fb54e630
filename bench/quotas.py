"""What client quotas cost the produce path, in one run against one broker.

    python -m bench.quotas [--seconds 8] [--rounds 2] [--size 1024]

confluent-kafka (client id rdkafka) produces 1 KiB values for `seconds` in each setting, the
settings taking turns for `rounds` rounds (quotas change at runtime, so the broker, topic and
page cache stay the same):

- none: no quota configured (the request path checks one attribute per quota type);
- other: a producer_byte_rate on another client id (quotas on: each request resolves its client,
  cached, and finds no quota);
- bytes: producer_byte_rate = 1 GB/s on this client (each request recorded in its windowed Rate
  and checked; never throttled);
- requests: request_percentage = 10^6 on this client (handler time recorded on every request).

Each figure is reported as MB/s, as broker CPU milliseconds per MB produced (less sensitive to
a busy machine than MB/s), and as ratios to `none` measured in the same round. First, in this
process, the cost per request of the quota code itself: recording a produce against a byte-rate
quota (resolve, windowed Rate, throttle check) and the check made when no quota is configured.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from .common import MB, Broker
from .throughput import create_topic, produce

SETTINGS = {
    "none": [],
    "other": [("clients", "someone-else", "producer_byte_rate=1000000")],
    "bytes": [("clients", "rdkafka", "producer_byte_rate=1000000000")],
    "requests": [("clients", "rdkafka", "request_percentage=1000000")],
}
_KEYS = {"producer_byte_rate", "request_percentage"}


def kafka_configs(bootstrap: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pykbroker.cli.configs", "--bootstrap-server",
                    bootstrap, *args], check=True, capture_output=True)  # fmt: skip


def apply(bootstrap: str, setting: str, current: list) -> list:
    for kind, name, config in current:  # undo the previous setting
        key = config.split("=")[0]
        kafka_configs(bootstrap, "--alter", "--entity-type", kind, "--entity-name", name,
                      "--delete-config", key)  # fmt: skip
    for kind, name, config in SETTINGS[setting]:
        kafka_configs(bootstrap, "--alter", "--entity-type", kind, "--entity-name", name,
                      "--add-config", config)  # fmt: skip
    return SETTINGS[setting]


def micro(n: int = 200_000) -> None:
    from time import perf_counter

    from pykbroker.quota.manager import ClientQuotaManager

    m = ClientQuotaManager("producer_byte_rate")
    t0 = perf_counter()
    for _ in range(n):
        if m.enabled:
            pass
    off = (perf_counter() - t0) / n
    m.set_configs({"clients/rdkafka": {"producer_byte_rate": str(10**12)}})
    t0 = perf_counter()
    for i in range(n):
        m.record_and_get_throttle_ms("ANONYMOUS", "rdkafka", 16384, i // 100)
    on = (perf_counter() - t0) / n
    print(f"quota code per request: {on * 1e6:.2f} us recording a produce against a quota, "
          f"{off * 1e9:.0f} ns checking with no quota configured", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quotas", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--size", type=int, default=1024)
    args = p.parse_args(argv)
    micro()
    results: dict[str, list[float]] = {s: [] for s in SETTINGS}
    cpu: dict[str, list[float]] = {s: [] for s in SETTINGS}
    with Broker() as broker:
        bs = broker.bootstrap
        create_topic(bs, "quota-bench", 1)
        current: list = []
        for r in range(args.rounds):
            base = None
            for setting in SETTINGS:
                current = apply(bs, setting, current)
                cpu0 = broker.cpu()
                out = produce("confluent", bs, "quota-bench", args.size, "1", args.seconds)
                ms_per_mb = (broker.cpu() - cpu0) * 1000 / (out["bytes"] / MB)
                rate = out["bytes"] / out["seconds"]
                results[setting].append(rate)
                cpu[setting].append(ms_per_mb)
                base = base or (rate, ms_per_mb)
                print(f"round {r + 1} {setting:9s} {rate / MB:8.1f} MB/s {rate / base[0]:5.2f} x "
                      f"none; broker CPU {ms_per_mb:6.2f} ms/MB {ms_per_mb / base[1]:5.2f} x none",
                      flush=True)  # fmt: skip
    print("mean over rounds:")
    none, none_cpu = (sum(v) / len(v) for v in (results["none"], cpu["none"]))
    for setting, rates in results.items():
        mean, mean_cpu = sum(rates) / len(rates), sum(cpu[setting]) / len(cpu[setting])
        print(f"  {setting:9s} {mean / MB:8.1f} MB/s {mean / none:5.2f} x none; broker CPU "
              f"{mean_cpu:6.2f} ms/MB {mean_cpu / none_cpu:5.2f} x none")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

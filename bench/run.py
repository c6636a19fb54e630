"""pykbroker benchmarks: figures beside ceilings measured in the same run.

    make bench                      # the whole set, writes bench/RESULTS.md (~7 min)
    make bench ARGS=--quick         # the same set, shorter and smaller (~3 min)
    python -m bench.run produce --client confluent --size 1024 --acks all --partitions 1 --seconds 10
    python -m bench.run consume --client kafka-python --size 100 --partitions 8
    python -m bench.run latency --rate 1000 --seconds 10
    python -m bench.run partitions --steps 1,10,100,1000
    python -m bench.run connections --steps 1,10,100,500
    python -m bench.run startup | recovery --log-bytes 1GiB | ceilings

Single scenarios start their own broker (`python -m pykbroker` in a separate process, on
127.0.0.1 and a temporary log dir) unless given `--bootstrap HOST:PORT` (and `--broker-pid PID`
for its RSS and CPU), e.g. a broker running under a profiler. Each figure prints as soon as it
is measured. Everything is loopback-only and bounded in time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import sys
import time
from pathlib import Path

from . import ceilings, latency, lifecycle, report, scale, throughput
from .common import MB, Broker, ExternalBroker

HERE = Path(__file__).resolve().parent


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
             "gib": 1 << 30}  # fmt: skip
    t = text.strip().lower()
    for suffix in sorted(units, key=len, reverse=True):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * units[suffix])
    return int(t)


class Run:
    """Collects figures for RESULTS.md and prints each one as it arrives."""

    def __init__(self) -> None:
        self.data: dict = {"throughput": [], "partitions": [], "connections": []}

    def say(self, text: str) -> None:
        print(text, flush=True)


def broker_for(args, overrides: dict | None = None):
    if getattr(args, "bootstrap", None):
        return ExternalBroker(args.bootstrap, args.broker_pid)
    return Broker(overrides)


def cpu_note(broker, cpu0, seconds) -> tuple[float | None, str]:
    cpu1 = broker.cpu()
    if cpu0 is None or cpu1 is None or seconds <= 0:
        return None, ""
    cores = (cpu1 - cpu0) / seconds
    return cores, f", broker CPU {cores:.2f} cores"


def do_ceilings(run: Run, quick: bool) -> dict:
    run.say("== ceilings")
    tcp = ceilings.tcp_throughput(2.0 if quick else 4.0)
    run.say(f"loopback TCP, process to process: {tcp / MB:,.0f} MB/s")
    rtt = ceilings.tcp_round_trip(2000 if quick else 10000)
    run.say(f"loopback TCP round trip (1 KiB): p50 {rtt['p50']:.3f} ms, p99 {rtt['p99']:.3f} ms, "
            f"p999 {rtt['p999']:.3f} ms")  # fmt: skip
    w, r = ceilings.file_write_read((256 if quick else 1024) << 20)
    run.say(f"sequential file write (with fsync): {w / MB:,.0f} MB/s; read (page cache): "
            f"{r / MB:,.0f} MB/s")  # fmt: skip
    c = {"tcp": tcp, "rtt": rtt, "file_write": w, "file_read": r}
    run.data["ceilings"] = c
    return c


def ceiling_for(run: Run, kind: str) -> float | None:
    c = run.data.get("ceilings")
    if not c:
        return None
    return min(c["tcp"], c["file_write"] if kind == "produce" else c["file_read"])


def fraction(run: Run, kind: str, bps: float) -> str:
    ceil = ceiling_for(run, kind)
    return f" ({bps / ceil:.1%} of ceiling)" if ceil else ""


def do_throughput(run: Run, broker, client: str, size: int, acks: str, partitions: int,
                  seconds: float, consume: bool = True, max_bytes: int = 1 << 30) -> dict:  # fmt: skip
    topic = f"bench-{client}-{size}-{acks}-{partitions}-{int(time.time() * 1000) % 10**8}"
    throughput.create_topic(broker.bootstrap, topic, partitions)
    label = f"{client:12} {size:>5} B acks={acks:3} partitions={partitions}"
    cpu0 = broker.cpu()
    p = throughput.produce(client, broker.bootstrap, topic, size, acks, seconds, max_bytes)
    cores, note = cpu_note(broker, cpu0, p["seconds"])
    acked = throughput.high_watermarks(broker.bootstrap, topic, partitions)
    row = {"client": client, "size": size, "acks": acks, "partitions": partitions,
           "produce_msgs": p["msgs"], "produce_bps": p["bytes"] / p["seconds"],
           "produce_mps": p["msgs"] / p["seconds"], "produce_cpu": cores,
           "acked": acked}  # fmt: skip
    check = "" if acked == p["msgs"] else f"  (!! {acked} acked of {p['msgs']} sent)"
    run.say(f"produce {label}: {row['produce_mps']:>10,.0f} msg/s {row['produce_bps'] / MB:8.1f} MB/s"
            f"{fraction(run, 'produce', row['produce_bps'])}{note}{check}")  # fmt: skip
    if consume:
        cpu0 = broker.cpu()
        c = throughput.consume(client, broker.bootstrap, topic, partitions, acked, size)
        cores, note = cpu_note(broker, cpu0, c["seconds"])
        row.update(consume_msgs=c["msgs"], consume_bps=c["bytes"] / c["seconds"],
                   consume_mps=c["msgs"] / c["seconds"], consume_cpu=cores)  # fmt: skip
        short = "" if c["msgs"] >= acked else f"  (!! read {c['msgs']} of {acked})"
        run.say(f"consume {label}: {row['consume_mps']:>10,.0f} msg/s {row['consume_bps'] / MB:8.1f} MB/s"
                f"{fraction(run, 'consume', row['consume_bps'])}{note}{short}")  # fmt: skip
    throughput.delete_topic(broker.bootstrap, topic)
    run.data["throughput"].append(row)
    return row


def do_latency(run: Run, broker, rate: int, seconds: float) -> dict:
    topic = "bench-latency"
    throughput.create_topic(broker.bootstrap, topic, 1)
    r = latency.e2e_latency("confluent", broker.bootstrap, topic, rate, seconds)
    throughput.delete_topic(broker.bootstrap, topic)
    run.say(f"e2e latency confluent 1 KiB acks=all at {rate} msg/s ({r['count']} of {r['sent']}): "
            f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, p999 {r['p999']:.2f} ms, "
            f"max {r['max']:.2f} ms")  # fmt: skip
    run.data["latency"] = r
    return r


def do_partitions(run: Run, broker, steps: list[int], seconds: float) -> None:
    for n in steps:
        r = scale.partitions_step(broker, n, seconds)
        run.data["partitions"].append(r)
        rss = f"{r['rss'] / MB:.0f} MB" if r["rss"] else "?"
        run.say(f"partitions {n:>5}: {r['msgs'] / r['seconds']:>9,.0f} msg/s "
                f"{r['bytes'] / r['seconds'] / MB:7.1f} MB/s, broker RSS {rss}, "
                f"topic created in {r['create_seconds']:.2f} s")  # fmt: skip


def do_connections(run: Run, broker, steps: list[int], seconds: float) -> None:
    throughput.create_topic(broker.bootstrap, "bench-scale-connections", 8)
    for n in steps:
        r = scale.connections_step(broker, n, seconds)
        run.data["connections"].append(r)
        rss = f"{r['rss'] / MB:.0f} MB" if r["rss"] else "?"
        errors = f", {r['errors']} errors" if r["errors"] else ""
        run.say(f"connections {n:>4}: {r['msgs'] / r['seconds']:>9,.0f} msg/s "
                f"{r['bytes'] / r['seconds'] / MB:7.1f} MB/s, broker RSS {rss}{errors}")  # fmt: skip
    throughput.delete_topic(broker.bootstrap, "bench-scale-connections")


def do_startup(run: Run, runs: int) -> None:
    r = lifecycle.startup(runs)
    run.data["startup"] = r
    own = (
        f" (broker's own startup_ms: {r['own_startup_s'] * 1000:.0f} ms)"
        if r["own_startup_s"]
        else ""
    )
    run.say(f"start-up to accepting connections: {r['ready_s'] * 1000:.0f} ms (median of {runs}){own}; "
            f"RSS at ready {r['rss_ready'] / MB:.1f} MB, idle {r['rss_idle'] / MB:.1f} MB")  # fmt: skip


def do_recovery(run: Run, log_bytes: int) -> None:
    r = lifecycle.recovery(log_bytes)
    run.data["recovery"] = r
    lost = (
        ""
        if r["records_after"] >= r["records"]
        else f" (!! {r['records'] - r['records_after']} records lost)"
    )
    run.say(f"recovery after SIGKILL with {r['log_bytes'] / (1 << 20):,.0f} MiB of log: "
            f"{r['recovery_s']:.2f} s to accepting connections; clean restart {r['clean_restart_s']:.2f} s; "
            f"{r['records_after']:,} of {r['records']:,} records present{lost}")  # fmt: skip


def full(args) -> int:
    quick = args.quick
    run = Run()
    started = time.monotonic()
    run.data["started"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    run.data["quick"] = quick
    seconds = args.seconds or (1.5 if quick else 5.0)
    run.data["seconds"] = seconds
    do_ceilings(run, quick)
    run.say("== start-up and idle memory")
    do_startup(run, 3)
    clients = args.clients.split(",") if args.clients else list(throughput.CLIENTS)
    run.say(f"== throughput ({seconds:g} s of producing per row, then consuming it all)")
    with Broker() as broker:
        for client, size, acks, parts in itertools.product(clients, (100, 1024), ("1", "all"),
                                                           (1, 8)):  # fmt: skip
            do_throughput(run, broker, client, size, acks, parts, seconds,
                          max_bytes=(256 << 20) if quick else (1 << 30))  # fmt: skip
    run.say("== end-to-end latency")
    with Broker() as broker:
        do_latency(run, broker, 1000, 5 if quick else 20)
    run.say("== scale: partitions")
    with Broker() as broker:
        do_partitions(run, broker, [1, 10, 100, 1000], 1.5 if quick else 3)
    run.say("== scale: connections")
    with Broker() as broker:
        do_connections(run, broker, [1, 10, 100, 500], 1.5 if quick else 3)
    run.say("== recovery")
    log_bytes = (
        parse_size(args.log_bytes) if args.log_bytes else ((128 << 20) if quick else (1 << 30))
    )
    do_recovery(run, log_bytes)
    run.data["elapsed"] = time.monotonic() - started
    text = report.render(run.data)
    out = Path(args.out)
    out.write_text(text)
    print()
    print(report.targets_text(run.data))
    print(f"\nwrote {out} ({run.data['elapsed']:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="scenario")

    def common(sp, external: bool = True):
        if external:
            sp.add_argument("--bootstrap", help="use a running broker instead of starting one")
            sp.add_argument("--broker-pid", type=int, help="its pid, for RSS and CPU figures")
        sp.add_argument("--no-ceilings", action="store_true",
                        help="skip measuring ceilings (no fraction-of-ceiling figures)")  # fmt: skip

    a = sub.add_parser("all", help="everything, writes bench/RESULTS.md (the default)")
    for sp in (p, a):
        sp.add_argument("--quick", action="store_true", help="shorter runs, smaller log")
        sp.add_argument("--seconds", type=float, help="seconds of producing per throughput row")
        sp.add_argument(
            "--clients", help="comma-separated subset of " + ",".join(throughput.CLIENTS)
        )
        sp.add_argument(
            "--log-bytes", help="recovery log size, e.g. 1GiB (default 1GiB, quick 128MiB)"
        )
        sp.add_argument("--out", default=str(HERE / "RESULTS.md"))
    for name in ("produce", "consume"):
        sp = sub.add_parser(name, help=f"{name} throughput, one configuration")
        sp.add_argument("--client", default="confluent", choices=throughput.CLIENTS)
        sp.add_argument("--size", type=int, default=1024)
        sp.add_argument("--acks", default="all", choices=("1", "all"))
        sp.add_argument("--partitions", type=int, default=1)
        sp.add_argument("--seconds", type=float, default=10)
        common(sp)
    sp = sub.add_parser("latency", help="end-to-end latency at a fixed rate (confluent, 1 KiB)")
    sp.add_argument("--rate", type=int, default=1000)
    sp.add_argument("--seconds", type=float, default=10)
    common(sp)
    for name, default in (("partitions", "1,10,100,1000"), ("connections", "1,10,100,500")):
        sp = sub.add_parser(name, help=f"scale curve over {name}")
        sp.add_argument("--steps", default=default)
        sp.add_argument("--seconds", type=float, default=3)
        common(sp)
    sp = sub.add_parser("startup", help="start-up time and idle RSS")
    sp.add_argument("--runs", type=int, default=3)
    sp = sub.add_parser("recovery", help="recovery time after SIGKILL")
    sp.add_argument("--log-bytes", default="1GiB")
    sub.add_parser("ceilings", help="loopback TCP and file ceilings only")
    args = p.parse_args(argv)

    if args.scenario in (None, "all"):
        return full(args)
    run = Run()
    if args.scenario == "ceilings":
        do_ceilings(run, quick=False)
        return 0
    if args.scenario == "startup":
        do_startup(run, args.runs)
        return 0
    if args.scenario == "recovery":
        do_recovery(run, parse_size(args.log_bytes))
        return 0
    if not args.no_ceilings and args.scenario in ("produce", "consume"):
        do_ceilings(run, quick=True)
    with broker_for(args) as broker:
        if args.scenario in ("produce", "consume"):
            do_throughput(run, broker, args.client, args.size, args.acks, args.partitions,
                          args.seconds, consume=args.scenario == "consume")  # fmt: skip
        elif args.scenario == "latency":
            do_latency(run, broker, args.rate, args.seconds)
        elif args.scenario == "partitions":
            do_partitions(run, broker, [int(x) for x in args.steps.split(",")], args.seconds)
        elif args.scenario == "connections":
            do_connections(run, broker, [int(x) for x in args.steps.split(",")], args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m fuzzing` (from tests/, as `make fuzz` runs it): a long fuzz pass and its summary.

    make fuzz                                   # 10^6 frames against a fresh broker
    make fuzz ARGS="--frames 50000 --seed 7"    # fewer frames, a given seed
    make fuzz ARGS="--seconds 300"              # stop after five minutes
    make fuzz ARGS="--seed 7 --case 1234"       # replay one case and show the answer
    make fuzz ARGS="--bootstrap 127.0.0.1:9093 --broker-pid 4242"   # a broker already running

Without --bootstrap a broker is started in a subprocess (ephemeral port, temporary log dir).
The summary (JSON) goes to --summary; the exit status is 1 if anything went wrong.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
from collections import Counter

from .cases import CaseFactory
from .known import exclusion
from .runner import Options, Target, read_frame  # noqa: F401
from .session import fuzz, prepare, summary, write_summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzzing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--workers", type=int, default=8, help="connections sending cases")
    p.add_argument("--rss-limit-mib", type=int, default=1024)
    p.add_argument("--summary", default="fuzz-summary.json")
    p.add_argument("--all", action="store_true", help="include cases of known, unfixed findings")
    p.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start one)")
    p.add_argument("--broker-pid", type=int, help="its pid, for liveness and RSS")
    p.add_argument("--metrics-url", help="its Prometheus endpoint, for the event-loop lag")
    p.add_argument("--case", type=int, help="replay this one case (needs --seed)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"seed {seed}", flush=True)

    broker = None
    if args.bootstrap:
        host, port = args.bootstrap.rsplit(":", 1)
        target = Target(host, int(port), args.broker_pid, args.metrics_url)
    else:
        from helpers import BrokerProcess

        broker = BrokerProcess(tempfile.mkdtemp(prefix="fuzz-"), {"metrics.port": "0"}).start()
        metrics_port = broker.events("broker_started")[0]["metrics_port"]
        target = Target("127.0.0.1", broker.port, broker.proc.pid,
                        f"http://127.0.0.1:{metrics_port}/metrics")  # fmt: skip
    try:
        if args.case is not None:
            return replay(target, seed, args.case, args.all)
        opts = Options(frames=args.frames, seconds=args.seconds, workers=args.workers,
                       rss_limit=args.rss_limit_mib << 20, progress=True)  # fmt: skip
        stats, problems, factory = fuzz(target, seed, opts, exclude_known=not args.all)
        data = summary(stats, problems, factory, seed)
        if broker is not None:
            data["broker_alive_after"] = broker.proc.poll() is None
            data["broker_log_levels"] = dict(Counter(e.get("level") for e in broker.lines))
            data["broker_log_errors"] = dict(
                Counter(e.get("event") for e in broker.lines if e.get("level") == "error")
            )
            samples: dict[str, list] = {}
            for e in broker.lines:
                if e.get("level") in ("error", "critical") or e.get("event") in (
                    "raw",
                    "request_failed",
                ):
                    key = str(e.get("exception", e.get("line", e.get("where", ""))))[-300:]
                    key += " " + str(e.get("error", ""))[:200]
                    samples.setdefault(key, []).append(e.get("event"))
            data["broker_log_error_samples"] = [
                {"count": len(v), "event": v[0], "tail": k} for k, v in samples.items()
            ]
        write_summary(args.summary, data)
        short = {k: v for k, v in data.items() if k not in ("by_api_version", "errors")}
        print(json.dumps(short, indent=1))
        for e in data["errors"]:
            print("ERROR", json.dumps(e)[:600])
        print(f"summary written to {args.summary}")
        return 0 if stats.ok and not problems else 1
    finally:
        if broker is not None:
            broker.kill()


def replay(target: Target, seed: int, index: int, include_all: bool) -> int:
    """Regenerate one case, send it on a fresh connection and print what comes back."""
    pools, apis, _canary = prepare(target.port, seed)
    factory = CaseFactory(seed, pools, apis, None if include_all else exclusion)
    case = factory.case(index)
    print(case.describe())
    print("frame:", case.frame.hex())
    with socket.create_connection((target.host, target.port), timeout=max(case.hold, 5)) as s:
        s.sendall(case.frame)
        try:
            data = s.recv(1 << 20)
        except TimeoutError:
            data = None
    print("answer:", "timeout" if data is None else (data.hex() if data else "connection closed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Unavailability for an acks=all producer while brokers stop: the longest gap between acks.

    python -m bench.rolling_restart                 # every scenario below, ~2 min
    python -m bench.rolling_restart --rate 1000 --scenarios controlled,uncontrolled

A ZooKeeper and three brokers (tests/cluster_helpers.py: 3 s ZooKeeper sessions, 1 s leader
rebalance checks) and one topic of 3 partitions, RF 3, min.insync.replicas=2. An idempotent
acks=all confluent-kafka producer sends `rate` records a second spread over the partitions;
the figure is the longest time between two acknowledgements of the same partition (the time a
partition could not take writes) during the scenario, and the count of delivery errors:

- controlled: a rolling restart, each broker SIGTERMed in turn with controlled shutdown on
  (the default) and started again once every ISR is full;
- uncontrolled: the same with controlled.shutdown.enable=false on every broker;
- kill: the leader of partition 0 SIGKILLed, then started again (the ZooKeeper session timeout
  decides how soon the controller notices);
- ceiling: the same producer for the same time with no broker stopped (the gaps the producer's
  batching and the machine cause by themselves, measured in the same run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time

from .common import REPO

sys.path.insert(0, str(REPO / "tests"))

from cluster_helpers import Cluster, wait_until  # noqa: E402
from helpers import RawClient  # noqa: E402

from protocol.apis import ApiKey  # noqa: E402

TOPIC = "gap"
PARTITIONS = 3


class Producer:
    """confluent-kafka, idempotent, acks=all, at a steady rate from its own thread; records
    the monotonic time of every acknowledgement per partition."""

    def __init__(self, bootstrap: str, rate: int):
        from confluent_kafka import Producer as CP

        self.p = CP({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 1, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200,
            "broker.address.family": "v4", "log_level": 2,
        })  # fmt: skip
        self.rate = rate
        self.acks: dict[int, list[float]] = {p: [] for p in range(PARTITIONS)}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _done(self, err, msg) -> None:
        if err is None:
            self.acks[msg.partition()].append(time.monotonic())
        else:
            self.errors.append(str(err))

    def _run(self) -> None:
        n, start = 0, time.monotonic()
        while not self.stop.is_set():
            self.p.produce(TOPIC, b"x" * 100, partition=n % PARTITIONS, on_delivery=self._done)
            n += 1
            ahead = start + n / self.rate - time.monotonic()
            self.p.poll(max(ahead, 0))  # paced: serve callbacks while waiting for the next send
        self.p.flush(30)

    def longest_gap(self, windows: list[tuple[float, float]]) -> float:
        """The longest gap between two acks of a partition that overlaps one of the windows."""
        worst = 0.0
        for times in self.acks.values():
            for a, b in zip(times, times[1:], strict=False):
                if any(a < end and b > start for start, end in windows):
                    worst = max(worst, b - a)
        return worst


def start_cluster(work: str, overrides: dict[str, str]) -> Cluster:
    c = Cluster(work, overrides=overrides).start()
    client = RawClient(c.brokers[1].port)
    try:
        body = {
            "topics": [{"name": TOPIC, "num_partitions": PARTITIONS, "replication_factor": 3,
                        "assignments": [],
                        "configs": [{"name": "min.insync.replicas", "value": "2"}]}],
            "timeout_ms": 10000, "validate_only": False,
        }  # fmt: skip
        assert client.request(ApiKey.CREATE_TOPICS, 5, body).topics[0].error_code == 0
    finally:
        client.close()
    return c


def restart(c: Cluster, node_id: int) -> None:
    try:
        c.start_broker(node_id)
    except RuntimeError as e:  # e.g. ZooKeeper's ConnectionLoss on a loaded machine: once more
        print(f"broker {node_id} did not start ({e}); starting it again", file=sys.stderr)
        c.start_broker(node_id)


def in_sync(c: Cluster) -> dict:
    return wait_until(
        lambda: (
            (v := c.agreed_partitions(TOPIC))
            and len(v) == PARTITIONS
            and all(p[0] >= 0 and len(p[3]) == 3 for p in v.values())
            and v
        ),
        timeout=60,
        what="full ISRs",
    )


def scenario(name: str, rate: int, seconds: float) -> dict:
    overrides = {"controlled.shutdown.enable": "false"} if name == "uncontrolled" else {}
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
        c = start_cluster(work, overrides)
        try:
            in_sync(c)
            prod = Producer(c.bootstrap(), rate)
            prod.thread.start()
            wait_until(lambda: all(len(t) > 20 for t in prod.acks.values()), what="acks")
            since = time.monotonic()
            steps: list[tuple[float, str]] = []  # (when, what): a signal, then its restart
            if name in ("controlled", "uncontrolled"):
                for node_id in (1, 2, 3):
                    in_sync(c)
                    steps.append((time.monotonic(), f"SIGTERM {node_id}"))
                    assert c.terminate(node_id) == 0
                    steps.append((time.monotonic(), f"restart {node_id}"))
                    restart(c, node_id)
                in_sync(c)
            elif name == "kill":
                leader = in_sync(c)[0][0]
                steps.append((time.monotonic(), f"SIGKILL {leader}"))
                c.kill(leader)
                steps.append((time.monotonic(), f"restart {leader}"))
                restart(c, leader)
                in_sync(c)
            else:
                time.sleep(seconds)
            time.sleep(1)  # acks after the last step count too
            until = time.monotonic()
            prod.stop.set()
            prod.thread.join(40)
            # A stop's window: from the signal to the restart (the process has exited by then).
            stops = [(t, steps[i + 1][0]) for i, (t, what) in enumerate(steps)
                     if not what.startswith("restart")]  # fmt: skip
            return {"scenario": name, "seconds": until - since,
                    "gap_s": prod.longest_gap([(since, until)]),
                    "stop_gap_s": prod.longest_gap(stops) if stops else None,
                    "errors": len(prod.errors),
                    "acks": sum(len(t) for t in prod.acks.values())}  # fmt: skip
        finally:
            c.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rolling_restart",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--rate", type=int, default=1000, help="records a second")
    p.add_argument("--scenarios", default="controlled,uncontrolled,kill,ceiling")
    args = p.parse_args(argv)
    results = []
    for name in args.scenarios.split(","):
        seconds = results[0]["seconds"] if results else 15.0  # the ceiling runs as long
        r = scenario(name, args.rate, seconds)
        results.append(r)
        stop = f"{r['stop_gap_s'] * 1000:6.0f} ms" if r["stop_gap_s"] is not None else "     -   "
        print(f"{name:13} longest gap between acks on a partition: during stops {stop}, "
              f"whole run {r['gap_s'] * 1000:6.0f} ms; {r['errors']} delivery errors, {r['acks']:,} acks in {r['seconds']:.1f} s",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

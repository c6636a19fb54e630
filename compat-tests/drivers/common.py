"""What every Python driver shares: its command line, checks, and the result line it prints.

A driver is run once per feature:

    python drivers/<client>.py FEATURE --bootstrap 127.0.0.1:PORT --prefix NAME [--role member]

It prints progress on stderr and, last, one line `RESULT {"status": ..., "detail": ...}` on
stdout, where status is `pass`, `fail` or `n/a` (the client library has no such feature).
Topic `<prefix>.<suffix>` for each of the feature's topics was created by the runner.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable


class NotSupported(Exception):
    """The client library under test has no way to do this."""


class CheckFailed(AssertionError):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def deadline_loop(seconds: float, what: str):
    """Iterate until the caller breaks; raise CheckFailed after `seconds` (no fixed sleeps)."""
    end = time.monotonic() + seconds
    while True:
        if time.monotonic() > end:
            raise CheckFailed(f"timed out after {seconds:.0f}s waiting for {what}")
        yield


class Context:
    def __init__(self, args: argparse.Namespace):
        self.bootstrap: str = args.bootstrap
        self.prefix: str = args.prefix
        self.role: str = args.role
        self.feature: str = args.feature
        self.host, port = self.bootstrap.rsplit(":", 1)
        self.port = int(port)
        self.group = f"{self.prefix}.group"

    def topic(self, suffix: str = "t") -> str:
        return f"{self.prefix}.{suffix}"

    def spawn(self, role: str) -> subprocess.Popen:
        """This driver again, for the same feature, in another role (e.g. a group member)."""
        cmd = [sys.executable, "-u", sys.argv[0], self.feature, "--bootstrap", self.bootstrap,
               "--prefix", self.prefix, "--role", role]  # fmt: skip
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def emit(status: str, detail: str = "") -> None:
    print("RESULT " + json.dumps({"status": status, "detail": detail}), flush=True)


def main(features: dict[str, Callable[[Context], str | None]]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("feature")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--role", default="main")
    args = p.parse_args()
    fn = features.get(args.feature)
    if fn is None:
        emit("n/a", "no driver for this feature")
        sys.exit(3)
    ctx = Context(args)
    try:
        detail = fn(ctx)
    except NotSupported as e:
        emit("n/a", str(e))
        code = 3
    except CheckFailed as e:
        emit("fail", str(e))
        code = 1
    except BaseException as e:  # a client error is a failure of the feature, reported with its type
        traceback.print_exc()
        emit("fail", f"{type(e).__name__}: {e}")
        code = 1
    else:
        emit("pass", detail or "")
        code = 0
    sys.stdout.flush()
    sys.stderr.flush()
    # Some clients keep non-daemon threads alive; the result is out, so leave now.
    os._exit(code)


# Shared expectations, so every driver checks the same thing.
def pc_records(n: int = 10) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """produce_consume: (key, value, headers) for n records."""
    return [
        (f"key-{i}".encode(), f"value-{i}".encode(), [("h1", f"hv-{i}".encode()), ("h2", b"")])
        for i in range(n)
    ]


def compressible(i: int) -> bytes:
    return (f"record-{i:05d}-" + "abcdefgh" * 32).encode()


def big_value(size: int) -> bytes:
    return os.urandom(size)


# --- failover (needs the matrix's cluster: compat-tests/cluster.py) ---------------------------

# A topic of 3 partitions, replication factor 3, min.insync.replicas 2 (created by the runner).
# Record `seq` goes to partition seq % 3 with value str(seq), so the values on one partition must
# read back in increasing order.
FAILOVER_PARTITIONS = 3
FAILOVER_BEFORE = 150  # records sent before the leader of partition 0 is killed
FAILOVER_AFTER = 150  # records sent after a new leader leads partition 0
FAILOVER_SLICE = 10  # records per step of the stream
FAILOVER_PACE = 0.03  # seconds between steps: a paced stream, not a synchronization


class Failover:
    """The cluster a failover driver runs against: which broker leads, and killing it."""

    def __init__(self, ctx: Context):
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from cluster import metadata_v1

        self._metadata_v1 = metadata_v1
        raw = os.environ.get("COMPAT_CLUSTER")
        if not raw:
            raise CheckFailed("COMPAT_CLUSTER is not set: run failover through compat-tests/run.py")
        self.brokers = {int(k): v for k, v in json.loads(raw)["brokers"].items()}
        self.killed: set[int] = set()
        self.topic = ctx.topic()

    def leader(self, partition: int = 0) -> int:
        """The leader of a partition as a live broker reports it (-1: none right now)."""
        for node_id, b in self.brokers.items():
            if node_id in self.killed:
                continue
            try:
                _, topics = self._metadata_v1(b["port"], [self.topic])
                return topics[self.topic][partition][0]
            except (OSError, KeyError):
                continue
        raise CheckFailed("no live broker answered Metadata")

    def kill_leader(self, partition: int = 0) -> int:
        victim = self.leader(partition)
        check(victim in self.brokers, f"partition {partition} has no leader to kill ({victim})")
        os.kill(self.brokers[victim]["pid"], signal.SIGKILL)
        self.killed.add(victim)
        log(f"SIGKILLed broker {victim}, leader of {self.topic}-{partition}")
        return victim

    def steps(self):
        """The paced stream as lists of record numbers: FAILOVER_BEFORE records, SIGKILL of
        partition 0's leader, on until another broker leads partition 0, then FAILOVER_AFTER
        more. Afterwards `self.result` is (victim, records sent, records sent while partition 0
        had no live leader)."""
        seq = 0
        while seq < FAILOVER_BEFORE:
            yield list(range(seq, seq + FAILOVER_SLICE))
            seq += FAILOVER_SLICE
        victim = self.kill_leader(0)
        killed_at = seq
        for _ in deadline_loop(60, f"a new leader of {self.topic}-0 after killing {victim}"):
            if self.leader(0) not in (-1, victim):
                break
            yield list(range(seq, seq + FAILOVER_SLICE))
            seq += FAILOVER_SLICE
        during = seq - killed_at
        end = seq + FAILOVER_AFTER
        while seq < end:
            yield list(range(seq, seq + FAILOVER_SLICE))
            seq += FAILOVER_SLICE
        self.result = (victim, seq, during)

    def stream(self, send: Callable[[list[int]], None]) -> tuple[int, int, int]:
        """Run the stream; `send(seqs)` hands records to the client without waiting for
        acknowledgements. Returns `self.result`."""
        for seqs in self.steps():
            send(seqs)
            time.sleep(FAILOVER_PACE)
        return self.result

    async def astream(self, send) -> tuple[int, int, int]:
        """The same for an asyncio client: `await send(seqs)`."""
        import asyncio

        for seqs in self.steps():
            await send(seqs)
            await asyncio.sleep(FAILOVER_PACE)
        return self.result


def partition_of(seq: int) -> int:
    return seq % FAILOVER_PARTITIONS


def check_failover(acked: set[int], consumed: list[tuple[int, int, bytes]], sent: int,
                   victim: int, during: int) -> str:  # fmt: skip
    """Every acknowledged record read back exactly once, in order per partition.

    `consumed`: (partition, offset, value) in the order the consumer returned them."""
    seen: dict[int, int] = {}
    last: dict[int, tuple[int, int]] = {}
    for partition, offset, value in consumed:
        s = int(value)
        check(s not in seen, f"record {s} read twice")
        seen[s] = offset
        check(partition == partition_of(s), f"record {s} on partition {partition}")
        prev_offset, prev_seq = last.get(partition, (-1, -1))
        check(offset > prev_offset, f"partition {partition}: offset {offset} after {prev_offset}")
        check(s > prev_seq, f"partition {partition}: record {s} after {prev_seq}")
        last[partition] = (offset, s)
    missing = sorted(acked - seen.keys())
    check(not missing, f"{len(missing)} acknowledged records never read, e.g. {missing[:5]}")
    extra = len(seen.keys() - acked)
    return (f"{len(acked)}/{sent} acknowledged, each read once in order; leader {victim} of "
            f"partition 0 SIGKILLed mid-stream, {during} records sent during the election"
            + (f"; {extra} unacknowledged also read" if extra else ""))  # fmt: skip

"""kcat driver of the compatibility matrix: runs the `kcat` binary as a user would.

kcat has no admin commands, so the admin features are n/a for it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    FAILOVER_PARTITIONS,
    CheckFailed,
    Context,
    Failover,
    NotSupported,
    check,
    check_failover,
    compressible,
    deadline_loop,
    log,
    main,
    partition_of,
    pc_records,
)

KCAT = shutil.which("kcat") or shutil.which("kafkacat") or "kcat"


def kcat(ctx: Context, *args: str, data: bytes | None = None, timeout: float = 30,
         check_exit: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    cmd = [KCAT, "-b", ctx.bootstrap, *args]
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
    if check_exit and proc.returncode != 0:
        raise CheckFailed(f"{' '.join(cmd[:8])} exited {proc.returncode}: "
                          f"{proc.stderr.decode(errors='replace').strip()[-300:]}")  # fmt: skip
    return proc


def consume(ctx: Context, topic: str, count: int, *extra: str) -> list[dict]:
    """`kcat -C -J -e` from the beginning of every partition; records as JSON dicts."""
    out = kcat(ctx, "-C", "-t", topic, "-o", "beginning", "-e", "-J", *extra, timeout=60)
    records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    check(len(records) == count, f"consumed {len(records)} records, wanted {count}")
    return records


def f_metadata(ctx: Context) -> str:
    md = json.loads(kcat(ctx, "-L", "-J").stdout)
    check(len(md["brokers"]) == 1, f"brokers {md['brokers']}")
    broker = md["brokers"][0]
    check(broker["name"].endswith(f":{ctx.port}"), f"advertised {broker['name']}")
    topics = {t["topic"]: t for t in md["topics"]}
    t = topics.get(ctx.topic())
    check(t is not None, f"{ctx.topic()} missing from metadata")
    check(sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2], "partitions")
    check(all(p["leader"] == broker["id"] for p in t["partitions"]), "leaders")
    return f"broker {broker['id']} at {broker['name']}"


def f_produce_consume(ctx: Context) -> str:
    topic = ctx.topic()
    expected = pc_records()
    for k, v, h in expected:  # one kcat per record: -H sets the headers of a whole run
        headers = [x for name, val in h for x in ("-H", f"{name}={val.decode()}")]
        kcat(ctx, "-P", "-t", topic, "-K", ":", *headers, data=k + b":" + v + b"\n")
    got = consume(ctx, topic, len(expected))
    for i, (rec, (k, v, h)) in enumerate(zip(got, expected, strict=False)):
        check(rec["offset"] == i, f"offset {rec['offset']} != {i}")
        check(rec["key"] == k.decode() and rec["payload"] == v.decode(), f"record {i}: {rec}")
        want_headers = [x for name, val in h for x in (name, val.decode())]
        check(rec.get("headers") == want_headers, f"headers {rec.get('headers')}")
        check(rec["ts"] > 0, f"timestamp {rec['ts']}")
    return f"{len(got)} records"


def compression(codec: str):
    def run(ctx: Context) -> str:
        topic = ctx.topic()
        lines = b"".join(compressible(i) + b"\n" for i in range(200))
        kcat(ctx, "-P", "-t", topic, "-z", codec, "-X", "linger.ms=20", data=lines)
        got = consume(ctx, topic, 200)
        check([r["payload"].encode() for r in got] == [compressible(i) for i in range(200)],
              "values differ")  # fmt: skip
        return f"200 records ({codec})"

    return run


def f_ordering(ctx: Context) -> str:
    topic = ctx.topic()
    lines = b"".join(f"k{s % 16}:{s}\n".encode() for s in range(400))
    kcat(ctx, "-P", "-t", topic, "-K", ":", "-X", "partitioner=murmur2_random", data=lines)
    got = consume(ctx, topic, 400)
    key_partition: dict = {}
    last_seq: dict = {}
    next_offset: dict = {}
    for r in sorted(got, key=lambda r: (r["partition"], r["offset"])):
        check(key_partition.setdefault(r["key"], r["partition"]) == r["partition"], "key split")
        check(r["offset"] == next_offset.get(r["partition"], 0), f"gap in {r['partition']}")
        next_offset[r["partition"]] = r["offset"] + 1
        seq = int(r["payload"])
        check(seq > last_seq.get(r["key"], -1), f"key {r['key']}: {seq} out of order")
        last_seq[r["key"]] = seq
    return f"400 records, 16 keys over {len(next_offset)} partitions"


GROUP_ARGS = ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500",
              "-X", "auto.offset.reset=earliest"]  # fmt: skip


def f_groups_commit_resume(ctx: Context) -> str:
    topic = ctx.topic()
    kcat(ctx, "-P", "-t", topic, "-K", ":",
         data=b"".join(f"k{i}:old-{i}\n".encode() for i in range(30)))  # fmt: skip
    # A balanced consumer (-G) that exits at the end of its partitions, committing on the way.
    first = kcat(ctx, "-G", ctx.group, topic, "-e", "-J", *GROUP_ARGS, timeout=60)
    got = [json.loads(x) for x in first.stdout.splitlines() if x.strip()]
    check(len(got) == 30, f"first member read {len(got)}")
    kcat(ctx, "-P", "-t", topic, "-K", ":",
         data=b"".join(f"k{i}:new-{i}\n".encode() for i in range(10)))  # fmt: skip
    second = kcat(ctx, "-G", ctx.group, topic, "-e", "-J", *GROUP_ARGS, timeout=60)
    values = sorted(json.loads(x)["payload"] for x in second.stdout.splitlines() if x.strip())
    check(values == sorted(f"new-{i}" for i in range(10)), f"resumed with {values[:5]}...")
    return "30 committed, resumed at the next 10"


class Member:
    """A `kcat -G` process whose stderr rebalance lines are followed."""

    ASSIGNED = re.compile(r"rebalanced.*assigned: (.*)$")

    def __init__(self, ctx: Context):
        cmd = [KCAT, "-b", ctx.bootstrap, "-G", ctx.group, ctx.topic(), *GROUP_ARGS]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
        self.assigned: list[int] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        for line in self.proc.stderr:
            log("member:", line.rstrip())
            m = self.ASSIGNED.search(line)
            if m:
                with self.changed:
                    self.assigned = sorted(int(p) for p in re.findall(r"\[(\d+)\]", m.group(1)))
                    self.changed.notify_all()

    def wait_for(self, predicate, seconds: float, what: str) -> list[int]:
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self.assigned), seconds):
                raise CheckFailed(f"timed out waiting for {what} (assigned {self.assigned})")
            return self.assigned

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def f_groups_rebalance(ctx: Context) -> str:
    a = Member(ctx)
    b = None
    try:
        a.wait_for(lambda p: len(p) == 4, 60, "the first member to get all 4 partitions")
        b = Member(ctx)
        shared = b.wait_for(lambda p: 0 < len(p) < 4, 60, "a shared assignment")
        a.kill()
        b.wait_for(lambda p: len(p) == 4, 60, "all partitions after the member was killed")
        return f"had {shared}, took over all 4 after SIGKILL of the other member"
    finally:
        a.kill()
        if b:
            b.kill()


def na(why: str):
    def run(ctx: Context) -> str:
        raise NotSupported(why)

    return run


def f_idempotent(ctx: Context) -> str:
    topic = ctx.topic()
    lines = b"".join(f"{i % 2}:{i}\n".encode() for i in range(200))
    kcat(ctx, "-P", "-t", topic, "-K", ":", "-X", "enable.idempotence=true", data=lines)
    got = consume(ctx, topic, 200)
    check(sorted(int(r["payload"]) for r in got) == list(range(200)), "duplicates or gaps")
    return "200 records exactly once"


def f_transactions(ctx: Context) -> str:
    topic = ctx.topic()
    txn = ["-X", f"transactional.id={ctx.prefix}.txn"]
    # kcat -P with a transactional.id produces its whole input in one transaction, committed
    # at the end of input.
    kcat(ctx, "-P", "-t", topic, "-p", "0", *txn,
         data=b"".join(f"committed-{i}\n".encode() for i in range(3)))  # fmt: skip
    # An open transaction whose producer dies: the next producer with the same transactional.id
    # fences it, and the coordinator aborts it. kcat reads its input in large blocks, so it is
    # given enough for some of it to be sent before it is killed.
    open_txn = subprocess.Popen([KCAT, "-b", ctx.bootstrap, "-P", "-t", topic, "-p", "1", *txn],
                                stdin=subprocess.PIPE)  # fmt: skip
    try:
        open_txn.stdin.write(b"".join(f"aborted-{i}\n".encode() for i in range(50_000)))
        open_txn.stdin.flush()
        for _ in deadline_loop(30, "the open transaction's records in the log"):
            out = kcat(ctx, "-C", "-t", topic, "-p", "1", "-o", "beginning", "-e", "-q",
                       "-X", "isolation.level=read_uncommitted", check_exit=False)  # fmt: skip
            if b"aborted-" in out.stdout:
                break
    finally:
        open_txn.send_signal(signal.SIGKILL)
        open_txn.wait()
    kcat(ctx, "-P", "-t", topic, "-p", "1", *txn, data=b"final\n")
    committed = consume(ctx, topic, 4, "-X", "isolation.level=read_committed")
    values = sorted(r["payload"] for r in committed)
    check(values == sorted([f"committed-{i}" for i in range(3)] + ["final"]),
          f"read_committed saw {values}")  # fmt: skip
    out = kcat(ctx, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-J",
               "-X", "isolation.level=read_uncommitted", timeout=60)  # fmt: skip
    payloads = [json.loads(line)["payload"] for line in out.stdout.splitlines() if line.strip()]
    aborted = sum(1 for v in payloads if v.startswith("aborted-"))
    check(aborted > 0 and "final" in payloads, f"read_uncommitted saw {aborted} aborted records")
    return (f"read_committed hid the transaction of a killed producer (fenced and aborted, "
            f"{aborted} records)")  # fmt: skip


def f_offsets_by_timestamp(ctx: Context) -> str:
    topic = ctx.topic()
    for i in range(5):  # separate runs, so each record gets its own (later) create time
        kcat(ctx, "-P", "-t", topic, "-p", "0", data=f"{i}\n".encode())
    got = consume(ctx, topic, 5)
    stamps = [r["ts"] for r in got]
    target = stamps[2]
    want = next(r["offset"] for r in got if r["ts"] >= target)
    out = kcat(ctx, "-C", "-t", topic, "-p", "0", "-o", f"s@{target}", "-c", "1", "-J")
    first = json.loads(out.stdout.splitlines()[0])
    check(first["offset"] == want, f"s@{target} started at {first['offset']}, wanted {want}")
    return f"s@ts of record 2 -> offset {first['offset']}"


def f_large_messages(ctx: Context) -> str:
    value = os.urandom(2 * 1024 * 1024).hex().encode()  # 4 MiB of text, one line
    big = ["-X", "message.max.bytes=16777216"]
    kcat(ctx, "-P", "-t", ctx.topic("big"), *big, data=value + b"\n")
    refused = kcat(ctx, "-P", "-t", ctx.topic("default"), *big,
                   data=os.urandom(1024 * 1024).hex().encode() + b"\n", check_exit=False)  # fmt: skip
    err = refused.stderr.decode(errors="replace")
    check("too large" in err.lower(), f"2 MiB record not refused: exit {refused.returncode} {err}")
    got = consume(ctx, ctx.topic("big"), 1, "-X", "fetch.message.max.bytes=1048576")
    check(got[0]["payload"].encode() == value, "4 MiB value differs")
    return "4 MiB round trip; 2 MiB refused with MESSAGE_TOO_LARGE"


def f_failover(ctx: Context) -> str:
    """One idempotent `kcat -P -p N` per partition (acks=all), fed line by line through a
    SIGKILL of partition 0's leader, while `kcat -C -J` reads all partitions. kcat reports
    delivery failures on stderr and in its exit status: exit 0 means every line was
    acknowledged."""
    cluster = Failover(ctx)
    topic = ctx.topic()
    rdkafka = ["-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=5",
               "-X", "message.timeout.ms=60000"]  # fmt: skip
    # stderr to files: a pipe nobody reads during the election could fill and stall kcat.
    errs = [tempfile.TemporaryFile() for _ in range(FAILOVER_PARTITIONS)]  # noqa: SIM115
    producers = [
        subprocess.Popen(
            [KCAT, "-b", ctx.bootstrap, "-P", "-t", topic, "-p", str(p), *rdkafka],
            stdin=subprocess.PIPE,
            stderr=errs[p],
        )  # fmt: skip
        for p in range(FAILOVER_PARTITIONS)
    ]
    reader = subprocess.Popen([KCAT, "-b", ctx.bootstrap, "-C", "-t", topic, "-o", "beginning",
                               "-J", "-u"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    consumed: list = []

    def read() -> None:
        for line in reader.stdout:
            rec = json.loads(line)
            consumed.append((rec["partition"], rec["offset"], rec["payload"].encode()))

    threading.Thread(target=read, daemon=True).start()
    try:

        def send(seqs: list[int]) -> None:
            for s in seqs:
                producers[partition_of(s)].stdin.write(f"{s}\n".encode())
            for p in producers:
                p.stdin.flush()

        victim, sent, during = cluster.stream(send)
        failures = []
        for n, p in enumerate(producers):
            p.stdin.close()
            code = p.wait(90)
            errs[n].seek(0)
            err = errs[n].read().decode(errors="replace")
            if code != 0 or "Delivery failed" in err:
                failures.append(f"kcat -p {n} exited {p.returncode}: {err.strip()[-300:]}")
        check(not failures, "; ".join(failures))
        acked = set(range(sent))
        for _ in deadline_loop(60, f"{sent} acknowledged records read back"):
            if len(consumed) >= sent:
                break
            time.sleep(0.1)  # the reader thread appends meanwhile; bounded by the deadline
        return check_failover(acked, list(consumed), sent, victim, during)
    finally:
        for proc in [*producers, reader]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main(
        {
            "metadata": f_metadata,
            "produce_consume": f_produce_consume,
            "compression.gzip": compression("gzip"),
            "compression.snappy": compression("snappy"),
            "compression.lz4": compression("lz4"),
            "compression.zstd": compression("zstd"),
            "ordering": f_ordering,
            "groups.commit_resume": f_groups_commit_resume,
            "groups.rebalance": f_groups_rebalance,
            "admin.topics": na("kcat has no admin commands"),
            "admin.configs": na("kcat has no admin commands"),
            "idempotent": f_idempotent,
            "transactions": f_transactions,
            "offsets_by_timestamp": f_offsets_by_timestamp,
            "large_messages": f_large_messages,
            "failover": f_failover,
        }
    )

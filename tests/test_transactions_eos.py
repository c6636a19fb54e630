"""Exactly-once consume-transform-produce: an application (tests/txn_app.py, confluent-kafka)
is SIGKILLed in the middle of a transaction and restarted; the new instance fences the old
epoch, the open transaction is aborted, and read_committed readers of its output see every
input record transformed exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from helpers import RawClient
from test_transactions_protocol import FAST, create

APP = os.path.join(os.path.dirname(__file__), "txn_app.py")
TOTAL = 200
OVERRIDES = {**FAST, "group.initial.rebalance.delay.ms": "0"}


def read_out(bootstrap: str, committed: bool, at_least: int) -> list[bytes]:
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "checker", "enable.auto.commit": False,
        "isolation.level": "read_committed" if committed else "read_uncommitted",
    })  # fmt: skip
    c.assign([TopicPartition("out", p, 0) for p in (0, 1)])
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < at_least and time.monotonic() < deadline:
            got += [m.value() for m in c.consume(200, timeout=0.2) if m.error() is None]
        quiet = time.monotonic() + 0.5
        while time.monotonic() < quiet:
            got += [m.value() for m in c.consume(200, timeout=0.1) if m.error() is None]
    finally:
        c.close()
    return got


def run_app(bootstrap: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, APP, bootstrap, "--total", str(TOTAL), *extra],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_app_killed_mid_transaction_leaves_no_duplicates(make_broker):
    b = make_broker(OVERRIDES)
    bootstrap = b.bootstrap_servers
    c = RawClient(b.port)
    create(c, "in")
    create(c, "out")
    c.close()
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(TOTAL):
        p.produce("in", b"v-%03d" % i, partition=i % 2)
    p.flush(30)

    first = run_app(bootstrap, "--crash-at", "v-150")
    try:
        line = first.stdout.readline()
        assert line.strip() == "MIDTXN", line
    finally:
        first.kill()
        first.wait(10)
    # The crash left records of an open transaction in `out`.
    uncommitted = read_out(bootstrap, committed=False, at_least=1)
    assert b"V-150" in uncommitted

    second = run_app(bootstrap)
    try:
        out, _ = second.communicate(timeout=90)
    finally:
        second.kill()
    assert second.returncode == 0 and "DONE" in out, out

    committed = read_out(bootstrap, committed=True, at_least=TOTAL)
    assert len(committed) == TOTAL, f"{len(committed)} records"
    assert sorted(committed) == [b"V-%03d" % i for i in range(TOTAL)]
    # read_uncommitted shows what the aborted transaction had written: it did matter.
    everything = read_out(bootstrap, committed=False, at_least=TOTAL + 1)
    assert len(everything) > TOTAL

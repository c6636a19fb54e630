"""Authorizer cost with 10,000 ACLs: the decision itself, and requests per second with and
without the authorizer, measured in the same run.

    .venv/bin/python -m bench.authorizer [--acls 10000] [--seconds 2] [--rounds 3]

1. In process (pykbroker/acl/authorizer.py): decisions per second against --acls ACLs (half
   LITERAL topic ACLs, a quarter PREFIXED, a quarter on groups, spread over 1,000 users), first
   as a broker asks them (the same question again: the decision cache), then every question new
   (the cache cleared each time: literal, wildcard and prefix lookups). The ceiling beside them
   is a bare dict lookup loop in the same interpreter.
2. End to end: two brokers (subprocesses on 127.0.0.1), one with `authorizer.class.name` and
   the same --acls ACLs (User:ANONYMOUS allowed to create, write and describe topic `bench` among them,
   no super user), one without an authorizer. Metadata (one topic) and Produce (one 100-byte
   record, acks=1) requests are sent one at a time over a raw connection, alternating between
   the brokers for --rounds rounds so load on this shared machine falls on both alike; the
   ratio is the figure.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

from .common import REPO, Broker

sys.path.insert(0, str(REPO / "tests"))

from helpers import RawClient  # noqa: E402
from wire import produce_body, values_batch  # noqa: E402

from protocol.apis import ApiKey  # noqa: E402
from pykbroker.acl.authorizer import (  # noqa: E402
    AccessControlEntry,
    AclAuthorizer,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from pykbroker.acl.store import FileAclStore  # noqa: E402

Op, RT, PT = AclOperation, ResourceType, PatternType
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
ANON = "User:ANONYMOUS"


def make_acls(n: int, seed: int = 7) -> list[AclBinding]:
    rnd = random.Random(seed)
    bench = ResourcePattern(RT.TOPIC, "bench")
    out = [AclBinding(bench, AccessControlEntry(ANON, "*", op, ALLOW))
           for op in (Op.CREATE, Op.WRITE, Op.DESCRIBE)]  # fmt: skip
    ops = [Op.READ, Op.WRITE, Op.DESCRIBE, Op.ALL]
    out = dict.fromkeys(out)  # insertion-ordered set: every binding distinct
    i = 0
    while len(out) < n:
        i += 1
        user = f"User:u{rnd.randrange(1000)}"
        perm = DENY if rnd.random() < 0.1 else ALLOW
        host = "*" if rnd.random() < 0.9 else f"10.0.{rnd.randrange(256)}.{rnd.randrange(256)}"
        kind = i % 4
        if kind in (0, 1):
            pattern = ResourcePattern(RT.TOPIC, f"t-{i}")
        elif kind == 2:
            pattern = ResourcePattern(RT.TOPIC, f"p-{i % 500}-", PT.PREFIXED)
        else:
            pattern = ResourcePattern(RT.GROUP, f"g-{i}")
        out[AclBinding(pattern, AccessControlEntry(user, host, rnd.choice(ops), perm))] = None
    return list(out)


def decisions(n_acls: int, seconds: float) -> dict:
    a = AclAuthorizer()
    for b in make_acls(n_acls):
        a.add(b)
    questions = [(f"User:u{i % 1000}", "127.0.0.1", Op.READ, RT.TOPIC, f"p-{i % 500}-x{i}")
                 for i in range(5000)]  # fmt: skip
    out = {"acls": a.count}
    # The same question again and again: what a broker mostly asks (cache hits).
    q = (ANON, "127.0.0.1", Op.WRITE, RT.TOPIC, "bench")
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(1000):
            a.authorize(*q)
        n += 1000
    out["cached"] = n / (time.perf_counter() - t0)
    # Every question new: literal, wildcard and prefix lookups each time.
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for question in questions:
            a._cache.clear()
            a.authorize(*question)
        n += len(questions)
    out["uncached"] = n / (time.perf_counter() - t0)
    # Ceiling: a bare dict lookup loop.
    d = {q: True}
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(1000):
            d.get(q)
        n += 1000
    out["dict"] = n / (time.perf_counter() - t0)
    return out


def start_broker(n_acls: int | None) -> Broker:
    b = Broker({"auto.create.topics.enable": "false", "num.partitions": "1"})
    if n_acls is not None:
        b.overrides["authorizer.class.name"] = "kafka.security.authorizer.AclAuthorizer"
        data = os.path.join(b.data_dir, "data")
        os.makedirs(data, exist_ok=True)
        authorizer = AclAuthorizer()
        for binding in make_acls(n_acls):
            authorizer.add(binding)
        FileAclStore(authorizer, data)._save()  # the single broker's store, read at start
    b.start()
    return b


def create_bench_topic(port: int) -> None:
    c = RawClient(port)
    try:
        r = c.request(
            ApiKey.CREATE_TOPICS,
            7,
            {
                "topics": [{"name": "bench", "num_partitions": 1, "replication_factor": 1}],
                "timeout_ms": 10000,
            },
        )
        assert r.topics[0].error_code in (0, 36), r
    finally:
        c.close()


def rate(client: RawClient, broker: Broker, api: str, seconds: float) -> tuple[int, float, float]:
    """(requests, seconds, broker CPU seconds) of one timed run."""
    if api == "metadata":
        key, version, body = ApiKey.METADATA, 12, {"topics": [{"name": "bench"}],
                                                   "allow_auto_topic_creation": False}  # fmt: skip
    else:
        key, version, body = ApiKey.PRODUCE, 9, produce_body("bench", bytes(values_batch([b"x" * 100])),
                                                             acks=1)  # fmt: skip
    n, cpu0, t0 = 0, broker.cpu(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        r = client.request(key, version, body)
        n += 1
    elapsed, cpu = time.perf_counter() - t0, broker.cpu() - cpu0
    if api == "metadata":
        assert r.topics[0].error_code == 0, r
    else:
        assert r.responses[0].partition_responses[0].error_code == 0, r
    return n, elapsed, cpu


def end_to_end(n_acls: int, seconds: float, rounds: int) -> dict[str, dict[str, float]]:
    """Per API: requests/s and broker CPU us per request without an authorizer ("rate0",
    "cpu0") and with `n_acls` ACLs ("rate1", "cpu1"), the brokers taking turns."""
    brokers = {False: start_broker(None), True: start_broker(n_acls)}
    try:
        clients = {}
        for on, b in brokers.items():
            create_bench_topic(b.port)
            clients[on] = RawClient(b.port)
        totals = {(on, api): [0, 0.0, 0.0] for on in brokers for api in ("metadata", "produce")}
        for _ in range(rounds):
            for api in ("metadata", "produce"):
                for on, c in clients.items():
                    for i, x in enumerate(rate(c, brokers[on], api, seconds)):
                        totals[(on, api)][i] += x
        for c in clients.values():
            c.close()
    finally:
        for b in brokers.values():
            b.stop()
    out = {}
    for api in ("metadata", "produce"):
        (n0, s0, c0), (n1, s1, c1) = totals[(False, api)], totals[(True, api)]
        out[api] = {
            "rate0": n0 / s0,
            "rate1": n1 / s1,
            "cpu0": c0 / n0 * 1e6,
            "cpu1": c1 / n1 * 1e6,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--acls", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    d = decisions(args.acls, args.seconds)
    print(f"== in process, {d['acls']:,} ACLs")
    print(f"authorize(), the same question (cache hit): {d['cached']:,.0f} decisions/s")
    print(f"authorize(), every question new (cache cleared): {d['uncached']:,.0f} decisions/s")
    print(f"ceiling, a bare dict lookup: {d['dict']:,.0f} lookups/s")

    print(f"== end to end, requests one at a time, {args.rounds} rounds of {args.seconds} s")
    with_name = f"{args.acls:,} ACLs"
    for api, f in end_to_end(args.acls, args.seconds, args.rounds).items():
        print(f"{api}: {f['rate0']:,.0f} requests/s without an authorizer, {f['rate1']:,.0f} with "
              f"{with_name} ({f['rate1'] / f['rate0']:.1%}); broker CPU per request "
              f"{f['cpu0']:,.0f} us and {f['cpu1']:,.0f} us")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

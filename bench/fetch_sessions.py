"""Fetch sessions (KIP-227): what a consumer of many partitions sends and costs the broker,
with and without an incremental fetch session.

    .venv/bin/python -m bench.fetch_sessions [--partitions 1000] [--fetches 300] [--busy 10]

A consumer of --partitions partitions (one topic), caught up, fetches --fetches times
(Fetch v12, max_wait_ms 0, read_uncommitted), each time after one record was produced to
each of --busy partitions (so there is always a little news, as on a live topic):

- without a session: every request names every partition at its position (session epoch -1),
  every answer carries every partition;
- with a session: one full fetch opens it, then incremental fetches name only the partitions
  whose position moved (the --busy ones) and get only the partitions with news.

Reported for each: request and response bytes per fetch, the round trip p50, and the broker's
CPU per fetch (its process CPU time over the fetches, producing included and alike in both).
Both run on one broker (a subprocess on 127.0.0.1), alternating in --rounds rounds.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from .common import REPO, Broker, percentile
from .throughput import create_topic

sys.path.insert(0, str(REPO / "tests"))

from helpers import RawClient  # noqa: E402
from wire import produce_body, values_batch  # noqa: E402

from protocol import codec  # noqa: E402
from protocol.apis import ApiKey  # noqa: E402

VERSION = 12


class Consumer:
    def __init__(self, port: int, topic: str, partitions: int, session: bool):
        self.c = RawClient(port)
        self.topic = topic
        self.positions = dict.fromkeys(range(partitions), 0)
        self.sent: dict[int, int] = {}  # what the session holds
        self.session = session
        self.session_id, self.epoch = 0, 0 if session else -1

    def _body(self, parts: dict[int, int]) -> dict:
        return {
            "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 50 << 20,
            "isolation_level": 0, "session_id": self.session_id, "session_epoch": self.epoch,
            "topics": [{"topic": self.topic, "partitions": [
                {"partition": p, "fetch_offset": o, "log_start_offset": -1,
                 "partition_max_bytes": 1 << 20, "current_leader_epoch": -1,
                 "last_fetched_epoch": -1} for p, o in parts.items()]}] if parts else [],
            "forgotten_topics_data": [], "rack_id": "",
        }  # fmt: skip

    def fetch(self) -> tuple[int, int, float]:
        """One fetch: (request bytes, response bytes, seconds)."""
        if self.session and self.epoch > 0:
            parts = {p: o for p, o in self.positions.items() if self.sent.get(p) != o}
        else:
            parts = dict(self.positions)
        c = self.c
        c.correlation_id += 1
        frame = codec.encode_request(ApiKey.FETCH, VERSION, c.correlation_id, "bench",
                                     self._body(parts))  # fmt: skip
        t0 = time.perf_counter()
        c.send_raw(frame)
        reply = c.recv_frame()
        elapsed = time.perf_counter() - t0
        r = codec.decode_response(ApiKey.FETCH, VERSION, reply, 5)
        assert r.error_code == 0, r.error_code
        for t in r.responses:
            for p in t.partitions:
                if p.records:
                    self.positions[p.partition_index] = p.high_watermark
        if self.session:
            self.sent.update(parts)
            self.session_id = r.session_id
            self.epoch = self.epoch + 1
        return len(frame), len(reply) + 4, elapsed

    def close(self) -> None:
        self.c.close()


def run(broker: Broker, topic: str, args, session: bool) -> dict:
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    consumer = Consumer(port, topic, args.partitions, session)
    producer = RawClient(port)
    consumer.fetch()  # catch up (and open the session)
    consumer.fetch()
    busy = [(i * 97) % args.partitions for i in range(args.busy)]
    req = resp = 0
    times = []
    cpu0 = broker.cpu()
    for n in range(args.fetches):
        for p in busy:
            body = produce_body(topic, bytes(values_batch([b"r%d" % n])), p, acks=1)
            producer.request(ApiKey.PRODUCE, 9, body)
        a, b, t = consumer.fetch()
        req += a
        resp += b
        times.append(t)
    cpu = broker.cpu() - cpu0
    consumer.close()
    producer.close()
    times.sort()
    n = args.fetches
    return {"req": req / n, "resp": resp / n, "p50": percentile(times, 0.5), "cpu": cpu / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--fetches", type=int, default=300, help="per mode per round")
    ap.add_argument("--busy", type=int, default=10, help="partitions with a new record per fetch")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"a consumer of {args.partitions} partitions, {args.busy} of them with a new record "
          f"before each fetch, {args.fetches} fetches x {args.rounds} rounds per mode")  # fmt: skip
    out: dict[bool, list[dict]] = {False: [], True: []}
    with Broker({"num.partitions": "1"}) as broker:
        topic = f"bench-fs-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap, topic, args.partitions)
        for _ in range(args.rounds):
            for session in (False, True):
                out[session].append(run(broker, topic, args, session))
    rows = {}
    for session, runs in out.items():
        avg = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
        rows[session] = avg
        label = "with a session   " if session else "without a session"
        print(f"{label}: request {avg['req']:>8,.0f} B  response {avg['resp']:>8,.0f} B  "
              f"round trip p50 {avg['p50'] * 1000:6.2f} ms  "
              f"broker CPU {avg['cpu'] * 1000:6.2f} ms/fetch")  # fmt: skip
    off, on = rows[False], rows[True]
    print(f"session/no session: request bytes {on['req'] / off['req']:.3f}, response bytes "
          f"{on['resp'] / off['resp']:.3f}, broker CPU {on['cpu'] / off['cpu']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

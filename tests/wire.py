"""Helpers for the spine tests: raw produce/fetch bodies, a fault-injecting proxy, log readers."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import deque

from protocol import records as rb
from protocol.apis import ApiKey
from protocol.framing import FrameReader

# --- request bodies (kafka-python field names) ----------------------------------------------


def produce_body(topic: str, records: bytes | None, partition: int = 0, acks: int = -1,
                 timeout_ms: int = 10000, transactional_id: str | None = None) -> dict:  # fmt: skip
    return {
        "transactional_id": transactional_id,
        "acks": acks,
        "timeout_ms": timeout_ms,
        "topic_data": [
            {"name": topic, "partition_data": [{"index": partition, "records": records}]}
        ],
    }


def fetch_body(
    partitions: list[tuple[str, int, int]],  # (topic, partition, fetch offset)
    *,
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    max_bytes: int = 50 << 20,
    partition_max_bytes: int = 1 << 20,
) -> dict:
    topics: dict[str, list] = {}
    for topic, partition, offset in partitions:
        topics.setdefault(topic, []).append(
            {
                "partition": partition,
                "fetch_offset": offset,
                "log_start_offset": -1,
                "partition_max_bytes": partition_max_bytes,
                "current_leader_epoch": -1,
            }  # fmt: skip
        )
    return {
        "replica_id": -1, "max_wait_ms": max_wait_ms, "min_bytes": min_bytes,
        "max_bytes": max_bytes, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()],
        "forgotten_topics_data": [], "rack_id": "",
    }  # fmt: skip


def init_producer_id(client) -> tuple[int, int]:
    r = client.request(
        ApiKey.INIT_PRODUCER_ID, 4,
        {"transactional_id": None, "transaction_timeout_ms": 60000, "producer_id": -1,
         "producer_epoch": -1},
    )  # fmt: skip
    assert r.error_code == 0
    return r.producer_id, r.producer_epoch


def values_batch(values: list[bytes], *, timestamp: int | None = None, **kwargs) -> bytearray:
    """One batch of records with these values (offsets 0..n-1, as a producer sends them)."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    return rb.build_batch([rb.Record(i, ts, None, v) for i, v in enumerate(values)], **kwargs)


def partition_response(resp):
    """The single partition entry of a one-partition ProduceResponse."""
    return resp.responses[0].partition_responses[0]


def produce_request_frame(correlation_id: int, body: dict, version: int = 9) -> bytes:
    from protocol import codec

    return codec.encode_request(ApiKey.PRODUCE, version, correlation_id, "raw-test", body)


# --- reading a partition's log straight from its segment files ------------------------------


def read_log_records(log_dir: str) -> list[rb.Record]:
    """Every record in a partition directory, from its .log files, in file order."""
    out: list[rb.Record] = []
    for name in sorted(os.listdir(log_dir)):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(log_dir, name), "rb") as f:
            data = f.read()
        for pos, _header in rb.scan_batches(data):
            out.extend(rb.decode_records(data, pos))
    return out


def batches_in(data: bytes) -> list[rb.BatchHeader]:
    return [h for _, h in rb.scan_batches(data)]


# --- a fault-injecting TCP proxy --------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy between clients and a broker that loses produce responses.

    The broker's `advertised.listeners` must name the proxy, so clients reconnect through it.
    For each produce request whose ordinal (counted over all connections, acks != 0 only) is in
    `cut_at`, the proxy forwards the request, waits for the broker's response, throws it away and
    closes both sides of that connection: the client has to retry a batch the broker appended.
    Requests the client pipelined behind it are lost the same way. A produce request whose
    ordinal is in `drop_at` is never forwarded; the next one is, and its answer (the broker sees
    a sequence gap) reaches the client before the connection is cut.
    """

    def __init__(self, cut_at: set[int], drop_at: set[int] = frozenset()):
        self.cut_at = set(cut_at)
        self.drop_at = set(drop_at)  # never forwarded: the broker sees a sequence gap
        self.drops = 0
        self.errors: dict[int, int] = {}  # produce error codes the broker answered with
        self.upstream_port: int | None = None
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.produce_count = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            pending: deque = deque()  # (correlation id, cut?) of requests awaiting responses
            threading.Thread(
                target=self._client_to_broker, args=(client, upstream, pending), daemon=True
            ).start()
            threading.Thread(
                target=self._broker_to_client, args=(client, upstream, pending), daemon=True
            ).start()

    def _client_to_broker(self, client, upstream, pending) -> None:
        reader = FrameReader(1 << 30)
        gap = False
        try:
            while True:
                data = client.recv(1 << 16)
                if not data:
                    break
                reader.feed(data)
                while reader.frames:
                    frame = reader.frames.popleft()
                    api_key, _version, corr = struct.unpack_from(">hhi", frame, 0)
                    cut = False
                    if api_key == ApiKey.PRODUCE and _acks(frame) != 0:
                        with self._lock:
                            self.produce_count += 1
                            cut = self.produce_count in self.cut_at
                            if self.produce_count in self.drop_at:
                                self.drops += 1
                                gap = True
                                continue
                            if gap:  # the request after the hole: its answer goes through,
                                cut, gap = "after", False  # then the connection is cut
                    pending.append((corr, cut, api_key, _version))
                    upstream.sendall(struct.pack(">i", len(frame)) + bytes(frame))
        except OSError:
            pass
        _close_both(client, upstream)

    def _broker_to_client(self, client, upstream, pending) -> None:
        reader = FrameReader(1 << 30)
        try:
            while True:
                data = upstream.recv(1 << 16)
                if not data:
                    break
                reader.feed(data)
                while reader.frames:
                    frame = reader.frames.popleft()
                    corr = struct.unpack_from(">i", frame, 0)[0]
                    while pending and pending[0][0] != corr:
                        pending.popleft()  # acks=0 produce: no response
                    _corr, cut, api_key, version = pending.popleft() if pending else (0, 0, 0, 0)
                    if api_key == ApiKey.PRODUCE:
                        self._note_errors(frame, version)
                    if cut is True:
                        with self._lock:
                            self.cuts += 1
                        raise ConnectionAbortedError("cut")
                    client.sendall(struct.pack(">i", len(frame)) + bytes(frame))
                    if cut == "after":
                        with self._lock:
                            self.cuts += 1
                        raise ConnectionAbortedError("cut after a gap")
        except OSError:
            pass
        _close_both(client, upstream)

    def _note_errors(self, frame, version: int) -> None:
        from protocol import codec

        offset = 4 + (1 if codec.response_is_flexible(ApiKey.PRODUCE, version) else 0)
        resp = codec.decode_response(ApiKey.PRODUCE, version, frame, offset)
        with self._lock:
            for t in resp.responses:
                for p in t.partition_responses:
                    if p.error_code:
                        self.errors[p.error_code] = self.errors.get(p.error_code, 0) + 1

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for s in self._sockets:
            _close(s)


def _acks(frame) -> int:
    """acks of a produce request frame (header v1 or v2; transactional_id then acks)."""
    from protocol import codec
    from protocol.framing import parse_request_header
    from protocol.hotpath import decode_produce_request

    header = parse_request_header(frame, codec.request_is_flexible)
    return decode_produce_request(bytearray(frame), header.body_offset, header.api_version).acks


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def _close_both(a: socket.socket, b: socket.socket) -> None:
    _close(a)
    _close(b)


def wait_for(condition, timeout: float = 20, what: str = "condition"):
    """Poll `condition` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def fetch(client, partitions: list[tuple[str, int, int]], version: int = 12, **kwargs):
    """A FetchResponse for (topic, partition, offset) triples."""
    return client.request(ApiKey.FETCH, version, fetch_body(partitions, **kwargs))


def fetched_records(partition_data) -> list[rb.Record]:
    """Decoded records of one FetchResponse partition (whole batches only)."""
    data = partition_data.records or b""
    out = []
    for pos, _h in rb.scan_batches(data):
        out.extend(rb.decode_records(data, pos))
    return out


def fetch_records(client, topic: str, partition: int, offset: int, **kwargs):
    """(partition response, records) for one partition."""
    resp = fetch(client, [(topic, partition, offset)], **kwargs)
    p = resp.responses[0].partitions[0]
    return p, fetched_records(p)

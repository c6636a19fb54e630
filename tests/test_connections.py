"""Connection lifetime: idle connections are closed (connections.max.idle.ms), busy ones never."""

from __future__ import annotations

import socket

from helpers import BrokerProcess, RawClient
from wire import fetch_body, wait_for

from protocol import codec
from protocol.apis import ApiKey


def closed_by_broker(client: RawClient) -> bool:
    client.sock.settimeout(20)
    try:
        return client.sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_idle_connections_are_closed(tmp_path):
    bp = BrokerProcess(str(tmp_path / "data"), {"connections.max.idle.ms": "300"}).start()
    try:
        # A client that stopped half-way through a request.
        stalled = RawClient(bp.port)
        frame = codec.encode_request(ApiKey.METADATA, 9, 1, "stalled", {"topics": None})
        stalled.send_raw(frame[:10])
        peer = "{}:{}".format(*stalled.sock.getsockname()[:2])
        # A client whose fetch waits longer than the idle limit: it is busy, not idle.
        waiting = RawClient(bp.port)
        waiting.request(ApiKey.CREATE_TOPICS, 7, {"topics": [
            {"name": "idle", "num_partitions": 1, "replication_factor": 1, "assignments": [],
             "configs": []}], "timeout_ms": 5000, "validate_only": False})  # fmt: skip
        waiting.correlation_id += 1
        waiting.send_raw(codec.encode_request(
            ApiKey.FETCH, 12, waiting.correlation_id, "waiting",
            fetch_body([("idle", 0, 0)], max_wait_ms=1500, min_bytes=1)))  # fmt: skip

        assert closed_by_broker(stalled)
        event = wait_for(lambda: [e for e in bp.events("connection_idle_closed")
                                  if e["peer"] == peer], what="the idle log line")[0]  # fmt: skip
        assert event["partial_request"] is True
        waiting.sock.settimeout(20)
        frame = waiting.recv_frame()  # answered when max_wait expired, not cut off
        assert frame is not None
        assert int.from_bytes(frame[:4], "big") == waiting.correlation_id
        assert closed_by_broker(waiting)  # and idle after that
        # New connections are still welcome.
        fresh = RawClient(bp.port)
        assert fresh.request(ApiKey.API_VERSIONS, 0, {}).error_code == 0
        fresh.sock.shutdown(socket.SHUT_RDWR)
        fresh.close()
    finally:
        bp.kill()

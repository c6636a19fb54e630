"""Connection limits as Kafka's ConnectionQuotas enforces them (KIP-308, KIP-402, KIP-612).

- max.connections: at the limit the broker stops accepting; new connections wait (TCP-connected
  in the listen backlog, unanswered) until one closes. With several listeners the inter-broker
  one is exempt, and a connection there past the limit closes the least recently active
  connection of another listener (SocketServer's closeExcessConnections).
- max.connections.per.ip (+ overrides): the connection past an address's maximum is closed at
  once, logged as "Rejected connection from /127.0.0.1, address already has the configured
  maximum of N connections."
- max.connection.creation.rate: accepting waits (QuotaUtils.throttleTime on a windowed Rate, at
  most one quota window per connection).
"""

from __future__ import annotations

import selectors
import socket
import time

from helpers import BrokerProcess, RawClient
from test_metrics import scrape, value
from test_quotas_api import alter
from wire import wait_for

from protocol import codec
from protocol.apis import ApiKey


def _api_versions_frame(correlation_id: int) -> bytes:
    return codec.encode_request(ApiKey.API_VERSIONS, 0, correlation_id, "limits", {})


def _open(port: int, n: int) -> list[socket.socket]:
    """n connections, each with an ApiVersions request sent (answered once accepted)."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(_api_versions_frame(i))
        s.setblocking(False)
        socks.append(s)
    return socks


class Watch:
    """Which of a set of sockets got an answer, and which were closed by the broker."""

    def __init__(self, socks: list[socket.socket]):
        self.sel = selectors.DefaultSelector()
        self.answered: set[socket.socket] = set()
        self.closed: set[socket.socket] = set()
        for s in socks:
            self.sel.register(s, selectors.EVENT_READ)

    def poll(self, timeout: float = 0.2) -> None:
        for key, _ in self.sel.select(timeout):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if data:
                self.answered.add(s)
            else:
                self.closed.add(s)
                self.sel.unregister(s)

    def until(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.poll()

    def quiet_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll(end - time.monotonic())


def test_max_connections_holds_with_2000_clients(tmp_path):
    broker = BrokerProcess(str(tmp_path / "data"), {
        "listeners": "PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
        "inter.broker.listener.name": "INTERNAL",
        "max.connections": "1000",
    }).start()  # fmt: skip
    internal_port = int(broker.events("broker_started")[0]["listeners"][1].rsplit(":", 1)[1])
    socks = []
    try:
        socks = _open(broker.port, 2000)
        watch = Watch(socks)
        watch.until(lambda: len(watch.answered) == 1000, 60, "1000 answered connections")
        watch.quiet_for(1.0)  # the other 1000 wait, unanswered and not closed
        assert (len(watch.answered), len(watch.closed)) == (1000, 0)

        # The inter-broker listener is exempt: it answers, and one client connection (the least
        # recently active) is closed to make room.
        internal = RawClient(internal_port)
        assert internal.request(ApiKey.API_VERSIONS, 0, {}).error_code == 0
        watch.until(lambda: len(watch.closed) == 1, 20, "one client connection closed")
        assert watch.closed <= watch.answered

        # 999 client connections + the inter-broker one: closing 500 client connections lets
        # exactly 500 waiting ones in, and closing the inter-broker one one more.
        open_answered = [s for s in socks if s in watch.answered and s not in watch.closed]
        for s in open_answered[:500]:
            watch.sel.unregister(s)
            s.close()
        watch.until(lambda: len(watch.answered) == 1500, 60, "500 more answered")
        watch.quiet_for(0.5)
        assert len(watch.answered) == 1500
        internal.close()
        watch.until(lambda: len(watch.answered) == 1501, 20, "one more after internal closed")
        watch.quiet_for(0.5)
        assert (len(watch.answered), len(watch.closed)) == (1501, 1)
        # Healthy: once the clients leave, a new one is served.
        for s in socks:
            s.close()
        probe = RawClient(broker.port)
        assert probe.request(ApiKey.API_VERSIONS, 0, {}).error_code == 0
        probe.close()
    finally:
        for s in socks:
            s.close()
        assert broker.terminate() == 0


def test_max_connections_per_ip_and_overrides(tmp_path):
    broker = BrokerProcess(
        str(tmp_path / "data"), {"max.connections.per.ip": "3", "metrics.port": "0"}
    ).start()
    socks = []
    try:
        socks = _open(broker.port, 5)
        watch = Watch(socks)
        watch.until(lambda: len(watch.answered) == 3 and len(watch.closed) == 2, 20,
                    "3 answered, 2 closed")  # fmt: skip
        wait_for(lambda: len(broker.events("connection_rejected")) == 2, 10, "log lines")
        assert broker.events("connection_rejected")[0]["reason"] == (
            "Rejected connection from /127.0.0.1, address already has the configured maximum "
            "of 3 connections."
        )
        metrics_port = broker.events("broker_started")[0]["metrics_port"]
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert value(samples, "pykbroker_connections_rejected_total", reason="per_ip") == 2
        assert value(samples, "kafka_server_socket_server_metrics_connection_count",
                     listener="PLAINTEXT") == 3  # fmt: skip
        # A closed connection frees the address's slot.
        socks[0].close()
        watch.sel.unregister(socks[0])
        more = _open(broker.port, 1)
        socks += more
        w2 = Watch(more)
        w2.until(lambda: len(w2.answered) == 1, 20, "a new connection answered")
    finally:
        for s in socks:
            s.close()
        broker.terminate()
    broker = BrokerProcess(str(tmp_path / "data2"), {
        "max.connections.per.ip": "3", "max.connections.per.ip.overrides": "127.0.0.1:5",
    }).start()  # fmt: skip
    try:
        socks = _open(broker.port, 6)
        watch = Watch(socks)
        watch.until(lambda: len(watch.answered) == 5 and len(watch.closed) == 1, 20,
                    "5 answered, 1 closed")  # fmt: skip
    finally:
        for s in socks:
            s.close()
        broker.terminate()


def test_max_connection_creation_rate(tmp_path):
    """Kafka's Rate window is (quota.window.num - 1) whole windows plus the current one's part,
    so under 11 s during the first 10 s: at 5/s the first ~50-55 connections go straight in,
    and the k-th after that waits (k / window - 5) / 5 x window = 0.2 x (k - 5 x window) s,
    at most one quota window (1 s): for k = 56..60 at least 0.2 + 0.4 + 0.6 + 0.8 + 1.0 s."""
    broker = BrokerProcess(str(tmp_path / "data"), {"max.connection.creation.rate": "5"}).start()
    socks = []
    try:
        socks = _open(broker.port, 50)
        watch = Watch(socks)
        watch.until(lambda: len(watch.answered) == 50, 20, "50 answered")
        started = time.monotonic()
        later = _open(broker.port, 10)
        socks += later
        w2 = Watch(later)
        w2.until(lambda: len(w2.answered) == 10, 30, "10 more answered")
        assert time.monotonic() - started >= 2.5
    finally:
        for s in socks:
            s.close()
        broker.terminate()


def test_ip_connection_creation_rate_quota(broker):
    """An ip entity's connection_creation_rate (KIP-612), set at runtime with no static limits:
    at 1/s the Rate's first window (10 s plus the current second's part) lets 10 or 11
    connections in; the next ones are closed after their throttle time."""
    c = RawClient(broker.port)
    assert alter(c, {"ip": "127.0.0.1"}, {"connection_creation_rate": 1}).error_code == 0
    socks = _open(broker.port, 14)
    try:
        watch = Watch(socks)
        watch.until(lambda: len(watch.answered) + len(watch.closed) == 14, 20, "all settled")
        assert 10 <= len(watch.answered) <= 11
        assert watch.closed == set(socks) - watch.answered
        # The quota removed, connections are let in again.
        assert alter(c, {"ip": "127.0.0.1"}, {"connection_creation_rate": None}).error_code == 0
        probe = RawClient(broker.port)
        assert probe.request(ApiKey.API_VERSIONS, 0, {}).error_code == 0
        probe.close()
    finally:
        c.close()
        for s in socks:
            s.close()

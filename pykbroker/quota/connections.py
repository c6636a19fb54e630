"""Connection limits (Kafka's ConnectionQuotas and Acceptor).

- `max.connections`: the broker-wide count. At the limit a listener stops accepting (the new
  sockets wait in the kernel's backlog) until a connection closes. When there are several
  listeners the inter-broker one is exempt ("protected"), and a connection made on it past the
  limit closes the least recently active connection of another listener instead.
- `listener.name.<l>.max.connections`: the same per listener (defaulting to max.connections).
- `max.connections.per.ip` / `max.connections.per.ip.overrides`: a connection from an address
  that already has its maximum is accepted and closed at once, with Kafka's log line.
- `max.connection.creation.rate` (and per listener): connections accepted per second, measured
  with the client quotas' windowed Rate; past it the acceptor waits (up to one quota window).
- `connection_creation_rate` quotas on ip entities (AlterClientQuotas, `kafka-configs
  --entity-type ips`): an address past its rate has its new connection closed after the
  throttle time (Kafka's delayed close), so a reconnecting client is slowed down.

The accept loop is used only when one of these is configured; otherwise listeners accept
through asyncio's own server as before.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import structlog

from .entities import CONNECTION_CREATION_RATE, path_entity
from .rate import Rate, throttle_time_ms

log = structlog.get_logger(__name__)

INT_MAX = (1 << 31) - 1
_LIMIT_KEYS = ("max.connections", "max.connection.creation.rate")


def parse_overrides(text: str) -> dict[str, int]:
    """max.connections.per.ip.overrides: "host:count,host:count" (IPv6 hosts contain colons:
    the count is after the last one). Hostnames are resolved once, as Kafka does."""
    out: dict[str, int] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        host, _, count = item.rpartition(":")
        try:
            ip = str(ipaddress.ip_address(host))
        except ValueError:
            ip = socket.gethostbyname(host)
        out[ip] = int(count)
    return out


def limits_configured(config) -> bool:
    if config.get("max.connections.per.ip") < INT_MAX or config.get(
        "max.connections.per.ip.overrides"
    ):
        return True
    for listener, _, _ in config.listeners:
        if any(config.for_listener(listener.upper(), k) < INT_MAX for k in _LIMIT_KEYS):
            return True
    return False


class ConnectionQuotas:
    def __init__(self, config, listeners: list[str], inter_broker: str):
        self.config = config
        self.samples = config.get("quota.window.num")
        self.window_ms = config.get("quota.window.size.seconds") * 1000
        self.max_connections = config.get("max.connections")
        self.max_per_ip = config.get("max.connections.per.ip")
        self.per_ip_overrides = parse_overrides(config.get("max.connections.per.ip.overrides"))
        self.listener_max = {n: config.for_listener(n, "max.connections") for n in listeners}
        self.inter_broker = inter_broker
        self.counts: dict[str, int] = {}  # by IP
        self.listener_counts = dict.fromkeys(listeners, 0)
        self.total = 0
        self.broker_rate = self._rate_limit(config.get("max.connection.creation.rate"))
        self.listener_rates = {
            n: self._rate_limit(config.for_listener(n, "max.connection.creation.rate"))
            for n in listeners
        }
        self.ip_rates: dict[str, float] = {}  # connection_creation_rate quotas; "" the default
        self.ip_sensors: dict[str, Rate] = {}
        self._slot_freed = asyncio.Event()
        # Metrics (Kafka's socket-server-metrics / Acceptor ones).
        self.rejected = 0  # closed for max.connections.per.ip
        self.ip_throttled = 0  # closed late for an ip's connection_creation_rate
        self.blocked_ms = dict.fromkeys(listeners, 0.0)  # AcceptorBlockedPercent's numerator
        self.accept_throttle_ms = dict.fromkeys(listeners, 0)  # connection-accept-throttle-time

    def _rate_limit(self, limit: int) -> tuple[Rate, float] | None:
        return None if limit >= INT_MAX else (Rate(self.samples, self.window_ms), float(limit))

    def set_ip_quotas(self, configs: dict[str, dict[str, str]]) -> None:
        rates = {}
        for path, values in configs.items():
            entity = path_entity(path)
            if entity is None or entity[0][0] != "ip" or CONNECTION_CREATION_RATE not in values:
                continue
            rates[entity[0][1] or ""] = float(values[CONNECTION_CREATION_RATE])
        self.ip_rates = rates

    def max_for_ip(self, ip: str) -> int:
        return self.per_ip_overrides.get(ip, self.max_per_ip)

    def _protected(self, listener: str) -> bool:
        return listener == self.inter_broker and len(self.listener_counts) > 1

    def slot_available(self, listener: str) -> bool:
        if self.listener_counts[listener] >= self.listener_max[listener]:
            return False
        return self._protected(listener) or self.total < self.max_connections

    def exceeded(self) -> bool:
        return self.total > self.max_connections

    def _now_ms(self) -> int:
        return int(time.monotonic() * 1000)

    def creation_throttle_ms(self, listener: str) -> int:
        """Record one connection against the broker's and the listener's creation rates; how
        long the acceptor must wait (bounded by one quota window, as Kafka's)."""
        now = self._now_ms()
        throttle = 0
        limits = [self.listener_rates[listener]]
        if not self._protected(listener):
            limits.append(self.broker_rate)
        for entry in limits:
            if entry is not None:
                rate, bound = entry
                rate.record(1, now)
                throttle = max(throttle, throttle_time_ms(rate, bound, now))
        if throttle:
            self.accept_throttle_ms[listener] += min(throttle, self.window_ms)
        return min(throttle, self.window_ms)

    def ip_throttle_ms(self, ip: str) -> int:
        """An ip's connection_creation_rate quota: how long to hold its new connection before
        closing it (0: let it in)."""
        bound = self.ip_rates.get(ip, self.ip_rates.get(""))
        if bound is None:
            return 0
        now = self._now_ms()
        rate = self.ip_sensors.get(ip)
        if rate is None:
            if len(self.ip_sensors) >= 10_000:  # many source addresses: drop the idle ones
                span = self.samples * self.window_ms
                for old in [a for a, r in self.ip_sensors.items() if now - r.last_ms() > span]:
                    del self.ip_sensors[old]
            rate = self.ip_sensors[ip] = Rate(self.samples, self.window_ms)
        rate.record(1, now)
        throttle = throttle_time_ms(rate, bound, now)
        if throttle:
            rate.record(-1, now)  # a connection refused is not one made (Kafka unrecords it)
            self.ip_throttled += 1
        return min(throttle, self.window_ms)

    async def wait_for_slot(self, listener: str) -> None:
        throttle = self.creation_throttle_ms(listener)
        if throttle <= 0 and self.slot_available(listener):
            return
        started = time.monotonic()
        deadline = started + throttle / 1000
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self.slot_available(listener):
                break
            self._slot_freed.clear()
            try:
                await asyncio.wait_for(
                    self._slot_freed.wait(), remaining if remaining > 0 else None
                )
            except TimeoutError:
                pass
        self.blocked_ms[listener] += (time.monotonic() - started) * 1000

    def inc(self, listener: str, ip: str) -> int | None:
        """Count a new connection; its IP's maximum if that is exceeded (then dec it)."""
        count = self.counts.get(ip, 0)
        self.counts[ip] = count + 1
        self.total += 1
        self.listener_counts[listener] += 1
        limit = self.max_for_ip(ip)
        return limit if count >= limit else None

    def dec(self, listener: str, ip: str) -> None:
        count = self.counts.get(ip, 0)
        if count <= 1:
            self.counts.pop(ip, None)
        else:
            self.counts[ip] = count - 1
        self.total -= 1
        self.listener_counts[listener] -= 1
        self._slot_freed.set()


class Acceptor:
    """One listener's accept loop (Kafka's Acceptor): accept, wait for a slot and for the
    creation rate, check the IP's limit, then hand the socket to a Connection."""

    def __init__(self, broker, listener: str, sock: socket.socket, factory):
        self.broker = broker
        self.listener = listener
        self.sock = sock
        self.factory = factory
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.sock.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        quotas: ConnectionQuotas = self.broker.connection_quotas
        while True:
            try:
                client, addr = await loop.sock_accept(self.sock)
            except OSError as e:  # EMFILE and the like: back off, as Kafka's acceptor does
                log.warning("accept_failed", listener=self.listener, error=str(e))
                await asyncio.sleep(0.1)
                continue
            ip = addr[0]
            await quotas.wait_for_slot(self.listener)
            limit = quotas.inc(self.listener, ip)
            if limit is not None:
                log.info("connection_rejected", listener=self.listener, ip=ip,
                         reason=f"Rejected connection from /{ip}, address already has the "
                                f"configured maximum of {limit} connections.")  # fmt: skip
                quotas.rejected += 1
                quotas.dec(self.listener, ip)
                client.close()
                continue
            delay = quotas.ip_throttle_ms(ip)
            if delay:
                log.debug("connection_throttled", ip=ip, delay_ms=delay)
                quotas.dec(self.listener, ip)
                loop.call_later(delay / 1000, client.close)  # Kafka's delayed close
                continue
            if quotas.exceeded():  # a protected (inter-broker) connection went past the limit
                self.broker.close_least_recently_used(self.listener)
            loop.create_task(self._hand_over(client, ip))

    async def _hand_over(self, client: socket.socket, ip: str) -> None:
        loop = asyncio.get_running_loop()
        made = []

        def factory():
            conn = self.factory()
            conn.counted = (self.listener, ip)  # the broker decs it when the connection closes
            made.append(conn)
            return conn

        try:
            await loop.connect_accepted_socket(factory, client)  # TLS: the Connection layers it
        except BaseException as e:
            # Never connected: no connection_lost will come to dec it.
            if not made or made[0].transport is None:
                if made:
                    made[0].counted = None
                self.broker.connection_quotas.dec(self.listener, ip)
            client.close()
            if isinstance(e, asyncio.CancelledError):
                raise
            if not isinstance(e, (OSError, ConnectionError)):
                log.warning("connection_setup_failed", listener=self.listener, ip=ip,
                            error=repr(e))  # fmt: skip


def listening_socket(host: str | None, port: int) -> socket.socket:
    """A non-blocking listening socket bound as asyncio's create_server binds (all interfaces,
    IPv4 and IPv6, for an empty host)."""
    if not host:
        if socket.has_dualstack_ipv6():
            sock = socket.create_server(("", port), family=socket.AF_INET6, backlog=1024,
                                        dualstack_ipv6=True)  # fmt: skip
        else:
            sock = socket.create_server(("", port), backlog=1024)
    else:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.create_server(addr, family=family, backlog=1024)
    sock.setblocking(False)
    return sock

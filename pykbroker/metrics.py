"""Broker metrics: plain ints on the hot path, turned into Prometheus metrics at scrape time.

The request path only adds to Python ints and dicts (per request and per batch, never per
record). `BrokerCollector` reads those counters, and the broker's live state (logs, purgatories,
groups), when Prometheus scrapes `http://<listener host>:<metrics.port>/metrics`. The HTTP
endpoint runs on the broker's own event loop, so a scrape sees a consistent state without locks.

Names follow Kafka's MBeans (kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec becomes
kafka_server_broker_topic_bytes_in_total{topic}); times are in seconds, as Prometheus prefers.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

import structlog

from protocol.apis import ApiKey

if TYPE_CHECKING:
    from pykbroker.broker import Broker

log = structlog.get_logger(__name__)

# Upper bounds (seconds) of the request-time histogram; long polls and joins land in the tail.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

# Kafka's request names (RequestMetrics request=...): API_VERSIONS -> ApiVersions.
API_NAMES = {k.value: "".join(w.capitalize() for w in k.name.split("_")) for k in ApiKey}
UNKNOWN_API = -1


# Upper bounds (seconds) of the event-loop lag histogram.
LOOP_LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class LoopLagProbe:
    """How late a periodic timer fires on the broker's event loop: its longest stall.

    Everything the broker does runs on one loop, so any synchronous work (a big allocation, a
    cold disk read, a long decode) delays every connection by as much. Kafka has no equivalent
    (its network and I/O threads block separately); this is what to watch instead. The probe
    starts once the broker has started, so start-up recovery is not counted.
    """

    INTERVAL = 0.02  # seconds between timer firings; the lag is the lateness past that

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.max = 0.0
        self.buckets = [0] * (len(LOOP_LAG_BUCKETS) + 1)  # the last one is +Inf

    def observe(self, lag: float) -> None:
        self.count += 1
        self.seconds += lag
        if lag > self.max:
            self.max = lag
        self.buckets[bisect_left(LOOP_LAG_BUCKETS, lag)] += 1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.INTERVAL
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            self.observe(max(loop.time() - due, 0.0))


class RequestStats:
    """Count, total time and histogram buckets of one API's requests."""

    __slots__ = ("count", "seconds", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf


class Metrics:
    """Counters the request path updates per request and per batch (never per record)."""

    def __init__(self) -> None:
        self.sendfile_bytes = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.messages_in = 0
        self.topic_bytes_in: dict[str, int] = {}
        self.topic_bytes_out: dict[str, int] = {}
        self.topic_messages_in: dict[str, int] = {}
        self.requests: dict[int, RequestStats] = {}
        self.connections = 0  # accepted since start; the open ones are len(broker.connections)
        self.successful_reauthentications = 0  # KIP-368
        self.expired_connections_killed = 0  # used after their SASL session ended
        self.produce_purgatory = 0  # acks=all produce requests waiting for the high watermark
        self.fetch_purgatory = 0  # fetch requests waiting for min.bytes
        self.loop_lag = LoopLagProbe()

    def record_produce(self, topic: str, nbytes: int, records: int) -> None:
        """One batch appended to `topic` (duplicates from retried idempotent sends excluded)."""
        self.bytes_in += nbytes
        self.messages_in += records
        d = self.topic_bytes_in
        d[topic] = d.get(topic, 0) + nbytes
        d = self.topic_messages_in
        d[topic] = d.get(topic, 0) + records

    def record_fetch(self, topics: list[tuple[str, list[Any]]], total: int) -> None:
        """A fetch response that carries `total` record bytes, from partitions' FileRegions."""
        self.bytes_out += total
        d = self.topic_bytes_out
        for name, results in topics:
            n = 0
            for r in results:
                if r.records is not None:
                    n += r.records.length
            if n:
                d[name] = d.get(name, 0) + n

    def request_done(self, api_key: int, seconds: float) -> None:
        """A request answered (or dropped, for acks=0) `seconds` after it was taken up."""
        stats = self.requests.get(api_key)
        if stats is None:
            if api_key not in API_NAMES:
                api_key = UNKNOWN_API  # garbage keys must not grow the dict
            stats = self.requests.setdefault(api_key, RequestStats())
        stats.count += 1
        stats.seconds += seconds
        stats.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1


# --- the Prometheus side (prometheus_client is imported only when metrics.port is set) ---------


def _group_offsets(coordinator: Any):
    """(group, topic, partition, committed offset) from the group coordinator, if it has any.

    The coordinator is written separately; this reads either `committed_offsets()` returning
    {group: {(topic, partition): offset}} or `groups` {group_id: group} whose groups have
    `offsets` {(topic, partition): offset or an object with `.offset`}.
    """
    source = getattr(coordinator, "committed_offsets", None)
    if callable(source):
        by_group = source()
    else:
        groups = getattr(coordinator, "groups", None) or {}
        by_group = {gid: getattr(g, "offsets", None) or {} for gid, g in groups.items()}
    for group, offsets in by_group.items():
        for key, value in offsets.items():
            offset = getattr(value, "offset", value)
            if isinstance(key, tuple) and isinstance(offset, int):
                yield group, key[0], key[1], offset


class BrokerCollector:
    """A prometheus_client collector reading a Broker's counters and state at scrape time."""

    def __init__(self, broker: Broker):
        self.broker = broker

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        broker = self.broker
        m = broker.metrics
        live_topics = broker.metadata.topics if broker.metadata is not None else {}
        for d in (m.topic_bytes_in, m.topic_bytes_out, m.topic_messages_in):
            for gone in [t for t in d if t not in live_topics]:
                del d[gone]  # like Kafka, a deleted topic's metrics go with it

        info = GaugeMetricFamily(
            "pykbroker_info", "This broker's identity.", labels=["node_id", "cluster_id", "version"]
        )
        cluster_id = broker.metadata.cluster_id if broker.metadata is not None else ""
        info.add_metric([str(broker.node_id), cluster_id, _version()], 1)
        yield info

        yield _per_topic(
            CounterMetricFamily, "kafka_server_broker_topic_bytes_in",
            "Bytes of record batches appended, by topic (BytesInPerSec).", m.topic_bytes_in,
        )  # fmt: skip
        yield _per_topic(
            CounterMetricFamily, "kafka_server_broker_topic_bytes_out",
            "Bytes of records sent in fetch responses, by topic (BytesOutPerSec).",
            m.topic_bytes_out,
        )  # fmt: skip
        yield _per_topic(
            CounterMetricFamily, "kafka_server_broker_topic_messages_in",
            "Records appended, by topic (MessagesInPerSec).", m.topic_messages_in,
        )  # fmt: skip

        requests = CounterMetricFamily(
            "kafka_network_requests", "Requests handled, by API (RequestsPerSec).",
            labels=["request"],
        )  # fmt: skip
        times = HistogramMetricFamily(
            "kafka_network_request_total_time_seconds",
            "Time from taking a request up to writing its response, by API (TotalTimeMs).",
            labels=["request"],
        )
        for api_key, stats in sorted(m.requests.items()):
            name = API_NAMES.get(api_key, "Unknown")
            requests.add_metric([name], stats.count)
            cumulative, running = [], 0
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), stats.buckets, strict=True):
                running += n
                cumulative.append((_bound(bound), running))
            times.add_metric([name], cumulative, stats.seconds)
        yield requests
        yield times

        purgatory = GaugeMetricFamily(
            "kafka_server_delayed_operation_purgatory_size",
            "Requests waiting in a purgatory (DelayedOperationPurgatory PurgatorySize).",
            labels=["delayed_operation"],
        )
        purgatory.add_metric(["Produce"], m.produce_purgatory)
        purgatory.add_metric(["Fetch"], m.fetch_purgatory)
        yield purgatory

        yield from self._partitions()
        yield from self._groups()
        yield from _fetch_sessions(broker.fetch_sessions)

        connections = GaugeMetricFamily(
            "kafka_server_socket_connection_count", "Open client connections."
        )
        connections.add_metric([], len(broker.connections))
        yield connections
        accepted = CounterMetricFamily(
            "kafka_server_socket_connection_creation", "Connections accepted since start."
        )
        accepted.add_metric([], m.connections)
        yield accepted
        pool = broker.request_pool
        if pool is not None:  # Kafka's SocketServer MemoryPoolAvailable / MemoryPoolUsed
            for name, value in (
                ("available", pool.available),
                ("used", pool.size - pool.available),
            ):
                g = GaugeMetricFamily(
                    f"kafka_network_socketserver_memorypool{name}",
                    f"queued.max.request.bytes memory {name} (negative available: the one "
                    "request let past the pool).",
                )
                g.add_metric([], value)
                yield g
        sendfile = CounterMetricFamily(
            "pykbroker_sendfile_bytes", "Record bytes written to sockets with os.sendfile."
        )
        sendfile.add_metric([], m.sendfile_bytes)
        yield sendfile
        for name, value, text in (
            ("successful_reauthentication", m.successful_reauthentications,
             "SASL re-authentications that succeeded (KIP-368)."),
            ("expired_connections_killed", m.expired_connections_killed,
             "Connections closed because they were used after their SASL session expired."),
        ):  # fmt: skip
            c = CounterMetricFamily(f"kafka_server_socket_server_metrics_{name}", text)
            c.add_metric([], value)
            yield c
        yield from _loop_lag(m.loop_lag)
        yield from _quotas(broker)

    def _partitions(self):
        from prometheus_client.core import GaugeMetricFamily

        labels = ["topic", "partition"]
        size = GaugeMetricFamily(
            "kafka_log_size_bytes", "Bytes in a partition's log.", labels=labels
        )
        segments = GaugeMetricFamily(
            "kafka_log_segments", "Segments of a partition's log (NumLogSegments).", labels=labels
        )
        end = GaugeMetricFamily(
            "kafka_log_end_offset", "A partition's log end offset.", labels=labels
        )
        start = GaugeMetricFamily(
            "kafka_log_start_offset", "A partition's log start offset.", labels=labels
        )
        partitions = leaders = under_replicated = 0
        rm = self.broker.replica_manager
        for (topic, index), p in rm.partitions.items() if rm is not None else ():
            partitions += 1
            log_ = p.log
            key = [topic, str(index)]
            size.add_metric(key, log_.size)
            segments.add_metric(key, len(log_.segments))
            end.add_metric(key, log_.log_end_offset)
            start.add_metric(key, log_.log_start_offset)
            if p.is_leader:
                leaders += 1
                if len(p.state.isr) < len(p.state.replicas):
                    under_replicated += 1
        yield from (size, segments, end, start)
        for name, doc, value in (
            ("kafka_server_replica_manager_partitions", "Partitions on this broker.", partitions),
            ("kafka_server_replica_manager_leader_count", "Partitions this broker leads.", leaders),
            (
                "kafka_server_replica_manager_under_replicated_partitions",
                "Led partitions whose ISR is smaller than their replica set.",
                under_replicated,
            ),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g

    def _groups(self):
        from prometheus_client.core import GaugeMetricFamily

        coordinator = getattr(self.broker, "group_coordinator", None)
        count = GaugeMetricFamily(
            "kafka_coordinator_group_groups", "Consumer groups on this coordinator (NumGroups)."
        )
        offset = GaugeMetricFamily(
            "kafka_consumergroup_current_offset", "A group's committed offset.",
            labels=["group", "topic", "partition"],
        )  # fmt: skip
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag", "High watermark minus the group's committed offset.",
            labels=["group", "topic", "partition"],
        )  # fmt: skip
        if coordinator is not None:
            groups = getattr(coordinator, "groups", None)
            count.add_metric([], len(groups) if groups is not None else 0)
            rm = self.broker.replica_manager
            try:
                for group, topic, index, committed in _group_offsets(coordinator):
                    key = [group, topic, str(index)]
                    offset.add_metric(key, committed)
                    p = rm.partitions.get((topic, index)) if rm is not None else None
                    if p is not None:
                        lag.add_metric(key, max(p.log.high_watermark - committed, 0))
            except Exception as e:  # never let a coordinator change break the whole scrape
                log.warning("group_metrics_failed", error=repr(e))
        else:
            count.add_metric([], 0)
        yield from (count, offset, lag)


def _quotas(broker: Broker):
    """Client quota sensors (Kafka's kafka.server:type=Produce|Fetch|Request,user=,client-id=
    byte-rate / request-time and throttle-time) and connection limits (socket-server-metrics,
    Acceptor); only what is configured shows."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    q = broker.quotas
    now = q.now_ms()
    for kind, manager, what in (("produce", q.produce, "byte_rate"),
                                ("fetch", q.fetch, "byte_rate"),
                                ("request", q.request, "request_time")):  # fmt: skip
        if not manager.sensors:
            continue
        rate = GaugeMetricFamily(
            f"kafka_server_{kind}_{what}",
            f"{kind} quota sensor: its rate over the quota window (bytes/s, or % of a thread).",
            labels=["user", "client_id"],
        )
        throttle = CounterMetricFamily(
            f"kafka_server_{kind}_throttle_time_ms",
            f"Time {kind} responses were throttled for, by quota sensor.",
            labels=["user", "client_id"],
        )
        for tags in list(manager.sensors):
            rate.add_metric(list(tags), manager.rate(tags, now))
            throttle.add_metric(list(tags), manager.throttle_ms_total.get(tags, 0))
        yield rate
        yield throttle
    cq = broker.connection_quotas
    if not broker.acceptors:  # no connection limits configured
        return
    count = GaugeMetricFamily("kafka_server_socket_server_metrics_connection_count",
                              "Open connections counted by the connection limits, by listener.",
                              labels=["listener"])  # fmt: skip
    blocked = CounterMetricFamily("kafka_network_acceptor_blocked_time_ms",
                                  "Time the listener's acceptor waited for a connection slot "
                                  "or the creation rate (AcceptorBlockedPercent's numerator).",
                                  labels=["listener"])  # fmt: skip
    throttled = CounterMetricFamily(
        "kafka_server_socket_server_metrics_connection_accept_throttle_time_ms",
        "Time accepting waited for max.connection.creation.rate.", labels=["listener"],
    )  # fmt: skip
    for listener, n in cq.listener_counts.items():
        count.add_metric([listener], n)
        blocked.add_metric([listener], cq.blocked_ms[listener])
        throttled.add_metric([listener], cq.accept_throttle_ms[listener])
    rejected = CounterMetricFamily(
        "pykbroker_connections_rejected",
        "Connections closed at once for max.connections.per.ip (reason=per_ip) or later for an "
        "ip's connection_creation_rate quota (reason=ip_rate).", labels=["reason"],
    )  # fmt: skip
    rejected.add_metric(["per_ip"], cq.rejected)
    rejected.add_metric(["ip_rate"], cq.ip_throttled)
    yield from (count, blocked, throttled, rejected)


def _loop_lag(probe: LoopLagProbe):
    from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

    lag = HistogramMetricFamily(
        "pykbroker_event_loop_lag_seconds",
        f"How late a {LoopLagProbe.INTERVAL * 1000:g} ms timer fired on the broker's event loop.",
    )
    cumulative, running = [], 0
    for bound, n in zip((*LOOP_LAG_BUCKETS, float("inf")), probe.buckets, strict=True):
        running += n
        cumulative.append((_bound(bound), running))
    lag.add_metric([], cumulative, probe.seconds)
    yield lag
    longest = GaugeMetricFamily(
        "pykbroker_event_loop_lag_max_seconds",
        "The event loop's longest stall since the broker started (the probe timer's lateness).",
    )
    longest.add_metric([], probe.max)
    yield longest


def _per_topic(family, name: str, doc: str, values: dict[str, int]):
    metric = family(name, doc, labels=["topic"])
    for topic, value in sorted(values.items()):
        metric.add_metric([topic], value)
    return metric


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pykbroker")
    except PackageNotFoundError:
        return "unknown"


class MetricsServer:
    """GET /metrics on its own port, served on the broker's event loop."""

    def __init__(self, broker: Broker):
        from prometheus_client import (
            CollectorRegistry,
            GCCollector,
            PlatformCollector,
            ProcessCollector,
        )

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(broker))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.server: asyncio.base_events.Server | None = None
        self.port = -1

    async def start(self, host: str | None, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            method = parts[0]
            path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
            if method not in (b"GET", b"HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"GET only\n", "text/plain"
            elif path in (b"/metrics", b"/"):
                from prometheus_client import CONTENT_TYPE_LATEST

                status, body, ctype = "200 OK", self.render(), CONTENT_TYPE_LATEST
            else:
                status, body, ctype = "404 Not Found", b"try /metrics\n", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        except Exception:
            log.exception("metrics_request_failed")
        finally:
            writer.close()


def _fetch_sessions(cache):
    """Kafka's kafka.server:type=FetchSessionCache MBeans (KIP-227)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    for family, name, doc, value in (
        (GaugeMetricFamily, "kafka_server_fetch_session_cache_num_incremental_fetch_sessions",
         "Incremental fetch sessions kept.", len(cache.sessions)),
        (GaugeMetricFamily,
         "kafka_server_fetch_session_cache_num_incremental_fetch_partitions_cached",
         "Partitions held by all incremental fetch sessions.", cache.num_partitions),
        (CounterMetricFamily,
         "kafka_server_fetch_session_cache_incremental_fetch_session_evictions",
         "Sessions evicted to make room for new ones.", cache.evictions),
    ):  # fmt: skip
        metric = family(name, doc)
        metric.add_metric([], value)
        yield metric

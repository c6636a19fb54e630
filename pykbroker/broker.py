"""Broker: wires configuration, storage, cluster metadata, coordinators and the listeners."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import structlog

from protocol import codec
from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from protocol.framing import FrameError, MemoryPool, RequestHeader, parse_request_header
from protocol.sasl.scram import ScramCredential
from pykbroker.acl import make_authorizer, start_acl_store
from pykbroker.cluster.metadata import DEFAULT_ENTITY, LocalMetadata, TopicInfo
from pykbroker.cluster.replica_manager import ReplicaManager
from pykbroker.config import (
    BrokerConfig,
    ConfigError,
    LogConfig,
    parse_topic_configs,
    warn_deprecated_topic_configs,
)
from pykbroker.fetch_session import FetchSessionCache
from pykbroker.handlers import REGISTRY
from pykbroker.metrics import Metrics
from pykbroker.quota import QuotaManagers
from pykbroker.quota.connections import (
    Acceptor,
    ConnectionQuotas,
    limits_configured,
    listening_socket,
)
from pykbroker.quota.store import LocalQuotaStore, ZkQuotaStore
from pykbroker.security.delegation_tokens import DelegationTokenManager, TokenInfo
from pykbroker.security.inter_broker import InterBrokerSecurity, inter_broker_security
from pykbroker.security.listener import listener_security
from pykbroker.security.principal import KafkaPrincipal, Session
from pykbroker.security.sasl import check_session
from pykbroker.server import CLOSE, Connection
from pykbroker.storage.log_manager import LogManager, Scheduler
from pykbroker.storage.producer_state import expire_producers

log = structlog.get_logger(__name__)
_LOGS_PER_TURN = 16  # partition logs opened per event-loop turn by open_partition_logs
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHUTDOWN_TIMEOUT_S = 30  # longest a SIGTERM/SIGINT shutdown may take
# Requests no request quota applies to: Kafka serves ApiVersions and the SASL exchange before
# (or outside) its quota checks, and exempts the APIs brokers send each other (here the
# follower fetch, which the Fetch handler exempts itself).
_QUOTA_EXEMPT = frozenset({ApiKey.API_VERSIONS, ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE})


@dataclass(slots=True)
class RequestContext:
    broker: Broker
    connection: Connection
    header: RequestHeader
    # Client quotas: when the request was taken (set only while request quotas are on), and
    # the throttle time a handler already decided and put in its response (-1: none yet).
    started: float = 0.0
    busy: float = 0.0  # handler time of the steps of the handler that are done
    step_started: float = 0.0  # when the step running now began (0: none is running)
    throttle_ms: int = -1
    size: int = 0  # the request's size in bytes (producer_byte_rate counts it)

    def handler_seconds(self) -> float:
        """Handler time so far, what request_percentage counts (Kafka's request handler thread
        time): the handler's call and each later step of an async handler on the event loop,
        never the time it spends awaiting (replicas, a long poll, a coordinator)."""
        if self.step_started:
            return self.busy + perf_counter() - self.step_started
        return self.busy

    @property
    def api_version(self) -> int:
        return self.header.api_version

    @property
    def listener(self) -> str | None:
        """The name of the listener the request came in on (its addresses go in responses)."""
        return getattr(self.connection, "listener", None)

    @property
    def session(self) -> Session:
        """Who sent the request: principal, client host, listener (security/principal.py)."""
        return self.connection.session

    @property
    def principal(self) -> KafkaPrincipal:
        return self.connection.session.principal


class _TimedSteps:
    """Awaits an async handler's coroutine step by step, adding each step's time on the event
    loop to ctx.busy (handler time for request_percentage) and none of the time between steps,
    when the handler waits. What it awaits passes through to the task unchanged."""

    __slots__ = ("coro", "ctx")

    def __init__(self, coro, ctx: RequestContext):
        self.coro, self.ctx = coro, ctx

    def __await__(self):
        coro, ctx = self.coro, self.ctx
        value, error = None, None
        while True:
            ctx.step_started = perf_counter()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as done:
                return done.value
            finally:
                ctx.busy += perf_counter() - ctx.step_started
                ctx.step_started = 0.0
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as e:  # cancellation included: the handler sees it
                value, error = None, e


class AsyncScheduler(Scheduler):
    """Storage's scheduler on the broker's event loop; blocking work runs in a thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending: set[asyncio.Future] = set()

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        self.loop.call_later(delay_s, lambda: self.run_blocking(fn))

    def run_blocking(self, fn: Callable[[], None]) -> None:
        fut = self.loop.run_in_executor(None, fn)
        self.pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future) -> None:
        self.pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("background_task_failed", error=repr(fut.exception()))

    async def wait(self) -> None:
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)


class Broker:
    def __init__(self, config: BrokerConfig):
        self.config = config
        self.node_id = config.node_id
        self.metrics = Metrics()
        self.fetch_sessions = FetchSessionCache(
            config.get("max.incremental.fetch.session.cache.slots")
        )
        self.metrics_server = None  # pykbroker.metrics.MetricsServer when metrics.port is set
        self.console = None  # pykbroker.console.ConsoleServer when console.port is set
        self.registry = REGISTRY
        self.sendfile_min_bytes = config.get("pykbroker.sendfile.min.bytes")
        self.connections: set[Connection] = set()
        # queued.max.request.bytes: memory of requests read and not yet answered (-1: no bound).
        queued = config.get("queued.max.request.bytes")
        self.request_pool = MemoryPool(queued) if queued > 0 else None
        self._memory_waiters: deque[Connection] = deque()
        self.quotas = QuotaManagers(config)
        self.connection_quotas: ConnectionQuotas | None = None  # set at start
        self.acceptors: list[Acceptor] = []
        self.quota_store: LocalQuotaStore | ZkQuotaStore | None = None
        self.servers: list[asyncio.base_events.Server] = []
        self.bound: list[tuple[str, int]] = []  # (host, port) actually listening
        self.log_manager: LogManager | None = None
        self.metadata: LocalMetadata | None = None
        self.replica_manager: ReplicaManager | None = None
        self.group_coordinator: Any = None
        self.transaction_coordinator: Any = None
        # Share groups (KIP-932): membership, the share coordinator, the share-partition leader.
        self.share_groups: Any = None
        self.share_coordinator: Any = None
        self.share_persister: Any = None
        self.share_partitions: Any = None
        self.share_group_configs: dict[str, dict[str, str]] = {}
        self.controller: Any = None  # the cluster's Controller (ZooKeeper mode)
        self.authorizer = make_authorizer(config)  # None: no authorization at all
        secret = config.get("delegation.token.secret.key")
        self.delegation_tokens = DelegationTokenManager(
            secret.encode() if secret else None,
            config.get("delegation.token.max.lifetime.ms"),
            config.get("delegation.token.expiry.time.ms"),
        )
        self.acl_store: Any = None
        self.background: list[asyncio.Task] = []
        self._topic_defaults = config.topic_defaults()
        self.started_at = time.monotonic()
        self._stopped = asyncio.Event()
        # ZooKeeper mode: how this broker connects to the others (security/inter_broker.py).
        self.inter_broker: InterBrokerSecurity | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.scheduler = AsyncScheduler(loop)
        self.log_manager = LogManager(self.config, self.scheduler)
        self.log_manager.failure_channel.loop = loop
        listeners = self.config.listeners
        securities = [listener_security(self, name.upper()) for name, _, _ in listeners]
        if self.config.get("zookeeper.connect"):  # other brokers to talk to: how (TLS, SASL)
            self.inter_broker = inter_broker_security(self)
        self.connection_quotas = ConnectionQuotas(
            self.config, [s.name for s in securities], self.config.inter_broker_listener_name()
        )
        own_acceptors = limits_configured(self.config)
        for (_, host, port), security in zip(listeners, securities, strict=True):
            factory = lambda s=security: Connection(self).on_listener(s.name, s)  # noqa: E731
            if own_acceptors:  # our own accept loop, Kafka's Acceptor
                sock = listening_socket(host, port)
                acceptor = Acceptor(self, security.name, sock, factory)
                acceptor.start()
                self.acceptors.append(acceptor)
                sockname = sock.getsockname()
            else:
                server = await loop.create_server(
                    factory, host or None, port, reuse_address=True, backlog=1024
                )
                self.servers.append(server)
                sockname = server.sockets[0].getsockname()
            self.bound.append((host or sockname[0], sockname[1]))
        # Each listener's advertised address; other brokers use the inter-broker listener's.
        endpoints = self.config.advertised_endpoints(self.bound)
        adv_name = self.config.inter_broker_listener_name()
        adv_host, adv_port = endpoints[adv_name]
        if self.config.get("zookeeper.connect"):
            from pykbroker.cluster.node import start_cluster

            await start_cluster(self, (adv_host, adv_port), adv_name, endpoints)
            self.quota_store = ZkQuotaStore(self.metadata, self.client_quotas_changed)
            await self.quota_store.start()
        else:
            self.metadata = LocalMetadata(
                self.log_manager.data_dir, self.node_id, (adv_host, adv_port),
                self.config.get("broker.rack"), self.config.get("cluster.id"),
            )  # fmt: skip
            self.metadata.broker.endpoints = endpoints
            self.apply_dynamic_configs()
            self.quota_store = LocalQuotaStore(self.metadata, self.client_quotas_changed)
            self.client_quotas_changed()
            self.log_manager.load_logs(self.log_config_for)
            self.replica_manager = ReplicaManager(
                self.node_id, self.log_manager, self.log_config_for
            )
            for topic in self.metadata.topics.values():
                self.replica_manager.ensure_partitions(topic)
            for tp in [
                tp for tp in self.log_manager.logs if tp not in self.replica_manager.partitions
            ]:
                self.log_manager.mark_stray(*tp)  # e.g. a deletion cut short by a crash
        await start_acl_store(self)
        from pykbroker.coordinator import start_coordinators

        await start_coordinators(self)
        self.background.append(loop.create_task(self._flush_loop()))
        self.background.append(loop.create_task(self._idle_connection_reaper()))
        if self.delegation_tokens.enabled:
            self.background.append(loop.create_task(self._expire_delegation_tokens()))
        self.background.append(loop.create_task(self.quotas.expire_sensors_loop()))
        if self.config.get("metrics.port") is not None:
            from pykbroker.metrics import MetricsServer

            self.metrics_server = MetricsServer(self)
            await self.metrics_server.start(
                listeners[0][1] or None, self.config.get("metrics.port")
            )
        if self.config.get("console.port") is not None:
            from pykbroker.console import ConsoleServer

            self.console = ConsoleServer(self)
            await self.console.start(listeners[0][1] or None, self.config.get("console.port"))
        self.background += self.log_manager.start_background()  # retention, log cleaner
        self.background.append(loop.create_task(self.metrics.loop_lag.run()))
        self.background.append(loop.create_task(expire_producers(
            lambda: list(self.log_manager.logs.values()), self.config)))  # fmt: skip
        log.info(
            "broker_started", node_id=self.node_id,
            listeners=[f"{h}:{p}" for h, p in self.bound],
            advertised=f"{adv_host}:{adv_port}", data_dir=self.log_manager.data_dir,
            cluster_id=self.metadata.cluster_id, startup_ms=round((time.monotonic() - self.started_at) * 1000),
            metrics_port=self.metrics_server.port if self.metrics_server else None,
            console_port=self.console.port if self.console else None,
        )  # fmt: skip

    async def stop(self) -> None:
        """Graceful shutdown: stop listening, close connections, flush, write the clean marker."""
        if self.config.get("zookeeper.connect") and self.config.get("controlled.shutdown.enable"):
            from pykbroker.cluster.controlled_shutdown import controlled_shutdown

            await controlled_shutdown(self)  # leadership moves while clients can still reach us
        for server in self.servers:
            server.close()
        for acceptor in self.acceptors:
            acceptor.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.console is not None:
            await self.console.stop()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for task in self.background:
            task.cancel()
        from pykbroker.coordinator import stop_coordinators

        await stop_coordinators(self)
        if self.config.get("zookeeper.connect"):
            from pykbroker.cluster.node import stop_cluster

            await stop_cluster(self)
        await self.scheduler.wait()
        if self.log_manager is not None:
            self.log_manager.shutdown()
        self._stopped.set()
        log.info("broker_stopped", node_id=self.node_id)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    @property
    def port(self) -> int:
        return self.bound[0][1]

    def connection_opened(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.metrics.connections += 1
        if self.connection_quotas.ip_rates and conn.counted is None and conn.transport is not None:
            # Accepted by asyncio's server (no limits configured): ip connection_creation_rate
            # quotas still hold, the connection closed after the throttle time.
            delay = self.connection_quotas.ip_throttle_ms(conn.session.client_host)
            if delay:  # never served (Kafka never hands it to a processor), then closed
                conn.closed = True
                conn.transport.pause_reading()
                asyncio.get_running_loop().call_later(delay / 1000, conn.transport.abort)

    def connection_closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.share_partitions is not None:
            self.share_partitions.connection_closed(conn)  # its share sessions end
        if conn.counted is not None:
            self.connection_quotas.dec(*conn.counted)
            conn.counted = None

    def close_least_recently_used(self, protected: str) -> None:
        """The inter-broker listener took a connection past max.connections: close the least
        recently active connection of another listener (Kafka's closeExcessConnections)."""
        others = [c for c in self.connections if c.listener != protected and not c.closed]
        if others:
            victim = min(others, key=lambda c: c.last_active)
            log.info("connection_closed_over_limit", peer=victim.peer, listener=victim.listener,
                     max_connections=self.connection_quotas.max_connections)  # fmt: skip
            victim.closed = True
            victim.transport.close()

    def client_quotas_changed(self) -> None:
        self.quotas.set_configs(self.quota_store.configs)
        self.connection_quotas.set_ip_quotas(self.quota_store.configs)

    def wait_for_request_memory(self, conn: Connection) -> None:
        if not self._memory_waiters:  # once per episode, not per connection
            pool = self.request_pool
            log.warning("request_memory_exhausted", queued_max_request_bytes=pool.size,
                        available=pool.available)  # fmt: skip
        self._memory_waiters.append(conn)

    def request_memory_released(self) -> None:
        """Muted connections read again, oldest first, as long as the pool takes them."""
        waiters = self._memory_waiters
        while waiters and waiters[0].unmute():
            waiters.popleft()

    async def _idle_connection_reaper(self) -> None:
        max_idle_s = self.config.get("connections.max.idle.ms") / 1000
        while True:
            await asyncio.sleep(min(max_idle_s / 2, 30))
            now = time.monotonic()
            for conn in list(self.connections):
                conn.close_if_idle(now, max_idle_s)

    async def _flush_loop(self) -> None:
        interval = self.config.get("log.flush.scheduler.interval.ms")
        flush_ms = self.config.get("log.flush.interval.ms")
        if interval >= 1 << 40:
            # No scheduler interval: check often enough to honour log.flush.interval.ms, and
            # once a second for topics that set their own flush.ms.
            interval = max(min(flush_ms if flush_ms is not None else 1000, 1000), 10)
        while True:
            await asyncio.sleep(min(interval, 1 << 30) / 1000)
            self.log_manager.flush_due()

    # --- requests -----------------------------------------------------------------------------

    def handle_request(self, conn: Connection, frame) -> Any:
        """Decode and dispatch one frame; returns a response, an awaitable of one, None or CLOSE."""
        if conn.authenticator is not None:  # a SASL connection not yet authenticated
            return conn.authenticator.handle(frame)
        try:
            header = parse_request_header(frame, codec.request_is_flexible)
        except FrameError as e:
            conn.abort("invalid_request_header", reason=str(e))
            return CLOSE
        if conn.session_expires is not None:  # a SASL session with an end (KIP-368)
            result = check_session(conn, frame, header)
            if result is not None:
                return result
        return self.dispatch_request(conn, frame, header)

    def dispatch_request(self, conn: Connection, frame, header: RequestHeader) -> Any:
        spec = self.registry.get(header.api_key)
        if spec is None or not spec.min_version <= header.api_version <= spec.max_version:
            if header.api_key == ApiKey.API_VERSIONS:
                return self._unsupported_api_versions(header)
            conn.abort(
                "unsupported_request", api_key=header.api_key, api_version=header.api_version,
                client_id=header.client_id,
            )  # fmt: skip
            return CLOSE
        try:
            if spec.decoder is not None:
                request = spec.decoder(frame, header.body_offset, header.api_version)
            else:
                request = codec.decode_request(
                    header.api_key, header.api_version, frame, header.body_offset
                )
        except Exception as e:
            conn.abort(
                "malformed_request", api_key=header.api_key, api_version=header.api_version,
                client_id=header.client_id, reason=repr(e),
            )  # fmt: skip
            return CLOSE
        ctx = RequestContext(self, conn, header, size=len(frame))
        try:
            if self.quotas.request.enabled:
                ctx.started = ctx.step_started = perf_counter()
            result = spec.handler(ctx, request)
            if isinstance(result, Awaitable):
                if ctx.started:
                    ctx.busy, ctx.step_started = perf_counter() - ctx.started, 0.0
                    if inspect.iscoroutine(result):
                        result = _TimedSteps(result, ctx)
                return self._finish_async(ctx, result)
            if ctx.started or ctx.throttle_ms > 0:
                result = self._throttle(ctx, result)
            return self._encode(header, result)
        except Exception as e:
            return self._request_failed(ctx, e)

    def _throttle(self, ctx: RequestContext, result: Any) -> Any:
        """Client quotas on a finished request (Kafka's sendResponseMaybeThrottle): record its
        handler time against request_percentage unless its handler did (produce, fetch), put
        the throttle time in the response, and mute the connection for it once it is sent."""
        throttle = ctx.throttle_ms
        if throttle < 0 and ctx.started and ctx.header.api_key not in _QUOTA_EXEMPT:
            throttle = self.quotas.request_throttle_ms(
                ctx.connection, ctx.header.client_id, ctx.handler_seconds()
            )
            if (
                throttle
                and isinstance(result, dict)
                and codec.response_has_throttle_time(ctx.header.api_key)
            ):
                result["throttle_time_ms"] = throttle
        if throttle > 0:
            ctx.connection.throttle(throttle)
        return result

    async def _finish_async(self, ctx: RequestContext, pending: Awaitable) -> Any:
        try:
            result = await pending
            if ctx.started or ctx.throttle_ms > 0:
                result = self._throttle(ctx, result)
            return self._encode(ctx.header, result)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as e:
            return self._request_failed(ctx, e)

    def _request_failed(self, ctx: RequestContext, e: Exception) -> Any:
        """A handler (or the encoding of its response) raised: close that connection with one
        warning line saying where, never a traceback per request (a client's bad input must not
        flood the log). Requests that are semantically invalid get their error codes from their
        handlers; anything reaching here is a bug to fix, located by `where`."""
        frames = traceback.extract_tb(e.__traceback__)
        ours = [f for f in frames if f.filename.startswith(_SOURCE_ROOT + os.sep)] or frames
        where = f"{os.path.relpath(ours[-1].filename, _SOURCE_ROOT)}:{ours[-1].lineno}"
        ctx.connection.abort(
            "request_failed", api_key=ctx.header.api_key, api_version=ctx.header.api_version,
            client_id=ctx.header.client_id, error=repr(e)[:500], where=where,
        )  # fmt: skip
        return CLOSE

    def _encode(self, header: RequestHeader, result: Any) -> Any:
        if result is None or result is CLOSE or isinstance(result, (bytes, list)):
            return result
        return codec.encode_response(
            header.api_key, header.api_version, header.correlation_id, result
        )

    # --- credentials (security/sasl.py asks) -------------------------------------------------

    def scram_credential(self, name: str, mechanism: str) -> ScramCredential | None:
        """A user's SCRAM credential for a mechanism, as stored (ZooKeeper /config/users/<name>,
        or the single broker's metadata), None if it has none."""
        text = self.metadata.user_configs(name).get(mechanism) if self.metadata else None
        if not text:
            return None
        try:
            return ScramCredential.from_config(text)
        except ValueError:
            log.warning("invalid_scram_credential", user=name, mechanism=mechanism)
            return None

    def delegation_token_credential(self, token_id: str, mechanism: str):
        """(SCRAM credential, owner, expiry ms) of a delegation token; None: tokens are off,
        or it is unknown or expired."""
        stored = self.metadata.delegation_tokens.get(token_id) if self.metadata else None
        info = TokenInfo.from_json(stored) if stored else None
        return self.delegation_tokens.credential(info, mechanism, int(time.time() * 1000))

    async def _expire_delegation_tokens(self) -> None:
        """Kafka's delete-expired-tokens task, every delegation.token.expiry.check.interval.ms."""
        interval = self.config.get("delegation.token.expiry.check.interval.ms") / 1000
        while True:
            await asyncio.sleep(interval)
            tokens = {t: TokenInfo.from_json(d) for t, d in self.metadata.delegation_tokens.items()}
            for token_id in self.delegation_tokens.expired(tokens, int(time.time() * 1000)):
                log.info("delegation_token_expired", token_id=token_id)
                try:
                    pending = self.metadata.set_delegation_token(token_id, None)
                    if pending is not None:
                        await pending
                except KafkaError as e:  # a full disk: tried again next round
                    log.warning("delegation_token_expiry_failed", token_id=token_id, error=e.code)

    def _unsupported_api_versions(self, header: RequestHeader) -> bytes:
        body = {
            "error_code": ErrorCode.UNSUPPORTED_VERSION,
            "api_keys": [
                {"api_key": k, "min_version": lo, "max_version": hi}
                for k, lo, hi in self.registry.versions()
            ],
        }
        return codec.encode_response(ApiKey.API_VERSIONS, 0, header.correlation_id, body)

    # --- topics ------------------------------------------------------------------------------

    def apply_dynamic_configs(self) -> None:
        """Take this broker's and the cluster-wide dynamic configs from the metadata, and give
        every log the topic defaults they imply (at start-up, and whenever they change)."""
        skipped = self.config.set_dynamic(
            self.metadata.broker_configs(str(self.node_id)),
            self.metadata.broker_configs(DEFAULT_ENTITY),
        )
        if skipped:
            log.warning("dynamic_broker_configs_skipped", keys=sorted(skipped))
        self._topic_defaults = self.config.topic_defaults()
        if self.replica_manager is not None:
            self.replica_manager.update_all_configs()

    def set_dynamic_configs(self, entity: str, configs: dict[str, str]) -> None:
        """Store a broker entity's dynamic configs (validated) and apply them."""
        self.metadata.set_broker_configs(entity, configs)
        self.apply_dynamic_configs()

    def log_config_for(self, topic: str) -> LogConfig:
        info = self.metadata.topic(topic) if self.metadata is not None else None
        overrides = parse_topic_configs(info.configs) if info is not None else {}
        if topic == "__consumer_offsets":
            overrides = {
                "cleanup.policy": ["compact"],
                "segment.bytes": self.config.get("offsets.topic.segment.bytes"),
                **overrides,
            }
        elif topic == "__transaction_state":
            overrides = {"cleanup.policy": ["compact"], **overrides}
        return LogConfig(self._topic_defaults, overrides)

    def create_topic(
        self, name: str, num_partitions: int = -1, replication_factor: int = -1,
        configs: dict[str, str] | None = None, assignments: dict[int, list[int]] | None = None,
        validate_only: bool = False, open_logs: bool = True,
    ) -> TopicInfo | None:  # fmt: skip
        """Create a topic (KafkaError when invalid); None when only validating. With
        open_logs=False the caller opens the partitions' logs (see open_partition_logs)."""
        if not assignments:
            if num_partitions == -1:
                num_partitions = self.config.get("num.partitions")
            if replication_factor == -1:
                replication_factor = self.config.get("default.replication.factor")
        configs = configs or {}
        assignment = self.metadata.check_new_topic(
            name, num_partitions, replication_factor, assignments, configs
        )
        if validate_only:
            return None
        info = self.metadata.create_topic(name, assignment, configs)
        if open_logs:
            self.replica_manager.ensure_partitions(info)
        warn_deprecated_topic_configs(name, configs)
        return info

    async def open_partition_logs(self, info: TopicInfo, first: int = 0) -> None:
        """Open a new topic's (or new partitions') logs a few at a time, letting other requests
        run in between: creating a log costs ~1-3 ms of file creation, and a request may ask for
        10,000 of them. Until its log is open a partition answers NOT_LEADER_OR_FOLLOWER or
        UNKNOWN_TOPIC_OR_PARTITION, which clients retry (Kafka has the same window while a
        new partition's leader is elected)."""
        for start in range(first, len(info.partitions), _LOGS_PER_TURN):
            if self.metadata.topic(info.name) is not info:
                return  # deleted (or replaced) meanwhile
            stop = min(start + _LOGS_PER_TURN, len(info.partitions))
            self.replica_manager.ensure_partitions(info, start, stop)
            await asyncio.sleep(0)

    def auto_create_topic(self, name: str) -> TopicInfo:
        """Auto-creation on Metadata/Produce (auto.create.topics.enable)."""
        if not self.config.get("auto.create.topics.enable"):
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        replication = min(
            self.config.get("default.replication.factor"), len(self.metadata.live_broker_ids())
        )
        return self.create_topic(name, self.config.get("num.partitions"), replication)

    def ensure_internal_topic(self, name: str, partitions: int, replication_factor: int,
                              configs: dict[str, str] | None = None) -> TopicInfo:  # fmt: skip
        info = self.metadata.topic(name)
        if info is not None:
            return info
        replication_factor = min(replication_factor, len(self.metadata.live_broker_ids()))
        return self.create_topic(name, partitions, replication_factor, configs)

    def delete_topic(self, name: str) -> TopicInfo:
        info = self.metadata.topic(name)
        if info is None:
            raise KafkaError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                "This server does not host this topic-partition.",
            )
        if not self.config.get("delete.topic.enable"):
            raise KafkaError(ErrorCode.TOPIC_DELETION_DISABLED, "Topic deletion is disabled.")
        self.metadata.delete_topic(name)
        self.replica_manager.remove_topic(name, len(info.partitions))
        if self.group_coordinator is not None:
            self.group_coordinator.on_topic_deleted(name)
        return info

    def check_topic_configs(self, configs: dict[str, str]) -> None:
        try:
            parse_topic_configs(configs)
        except ConfigError as e:
            raise KafkaError(ErrorCode.INVALID_CONFIG, str(e)) from None


async def serve(config: BrokerConfig, stop_signals: bool = True) -> None:
    """Run a broker until SIGTERM/SIGINT, then shut it down cleanly."""
    import signal

    broker = Broker(config)
    await broker.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if stop_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutdown_requested")
    try:
        # Bounded: a stuck step must not keep a SIGTERMed broker alive (recovery at the next
        # start covers what a cut-short stop did not flush).
        await asyncio.wait_for(broker.stop(), SHUTDOWN_TIMEOUT_S)
    except TimeoutError:
        log.error("shutdown_timed_out", node_id=broker.node_id, timeout_s=SHUTDOWN_TIMEOUT_S)

"""The network layer: one Connection per socket, requests answered in order.

Like Kafka's SocketServer, a connection handles one request at a time (the next is parsed only
once the previous response is queued), which keeps responses in request order however long a
handler waits. Reads go straight into the frame buffer (BufferedProtocol). Fetch responses put
their record regions on the wire with os.sendfile from the segment file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Awaitable
from time import monotonic, perf_counter
from typing import TYPE_CHECKING

import structlog

from protocol.framing import FrameError, FrameReader
from pykbroker.metrics import API_NAMES
from pykbroker.security.principal import Session, anonymous_session
from pykbroker.storage.segment import FileRegion

if TYPE_CHECKING:
    from pykbroker.broker import Broker
    from pykbroker.security.listener import ListenerSecurity
    from pykbroker.security.sasl import SaslAuthenticator

log = structlog.get_logger(__name__)


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop):
    """The event loop's own TLS protocol (uvloop's is compiled, asyncio's pure Python)."""
    try:
        import uvloop
        from uvloop.loop import SSLProtocol

        if isinstance(loop, uvloop.Loop):
            return SSLProtocol
    except ImportError:
        pass
    from asyncio.sslproto import SSLProtocol

    return SSLProtocol


CLOSE = object()  # a handler's way of saying: close this connection (after logging why)
_MAX_QUEUED_FRAMES = 16
_WRITE_HIGH_WATER = 4 * 1024 * 1024


class Connection(asyncio.BufferedProtocol):
    counted: tuple[str, str] | None = None  # (listener, ip) while counted by connection limits

    def __init__(self, broker: Broker):
        self.broker = broker
        self.reader = FrameReader(
            broker.config.get("socket.request.max.bytes"), pool=broker.request_pool
        )
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._sock_fd = -1
        self._dup_fd = -1
        self._task: asyncio.Task | None = None
        self._reading_paused = False  # too many frames queued
        self._muted = False  # waiting for queued.max.request.bytes memory
        self._throttled = False  # muted by a client quota (KIP-219) until _throttle_handle runs
        self._throttle_until = 0.0
        self._throttle_handle: asyncio.TimerHandle | None = None
        self._throttle_waiter: asyncio.Future | None = None
        self._drain_waiter: asyncio.Future | None = None
        self._write_paused = False
        self.closed = False
        self.tls = False
        self.last_active = monotonic()  # last read, or end of the last request
        self._log_requests = False  # request lines are debug-level only
        self.listener: str | None = None  # the listener's name, set by the broker
        self.security_protocol = "PLAINTEXT"
        self.security: ListenerSecurity | None = None
        # Who the client is (pykbroker.security.principal); replaced once authenticated.
        self.session: Session = anonymous_session("?")
        # SASL listeners: what serves the connection until it is authenticated, then None.
        self.authenticator: SaslAuthenticator | None = None
        # KIP-368: when the authenticated session ends (time.monotonic()), None: never; and when
        # the last re-authentication started.
        self.session_expires: float | None = None
        self.reauth_started: float | None = None
        self.reauthentications = 0

    def on_listener(self, name: str, security: ListenerSecurity | None = None) -> Connection:
        """Remember the listener this connection came in on (for per-listener addresses) and
        what it requires (TLS, SASL)."""
        self.listener = name
        self.security = security
        if security is not None:
            self.security_protocol = security.protocol
        return self

    # --- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        host = peer[0] if peer else "?"
        security = self.security
        if security is not None and security.ssl_context is not None and not self.tls:
            self._start_tls(transport)
            return
        self._established(transport, host)

    def _start_tls(self, raw: asyncio.Transport) -> None:
        """Put TLS between the socket and us now, before the loop reads a byte; connection_made
        runs again with the TLS transport once the handshake is done. Done here rather than by
        create_server(ssl=...) so that a failed handshake (an untrusted or expired certificate)
        is ours to log, as Kafka logs it (asyncio and uvloop log it in debug mode only)."""
        self.tls = True
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        tls = _ssl_protocol_class(loop)(
            loop, self, self.security.ssl_context, waiter, True, None, True
        )
        raw.set_protocol(tls)
        tls.connection_made(raw)

        def handshake_done(fut: asyncio.Future) -> None:
            e = None if fut.cancelled() else fut.exception()
            if e is not None:
                if isinstance(e, (ConnectionError, EOFError, ssl.SSLEOFError)):
                    # The peer went away mid-handshake (a port probe, a client giving up): a
                    # disconnect, as Kafka's EOFException, not an authentication failure.
                    log.info("handshake_disconnected", peer=self.peer, listener=self.listener)
                else:
                    reason = getattr(e, "reason", None) or repr(e)
                    log.info("failed_authentication", peer=self.peer, listener=self.listener,
                             reason=f"SSL handshake failed: {reason}")  # fmt: skip
                self.closed = True
                raw.abort()
                # The TLS layer never calls our connection_lost when the handshake fails (it
                # only does after connection_made): give back the connection-limit slot here.
                if self.counted is not None:
                    self.broker.connection_quotas.dec(*self.counted)
                    self.counted = None

        waiter.add_done_callback(handshake_done)

    def _established(self, transport: asyncio.Transport, host: str) -> None:
        self.transport = transport
        security = self.security
        if security is None or security.protocol == "PLAINTEXT":
            self.session = anonymous_session(host, self.listener, self.security_protocol)
        else:
            try:
                self.session = security.session(self, host)
            except ValueError as e:  # no ssl.principal.mapping.rules rule matched
                self.abort("failed_authentication", listener=self.listener, reason=str(e))
                return
            if security.mechanisms is not None:
                from pykbroker.security.sasl import SaslAuthenticator

                self.authenticator = SaslAuthenticator(self, security.mechanisms)
                # Before authentication a size prefix past sasl.server.max.receive.size closes
                # the connection before anything is read or held (Kafka's
                # saslAuthRequestMaxReceiveSize on its NetworkReceive).
                self.reader.max_frame_bytes = min(
                    self.reader.max_frame_bytes, self.authenticator.max_receive
                )
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._sock_fd = sock.fileno()
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        # high=0: any bytes left unsent pause us, and resume_writing fires exactly when the
        # transport's buffer is empty again, which is what sendfile needs to wait for.
        transport.set_write_buffer_limits(high=0, low=0)
        self._log_requests = log.is_enabled_for(logging.DEBUG)
        self.broker.connection_opened(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.last_active = monotonic()
        try:
            self.reader.buffer_updated(nbytes)
        except FrameError as e:
            self.abort("invalid_frame", reason=str(e))
            return
        frames = self.reader.frames
        if frames and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._process())
        if len(frames) >= _MAX_QUEUED_FRAMES and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        if self.reader.blocked and not self._muted:
            # Kafka's Selector mutes a channel whose next request the memory pool can't take.
            self._muted = True
            if not self._reading_paused and not self._throttled:
                self.transport.pause_reading()
            self.broker.wait_for_request_memory(self)

    def unmute(self) -> bool:
        """The pool released memory: take the blocked frame if it fits now, and read again."""
        if self.closed:
            return True
        try:
            fits = self.reader.retry()
        except FrameError as e:  # the rest of the buffer was garbage: this client's problem only
            self.abort("invalid_frame", reason=str(e))
            return True
        if not fits:
            # retry() may have completed a frame before blocking on the next one: answer it,
            # or its memory is never released and every muted connection waits behind us.
            if self.reader.frames and self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._process())
            return False
        self._muted = False
        if not self._reading_paused and not self._throttled:
            self.transport.resume_reading()
        if self.reader.frames and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._process())
        return True

    def _frame_done(self, frame) -> None:
        self.reader.done(frame)
        self.broker.request_memory_released()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reader.partial and not self.closed:
            log.info("connection_closed_mid_frame", peer=self.peer)
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._throttle_handle is not None:
            self._throttle_handle.cancel()
            self._throttle_handle = None
        self.reader.close()  # its pooled memory goes back, and muted connections may read again
        self.broker.request_memory_released()
        self._wake_drain()
        if self._dup_fd >= 0:
            try:
                asyncio.get_running_loop().remove_writer(self._dup_fd)
            except Exception:
                pass
            os.close(self._dup_fd)
            self._dup_fd = -1
        self.broker.connection_closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        w, self._drain_waiter = self._drain_waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    # --- client quota throttling ------------------------------------------------------------

    def throttle(self, ms: int) -> None:
        """A client quota was violated (KIP-219): the response goes out now, and nothing more is
        read from or processed for this connection for `ms` (Kafka mutes the channel)."""
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        until = loop.time() + ms / 1000
        if self._throttle_handle is not None:
            if until <= self._throttle_until:
                return
            self._throttle_handle.cancel()
        elif not self._reading_paused and not self._muted:
            self.transport.pause_reading()
        self._throttled = True
        self._throttle_until = until
        self._throttle_handle = loop.call_at(until, self._end_throttle)

    def _end_throttle(self) -> None:
        self._throttle_handle = None
        self._throttled = False
        if not self.closed and not self._reading_paused and not self._muted:
            self.transport.resume_reading()
        w, self._throttle_waiter = self._throttle_waiter, None
        if w is not None and not w.done():
            w.set_result(None)
        if self.reader.frames and self._task is None and not self.closed:
            self._task = asyncio.get_running_loop().create_task(self._process())

    async def _throttle_done(self) -> None:
        if self._throttled:
            self._throttle_waiter = asyncio.get_running_loop().create_future()
            await self._throttle_waiter

    # --- request processing -----------------------------------------------------------------

    def close_if_idle(self, now: float, max_idle_s: float) -> bool:
        """connections.max.idle.ms: close a connection with no traffic and no request running."""
        if self.closed or self._task is not None or now - self.last_active < max_idle_s:
            return False
        log.info("connection_idle_closed", peer=self.peer, idle_ms=round((now - self.last_active) * 1000),
                 partial_request=self.reader.partial)  # fmt: skip
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        return True

    def abort(self, event: str, **fields) -> None:
        """Close this connection because of what the client sent, with a log line saying why."""
        if not self.closed:
            log.warning(event, peer=self.peer, **fields)
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    async def _process(self) -> None:
        frames = self.reader.frames
        request_done = self.broker.metrics.request_done
        log_requests = self._log_requests
        try:
            while frames and not self.closed:
                if self._throttled:  # KIP-219: nothing more is read until the throttle ends
                    await self._throttle_done()
                    continue
                frame = frames.popleft()
                if self._reading_paused and len(frames) < _MAX_QUEUED_FRAMES // 2:
                    self._reading_paused = False
                    if not self._muted and not self._throttled:
                        self.transport.resume_reading()
                started = perf_counter()
                try:
                    response = self.broker.handle_request(self, frame)
                    if isinstance(response, Awaitable):
                        response = await response
                    if response is None:
                        continue
                    if response is CLOSE:
                        self.closed = True
                        self.transport.close()
                        return
                    await self._send(response)
                finally:
                    self._frame_done(frame)
                    # Kafka's TotalTime: from taking the request up to writing its response.
                    elapsed = perf_counter() - started
                    api_key = (
                        int.from_bytes(frame[0:2], "big", signed=True) if len(frame) >= 8 else -1
                    )
                    request_done(api_key, elapsed)
                    if log_requests:
                        self._log_request(frame, api_key, elapsed)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("connection_failed", peer=self.peer)
            self.abort("connection_aborted")
        finally:
            self._task = None
            self.last_active = monotonic()
            if frames and not self.closed:  # frames that arrived while we were finishing
                self._task = asyncio.get_running_loop().create_task(self._process())

    def _log_request(self, frame: bytearray, api_key: int, elapsed: float) -> None:
        if api_key < 0:
            return
        api_version = frame[2] << 8 | frame[3]
        correlation_id = int.from_bytes(frame[4:8], "big", signed=True)
        log.debug(
            "request_completed", peer=self.peer, api=API_NAMES.get(api_key, api_key),
            api_version=api_version,
            correlation_id=correlation_id, ms=round(elapsed * 1000, 3),
        )  # fmt: skip

    async def _send(self, response: bytes | list) -> None:
        if isinstance(response, (bytes, bytearray)):
            self.transport.write(response)
        else:
            await self._send_parts(response)
        if self.transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
            await self._drain()

    async def _send_parts(self, parts: list) -> None:
        """Write a response made of bytes and FileRegions; big regions go by sendfile."""
        pending: list[bytes] = []
        min_sendfile = self.broker.sendfile_min_bytes
        for part in parts:
            if not isinstance(part, FileRegion):
                pending.append(part)
            elif self.tls or self._sock_fd < 0 or part.length < min_sendfile:
                pending.append(part.read())
            else:
                if pending:
                    self.transport.write(b"".join(pending))
                    pending = []
                await self._sendfile(part)
        if pending:
            self.transport.write(b"".join(pending))

    async def _drain(self) -> None:
        while self.transport.get_write_buffer_size() > 0 and not self.closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter
        if self.closed:
            raise ConnectionError("connection closed")

    async def _sendfile(self, region: FileRegion) -> None:
        await self._drain()
        offset, remaining = region.position, region.length
        while remaining:
            try:
                sent = os.sendfile(self._sock_fd, region.fd, offset, remaining)
            except BlockingIOError:
                await self._writable()
                continue
            if sent == 0:  # the file is shorter than the region: the response can't be finished
                raise ConnectionError("segment file truncated during sendfile")
            offset += sent
            remaining -= sent
        self.broker.metrics.sendfile_bytes += region.length

    async def _writable(self) -> None:
        # uvloop owns the socket's fd and refuses add_writer on it; a dup of it works.
        loop = asyncio.get_running_loop()
        if self._dup_fd < 0:
            self._dup_fd = os.dup(self._sock_fd)
        fut = loop.create_future()
        loop.add_writer(self._dup_fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            if self._dup_fd >= 0:
                loop.remove_writer(self._dup_fd)
        if self.closed:
            raise ConnectionError("connection closed")

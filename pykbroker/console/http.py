"""A small HTTP/1.1 server on the broker's event loop (asyncio streams, keep-alive).

Only what the console needs: GET/POST/PATCH/DELETE with a Content-Length body, JSON and static
responses, and Server-Sent Events. Every input is bounded (head, body, connections, idle time),
and a failing handler becomes a 500 for that request, never an error of the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

log = structlog.get_logger(__name__)

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 20
MAX_CONNECTIONS = 64
IDLE_TIMEOUT_S = 30.0
HEAD_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0  # a client that stops reading loses its connection after this

REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type",
    421: "Misdirected Request", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip


class HttpError(Exception):
    """An error answered as JSON: {"error": name, "message": text}."""

    def __init__(self, status: int, error: str, message: str = "",
                 headers: dict[str, str] | None = None):  # fmt: skip
        super().__init__(message or error)
        self.status = status
        self.error = error
        self.message = message or error
        self.headers = headers or {}


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)  # from the route pattern
    version: str = "HTTP/1.1"
    peer: str = "127.0.0.1"  # the client's IP address
    session: Any = None  # who the request acts as (pykbroker.security.principal.Session)

    def json(self) -> Any:
        if not self.body:
            return {}
        ctype = self.headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            # Also what keeps other sites' pages from posting here: a cross-origin request with
            # this content type needs a CORS preflight, which this server never grants.
            raise HttpError(415, "UNSUPPORTED_MEDIA_TYPE", "Send the body as application/json.")
        try:
            value = json.loads(self.body)
        except ValueError as e:
            raise HttpError(400, "INVALID_REQUEST", f"The body is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise HttpError(400, "INVALID_REQUEST", "The body must be a JSON object.")
        return value

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, default)


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class EventStream:
    """A text/event-stream response: `events` yields already formatted SSE chunks."""

    events: AsyncIterator[bytes]


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(value, separators=(",", ":")).encode())


def error_response(e: HttpError) -> Response:
    response = json_response({"error": e.error, "message": e.message}, e.status)
    response.headers.update(e.headers)
    return response


Handler = Callable[[Request], Awaitable[Response | EventStream]]


class Router:
    """Routes by method and path pattern; `{name}` matches one path segment."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, list[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, pattern.strip("/").split("/"), handler))

    def find(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        allowed = False
        for m, pattern, handler in self.routes:
            params = _match(pattern, parts)
            if params is None:
                continue
            if m == method or (m == "GET" and method == "HEAD"):
                return handler, params
            allowed = True
        if allowed:
            raise HttpError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on {path}")
        raise HttpError(404, "NOT_FOUND", f"No such resource: {path}")


def _match(pattern: list[str], parts: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(parts):
        return None
    params = {}
    for p, v in zip(pattern, parts, strict=True):
        if p.startswith("{") and p.endswith("}"):
            if not v:
                return None
            params[p[1:-1]] = v
        elif p != v:
            return None
    return params


class HttpServer:
    def __init__(
        self, router: Router, translate: Callable[[Exception], HttpError | None] | None = None
    ):
        self.router = router
        # Maps a handler's own error types (the Kafka API's) to their HTTP answer.
        self.translate = translate or (lambda e: None)
        # Host header names answered (lower case, IPv6 without brackets); None: any. A page of
        # another site rebound by DNS to this address carries that site's name and is refused.
        self.allowed_hosts: set[str] | None = None
        # Sets request.session or raises HttpError (401) before any route runs, static too.
        self.authenticate: Callable[[Request], Awaitable[None]] | None = None
        self.server: asyncio.base_events.Server | None = None
        self.port = -1
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task] = set()

    async def start(self, host: str | None, port: int) -> None:
        self.server = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, limit=MAX_HEAD_BYTES
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for writer in list(self.writers):
            writer.close()  # idle keep-alive connections
        for task in list(self.tasks):
            task.cancel()  # event streams waiting for records
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.writers) >= MAX_CONNECTIONS:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                await _write_response(writer, error_response(
                    HttpError(503, "TOO_MANY_CONNECTIONS", "The console has too many connections.")
                ), keep_alive=False)  # fmt: skip
            writer.close()
            return
        self.writers.add(writer)
        task = asyncio.current_task()
        self.tasks.add(task)
        peer = writer.get_extra_info("peername")
        peer = peer[0] if peer else "127.0.0.1"
        try:
            timeout = HEAD_TIMEOUT_S
            while True:
                request = await _read_request(reader, timeout)
                if request is None:
                    break
                request.peer = peer
                timeout = IDLE_TIMEOUT_S
                keep_alive = _keep_alive(request)
                response = await self._dispatch(request)
                if isinstance(response, EventStream):
                    await _stream(writer, response, body=request.method != "HEAD")
                    break
                if request.method == "HEAD":
                    response = Response(response.status, b"", response.content_type,
                                        {**response.headers, "Content-Length": str(len(response.body))})  # fmt: skip
                await _write_response(writer, response, keep_alive)
                if not keep_alive:
                    break
        except HttpError as e:  # a bad head or body: answer, then close
            with contextlib.suppress(OSError, RuntimeError):
                await _write_response(writer, error_response(e), keep_alive=False)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # the console is stopping
        except Exception:
            log.exception("console_connection_failed")
        finally:
            self.writers.discard(writer)
            self.tasks.discard(task)
            writer.close()

    async def _dispatch(self, request: Request) -> Response | EventStream:
        try:
            self._check_host(request)
            if self.authenticate is not None:
                await self.authenticate(request)
            handler, request.params = self.router.find(request.method, request.path)
            return await handler(request)
        except HttpError as e:
            return error_response(e)
        except Exception as e:
            if (mapped := self.translate(e)) is not None:
                return error_response(mapped)
            # The details go to the log only: a client learns nothing of the broker's internals.
            log.exception("console_request_failed", method=request.method, path=request.path)
            return error_response(
                HttpError(500, "UNKNOWN_SERVER_ERROR", "The request failed; see the broker's log.")
            )

    def _check_host(self, request: Request) -> None:
        host = request.headers.get("host")
        if self.allowed_hosts is None or host is None:
            return  # browsers always send Host; a request without one comes from no web page
        if host_name(host) not in self.allowed_hosts:
            raise HttpError(421, "MISDIRECTED_REQUEST",
                            f"This console does not answer for host {host!r}; see console.allowed.hosts.")  # fmt: skip


def host_name(host: str) -> str:
    """The name of a Host header (or of a listener's host): no port, no IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


async def _read_request(reader: asyncio.StreamReader, timeout: float) -> Request | None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise HttpError(400, "INVALID_REQUEST", "Truncated request head.") from None
        return None  # the client closed an idle keep-alive connection
    except asyncio.LimitOverrunError:
        raise HttpError(431, "REQUEST_HEAD_TOO_LARGE", "Request head too large.") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "INVALID_REQUEST", "Malformed request line.")
    method, target = parts[0], parts[1]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, "INVALID_REQUEST", "Malformed header line.")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(400, "INVALID_REQUEST", "Chunked request bodies are not supported.")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "INVALID_REQUEST", "Invalid Content-Length.") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise HttpError(413, "REQUEST_TOO_LARGE", f"Bodies are limited to {MAX_BODY_BYTES} bytes.")
    body = await asyncio.wait_for(reader.readexactly(length), HEAD_TIMEOUT_S) if length else b""
    url = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
    return Request(method, url.path or "/", query, headers, body, version=parts[2])


async def _write_response(writer: asyncio.StreamWriter, r: Response, keep_alive: bool) -> None:
    headers = {
        "Content-Type": r.content_type,
        "Content-Length": str(len(r.body)),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Connection": "keep-alive" if keep_alive else "close",
        **r.headers,
    }
    head = f"HTTP/1.1 {r.status} {REASONS.get(r.status, 'Unknown')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode("latin-1") + r.body)
    await _drain(writer)


async def _drain(writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
    except TimeoutError:
        writer.transport.abort()  # close() would wait for the unread bytes: free the slot now
        raise


def _keep_alive(request: Request) -> bool:
    """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only when asked to keep it."""
    tokens = {t.strip() for t in request.headers.get("connection", "").lower().split(",")}
    if request.version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


async def _stream(writer: asyncio.StreamWriter, stream: EventStream, body: bool = True) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
        b"Connection: close\r\nX-Accel-Buffering: no\r\n\r\n"
    )
    events = stream.events
    try:
        if not body:  # HEAD: the head only, the stream is never started
            await _drain(writer)
            return
        async for chunk in events:
            writer.write(chunk)
            await _drain(writer)  # a slow browser slows its own stream, nothing else
    finally:
        with contextlib.suppress(Exception):
            await events.aclose()

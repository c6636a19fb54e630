"""The console's changes go through the broker's own Kafka API handlers.

A console action (create a topic, alter its configs, reset a group's offsets...) is encoded as
the Kafka request an admin client would send and handed to `Broker.handle_request`, the same
entry point a socket's frames take: the same decoding, bounds, validation, ZooKeeper writes and
error codes as kafka-topics or an AdminClient get, with no second implementation to drift.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable
from typing import Any

import structlog

from protocol import codec
from protocol.errors import ErrorCode
from protocol.framing import skip_tagged_fields
from pykbroker.security.principal import Session, anonymous_session

log = structlog.get_logger(__name__)

CLIENT_ID = "pykbroker-console"


class ConsoleConnection:
    """What a handler may ask of the connection a request came on: the session of the console
    user the request acts for (auth.py), so the handlers authorize it as a client's."""

    listener: str | None = None  # metadata answers with each broker's default address
    closed = False
    authenticator = None
    # KIP-368's session end: none, each console request is authenticated (a Bearer token's
    # expiry checked) on its own.
    session_expires: float | None = None

    def __init__(self, session: Session | None = None):
        self.session = session or anonymous_session("127.0.0.1")
        self.peer = f"{self.session.client_host}:0"

    def abort(self, event: str, **fields) -> None:
        log.warning("console_" + event, **fields)

    def throttle(self, ms: int) -> None:
        pass  # a quota's throttle mutes a socket; the console has none to mute


class KafkaApiError(Exception):
    def __init__(self, code: int, message: str | None = None):
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else code
        self.message = message or getattr(self.code, "name", str(code))
        super().__init__(self.message)


class InProcessClient:
    def __init__(self, broker):
        self.broker = broker
        self.connection = ConsoleConnection()
        self._correlation = itertools.count(1)

    async def call(self, api_key: int, api_version: int, body: dict,
                   session: Session | None = None) -> Any:  # fmt: skip
        """Send one request to the broker's handlers, as `session`'s principal (the console's
        own when None); returns kafka-python's decoded response."""
        correlation_id = next(self._correlation) & 0x7FFFFFFF
        frame = codec.encode_request(api_key, api_version, correlation_id, CLIENT_ID, body)
        conn = self.connection if session is None else ConsoleConnection(session)
        response = self.broker.handle_request(conn, bytearray(frame[4:]))
        if isinstance(response, Awaitable):
            response = await response
        if not isinstance(response, bytes | bytearray):
            # CLOSE: the broker refused the request (a bug of ours, logged by the broker).
            raise KafkaApiError(ErrorCode.UNKNOWN_SERVER_ERROR, "The broker refused the request.")
        pos = 8  # size, correlation id
        if codec.response_is_flexible(api_key, api_version):
            pos = skip_tagged_fields(response, pos)
        return codec.decode_response(api_key, api_version, response, pos)


def check(code: int, message: str | None = None) -> None:
    if code:
        raise KafkaApiError(code, message)

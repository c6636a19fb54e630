"""SASL on SASL_PLAINTEXT / SASL_SSL listeners: the mechanisms served and the authenticator
that runs on a connection until its client is authenticated (Kafka's SaslServerAuthenticator).

Mechanisms are pluggable: `@sasl_mechanism("NAME")` registers a factory called once per
listener at start-up (validate and read that listener's configuration, raise ConfigError if it
can't work), returning the per-connection constructor of a sans-io `protocol.sasl.SaslServer`.

Before authentication a connection is served ApiVersions, SaslHandshake (v0-1) and
SaslAuthenticate (v0-2) only; anything else closes it. After a SaslHandshake v0 the client
sends bare size-prefixed SASL tokens (no Kafka header) and gets bare tokens back, as Kafka
still allows. A failed authentication is answered with SASL_AUTHENTICATION_FAILED and Kafka's
message after connection.failed.authentication.delay.ms, logged once, and the connection closed.

Re-authentication (KIP-368). Once authenticated, a session may have an end: the credential's
expiry (an OAUTHBEARER token's `exp`, a delegation token's expiry) or connections.max.reauth.ms,
whichever comes first; SaslAuthenticate v1+ tells the client how long it has. A SaslHandshake
on an authenticated connection whose session has an end starts re-authentication (at most once a
second, as Kafka's KafkaChannel): a new authenticator serves the exchange, with the same
mechanism, and must end with the same principal ("Cannot change principals during
re-authentication ..."). Any other request after the session's end closes the connection, for
v0 clients too (they are never told the lifetime, and reconnect), as Kafka's SocketServer does.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from protocol import codec
from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from protocol.framing import FrameError, RequestHeader, parse_request_header
from protocol.sasl import SaslAuthenticationError, SaslError, SaslServer
from protocol.sasl.plain import PlainServer
from protocol.sasl.scram import MECHANISMS as SCRAM_MECHANISMS
from protocol.sasl.scram import ScramServer
from pykbroker.config import ConfigError
from pykbroker.security.jaas import PLAIN_LOGIN_MODULE, JaasEntry, parse_jaas_config
from pykbroker.security.principal import KafkaPrincipal, Session, user

if TYPE_CHECKING:
    from pykbroker.broker import Broker
    from pykbroker.server import Connection

log = structlog.get_logger(__name__)

HANDSHAKE_VERSIONS = (0, 1)
AUTHENTICATE_VERSIONS = (0, 2)
# Kafka's SaslInternalConfigs.CREDENTIAL_LIFETIME_MS_SASL_NEGOTIATED_PROPERTY_KEY: when the
# credential a client authenticated with expires (ms since the epoch), or None.
CREDENTIAL_LIFETIME_MS = "CREDENTIAL.LIFETIME.MS"
MIN_REAUTH_INTERVAL_S = 1.0  # Kafka's KafkaChannel.MIN_REAUTH_INTERVAL_ONE_SECOND_NANOS


@dataclass
class MechanismContext:
    """What a mechanism factory may read: the broker and this listener's configuration."""

    broker: Broker
    listener: str
    mechanism: str

    def get(self, key: str) -> Any:
        return self.broker.config.for_listener(self.listener, key, self.mechanism)

    def jaas(self, login_module: str | None = None) -> JaasEntry | None:
        """This listener's JAAS entry for the mechanism (listener.name.<l>.<mechanism>.
        sasl.jaas.config, else sasl.jaas.config), the one of `login_module` if given."""
        text = self.get("sasl.jaas.config")
        if not text:
            return None
        entries = parse_jaas_config(text)
        if login_module is not None:
            entries = [e for e in entries if e.login_module == login_module] or entries
        return entries[0]


ServerFactory = Callable[[], SaslServer]
MECHANISM_FACTORIES: dict[str, Callable[[MechanismContext], ServerFactory]] = {}


def sasl_mechanism(name: str):
    """Register a mechanism: fn(MechanismContext) -> () -> SaslServer."""

    def register(fn):
        MECHANISM_FACTORIES[name] = fn
        return fn

    return register


def plain_users(ctx: MechanismContext) -> dict[str, bytes]:
    """Kafka's PlainServerCallbackHandler's users: the JAAS options user_<name>="pw"."""
    entry = ctx.jaas(PLAIN_LOGIN_MODULE)
    if entry is None:
        raise ConfigError(
            f"Listener {ctx.listener}: SASL/PLAIN needs a JAAS configuration: "
            f"listener.name.{ctx.listener.lower()}.plain.sasl.jaas.config (or sasl.jaas.config)"
        )
    return {k[5:]: v.encode() for k, v in entry.options.items() if k.startswith("user_")}


def check_plain(users: dict[str, bytes], username: str, password: str) -> bool:
    expected = users.get(username)
    # compare_digest even for unknown users, so timing doesn't tell which exist
    return hmac.compare_digest(expected or b"\0", password.encode()) and expected is not None


@sasl_mechanism("PLAIN")
def _plain(ctx: MechanismContext) -> ServerFactory:
    users = plain_users(ctx)
    return lambda: PlainServer(lambda username, password: check_plain(users, username, password))


def _scram(ctx: MechanismContext) -> ServerFactory:
    broker, mechanism = ctx.broker, ctx.mechanism
    return lambda: ScramServer(
        mechanism,
        lambda name: broker.scram_credential(name, mechanism),
        lambda token_id: broker.delegation_token_credential(token_id, mechanism),
    )


for _name in SCRAM_MECHANISMS:
    sasl_mechanism(_name)(_scram)


def listener_mechanisms(broker: Broker, listener: str) -> dict[str, ServerFactory]:
    """sasl.enabled.mechanisms of a SASL listener -> their per-connection factories."""
    enabled = broker.config.for_listener(listener, "sasl.enabled.mechanisms")
    if not enabled:
        raise ConfigError(f"Listener {listener}: sasl.enabled.mechanisms is empty")
    out = {}
    for name in enabled:
        factory = MECHANISM_FACTORIES.get(name)
        if factory is None:
            raise ConfigError(
                f"Listener {listener}: SASL mechanism {name} is not supported (supported: "
                f"{', '.join(sorted(MECHANISM_FACTORIES))}); set sasl.enabled.mechanisms"
            )
        out[name] = factory(MechanismContext(broker, listener, name))
    return out


class SaslAuthenticator:
    """Runs on a connection until authentication completes (then conn.authenticator = None)."""

    def __init__(self, conn: Connection, mechanisms: dict[str, ServerFactory],
                 reauth: tuple[str, KafkaPrincipal] | None = None):  # fmt: skip
        """`reauth`: (mechanism, principal) of the session being re-authenticated."""
        self.conn = conn
        self.broker = conn.broker
        self.mechanisms = mechanisms
        self.reauth = reauth
        # -> handshake -> authenticate | raw; re-authentication starts at its SaslHandshake
        self.state = "handshake" if reauth else "handshake_or_versions"
        self.bad_mechanism: str | None = None
        self.server: SaslServer | None = None
        self.mechanism: str | None = None
        self.max_receive = self.broker.config.for_listener(
            conn.listener, "sasl.server.max.receive.size"
        )

    def handle(self, frame: bytearray) -> Any:
        conn = self.conn
        if len(frame) > self.max_receive:
            conn.abort("invalid_sasl_receive", size=len(frame), max=self.max_receive)
            return _close()
        if self.state == "raw":
            return self._raw_token(bytes(frame))
        if self.state == "reauth_bad_mechanism":
            # Kafka's REAUTH_BAD_MECHANISM: the handshake was answered, the next frame fails.
            return self._fail(None, self.bad_mechanism, self.reauth[0])
        try:
            header = parse_request_header(frame, codec.request_is_flexible)
        except FrameError as e:
            conn.abort("invalid_request_header", reason=str(e))
            return _close()
        key = header.api_key
        if self.state in ("handshake_or_versions", "handshake"):
            if key == ApiKey.API_VERSIONS:
                self.state = "handshake"
                return self.broker.dispatch_request(conn, frame, header)
            if key == ApiKey.SASL_HANDSHAKE:
                return self._handshake(frame, header)
            return self._illegal(header, "during SASL handshake")
        if key != ApiKey.SASL_AUTHENTICATE:
            return self._illegal(header, "during SASL authentication")
        return self._authenticate(frame, header)

    def _illegal(self, header, when: str) -> Any:
        # Kafka's IllegalSaslStateException: the connection is closed.
        name = (
            ApiKey(header.api_key).name
            if header.api_key in ApiKey._value2member_map_
            else header.api_key
        )
        self.conn.abort("illegal_sasl_state", reason=f"Unexpected Kafka request of type {name} {when}.",
                        client_id=header.client_id)  # fmt: skip
        return _close()

    def _decode(self, frame, header, versions: tuple[int, int]) -> Any:
        if not versions[0] <= header.api_version <= versions[1]:
            self.conn.abort("unsupported_request", api_key=header.api_key,
                            api_version=header.api_version, client_id=header.client_id)  # fmt: skip
            return None
        try:
            return codec.decode_request(
                header.api_key, header.api_version, frame, header.body_offset
            )
        except Exception as e:
            self.conn.abort("malformed_request", api_key=header.api_key,
                            api_version=header.api_version, reason=repr(e))  # fmt: skip
            return None

    def _handshake(self, frame, header) -> Any:
        request = self._decode(frame, header, HANDSHAKE_VERSIONS)
        if request is None:
            return _close()
        enabled = list(self.mechanisms)
        mechanism = request.mechanism
        if mechanism not in self.mechanisms:
            body = {"error_code": ErrorCode.UNSUPPORTED_SASL_MECHANISM, "mechanisms": enabled}
            response = codec.encode_response(
                header.api_key, header.api_version, header.correlation_id, body
            )
            return self._fail(response, f"Unsupported SASL mechanism {mechanism}", mechanism)
        self.mechanism = mechanism
        self.server = self.mechanisms[mechanism]()
        # v0: bare SASL tokens follow; v1: SaslAuthenticate requests carry them.
        self.state = "raw" if header.api_version == 0 else "authenticate"
        if self.reauth is not None and mechanism != self.reauth[0]:
            self.bad_mechanism = (
                f"SASL mechanism '{mechanism}' requested by client is not supported for "
                f"re-authentication of mechanism '{self.reauth[0]}'"
            )
            self.state = "reauth_bad_mechanism"
        body = {"error_code": 0, "mechanisms": enabled}
        return codec.encode_response(
            header.api_key, header.api_version, header.correlation_id, body
        )

    def _authenticate(self, frame, header) -> Any:
        request = self._decode(frame, header, AUTHENTICATE_VERSIONS)
        if request is None:
            return _close()

        def respond(error: int, message: str | None, token: bytes = b"", lifetime: int = 0):
            body = {"error_code": error, "error_message": message, "auth_bytes": token,
                    "session_lifetime_ms": lifetime}  # fmt: skip
            return codec.encode_response(
                header.api_key, header.api_version, header.correlation_id, body
            )

        try:
            token = self.server.evaluate(bytes(request.auth_bytes or b""))
            lifetime = self._complete() if self.server.complete else 0
        except SaslError as e:
            message = self._client_message(e)
            return self._fail(
                respond(ErrorCode.SASL_AUTHENTICATION_FAILED, message), str(e), self.mechanism
            )
        return respond(0, None, token, lifetime)

    def _raw_token(self, token: bytes) -> Any:
        try:
            out = self.server.evaluate(token)
            if self.server.complete:
                self._complete()  # the session's end still holds: v0 clients aren't told it
        except SaslError as e:
            return self._fail(None, str(e), self.mechanism)  # v0: no error response exists
        return len(out).to_bytes(4, "big") + out

    def _client_message(self, e: SaslError) -> str:
        if isinstance(e, SaslAuthenticationError):
            return str(e)
        what = "re-authentication" if self.reauth else "authentication"
        return (f"Authentication failed during {what} due to invalid credentials with "
                f"SASL mechanism {self.mechanism}")  # fmt: skip

    def session_lifetime_ms(self) -> tuple[int, float | None]:
        """Kafka's calcCompletionTimesAndReturnSessionLifetimeMs: (the lifetime SaslAuthenticate
        v1+ returns, the monotonic time the session ends or None). The lifetime is the shorter
        of connections.max.reauth.ms (this listener and mechanism; 0 = none) and what is left
        of the credential; neither: 0 and no end."""
        expiry_ms = self.server.negotiated_property(CREDENTIAL_LIFETIME_MS)
        max_reauth = self.broker.config.for_listener(
            self.conn.listener, "connections.max.reauth.ms", self.mechanism
        )
        if expiry_ms is None and max_reauth <= 0:
            return 0, None
        lifetime = max_reauth
        if expiry_ms is not None:
            left = max(0, int(expiry_ms - time.time() * 1000))
            lifetime = left if max_reauth <= 0 else min(left, max_reauth)
        return lifetime, time.monotonic() + lifetime / 1000

    def _complete(self) -> int:
        """The exchange succeeded: the connection's new session; returns its lifetime (ms).
        Raises SaslAuthenticationError if a re-authentication changed the principal."""
        conn = self.conn
        old = conn.session
        principal = user(self.server.authorization_id)
        if self.server.negotiated_property("tokenauth") in ("true", "TRUE", "True"):
            principal = type(principal)(principal.principal_type, principal.name, True)
        if self.reauth is not None and principal != self.reauth[1]:
            was = self.reauth[1]
            raise SaslAuthenticationError(
                f"Cannot change principals during re-authentication from "
                f"{was.principal_type}.{was.name}: {principal.principal_type}.{principal.name}"
            )
        lifetime, conn.session_expires = self.session_lifetime_ms()
        conn.session = Session(principal, old.client_host, old.listener, old.security_protocol,
                               self.mechanism)  # fmt: skip
        conn.authenticator = None
        conn.reader.max_frame_bytes = self.broker.config.get("socket.request.max.bytes")
        if self.reauth is not None:
            conn.reauthentications += 1
            self.broker.metrics.successful_reauthentications += 1
        log.debug("reauthenticated" if self.reauth else "authenticated", peer=conn.peer,
                  principal=str(principal), mechanism=self.mechanism,
                  session_lifetime_ms=lifetime)  # fmt: skip
        return lifetime

    def _fail(self, response: bytes | None, reason: str, mechanism: str | None) -> Any:
        """Kafka's failed authentication: one log line, then after
        connection.failed.authentication.delay.ms the response (if any) and the close."""
        conn = self.conn
        self.state = "failed"
        log.info("failed_reauthentication" if self.reauth else "failed_authentication",
                 peer=conn.peer, listener=conn.listener, mechanism=mechanism,
                 reason=reason)  # fmt: skip
        delay = self.broker.config.for_listener(
            conn.listener, "connection.failed.authentication.delay.ms"
        )
        return _close_after(conn, response, delay / 1000)


def check_session(conn: Connection, frame, header: RequestHeader) -> Any:
    """A request on an authenticated connection whose session has an end (conn.session_expires):
    a SaslHandshake starts re-authentication; anything else after the end closes the connection
    (Kafka's SocketServer: "Disconnecting expired channel"). None: serve the request."""
    now = time.monotonic()
    if header.api_key == ApiKey.SASL_HANDSHAKE and (
        conn.reauth_started is None or now - conn.reauth_started >= MIN_REAUTH_INTERVAL_S
    ):
        conn.reauth_started = now
        session = conn.session
        auth = SaslAuthenticator(
            conn, conn.security.mechanisms, (session.sasl_mechanism, session.principal)
        )
        conn.authenticator = auth
        conn.reader.max_frame_bytes = min(conn.reader.max_frame_bytes, auth.max_receive)
        return auth.handle(frame)
    if now >= conn.session_expires:
        conn.broker.metrics.expired_connections_killed += 1
        log.info("expired_session_closed", peer=conn.peer, listener=conn.listener,
                 principal=str(conn.session.principal), api_key=header.api_key,
                 expired_ms=round((now - conn.session_expires) * 1000))  # fmt: skip
        return _close()
    return None


async def _close_after(conn: Connection, response: bytes | None, delay_s: float) -> None:
    deadline = time.monotonic() + delay_s
    # The loop's timers may fire a little early (libuv's cached clock): sleep to the deadline.
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(remaining)
    if not conn.closed and conn.transport is not None:
        if response is not None:
            conn.transport.write(response)
        conn.closed = True
        conn.transport.close()  # after the buffered response is written
    return None


def _close() -> Any:
    from pykbroker.server import CLOSE

    return CLOSE


# Mechanisms defined in their own modules register on import.
from pykbroker.security import oauthbearer as _oauthbearer  # noqa: E402,F401

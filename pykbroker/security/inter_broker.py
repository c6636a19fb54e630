"""This broker as a client of the others: how its replica fetchers and coordinator channels
connect over the inter-broker listener (`inter.broker.listener.name`, or the listener named after
`security.inter.broker.protocol`), as Kafka's brokers do.

- SSL / SASL_SSL: TLS with that listener's trust store (and its key store, for brokers that ask
  for client certificates); the peer's name is checked (`ssl.endpoint.identification.algorithm`).
- SASL_PLAINTEXT / SASL_SSL: SaslHandshake v1 + SaslAuthenticate v2 with
  `sasl.mechanism.inter.broker.protocol` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), the broker's own
  user name and password from the listener's JAAS config (`username=`/`password=` of Kafka's
  PlainLoginModule or ScramLoginModule in `listener.name.<l>.<mechanism>.sasl.jaas.config`), or
  OAUTHBEARER with unsecured tokens made from the OAuthBearerLoginModule's
  `unsecuredLoginStringClaim_sub` (and `unsecuredLoginLifetimeSeconds`), as Kafka's default
  login callback makes them.
  The session lifetime the other broker gives (KIP-368) is kept: `reauth_at` says when the
  connection should re-authenticate (at 85-95% of it, as Kafka's clients), which callers do
  in-band between requests (`authenticate` again) or by reconnecting.

Built once at start-up in ZooKeeper mode (a single broker has no peers); a misconfiguration
stops the broker with a ConfigError, as Kafka's KafkaConfig checks do.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from protocol import codec
from protocol.apis import ApiKey
from protocol.sasl import SaslClient, SaslError
from protocol.sasl.oauthbearer import OAuthBearerClient, unsecured_jwt
from protocol.sasl.plain import PlainClient
from protocol.sasl.scram import MECHANISMS as SCRAM_MECHANISMS
from protocol.sasl.scram import ScramClient
from pykbroker.config import ConfigError
from pykbroker.security import tls
from pykbroker.security.jaas import PLAIN_LOGIN_MODULE
from pykbroker.security.sasl import MechanismContext

if TYPE_CHECKING:
    from pykbroker.broker import Broker

log = structlog.get_logger(__name__)

SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
OAUTHBEARER_LOGIN_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
_SIZE = struct.Struct(">i")


class InterBrokerAuthenticationError(ConnectionError):
    """The other broker refused our credentials (or proved it doesn't know them)."""


@dataclass
class InterBrokerSecurity:
    listener: str
    protocol: str
    ssl_context: ssl.SSLContext | None = None
    mechanism: str | None = None
    sasl_client: Callable[[], SaslClient] | None = None

    async def open_connection(self, host: str, port: int, client_id: str, timeout: float):
        """(reader, writer, reauth_at) of an authenticated connection to another broker;
        `reauth_at` (loop time) is None when the session has no end."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=self.ssl_context, server_hostname=host if self.ssl_context else None
            ),
            timeout,
        )
        try:
            reauth_at = await self.authenticate(reader, writer, client_id, timeout)
        except BaseException:
            writer.close()
            raise
        return reader, writer, reauth_at

    async def authenticate(self, reader, writer, client_id: str, timeout: float) -> float | None:
        """The SASL exchange on a connection (also a re-authentication, between requests);
        returns when to re-authenticate (loop time) or None. Nothing to do without SASL."""
        if self.sasl_client is None:
            return None
        cid = 0

        async def request(api_key: int, version: int, body: dict):
            nonlocal cid
            cid -= 1  # negative: never one of the caller's own correlation ids
            writer.write(codec.encode_request(api_key, version, cid, client_id, body))
            size = _SIZE.unpack(await asyncio.wait_for(reader.readexactly(4), timeout))[0]
            frame = await asyncio.wait_for(reader.readexactly(size), timeout)
            offset = 4 + (1 if codec.response_is_flexible(api_key, version) else 0)
            return codec.decode_response(api_key, version, frame, offset)

        r = await request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": self.mechanism})
        if r.error_code:
            raise InterBrokerAuthenticationError(
                f"SASL handshake for {self.mechanism} refused (error {r.error_code}, enabled "
                f"mechanisms {list(r.mechanisms)})"
            )
        client = self.sasl_client()
        token = client.initial()
        while True:
            r = await request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": token})
            if r.error_code:
                raise InterBrokerAuthenticationError(r.error_message or f"error {r.error_code}")
            try:
                token = client.evaluate(bytes(r.auth_bytes or b""))
            except SaslError as e:
                raise InterBrokerAuthenticationError(str(e)) from None
            if client.complete:
                break
        if r.session_lifetime_ms <= 0:
            return None
        # Kafka's clients re-authenticate at 85-95% of the lifetime, jittered.
        delay = r.session_lifetime_ms / 1000 * random.uniform(0.85, 0.95)
        return asyncio.get_running_loop().time() + delay


def inter_broker_security(broker: Broker) -> InterBrokerSecurity:
    """How this broker reaches the others (ConfigError if it can't, checked at start-up)."""
    config = broker.config
    listener = config.inter_broker_listener_name()
    protocol = config.security_protocols().get(listener)
    if protocol is None:
        raise ConfigError(f"No security protocol defined for listener {listener}")
    security = InterBrokerSecurity(listener, protocol)
    if protocol in ("SSL", "SASL_SSL"):
        security.ssl_context = tls.client_context(
            lambda key: config.for_listener(listener, key), listener
        )
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        mechanism = config.get("sasl.mechanism.inter.broker.protocol")
        if mechanism not in config.for_listener(listener, "sasl.enabled.mechanisms"):
            raise ConfigError(  # Kafka's KafkaConfig message
                "sasl.mechanism.inter.broker.protocol must be included in "
                "sasl.enabled.mechanisms when SASL is used for inter-broker communication"
            )
        security.mechanism = mechanism
        security.sasl_client = _client_factory(MechanismContext(broker, listener, mechanism))
    log.debug("inter_broker_security", listener=listener, protocol=protocol,
              mechanism=security.mechanism)  # fmt: skip
    return security


def _client_factory(ctx: MechanismContext) -> Callable[[], SaslClient]:
    mechanism = ctx.mechanism
    if mechanism == "OAUTHBEARER":
        return _unsecured_oauthbearer(ctx)
    if mechanism == "PLAIN":
        module = PLAIN_LOGIN_MODULE
    elif mechanism in SCRAM_MECHANISMS:
        module = SCRAM_LOGIN_MODULE
    else:
        raise ConfigError(
            f"sasl.mechanism.inter.broker.protocol {mechanism} is not supported for "
            "inter-broker communication (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)"
        )
    entry = ctx.jaas(module)
    options = entry.options if entry is not None else {}
    username, password = options.get("username"), options.get("password")
    if not username or password is None:
        raise ConfigError(
            f"Inter-broker SASL/{mechanism} needs the broker's own credentials: username= and "
            f"password= in listener.name.{ctx.listener.lower()}.{mechanism.lower()}"
            ".sasl.jaas.config (or sasl.jaas.config)"
        )
    if mechanism == "PLAIN":
        return lambda: PlainClient(username, password)
    return lambda: ScramClient(mechanism, username, password)


def _unsecured_oauthbearer(ctx: MechanismContext) -> Callable[[], SaslClient]:
    """Kafka's OAuthBearerUnsecuredLoginCallbackHandler, from the OAuthBearerLoginModule's
    unsecuredLogin* JAAS options: a fresh unsigned token for every (re-)authentication."""
    entry = ctx.jaas(OAUTHBEARER_LOGIN_MODULE)
    options = entry.options if entry is not None else {}
    principal_claim = options.get("unsecuredLoginPrincipalClaimName", "sub")
    subject = options.get(f"unsecuredLoginStringClaim_{principal_claim}")
    if not subject:
        raise ConfigError(
            f"Inter-broker SASL/OAUTHBEARER makes unsecured tokens only: set "
            f'unsecuredLoginStringClaim_{principal_claim}="<broker user>" in '
            f"listener.name.{ctx.listener.lower()}.oauthbearer.sasl.jaas.config"
        )
    try:
        lifetime_s = int(options.get("unsecuredLoginLifetimeSeconds", "3600"))
    except ValueError:
        raise ConfigError("unsecuredLoginLifetimeSeconds must be an integer") from None

    def client() -> SaslClient:
        now = int(time.time())  # whole seconds: an iat can't land in the validator's future
        claims = {"iat": now, "exp": now + lifetime_s, principal_claim: subject}
        return OAuthBearerClient(unsecured_jwt(claims))

    return client

"""Who a console request acts as, following the broker's own security.

`console.authentication.method`:
- NONE: every request acts as `console.principal` (User:ANONYMOUS by default), from the HTTP
  client's address, as a client of a PLAINTEXT listener does.
- BASIC (the default when the broker has an authorizer or a SASL listener): HTTP Basic
  credentials, checked against what the broker's SASL listeners check: the users of a PLAIN
  listener's JAAS configuration and the SCRAM credentials stored by kafka-configs /
  AlterUserScramCredentials. A request then acts as User:<name>. When a listener enables
  OAUTHBEARER, `Authorization: Bearer <token>` is also accepted, validated as that listener does.

The session is then authorized by the broker's authorizer (ACLs, super.users) as the equivalent
Kafka request of a client with that principal would be (see api.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from concurrent.futures import Executor
from typing import TYPE_CHECKING

import structlog

from protocol.sasl.oauthbearer import TokenRejected, Validator
from protocol.sasl.scram import MECHANISMS as SCRAM_MECHANISMS
from protocol.sasl.scram import credential_from_salted, salted_password
from pykbroker.config import ConfigError
from pykbroker.security.principal import KafkaPrincipal, Session, user

from .http import HttpError, Request

if TYPE_CHECKING:
    from pykbroker.broker import Broker

log = structlog.get_logger(__name__)

REALM = "pykbroker console"
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
MAX_VERIFIED = 1024  # passwords whose SCRAM check is remembered (PBKDF2 once, not per request)


def authentication_method(broker: Broker) -> str:
    method = broker.config.get("console.authentication.method")
    if method:
        return method.upper()
    secured = broker.authorizer is not None or bool(_sasl_listeners(broker))
    return "BASIC" if secured else "NONE"


def _sasl_listeners(broker: Broker) -> list[str]:
    protocols = broker.config.security_protocols()
    return [
        name.upper() for name, _, _ in broker.config.listeners
        if protocols.get(name.upper()) in SASL_PROTOCOLS
    ]  # fmt: skip


class ConsoleAuth:
    def __init__(self, broker: Broker, executor: Executor | None = None):
        from pykbroker.security.sasl import MechanismContext, plain_users

        self.broker = broker
        self.executor = executor  # PBKDF2 off the loop, not behind the broker's fsyncs
        self.method = authentication_method(broker)
        if self.method not in ("NONE", "BASIC"):
            raise ConfigError(
                f"console.authentication.method must be NONE or BASIC, not {self.method}"
            )
        try:
            self.principal = KafkaPrincipal.parse(broker.config.get("console.principal"))
        except ValueError as e:
            raise ConfigError(f"console.principal: {e}") from None
        self.plain: dict[str, bytes] = {}  # PLAIN users of every SASL listener enabling PLAIN
        self.validators: list[Validator] = []  # OAUTHBEARER listeners' token validators
        for listener in _sasl_listeners(broker):
            enabled = broker.config.for_listener(listener, "sasl.enabled.mechanisms") or []
            if "PLAIN" in enabled:
                ctx = MechanismContext(broker, listener, "PLAIN")
                for name, password in plain_users(ctx).items():
                    self.plain.setdefault(name, password)
            if "OAUTHBEARER" in enabled:
                from pykbroker.security.oauthbearer import listener_validator

                self.validators.append(
                    listener_validator(MechanismContext(broker, listener, "OAUTHBEARER"))
                )
        self._secret = os.urandom(32)
        self._verified: dict[tuple[bytes, str], bytes] = {}
        self.delay_s = broker.config.get("connection.failed.authentication.delay.ms") / 1000

    async def authenticate(self, request: Request) -> None:
        """Set request.session, or raise 401 (after Kafka's failed-authentication delay)."""
        if self.method == "NONE":
            request.session = Session(self.principal, request.peer)
            return
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        principal = None
        mechanism = None
        if scheme == "basic":
            try:
                text = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                text = ""
            name, sep, password = text.partition(":")
            if sep and name:
                mechanism = await self._check_password(name, password)
                principal = user(name) if mechanism else None
        elif scheme == "bearer" and self.validators:
            principal = self._check_token(credentials.strip())
            mechanism = "OAUTHBEARER" if principal else None
        elif not header:
            raise _unauthorized("Log in with a user of the broker (HTTP Basic authentication).")
        if principal is None:
            log.info("console_failed_authentication", peer=request.peer, scheme=scheme)
            await asyncio.sleep(self.delay_s)
            raise _unauthorized("Authentication failed: invalid credentials.")
        request.session = Session(principal, request.peer, None, "PLAINTEXT", mechanism)

    async def _check_password(self, name: str, password: str) -> str | None:
        """The mechanism whose credential the password matches: PLAIN or SCRAM-SHA-*."""
        from pykbroker.security.sasl import check_plain

        if check_plain(self.plain, name, password):
            return "PLAIN"
        digest = hmac.new(self._secret, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        for mechanism in SCRAM_MECHANISMS:
            cred = self.broker.scram_credential(name, mechanism)
            if cred is None:
                continue
            # Remembered against the stored key it matched: a changed or deleted credential
            # is never matched from memory.
            if self._verified.get((digest, mechanism)) == cred.stored_key:
                return mechanism
            derived = await asyncio.get_running_loop().run_in_executor(
                self.executor, _stored_key, mechanism, password, cred.salt, cred.iterations
            )
            if hmac.compare_digest(derived, cred.stored_key):
                if len(self._verified) >= MAX_VERIFIED:
                    self._verified.clear()
                self._verified[(digest, mechanism)] = cred.stored_key
                return mechanism
        return None

    def _check_token(self, token: str) -> KafkaPrincipal | None:
        for validate in self.validators:
            try:
                return user(validate(token).principal)
            except (TokenRejected, ValueError):
                continue
        return None


def _stored_key(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    salted = salted_password(mechanism, password.encode(), salt, iterations)
    return credential_from_salted(mechanism, salted, salt, iterations).stored_key


def _unauthorized(message: str) -> HttpError:
    return HttpError(401, "SASL_AUTHENTICATION_FAILED", message, {
        "WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"',
    })  # fmt: skip

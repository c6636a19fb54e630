"""Who is on a connection: Kafka's KafkaPrincipal and the session an authorizer sees.

Every Connection has a `session` from the moment it is accepted:
- PLAINTEXT (and SSL without a client certificate): `User:ANONYMOUS`, as Kafka's
  DefaultKafkaPrincipalBuilder gives.
- SSL with a client certificate: `User:<name>`, the certificate's subject DN (RFC 2253, as Java's
  X500Principal.getName()) through `ssl.principal.mapping.rules`.
- SASL_PLAINTEXT / SASL_SSL: `User:ANONYMOUS` until authentication succeeds, then
  `User:<authorization id>` (nothing but ApiVersions/SaslHandshake/SaslAuthenticate is served
  before that, so handlers only ever see an authenticated principal there).

Handlers read it as `ctx.session` (or `ctx.principal`); the session object is replaced, never
mutated, when authentication completes, so holding a reference is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

USER_TYPE = "User"


@dataclass(frozen=True, slots=True)
class KafkaPrincipal:
    """Kafka's KafkaPrincipal: a type ("User", "Group", ...) and a name; str() is "User:alice"."""

    principal_type: str
    name: str
    # True when authenticated with a delegation token (Kafka's tokenAuthenticated).
    token_authenticated: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        return f"{self.principal_type}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> KafkaPrincipal:
        """ "User:alice" -> KafkaPrincipal("User", "alice") (Kafka's SecurityUtils
        .parseKafkaPrincipal: the type is up to the first colon; ValueError without one)."""
        kind, sep, name = text.partition(":")
        if not sep or not kind:
            raise ValueError(f"Invalid principal: {text!r}, expected <type>:<name>")
        return cls(kind, name)


ANONYMOUS = KafkaPrincipal(USER_TYPE, "ANONYMOUS")


def user(name: str) -> KafkaPrincipal:
    return KafkaPrincipal(USER_TYPE, name)


@dataclass(frozen=True, slots=True)
class Session:
    """What an authorizer or a quota manager needs to know about a connection's client."""

    principal: KafkaPrincipal
    client_host: str  # the client's IP address, as Kafka's InetAddress.getHostAddress()
    listener: str | None = None  # the listener's name (upper case), e.g. "SASL_SSL"
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, ... once authenticated by SASL


def anonymous_session(client_host: str, listener: str | None = None,
                      security_protocol: str = "PLAINTEXT") -> Session:  # fmt: skip
    return Session(ANONYMOUS, client_host, listener, security_protocol)

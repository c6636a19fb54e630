"""What each listener does about security, decided once at start-up from the configuration."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pykbroker.config import ConfigError
from pykbroker.security import tls
from pykbroker.security.principal import Session, user

if TYPE_CHECKING:
    from pykbroker.broker import Broker
    from pykbroker.security.sasl import ServerFactory
    from pykbroker.server import Connection


@dataclass
class ListenerSecurity:
    name: str  # upper case, as in listener.security.protocol.map
    protocol: str  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    ssl_context: ssl.SSLContext | None = None
    principal_mapper: tls.SslPrincipalMapper | None = None
    mechanisms: dict[str, ServerFactory] | None = None  # SASL listeners: enabled mechanisms

    def session(self, conn: Connection, client_host: str) -> Session:
        """The session of a connection just accepted (TLS handshake done)."""
        session = Session(user("ANONYMOUS"), client_host, self.name, self.protocol)
        if self.protocol == "SSL" and self.principal_mapper is not None:
            cert = conn.transport.get_extra_info("peercert")
            if cert:  # ssl.client.auth=required, or requested and sent
                name = self.principal_mapper.name(tls.subject_dn(cert))
                session = Session(user(name), client_host, self.name, self.protocol)
        return session


def listener_security(broker: Broker, name: str) -> ListenerSecurity:
    """Build one listener's TLS context and SASL mechanisms (ConfigError if misconfigured)."""
    config = broker.config
    protocol = config.security_protocols().get(name)
    if protocol is None:
        raise ConfigError(f"No security protocol defined for listener {name}")
    security = ListenerSecurity(name, protocol)
    if protocol in ("SSL", "SASL_SSL"):

        def get(key: str):
            # KIP-684: on SASL_SSL, client certificates are asked for only when the listener's
            # own listener.name.<l>.ssl.client.auth says so, never by the broker-wide key.
            if key == "ssl.client.auth" and protocol == "SASL_SSL":
                return config.listener_overrides.get((name, None, key), "none")
            return config.for_listener(name, key)

        security.ssl_context = tls.server_context(get, name)
    if protocol == "SSL":
        security.principal_mapper = tls.SslPrincipalMapper(
            config.for_listener(name, "ssl.principal.mapping.rules")
        )
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        from pykbroker.security.sasl import listener_mechanisms

        security.mechanisms = listener_mechanisms(broker, name)
    return security

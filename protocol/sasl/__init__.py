"""SASL mechanisms, server side, sans-io: one small class per mechanism, bytes in, bytes out.

A `SaslServer` is created per connection (after the client's SaslHandshake names the
mechanism) and fed each token the client sends; it returns the token to send back, and is
`complete` once the client is authenticated (then `authorization_id` is the user). Failures
raise, as Kafka's javax.security.sasl servers do:
- `SaslAuthenticationError`: its message goes to the client as is (Kafka's
  SaslAuthenticationException), e.g. PLAIN's "Authentication failed: Invalid username or
  password".
- `SaslError`: anything else; the client is told only "Authentication failed during
  authentication due to invalid credentials with SASL mechanism <name>" (Kafka keeps the
  detail, which could tell an attacker which users exist, for the broker's log).

Credentials are looked up through callables given to the constructor, so mechanisms do no I/O.
"""

from __future__ import annotations


class SaslError(Exception):
    """Authentication failed; the client gets the generic message, the detail is logged."""


class SaslAuthenticationError(SaslError):
    """Authentication failed with a message meant for the client."""


class SaslServer:
    mechanism: str = ""

    def __init__(self) -> None:
        self.complete = False
        self.authorization_id: str | None = None

    def evaluate(self, token: bytes) -> bytes:
        """The client's next token -> the server's answer (raises SaslError on failure)."""
        raise NotImplementedError

    def negotiated_property(self, name: str):
        """Kafka's getNegotiatedProperty: e.g. a credential's lifetime (re-authentication)."""
        return None


class SaslClient:
    """The client side, for this broker's own connections to the others (inter-broker SASL):
    `initial()` is the first token; each server token goes to `evaluate`, which returns the
    next token to send, until `complete`. SaslError if the server's answer is wrong."""

    mechanism: str = ""

    def __init__(self) -> None:
        self.complete = False

    def initial(self) -> bytes:
        raise NotImplementedError

    def evaluate(self, challenge: bytes) -> bytes:
        raise NotImplementedError

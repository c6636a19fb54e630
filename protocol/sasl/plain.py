"""SASL/PLAIN (RFC 4616) as Kafka's PlainSaslServer: one message, authzid NUL authcid NUL passwd."""

from __future__ import annotations

from collections.abc import Callable

from protocol.sasl import SaslAuthenticationError, SaslClient, SaslError, SaslServer


class PlainServer(SaslServer):
    mechanism = "PLAIN"

    def __init__(self, authenticate: Callable[[str, str], bool]):
        """`authenticate(username, password)` -> True if they match a configured user."""
        super().__init__()
        self._authenticate = authenticate

    def evaluate(self, token: bytes) -> bytes:
        if self.complete:
            raise SaslError("PLAIN authentication already complete")
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslError("Invalid SASL/PLAIN response: not UTF-8") from None
        # Kafka splits on NUL keeping empty parts and wants exactly three.
        parts = text.split("\x00")
        if len(parts) != 3:
            raise SaslError(f"Invalid SASL/PLAIN response: expected 3 tokens, got {len(parts)}")
        authzid, username, password = parts
        if not username:
            raise SaslAuthenticationError("Authentication failed: username not specified")
        if not password:
            raise SaslAuthenticationError("Authentication failed: password not specified")
        if not self._authenticate(username, password):
            raise SaslAuthenticationError("Authentication failed: Invalid username or password")
        if authzid and authzid != username:
            raise SaslAuthenticationError(
                "Authentication failed: Client requested an authorization id that is different "
                "from username"
            )
        self.authorization_id = username
        self.complete = True
        return b""


class PlainClient(SaslClient):
    """Kafka's PlainSaslClient: NUL username NUL password; the server answers empty."""

    mechanism = "PLAIN"

    def __init__(self, username: str, password: str):
        super().__init__()
        self._token = f"\0{username}\0{password}".encode()

    def initial(self) -> bytes:
        return self._token

    def evaluate(self, challenge: bytes) -> bytes:
        self.complete = True
        return b""

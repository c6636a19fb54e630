"""SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, as Kafka's
ScramSaslServer: no channel binding (gs2 header "n"), usernames with =2C/=3D escapes, the
credential looked up after the client-first message, at least 4096 iterations. The client side
(`ScramClient`) is what a broker uses on its own inter-broker connections.

Also the credential itself (`ScramCredential`): what Kafka stores in ZooKeeper under
`/config/users/<user>` as "salt=<b64>,stored_key=<b64>,server_key=<b64>,iterations=<n>".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from protocol.sasl import SaslAuthenticationError, SaslClient, SaslError, SaslServer

# Kafka's ScramMechanism: hash, and the fewest iterations a stored credential may have.
MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MIN_ITERATIONS = 4096
# Kafka's AlterUserScramCredentials bound (ControllerApis/ZkAdminManager).
MAX_ITERATIONS = 16384


@dataclass(frozen=True, slots=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def to_config(self) -> str:
        """Kafka's ScramCredentialUtils.credentialToString."""
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        return (f"salt={b64(self.salt)},stored_key={b64(self.stored_key)},"
                f"server_key={b64(self.server_key)},iterations={self.iterations}")  # fmt: skip

    @classmethod
    def from_config(cls, text: str) -> ScramCredential:
        """Parse Kafka's stored form (ValueError if it isn't one)."""
        fields = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
        try:
            return cls(
                base64.b64decode(fields["salt"], validate=True),
                base64.b64decode(fields["stored_key"], validate=True),
                base64.b64decode(fields["server_key"], validate=True),
                int(fields["iterations"]),
            )
        except (KeyError, ValueError) as e:
            raise ValueError(f"Invalid SCRAM credential: {e}") from None


def _hmac(hash_name: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hash_name).digest()


def salted_password(mechanism: str, password: bytes, salt: bytes, iterations: int) -> bytes:
    """Hi() of RFC 5802: PBKDF2 with the mechanism's HMAC."""
    return hashlib.pbkdf2_hmac(MECHANISMS[mechanism], password, salt, iterations)


def credential_from_salted(mechanism: str, salted: bytes, salt: bytes,
                           iterations: int) -> ScramCredential:  # fmt: skip
    """What the server keeps: StoredKey = H(HMAC(salted, "Client Key")), ServerKey."""
    h = MECHANISMS[mechanism]
    client_key = _hmac(h, salted, b"Client Key")
    return ScramCredential(
        salt, hashlib.new(h, client_key).digest(), _hmac(h, salted, b"Server Key"), iterations
    )


def new_credential(mechanism: str, password: str, iterations: int,
                   salt: bytes | None = None) -> ScramCredential:  # fmt: skip
    salt = salt if salt is not None else secrets.token_bytes(32)
    salted = salted_password(mechanism, password.encode(), salt, iterations)
    return credential_from_salted(mechanism, salted, salt, iterations)


_SASLNAME = r"(?:[\x01-\x2B\x2D-\x3C\x3E-\x7F]|=2C|=3D)+"
_PRINTABLE = r"[\x21-\x2B\x2D-\x7E]+"
_BASE64 = r"[A-Za-z0-9+/]*={0,2}"
_EXTENSIONS = r"(?:,[A-Za-z]+=[\x01-\x2B\x2D-\x7F]*)*"
_CLIENT_FIRST = re.compile(
    rf"n,(?:a=(?P<authzid>{_SASLNAME}))?,(?P<bare>n=(?P<saslname>{_SASLNAME}),"
    rf"r=(?P<nonce>{_PRINTABLE})(?P<extensions>{_EXTENSIONS}))"
)
_CLIENT_FINAL = re.compile(
    rf"(?P<without_proof>c=(?P<channel>{_BASE64}),r=(?P<nonce>{_PRINTABLE}){_EXTENSIONS}),"
    rf"p=(?P<proof>{_BASE64})"
)


def _server_nonce() -> str:
    """130 random bits in base 36, as Kafka's ScramFormatter.secureRandomString."""
    n = secrets.randbits(130)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def username(saslname: str) -> str:
    """RFC 5802 saslname -> username (=2C is a comma, =3D an equals sign)."""
    return saslname.replace("=2C", ",").replace("=3D", "=")


class ScramServer(SaslServer):
    def __init__(self, mechanism: str, lookup: Callable[[str], ScramCredential | None],
                 token_lookup: Callable[[str], tuple[ScramCredential, str, int] | None]
                 | None = None):  # fmt: skip
        """`lookup(username)`: the user's credential for this mechanism, or None.
        `token_lookup(token_id)`: (credential, owner, expiry ms) of a delegation token, for
        clients sending the `tokenauth=true` extension; None: tokens not accepted."""
        super().__init__()
        self.mechanism = mechanism
        self._hash = MECHANISMS[mechanism]
        self._lookup = lookup
        self._token_lookup = token_lookup
        self._state = "first"
        self._credential: ScramCredential | None = None
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self.extensions: dict[str, str] = {}
        self.token_expiry_ms: int | None = None

    def evaluate(self, token: bytes) -> bytes:
        try:
            if self._state == "first":
                return self._client_first(token)
            if self._state == "final":
                return self._client_final(token)
            raise SaslError(f"Unexpected challenge in Sasl server state {self._state}")
        except SaslError:
            self._state = "failed"
            self._credential = None
            raise

    def _client_first(self, token: bytes) -> bytes:
        text = token.decode("utf-8", "replace")
        m = _CLIENT_FIRST.fullmatch(text)
        if m is None:
            raise SaslError(f"Invalid SCRAM client first message format: {text[:100]!r}")
        extensions = m["extensions"]
        self.extensions = (
            dict(e.split("=", 1) for e in extensions[1:].split(",")) if extensions else {}
        )
        name = username(m["saslname"])
        if self.extensions.get("tokenauth", "").lower() == "true":
            found = self._token_lookup(name) if self._token_lookup is not None else None
            if found is None:
                raise SaslError(f"Token Authentication failed: Invalid tokenId : {name}")
            credential, owner, self.token_expiry_ms = found
            self.authorization_id = owner
        else:
            credential = self._lookup(name)
            self.authorization_id = name
        if credential is None:
            raise SaslError("Authentication failed: Invalid user credentials")
        authzid = m["authzid"]
        if authzid and username(authzid) != name:
            raise SaslAuthenticationError(
                "Authentication failed: Client requested an authorization id that is different "
                "from username"
            )
        if credential.iterations < MIN_ITERATIONS:
            raise SaslError(
                f"Iterations {credential.iterations} is less than the minimum {MIN_ITERATIONS} "
                f"for {self.mechanism}"
            )
        self._credential = credential
        self._nonce = m["nonce"] + _server_nonce()
        salt = base64.b64encode(credential.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={credential.iterations}"
        self._client_first_bare = m["bare"]
        self._state = "final"
        return self._server_first.encode()

    def _client_final(self, token: bytes) -> bytes:
        text = token.decode("utf-8", "replace")
        m = _CLIENT_FINAL.fullmatch(text)
        if m is None:
            raise SaslError("Invalid SCRAM client final message format")
        # Kafka 3.8.1-3.9's check (its CVE-2024-56128 fix): the nonce must end with the server's
        # whole nonce. librdkafka before 2.6.1 (Debian 12's kcat) sends its own nonce in front
        # of it once more; Kafka 4 wants equality and refuses those clients.
        if not m["nonce"].endswith(self._nonce):
            raise SaslError("Invalid client nonce in the final client message.")
        credential = self._credential
        auth_message = (
            f"{self._client_first_bare},{self._server_first},{m['without_proof']}".encode()
        )
        proof = base64.b64decode(m["proof"])
        signature = _hmac(self._hash, credential.stored_key, auth_message)
        if len(proof) != len(signature):
            raise SaslError("Invalid client credentials")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(
            hashlib.new(self._hash, client_key).digest(), credential.stored_key
        ):
            raise SaslError("Invalid client credentials")
        server_signature = _hmac(self._hash, credential.server_key, auth_message)
        self._credential = None
        self._state = "complete"
        self.complete = True
        return b"v=" + base64.b64encode(server_signature)

    def negotiated_property(self, name: str):
        if name == "CREDENTIAL.LIFETIME.MS":  # Kafka's SaslInternalConfigs key
            return self.token_expiry_ms
        return self.extensions.get(name)


def saslname(name: str) -> str:
    """username -> RFC 5802 saslname (the inverse of `username`)."""
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient(SaslClient):
    """Kafka's ScramSaslClient: client-first, client-final with the proof, then the server's
    signature checked (a server that can't prove it knows the credential is refused)."""

    def __init__(self, mechanism: str, username: str, password: str):
        super().__init__()
        self.mechanism = mechanism
        self._hash = MECHANISMS[mechanism]
        self._password = password.encode()
        self._nonce = _server_nonce()
        self._first_bare = f"n={saslname(username)},r={self._nonce}"
        self._auth_message = b""
        self._salted = b""

    def initial(self) -> bytes:
        return f"n,,{self._first_bare}".encode()

    def evaluate(self, challenge: bytes) -> bytes:
        text = challenge.decode("utf-8", "replace")
        if not self._auth_message:
            return self._client_final(text)
        attrs = dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)
        if "e" in attrs:
            raise SaslError(f"SCRAM authentication failed: {attrs['e']}")
        server_key = _hmac(self._hash, self._salted, b"Server Key")
        expected = _hmac(self._hash, server_key, self._auth_message)
        if not hmac.compare_digest(base64.b64decode(attrs.get("v", "")), expected):
            raise SaslError("Invalid server signature in the server final message")
        self.complete = True
        return b""

    def _client_final(self, server_first: str) -> bytes:
        attrs = dict(kv.split("=", 1) for kv in server_first.split(",") if "=" in kv)
        try:
            nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        except (KeyError, ValueError) as e:
            raise SaslError(f"Invalid SCRAM server first message: {e}") from None
        if not nonce.startswith(self._nonce) or iterations < MIN_ITERATIONS:
            raise SaslError("Invalid SCRAM server first message")
        self._salted = salted_password(self.mechanism, self._password, salt, iterations)
        without_proof = f"c=biws,r={nonce}"
        self._auth_message = f"{self._first_bare},{server_first},{without_proof}".encode()
        client_key = _hmac(self._hash, self._salted, b"Client Key")
        stored_key = hashlib.new(self._hash, client_key).digest()
        signature = _hmac(self._hash, stored_key, self._auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

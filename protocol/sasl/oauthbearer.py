"""SASL/OAUTHBEARER (RFC 7628), server side, as Kafka's OAuthBearerSaslServer (KIP-255).

The client's one message is a GS2 header and key/value pairs separated by 0x01:
``n,[a=<authzid>],\\x01auth=Bearer <token>\\x01[<key>=<value>\\x01]*\\x01``. The token (a JWT)
is handed to a validator; a token it refuses is answered, as RFC 7628 and Kafka do, with a
JSON error challenge (``{"status":"invalid_token"}``); the client acknowledges it with a lone
0x01 and only then fails with that JSON as the message.

Two validators, as Kafka ships them, both sans-io:
- `UnsecuredValidator` (Kafka's OAuthBearerUnsecuredValidatorCallbackHandler, the default): an
  unsigned JWS (``alg`` "none"), with `exp` required, `iat` optional, the principal in `sub`
  (or the configured claim), an optional required scope and a clock skew allowance.
- `JwksValidator` (Kafka's OAuthBearerValidatorCallbackHandler, KIP-768): a signed JWT (RS*,
  PS*, ES*) checked against a JSON Web Key Set, with `exp` and `iat` required, the expected
  audience and issuer when configured, and the clock skew of sasl.oauthbearer.clock.skew.seconds.

`OAuthBearerClient` is the client side a broker uses on its inter-broker connections, and
`unsecured_jwt` makes the token Kafka's OAuthBearerUnsecuredLoginCallbackHandler makes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol.sasl import SaslAuthenticationError, SaslClient, SaslError, SaslServer

SEPARATOR = "\x01"
# RFC 7628 / Kafka's OAuthBearerClientInitialResponse grammar: a saslname (no '=' or ',' but
# as =3D and =2C), key=value pairs of letters = printable ASCII and whitespace.
_INITIAL = re.compile(
    r"n,(?:a=(?P<authzid>(?:[\x02-\x2B\x2D-\x3C\x3E-\x7F]|=2C|=3D)+))?,\x01"
    r"(?P<kvpairs>(?:[A-Za-z]+=[\x21-\x7E \t\r\n]+\x01)*)\x01"
)
_AUTH = re.compile(r"(?P<scheme>\w+) +(?P<token>[-_.a-zA-Z0-9]+)")


class TokenRejected(Exception):
    """A token the validator refuses: `status` is the RFC 6750 error code for the challenge."""

    def __init__(self, description: str, status: str = "invalid_token", scope: str | None = None):
        super().__init__(description)
        self.status = status
        self.scope = scope


@dataclass(frozen=True)
class Token:
    """A validated token: whose it is, until when (ms since the epoch), and its scope."""

    principal: str
    lifetime_ms: int
    scope: frozenset[str] = field(default_factory=frozenset)
    start_ms: int | None = None


Validator = Callable[[str], Token]  # raises TokenRejected


def parse_initial_response(response: bytes) -> tuple[str, str, dict[str, str]]:
    """(authzid, token, extensions) of a client's initial response; SaslError if malformed."""
    try:
        text = response.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("Invalid OAUTHBEARER client first message: not UTF-8") from None
    m = _INITIAL.fullmatch(text)
    if m is None:
        raise SaslError("Invalid OAUTHBEARER client first message")
    authzid = (m.group("authzid") or "").replace("=2C", ",").replace("=3D", "=")
    pairs: dict[str, str] = {}
    for kv in m.group("kvpairs").split(SEPARATOR):
        if kv:
            key, _, value = kv.partition("=")
            pairs[key] = value
    auth = pairs.pop("auth", None)
    if auth is None:
        raise SaslError("Invalid OAUTHBEARER client first message: 'auth' not specified")
    am = _AUTH.fullmatch(auth)
    if am is None or am.group("scheme").lower() != "bearer":
        raise SaslError("Invalid OAUTHBEARER client first message: invalid 'auth' value")
    return authzid, am.group("token"), pairs


class OAuthBearerServer(SaslServer):
    mechanism = "OAUTHBEARER"

    def __init__(self, validate: Validator):
        super().__init__()
        self._validate = validate
        self._error: str | None = None
        self.token: Token | None = None

    def evaluate(self, token: bytes) -> bytes:
        if self.complete:
            raise SaslError("OAUTHBEARER authentication already complete")
        if token == SEPARATOR.encode() and self._error is not None:
            # The client acknowledged our error challenge: now fail, with it as the message.
            raise SaslAuthenticationError(self._error)
        self._error = None
        authzid, value, _extensions = parse_initial_response(token)
        try:
            valid = self._validate(value)
        except TokenRejected as e:
            self._error = error_challenge(e.status, e.scope)
            self.rejection = str(e)  # for the broker's log, never the client
            return self._error.encode()
        if authzid and authzid != valid.principal:
            raise SaslAuthenticationError(
                "Authentication failed: Client requested an authorization id that is different "
                "from the token's principal name"
            )
        self.token = valid
        self.authorization_id = valid.principal
        self.complete = True
        return b""

    def negotiated_property(self, name: str):
        # Kafka's SaslInternalConfigs.CREDENTIAL_LIFETIME_MS_SASL_NEGOTIATED_PROPERTY_KEY
        if name == "CREDENTIAL.LIFETIME.MS" and self.token is not None:
            return self.token.lifetime_ms
        return None


def error_challenge(status: str, scope: str | None = None) -> str:
    """Kafka's OAuthBearerSaslServer.jsonErrorResponse (RFC 7628 section 3.2.2)."""
    out = '{"status":"' + status + '"'
    if scope:
        out += ', "scope":"' + scope + '"'
    return out + "}"


# --- JWT reading -----------------------------------------------------------------------------


def b64url_decode(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenRejected("Invalid base64url encoding") from None


def split_jwt(token: str) -> tuple[dict, dict, bytes, bytes]:
    """(header, claims, signing input, signature) of a compact JWS."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected(f"Malformed compact serialization contains {len(parts) - 1} '.'")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise TokenRejected("Invalid JSON in the token's header or claims") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRejected("The token's header and claims must be JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), b64url_decode(parts[2])


def _number_claim(claims: dict, name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenRejected(f"Required claim missing: {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"The claim {name} must be a number: {value!r}")
    return float(value)


def _scope(claims: dict, claim: str) -> frozenset[str]:
    value = claims.get(claim)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise TokenRejected(f"The claim {claim} must be a string or a list of strings")


def _principal(claims: dict, claim: str) -> str:
    value = claims.get(claim)
    if not isinstance(value, str) or not value.strip():
        raise TokenRejected(f"No value for the principal claim {claim}")
    return value


# --- the two validators ----------------------------------------------------------------------


@dataclass
class UnsecuredValidator:
    """Kafka's OAuthBearerUnsecuredValidatorCallbackHandler, configured from the JAAS options
    unsecuredValidatorPrincipalClaimName / ScopeClaimName / RequiredScope /
    AllowableClockSkewMs."""

    now_ms: Callable[[], int]
    principal_claim: str = "sub"
    scope_claim: str = "scope"
    required_scope: frozenset[str] = frozenset()
    clock_skew_ms: int = 0

    def __call__(self, token: str) -> Token:
        header, claims, _, signature = split_jwt(token)
        if header.get("alg") != "none" or signature:
            raise TokenRejected("Unsecured token must have alg none and no signature")
        # Claims in seconds, compared in whole ms as Kafka's OAuthBearerValidationUtils
        # (Math.round(seconds * 1000)).
        exp_ms = round(_number_claim(claims, "exp", required=True) * 1000)
        iat = _number_claim(claims, "iat", required=False)
        iat_ms = None if iat is None else round(iat * 1000)
        now = self.now_ms()
        if exp_ms + self.clock_skew_ms <= now:
            raise TokenRejected(f"The indicated time ({exp_ms} ms) is in the past")
        if iat_ms is not None and iat_ms - self.clock_skew_ms > now:
            raise TokenRejected(f"The indicated time ({iat_ms} ms) is in the future")
        principal = _principal(claims, self.principal_claim)
        scope = _scope(claims, self.scope_claim)
        missing = self.required_scope - scope
        if missing:
            raise TokenRejected(
                f"The provided scope ({sorted(scope)}) was missing a required scope "
                f"({sorted(missing)})",
                "insufficient_scope",
                " ".join(sorted(self.required_scope)),
            )
        return Token(principal, exp_ms, scope, iat_ms)


@dataclass
class JwksValidator:
    """Kafka's OAuthBearerValidatorCallbackHandler (KIP-768): a signed JWT whose key (by `kid`,
    or the only key of the set) is in `jwks` (a JSON Web Key Set, parsed)."""

    jwks: dict
    now_ms: Callable[[], int]
    expected_audience: frozenset[str] = frozenset()
    expected_issuer: str | None = None
    sub_claim: str = "sub"
    scope_claim: str = "scope"
    clock_skew_s: int = 30

    def __call__(self, token: str) -> Token:
        header, claims, signing_input, signature = split_jwt(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg == "none":
            raise TokenRejected("The token must be signed (alg none is not allowed)")
        verify_signature(self._key(header.get("kid"), alg), alg, signing_input, signature)
        now_s = self.now_ms() / 1000
        skew = self.clock_skew_s
        exp = _number_claim(claims, "exp", required=True)
        iat = _number_claim(claims, "iat", required=True)
        if now_s >= exp + skew:
            raise TokenRejected(f"The JWT is no longer valid: now {now_s:.0f} >= exp {exp:.0f}")
        if iat > now_s + skew:
            raise TokenRejected(f"The JWT was issued in the future: iat {iat:.0f}")
        nbf = _number_claim(claims, "nbf", required=False)
        if nbf is not None and now_s + skew < nbf:
            raise TokenRejected(f"The JWT is not yet valid: nbf {nbf:.0f}")
        if self.expected_issuer is not None and claims.get("iss") != self.expected_issuer:
            raise TokenRejected(f"Issuer (iss) claim value ({claims.get('iss')}) doesn't match "
                                f"the expected value ({self.expected_issuer})")  # fmt: skip
        if self.expected_audience:
            aud = claims.get("aud")
            auds = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
            if not auds & self.expected_audience:
                raise TokenRejected(f"Audience (aud) claim {aud} doesn't contain an acceptable "
                                    f"identifier {sorted(self.expected_audience)}")  # fmt: skip
        principal = _principal(claims, self.sub_claim)
        return Token(principal, int(exp * 1000), _scope(claims, self.scope_claim), int(iat * 1000))

    def _key(self, kid, alg: str) -> dict:
        keys = [k for k in self.jwks.get("keys", []) if isinstance(k, dict)]
        usable = [k for k in keys if k.get("use", "sig") == "sig" and k.get("alg", alg) == alg]
        if kid is not None:
            usable = [k for k in usable if k.get("kid") == kid]
        elif len(usable) != 1:
            usable = []
        if not usable:
            raise TokenRejected(f"No key in the JWKS matches kid {kid!r} and alg {alg}")
        return usable[0]


_HASHES = {"256": "SHA256", "384": "SHA384", "512": "SHA512"}


def verify_signature(jwk: dict, alg: str, signing_input: bytes, signature: bytes) -> None:
    """Check a JWS signature (RS*, PS*, ES*) with a JSON Web Key; TokenRejected if it fails."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    family, bits = alg[:2], alg[2:]
    if family not in ("RS", "PS", "ES") or bits not in _HASHES:
        raise TokenRejected(f"Unsupported JWS algorithm {alg}")
    digest = getattr(hashes, _HASHES[bits])()
    n = lambda name: int.from_bytes(b64url_decode(jwk.get(name, "")), "big")  # noqa: E731
    try:
        if family in ("RS", "PS"):
            if jwk.get("kty") != "RSA":
                raise TokenRejected(f"Key type {jwk.get('kty')} can't verify {alg}")
            key = rsa.RSAPublicNumbers(n("e"), n("n")).public_key()
            pad = (
                padding.PKCS1v15()
                if family == "RS"
                else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            )
            key.verify(signature, signing_input, pad, digest)
        else:
            curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
            curve = curves.get(jwk.get("crv"))
            if jwk.get("kty") != "EC" or curve is None:
                raise TokenRejected(f"Key {jwk.get('kty')}/{jwk.get('crv')} can't verify {alg}")
            key = ec.EllipticCurvePublicNumbers(n("x"), n("y"), curve).public_key()
            half = len(signature) // 2
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            key.verify(der, signing_input, ec.ECDSA(digest))
    except InvalidSignature:
        raise TokenRejected("JWT signature verification failed") from None
    except ValueError as e:
        raise TokenRejected(f"Invalid key or signature: {e}") from None


def unsecured_jwt(claims: dict) -> str:
    """An unsigned JWS (alg none), as Kafka's unsecured login callback handler makes them."""

    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}."


class OAuthBearerClient(SaslClient):
    """Kafka's OAuthBearerSaslClient: the token in the initial response; an error challenge
    from the server is acknowledged with 0x01 (RFC 7628), after which the server fails."""

    mechanism = "OAUTHBEARER"

    def __init__(self, token: str):
        super().__init__()
        self._token = token

    def initial(self) -> bytes:
        return f"n,,{SEPARATOR}auth=Bearer {self._token}{SEPARATOR}{SEPARATOR}".encode()

    def evaluate(self, challenge: bytes) -> bytes:
        if challenge:
            return SEPARATOR.encode()
        self.complete = True
        return b""

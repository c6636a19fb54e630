"""SASL/OAUTHBEARER on a listener: which validator Kafka's configuration chooses.

- No `sasl.server.callback.handler.class` (Kafka's default): unsecured JWTs, validated as
  Kafka's OAuthBearerUnsecuredValidatorCallbackHandler with the OAuthBearerLoginModule's JAAS
  options (unsecuredValidatorPrincipalClaimName, ...ScopeClaimName, ...RequiredScope,
  ...AllowableClockSkewMs). For development, as in Kafka.
- Kafka's OAuthBearerValidatorCallbackHandler (KIP-768): signed JWTs checked against the JSON
  Web Key Set at `sasl.oauthbearer.jwks.endpoint.url` (a file: URL, or http(s) read at start-up),
  with sasl.oauthbearer.expected.audience / .expected.issuer / .sub.claim.name /
  .scope.claim.name / .clock.skew.seconds.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

from protocol.sasl.oauthbearer import (
    JwksValidator,
    OAuthBearerServer,
    UnsecuredValidator,
    Validator,
)
from pykbroker.config import ConfigError
from pykbroker.security.sasl import MechanismContext, ServerFactory, sasl_mechanism

LOGIN_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
JWKS_HANDLERS = {
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
    "org.apache.kafka.common.security.oauthbearer.secured.OAuthBearerValidatorCallbackHandler",
}
UNSECURED_HANDLER = (
    "org.apache.kafka.common.security.oauthbearer.internals.unsecured."
    "OAuthBearerUnsecuredValidatorCallbackHandler"
)


def _now_ms() -> int:
    return int(time.time() * 1000)


@sasl_mechanism("OAUTHBEARER")
def _oauthbearer(ctx: MechanismContext) -> ServerFactory:
    validator = listener_validator(ctx)
    return lambda: OAuthBearerServer(validator)


def listener_validator(ctx: MechanismContext) -> Validator:
    """The token validator a listener's OAUTHBEARER configuration chooses (the web console
    checks `Authorization: Bearer` tokens with the same one)."""
    handler = ctx.get("sasl.server.callback.handler.class")
    if handler in JWKS_HANDLERS:
        validator = _jwks_validator(ctx)
    elif handler in (None, "", UNSECURED_HANDLER):
        validator = _unsecured_validator(ctx)
    else:
        raise ConfigError(
            f"Listener {ctx.listener}: OAUTHBEARER callback handler {handler} is not supported "
            f"(use {sorted(JWKS_HANDLERS)[0]} or leave it unset for unsecured tokens)"
        )
    return validator


def _unsecured_validator(ctx: MechanismContext) -> UnsecuredValidator:
    entry = ctx.jaas(LOGIN_MODULE)
    options = entry.options if entry is not None else {}
    try:
        skew = int(options.get("unsecuredValidatorAllowableClockSkewMs", "0"))
    except ValueError:
        raise ConfigError("unsecuredValidatorAllowableClockSkewMs must be an integer") from None
    if skew < 0:
        raise ConfigError("unsecuredValidatorAllowableClockSkewMs must not be negative")
    return UnsecuredValidator(
        now_ms=_now_ms,
        principal_claim=options.get("unsecuredValidatorPrincipalClaimName", "sub") or "sub",
        scope_claim=options.get("unsecuredValidatorScopeClaimName", "scope") or "scope",
        required_scope=frozenset(options.get("unsecuredValidatorRequiredScope", "").split()),
        clock_skew_ms=skew,
    )


def _jwks_validator(ctx: MechanismContext) -> JwksValidator:
    try:
        import cryptography  # noqa: F401  (signature checks)
    except ImportError:
        raise ConfigError(
            "OAuthBearerValidatorCallbackHandler checks signatures with the cryptography "
            "package: pip install cryptography"
        ) from None
    url = ctx.get("sasl.oauthbearer.jwks.endpoint.url")
    if not url:
        raise ConfigError(
            f"Listener {ctx.listener}: OAuthBearerValidatorCallbackHandler needs "
            "sasl.oauthbearer.jwks.endpoint.url"
        )
    return JwksValidator(
        jwks=load_jwks(url),
        now_ms=_now_ms,
        expected_audience=frozenset(ctx.get("sasl.oauthbearer.expected.audience") or ()),
        expected_issuer=ctx.get("sasl.oauthbearer.expected.issuer") or None,
        sub_claim=ctx.get("sasl.oauthbearer.sub.claim.name"),
        scope_claim=ctx.get("sasl.oauthbearer.scope.claim.name"),
        clock_skew_s=ctx.get("sasl.oauthbearer.clock.skew.seconds"),
    )


def load_jwks(url: str) -> dict:
    """A JSON Web Key Set from a file: URL (as Kafka allows since 3.1) or an http(s) one."""
    parsed = urllib.parse.urlparse(url)
    try:
        if parsed.scheme == "file":
            with open(urllib.parse.unquote(parsed.path), "rb") as f:
                data = f.read()
        elif parsed.scheme in ("http", "https"):
            with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (configured URL)
                data = r.read()
        else:
            raise ConfigError(f"sasl.oauthbearer.jwks.endpoint.url: unsupported URL {url}")
        jwks = json.loads(data)
    except (OSError, ValueError) as e:
        raise ConfigError(f"sasl.oauthbearer.jwks.endpoint.url {url}: {e}") from None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ConfigError(f"sasl.oauthbearer.jwks.endpoint.url {url}: not a JSON Web Key Set")
    return jwks

"""SaslHandshake and SaslAuthenticate once a connection needs no (more) authentication.

Before authentication on a SASL listener these requests never reach the registry: the
connection's SaslAuthenticator (pykbroker/security/sasl.py) answers them. Reaching here means
a PLAINTEXT/SSL listener, or a SASL connection already authenticated: Kafka's KafkaApis answers
ILLEGAL_SASL_STATE. Registered so that ApiVersions advertises the versions the authenticator
serves.
"""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from pykbroker.security.sasl import AUTHENTICATE_VERSIONS, HANDSHAKE_VERSIONS

from . import REGISTRY


@REGISTRY.register(ApiKey.SASL_HANDSHAKE, *HANDSHAKE_VERSIONS)
def sasl_handshake(ctx, request) -> dict:
    return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "mechanisms": []}


@REGISTRY.register(ApiKey.SASL_AUTHENTICATE, *AUTHENTICATE_VERSIONS)
def sasl_authenticate(ctx, request) -> dict:
    return {
        "error_code": ErrorCode.ILLEGAL_SASL_STATE,
        "error_message": "SaslAuthenticate request received after successful authentication",
        "auth_bytes": b"",
    }

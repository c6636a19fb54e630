"""SASL on SASL_PLAINTEXT listeners: SaslHandshake v0-1, SaslAuthenticate v0-2, PLAIN and
SCRAM, failed authentication as Kafka does it. Wire-level checks through tests/helpers.RawClient
(expected values are Kafka's: error codes, messages, behaviour), client libraries elsewhere."""

from __future__ import annotations

import time

import pytest
from helpers import RawClient
from security_helpers import authenticate, handshake, sasl_plaintext_overrides, sessions

from protocol.apis import ApiKey

# Kafka's error codes
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
PLAIN_FAILED = "Authentication failed: Invalid username or password"  # PlainSaslServer


@pytest.fixture
def plain_broker(make_broker):
    return make_broker(sasl_plaintext_overrides("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"))


def test_plain_handshake_authenticate_then_requests_served(plain_broker):
    client = RawClient(plain_broker.port)
    try:
        assert client.request(ApiKey.API_VERSIONS, 3, {}).error_code == 0
        r = handshake(client, "PLAIN")
        assert r.error_code == 0
        assert list(r.mechanisms) == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        r = authenticate(client, b"\0alice\0alice-secret")
        assert (r.error_code, r.error_message, bytes(r.auth_bytes)) == (0, None, b"")
        assert r.session_lifetime_ms == 0  # no re-authentication asked for
        (session,) = sessions(plain_broker)
        assert str(session.principal) == "User:alice"
        assert session.sasl_mechanism == "PLAIN"
        assert session.security_protocol == "SASL_PLAINTEXT"
        assert client.request(ApiKey.METADATA, 9, {"topics": []}).brokers
        # After authentication Kafka's KafkaApis answers ILLEGAL_SASL_STATE.
        r = authenticate(client, b"\0alice\0alice-secret")
        assert r.error_code == ILLEGAL_SASL_STATE
        assert (
            r.error_message == "SaslAuthenticate request received after successful authentication"
        )
    finally:
        client.close()


@pytest.mark.parametrize("token", [b"\0alice\0wrong", b"\0mallory\0alice-secret"])
def test_plain_failure_answers_58_after_the_delay_then_closes(plain_broker, token):
    client = RawClient(plain_broker.port)
    try:
        assert handshake(client, "PLAIN").error_code == 0
        started = time.monotonic()
        r = authenticate(client, token)
        # connection.failed.authentication.delay.ms defaults to 100 in Kafka
        assert time.monotonic() - started >= 0.1
        assert (r.error_code, r.error_message) == (SASL_AUTHENTICATION_FAILED, PLAIN_FAILED)
        assert client.recv_frame() is None  # closed
    finally:
        client.close()


def test_failed_authentication_delay_configurable(make_broker):
    b = make_broker(sasl_plaintext_overrides(**{"connection.failed.authentication.delay.ms": "0"}))
    client = RawClient(b.port)
    try:
        assert handshake(client, "PLAIN").error_code == 0
        assert authenticate(client, b"\0alice\0nope").error_code == SASL_AUTHENTICATION_FAILED
        assert client.recv_frame() is None
    finally:
        client.close()


def test_nothing_but_sasl_before_authentication(plain_broker):
    client = RawClient(plain_broker.port)
    try:
        # Kafka: IllegalSaslStateException "Unexpected Kafka request of type METADATA during
        # SASL handshake." and the connection is closed, nothing answered.
        assert client.request(ApiKey.METADATA, 9, {"topics": []}) is None
    finally:
        client.close()
    client = RawClient(plain_broker.port)
    try:
        assert handshake(client, "PLAIN").error_code == 0
        assert client.request(ApiKey.METADATA, 9, {"topics": []}) is None
    finally:
        client.close()


def test_unsupported_mechanism(plain_broker):
    client = RawClient(plain_broker.port)
    try:
        r = handshake(client, "GSSAPI")
        assert r.error_code == UNSUPPORTED_SASL_MECHANISM
        assert list(r.mechanisms) == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        assert client.recv_frame() is None
    finally:
        client.close()


def test_plain_authorization_id_must_be_the_user(plain_broker):
    client = RawClient(plain_broker.port)
    try:
        assert handshake(client, "PLAIN").error_code == 0
        r = authenticate(client, b"admin\0alice\0alice-secret")
        assert r.error_code == SASL_AUTHENTICATION_FAILED
        assert r.error_message == ("Authentication failed: Client requested an authorization id "
                                   "that is different from username")  # fmt: skip
    finally:
        client.close()


def test_handshake_v0_then_bare_tokens(plain_broker):
    """SaslHandshake v0: the tokens follow as bare size-prefixed frames (no Kafka header)."""
    client = RawClient(plain_broker.port)
    try:
        assert handshake(client, "PLAIN", version=0).error_code == 0
        token = b"\0alice\0alice-secret"
        client.send_raw(len(token).to_bytes(4, "big") + token)
        assert client.recv_frame() == b""  # PLAIN's empty server token, size-prefixed
        assert client.request(ApiKey.METADATA, 9, {"topics": []}).brokers
    finally:
        client.close()
    client = RawClient(plain_broker.port)
    try:
        assert handshake(client, "PLAIN", version=0).error_code == 0
        token = b"\0alice\0bad"
        client.send_raw(len(token).to_bytes(4, "big") + token)
        assert client.recv_frame() is None  # v0 has no error response: closed
    finally:
        client.close()


def test_oversized_request_before_authentication_closes(plain_broker):
    client = RawClient(plain_broker.port)
    try:
        # sasl.server.max.receive.size: 524288 by default
        big = b"\0alice\0" + b"x" * 600_000
        assert handshake(client, "PLAIN").error_code == 0
        assert authenticate(client, big) is None
    finally:
        client.close()


def test_an_oversized_size_prefix_before_authentication_closes_at_once(plain_broker):
    """The limit applies to the size prefix, before any of the frame is read or held (Kafka's
    NetworkReceive with saslAuthRequestMaxReceiveSize): a client claiming 50 MB and sending
    nothing more is closed, not left holding request memory. After authentication the usual
    socket.request.max.bytes applies again."""
    client = RawClient(plain_broker.port)
    try:
        client.send_raw((50_000_000).to_bytes(4, "big"))
        client.sock.settimeout(5)
        assert client.sock.recv(1) == b""  # closed (not waiting for the rest: a timeout)
    finally:
        client.close()
    client = RawClient(plain_broker.port)
    try:
        assert handshake(client, "PLAIN").error_code == 0
        assert authenticate(client, b"\0alice\0alice-secret").error_code == 0
        body = {"topics": [{"name": "x" * 200, "topic_id": None}] * 3000,
                "allow_auto_topic_creation": False,
                "include_topic_authorized_operations": False}  # fmt: skip
        r = client.request(ApiKey.METADATA, 12, body)  # ~600 KB, past the pre-auth limit
        assert r is not None and len(r.topics) == 3000
    finally:
        client.close()


def test_plaintext_listener_answers_illegal_sasl_state(broker):
    client = RawClient(broker.port)
    try:
        assert handshake(client, "PLAIN").error_code == ILLEGAL_SASL_STATE
    finally:
        client.close()

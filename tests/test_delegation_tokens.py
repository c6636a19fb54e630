"""Delegation tokens (KIP-48, KIP-373) over a SASL_PLAINTEXT listener, with raw frames: create
as alice (PLAIN), authenticate with the token over SCRAM (`tokenauth=true`) and act as alice,
renew, describe, expire, and Kafka's refusals with their error codes. The HMAC is checked
against HMAC-SHA512(secret, token id) computed here, as Kafka defines it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from helpers import RawClient
from security_helpers import (
    authenticate,
    handshake,
    sasl_plaintext_overrides,
    scram_client_exchange,
    sessions,
)

from protocol.apis import ApiKey

SECRET = "cluster-wide-token-secret"
# Kafka's error codes and defaults
NOT_FOUND, OWNER_MISMATCH, REQUEST_NOT_ALLOWED, AUTH_DISABLED = 62, 63, 64, 61
INVALID_PRINCIPAL_TYPE, SASL_AUTHENTICATION_FAILED = 67, 58
DAY_MS, WEEK_MS = 86_400_000, 604_800_000


@pytest.fixture
def broker(make_broker):
    return make_broker(sasl_plaintext_overrides("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
                                                **{"delegation.token.secret.key": SECRET}))  # fmt: skip


def plain_client(port: int, user: str) -> RawClient:
    client = RawClient(port)
    assert handshake(client, "PLAIN").error_code == 0
    assert authenticate(client, f"\0{user}\0{user}-secret".encode()).error_code == 0
    return client


def token_client(port: int, token_id: str, mac: bytes, mechanism: str = "SCRAM-SHA-256"):
    client = RawClient(port)
    assert handshake(client, mechanism).error_code == 0
    r = scram_client_exchange(client, mechanism, token_id, base64.b64encode(mac).decode(),
                              extensions=",tokenauth=true")  # fmt: skip
    return client, r


def create(client: RawClient, renewers=(), max_lifetime_ms=-1, version=3, owner=None):
    body = {"owner_principal_type": owner and "User", "owner_principal_name": owner,
            "renewers": [{"principal_type": t, "principal_name": n} for t, n in renewers],
            "max_lifetime_ms": max_lifetime_ms}  # fmt: skip
    return client.request(ApiKey.CREATE_DELEGATION_TOKEN, version, body)


def test_create_authenticate_renew_describe_expire(broker):
    alice = plain_client(broker.port, "alice")
    before = int(time.time() * 1000)
    r = create(alice, renewers=[("User", "bob")])
    assert r.error_code == 0
    assert (r.principal_type, r.principal_name) == ("User", "alice")
    assert (r.token_requester_principal_type, r.token_requester_principal_name) == ("User", "alice")
    assert bytes(r.hmac) == hmac.new(SECRET.encode(), r.token_id.encode(), hashlib.sha512).digest()
    assert before <= r.issue_timestamp_ms <= int(time.time() * 1000)
    assert r.expiry_timestamp_ms == r.issue_timestamp_ms + DAY_MS  # delegation.token.expiry.time.ms
    assert r.max_timestamp_ms == r.issue_timestamp_ms + WEEK_MS  # delegation.token.max.lifetime.ms
    token_id, mac = r.token_id, bytes(r.hmac)

    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        client, auth = token_client(broker.port, token_id, mac, mechanism)
        assert auth.error_code == 0
        assert any(str(s.principal) == "User:alice" and s.principal.token_authenticated
                   for s in sessions(broker))  # fmt: skip
        # A token can't be used to get more tokens (Kafka's allowTokenRequests).
        assert create(client).error_code == REQUEST_NOT_ALLOWED
        client.close()

    admin = plain_client(broker.port, "admin")
    try:
        # Only the owner, the requester or a renewer may renew or expire.
        renew = {"hmac": mac, "renew_period_ms": 1000}
        assert admin.request(ApiKey.RENEW_DELEGATION_TOKEN, 2, renew).error_code == OWNER_MISMATCH
        r = alice.request(ApiKey.RENEW_DELEGATION_TOKEN, 2, renew)
        assert r.error_code == 0 and 0 < r.expiry_timestamp_ms - int(time.time() * 1000) <= 1000
        unknown = {"hmac": b"x" * 64, "renew_period_ms": 1000}
        assert alice.request(ApiKey.RENEW_DELEGATION_TOKEN, 2, unknown).error_code == NOT_FOUND
        r = alice.request(ApiKey.RENEW_DELEGATION_TOKEN, 1, {"hmac": mac, "renew_period_ms": -1})
        assert r.error_code == 0

        d = alice.request(ApiKey.DESCRIBE_DELEGATION_TOKEN, 3, {"owners": None})
        assert d.error_code == 0 and [t.token_id for t in d.tokens] == [token_id]
        (t,) = d.tokens
        assert (t.principal_name, bytes(t.hmac)) == ("alice", mac)
        assert [(x.principal_type, x.principal_name) for x in t.renewers] == [("User", "bob")]
        mine = {"owners": [{"principal_type": "User", "principal_name": "admin"}]}
        assert admin.request(ApiKey.DESCRIBE_DELEGATION_TOKEN, 2, mine).tokens == []

        r = alice.request(ApiKey.EXPIRE_DELEGATION_TOKEN, 2,
                          {"hmac": mac, "expiry_time_period_ms": -1})  # fmt: skip
        assert r.error_code == 0
        assert alice.request(ApiKey.DESCRIBE_DELEGATION_TOKEN, 3, {"owners": None}).tokens == []
    finally:
        admin.close()
        alice.close()
    client, auth = token_client(broker.port, token_id, mac)
    assert auth.error_code == SASL_AUTHENTICATION_FAILED  # an expired token authenticates nobody
    client.close()


def test_refusals(broker, make_broker):
    alice = plain_client(broker.port, "alice")
    try:
        assert create(alice, renewers=[("Group", "ops")]).error_code == INVALID_PRINCIPAL_TYPE
        r = create(alice, max_lifetime_ms=3_600_000, version=1)  # a shorter lifetime is kept
        assert r.error_code == 0 and r.max_timestamp_ms - r.issue_timestamp_ms == 3_600_000
        assert r.expiry_timestamp_ms == r.max_timestamp_ms
    finally:
        alice.close()
    off = make_broker(sasl_plaintext_overrides("PLAIN"))  # no delegation.token.secret.key
    client = plain_client(off.port, "alice")
    try:
        assert create(client).error_code == AUTH_DISABLED
        d = client.request(ApiKey.DESCRIBE_DELEGATION_TOKEN, 1, {"owners": None})
        assert d.error_code == AUTH_DISABLED
    finally:
        client.close()
    plaintext = make_broker({"delegation.token.secret.key": SECRET})
    client = RawClient(plaintext.port)
    try:
        assert create(client).error_code == REQUEST_NOT_ALLOWED  # never over PLAINTEXT
    finally:
        client.close()


def test_tokens_survive_a_restart(make_broker, tmp_path):
    overrides = sasl_plaintext_overrides("PLAIN,SCRAM-SHA-512",
                                         **{"delegation.token.secret.key": SECRET})  # fmt: skip
    b = make_broker(overrides, data_dir=str(tmp_path / "d"))
    alice = plain_client(b.port, "alice")
    r = create(alice)
    alice.close()
    b.stop()
    b2 = make_broker(overrides, data_dir=str(tmp_path / "d"))
    client, auth = token_client(b2.port, r.token_id, bytes(r.hmac), "SCRAM-SHA-512")
    assert auth.error_code == 0
    client.close()

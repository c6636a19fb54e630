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


def test_kafka_delegation_tokens_tool(broker, tmp_path):
    """The tool as Kafka's docs run it, over SASL/PLAIN from a --command-config file."""
    import subprocess
    import sys

    config = tmp_path / "alice.properties"
    config.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="alice" password="alice-secret";\n'
    )
    tool = [sys.executable, "-m", "pykbroker.cli.delegation_tokens",
            "--bootstrap-server", f"127.0.0.1:{broker.port}", "--command-config", str(config)]  # fmt: skip

    def run(*args: str) -> str:
        done = subprocess.run(tool + list(args), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = run("--create", "--max-life-time-period", "-1", "--renewer-principal", "User:bob")
    lines = out.splitlines()
    assert lines[0] == ("Calling create token operation with renewers :[User:bob] , "
                        "max-life-time-period :-1")  # fmt: skip
    assert lines[1].startswith("Created delegation token with tokenId : ")
    token_id = lines[1].split(" : ")[1]
    header = [line for line in lines if line.startswith("TOKENID")][0].split()
    assert header == ["TOKENID", "HMAC", "OWNER", "REQUESTER", "RENEWERS", "ISSUEDATE",
                      "EXPIRYDATE", "MAXDATE"]  # fmt: skip
    row = [line for line in lines if line.startswith(token_id)][0].split()
    mac = row[1]
    assert base64.b64decode(mac) == hmac.new(SECRET.encode(), token_id.encode(),
                                             hashlib.sha512).digest()  # fmt: skip
    assert row[2:5] == ["User:alice", "User:alice", "[User:bob]"]

    out = run("--describe")
    assert out.splitlines()[:2] == ["Calling describe token operation for current user.",
                                    "Total number of tokens : 1"]  # fmt: skip
    out = run("--renew", "--hmac", mac, "--renew-time-period", "-1")
    assert out.splitlines()[1].startswith("Completed renew operation. New expiry date : ")
    out = run("--expire", "--hmac", mac, "--expiry-time-period", "-1")
    assert out.splitlines()[1].startswith("Completed expire operation. New expiry date : ")
    assert "Total number of tokens : 0" in run("--describe", "--owner-principal", "User:alice")

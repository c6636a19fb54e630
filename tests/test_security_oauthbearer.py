"""SASL/OAUTHBEARER (RFC 7628, Kafka's KIP-255 and KIP-768): the sans-io server and its two
validators driven directly, the wire exchange (a refused token is answered with RFC 7628's JSON
error challenge, then SASL_AUTHENTICATION_FAILED once the client acknowledges it), and real
clients: librdkafka's built-in unsecured JWTs, and kafka-python / aiokafka with JWTs signed by a
key made here, checked against a JWKS file (Kafka's OAuthBearerValidatorCallbackHandler)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import pytest
from helpers import RawClient
from security_helpers import authenticate, handshake, sessions

from protocol.sasl import SaslAuthenticationError, SaslError
from protocol.sasl.oauthbearer import (
    JwksValidator,
    OAuthBearerServer,
    TokenRejected,
    UnsecuredValidator,
    parse_initial_response,
)

SASL_AUTHENTICATION_FAILED = 58  # Kafka's error code
NOW_MS = 1_800_000_000_000


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsecured_jwt(claims: dict) -> str:
    """A JWT as librdkafka's and Kafka's unsecured login callbacks make them."""
    header = b64url(b'{"alg":"none"}')
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def initial_response(token: str, authzid: str = "", **extensions: str) -> bytes:
    ext = "".join(f"{k}={v}\x01" for k, v in extensions.items())
    return f"n,{'a=' + authzid if authzid else ''},\x01auth=Bearer {token}\x01{ext}\x01".encode()


class SigningKey:
    """An RSA or EC key made for the test, its JWKS entry and a signer of JWTs."""

    def __init__(self, kind: str = "RS256", kid: str = "k1"):
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        self.alg, self.kid = kind, kid
        if kind.startswith("ES"):
            self.key = ec.generate_private_key(ec.SECP256R1())
            nums = self.key.public_key().public_numbers()
            self.jwk = {"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": kind,
                        "x": b64url(nums.x.to_bytes(32, "big")),
                        "y": b64url(nums.y.to_bytes(32, "big"))}  # fmt: skip
        else:
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            nums = self.key.public_key().public_numbers()
            self.jwk = {"kty": "RSA", "kid": kid, "use": "sig", "alg": kind,
                        "n": b64url(nums.n.to_bytes(256, "big")),
                        "e": b64url(nums.e.to_bytes(3, "big"))}  # fmt: skip

    def jwt(self, claims: dict) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

        header = {"alg": self.alg, "typ": "JWT", "kid": self.kid}
        signing_input = (
            f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        if self.alg.startswith("ES"):
            der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
            r, s = utils.decode_dss_signature(der)
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


def claims(sub: str = "alice", exp_in: float = 3600, iat_in: float = 0, now_ms=NOW_MS, **more):
    now = now_ms // 1000  # whole seconds, as token issuers (and librdkafka) write them
    return {"sub": sub, "exp": now + exp_in, "iat": now + iat_in, **more}


# --- the sans-io pieces ----------------------------------------------------------------------


def test_initial_response_grammar():
    assert parse_initial_response(initial_response("a.b.c")) == ("", "a.b.c", {})
    assert parse_initial_response(initial_response("a.b.c", "alice", traceId="123")) == (
        "alice", "a.b.c", {"traceId": "123"})  # fmt: skip
    for bad in (b"", b"n,,\x01auth=Bearer a.b.c\x01",  # no final separator
                b"y,,\x01auth=Bearer a.b.c\x01\x01",  # channel binding flag
                b"n,,\x01auth=Basic dXNlcg==\x01\x01",  # not a bearer token
                b"n,,\x01\x01"):  # fmt: skip
        with pytest.raises(SaslError):
            parse_initial_response(bad)


def test_unsecured_validator_as_kafkas_default():
    v = UnsecuredValidator(now_ms=lambda: NOW_MS)
    token = v(unsecured_jwt(claims(scope="a b")))
    assert (token.principal, token.lifetime_ms, token.scope) == (
        "alice", NOW_MS + 3_600_000, frozenset({"a", "b"}))  # fmt: skip
    for bad in (claims(exp_in=-1), claims(iat_in=60), {"sub": "alice"},
                {"exp": NOW_MS / 1000 + 60}):  # fmt: skip
        with pytest.raises(TokenRejected) as e:
            v(unsecured_jwt(bad))
        assert e.value.status == "invalid_token"
    skewed = UnsecuredValidator(now_ms=lambda: NOW_MS, clock_skew_ms=5000)
    assert skewed(unsecured_jwt(claims(exp_in=-1))).principal == "alice"
    scoped = UnsecuredValidator(now_ms=lambda: NOW_MS, required_scope=frozenset({"kafka"}))
    with pytest.raises(TokenRejected) as e:
        scoped(unsecured_jwt(claims(scope="other")))
    assert (e.value.status, e.value.scope) == ("insufficient_scope", "kafka")
    with pytest.raises(TokenRejected):  # a signed token is not an unsecured one
        v(SigningKey().jwt(claims()))


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_jwks_validator_checks_signature_time_audience_issuer(alg):
    key, other = SigningKey(alg), SigningKey(alg)
    v = JwksValidator({"keys": [key.jwk]}, now_ms=lambda: NOW_MS,
                      expected_audience=frozenset({"kafka"}), expected_issuer="https://idp")  # fmt: skip
    good = claims(aud="kafka", iss="https://idp")
    assert v(key.jwt(good)).principal == "alice"
    rejected = [
        other.jwt(good),  # signed by a key not in the set
        key.jwt(claims(aud="other", iss="https://idp")),
        key.jwt(claims(aud="kafka", iss="https://elsewhere")),
        key.jwt(claims(exp_in=-31, aud="kafka", iss="https://idp")),  # past the 30 s skew
        key.jwt({k: x for k, x in good.items() if k != "iat"}),  # iat required (KIP-768)
        unsecured_jwt(good),  # alg none is refused
    ]
    for token in rejected:
        with pytest.raises(TokenRejected):
            v(token)
    tampered = key.jwt(good).split(".")
    tampered[1] = b64url(json.dumps(claims(sub="mallory", aud="kafka", iss="https://idp")).encode())
    with pytest.raises(TokenRejected):
        v(".".join(tampered))


def test_server_challenge_then_failure_with_the_json_as_message():
    server = OAuthBearerServer(UnsecuredValidator(now_ms=lambda: NOW_MS))
    challenge = server.evaluate(initial_response(unsecured_jwt(claims(exp_in=-10))))
    assert challenge == b'{"status":"invalid_token"}'  # RFC 7628 3.2.2, as Kafka writes it
    assert not server.complete
    with pytest.raises(SaslAuthenticationError) as e:
        server.evaluate(b"\x01")
    assert str(e.value) == '{"status":"invalid_token"}'
    ok = OAuthBearerServer(UnsecuredValidator(now_ms=lambda: NOW_MS))
    assert ok.evaluate(initial_response(unsecured_jwt(claims()), "alice")) == b""
    assert (ok.complete, ok.authorization_id) == (True, "alice")
    assert ok.negotiated_property("CREDENTIAL.LIFETIME.MS") == NOW_MS + 3_600_000
    other = OAuthBearerServer(UnsecuredValidator(now_ms=lambda: NOW_MS))
    with pytest.raises(SaslAuthenticationError):  # authzid must be the token's principal
        other.evaluate(initial_response(unsecured_jwt(claims()), "bob"))


# --- on a broker -----------------------------------------------------------------------------


def oauth_overrides(**extra) -> dict:
    return {"listeners": "SASL_PLAINTEXT://127.0.0.1:0",
            "sasl.enabled.mechanisms": "OAUTHBEARER", **extra}  # fmt: skip


@pytest.fixture
def jwks_broker(make_broker, tmp_path):
    key = SigningKey("RS256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key.jwk]}))
    prefix = "listener.name.sasl_plaintext.oauthbearer."
    b = make_broker(oauth_overrides(**{
        prefix + "sasl.server.callback.handler.class":
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
        "sasl.oauthbearer.jwks.endpoint.url": path.as_uri(),
        "sasl.oauthbearer.expected.audience": "kafka",
    }))  # fmt: skip
    return b, key


def test_wire_exchange_success_and_refusal(make_broker):
    b = make_broker(oauth_overrides())
    client = RawClient(b.port)
    try:
        assert list(handshake(client, "OAUTHBEARER").mechanisms) == ["OAUTHBEARER"]
        now = time.time() * 1000
        r = authenticate(client, initial_response(unsecured_jwt(claims(now_ms=now))))
        assert (r.error_code, bytes(r.auth_bytes)) == (0, b"")
        (session,) = sessions(b)
        assert str(session.principal) == "User:alice"
    finally:
        client.close()
    client = RawClient(b.port)
    try:
        handshake(client, "OAUTHBEARER")
        expired = unsecured_jwt(claims(now_ms=time.time() * 1000, exp_in=-60))
        r = authenticate(client, initial_response(expired))
        assert (r.error_code, bytes(r.auth_bytes)) == (0, b'{"status":"invalid_token"}')
        r = authenticate(client, b"\x01")
        assert (r.error_code, r.error_message) == (
            SASL_AUTHENTICATION_FAILED, '{"status":"invalid_token"}')  # fmt: skip
        assert client.recv_frame() is None  # closed
    finally:
        client.close()


def test_librdkafka_unsecured_jwt_produces_and_consumes(make_broker):
    from confluent_kafka import Consumer, Producer

    b = make_broker(oauth_overrides())
    conf = {"bootstrap.servers": f"127.0.0.1:{b.port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER", "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": "principal=alice scope=kafka"}  # fmt: skip
    p = Producer(conf)
    errors: list = []
    for i in range(10):
        p.produce("oauth", f"v{i}".encode(), on_delivery=lambda e, _m: e and errors.append(e))
    assert p.flush(30) == 0 and errors == []
    c = Consumer({**conf, "group.id": "oauth-g", "auto.offset.reset": "earliest"})
    c.subscribe(["oauth"])
    got: list = []
    deadline = time.monotonic() + 30
    while len(got) < 10 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == [f"v{i}".encode() for i in range(10)]
    assert {str(s.principal) for s in sessions(b)} <= {"User:alice"}


def test_kafka_python_with_a_signed_jwt_against_the_jwks(jwks_broker):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError
    from kafka.net.sasl.oauth import AbstractTokenProvider

    b, key = jwks_broker

    class Provider(AbstractTokenProvider):
        def __init__(self, token: str):
            self._token = token

        def token(self):
            return self._token

    def producer(token: str, **kw):
        return KafkaProducer(bootstrap_servers=f"127.0.0.1:{b.port}",
                             security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
                             sasl_oauth_token_provider=Provider(token), max_block_ms=5000,
                             **kw)  # fmt: skip

    good = key.jwt(claims(now_ms=time.time() * 1000, aud="kafka"))
    p = producer(good)
    assert p.send("signed", b"hello").get(30).offset == 0
    assert "User:alice" in {str(s.principal) for s in sessions(b)}
    p.close()
    # A token for another audience is refused: kafka-python can't bootstrap (it retries the
    # refused authentication until its bootstrap timeout).
    wrong_audience = key.jwt(claims(now_ms=time.time() * 1000, aud="elsewhere"))
    with pytest.raises(KafkaError):
        producer(wrong_audience, bootstrap_timeout_ms=3000).close(timeout=1)


def test_aiokafka_with_a_signed_jwt(jwks_broker):
    from aiokafka import AIOKafkaProducer
    from aiokafka.abc import AbstractTokenProvider

    b, key = jwks_broker
    token = key.jwt(claims(sub=f"svc-{uuid.uuid4().hex[:6]}", now_ms=time.time() * 1000,
                           aud=["kafka", "other"]))  # fmt: skip

    class Provider(AbstractTokenProvider):
        async def token(self):
            return token

    async def run() -> int:
        p = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{b.port}",
                             security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
                             sasl_oauth_token_provider=Provider())  # fmt: skip
        await p.start()
        try:
            return (await p.send_and_wait("signed-aio", b"x")).offset
        finally:
            await p.stop()

    assert asyncio.run(run()) == 0

"""Each client library over each secured listener: SSL, SSL with client certificates (mTLS),
SASL_SSL with SCRAM-SHA-512, SASL_PLAINTEXT with PLAIN -- produce a record and read it back,
with the settings a Kafka user would give that library (the README's section shows them).
Failures as a user meets them: a wrong password, an unknown user, an untrusted or an expired
certificate."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from helpers import RawClient
from security_helpers import PLAIN_JAAS, CertificateAuthority

from protocol.apis import ApiKey
from pykbroker.embedded import EmbeddedBroker

LISTENERS = ("PLAINTEXT", "SSL", "MTLS", "SASL_SSL", "SASL_PLAINTEXT")
KAFKAJS_DIR = Path(__file__).resolve().parent.parent / "compat-tests" / "kafkajs"
SCRAM_FAILED = ("Authentication failed during authentication due to invalid credentials with "
                "SASL mechanism SCRAM-SHA-512")  # fmt: skip
PLAIN_FAILED = "Authentication failed: Invalid username or password"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = CertificateAuthority(d)
    return {
        "ca": ca.ca_path,
        "server": ca.issue("localhost", server=True),
        "alice": ca.issue({"CN": "alice", "OU": "eng", "O": "Acme"}),
        "expired": ca.issue({"CN": "old"}, expired=True),
        "rogue": CertificateAuthority(d + "/rogue", "Rogue CA").issue({"CN": "alice"}),
    }


@pytest.fixture(scope="module")
def secure(pki, tmp_path_factory):
    chain, key = pki["server"]
    overrides = {
        "listeners": ",".join(f"{n}://127.0.0.1:0" for n in LISTENERS),
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SSL:SSL,MTLS:SSL,"
                                          "SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": Path(chain).read_text(),
        "ssl.keystore.key": Path(key).read_text(),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": pki["ca"],
        "listener.name.mtls.ssl.client.auth": "required",
        "listener.name.mtls.ssl.principal.mapping.rules": "RULE:^CN=([^,]*),.*$/$1/L,DEFAULT",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
        "group.initial.rebalance.delay.ms": "0",
    }  # fmt: skip
    b = EmbeddedBroker(data_dir=str(tmp_path_factory.mktemp("secure")), overrides=overrides)
    b.start()
    ports = dict(zip(LISTENERS, (p for _, p in b.broker.bound), strict=True))
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha512", b"scram-secret", salt, 4096)
    client = RawClient(ports["PLAINTEXT"])
    r = client.request(ApiKey.ALTER_USER_SCRAM_CREDENTIALS, 0, {"deletions": [], "upsertions": [
        {"name": "scrammer", "mechanism": 2, "iterations": 4096, "salt": salt, "salted_password": salted}]})  # fmt: skip
    client.close()
    assert r.results[0].error_code == 0
    yield b, ports
    b.stop()


# Each case: the listener, then the client settings in Kafka's (librdkafka's) names.
CASES = {
    "ssl": ("SSL", {"security.protocol": "SSL"}),
    "mtls": ("MTLS", {"security.protocol": "SSL", "cert": "alice"}),
    "sasl_ssl_scram": ("SASL_SSL", {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                    "sasl.username": "scrammer", "sasl.password": "scram-secret"}),
    "sasl_plaintext_plain": ("SASL_PLAINTEXT", {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                                                "sasl.username": "alice", "sasl.password": "alice-secret"}),
}  # fmt: skip
EXPECTED_PRINCIPAL = {"ssl": "User:ANONYMOUS", "mtls": "User:alice",
                      "sasl_ssl_scram": "User:scrammer", "sasl_plaintext_plain": "User:alice"}  # fmt: skip


def _principals(b, listener: str) -> set[str]:
    return set(b.call(lambda: [str(c.session.principal) for c in b.broker.connections
                               if c.listener == listener]))  # fmt: skip


def _tls_files(pki, settings) -> dict:
    out = {}
    if settings["security.protocol"] in ("SSL", "SASL_SSL"):
        out["ca"] = pki["ca"]
    if "cert" in settings:
        out["cert"], out["key"] = pki[settings["cert"]]
    return out


def _kafka_python(b, port, pki, settings, topic, value) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    files = _tls_files(pki, settings)
    kwargs = {
        "bootstrap_servers": f"127.0.0.1:{port}",
        "security_protocol": settings["security.protocol"],
    }
    if "ca" in files:
        kwargs["ssl_cafile"] = files["ca"]
    if "cert" in files:
        kwargs.update(ssl_certfile=files["cert"], ssl_keyfile=files["key"])
    if "sasl.mechanism" in settings:
        kwargs.update(sasl_mechanism=settings["sasl.mechanism"], sasl_plain_username=settings["sasl.username"],
                      sasl_plain_password=settings["sasl.password"])  # fmt: skip
    producer = KafkaProducer(**kwargs)
    producer.send(topic, value).get(30)
    producer.close()
    consumer = KafkaConsumer(**kwargs, consumer_timeout_ms=20000)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    assert next(consumer).value == value
    principals = _principals(b, consumer_listener(b, port))
    consumer.close()
    return principals


def consumer_listener(b, port) -> str:
    return next(
        name for name, p in zip(LISTENERS, (p for _, p in b.broker.bound), strict=True) if p == port
    )


def _aiokafka(b, port, pki, settings, topic, value):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.helpers import create_ssl_context

    files = _tls_files(pki, settings)
    kwargs = {
        "bootstrap_servers": f"127.0.0.1:{port}",
        "security_protocol": settings["security.protocol"],
    }
    if "ca" in files:
        kwargs["ssl_context"] = create_ssl_context(cafile=files["ca"], certfile=files.get("cert"),
                                                   keyfile=files.get("key"))  # fmt: skip
    if "sasl.mechanism" in settings:
        kwargs.update(sasl_mechanism=settings["sasl.mechanism"], sasl_plain_username=settings["sasl.username"],
                      sasl_plain_password=settings["sasl.password"])  # fmt: skip

    async def run():
        producer = AIOKafkaProducer(**kwargs)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**kwargs, auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0)])
            record = await asyncio.wait_for(consumer.getone(), 20)
            assert record.value == value
            return _principals(b, consumer_listener(b, port))
        finally:
            await consumer.stop()

    return asyncio.run(run())


def _confluent_settings(port, pki, settings) -> dict:
    files = _tls_files(pki, settings)
    conf = {
        "bootstrap.servers": f"127.0.0.1:{port}",
        **{k: v for k, v in settings.items() if k != "cert"},
    }
    if "ca" in files:
        conf["ssl.ca.location"] = files["ca"]
    if "cert" in files:
        conf.update({"ssl.certificate.location": files["cert"], "ssl.key.location": files["key"]})
    return conf


def _confluent(b, port, pki, settings, topic, value):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    conf = _confluent_settings(port, pki, settings)
    producer = Producer(conf)
    producer.produce(topic, value)
    assert producer.flush(30) == 0
    consumer = Consumer({**conf, "group.id": topic, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    msg = consumer.poll(20)
    assert msg is not None and msg.error() is None and msg.value() == value
    principals = _principals(b, consumer_listener(b, port))
    consumer.close()
    return principals


def _kcat(b, port, pki, settings, topic, value):
    if shutil.which("kcat") is None:
        pytest.fail("kcat is not installed (Debian package kcat; compat-tests/bootstrap.sh)")
    conf = _confluent_settings(port, pki, settings)
    args = ["kcat", "-b", conf.pop("bootstrap.servers")]
    for k, v in conf.items():
        args += ["-X", f"{k}={v}"]
    p = subprocess.run([*args, "-P", "-t", topic], input=value, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(
        [*args, "-C", "-t", topic, "-o", "beginning", "-e", "-q"], capture_output=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [value]
    return None


def _kafkajs(b, port, pki, settings, topic, value):
    if not (KAFKAJS_DIR / "node_modules" / "kafkajs").exists() or shutil.which("node") is None:
        pytest.fail(
            "kafkajs is not installed (npm ci in compat-tests/kafkajs; compat-tests/bootstrap.sh)"
        )
    cfg = {
        "broker": f"127.0.0.1:{port}",
        "topic": topic,
        "value": value.decode(),
        **_tls_files(pki, settings),
    }
    if "sasl.mechanism" in settings:
        cfg["sasl"] = {"mechanism": settings["sasl.mechanism"].lower(), "username": settings["sasl.username"],
                       "password": settings["sasl.password"]}  # fmt: skip
    script = Path(__file__).with_name("security_clients.js")
    env = {**os.environ, "NODE_PATH": str(KAFKAJS_DIR / "node_modules")}
    p = subprocess.run(["node", str(script), json.dumps(cfg)], env=env, capture_output=True, text=True,
                       timeout=90)  # fmt: skip
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    return None


CLIENTS = {"kafka-python": _kafka_python, "aiokafka": _aiokafka, "confluent-kafka": _confluent,
           "kcat": _kcat, "kafkajs": _kafkajs}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("client", list(CLIENTS))
def test_client_over_secured_listener(secure, pki, client, case):
    b, ports = secure
    listener, settings = CASES[case]
    topic = f"sec-{client}-{case}-{uuid.uuid4().hex[:6]}"
    value = f"hello over {case} from {client}".encode()
    principals = CLIENTS[client](b, ports[listener], pki, settings, topic, value)
    if principals is not None:  # the Python clients: the consumer's session as the broker sees it
        assert EXPECTED_PRINCIPAL[case] in principals


def _confluent_error(conf: dict, timeout: float = 15) -> str:
    """What librdkafka reports for this configuration: its error_cb errors and its log lines
    (a failed TLS handshake is logged, then reported as "brokers are down")."""
    from confluent_kafka import Producer

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(f"rdkafka-{uuid.uuid4().hex}")
    logger.addHandler(Collect())
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    producer = Producer({**conf, "error_cb": lambda e: lines.append(e.str()), "logger": logger})
    producer.produce("nope", b"x")
    for _ in range(int(timeout * 10)):
        producer.poll(0.1)
        if any("brokers are down" in x or "Authentication failed" in x for x in lines):
            break
    producer.purge()
    producer.flush(1)
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("case", "change", "expected"),
    [
        ("sasl_plaintext_plain", {"sasl.password": "wrong"}, PLAIN_FAILED),
        ("sasl_plaintext_plain", {"sasl.username": "mallory"}, PLAIN_FAILED),
        ("sasl_ssl_scram", {"sasl.password": "wrong"}, SCRAM_FAILED),
        ("sasl_ssl_scram", {"sasl.username": "mallory"}, SCRAM_FAILED),
    ],
)
def test_wrong_credentials_get_kafkas_message(secure, pki, case, change, expected):
    b, ports = secure
    listener, settings = CASES[case]
    error = _confluent_error(_confluent_settings(ports[listener], pki, {**settings, **change}))
    assert expected in error


@pytest.mark.parametrize("cert", ["rogue", "expired", None])
def test_mtls_refuses_untrusted_expired_and_missing_certificates(secure, pki, cert):
    b, ports = secure
    settings = {"security.protocol": "SSL", **({"cert": cert} if cert else {})}
    before = b.call(lambda: b.broker.metrics.connections)
    error = _confluent_error(_confluent_settings(ports["MTLS"], pki, settings))
    # librdkafka logs "SSL handshake failed", or with TLS 1.3 (the client's certificate is
    # checked after the client's side of the handshake) "closed"/"reset by peer"
    assert "brokers are down" in error, error
    assert b.call(lambda: b.broker.metrics.connections) == before  # none was established

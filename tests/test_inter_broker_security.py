"""Inter-broker traffic over TLS and SASL (Kafka's security.inter.broker.protocol,
inter.broker.listener.name, sasl.mechanism.inter.broker.protocol): a ZooKeeper cluster of three
brokers whose only listener is SASL_SSL, with ACLs on, replicates (followers authenticate as the
brokers' own user from the listener's JAAS config, a super user) and keeps replicating across
several re-authentication periods; the broker's SCRAM client against a broker; Kafka's
start-up checks. Certificates are made by the test."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from cluster_helpers import Cluster, wait_until
from security_helpers import CertificateAuthority, TlsRawClient, authenticate, handshake
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey

missing = zookeeper_missing()
if missing:
    print(f"\nSKIPPING inter-broker security cluster test: {missing}", file=sys.stderr)

TOPIC_AUTHORIZATION_FAILED = 29  # Kafka's error code
JAAS = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="broker" password="broker-secret" user_broker="broker-secret" '
        'user_admin="admin-secret" user_alice="alice-secret";')  # fmt: skip
REAUTH_MS = 3000  # the fetchers renew at 85-95%: 300 ms of margin on a loaded machine


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = CertificateAuthority(str(tmp_path_factory.mktemp("inter-broker-pki")))
    chain, key = ca.issue("localhost", server=True)
    keystore = os.path.join(ca.dir, "broker.pem")
    with open(keystore, "w") as f:
        f.write(Path(key).read_text() + Path(chain).read_text())
    os.chmod(keystore, 0o600)
    return ca, keystore


def secured(ca, keystore: str, **extra) -> dict[str, str]:
    return {
        "listeners": "SASL_SSL://127.0.0.1:0",
        "security.inter.broker.protocol": "SASL_SSL",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": JAAS,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": keystore,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": ca.ca_path,
        **extra,
    }


def sasl_ssl_client(ca, user: str = "admin"):
    def connect(port: int) -> TlsRawClient:
        c = TlsRawClient(port, ca.ca_path)
        assert handshake(c, "PLAIN").error_code == 0
        assert authenticate(c, f"\0{user}\0{user}-secret".encode()).error_code == 0
        return c

    return connect


def _segment_sizes(c: Cluster, topic: str, partitions: int) -> dict[int, set[int]]:
    """partition -> the sizes of its first segment on the three brokers' disks."""
    out: dict[int, set[int]] = {}
    for p in range(partitions):
        for b in c.brokers.values():
            path = os.path.join(b.data_dir, f"{topic}-{p}", "00000000000000000000.log")
            out.setdefault(p, set()).add(os.path.getsize(path) if os.path.exists(path) else -1)
    return out


def _committed_txn_records(conf: dict, topic: str, partitions: int) -> list[bytes]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**conf, "group.id": f"g-{topic}", "isolation.level": "read_committed",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        found: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(found) < 2 * partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.value().startswith(b"txn"):
                found.append(msg.value())
        return found
    finally:
        consumer.close()


@pytest.mark.skipif(missing is not None, reason=missing or "")
def test_sasl_ssl_only_cluster_replicates_with_acls(pki, tmp_path):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    ca, keystore = pki
    overrides = secured(ca, keystore, **{
        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
        "super.users": "User:broker;User:admin",
        # Sessions of 3 s: the followers' fetch connections must re-authenticate (KIP-368).
        "connections.max.reauth.ms": str(REAUTH_MS),
    })  # fmt: skip
    c = Cluster(str(tmp_path), overrides=overrides, client=sasl_ssl_client(ca)).start()
    try:
        client_conf = {"bootstrap.servers": c.bootstrap(), "security.protocol": "SASL_SSL",
                       "ssl.ca.location": ca.ca_path, "sasl.mechanism": "PLAIN",
                       "sasl.username": "admin", "sasl.password": "admin-secret",
                       "broker.address.family": "v4"}  # fmt: skip
        topic, partitions = f"secure-{uuid.uuid4().hex[:6]}", 3
        admin = AdminClient(client_conf)
        admin.create_topics([NewTopic(topic, partitions, 3)])[topic].result(30)
        agreed = wait_until(lambda: c.agreed_partitions(topic), what="topic on every broker")
        assert sorted(agreed) == [0, 1, 2]

        producer = Producer({**client_conf, "acks": "all", "linger.ms": 5})
        errors: list = []

        def produce(n: int) -> None:
            for i in range(n):
                producer.produce(topic, b"r%05d" % i, partition=i % partitions,
                                 on_delivery=lambda err, msg: err and errors.append(err))  # fmt: skip
                producer.poll(0)
            assert producer.flush(30) == 0

        produce(300)  # acks=all: every replica in the ISR has each record before its ack
        started = time.monotonic()

        def isr_full_and_logs_equal() -> bool:
            parts = c.agreed_partitions(topic)
            if not parts or any(sorted(isr) != [1, 2, 3] for _, _, _, isr, _ in parts.values()):
                return False
            sizes = _segment_sizes(c, topic, partitions)
            return all(len(s) == 1 and min(s) > 0 for s in sizes.values())

        wait_until(isr_full_and_logs_equal, what="ISR full, same log on every broker")
        # A transaction over the three partitions: its coordinator sends WriteTxnMarkers to the
        # other leaders over its broker channels (TLS + SASL too).
        txn = Producer({**client_conf, "transactional.id": f"t-{topic}"})
        txn.init_transactions(30)

        def transaction(tag: bytes) -> None:
            txn.begin_transaction()
            for p in range(partitions):
                txn.produce(topic, tag + b"%d" % p, partition=p)
            txn.commit_transaction(30)

        transaction(b"txn1-")
        # Past twice the session lifetime, replication goes on: the followers re-authenticated
        # their fetch connections instead of being closed for an expired session; the channels
        # reconnected before their sessions ended.
        while time.monotonic() - started < 2.2 * REAUTH_MS / 1000:
            produce(20)
        transaction(b"txn2-")
        wait_until(isr_full_and_logs_equal, what="ISR full after re-authentication periods")
        assert errors == []
        # Both transactions' markers were written on every partition's leader: a read_committed
        # consumer gets their six records (the last stable offset passed them).
        assert sorted(_committed_txn_records(client_conf, topic, partitions)) == sorted(
            b"txn%d-%d" % (t, p) for t in (1, 2) for p in range(partitions)
        )
        closed = [
            e for b in c.history for e in b.lines if e.get("event") == "expired_session_closed"
        ]
        assert closed == []
        denied = [e for b in c.history for e in b.lines
                  if e.get("event") in ("failed_authentication", "failed_reauthentication")]  # fmt: skip
        assert denied == []

        # ACLs are on: alice, with none, can't see the topic the brokers replicate.
        alice = sasl_ssl_client(ca, "alice")(c.brokers[1].port)
        try:
            r = alice.request(ApiKey.METADATA, 12, {"topics": [{"name": topic}],
                                                    "allow_auto_topic_creation": False})  # fmt: skip
            assert r.topics[0].error_code == TOPIC_AUTHORIZATION_FAILED
        finally:
            alice.close()
    finally:
        c.stop()


SCRAM_JAAS = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
              'username="broker" password="broker-secret";')  # fmt: skip
OAUTH_JAAS = ("org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
              'unsecuredLoginStringClaim_sub="broker" unsecuredLoginLifetimeSeconds="30";')  # fmt: skip


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "OAUTHBEARER"])
def test_inter_broker_client_over_tls(make_broker, pki, mechanism):
    """The broker's own SASL client as a follower uses it (security/inter_broker.py, built from
    the broker's config), over TLS, against a broker: SCRAM-SHA-512 with the ScramLoginModule's
    username/password (the credential stored first), OAUTHBEARER with an unsecured token from
    the OAuthBearerLoginModule's unsecuredLoginStringClaim_sub, as Kafka's default login
    callback makes it. The session lifetime is kept for re-authentication."""
    from pykbroker.security.inter_broker import (
        InterBrokerAuthenticationError,
        inter_broker_security,
    )

    ca, keystore = pki
    b = make_broker(secured(ca, keystore, **{
        "sasl.enabled.mechanisms": f"PLAIN,{mechanism}",
        "sasl.mechanism.inter.broker.protocol": mechanism,
        f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config":
            SCRAM_JAAS if mechanism.startswith("SCRAM") else OAUTH_JAAS,
        "connections.max.reauth.ms": "60000",
    }))  # fmt: skip
    if mechanism.startswith("SCRAM"):
        admin = sasl_ssl_client(ca)(b.port)
        try:
            salt = os.urandom(16)
            salted = hashlib.pbkdf2_hmac("sha512", b"broker-secret", salt, 8192)
            upsert = {"name": "broker", "mechanism": 2, "iterations": 8192, "salt": salt,
                      "salted_password": salted}  # mechanism 2: SCRAM-SHA-512  # fmt: skip
            r = admin.request(ApiKey.ALTER_USER_SCRAM_CREDENTIALS, 0,
                              {"deletions": [], "upsertions": [upsert]})  # fmt: skip
            assert r.results[0].error_code == 0
        finally:
            admin.close()
    security = inter_broker_security(b.broker)
    assert (security.listener, security.protocol, security.mechanism) == (
        "SASL_SSL", "SASL_SSL", mechanism)  # fmt: skip

    async def connect() -> float:
        loop = asyncio.get_running_loop()
        reader, writer, reauth_at = await security.open_connection("127.0.0.1", b.port, "t", 10)
        try:
            principals = b.call(lambda: [str(c.session.principal) for c in b.broker.connections])
            assert "User:broker" in principals
        finally:
            writer.close()
        return reauth_at - loop.time()

    # Lifetime: connections.max.reauth.ms (60 s), or the token's 30 s when shorter;
    # re-authentication at 85-95% of it, as Kafka's clients.
    lifetime = 60 if mechanism.startswith("SCRAM") else 30
    assert 0.85 * lifetime - 2 < asyncio.run(connect()) <= 0.95 * lifetime
    if mechanism.startswith("SCRAM"):
        from protocol.sasl.scram import ScramClient

        security.sasl_client = lambda: ScramClient(mechanism, "broker", "wrong")
        with pytest.raises(InterBrokerAuthenticationError):
            asyncio.run(connect())


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256"},
         "sasl.mechanism.inter.broker.protocol must be included in sasl.enabled.mechanisms when "
         "SASL is used for inter-broker communication"),
        ({"sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
          "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512"},
         "Inter-broker SASL/SCRAM-SHA-512 needs the broker's own credentials"),
        ({"inter.broker.listener.name": "SASL_SSL"},
         "Only one of inter.broker.listener.name and security.inter.broker.protocol should be set."),
    ],
)  # fmt: skip
def test_kafkas_start_up_checks(pki, tmp_path, extra, message):
    """Checked before ZooKeeper is reached (none is running here), as Kafka's KafkaConfig."""
    ca, keystore = pki
    overrides = secured(ca, keystore, **{"zookeeper.connect": "127.0.0.1:1", "log.dir": str(tmp_path),
                                         **extra})  # fmt: skip
    args = [sys.executable, "-m", "pykbroker"]
    for k, v in overrides.items():
        args += ["--override", f"{k}={v}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr

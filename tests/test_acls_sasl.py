"""Authorization with authenticated users (SASL PLAIN): alice is granted a topic, a group, a
transactional id and idempotent writes with kafka-acls; bob is granted nothing. Each of bob's
clients (confluent-kafka, kafka-python, aiokafka) gets Kafka's error for the topic, the group,
the transactional id and the cluster, and Metadata and ListGroups show him nothing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiokafka
import confluent_kafka
import confluent_kafka.admin
import pytest
from helpers import RawClient
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kerrors
from kafka.admin import (
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    NewTopic,
    ResourcePatternFilter,
    ResourceType,
)
from security_helpers import PLAIN_JAAS_WITH_BOB, authenticate, handshake

from protocol.apis import ApiKey

JAAS = PLAIN_JAAS_WITH_BOB
BROKER = {
    "listeners": "SASL_PLAINTEXT://127.0.0.1:0",
    "sasl.enabled.mechanisms": "PLAIN",
    "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:admin",
}


def kp(user: str) -> dict:  # kafka-python / aiokafka settings
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
            "sasl_plain_username": user, "sasl_plain_password": f"{user}-secret"}  # fmt: skip


def ck(user: str, **extra) -> dict:  # confluent-kafka settings
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": f"{user}-secret", **extra}  # fmt: skip


def kafka_acls(bs: str, config: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "pykbroker.cli.acls", "--bootstrap-server", bs,
         "--command-config", config, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    from pykbroker.embedded import EmbeddedBroker

    d = tmp_path_factory.mktemp("acl-sasl")
    with EmbeddedBroker(data_dir=str(d / "data"), overrides=BROKER) as b:
        bs = b.bootstrap_servers
        admin = KafkaAdminClient(bootstrap_servers=bs, **kp("admin"))
        admin.create_topics([NewTopic("orders", 1, 1), NewTopic("audit", 1, 1)])
        admin.close()
        config = d / "admin.properties"  # as a Java client's file
        config.write_text(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
            'username="admin" password="admin-secret";\n'
        )
        out = kafka_acls(bs, str(config), "--add", "--allow-principal", "User:alice",
                         "--producer", "--topic", "orders", "--transactional-id", "tx-alice",
                         "--idempotent")  # fmt: skip
        assert (
            "Adding ACLs for resource `ResourcePattern(resourceType=TOPIC, name=orders, "
            "patternType=LITERAL)`: \n \t(principal=User:alice, host=*, operation=WRITE, "
            "permissionType=ALLOW)\n"
        ) in out
        kafka_acls(bs, str(config), "--add", "--allow-principal", "User:alice", "--consumer",
                   "--topic", "orders", "--group", "g-alice")  # fmt: skip
        out = kafka_acls(bs, str(config), "--list", "--principal", "User:alice")
        assert out.startswith("ACLs for principal `User:alice`\n")
        assert (
            "\t(principal=User:alice, host=*, operation=IDEMPOTENT_WRITE, permissionType=ALLOW)"
            in out
        )
        yield bs, str(config)


def test_alice_produces_consumes_and_commits_transactions(secured):
    bs, _ = secured
    producer = KafkaProducer(bootstrap_servers=bs, enable_idempotence=True, **kp("alice"))
    producer.send("orders", b"o1").get(timeout=20)
    producer.close()
    txn = confluent_kafka.Producer(ck("alice", **{"bootstrap.servers": bs,
                                                  "transactional.id": "tx-alice"}))  # fmt: skip
    txn.init_transactions(20)
    txn.begin_transaction()
    txn.produce("orders", b"o2")
    txn.commit_transaction(20)
    consumer = KafkaConsumer("orders", bootstrap_servers=bs, group_id="g-alice",
                             auto_offset_reset="earliest", consumer_timeout_ms=15000,
                             isolation_level="read_committed", **kp("alice"))  # fmt: skip
    try:
        assert consumer.topics() == {"orders"}  # not audit
        got = []
        for m in consumer:
            got.append(m.value)
            if len(got) == 2:
                break
        assert got == [b"o1", b"o2"]
        consumer.commit()
    finally:
        consumer.close()


def test_bob_gets_kafkas_errors_and_sees_nothing(secured):
    bs, _ = secured
    K = confluent_kafka.KafkaError
    # The topic: a produce fails with TOPIC_AUTHORIZATION_FAILED; Metadata lists nothing.
    errors = []
    p = confluent_kafka.Producer(ck("bob", **{"bootstrap.servers": bs,
                                              "enable.idempotence": False,
                                              "message.timeout.ms": 10000}))  # fmt: skip
    p.produce("orders", b"x", on_delivery=lambda err, _m: errors.append(err))
    p.flush(20)
    assert [e.code() for e in errors] == [K.TOPIC_AUTHORIZATION_FAILED]
    assert set(p.list_topics(timeout=10).topics) == set()
    del p
    # Idempotence needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic (KIP-679): the
    # producer's InitProducerId is refused with CLUSTER_AUTHORIZATION_FAILED (31).
    raw = RawClient(int(bs.rsplit(":", 1)[1]))
    try:
        assert handshake(raw, "PLAIN").error_code == 0
        assert authenticate(raw, b"\0bob\0bob-secret").error_code == 0
        r = raw.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None,
                                                     "transaction_timeout_ms": 60000,
                                                     "producer_id": -1, "producer_epoch": -1})  # fmt: skip
        assert r.error_code == 31
    finally:
        raw.close()
    # The transactional id.
    txn = confluent_kafka.Producer(ck("bob", **{"bootstrap.servers": bs,
                                                "transactional.id": "tx-alice"}))  # fmt: skip
    with pytest.raises(confluent_kafka.KafkaException) as e:
        txn.init_transactions(20)
    assert e.value.args[0].code() == K.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    del txn
    # The group: g-alice exists (alice committed) but bob can't join it nor list it.
    admin = confluent_kafka.admin.AdminClient(ck("bob", **{"bootstrap.servers": bs}))
    groups = admin.list_consumer_groups().result(20)
    assert [g.group_id for g in groups.valid] == []
    # The cluster: creating topics and describing the broker's configs are refused.
    fut = admin.create_topics([confluent_kafka.admin.NewTopic("bobs", 1, 1)])["bobs"]
    with pytest.raises(confluent_kafka.KafkaException) as e:
        fut.result(20)
    assert e.value.args[0].code() == K.TOPIC_AUTHORIZATION_FAILED
    resource = confluent_kafka.admin.ConfigResource("broker", "1")
    with pytest.raises(confluent_kafka.KafkaException) as e:
        admin.describe_configs([resource])[resource].result(20)
    assert e.value.args[0].code() == K.CLUSTER_AUTHORIZATION_FAILED
    # DescribeAcls needs DESCRIBE on the cluster (librdkafka drops that top-level error;
    # kafka-python, like the Java admin, raises it).
    kadmin = KafkaAdminClient(bootstrap_servers=bs, **kp("bob"))
    try:
        flt = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                        ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))  # fmt: skip
        with pytest.raises(kerrors.ClusterAuthorizationFailedError):
            kadmin.describe_acls(flt)
    finally:
        kadmin.close()
    del admin

    async def aiokafka_consumer() -> None:
        consumer = aiokafka.AIOKafkaConsumer("orders", bootstrap_servers=bs, group_id="g-alice",
                                             **kp("bob"))  # fmt: skip
        try:
            with pytest.raises(aiokafka.errors.TopicAuthorizationFailedError):
                await asyncio.wait_for(consumer.start(), 20)
        finally:
            await consumer.stop()

    asyncio.run(aiokafka_consumer())
    # kafka-python, the group itself: Kafka checks it before the topic.
    consumer = KafkaConsumer(bootstrap_servers=bs, group_id="g-alice", consumer_timeout_ms=10000,
                             **kp("bob"))  # fmt: skip
    try:
        with pytest.raises(kerrors.GroupAuthorizationFailedError):
            consumer.committed(__import__("kafka").TopicPartition("orders", 0))
    finally:
        consumer.close()

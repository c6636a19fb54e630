"""The web console under the broker's security (issue 13's SASL listeners and ACLs).

With a SASL listener or an authorizer the console asks for HTTP Basic credentials (the PLAIN
users and stored SCRAM credentials the listeners accept; Bearer tokens when OAUTHBEARER is
enabled) and each request is authorized with the broker's ACLs as the equivalent Kafka request
of that principal would be: Metadata's DESCRIBE filtering, Fetch's READ, CreateTopics' CREATE,
DeleteTopics' DELETE, IncrementalAlterConfigs' ALTER_CONFIGS, DescribeGroups' and ListGroups'
DESCRIBE on groups, OffsetCommit's READ on group and topic. Expected answers are Kafka's
(TOPIC_AUTHORIZATION_FAILED for a topic the principal may not see, whether it exists or not).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from console_helpers import EventStream, request, wait_for
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import errors as kerrors
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    NewTopic,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from security_helpers import PLAIN_JAAS_WITH_BOB, sasl_plaintext_overrides

from pykbroker.embedded import EmbeddedBroker

JAAS = PLAIN_JAAS_WITH_BOB
BROKER = sasl_plaintext_overrides("PLAIN,SCRAM-SHA-256,OAUTHBEARER", **{
    "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,  # bob too
    "listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config":
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:admin", "console.port": 0, "group.initial.rebalance.delay.ms": 0,
})  # fmt: skip


def basic(user: str, password: str | None = None) -> dict:
    token = base64.b64encode(f"{user}:{password or user + '-secret'}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def call(b, user, method: str, path: str, body=None):
    """(status, JSON) of a console request as `user` (a name, or a headers dict)."""
    headers = basic(user) if isinstance(user, str) else user
    status, _, data = request(b.console_url, method, path, body, headers)
    return status, data


def sasl(user: str) -> dict:
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": f"{user}-secret"}  # fmt: skip


def acl(principal, op, rtype, name, pattern=ACLResourcePatternType.LITERAL) -> ACL:
    return ACL(principal, "*", op, ACLPermissionType.ALLOW, ResourcePattern(rtype, name, pattern))


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    d = tmp_path_factory.mktemp("console-security")
    with EmbeddedBroker(str(d / "data"), BROKER) as b:
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers,
                                 security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                 sasl_plain_username="admin",
                                 sasl_plain_password="admin-secret")  # fmt: skip
        admin.create_topics([NewTopic("alice-orders", 1, 1), NewTopic("secret", 1, 1)])
        T, G = ResourceType.TOPIC, ResourceType.GROUP
        created = admin.create_acls([
            acl("User:alice", ACLOperation.READ, T, "alice-orders"),
            acl("User:alice", ACLOperation.READ, G, "alice-group"),
        ])  # fmt: skip
        assert not created["failed"], created
        p = Producer({"bootstrap.servers": b.bootstrap_servers, **sasl("admin")})
        for topic in ("alice-orders", "secret"):
            for i in range(3):
                p.produce(topic, f"{topic}-{i}".encode())
        assert p.flush(20) == 0
        for group in ("alice-group", "other-group"):  # committed offsets on both topics
            c = Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": group,
                          **sasl("admin")})  # fmt: skip
            c.commit(offsets=[TopicPartition("alice-orders", 0, 1),
                              TopicPartition("secret", 0, 2)], asynchronous=False)  # fmt: skip
            c.close()
        yield b, admin
        admin.close()


def test_credentials_are_the_brokers_own(secured, tmp_path):
    b, _ = secured
    url = b.console_url
    # Nothing is served without credentials, the page included: the browser asks for them.
    for path in ("/", "/static/console.js", "/api/cluster"):
        status, headers, data = request(url, "GET", path)
        assert status == 401, path
        assert headers["WWW-Authenticate"] == 'Basic realm="pykbroker console", charset="UTF-8"'
        assert data["error"] == "SASL_AUTHENTICATION_FAILED"
    assert call(b, basic("alice", "wrong"), "GET", "/api/cluster")[0] == 401
    assert call(b, basic("nobody", "x"), "GET", "/api/cluster")[0] == 401
    assert call(b, {"Authorization": "Basic !!!"}, "GET", "/api/cluster")[0] == 401
    # A PLAIN user of the SASL listener's JAAS configuration (a super user here).
    status, cluster = call(b, "admin", "GET", "/api/cluster")
    assert status == 200, cluster
    assert (cluster["authentication"], cluster["principal"]) == ("BASIC", "User:admin")
    assert cluster["topics"] == 3 and cluster["log_dirs"]  # with __consumer_offsets

    # A SCRAM credential stored with kafka-configs: it logs in over SASL and in the console;
    # changed, the old password no longer works (in the console as at the listener).
    config = tmp_path / "admin.properties"
    config.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="admin" password="admin-secret";\n'
    )

    def kafka_configs(password: str) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "pykbroker.cli.configs", "--bootstrap-server",
             b.bootstrap_servers, "--command-config", str(config), "--alter", "--entity-type",
             "users", "--entity-name", "carol", "--add-config",
             f"SCRAM-SHA-256=[iterations=4096,password={password}]"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr

    kafka_configs("carol-secret")
    consumer = KafkaConsumer(bootstrap_servers=b.bootstrap_servers,
                             security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                             sasl_plain_username="carol", sasl_plain_password="carol-secret")  # fmt: skip
    assert consumer.topics() == set()  # authenticated; carol may describe no topic
    consumer.close()
    status, cluster = call(b, "carol", "GET", "/api/cluster")
    assert (status, cluster["principal"], cluster["topics"]) == (200, "User:carol", 0)
    assert call(b, "carol", "GET", "/api/topics") == (200, {"topics": []})
    kafka_configs("carol-new")
    assert call(b, "carol", "GET", "/api/cluster")[0] == 401
    assert call(b, basic("carol", "carol-new"), "GET", "/api/cluster")[0] == 200

    # OAUTHBEARER is enabled: an unsecured JWT (as that listener accepts) as a Bearer token.
    def jwt(claims: dict) -> str:
        part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
        return f"{part({'alg': 'none'})}.{part(claims)}."

    now = time.time()
    token = jwt({"sub": "alice", "iat": now, "exp": now + 600})
    status, cluster = call(b, {"Authorization": f"Bearer {token}"}, "GET", "/api/cluster")
    assert (status, cluster["principal"]) == (200, "User:alice")
    expired = jwt({"sub": "alice", "iat": now - 600, "exp": now - 300})
    assert call(b, {"Authorization": f"Bearer {expired}"}, "GET", "/api/cluster")[0] == 401


def test_reads_follow_the_acls(secured):
    b, _ = secured
    # alice sees what Metadata shows her Kafka client: the topic she may read, not "secret".
    consumer = KafkaConsumer(bootstrap_servers=b.bootstrap_servers,
                             security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                             sasl_plain_username="alice", sasl_plain_password="alice-secret")  # fmt: skip
    assert consumer.topics() == {"alice-orders"}
    consumer.close()
    status, data = call(b, "alice", "GET", "/api/topics")
    assert status == 200
    assert [t["name"] for t in data["topics"]] == ["alice-orders"]
    assert data["topics"][0]["configs"] is None  # no DESCRIBE_CONFIGS
    status, cluster = call(b, "alice", "GET", "/api/cluster")
    assert (cluster["topics"], cluster["partitions"]) == (1, 1)
    assert cluster["log_dirs"] is None and cluster["connections"] is None  # DESCRIBE on cluster
    # A topic she may not describe is refused as Kafka refuses it, existing or not.
    denied = (403, "TOPIC_AUTHORIZATION_FAILED")
    for path in ("/api/topics/secret", "/api/topics/nonexistent",
                 "/api/topics/secret/messages", "/api/topics/secret/tail",
                 "/api/metrics?topic=secret"):  # fmt: skip
        status, err = call(b, "alice", "GET", path)
        assert (status, err["error"]) == denied, path
    status, topic = call(b, "alice", "GET", "/api/topics/alice-orders")
    assert status == 200 and topic["partitions"][0]["isr"] == [b.broker.node_id]
    assert topic["configs"] is None
    status, msgs = call(b, "alice", "GET", "/api/topics/alice-orders/messages?offset=0")
    assert status == 200
    assert [base64.b64decode(r["value"]) for r in msgs["records"]] == [
        b"alice-orders-0", b"alice-orders-1", b"alice-orders-2"]  # fmt: skip
    # Groups: ListGroups shows her only alice-group; its offsets only on topics she may see.
    status, groups = call(b, "alice", "GET", "/api/groups")
    assert [g["group_id"] for g in groups["groups"]] == ["alice-group"]
    assert groups["groups"][0]["topics"] == ["alice-orders"]
    assert groups["groups"][0]["lag"] == 2  # committed 1, end 3
    status, group = call(b, "alice", "GET", "/api/groups/alice-group")
    assert [(o["topic"], o["current_offset"], o["lag"]) for o in group["offsets"]] == [
        ("alice-orders", 1, 2)]  # fmt: skip
    status, err = call(b, "alice", "GET", "/api/groups/other-group")
    assert (status, err["error"]) == (403, "GROUP_AUTHORIZATION_FAILED")
    # The super user sees everything.
    status, groups = call(b, "admin", "GET", "/api/groups")
    assert sorted(g["group_id"] for g in groups["groups"]) == ["alice-group", "other-group"]
    assert groups["groups"][0]["topics"] == ["alice-orders", "secret"]
    # bob has no ACL at all: nothing listed (a principal authenticated, not refused).
    assert call(b, "bob", "GET", "/api/topics") == (200, {"topics": []})
    assert call(b, "bob", "GET", "/api/groups")[1]["groups"] == []
    assert call(b, "bob", "GET", "/api/cluster")[1]["topics"] == 0


def test_changes_need_the_kafka_operation(secured):
    b, admin = secured
    denied = (403, "TOPIC_AUTHORIZATION_FAILED")
    # CreateTopics needs CREATE, DeleteTopics DELETE, IncrementalAlterConfigs ALTER_CONFIGS,
    # CreatePartitions ALTER: alice, with READ only, gets Kafka's error for each.
    for method, path, body in [
        ("POST", "/api/topics", {"name": "alice-new", "partitions": 1}),
        ("DELETE", "/api/topics/alice-orders", None),
        ("PATCH", "/api/topics/alice-orders/configs", {"set": {"retention.ms": "1000"}}),
        ("POST", "/api/topics/alice-orders/partitions", {"count": 2}),
    ]:  # fmt: skip
        status, err = call(b, "alice", method, path, body)
        assert (status, err["error"]) == denied, (method, path, err)
    # Offset reset: READ on the group and the topic, as OffsetCommit.
    status, err = call(b, "alice", "POST", "/api/groups/alice-group/reset-offsets",
                       {"to": "earliest", "topic": "secret"})  # fmt: skip
    assert (status, err["error"]) == denied
    status, reset = call(b, "alice", "POST", "/api/groups/alice-group/reset-offsets",
                         {"to": "earliest", "topic": "alice-orders"})  # fmt: skip
    assert status == 200, reset
    assert reset["offsets"] == [{"topic": "alice-orders", "partition": 0, "offset": 0}]
    # Granted CREATE on her prefix, she creates her topics (and sees them: CREATE implies no
    # DESCRIBE in Kafka, so she is granted that too).
    T = ResourceType.TOPIC
    admin.create_acls([acl("User:alice", op, T, "alice-", ACLResourcePatternType.PREFIXED)
                       for op in (ACLOperation.CREATE, ACLOperation.DESCRIBE)])  # fmt: skip
    wait_for(lambda: call(b, "alice", "POST", "/api/topics", {"name": "alice-new",
                                                              "validate_only": True})[0] == 201)  # fmt: skip
    status, created = call(b, "alice", "POST", "/api/topics", {"name": "alice-new"})
    assert status == 201, created
    assert [t["name"] for t in call(b, "alice", "GET", "/api/topics")[1]["topics"]] == [
        "alice-new", "alice-orders"]  # fmt: skip
    status, err = call(b, "alice", "POST", "/api/topics", {"name": "other-new"})
    assert (status, err["error"]) == denied


def test_live_tail_stops_when_read_is_revoked(secured):
    b, admin = secured
    stream = EventStream(b.console_url, "/api/topics/alice-orders/tail", basic("alice"))
    assert stream.response.status == 200
    try:
        p = Producer({"bootstrap.servers": b.bootstrap_servers, **sasl("admin")})
        p.produce("alice-orders", b"live-1")
        assert p.flush(20) == 0
        name, data = stream.next_event()
        assert name == "records" and base64.b64decode(data["records"][0]["value"]) == b"live-1"
        deleted = admin.delete_acls([ACLFilter(
            "User:alice", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
            ResourcePatternFilter(ResourceType.TOPIC, "alice-orders",
                                  ACLResourcePatternType.LITERAL))])  # fmt: skip
        assert deleted[0][2] is kerrors.NoError and len(deleted[0][1]) == 1, deleted
        p.produce("alice-orders", b"live-2")
        assert p.flush(20) == 0
        # As her next Fetch would be, the tail's next read is refused.
        assert stream.next_event() == ("error", {
            "error": "TOPIC_AUTHORIZATION_FAILED",
            "message": "Not authorized to access topics: [alice-orders]"})  # fmt: skip
    finally:
        stream.close()
        admin.create_acls([acl("User:alice", ACLOperation.READ, ResourceType.TOPIC,
                               "alice-orders")])  # fmt: skip


def test_configured_principal_without_authentication(make_broker):
    """console.authentication.method=NONE: requests act as console.principal, still under the
    ACLs; console.read.only refuses changes even a super user could make."""
    b = make_broker({
        "listeners": "PLAINTEXT://127.0.0.1:0", "console.port": 0,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS", "console.authentication.method": "NONE",
        "console.principal": "User:ops", "console.read.only": "true",
    })  # fmt: skip
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)  # ANONYMOUS: super user
    admin.create_topics([NewTopic("t1", 1, 1), NewTopic("t2", 1, 1)])
    admin.create_acls([acl("User:ops", ACLOperation.ALL, ResourceType.TOPIC, "t1")])
    admin.close()
    status, _, cluster = request(b.console_url, "GET", "/api/cluster")
    assert status == 200
    assert (cluster["authentication"], cluster["principal"], cluster["topics"]) == (
        "NONE", "User:ops", 1)  # fmt: skip
    status, _, topics = request(b.console_url, "GET", "/api/topics")
    assert [t["name"] for t in topics["topics"]] == ["t1"]
    status, _, err = request(b.console_url, "DELETE", "/api/topics/t1")
    assert (status, err["error"]) == (403, "CLUSTER_AUTHORIZATION_FAILED")
    # Without an authorizer and SASL listener nothing is asked (the other console tests).

"""SCRAM-SHA-256/512: credentials stored as Kafka stores them, managed with
Describe/AlterUserScramCredentials and kafka-configs, used to authenticate; in a cluster they
live in ZooKeeper (/config/users/<user>) and every broker accepts them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cli_helpers import shell
from cluster_helpers import Cluster, wait_until
from helpers import RawClient
from security_helpers import PLAIN_JAAS, handshake, scram_client_exchange
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey

SASL_AUTHENTICATION_FAILED = 58
UNSUPPORTED_SASL_MECHANISM = 33
RESOURCE_NOT_FOUND = 91
DUPLICATE_RESOURCE = 92
UNACCEPTABLE_CREDENTIAL = 93
SCRAM_FAILED = ("Authentication failed during authentication due to invalid credentials with "
                "SASL mechanism {}")  # fmt: skip
SHA256, SHA512 = 1, 2  # Kafka's ScramMechanism types

OVERRIDES = {
    "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
    "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
    "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
}


def _ports(b) -> tuple[int, int]:
    (_, plain), (_, sasl) = b.broker.bound
    return plain, sasl


def _upsert(user, mechanism, password, iterations=4096, salt=b"0123456789abcdef"):
    h = {SHA256: "sha256", SHA512: "sha512"}[mechanism]
    salted = hashlib.pbkdf2_hmac(h, password.encode(), salt, iterations)
    return {"name": user, "mechanism": mechanism, "iterations": iterations, "salt": salt,
            "salted_password": salted}  # fmt: skip


def _alter(port, upsertions=(), deletions=()):
    client = RawClient(port)
    try:
        r = client.request(ApiKey.ALTER_USER_SCRAM_CREDENTIALS, 0,
                           {"upsertions": list(upsertions), "deletions": list(deletions)})  # fmt: skip
        return {x.user: (x.error_code, x.error_message) for x in r.results}
    finally:
        client.close()


def _describe(port, users=None):
    client = RawClient(port)
    try:
        body = {"users": None if users is None else [{"name": u} for u in users]}
        r = client.request(ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS, 0, body)
        assert r.error_code == 0
        return [(x.user, x.error_code, x.error_message,
                 [(c.mechanism, c.iterations) for c in x.credential_infos]) for x in r.results]  # fmt: skip
    finally:
        client.close()


def _login(port, mechanism, user, password):
    client = RawClient(port)
    try:
        assert handshake(client, mechanism).error_code == 0
        r = scram_client_exchange(client, mechanism, user, password)
        return r.error_code, r.error_message
    finally:
        client.close()


@pytest.fixture
def scram_broker(make_broker):
    return make_broker(OVERRIDES)


def test_alter_describe_and_authenticate(scram_broker, make_broker):
    plain, sasl = _ports(scram_broker)
    assert _alter(plain, [_upsert("alice", SHA256, "alice-secret", 8192),
                          _upsert("alice", SHA512, "alice-secret")]) == {"alice": (0, None)}  # fmt: skip
    assert _alter(plain, [_upsert("bob", SHA512, "bob-secret")]) == {"bob": (0, None)}
    assert _describe(plain) == [("alice", 0, None, [(SHA256, 8192), (SHA512, 4096)]),
                                ("bob", 0, None, [(SHA512, 4096)])]  # fmt: skip
    assert _login(sasl, "SCRAM-SHA-256", "alice", "alice-secret") == (0, None)
    assert _login(sasl, "SCRAM-SHA-512", "bob", "bob-secret") == (0, None)
    # Wrong password and unknown user: the same answer (nothing says which users exist).
    failed = (SASL_AUTHENTICATION_FAILED, SCRAM_FAILED.format("SCRAM-SHA-256"))
    assert _login(sasl, "SCRAM-SHA-256", "alice", "wrong") == failed
    assert _login(sasl, "SCRAM-SHA-256", "mallory", "x") == failed
    assert _login(sasl, "SCRAM-SHA-256", "bob", "bob-secret") == failed  # bob has 512 only
    # Deleting a credential: that mechanism no longer authenticates.
    assert _alter(plain, deletions=[{"name": "alice", "mechanism": SHA256}]) == {"alice": (0, None)}
    assert _login(sasl, "SCRAM-SHA-256", "alice", "alice-secret") == failed
    assert _login(sasl, "SCRAM-SHA-512", "alice", "alice-secret") == (0, None)
    # Kept in the single broker's metadata across a restart.
    data_dir = scram_broker.data_dir
    scram_broker.stop()
    again = make_broker(OVERRIDES, data_dir=data_dir)
    assert _login(_ports(again)[1], "SCRAM-SHA-512", "bob", "bob-secret") == (0, None)


def test_final_message_nonce(scram_broker):
    plain, sasl = _ports(scram_broker)
    assert _alter(plain, [_upsert("alice", SHA256, "alice-secret")]) == {"alice": (0, None)}

    def login(final_nonce):
        client = RawClient(sasl)
        try:
            assert handshake(client, "SCRAM-SHA-256").error_code == 0
            r = scram_client_exchange(
                client, "SCRAM-SHA-256", "alice", "alice-secret", final_nonce=final_nonce
            )
            return r.error_code
        finally:
            client.close()

    # librdkafka < 2.6.1 repeats its own nonce in front of the server's: Kafka 3.8.1-3.9 accept
    # it (the nonce must end with the server's), and so do we.
    assert login(lambda ours, server: ours + server) == 0
    assert login(lambda ours, server: ours) == SASL_AUTHENTICATION_FAILED  # server part missing
    assert login(lambda ours, server: server[:-1]) == SASL_AUTHENTICATION_FAILED


def test_alter_errors_as_kafka(scram_broker):
    plain, _ = _ports(scram_broker)
    assert _alter(plain, [_upsert("a", SHA256, "p", 4095)]) == {
        "a": (UNACCEPTABLE_CREDENTIAL, "Too few iterations")}  # fmt: skip
    assert _alter(plain, [_upsert("b", SHA256, "p", 16385)]) == {
        "b": (UNACCEPTABLE_CREDENTIAL, "Too many iterations")}  # fmt: skip
    assert _alter(plain, [{**_upsert("c", SHA256, "p"), "mechanism": 3}]) == {
        "c": (UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")}  # fmt: skip
    assert _alter(plain, [_upsert("", SHA256, "p")]) == {
        "": (UNACCEPTABLE_CREDENTIAL, "Username must not be empty")}  # fmt: skip
    assert _alter(plain, deletions=[{"name": "d", "mechanism": SHA256}]) == {
        "d": (RESOURCE_NOT_FOUND, "Attempt to delete a user credential that does not exist")}  # fmt: skip
    assert _alter(plain, [_upsert("e", SHA256, "p")], [{"name": "e", "mechanism": SHA256}]) == {
        "e": (DUPLICATE_RESOURCE, "A user credential cannot be altered twice in the same request")}  # fmt: skip
    assert _describe(plain) == []  # nothing was stored
    assert _describe(plain, ["zed", "zed", "ann"]) == [
        ("zed", DUPLICATE_RESOURCE,
         "Cannot describe SCRAM credentials for the same user twice in a single request: zed", []),
        ("ann", RESOURCE_NOT_FOUND, "Attempt to describe a user credential that does not exist: ann", []),
    ]  # fmt: skip


def test_kafka_configs_users(scram_broker):
    plain, sasl = _ports(scram_broker)
    r = shell("kafka-configs --bootstrap-server localhost:9092 --alter --entity-type users "
              "--entity-name alice --add-config 'SCRAM-SHA-256=[iterations=8192,password=alice-secret]'",
              plain)  # fmt: skip
    assert (r.returncode, r.stdout) == (0, "Completed updating config for user alice.\n"), r.stderr
    r = shell("kafka-configs --bootstrap-server localhost:9092 --alter --entity-type users "
              "--entity-name alice --add-config 'SCRAM-SHA-512=[password=alice-secret]'", plain)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = shell(
        "kafka-configs --bootstrap-server localhost:9092 --describe --entity-type users", plain
    )
    assert r.stdout == ("SCRAM credential configs for user-principal 'alice' are "
                        "SCRAM-SHA-256=iterations=8192, SCRAM-SHA-512=iterations=4096\n")  # fmt: skip
    assert _login(sasl, "SCRAM-SHA-256", "alice", "alice-secret") == (0, None)
    r = shell("kafka-configs --bootstrap-server localhost:9092 --alter --entity-type users "
              "--entity-name alice --delete-config 'SCRAM-SHA-256'", plain)  # fmt: skip
    assert (r.returncode, r.stdout) == (0, "Completed updating config for user alice.\n"), r.stderr
    r = shell("kafka-configs --bootstrap-server localhost:9092 --describe --entity-type users "
              "--entity-name alice", plain)  # fmt: skip
    assert (
        r.stdout
        == "SCRAM credential configs for user-principal 'alice' are SCRAM-SHA-512=iterations=4096\n"
    )
    r = shell("kafka-configs --bootstrap-server localhost:9092 --alter --entity-type users "
              "--entity-name alice --add-config 'SCRAM-SHA-256=[iterations=1000,password=x]'", plain)  # fmt: skip
    assert r.returncode == 1
    assert "Iterations 1000 is less than the minimum 4096 required for SCRAM-SHA-256" in r.stderr


missing = zookeeper_missing()


@pytest.mark.skipif(missing is not None, reason=missing or "")
def test_cluster_credentials_in_zookeeper(tmp_path):
    from kazoo.client import KazooClient

    cluster = Cluster(str(tmp_path), size=2, overrides=OVERRIDES).start()
    try:
        sasl = {n: int(b.events("broker_started")[0]["listeners"][1].rsplit(":", 1)[1])
                for n, b in cluster.brokers.items()}  # fmt: skip
        assert _alter(cluster.brokers[1].port, [_upsert("alice", SHA512, "alice-secret", 8192)]) == {
            "alice": (0, None)}  # fmt: skip
        # Kafka's layout: /config/users/<user> = {"version":1,"config":{"SCRAM-SHA-512":
        # "salt=<b64>,stored_key=<b64>,server_key=<b64>,iterations=8192"}}
        zk = KazooClient(hosts=f"{cluster.zk.connect}/pykbroker")
        zk.start(timeout=15)
        try:
            data, _ = zk.get("/config/users/alice")
            node = json.loads(data)
            assert node["version"] == 1
            fields = dict(kv.split("=", 1) for kv in node["config"]["SCRAM-SHA-512"].split(","))
            assert sorted(fields) == ["iterations", "salt", "server_key", "stored_key"]
            salted = hashlib.pbkdf2_hmac(
                "sha512", b"alice-secret", base64.b64decode(fields["salt"]), 8192
            )
            client_key = hmac.new(salted, b"Client Key", "sha512").digest()
            assert base64.b64decode(fields["stored_key"]) == hashlib.sha512(client_key).digest()
            assert (
                base64.b64decode(fields["server_key"])
                == hmac.new(salted, b"Server Key", "sha512").digest()
            )
            assert fields["iterations"] == "8192"
            notices = [
                json.loads(zk.get(f"/config/changes/{c}")[0])
                for c in zk.get_children("/config/changes")
            ]
            assert {"version": 2, "entity_path": "users/alice"} in notices
        finally:
            zk.stop()
        # The other broker learns it from ZooKeeper.
        wait_until(lambda: _login(sasl[2], "SCRAM-SHA-512", "alice", "alice-secret") == (0, None),
                   what="broker 2 accepts alice")  # fmt: skip
        assert _describe(cluster.brokers[2].port, ["alice"]) == [
            ("alice", 0, None, [(SHA512, 8192)])
        ]
    finally:
        cluster.stop()

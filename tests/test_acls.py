"""Authorization on a single broker: every API refuses what Kafka's KafkaApis refuses, with
Kafka's error codes, and ACLs grant exactly what they say.

The principal here is User:ANONYMOUS (PLAINTEXT). Each test first starts the broker with
User:ANONYMOUS as a super user to create topics, a group and ACLs, then restarts it on the same
data dir without that (the ACLs come back from the broker's store), so what follows is judged by
the ACLs alone. Expected codes are Kafka's: TOPIC_AUTHORIZATION_FAILED 29,
GROUP_AUTHORIZATION_FAILED 30, CLUSTER_AUTHORIZATION_FAILED 31, TRANSACTIONAL_ID_AUTHORIZATION_FAILED
53, SECURITY_DISABLED 54, INVALID_REQUEST 42, OPERATION_NOT_ATTEMPTED 55.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys

import pytest
from helpers import RawClient
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kerrors
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from wire import produce_body, values_batch

from protocol.apis import ApiKey

AUTHORIZER = {"authorizer.class.name": "kafka.security.authorizer.AclAuthorizer"}
ANON = "User:ANONYMOUS"
TOPIC_DENIED, GROUP_DENIED, CLUSTER_DENIED, TXN_DENIED = 29, 30, 31, 53


def start_locked(make_broker, tmp_path, acls: list[ACL] = (), **overrides):
    """Create topics 'open' and 'secret' and group 'g-secret' as a super user, add `acls`,
    then restart without the super user: only the ACLs decide from then on."""
    data_dir = str(tmp_path / "locked")
    setup = make_broker({**AUTHORIZER, "super.users": ANON}, data_dir=data_dir)
    admin = KafkaAdminClient(bootstrap_servers=setup.bootstrap_servers)
    try:
        from kafka.admin import NewTopic

        admin.create_topics([NewTopic("open", 1, 1), NewTopic("secret", 1, 1)])
        if acls:
            result = admin.create_acls(list(acls))
            assert not result["failed"], result
    finally:
        admin.close()
    raw = RawClient(setup.port)
    commit = raw.request(ApiKey.OFFSET_COMMIT, 2, {
        "group_id": "g-secret", "generation_id_or_member_epoch": -1, "member_id": "",
        "retention_time_ms": -1,
        "topics": [{"name": "secret", "partitions": [{"partition_index": 0, "committed_offset": 0}]}],
    })  # fmt: skip
    assert commit.topics[0].partitions[0].error_code == 0
    raw.close()
    setup.stop()
    return make_broker({**AUTHORIZER, **overrides}, data_dir=data_dir)


def acl(principal, op, rtype, name, perm=ACLPermissionType.ALLOW, host="*",
        pattern=ACLResourcePatternType.LITERAL) -> ACL:  # fmt: skip
    return ACL(principal, host, op, perm, ResourcePattern(rtype, name, pattern))


def txn_request(api_key, version, **body):
    return api_key, version, {"transactional_id": "tx-secret", "producer_id": 1,
                              "producer_epoch": 0, **body}  # fmt: skip


def test_without_acls_every_api_refuses_with_kafkas_code(make_broker, tmp_path):
    b = start_locked(make_broker, tmp_path)
    c = RawClient(b.port)
    try:
        # Metadata: all topics lists none, a named one is refused, nothing is auto-created.
        md = c.request(ApiKey.METADATA, 12, {"topics": None, "allow_auto_topic_creation": True})
        assert md.topics == []
        md = c.request(ApiKey.METADATA, 12, {"topics": [{"name": "secret"}, {"name": "new"}],
                                             "allow_auto_topic_creation": True})  # fmt: skip
        assert [(t.name, t.error_code) for t in md.topics] == [("secret", 29), ("new", 29)]
        assert md.topics[0].partitions == []
        # Produce, Fetch, ListOffsets, OffsetsForLeaderEpoch.
        r = c.request(ApiKey.PRODUCE, 9, produce_body("secret", bytes(values_batch([b"v"]))))
        assert r.responses[0].partition_responses[0].error_code == TOPIC_DENIED
        r = c.request(ApiKey.FETCH, 12, {
            "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
            "topics": [{"topic": "secret", "partitions": [{"partition": 0, "fetch_offset": 0,
                                                           "partition_max_bytes": 1 << 20}]}],
        })  # fmt: skip
        assert r.responses[0].partitions[0].error_code == TOPIC_DENIED
        r = c.request(ApiKey.FETCH, 12, {  # a follower's fetch needs CLUSTER_ACTION
            "replica_id": 1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
            "topics": [{"topic": "secret", "partitions": [{"partition": 0, "fetch_offset": 0,
                                                           "partition_max_bytes": 1 << 20}]}],
        })  # fmt: skip
        assert r.responses[0].partitions[0].error_code == TOPIC_DENIED
        r = c.request(
            ApiKey.LIST_OFFSETS,
            7,
            {
                "replica_id": -1,
                "topics": [
                    {"name": "secret", "partitions": [{"partition_index": 0, "timestamp": -1}]}
                ],
            },
        )
        assert r.topics[0].partitions[0].error_code == TOPIC_DENIED
        r = c.request(
            ApiKey.OFFSET_FOR_LEADER_EPOCH,
            4,
            {
                "replica_id": -1,
                "topics": [
                    {"topic": "secret", "partitions": [{"partition": 0, "leader_epoch": 0}]}
                ],
            },
        )
        assert r.topics[0].partitions[0].error_code == TOPIC_DENIED
        # Groups.
        r = c.request(ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["g-secret"]})
        assert r.coordinators[0].error_code == GROUP_DENIED
        r = c.request(
            ApiKey.FIND_COORDINATOR, 4, {"key_type": 1, "coordinator_keys": ["tx-secret"]}
        )
        assert r.coordinators[0].error_code == TXN_DENIED
        r = c.request(ApiKey.JOIN_GROUP, 5, {
            "group_id": "g-secret", "session_timeout_ms": 10000, "rebalance_timeout_ms": 10000,
            "member_id": "", "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": b""}]})  # fmt: skip
        assert r.error_code == GROUP_DENIED
        r = c.request(ApiKey.SYNC_GROUP, 3, {"group_id": "g-secret", "generation_id": 1,
                                             "member_id": "m", "assignments": []})  # fmt: skip
        assert r.error_code == GROUP_DENIED
        r = c.request(ApiKey.HEARTBEAT, 3, {"group_id": "g-secret", "generation_id": 1,
                                            "member_id": "m"})  # fmt: skip
        assert r.error_code == GROUP_DENIED
        r = c.request(
            ApiKey.LEAVE_GROUP, 3, {"group_id": "g-secret", "members": [{"member_id": "m"}]}
        )
        assert r.error_code == GROUP_DENIED
        r = c.request(ApiKey.OFFSET_COMMIT, 2, {
            "group_id": "g-secret", "generation_id_or_member_epoch": -1, "member_id": "",
            "retention_time_ms": -1,
            "topics": [{"name": "secret", "partitions": [{"partition_index": 0, "committed_offset": 5}]}],
        })  # fmt: skip
        assert r.topics[0].partitions[0].error_code == GROUP_DENIED
        r = c.request(ApiKey.OFFSET_FETCH, 7, {"group_id": "g-secret", "topics": None})
        assert r.error_code == GROUP_DENIED and r.topics == []
        r = c.request(
            ApiKey.OFFSET_DELETE,
            0,
            {
                "group_id": "g-secret",
                "topics": [{"name": "secret", "partitions": [{"partition_index": 0}]}],
            },
        )
        assert r.error_code == GROUP_DENIED
        r = c.request(ApiKey.DESCRIBE_GROUPS, 5, {"groups": ["g-secret"]})
        assert r.groups[0].error_code == GROUP_DENIED and r.groups[0].members == []
        r = c.request(ApiKey.LIST_GROUPS, 4, {"states_filter": []})
        assert r.error_code == 0 and r.groups == []  # g-secret exists, but is not shown
        r = c.request(ApiKey.DELETE_GROUPS, 2, {"groups_names": ["g-secret"]})
        assert r.results[0].error_code == GROUP_DENIED
        # Transactions and idempotence.
        r = c.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": "tx-secret",
                                                   "transaction_timeout_ms": 60000,
                                                   "producer_id": -1, "producer_epoch": -1})  # fmt: skip
        assert r.error_code == TXN_DENIED
        r = c.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None,
                                                   "transaction_timeout_ms": 60000,
                                                   "producer_id": -1, "producer_epoch": -1})  # fmt: skip
        assert r.error_code == CLUSTER_DENIED
        r = c.request(ApiKey.ADD_PARTITIONS_TO_TXN, 3, {
            "v3_and_below_transactional_id": "tx-secret", "v3_and_below_producer_id": 1,
            "v3_and_below_producer_epoch": 0,
            "v3_and_below_topics": [{"name": "secret", "partitions": [0]}]})  # fmt: skip
        assert (
            r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
            == TXN_DENIED
        )
        r = c.request(*txn_request(ApiKey.ADD_OFFSETS_TO_TXN, 3, group_id="g-secret"))
        assert r.error_code == TXN_DENIED
        r = c.request(*txn_request(ApiKey.END_TXN, 3, committed=True))
        assert r.error_code == TXN_DENIED
        r = c.request(
            *txn_request(
                ApiKey.TXN_OFFSET_COMMIT,
                3,
                group_id="g-secret",
                topics=[
                    {
                        "name": "secret",
                        "partitions": [{"partition_index": 0, "committed_offset": 1}],
                    }
                ],
            )
        )
        assert r.topics[0].partitions[0].error_code == TXN_DENIED
        r = c.request(ApiKey.DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": ["tx-secret"]})
        assert r.transaction_states[0].error_code == TXN_DENIED
        r = c.request(ApiKey.WRITE_TXN_MARKERS, 1, {"markers": [{
            "producer_id": 1, "producer_epoch": 0, "transaction_result": True,
            "topics": [{"name": "secret", "partition_indexes": [0]}], "coordinator_epoch": 0}]})  # fmt: skip
        assert r.markers[0].topics[0].partitions[0].error_code == CLUSTER_DENIED
        # Admin APIs.
        r = c.request(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": "new", "num_partitions": 1,
                                                            "replication_factor": 1}],
                                                "timeout_ms": 5000})  # fmt: skip
        assert r.topics[0].error_code == TOPIC_DENIED
        r = c.request(ApiKey.DELETE_TOPICS, 5, {"topic_names": ["secret"], "timeout_ms": 5000})
        assert r.responses[0].error_code == TOPIC_DENIED
        r = c.request(ApiKey.CREATE_PARTITIONS, 3, {"topics": [{"name": "secret", "count": 2}],
                                                    "timeout_ms": 5000})  # fmt: skip
        assert r.results[0].error_code == TOPIC_DENIED
        r = c.request(
            ApiKey.DELETE_RECORDS,
            2,
            {
                "topics": [{"name": "secret", "partitions": [{"partition_index": 0, "offset": 0}]}],
                "timeout_ms": 5000,
            },
        )
        assert r.topics[0].partitions[0].error_code == TOPIC_DENIED
        r = c.request(
            ApiKey.DESCRIBE_CONFIGS,
            4,
            {
                "resources": [
                    {"resource_type": 2, "resource_name": "secret"},
                    {"resource_type": 4, "resource_name": "1"},
                ]
            },
        )
        assert [x.error_code for x in r.results] == [TOPIC_DENIED, CLUSTER_DENIED]
        r = c.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [
            {"resource_type": 2, "resource_name": "secret",
             "configs": [{"name": "retention.ms", "config_operation": 0, "value": "1000"}]},
            {"resource_type": 4, "resource_name": "",
             "configs": [{"name": "log.cleaner.threads", "config_operation": 0, "value": "2"}]},
        ]})  # fmt: skip
        assert [x.error_code for x in r.responses] == [TOPIC_DENIED, CLUSTER_DENIED]
        r = c.request(ApiKey.DESCRIBE_LOG_DIRS, 4, {"topics": None})
        assert r.error_code == CLUSTER_DENIED and r.results == []
        r = c.request(ApiKey.DESCRIBE_ACLS, 3, {"resource_type_filter": 1, "pattern_type_filter": 1,
                                                "operation": 1, "permission_type": 1})  # fmt: skip
        assert r.error_code == CLUSTER_DENIED
        r = c.request(ApiKey.CREATE_ACLS, 3, {"creations": [{
            "resource_type": 4, "resource_name": "kafka-cluster", "resource_pattern_type": 3,
            "principal": ANON, "host": "*", "operation": 2, "permission_type": 3}]})  # fmt: skip
        assert r.results[0].error_code == CLUSTER_DENIED
        r = c.request(ApiKey.DELETE_ACLS, 3, {"filters": [{
            "resource_type_filter": 1, "pattern_type_filter": 1, "operation": 1,
            "permission_type": 1}]})  # fmt: skip
        assert r.filter_results[0].error_code == CLUSTER_DENIED
        r = c.request(
            ApiKey.ELECT_LEADERS,
            2,
            {
                "election_type": 0,
                "topic_partitions": [{"topic": "secret", "partitions": [0]}],
                "timeout_ms": 5000,
            },
        )
        assert r.error_code == CLUSTER_DENIED
        assert r.replica_election_results[0].partition_result[0].error_code == CLUSTER_DENIED
        r = c.request(
            ApiKey.ALTER_PARTITION_REASSIGNMENTS,
            0,
            {
                "timeout_ms": 5000,
                "topics": [
                    {"name": "secret", "partitions": [{"partition_index": 0, "replicas": [1]}]}
                ],
            },
        )
        assert r.error_code == CLUSTER_DENIED
        r = c.request(ApiKey.LIST_PARTITION_REASSIGNMENTS, 0, {"timeout_ms": 5000, "topics": None})
        assert r.error_code == CLUSTER_DENIED
        r = c.request(ApiKey.DESCRIBE_CLIENT_QUOTAS, 1, {"components": [], "strict": False})
        assert r.error_code == CLUSTER_DENIED
        r = c.request(ApiKey.ALTER_CLIENT_QUOTAS, 1, {"entries": [{
            "entity": [{"entity_type": "user", "entity_name": "bob"}],
            "ops": [{"key": "producer_byte_rate", "value": 1024.0, "remove": False}]}]})  # fmt: skip
        assert r.entries[0].error_code == CLUSTER_DENIED
        r = c.request(ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS, 0, {"users": None})
        assert r.error_code == CLUSTER_DENIED
        r = c.request(
            ApiKey.ALTER_USER_SCRAM_CREDENTIALS,
            0,
            {"deletions": [{"name": "bob", "mechanism": 1}], "upsertions": []},
        )
        assert [(x.user, x.error_code) for x in r.results] == [("bob", CLUSTER_DENIED)]
        r = c.request(
            ApiKey.UPDATE_FEATURES,
            1,
            {
                "timeout_ms": 5000,
                "feature_updates": [
                    {"feature": "transaction.version", "max_version_level": 2, "upgrade_type": 1}
                ],
            },
        )
        assert r.error_code == CLUSTER_DENIED
        # The cluster as a whole stays describable, without operations.
        r = c.request(ApiKey.DESCRIBE_CLUSTER, 1, {"include_cluster_authorized_operations": True})
        assert r.error_code == 0 and r.authorized_operations == set()
    finally:
        c.close()


def test_acls_grant_what_they_name_to_real_clients(make_broker, tmp_path):
    acls = [
        acl(ANON, ACLOperation.WRITE, ResourceType.TOPIC, "open"),
        acl(ANON, ACLOperation.READ, ResourceType.TOPIC, "open"),
        acl(
            ANON,
            ACLOperation.WRITE,
            ResourceType.TOPIC,
            "w-",
            pattern=ACLResourcePatternType.PREFIXED,
        ),
        acl(
            ANON,
            ACLOperation.READ,
            ResourceType.GROUP,
            "g-",
            pattern=ACLResourcePatternType.PREFIXED,
        ),
        # Every g- group but this one: DENY wins. (A DENY of READ alone would leave it
        # describable, hence listed: in Kafka a DENY implies nothing, only an ALLOW does.)
        acl(ANON, ACLOperation.ALL, ResourceType.GROUP, "g-secret", ACLPermissionType.DENY),
    ]
    b = start_locked(make_broker, tmp_path, acls)
    bs = b.bootstrap_servers
    # kafka-python: WRITE on 'open' makes the idempotent producer's InitProducerId pass
    # (KIP-679), the send works; 'secret' is refused and not even listed.
    producer = KafkaProducer(bootstrap_servers=bs, enable_idempotence=True, max_block_ms=10000)
    try:
        producer.send("open", b"hello").get(timeout=20)
        with pytest.raises(kerrors.TopicAuthorizationFailedError):
            producer.send("secret", b"x").get(timeout=20)
    finally:
        producer.close()
    consumer = KafkaConsumer("open", bootstrap_servers=bs, group_id="g-readers",
                             auto_offset_reset="earliest", consumer_timeout_ms=15000)  # fmt: skip
    try:
        assert consumer.topics() == {"open"}
        assert next(iter(consumer)).value == b"hello"
        consumer.commit()
    finally:
        consumer.close()
    secret = KafkaConsumer("open", bootstrap_servers=bs, group_id="g-secret",
                           auto_offset_reset="earliest", consumer_timeout_ms=15000)  # fmt: skip
    try:
        with pytest.raises(kerrors.GroupAuthorizationFailedError):
            next(iter(secret))
    finally:
        secret.close()
    # ListGroups shows the group ANONYMOUS may describe (READ implies DESCRIBE), not g-secret.
    c = RawClient(b.port)
    try:
        r = c.request(ApiKey.LIST_GROUPS, 4, {"states_filter": []})
        assert sorted(g.group_id for g in r.groups) == ["g-readers"]
        # WRITE without CREATE: a produce to a topic that doesn't exist creates nothing (Kafka
        # never creates on Produce; auto-creation here takes CREATE, as through Metadata).
        r = c.request(ApiKey.PRODUCE, 9, produce_body("w-new", bytes(values_batch([b"v"]))))
        assert r.responses[0].partition_responses[0].error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION
        listed = c.request(ApiKey.METADATA, 12, {"topics": None}).topics
        assert "w-new" not in [t.name for t in listed]
        # Authorized operations, when asked: READ (3), WRITE (4) and DESCRIBE (8) they imply.
        r = c.request(ApiKey.METADATA, 12, {"topics": [{"name": "open"}],
                                            "include_topic_authorized_operations": True})  # fmt: skip
        assert r.topics[0].authorized_operations == {3, 4, 8}
        r = c.request(ApiKey.DESCRIBE_GROUPS, 5, {"groups": ["g-readers"],
                                                  "include_authorized_operations": True})  # fmt: skip
        assert r.groups[0].authorized_operations == {3, 8}
    finally:
        c.close()


def test_confluent_kafka_and_aiokafka_see_kafkas_errors(make_broker, tmp_path):
    import asyncio

    import aiokafka
    import confluent_kafka

    b = start_locked(
        make_broker, tmp_path, [acl(ANON, ACLOperation.DESCRIBE, ResourceType.TOPIC, "open")]
    )
    bs = b.bootstrap_servers
    errors = []
    p = confluent_kafka.Producer({"bootstrap.servers": bs, "enable.idempotence": False,
                                  "message.timeout.ms": 10000})  # fmt: skip
    p.produce("open", b"v", on_delivery=lambda err, _m: errors.append(err))
    p.flush(20)
    assert [e.code() for e in errors] == [confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED]
    md = p.list_topics(timeout=10)
    assert set(md.topics) == {"open"}  # DESCRIBE only: listed, not writable
    del p

    async def consume() -> None:
        consumer = aiokafka.AIOKafkaConsumer("secret", bootstrap_servers=bs, group_id=None,
                                             auto_offset_reset="earliest")  # fmt: skip
        try:
            with pytest.raises(aiokafka.errors.TopicAuthorizationFailedError):
                await asyncio.wait_for(consumer.start(), 20)
        finally:
            await consumer.stop()

    asyncio.run(consume())


def test_hosts_and_the_wildcard_principal(make_broker, tmp_path):
    acls = [
        acl("User:*", ACLOperation.DESCRIBE, ResourceType.TOPIC, "open", host="10.9.9.9"),
        acl("User:*", ACLOperation.DESCRIBE, ResourceType.TOPIC, "secret"),
        acl(
            ANON,
            ACLOperation.DESCRIBE,
            ResourceType.TOPIC,
            "secret",
            ACLPermissionType.DENY,
            host="127.0.0.1",
        ),
    ]
    b = start_locked(make_broker, tmp_path, acls)
    c = RawClient(b.port)
    try:
        md = c.request(ApiKey.METADATA, 12, {"topics": [{"name": "open"}, {"name": "secret"}]})
        assert [(t.name, t.error_code) for t in md.topics] == [("open", 29), ("secret", 29)]
    finally:
        c.close()


def test_allow_everyone_if_no_acl_found(make_broker, tmp_path):
    b = start_locked(
        make_broker,
        tmp_path,
        [acl("User:bob", ACLOperation.READ, ResourceType.TOPIC, "secret")],
        **{"allow.everyone.if.no.acl.found": "true"},
    )
    c = RawClient(b.port)
    try:
        md = c.request(ApiKey.METADATA, 12, {"topics": None})
        # secret has an ACL (for bob), the others none.
        assert sorted(t.name for t in md.topics) == ["__consumer_offsets", "open"]
    finally:
        c.close()


def test_acl_apis_with_kafka_python_admin(make_broker, tmp_path):
    b = make_broker({**AUTHORIZER, "super.users": "User:ANONYMOUS;User:admin"})
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
    try:
        made = [
            acl("User:alice", ACLOperation.READ, ResourceType.TOPIC, "orders"),
            acl(
                "User:alice",
                ACLOperation.WRITE,
                ResourceType.TOPIC,
                "orders-",
                pattern=ACLResourcePatternType.PREFIXED,
            ),
            acl("User:bob", ACLOperation.ALL, ResourceType.GROUP, "*", ACLPermissionType.DENY),
            acl("User:bob", ACLOperation.WRITE, ResourceType.TRANSACTIONAL_ID, "tx"),
        ]
        result = admin.create_acls(made)
        assert len(result["succeeded"]) == 4 and not result["failed"]
        bad = admin.create_acls([acl("User:x", ACLOperation.ALTER, ResourceType.CLUSTER, "other")])
        assert bad == {"succeeded": [], "failed": [kerrors.InvalidRequestError]}

        def described(**kw):
            flt = ACLFilter(kw.pop("principal", None), None, ACLOperation.ANY, ACLPermissionType.ANY,
                            ResourcePatternFilter(kw.pop("rtype", ResourceType.ANY), kw.pop("name", None),
                                                  kw.pop("pattern", ACLResourcePatternType.ANY)))  # fmt: skip
            acls, error = admin.describe_acls(flt)
            assert error is kerrors.NoError
            return sorted((a.principal, a.resource_pattern.resource_type.name, a.resource_pattern.resource_name,
                           a.resource_pattern.pattern_type.name) for a in acls)  # fmt: skip

        assert len(described()) == 4
        # MATCH: the ACLs that apply to topic orders-1 (the prefixed one only).
        assert described(
            rtype=ResourceType.TOPIC, name="orders-1", pattern=ACLResourcePatternType.MATCH
        ) == [("User:alice", "TOPIC", "orders-", "PREFIXED")]
        assert described(principal="User:bob") == [
            ("User:bob", "GROUP", "*", "LITERAL"),
            ("User:bob", "TRANSACTIONAL_ID", "tx", "LITERAL"),
        ]
        deleted = admin.delete_acls([ACLFilter("User:alice", None, ACLOperation.ANY, ACLPermissionType.ANY,
                                               ResourcePatternFilter(ResourceType.TOPIC, None,
                                                                     ACLResourcePatternType.ANY))])  # fmt: skip
        assert len(deleted[0][1]) == 2
        assert [p for p, *_ in described()] == ["User:bob", "User:bob"]
    finally:
        admin.close()
    # The single broker's store: <data dir>/acls.json.
    with open(os.path.join(b.data_dir, "acls.json")) as f:
        stored = json.load(f)
    assert sorted(r["resourceType"] for r in stored["resources"]) == ["Group", "TransactionalId"]


def test_acl_apis_without_an_authorizer(broker):
    c = RawClient(broker.port)
    try:
        r = c.request(ApiKey.DESCRIBE_ACLS, 3, {"resource_type_filter": 1, "pattern_type_filter": 1,
                                                "operation": 1, "permission_type": 1})  # fmt: skip
        assert (r.error_code, r.error_message) == (54, "No Authorizer is configured.")
    finally:
        c.close()


def kafka_acls(capsys, monkeypatch, bs: str, *args: str, stdin: str = ""):
    """Run kafka-acls in this process (its main(), as the console script does)."""
    from types import SimpleNamespace

    from pykbroker.cli import acls

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    kafka_logger = logging.getLogger("kafka")
    level = kafka_logger.level  # the tool quiets kafka-python's logger: put it back after
    capsys.readouterr()
    try:
        code = acls.main(["--bootstrap-server", bs, *args])
    finally:
        kafka_logger.setLevel(level)
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def test_kafka_acls_tool(make_broker, broker, capsys, monkeypatch):
    # Kafka's texts; the ACLs of a resource come in operation-code order (Kafka's own order is
    # a HashSet's).
    r = kafka_acls(capsys, monkeypatch, broker.bootstrap_servers, "--list")  # no authorizer there
    assert (r.returncode, r.stdout) == (1, "Error while executing ACL command: "
            "org.apache.kafka.common.errors.SecurityDisabledException: No Authorizer is configured.\n")  # fmt: skip
    b = make_broker({**AUTHORIZER, "super.users": ANON})
    bs = b.bootstrap_servers
    r = kafka_acls(capsys, monkeypatch, bs, "--add", "--topic", "t")
    assert r.returncode == 1
    assert (
        "You must specify one of: --allow-principal, --deny-principal when trying to add ACLs."
        in r.stderr
    )
    r = kafka_acls(capsys, monkeypatch, bs, "--list", "--add")
    assert "Command must include exactly one action: --list, --add, --remove. " in r.stderr
    r = kafka_acls(capsys, monkeypatch, bs, "--add", "--deny-principal", "User:eve", "--deny-host", "10.0.0.7",
                   "--operation", "Describe", "--operation", "AlterConfigs", "--group", "g")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "Adding ACLs for resource `ResourcePattern(resourceType=GROUP, name=g, patternType=LITERAL)`: \n"
        " \t(principal=User:eve, host=10.0.0.7, operation=DESCRIBE, permissionType=DENY)\n"
        "\t(principal=User:eve, host=10.0.0.7, operation=ALTER_CONFIGS, permissionType=DENY)\n\n"
    )  # fmt: skip
    r = kafka_acls(capsys, monkeypatch, bs, "--list", "--group", "g")
    assert r.stdout == (
        "Current ACLs for resource `ResourcePattern(resourceType=GROUP, name=g, patternType=LITERAL)`:\n"
        "\t(principal=User:eve, host=10.0.0.7, operation=DESCRIBE, permissionType=DENY)\n"
        "\t(principal=User:eve, host=10.0.0.7, operation=ALTER_CONFIGS, permissionType=DENY)\n\n"
    )  # fmt: skip
    # --remove asks first; "n" keeps them, "y" removes them.
    question = ("Are you sure you want to delete all ACLs for resource filter "
                "`ResourcePattern(resourceType=GROUP, name=g, patternType=LITERAL)`? (y/n)\n")  # fmt: skip
    r = kafka_acls(capsys, monkeypatch, bs, "--remove", "--group", "g", stdin="n\n")
    assert (r.returncode, r.stdout) == (0, question)
    assert kafka_acls(capsys, monkeypatch, bs, "--list").stdout != ""
    r = kafka_acls(capsys, monkeypatch, bs, "--remove", "--group", "g", stdin="y\n")
    assert (r.returncode, r.stdout) == (0, question)
    assert kafka_acls(capsys, monkeypatch, bs, "--list").stdout == ""


def test_share_group_apis(make_broker):
    import uuid

    b = make_broker({**AUTHORIZER, "group.share.enable": "true"})
    c = RawClient(b.port)
    try:
        r = c.request(ApiKey.SHARE_GROUP_HEARTBEAT, 1, {
            "group_id": "sg", "member_id": str(uuid.uuid4()), "member_epoch": 0,
            "subscribed_topic_names": ["t"]})  # fmt: skip
        assert r.error_code == GROUP_DENIED
        r = c.request(ApiKey.SHARE_FETCH, 1, {"group_id": "sg", "member_id": "m",
                                              "share_session_epoch": 0, "topics": []})  # fmt: skip
        assert r.error_code == GROUP_DENIED
        r = c.request(
            ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS, 0, {"groups": [{"group_id": "sg", "topics": None}]}
        )
        assert r.groups[0].error_code == GROUP_DENIED
        # Broker-to-coordinator state APIs need CLUSTER_ACTION.
        r = c.request(
            ApiKey.READ_SHARE_GROUP_STATE,
            0,
            {
                "group_id": "sg",
                "topics": [
                    {"topic_id": uuid.uuid4(), "partitions": [{"partition": 0, "leader_epoch": 0}]}
                ],
            },
        )
        assert r.results[0].partitions[0].error_code == CLUSTER_DENIED
    finally:
        c.close()

"""ACLs on a ZooKeeper cluster: stored in Kafka's znodes (/kafka-acl/<Type>/<name>,
/kafka-acl-extended/prefixed/<Type>/<name>, change notifications under /kafka-acl-changes and
/kafka-acl-extended-changes), so an ACL created through one broker is enforced by the other,
and one written the way Kafka's own AclAuthorizer writes it is picked up by both."""

from __future__ import annotations

import json
import sys

import pytest
from cluster_helpers import Cluster, wait_until
from helpers import RawClient
from kazoo.client import KazooClient
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey

missing = zookeeper_missing()
if missing:
    print(f"\nSKIPPING ACL cluster tests: {missing}", file=sys.stderr)
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

ANON = "User:ANONYMOUS"
TOPIC, GROUP, CLUSTER = 2, 3, 4  # ResourceType codes
LITERAL, PREFIXED = 3, 4
ALL, DESCRIBE = 2, 8  # AclOperation codes
DENY, ALLOW = 2, 3


def request(port: int, api_key: int, version: int, body: dict):
    c = RawClient(port)
    try:
        return c.request(api_key, version, body)
    finally:
        c.close()


def metadata_codes(port: int, names: list[str]) -> list[tuple[str, int]]:
    r = request(port, ApiKey.METADATA, 12, {"topics": [{"name": n} for n in names],
                                            "allow_auto_topic_creation": False})  # fmt: skip
    return [(t.name, t.error_code) for t in r.topics]


def creation(rtype, name, pattern, op, perm, principal=ANON) -> dict:
    return {"resource_type": rtype, "resource_name": name, "resource_pattern_type": pattern,
            "principal": principal, "host": "*", "operation": op, "permission_type": perm}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(
        str(tmp_path_factory.mktemp("acl-cluster")), size=2,
        overrides={"authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
                   "allow.everyone.if.no.acl.found": "true",
                   "offsets.topic.replication.factor": "2",
                   "transaction.state.log.replication.factor": "2"},
    ).start()  # fmt: skip
    zk = KazooClient(hosts=f"{c.zk.connect}/pykbroker")
    zk.start()
    yield c, zk
    zk.stop()
    c.stop()


def test_acls_follow_zookeeper_on_every_broker(cluster):
    c, zk = cluster
    p1, p2 = c.brokers[1].port, c.brokers[2].port
    r = request(p1, ApiKey.CREATE_TOPICS, 7, {"topics": [
        {"name": n, "num_partitions": 1, "replication_factor": 2} for n in ("open", "secret", "hidden-1")
    ], "timeout_ms": 10000})  # fmt: skip
    assert [t.error_code for t in r.topics] == [0, 0, 0]
    wait_until(lambda: all(e == 0 for _, e in metadata_codes(p2, ["open", "secret", "hidden-1"])),
               what="topics on broker 2")  # fmt: skip
    # Through broker 1: ALL on the cluster for ANONYMOUS (it keeps administering), a literal
    # DENY on secret and a prefixed one on hidden-.
    r = request(p1, ApiKey.CREATE_ACLS, 3, {"creations": [
        creation(CLUSTER, "kafka-cluster", LITERAL, ALL, ALLOW),
        creation(TOPIC, "secret", LITERAL, DESCRIBE, DENY),
        creation(TOPIC, "hidden-", PREFIXED, ALL, DENY),
    ]})  # fmt: skip
    assert [x.error_code for x in r.results] == [0, 0, 0]
    # Kafka's znodes.
    data, _ = zk.get("/kafka-acl/Topic/secret")
    assert json.loads(data) == {
        "version": 1,
        "acls": [
            {"principal": ANON, "permissionType": "Deny", "operation": "Describe", "host": "*"}
        ],
    }
    data, _ = zk.get("/kafka-acl-extended/prefixed/Topic/hidden-")
    assert json.loads(data)["acls"][0]["operation"] == "All"
    assert (
        json.loads(zk.get("/kafka-acl/Cluster/kafka-cluster")[0])["acls"][0]["permissionType"]
        == "Allow"
    )
    changes = [
        zk.get(f"/kafka-acl-changes/{n}")[0] for n in sorted(zk.get_children("/kafka-acl-changes"))
    ]
    assert b"Topic:secret" in changes and b"Cluster:kafka-cluster" in changes
    extended = zk.get_children("/kafka-acl-extended-changes")
    assert all(n.startswith("acl_changes_") for n in extended) and extended
    # Broker 2 enforces them.
    wait_until(lambda: metadata_codes(p2, ["open", "secret", "hidden-1"])
               == [("open", 0), ("secret", 29), ("hidden-1", 29)], what="broker 2 enforcing")  # fmt: skip
    # Written the way Kafka's AclAuthorizer writes: the znode, then a change notification.
    zk.create(
        "/kafka-acl/Group/g-locked",
        json.dumps(
            {
                "version": 1,
                "acls": [
                    {
                        "principal": "User:*",
                        "permissionType": "Deny",
                        "operation": "All",
                        "host": "*",
                    }
                ],
            }
        ).encode(),
    )
    zk.create("/kafka-acl-changes/acl_changes_", b"Group:g-locked", sequence=True)

    def find(port):
        r = request(
            port, ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["g-locked"]}
        )
        return r.coordinators[0].error_code

    wait_until(lambda: find(p1) == 30 and find(p2) == 30, what="both brokers refusing the group")
    # Deleted through broker 2, gone from ZooKeeper and from broker 1's decisions.
    r = request(p2, ApiKey.DELETE_ACLS, 3, {"filters": [{
        "resource_type_filter": TOPIC, "resource_name_filter": None, "pattern_type_filter": 1,
        "principal_filter": ANON, "host_filter": None, "operation": 1, "permission_type": DENY}]})  # fmt: skip
    assert len(r.filter_results[0].matching_acls) == 2
    assert zk.exists("/kafka-acl/Topic/secret") is None
    wait_until(lambda: metadata_codes(p1, ["secret", "hidden-1"]) == [("secret", 0), ("hidden-1", 0)],
               what="broker 1 following the deletion")  # fmt: skip
    r = request(p1, ApiKey.DESCRIBE_ACLS, 3, {
        "resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1,
        "principal_filter": None, "host_filter": None, "operation": 1, "permission_type": 1})  # fmt: skip
    assert sorted((x.resource_type, x.resource_name) for x in r.resources) == [
        (GROUP, "g-locked"), (CLUSTER, "kafka-cluster")]  # fmt: skip
    # Replication went on throughout (a follower's fetch needs CLUSTER_ACTION, not topic ACLs).
    r = request(p1, ApiKey.METADATA, 12, {"topics": [{"name": "secret"}]})
    assert sorted(r.topics[0].partitions[0].isr_nodes) == [1, 2]

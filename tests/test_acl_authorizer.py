"""The sans-io ACL authorizer against Kafka's documented semantics (AclAuthorizer /
StandardAuthorizer: docs "Authorization and ACLs", KIP-11, KIP-290, KIP-679)."""

import json

import pytest

from pykbroker.acl.authorizer import (
    AccessControlEntry,
    AclAuthorizer,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
    parse_super_users,
)
from pykbroker.acl.store import (
    decode_acls,
    decode_change,
    encode_acls,
    encode_change,
    resource_path,
)

Op, RT, PT = AclOperation, ResourceType, PatternType
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
HOST = "10.0.0.1"


def acl(rt, name, principal, op, perm=ALLOW, host="*", pt=PT.LITERAL):
    return AclBinding(ResourcePattern(rt, name, pt), AccessControlEntry(principal, host, op, perm))


def make(*bindings, **kw):
    a = AclAuthorizer(**kw)
    for b in bindings:
        a.add(b)
    return a


def can(a, principal, op, rt, name, host=HOST):
    return a.authorize(principal, host, op, rt, name)


def test_no_acls_denies_unless_allow_everyone():
    assert not can(make(), "User:alice", Op.READ, RT.TOPIC, "t")
    assert can(make(allow_if_no_acl=True), "User:alice", Op.READ, RT.TOPIC, "t")


def test_allow_everyone_applies_only_to_resources_without_any_acl():
    # An ACL for bob on t means t has ACLs: alice is denied even with allow.everyone...
    a = make(acl(RT.TOPIC, "t", "User:bob", Op.READ), allow_if_no_acl=True)
    assert not can(a, "User:alice", Op.READ, RT.TOPIC, "t")
    assert can(a, "User:bob", Op.READ, RT.TOPIC, "t")
    assert can(a, "User:alice", Op.READ, RT.TOPIC, "other")  # ...but not on other topics


def test_literal_acl_names_one_resource_and_one_type():
    a = make(acl(RT.TOPIC, "t", "User:alice", Op.READ))
    assert can(a, "User:alice", Op.READ, RT.TOPIC, "t")
    assert not can(a, "User:alice", Op.READ, RT.TOPIC, "t2")
    assert not can(a, "User:alice", Op.READ, RT.GROUP, "t")
    assert not can(a, "User:alice", Op.WRITE, RT.TOPIC, "t")
    assert not can(a, "User:bob", Op.READ, RT.TOPIC, "t")


def test_wildcard_resource_and_wildcard_principal():
    a = make(acl(RT.TOPIC, "*", "User:alice", Op.READ), acl(RT.GROUP, "g", "User:*", Op.READ))
    assert can(a, "User:alice", Op.READ, RT.TOPIC, "anything")
    assert not can(a, "User:bob", Op.READ, RT.TOPIC, "anything")
    assert can(a, "User:bob", Op.READ, RT.GROUP, "g")
    assert can(a, "User:carol", Op.READ, RT.GROUP, "g")


def test_prefixed_patterns():
    a = make(acl(RT.TOPIC, "fin-", "User:alice", Op.WRITE, pt=PT.PREFIXED),
             acl(RT.TOPIC, "fin-secret", "User:alice", Op.WRITE, DENY, pt=PT.PREFIXED))  # fmt: skip
    assert can(a, "User:alice", Op.WRITE, RT.TOPIC, "fin-")
    assert can(a, "User:alice", Op.WRITE, RT.TOPIC, "fin-ledger")
    assert not can(a, "User:alice", Op.WRITE, RT.TOPIC, "fin")
    assert not can(a, "User:alice", Op.WRITE, RT.TOPIC, "marketing")
    assert not can(a, "User:alice", Op.WRITE, RT.TOPIC, "fin-secret-2")  # the longer DENY prefix
    # A prefixed pattern named "*" is a literal prefix "*", not a wildcard.
    b = make(acl(RT.TOPIC, "*", "User:alice", Op.READ, pt=PT.PREFIXED))
    assert not can(b, "User:alice", Op.READ, RT.TOPIC, "t")
    assert can(b, "User:alice", Op.READ, RT.TOPIC, "*t")


def test_deny_wins_over_allow_from_any_pattern():
    a = make(acl(RT.TOPIC, "*", "User:*", Op.ALL),
             acl(RT.TOPIC, "t", "User:bob", Op.READ, DENY))  # fmt: skip
    assert can(a, "User:alice", Op.READ, RT.TOPIC, "t")
    assert not can(a, "User:bob", Op.READ, RT.TOPIC, "t")
    assert can(a, "User:bob", Op.WRITE, RT.TOPIC, "t")  # the DENY names READ only
    assert can(a, "User:bob", Op.READ, RT.TOPIC, "u")
    # A DENY of ALL denies every operation; a DENY for User:* denies everyone.
    b = make(acl(RT.TOPIC, "t", "User:alice", Op.ALL), acl(RT.TOPIC, "t", "User:*", Op.ALL, DENY))
    assert not can(b, "User:alice", Op.DESCRIBE, RT.TOPIC, "t")


def test_implied_operations():
    # READ, WRITE, DELETE and ALTER each imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS.
    for op in (Op.READ, Op.WRITE, Op.DELETE, Op.ALTER):
        a = make(acl(RT.TOPIC, "t", "User:alice", op))
        assert can(a, "User:alice", Op.DESCRIBE, RT.TOPIC, "t"), op
        assert not can(a, "User:alice", Op.DESCRIBE_CONFIGS, RT.TOPIC, "t"), op
    for op in (Op.CREATE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS):
        a = make(acl(RT.TOPIC, "t", "User:alice", op))
        assert not can(a, "User:alice", Op.DESCRIBE, RT.TOPIC, "t"), op
    a = make(acl(RT.TOPIC, "t", "User:alice", Op.ALTER_CONFIGS))
    assert can(a, "User:alice", Op.DESCRIBE_CONFIGS, RT.TOPIC, "t")
    a = make(acl(RT.TOPIC, "t", "User:alice", Op.DESCRIBE))
    assert not can(a, "User:alice", Op.READ, RT.TOPIC, "t")  # implication is one way
    # ALL allows every operation.
    a = make(acl(RT.CLUSTER, "kafka-cluster", "User:alice", Op.ALL))
    for op in (Op.CREATE, Op.ALTER, Op.CLUSTER_ACTION, Op.IDEMPOTENT_WRITE, Op.DESCRIBE):
        assert can(a, "User:alice", op, RT.CLUSTER, "kafka-cluster")


def test_deny_is_not_implied():
    # A DENY of READ does not deny DESCRIBE (Kafka only matches the operation itself or ALL).
    a = make(
        acl(RT.TOPIC, "t", "User:alice", Op.ALL), acl(RT.TOPIC, "t", "User:alice", Op.READ, DENY)
    )
    assert not can(a, "User:alice", Op.READ, RT.TOPIC, "t")
    assert can(a, "User:alice", Op.DESCRIBE, RT.TOPIC, "t")


def test_hosts():
    a = make(acl(RT.TOPIC, "t", "User:alice", Op.READ, host="10.0.0.1"),
             acl(RT.TOPIC, "t", "User:bob", Op.READ),
             acl(RT.TOPIC, "t", "User:bob", Op.READ, DENY, host="10.0.0.9"))  # fmt: skip
    assert can(a, "User:alice", Op.READ, RT.TOPIC, "t", host="10.0.0.1")
    assert not can(a, "User:alice", Op.READ, RT.TOPIC, "t", host="10.0.0.2")
    assert can(a, "User:bob", Op.READ, RT.TOPIC, "t", host="10.0.0.1")
    assert not can(a, "User:bob", Op.READ, RT.TOPIC, "t", host="10.0.0.9")


def test_super_users():
    assert parse_super_users("User:admin; User:ops;;") == {"User:admin", "User:ops"}
    a = make(acl(RT.TOPIC, "t", "User:*", Op.ALL, DENY), super_users={"User:admin"})
    assert can(a, "User:admin", Op.DELETE, RT.TOPIC, "t")  # even against a DENY
    assert not can(a, "User:ops", Op.DELETE, RT.TOPIC, "t")


def test_changes_invalidate_cached_decisions():
    a = make()
    assert not can(a, "User:alice", Op.READ, RT.TOPIC, "t")
    binding = acl(RT.TOPIC, "t", "User:alice", Op.READ)
    assert a.add(binding) and not a.add(binding)
    assert can(a, "User:alice", Op.READ, RT.TOPIC, "t")
    assert a.remove(binding) and not a.remove(binding)
    assert not can(a, "User:alice", Op.READ, RT.TOPIC, "t")
    assert a.count == 0 and a.bindings() == []


def test_authorize_any_by_resource_type():
    # KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    a = make(acl(RT.TOPIC, "t", "User:alice", Op.WRITE))
    assert a.authorize_any("User:alice", HOST, Op.WRITE, RT.TOPIC)
    assert not a.authorize_any("User:bob", HOST, Op.WRITE, RT.TOPIC)
    a.add(acl(RT.TOPIC, "t", "User:alice", Op.WRITE, DENY))
    assert not a.authorize_any("User:alice", HOST, Op.WRITE, RT.TOPIC)
    b = make(acl(RT.TOPIC, "fin-", "User:alice", Op.WRITE, pt=PT.PREFIXED),
             acl(RT.TOPIC, "fin", "User:alice", Op.WRITE, DENY, pt=PT.PREFIXED))  # fmt: skip
    assert not b.authorize_any("User:alice", HOST, Op.WRITE, RT.TOPIC)
    c = make(
        acl(RT.TOPIC, "x", "User:alice", Op.WRITE), acl(RT.TOPIC, "*", "User:*", Op.WRITE, DENY)
    )
    assert not c.authorize_any("User:alice", HOST, Op.WRITE, RT.TOPIC)


def test_filters():
    bindings = [
        acl(RT.TOPIC, "t", "User:alice", Op.READ),
        acl(RT.TOPIC, "*", "User:bob", Op.WRITE),
        acl(RT.TOPIC, "t-", "User:carol", Op.READ, pt=PT.PREFIXED),
        acl(RT.TOPIC, "x-", "User:carol", Op.READ, pt=PT.PREFIXED),
        acl(RT.GROUP, "t", "User:alice", Op.READ, DENY),
    ]
    a = make(*bindings)

    def names(**kw):
        return sorted((b.pattern.resource_type.name, b.pattern.name, b.entry.principal)
                      for b in a.bindings(AclBindingFilter(**kw)))  # fmt: skip

    assert len(a.bindings(AclBindingFilter())) == 5
    # LITERAL (the default of kafka-acls): exact pattern type and name.
    assert names(resource_type=RT.TOPIC, name="t", pattern_type=PT.LITERAL) == [
        ("TOPIC", "t", "User:alice")
    ]
    # ANY: every pattern type, exact name.
    assert names(name="t", pattern_type=PT.ANY) == [
        ("GROUP", "t", "User:alice"),
        ("TOPIC", "t", "User:alice"),
    ]
    # MATCH: every pattern that applies to the resource t-1.
    assert names(resource_type=RT.TOPIC, name="t-1", pattern_type=PT.MATCH) == [
        ("TOPIC", "*", "User:bob"),
        ("TOPIC", "t-", "User:carol"),
    ]
    assert names(principal="User:carol") == [
        ("TOPIC", "t-", "User:carol"),
        ("TOPIC", "x-", "User:carol"),
    ]
    assert names(permission_type=DENY) == [("GROUP", "t", "User:alice")]
    assert names(operation=Op.WRITE, host="*") == [("TOPIC", "*", "User:bob")]
    assert AclBindingFilter(operation=Op.UNKNOWN).unknown_field() == "operation"


@pytest.mark.parametrize(
    "binding,path",
    [
        (acl(RT.TOPIC, "t", "User:alice", Op.READ), "/kafka-acl/Topic/t"),
        (acl(RT.TRANSACTIONAL_ID, "tx", "User:a", Op.WRITE), "/kafka-acl/TransactionalId/tx"),
        (acl(RT.DELEGATION_TOKEN, "d", "User:a", Op.DESCRIBE), "/kafka-acl/DelegationToken/d"),
        (acl(RT.GROUP, "g-", "User:a", Op.READ, pt=PT.PREFIXED),
         "/kafka-acl-extended/prefixed/Group/g-"),
    ],
)  # fmt: skip
def test_zookeeper_layout(binding, path):
    assert resource_path(binding.pattern) == path


def test_zookeeper_encoding_is_kafkas():
    entries = [AccessControlEntry("User:alice", "*", Op.DESCRIBE_CONFIGS, ALLOW),
               AccessControlEntry("User:bob", "10.0.0.1", Op.IDEMPOTENT_WRITE, DENY)]  # fmt: skip
    body = json.loads(encode_acls(entries))
    assert body == {"version": 1, "acls": [
        {"principal": "User:alice", "permissionType": "Allow", "operation": "DescribeConfigs",
         "host": "*"},
        {"principal": "User:bob", "permissionType": "Deny", "operation": "IdempotentWrite",
         "host": "10.0.0.1"}]}  # fmt: skip
    # What Kafka's AclAuthorizer writes, read back.
    kafka = b'{"version":1,"acls":[{"principal":"User:x","permissionType":"Allow","operation":"ClusterAction","host":"*"}]}'
    assert decode_acls(kafka) == [AccessControlEntry("User:x", "*", Op.CLUSTER_ACTION, ALLOW)]
    lit = ResourcePattern(RT.TOPIC, "t")
    assert encode_change(lit) == ("/kafka-acl-changes", b"Topic:t")
    assert decode_change(*encode_change(lit)) == lit
    pre = ResourcePattern(RT.GROUP, "g", PT.PREFIXED)
    path, data = encode_change(pre)
    assert path == "/kafka-acl-extended-changes"
    assert json.loads(data) == {"version": 1, "resourceType": "Group", "name": "g",
                                "patternType": "Prefixed"}  # fmt: skip
    assert decode_change(path, data) == pre


def test_kafka_tostring_formats():
    # kafka-acls prints these (ResourcePattern.toString, AccessControlEntry.toString).
    b = acl(RT.TOPIC, "t", "User:alice", Op.READ)
    assert str(b.pattern) == "ResourcePattern(resourceType=TOPIC, name=t, patternType=LITERAL)"
    assert str(b.entry) == "(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)"


def test_not_ready_until_loaded():
    # The broker's authorizer answers nothing before its ACLs are read: an early request fails
    # (its connection closes) rather than being judged against no ACLs.
    from pykbroker.acl.authorizer import AuthorizerNotReady

    a = AclAuthorizer(super_users={"User:admin"}, allow_if_no_acl=True, ready=False)
    with pytest.raises(AuthorizerNotReady):
        a.authorize("User:admin", HOST, Op.READ, RT.TOPIC, "t")
    with pytest.raises(AuthorizerNotReady):
        a.authorize_any("User:alice", HOST, Op.WRITE, RT.TOPIC)
    a.ready = True
    assert a.authorize("User:alice", HOST, Op.READ, RT.TOPIC, "t")


def test_authorizer_class_names():
    from pykbroker.config import BrokerConfig, ConfigError

    for name in ("kafka.security.authorizer.AclAuthorizer",
                 "org.apache.kafka.metadata.authorizer.StandardAuthorizer"):  # fmt: skip
        assert BrokerConfig({"authorizer.class.name": name}).get("authorizer.class.name") == name
    with pytest.raises(ConfigError, match="authorizer.class.name"):
        BrokerConfig({"authorizer.class.name": "com.example.MyAuthorizer"})
    assert BrokerConfig({}).get("allow.everyone.if.no.acl.found") is False

"""Semantics of the API versions Kafka 4.1 added to those pykbroker already served: ListOffsets
v8-v10, Metadata v13, DescribeCluster v2, FindCoordinator v5-v6, DescribeGroups v6, ListGroups
v5 (ListTransactions v2 is in test_transactions_protocol.py)."""

from __future__ import annotations

import pytest
from helpers import RawClient
from wire import produce_body, values_batch

from protocol.apis import ApiKey

# Kafka's error codes and special timestamps (ListOffsetsRequest).
GROUP_ID_NOT_FOUND = 69
EARLIEST_LOCAL_TIMESTAMP, LATEST_TIERED_TIMESTAMP = -4, -5


@pytest.fixture
def c(broker):
    client = RawClient(broker.port)
    yield client
    client.close()


def list_offsets(c, version: int, topic: str, timestamp: int):
    body = {"replica_id": -1, "isolation_level": 0, "timeout_ms": 1000, "topics": [
        {"name": topic, "partitions": [
            {"partition_index": 0, "current_leader_epoch": -1, "timestamp": timestamp}]}]}  # fmt: skip
    return c.request(ApiKey.LIST_OFFSETS, version, body).topics[0].partitions[0]


@pytest.mark.parametrize("version", [8, 9, 10])
def test_list_offsets_earliest_local_and_latest_tiered(c, version):
    """Without tiered storage the local log is the whole log: the earliest local offset is the
    log start offset (moved here by DeleteRecords), and the latest tiered offset is -1 with
    leader epoch -1 and no error (Kafka's UnifiedLog with remote storage off)."""
    topic = f"lo{version}"
    for _ in range(2):
        c.request(ApiKey.PRODUCE, 9, produce_body(topic, bytes(values_batch([b"a", b"b"]))))
    r = c.request(ApiKey.DELETE_RECORDS, 2, {"topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "offset": 3}]}], "timeout_ms": 5000})  # fmt: skip
    assert r.topics[0].partitions[0].error_code == 0
    p = list_offsets(c, version, topic, EARLIEST_LOCAL_TIMESTAMP)
    assert (p.error_code, p.offset, p.timestamp) == (0, 3, -1)
    if version >= 9:
        p = list_offsets(c, version, topic, LATEST_TIERED_TIMESTAMP)
        assert (p.error_code, p.offset, p.timestamp, p.leader_epoch) == (0, -1, -1, -1)
    p = list_offsets(c, version, topic, -1)
    assert (p.error_code, p.offset) == (0, 4)


def test_metadata_v13_top_level_error(c):
    r = c.request(ApiKey.METADATA, 13, {
        "topics": None, "allow_auto_topic_creation": False,
        "include_topic_authorized_operations": False})  # fmt: skip
    assert r.error_code == 0 and r.brokers and r.cluster_id


@pytest.mark.parametrize("include_fenced", [False, True])
def test_describe_cluster_v2(broker, c, include_fenced):
    r = c.request(ApiKey.DESCRIBE_CLUSTER, 2, {
        "include_cluster_authorized_operations": False, "endpoint_type": 1,
        "include_fenced_brokers": include_fenced})  # fmt: skip
    assert r.error_code == 0
    assert [(b.broker_id, b.port, b.is_fenced) for b in r.brokers] == [
        (broker.broker.node_id, broker.port, False)]  # fmt: skip
    r = c.request(ApiKey.DESCRIBE_CLUSTER, 2, {
        "include_cluster_authorized_operations": False, "endpoint_type": 2,
        "include_fenced_brokers": include_fenced})  # fmt: skip
    # Kafka's AuthHelper: a controller endpoint asked of a broker; an unknown endpoint type.
    assert (r.error_code, r.error_message) == (114, (  # MISMATCHED_ENDPOINT_TYPE
        "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type "
        "CONTROLLER"))  # fmt: skip
    r = c.request(ApiKey.DESCRIBE_CLUSTER, 2, {
        "include_cluster_authorized_operations": False, "endpoint_type": 7,
        "include_fenced_brokers": include_fenced})  # fmt: skip
    assert (r.error_code, r.error_message) == (115, "Unsupported endpoint type 7")


@pytest.mark.parametrize("version", [5, 6])
def test_find_coordinator_v5_v6(broker, c, version):
    r = c.request(ApiKey.FIND_COORDINATOR, version, {
        "key_type": 0, "coordinator_keys": ["g1", "g2"]})  # fmt: skip
    assert [(x.key, x.error_code, x.node_id, x.port) for x in r.coordinators] == [
        ("g1", 0, broker.broker.node_id, broker.port),
        ("g2", 0, broker.broker.node_id, broker.port),
    ]


def commit_offset(c, group: str, topic: str) -> None:
    """A simple (generation -1) offset commit: Kafka creates an Empty classic group for it."""
    c.request(ApiKey.PRODUCE, 9, produce_body(topic, bytes(values_batch([b"x"]))))
    r = c.request(ApiKey.OFFSET_COMMIT, 8, {
        "group_id": group, "generation_id_or_member_epoch": -1, "member_id": "",
        "group_instance_id": None, "topics": [{"name": topic, "partitions": [
            {"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1,
             "committed_metadata": ""}]}]})  # fmt: skip
    assert r.topics[0].partitions[0].error_code == 0


def test_describe_groups_v6_group_not_found(c):
    """KIP-1043: from v6 a group that doesn't exist is GROUP_ID_NOT_FOUND with a message;
    before, it is described as Dead without an error."""
    commit_offset(c, "real", "dg")
    r = c.request(ApiKey.DESCRIBE_GROUPS, 6, {"groups": ["real", "ghost"],
                                              "include_authorized_operations": False})  # fmt: skip
    real, ghost = r.groups
    assert (real.error_code, real.error_message, real.group_state) == (0, None, "Empty")
    assert (ghost.error_code, ghost.error_message, ghost.group_state) == (
        GROUP_ID_NOT_FOUND, "Group ghost not found.", "Dead")  # fmt: skip
    r = c.request(ApiKey.DESCRIBE_GROUPS, 5, {"groups": ["ghost"],
                                              "include_authorized_operations": False})  # fmt: skip
    assert (r.groups[0].error_code, r.groups[0].group_state) == (0, "Dead")


def test_list_groups_v5_types(c):
    commit_offset(c, "classic-one", "lg")

    def listed(types):
        r = c.request(ApiKey.LIST_GROUPS, 5, {"states_filter": [], "types_filter": types})
        assert r.error_code == 0
        return [(g.group_id, g.group_type) for g in r.groups if g.group_id == "classic-one"]

    assert listed([]) == [("classic-one", "classic")]
    assert listed(["Classic"]) == [("classic-one", "classic")]  # any case, as Kafka parses it
    assert listed(["consumer"]) == []
    assert listed(["share", "classic"]) == [("classic-one", "classic")]


def test_list_config_resources(broker, c):
    """KIP-1142: v1 lists each type asked for (all of them for none) in Kafka's fixed order --
    groups with configs, client-metrics subscriptions, broker loggers, brokers, topics; a type
    it can't list fails the request (UNSUPPORTED_VERSION); v0 lists client metrics only."""
    GROUP, CLIENT_METRICS, BROKER_LOGGER, BROKER, TOPIC = 32, 16, 8, 4, 2
    c.request(ApiKey.PRODUCE, 9, produce_body("lcr", bytes(values_batch([b"x"]))))
    node = str(broker.broker.node_id)

    def listed(version, types):
        r = c.request(ApiKey.LIST_CONFIG_RESOURCES, version, {"resource_types": types})
        return r.error_code, [(x.resource_type, x.resource_name) for x in r.config_resources]

    assert listed(1, [TOPIC, BROKER]) == (0, [(BROKER, node), (TOPIC, "lcr")])
    code, everything = listed(1, [])
    assert code == 0 and everything[:2] == [(BROKER_LOGGER, node), (BROKER, node)]
    assert (TOPIC, "lcr") in everything
    assert listed(1, [TOPIC, 3]) == (35, [])  # UNSUPPORTED_VERSION
    assert listed(0, []) == (0, [])  # no client-metrics subscriptions (no KIP-714 here)
    assert listed(1, [CLIENT_METRICS, GROUP]) == (0, [])

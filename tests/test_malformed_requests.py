"""Requests that cannot be read per their schema close the connection with one warning line, as
Kafka's do (its generated readers throw on a null in a non-nullable field, and its SocketServer
closes the connection); no traceback, and the broker keeps serving real clients (issue 11 item 4).

Each case is a real request frame, encoded by the schema codec with a null (length -1) where the
schema says the field is not nullable in that version.
"""

from __future__ import annotations

import socket
import struct

import pytest
from confluent_kafka import Consumer, Producer
from helpers import BrokerProcess, RawClient
from wire import wait_for

from protocol import codec
from protocol.apis import ApiKey
from protocol.errors import ErrorCode

INT64_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def bp(tmp_path_factory):
    proc = BrokerProcess(str(tmp_path_factory.mktemp("malformed") / "data")).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def producer(bp):
    """A real client, connected throughout: every case must leave it working."""
    p = Producer({"bootstrap.servers": bp.bootstrap_servers, "linger.ms": 0})
    yield p
    p.flush(10)


SENT: list[bytes] = []


def real_client_works(producer) -> None:
    value = f"after-{len(SENT)}".encode()
    delivered = []
    producer.produce("survivors", value, on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(20)
    assert delivered == [None]
    SENT.append(value)


def peer_of(client: RawClient) -> str:
    host, port = client.sock.getsockname()[:2]
    return f"{host}:{port}"


def closed_by_broker(client: RawClient) -> bool:
    client.sock.settimeout(10)
    try:
        while True:
            if not client.sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def send_malformed(bp, api_key: int, version: int, body: dict | bytes) -> dict:
    """Send the request (a body to encode, or raw body bytes); the broker must close the
    connection and log exactly one warning line about it (malformed_request, no traceback)."""
    c = RawClient(bp.port)
    if isinstance(body, bytes):
        payload = struct.pack(">hhi", api_key, version, 7) + b"\x00\x04test"
        payload += (b"\x00" if codec.request_is_flexible(api_key, version) else b"") + body
        c.send_raw(struct.pack(">i", len(payload)) + payload)
    else:
        c.send_raw(codec.encode_request(api_key, version, 7, "malformed-test", body))
    assert closed_by_broker(c), "the broker answered instead of closing the connection"
    peer = peer_of(c)
    c.close()
    line = wait_for(
        lambda: next((e for e in bp.lines if e.get("peer") == peer), None), 10, f"log of {peer}"
    )
    about_peer = [e for e in bp.lines if e.get("peer") == peer]
    assert [e["event"] for e in about_peer] == ["malformed_request"], about_peer
    assert line["level"] == "warning"
    assert "exception" not in line and "Traceback" not in str(line)
    assert (line["api_key"], line["api_version"]) == (api_key, version)
    return line


def no_tracebacks(bp) -> None:
    bad = [e for e in bp.lines if e.get("level") == "error" or "exception" in e]
    assert not bad, bad[:3]


LIST_OFFSETS_PARTITION = {"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}
FETCH_PARTITION = {
    "partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "log_start_offset": -1,
    "partition_max_bytes": 1 << 20,
}  # fmt: skip


def fetch(topics, forgotten=()) -> dict:
    return {
        "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
        "isolation_level": 0, "session_id": 0, "session_epoch": -1, "topics": topics,
        "forgotten_topics_data": list(forgotten), "rack_id": "",
    }  # fmt: skip


def offset_commit(topics, **fields) -> dict:
    return {"group_id": "g", "generation_id_or_member_epoch": -1, "member_id": "",
            "retention_time_ms": -1, "topics": topics, **fields}  # fmt: skip


def commit_partition(**fields) -> dict:
    return {"partition_index": 0, "committed_offset": 5, "committed_leader_epoch": -1,
            "committed_metadata": "", **fields}  # fmt: skip


def describe_configs(resources) -> dict:
    return {"resources": resources, "include_synonyms": False, "include_documentation": False}


CASES = {
    # ListOffsets: the topics array, a topic name, a partitions array.
    "list_offsets_topics": (ApiKey.LIST_OFFSETS, 5, {"replica_id": -1, "isolation_level": 0,
                                                     "topics": None}),
    "list_offsets_name": (ApiKey.LIST_OFFSETS, 7, {
        "replica_id": -1, "isolation_level": 0,
        "topics": [{"name": None, "partitions": [LIST_OFFSETS_PARTITION]}]}),
    "list_offsets_partitions": (ApiKey.LIST_OFFSETS, 1, {
        "replica_id": -1, "topics": [{"name": "t", "partitions": None}]}),
    # Fetch: topics, a topic name, partitions, forgotten topics (v7+).
    "fetch_topics": (ApiKey.FETCH, 11, fetch(None)),
    "fetch_topic_name": (ApiKey.FETCH, 4, fetch([{"topic": None, "partitions": [FETCH_PARTITION]}])),
    "fetch_partitions": (ApiKey.FETCH, 12, fetch([{"topic": "t", "partitions": None}])),
    "fetch_forgotten": (ApiKey.FETCH, 7, {**fetch([]), "forgotten_topics_data": None}),
    # DescribeConfigs: resources, a resource name (configuration_keys *is* nullable).
    "describe_configs_resources": (ApiKey.DESCRIBE_CONFIGS, 1, describe_configs(None)),
    "describe_configs_name": (ApiKey.DESCRIBE_CONFIGS, 4, describe_configs(
        [{"resource_type": 2, "resource_name": None, "configuration_keys": None}])),
    # OffsetCommit: the group id, topics, a topic name, partitions.
    "offset_commit_group": (ApiKey.OFFSET_COMMIT, 2, offset_commit([], group_id=None)),
    "offset_commit_topics": (ApiKey.OFFSET_COMMIT, 8, offset_commit(None)),
    "offset_commit_name": (ApiKey.OFFSET_COMMIT, 4, offset_commit(
        [{"name": None, "partitions": [commit_partition()]}])),
    "offset_commit_partitions": (ApiKey.OFFSET_COMMIT, 6, offset_commit(
        [{"name": "t", "partitions": None}])),
    # FindCoordinator v0's key; v4's coordinator_keys array and an element of it.
    "find_coordinator_v0": (ApiKey.FIND_COORDINATOR, 0, {"key": None}),
    "find_coordinator_v4_keys": (ApiKey.FIND_COORDINATOR, 4, {"key_type": 0,
                                                              "coordinator_keys": None}),
    "find_coordinator_v4_key": (ApiKey.FIND_COORDINATOR, 4, {"key_type": 0,
                                                             "coordinator_keys": ["g", None]}),
    # ListGroups v4's states filter.
    "list_groups_v4": (ApiKey.LIST_GROUPS, 4, {"states_filter": None}),
    # Others of the same kind: JoinGroup's protocols and metadata, OffsetFetch's group,
    # CreateTopics' topics, Metadata v9's topic names are nullable only where the schema says.
    "join_group_protocols": (ApiKey.JOIN_GROUP, 5, {
        "group_id": "g", "session_timeout_ms": 10000, "rebalance_timeout_ms": 10000,
        "member_id": "", "group_instance_id": None, "protocol_type": "consumer",
        "protocols": None}),
    "join_group_metadata": (ApiKey.JOIN_GROUP, 7, {
        "group_id": "g", "session_timeout_ms": 10000, "rebalance_timeout_ms": 10000,
        "member_id": "", "group_instance_id": None, "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": None}]}),
    "offset_fetch_group": (ApiKey.OFFSET_FETCH, 5, {"group_id": None, "topics": None,
                                                    "require_stable": False}),
    "create_topics_topics": (ApiKey.CREATE_TOPICS, 7, {"topics": None, "timeout_ms": 1000,
                                                       "validate_only": False}),
    "delete_records_topics": (ApiKey.DELETE_RECORDS, 2, {"topics": None, "timeout_ms": 1000}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_null_in_non_nullable_field_closes_the_connection(bp, producer, case):
    api_key, version, body = CASES[case]
    line = send_malformed(bp, api_key, version, body)
    assert "non-nullable field" in line["reason"]
    real_client_works(producer)


@pytest.mark.parametrize(
    "api_key, version, body",
    [
        (ApiKey.FIND_COORDINATOR, 0, struct.pack(">h", 100) + b"abc"),  # key claims 100 bytes
        (ApiKey.DESCRIBE_GROUPS, 0, struct.pack(">ih", 1, 50) + b"group"),
    ],
    ids=["find_coordinator_key", "describe_groups_name"],
)
def test_lengths_past_the_end_close_the_connection(bp, producer, api_key, version, body):
    line = send_malformed(bp, api_key, version, body)
    assert "truncated" in line["reason"]
    real_client_works(producer)


def raw_produce(bp, payload: bytes) -> RawClient:
    c = RawClient(bp.port)
    header = struct.pack(">hhi", ApiKey.PRODUCE, 9, 3) + b"\x00\x04test\x00"
    body = header + payload
    c.send_raw(struct.pack(">i", len(body)) + body)
    return c


@pytest.mark.parametrize(
    "payload",
    [
        # transactional_id null, acks -1, timeout, then topic_data null (compact 0)
        b"\x00\xff\xff\x00\x00\x27\x10\x00",
        # one topic whose name is null
        b"\x00\xff\xff\x00\x00\x27\x10\x02\x00\x01\x00\x00",
        # one topic "t" whose partition_data is null
        b"\x00\xff\xff\x00\x00\x27\x10\x02\x02t\x00\x00\x00",
    ],
    ids=["topic_data", "name", "partition_data"],
)
def test_produce_nulls_close_the_connection(bp, producer, payload):
    c = raw_produce(bp, payload)
    assert closed_by_broker(c)
    peer = peer_of(c)
    c.close()
    line = wait_for(
        lambda: next((e for e in bp.lines if e.get("peer") == peer), None), 10, f"log of {peer}"
    )
    assert line["event"] == "malformed_request" and "non-nullable" in line["reason"]
    real_client_works(producer)


def test_offset_commit_retention_time_overflow(bp, producer):
    """retention_time_ms near int64 max (v2-v4): the commit succeeds, as in Kafka; the expire
    timestamp saturates instead of overflowing the stored OffsetCommitValue."""
    c = RawClient(bp.port)
    for version, retention in ((3, INT64_MAX), (4, INT64_MAX - 5), (2, 2**62)):
        group = f"retain-{version}"
        r = c.request(ApiKey.FIND_COORDINATOR, 2, {"key": group, "key_type": 0})
        assert r.error_code == 0
        body = offset_commit([{"name": "survivors", "partitions": [commit_partition()]}],
                             group_id=group, retention_time_ms=retention)  # fmt: skip
        r = c.request(ApiKey.OFFSET_COMMIT, version, body)
        assert r is not None, "the broker closed the connection"
        assert r.topics[0].partitions[0].error_code == ErrorCode.NONE
        r = c.request(ApiKey.OFFSET_FETCH, 5, {"group_id": group, "require_stable": False,
                                                "topics": [{"name": "survivors",
                                                            "partition_indexes": [0]}]})  # fmt: skip
        assert r.topics[0].partitions[0].committed_offset == 5
    c.close()
    real_client_works(producer)


def test_no_tracebacks_and_everything_reads_back(bp, producer):
    real_client_works(producer)
    consumer = Consumer({"bootstrap.servers": bp.bootstrap_servers, "group.id": "readback",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe(["survivors"])
    got: list[bytes] = []

    def read_all():
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
        return len(got) >= len(SENT)

    try:
        wait_for(read_all, 30, "every record produced between the cases")
    finally:
        consumer.close()
    assert got == SENT
    no_tracebacks(bp)
    # A socket that only connects and leaves is not an error either.
    socket.create_connection(("127.0.0.1", bp.port)).close()

"""Every version of every spine API, sent to a live broker and decoded by kafka-python.

The broker encodes responses per version; a field that exists only in some versions, or a
header that is flexible only from some version on, must be right for each one advertised.
"""

from __future__ import annotations

import uuid

import pytest
from helpers import RawClient
from wire import fetch_body, produce_body, values_batch

from protocol.apis import ApiKey
from pykbroker.handlers import REGISTRY
from pykbroker.handlers.share import SHARE_APIS


def versions(api_key: int) -> list[int]:
    spec = REGISTRY.get(api_key)
    return list(range(spec.min_version, spec.max_version + 1))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from pykbroker.embedded import EmbeddedBroker

    with EmbeddedBroker(str(tmp_path_factory.mktemp("versions"))) as b:
        c = RawClient(b.port)
        yield c
        c.close()


def test_advertised_versions(client):
    r = client.request(ApiKey.API_VERSIONS, 0, {})
    advertised = {k.api_key: (k.min_version, k.max_version) for k in r.api_keys}
    expected = {ApiKey.PRODUCE: (3, 12), ApiKey.FETCH: (4, 12), ApiKey.LIST_OFFSETS: (1, 7),
                ApiKey.METADATA: (0, 12), ApiKey.API_VERSIONS: (0, 4),
                ApiKey.CREATE_TOPICS: (2, 7), ApiKey.DELETE_TOPICS: (1, 6),
                ApiKey.DESCRIBE_CLUSTER: (0, 1), ApiKey.INIT_PRODUCER_ID: (0, 5)}  # fmt: skip
    for key, span in expected.items():
        assert advertised[key] == span, ApiKey(key).name
    # Share groups' APIs are hidden until enabled (Kafka 4.1: the share.version feature).
    assert advertised == {k: (lo, hi) for k, lo, hi in REGISTRY.versions() if k not in SHARE_APIS}


@pytest.mark.parametrize("version", versions(ApiKey.API_VERSIONS))
def test_api_versions(client, version):
    r = client.request(ApiKey.API_VERSIONS, version, {"client_software_name": "pykbroker-tests",
                                                      "client_software_version": "1.0"})  # fmt: skip
    assert r.error_code == 0 and len(r.api_keys) >= 9


@pytest.mark.parametrize("version", versions(ApiKey.METADATA))
def test_metadata(client, version):
    topic = f"md-{version}"
    body = {"topics": [{"name": topic, "topic_id": None}], "allow_auto_topic_creation": True,
            "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False}  # fmt: skip
    r = client.request(ApiKey.METADATA, version, body)
    [t] = r.topics
    assert (t.name, t.error_code, len(t.partitions)) == (topic, 0, 1)
    assert r.brokers[0].port == client.sock.getpeername()[1]
    if version >= 2:
        assert r.cluster_id
    if version >= 10:
        assert t.topic_id != uuid.UUID(int=0)


@pytest.mark.parametrize("version", versions(ApiKey.PRODUCE))
def test_produce(client, version):
    topic = f"produce-{version}"
    for expected_offset in (0, 1):
        r = client.request(ApiKey.PRODUCE, version,
                           produce_body(topic, bytes(values_batch([b"v%d" % version]))))  # fmt: skip
        p = r.responses[0].partition_responses[0]
        assert (r.responses[0].name, p.error_code, p.base_offset) == (topic, 0, expected_offset)


@pytest.mark.parametrize("version", versions(ApiKey.FETCH))
def test_fetch(client, version):
    topic = f"fetch-{version}"
    client.request(ApiKey.PRODUCE, 9, produce_body(topic, bytes(values_batch([b"x", b"y"]))))
    r = client.request(ApiKey.FETCH, version, fetch_body([(topic, 0, 0)]))
    p = r.responses[0].partitions[0]
    assert (r.responses[0].topic, p.error_code, p.high_watermark) == (topic, 0, 2)
    assert p.records


@pytest.mark.parametrize("version", versions(ApiKey.LIST_OFFSETS))
def test_list_offsets(client, version):
    topic = f"lo-{version}"
    client.request(ApiKey.PRODUCE, 9, produce_body(topic, bytes(values_batch([b"x"]))))
    r = client.request(ApiKey.LIST_OFFSETS, version, {
        "replica_id": -1, "isolation_level": 0,
        "topics": [{"name": topic, "partitions": [
            {"partition_index": 0, "timestamp": -1, "current_leader_epoch": -1}]}],
    })  # fmt: skip
    p = r.topics[0].partitions[0]
    assert (p.error_code, p.offset) == (0, 1)


@pytest.mark.parametrize("version", versions(ApiKey.CREATE_TOPICS))
def test_create_topics(client, version):
    topic = f"ct-{version}"
    body = {"topics": [{"name": topic, "num_partitions": 2, "replication_factor": 1,
                        "assignments": [], "configs": [{"name": "retention.ms", "value": "60000"}]}],
            "timeout_ms": 5000, "validate_only": False}  # fmt: skip
    r = client.request(ApiKey.CREATE_TOPICS, version, body)
    assert (r.topics[0].name, r.topics[0].error_code) == (topic, 0)
    if version >= 5:
        assert (r.topics[0].num_partitions, r.topics[0].replication_factor) == (2, 1)


@pytest.mark.parametrize("version", versions(ApiKey.DELETE_TOPICS))
def test_delete_topics(client, version):
    topic = f"dt-{version}"
    client.request(ApiKey.PRODUCE, 9, produce_body(topic, bytes(values_batch([b"x"]))))
    if version >= 6:
        body = {"topics": [{"name": topic, "topic_id": uuid.UUID(int=0)}], "timeout_ms": 5000}
    else:
        body = {"topic_names": [topic], "timeout_ms": 5000}
    r = client.request(ApiKey.DELETE_TOPICS, version, body)
    assert [(x.name, x.error_code) for x in r.responses] == [(topic, 0)]


@pytest.mark.parametrize("version", versions(ApiKey.DESCRIBE_CLUSTER))
def test_describe_cluster(client, version):
    r = client.request(ApiKey.DESCRIBE_CLUSTER, version, {
        "include_cluster_authorized_operations": False, "endpoint_type": 1})  # fmt: skip
    assert r.error_code == 0 and r.cluster_id
    assert [b.port for b in r.brokers] == [client.sock.getpeername()[1]]
    assert r.controller_id == r.brokers[0].broker_id


@pytest.mark.parametrize("version", versions(ApiKey.INIT_PRODUCER_ID))
def test_init_producer_id(client, version):
    body = {"transactional_id": None, "transaction_timeout_ms": 60000, "producer_id": -1,
            "producer_epoch": -1}  # fmt: skip
    first = client.request(ApiKey.INIT_PRODUCER_ID, version, body)
    second = client.request(ApiKey.INIT_PRODUCER_ID, version, body)
    assert first.error_code == second.error_code == 0
    assert second.producer_id > first.producer_id >= 0
    assert first.producer_epoch == 0


def test_kafka_python_admin_describe_cluster(client):
    from kafka.admin import KafkaAdminClient

    host, port = client.sock.getpeername()[:2]
    admin = KafkaAdminClient(bootstrap_servers=f"{host}:{port}")
    info = admin.describe_cluster()
    admin.close()
    assert [b["port"] for b in info["brokers"]] == [port]
    assert info["cluster_id"]

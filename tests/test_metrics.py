"""The Prometheus endpoint, scraped over HTTP around real produce and consume traffic."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from helpers import RawClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from wire import wait_for

from pykbroker.metrics import LATENCY_BUCKETS, Metrics


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from one GET of the endpoint."""
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted((k, str(v)) for k, v in labels.items())))]


@pytest.fixture
def metered(make_broker):
    # Any free port for metrics; sendfile for every region, so its counter moves with fetches.
    return make_broker({"metrics.port": 0, "pykbroker.sendfile.min.bytes": 0})


def test_metrics_off_by_default(broker):
    assert broker.broker.metrics_server is None and broker.metrics_url is None


def test_counters_move_with_produce_and_consume(metered):
    url = metered.metrics_url
    before = scrape(url)
    assert value(before, "kafka_server_socket_connection_count") == 0
    assert ("kafka_server_broker_topic_messages_in_total", (("topic", "metered"),)) not in before

    producer = KafkaProducer(bootstrap_servers=metered.bootstrap_servers, linger_ms=5)
    for i in range(100):
        producer.send("metered", value=b"x" * 100, key=b"k%d" % i)
    producer.flush()
    consumer = KafkaConsumer(bootstrap_servers=metered.bootstrap_servers, consumer_timeout_ms=5000)
    consumer.assign([TopicPartition("metered", 0)])
    consumer.seek_to_beginning()
    got = 0
    for _ in consumer:
        got += 1
        if got == 100:
            break
    assert got == 100

    after = scrape(url)
    assert value(after, "kafka_server_broker_topic_messages_in_total", topic="metered") == 100
    bytes_in = value(after, "kafka_server_broker_topic_bytes_in_total", topic="metered")
    bytes_out = value(after, "kafka_server_broker_topic_bytes_out_total", topic="metered")
    assert bytes_in > 100 * 100
    assert bytes_out >= bytes_in  # everything was read back at least once
    assert value(after, "pykbroker_sendfile_bytes_total") == bytes_out
    # The log holds exactly the batches that came in, in one segment.
    assert value(after, "kafka_log_size_bytes", topic="metered", partition=0) == bytes_in
    assert value(after, "kafka_log_segments", topic="metered", partition=0) == 1
    assert value(after, "kafka_log_end_offset", topic="metered", partition=0) == 100
    assert value(after, "kafka_server_replica_manager_partitions") == 1
    assert value(after, "kafka_server_replica_manager_under_replicated_partitions") == 0

    for api in ("Produce", "Fetch", "Metadata", "ApiVersions"):
        n = value(after, "kafka_network_requests_total", request=api)
        assert n >= 1, api
        assert value(after, "kafka_network_request_total_time_seconds_count", request=api) == n
        inf = value(
            after, "kafka_network_request_total_time_seconds_bucket", request=api, le="+Inf"
        )
        assert inf == n
        assert value(after, "kafka_network_request_total_time_seconds_sum", request=api) > 0
    # Both clients are connected (bootstrap plus broker connections).
    assert value(after, "kafka_server_socket_connection_count") >= 2
    assert value(after, "kafka_server_socket_connection_creation_total") >= 2
    assert value(after, "pykbroker_info", node_id=1, cluster_id=_cluster_id(metered), version=_v())
    producer.close()
    consumer.close()


def test_fetch_purgatory_counts_waiting_fetches(metered):
    url = metered.metrics_url
    producer = KafkaProducer(bootstrap_servers=metered.bootstrap_servers)
    producer.send("waiting", value=b"first").get(10)
    # A long-poll fetch past the end of the log waits in the purgatory...
    raw = RawClient(metered.port)
    body = {
        "replica_id": -1, "max_wait_ms": 30000, "min_bytes": 1, "max_bytes": 1 << 20,
        "isolation_level": 0, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": "waiting", "partitions": [
            {"partition": 0, "fetch_offset": 1, "partition_max_bytes": 1 << 20,
             "current_leader_epoch": -1, "log_start_offset": -1}]}],
        "forgotten_topics_data": [], "rack_id": "",
    }  # fmt: skip
    from protocol import codec

    raw.send_raw(codec.encode_request(1, 11, 7, "raw-test", body))
    wait_for(
        lambda: value(scrape(url), "kafka_server_delayed_operation_purgatory_size",
                      delayed_operation="Fetch") == 1,
        what="the fetch to wait",
    )  # fmt: skip
    # ...until a produce completes it.
    producer.send("waiting", value=b"second").get(10)
    assert raw.recv_frame() is not None
    after = scrape(url)
    assert (
        value(after, "kafka_server_delayed_operation_purgatory_size", delayed_operation="Fetch")
        == 0
    )
    assert (
        value(after, "kafka_server_delayed_operation_purgatory_size", delayed_operation="Produce")
        == 0
    )
    raw.close()
    producer.close()


def test_deleted_topic_leaves_the_metrics(metered):
    from kafka import KafkaAdminClient

    producer = KafkaProducer(bootstrap_servers=metered.bootstrap_servers)
    producer.send("doomed", value=b"x").get(10)
    producer.close()
    samples = scrape(metered.metrics_url)
    assert value(samples, "kafka_server_broker_topic_messages_in_total", topic="doomed") == 1
    admin = KafkaAdminClient(bootstrap_servers=metered.bootstrap_servers)
    admin.delete_topics(["doomed"])
    admin.close()
    samples = scrape(metered.metrics_url)
    assert ("kafka_server_broker_topic_messages_in_total", (("topic", "doomed"),)) not in samples
    assert ("kafka_log_size_bytes", (("partition", "0"), ("topic", "doomed"))) not in samples


def test_consumer_group_lag_from_the_coordinator(metered):
    """Lag is the high watermark minus the committed offset the group coordinator holds.

    The group coordinator is being written separately; until it lands this test gives the broker
    a stand-in with the documented shape (`groups`, each with `offsets`).
    """
    producer = KafkaProducer(bootstrap_servers=metered.bootstrap_servers)
    for _ in range(10):
        producer.send("lagging", value=b"x", partition=0)
    producer.flush()
    producer.close()
    real = metered.broker.group_coordinator
    if real is None:
        group = SimpleNamespace(offsets={("lagging", 0): SimpleNamespace(offset=4)})
        metered.broker.group_coordinator = SimpleNamespace(groups={"g1": group})
    else:
        consumer = KafkaConsumer(
            bootstrap_servers=metered.bootstrap_servers, group_id="g1", enable_auto_commit=False
        )
        consumer.assign([TopicPartition("lagging", 0)])
        from kafka.structs import OffsetAndMetadata

        consumer.commit({TopicPartition("lagging", 0): OffsetAndMetadata(4, "", -1)})
        consumer.close()
    samples = scrape(metered.metrics_url)
    assert value(samples, "kafka_coordinator_group_groups") >= 1
    key = {"group": "g1", "topic": "lagging", "partition": 0}
    assert value(samples, "kafka_consumergroup_current_offset", **key) == 4
    assert value(samples, "kafka_consumergroup_lag", **key) == 6


def test_http_endpoint_paths(metered):
    base = metered.metrics_url.rsplit("/", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base + "/nope", timeout=10)
    assert e.value.code == 404
    req = urllib.request.Request(metered.metrics_url, method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and r.read() == b""
    # Process metrics come along (prometheus_client's process and GC collectors).
    assert ("process_resident_memory_bytes", ()) in scrape(metered.metrics_url)


def test_request_histogram_buckets_unit():
    """Bucket placement: a value on a bound counts in that bound's bucket (le is inclusive)."""
    m = Metrics()
    m.request_done(0, LATENCY_BUCKETS[0])
    m.request_done(0, LATENCY_BUCKETS[-1] * 2)
    m.request_done(30000, 0.0)  # a garbage api key does not grow the table
    m.request_done(31000, 0.0)
    stats = m.requests[0]
    assert stats.count == 2 and stats.buckets[0] == 1 and stats.buckets[-1] == 1
    assert set(m.requests) == {0, -1} and m.requests[-1].count == 2


def _cluster_id(embedded) -> str:
    return embedded.broker.metadata.cluster_id


def _v() -> str:
    from importlib.metadata import version

    return version("pykbroker")


def test_event_loop_lag_probe_sees_a_stall(metered):
    """pykbroker_event_loop_lag_*: a 300 ms block of the broker's loop shows as its longest stall."""
    url = metered.metrics_url
    before = scrape(url)
    assert value(before, "pykbroker_event_loop_lag_max_seconds") < 0.3
    wait_for(lambda: value(scrape(url), "pykbroker_event_loop_lag_seconds_count") > 0,
             what="the probe's first observation")  # fmt: skip
    metered._loop.call_soon_threadsafe(time.sleep, 0.3)  # synchronous work on the broker's loop
    after = wait_for(
        lambda: (s := scrape(url))[("pykbroker_event_loop_lag_max_seconds", ())] >= 0.25 and s,
        what="the stall to be measured",
    )
    assert value(after, "pykbroker_event_loop_lag_max_seconds") < 5
    # One observation landed above the 0.25 s bucket and at or below the 0.5 s one.
    over = value(after, "pykbroker_event_loop_lag_seconds_bucket", le="0.25")
    assert value(after, "pykbroker_event_loop_lag_seconds_bucket", le="0.5") - over >= 1
    assert value(after, "pykbroker_event_loop_lag_seconds_sum") >= 0.25

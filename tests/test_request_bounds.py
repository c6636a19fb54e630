"""Request fields that would drive unbounded work: refused the way Kafka refuses them, before the
broker allocates anything (issue 11 item 1).

Kafka's controller caps the partitions one CreateTopics request may create at 10,000
(ReplicationControlManager.MAX_PARTITIONS_PER_BATCH) and answers POLICY_VIOLATION "Excessively
large number of partitions per request." for every topic of a request over it. The broker runs
in a subprocess so its RSS can be read from /proc: without the bounds these requests grew it by
gigabytes.
"""

from __future__ import annotations

import select

import pytest
from helpers import BrokerProcess, RawClient
from wire import wait_for

from protocol import codec
from protocol.apis import ApiKey
from protocol.errors import ErrorCode

EXCESSIVE = "Excessively large number of partitions per request."
INT32_MAX = 2**31 - 1
RSS_SLACK = 64 << 20  # far below what a single 2^31-partition allocation would take


@pytest.fixture(scope="module")
def bp(tmp_path_factory):
    proc = BrokerProcess(str(tmp_path_factory.mktemp("bounds") / "data")).start()
    yield proc
    proc.kill()


def topic_entry(name: str, partitions: int = 1, rf: int = 1, assignments=None) -> dict:
    return {
        "name": name, "num_partitions": partitions, "replication_factor": rf,
        "assignments": [{"partition_index": i, "broker_ids": ids}
                        for i, ids in enumerate(assignments or [])],
        "configs": [],
    }  # fmt: skip


def create_topics(client, entries, version=7, validate_only=False) -> dict:
    body = {"topics": entries, "timeout_ms": 5000, "validate_only": validate_only}
    resp = client.request(ApiKey.CREATE_TOPICS, version, body)
    assert resp is not None, "the broker closed the connection"
    return {t.name: (t.error_code, t.error_message) for t in resp.topics}


def create_partitions(client, topic: str, count: int, assignments=None, validate_only=False):
    body = {
        "topics": [{"name": topic, "count": count,
                    "assignments": None if assignments is None
                    else [{"broker_ids": ids} for ids in assignments]}],
        "timeout_ms": 5000, "validate_only": validate_only,
    }  # fmt: skip
    resp = client.request(ApiKey.CREATE_PARTITIONS, 3, body)
    assert resp is not None, "the broker closed the connection"
    return resp.results[0].error_code, resp.results[0].error_message


def topic_names(client) -> set[str]:
    r = client.request(ApiKey.METADATA, 9, {"topics": None, "allow_auto_topic_creation": False,
                                            "include_cluster_authorized_operations": False,
                                            "include_topic_authorized_operations": False})  # fmt: skip
    return {t.name for t in r.topics}


def still_serving(bp) -> None:
    """A fresh client is served: it can create a topic and see it."""
    c = RawClient(bp.port)
    name = f"ok-{c.sock.getsockname()[1]}"
    assert create_topics(c, [topic_entry(name)]) == {name: (0, None)}
    wait_for(lambda: name in topic_names(c), 10, f"topic {name}")
    c.close()


def node_id(client) -> int:
    r = client.request(ApiKey.METADATA, 9, {"topics": [], "allow_auto_topic_creation": False,
                                            "include_cluster_authorized_operations": False,
                                            "include_topic_authorized_operations": False})  # fmt: skip
    return r.brokers[0].node_id


@pytest.mark.parametrize("version", [2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("partitions", [INT32_MAX, 0x02000001])
def test_create_topics_with_huge_partition_count(bp, version, partitions):
    before = bp.rss()
    c = RawClient(bp.port)
    name = f"huge-{version}-{partitions}"
    assert create_topics(c, [topic_entry(name, partitions)], version) == {
        name: (ErrorCode.POLICY_VIOLATION, EXCESSIVE)
    }
    assert name not in topic_names(c)
    c.close()
    assert bp.rss() - before < RSS_SLACK
    still_serving(bp)


def test_the_bound_is_on_the_whole_request(bp):
    c = RawClient(bp.port)
    # 10,000 in all is allowed (validate_only: nothing is created on disk).
    ok = create_topics(c, [topic_entry("sum-a", 5000), topic_entry("sum-b", 5000)],
                       validate_only=True)  # fmt: skip
    assert ok == {"sum-a": (0, None), "sum-b": (0, None)}
    # One more and every topic of the request is refused, the small one included.
    refused = create_topics(c, [topic_entry("sum-a", 5000), topic_entry("sum-b", 5000),
                                topic_entry("sum-c", 1)])  # fmt: skip
    assert refused == {
        n: (ErrorCode.POLICY_VIOLATION, EXCESSIVE) for n in ("sum-a", "sum-b", "sum-c")
    }
    assert not {"sum-a", "sum-b", "sum-c"} & topic_names(c)
    # Replica assignments count one partition each.
    many = create_topics(c, [{**topic_entry("assigned", -1, -1, [[1]] * 10_001)}])
    assert many == {"assigned": (ErrorCode.POLICY_VIOLATION, EXCESSIVE)}
    c.close()


def test_huge_replication_factor_and_assignments(bp):
    before = bp.rss()
    c = RawClient(bp.port)
    r = create_topics(c, [topic_entry("rf", 10_000, 32767)])
    assert r["rf"][0] == ErrorCode.INVALID_REPLICATION_FACTOR
    r = create_topics(c, [topic_entry("rf-neg", 1, -2)])
    assert r["rf-neg"][0] == ErrorCode.INVALID_REPLICATION_FACTOR
    # One partition naming a broker 100,000 times: a duplicate, refused as Kafka does.
    node = node_id(c)
    r = create_topics(c, [topic_entry("dups", -1, -1, [[node] * 100_000])])
    assert r["dups"][0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    r = create_topics(c, [topic_entry("unknown-broker", -1, -1, [[INT32_MAX]])])
    assert r["unknown-broker"][0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    assert not {"rf", "rf-neg", "dups", "unknown-broker"} & topic_names(c)
    c.close()
    assert bp.rss() - before < RSS_SLACK
    still_serving(bp)


def test_create_partitions_with_huge_count(bp):
    before = bp.rss()
    c = RawClient(bp.port)
    assert create_topics(c, [topic_entry("grow", 1)]) == {"grow": (0, None)}
    wait_for(lambda: "grow" in topic_names(c), 10, "topic grow")
    assert create_partitions(c, "grow", INT32_MAX) == (ErrorCode.POLICY_VIOLATION, EXCESSIVE)
    assert create_partitions(c, "grow", 0x02000001, validate_only=True) == (
        ErrorCode.POLICY_VIOLATION, EXCESSIVE)  # fmt: skip
    # With assignments, the count still decides (and the lists must match it).
    assert (
        create_partitions(c, "grow", INT32_MAX, [[node_id(c)]] * 3)[0] == ErrorCode.POLICY_VIOLATION
    )
    # Unknown topics stay unknown, whatever the count.
    assert (
        create_partitions(c, "no-such-topic", INT32_MAX)[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    )
    assert create_partitions(c, "grow", -7)[0] == ErrorCode.INVALID_PARTITIONS
    # A sane increase still works, and placement starts at the current count.
    assert create_partitions(c, "grow", 3) == (0, None)
    r = c.request(ApiKey.METADATA, 9, {"topics": [{"name": "grow"}],
                                       "allow_auto_topic_creation": False,
                                       "include_cluster_authorized_operations": False,
                                       "include_topic_authorized_operations": False})  # fmt: skip
    assert sorted(p.partition_index for p in r.topics[0].partitions) == [0, 1, 2]
    c.close()
    assert bp.rss() - before < RSS_SLACK
    still_serving(bp)


def test_create_partitions_bound_is_on_the_whole_request(bp):
    """As for CreateTopics, the partitions a CreatePartitions request adds count in all: two
    topics growing by 5,000 each pass (validate_only), by 5,000 and 5,001 both are refused."""
    c = RawClient(bp.port)
    assert create_topics(c, [topic_entry("two-a"), topic_entry("two-b")]) == {
        "two-a": (0, None), "two-b": (0, None)}  # fmt: skip
    wait_for(lambda: {"two-a", "two-b"} <= topic_names(c), 10, "topics two-a, two-b")

    def grow_both(a: int, b: int, validate_only: bool) -> list:
        body = {"topics": [{"name": "two-a", "count": a, "assignments": None},
                           {"name": "two-b", "count": b, "assignments": None}],
                "timeout_ms": 5000, "validate_only": validate_only}  # fmt: skip
        r = c.request(ApiKey.CREATE_PARTITIONS, 3, body)
        return [(x.error_code, x.error_message) for x in r.results]

    assert grow_both(5001, 5001, True) == [(0, None), (0, None)]
    assert grow_both(5001, 5002, False) == [(ErrorCode.POLICY_VIOLATION, EXCESSIVE)] * 2
    c.close()


def test_list_offsets_duplicates_are_invalid_request(bp):
    """A partition named more than once gets INVALID_REQUEST on every row, as in Kafka's
    ListOffsets (so 20,000 copies of one by-timestamp query cost no log searches)."""
    c = RawClient(bp.port)
    assert create_topics(c, [topic_entry("lo", 2)]) == {"lo": (0, None)}
    wait_for(lambda: "lo" in topic_names(c), 10, "topic lo")
    row = {"partition_index": 0, "current_leader_epoch": -1, "timestamp": 0}
    body = {"replica_id": -1, "isolation_level": 0,
            "topics": [{"name": "lo", "partitions": [row] * 20_000 + [{**row, "partition_index": 1}]}]}  # fmt: skip
    r = c.request(ApiKey.LIST_OFFSETS, 7, body)
    assert r is not None, "the broker closed the connection"
    codes = [p.error_code for p in r.topics[0].partitions]
    assert codes[:-1] == [ErrorCode.INVALID_REQUEST] * 20_000
    assert codes[-1] == ErrorCode.NONE
    c.close()
    still_serving(bp)


def test_creating_many_partitions_lets_other_requests_through(bp):
    """The logs of a big CreateTopics are created a few per event-loop turn: an ApiVersions sent
    just after it on another connection is answered while the topic is still being created."""
    big, other = RawClient(bp.port), RawClient(bp.port)
    big.send_raw(codec.encode_request(ApiKey.CREATE_TOPICS, 7, 1, "big", {
        "topics": [topic_entry("many", 200)], "timeout_ms": 30000, "validate_only": False}))  # fmt: skip
    r = other.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "x",
                                               "client_software_version": "1"})  # fmt: skip
    assert r is not None and r.error_code == 0
    ready, _, _ = select.select([big.sock], [], [], 0)
    assert not ready, "the CreateTopics was answered first: it held the event loop"
    frame = big.recv_frame()
    resp = codec.decode_response(ApiKey.CREATE_TOPICS, 7, frame, 5)
    assert (resp.topics[0].error_code, resp.topics[0].num_partitions) == (0, 200)
    # Every partition is served once the answer is out.
    lo = other.request(ApiKey.LIST_OFFSETS, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": "many", "partitions": [{"partition_index": i, "current_leader_epoch": -1,
                                         "timestamp": -1} for i in range(200)]}]})  # fmt: skip
    assert {p.error_code for p in lo.topics[0].partitions} == {0}
    big.close()
    other.close()

"""DescribeClientQuotas / AlterClientQuotas (KIP-546) and throttling seen in raw frames.

Expected values are Kafka's: entity paths and precedence from ClientQuotaManager's docs, error
messages from ZkAdminManager.alterClientQuotas / describeClientQuotas, the empty throttled
fetch from KafkaApis.handleFetchRequest (KIP-219).
"""

from __future__ import annotations

import time

from helpers import RawClient
from test_metrics import scrape, value
from wire import fetch, produce_body, values_batch, wait_for

from protocol.apis import ApiKey
from protocol.errors import ErrorCode

EXACT, DEFAULT, ANY = 0, 1, 2


def alter(client, entity: dict, ops: dict, validate_only: bool = False, version: int = 1):
    """ops: {key: value, or None to remove}."""
    body = {
        "entries": [{
            "entity": [{"entity_type": t, "entity_name": n} for t, n in entity.items()],
            "ops": [{"key": k, "value": 0.0 if v is None else float(v), "remove": v is None}
                    for k, v in ops.items()],
        }],
        "validate_only": validate_only,
    }  # fmt: skip
    r = client.request(ApiKey.ALTER_CLIENT_QUOTAS, version, body)
    return r.entries[0]


def describe(client, components: list[tuple[str, int, str | None]], strict: bool = False,
             version: int = 1):  # fmt: skip
    r = client.request(ApiKey.DESCRIBE_CLIENT_QUOTAS, version, {
        "components": [{"entity_type": t, "match_type": m, "match": n} for t, m, n in components],
        "strict": strict,
    })  # fmt: skip
    return r


def entries(r) -> dict:
    """{((type, name), ...): {key: value}} of a DescribeClientQuotas response."""
    return {
        tuple(sorted((e.entity_type, e.entity_name) for e in entry.entity)):
            {v.key: v.value for v in entry.values}
        for entry in r.entries
    }  # fmt: skip


def test_alter_then_describe(broker):
    c = RawClient(broker.port)
    try:
        assert (
            alter(
                c, {"user": "alice"}, {"producer_byte_rate": 1024, "consumer_byte_rate": 2048}
            ).error_code
            == 0
        )
        assert (
            alter(c, {"user": "alice", "client-id": "app"}, {"request_percentage": 50.5}).error_code
            == 0
        )
        assert alter(c, {"client-id": None}, {"producer_byte_rate": 4096}).error_code == 0
        assert alter(c, {"user": None}, {"consumer_byte_rate": 8192}).error_code == 0
        everything = entries(describe(c, []))
        assert everything == {
            (("user", "alice"),): {"producer_byte_rate": 1024.0, "consumer_byte_rate": 2048.0},
            (("client-id", "app"), ("user", "alice")): {"request_percentage": 50.5},
            (("client-id", None),): {"producer_byte_rate": 4096.0},
            (("user", None),): {"consumer_byte_rate": 8192.0},
        }
        # Exact user, not strict: the user and every (user, client) entity of alice.
        assert set(entries(describe(c, [("user", EXACT, "alice")]))) == {
            (("user", "alice"),),
            (("client-id", "app"), ("user", "alice")),
        }
        # Strict: only entities made of exactly the filtered types.
        assert set(entries(describe(c, [("user", EXACT, "alice")], strict=True))) == {
            (("user", "alice"),)
        }
        assert set(entries(describe(c, [("user", DEFAULT, None)]))) == {(("user", None),)}
        assert set(entries(describe(c, [("client-id", ANY, None)]))) == {
            (("client-id", None),),
            (("client-id", "app"), ("user", "alice")),
        }
        # Removing a key; removing the last key removes the entity.
        assert alter(c, {"user": "alice"}, {"consumer_byte_rate": None}).error_code == 0
        assert alter(c, {"client-id": None}, {"producer_byte_rate": None}).error_code == 0
        after = entries(describe(c, []))
        assert after[(("user", "alice"),)] == {"producer_byte_rate": 1024.0}
        assert (("client-id", None),) not in after
        # validate_only changes nothing
        assert (
            alter(c, {"user": "bob"}, {"producer_byte_rate": 1}, validate_only=True).error_code == 0
        )
        assert (("user", "bob"),) not in entries(describe(c, []))
    finally:
        c.close()


def test_alter_errors_are_kafkas(broker):
    c = RawClient(broker.port)
    try:
        r = alter(c, {"user": "alice"}, {"producer_byte_rate": 10.5})
        assert (r.error_code, r.error_message) == (
            ErrorCode.INVALID_REQUEST,
            "Configuration producer_byte_rate must be a LONG value",
        )
        r = alter(c, {"user": "alice"}, {"no_such_quota": 1})
        assert (r.error_code, r.error_message) == (
            ErrorCode.INVALID_REQUEST,
            "Invalid configuration key no_such_quota",
        )
        r = alter(c, {"group": "g"}, {"producer_byte_rate": 1})
        assert (r.error_code, r.error_message) == (
            ErrorCode.INVALID_REQUEST,
            "Unhandled client quota entity type: group",
        )
        r = alter(c, {"user": ""}, {"producer_byte_rate": 1})
        assert (r.error_code, r.error_message) == (
            ErrorCode.INVALID_REQUEST,
            "Empty user not supported",
        )
        r = alter(c, {"user": "a", "ip": "1.2.3.4"}, {"producer_byte_rate": 1})
        assert r.error_code == ErrorCode.INVALID_REQUEST
        assert r.error_message == (
            "Invalid quota entity combination, IP entity should not be used "
            "with user/client ID entity."
        )
        r = alter(c, {"ip": "1.2.3.4"}, {"connection_creation_rate": 5})
        assert r.error_code == 0
        r = alter(c, {"ip": "1.2.3.4"}, {"producer_byte_rate": 5})
        assert (r.error_code, r.error_message) == (
            ErrorCode.INVALID_REQUEST,
            "Invalid configuration key producer_byte_rate",
        )
        r = describe(c, [("user", ANY, None), ("user", EXACT, "a")])
        assert (r.error_code, r.error_message) == (
            ErrorCode.INVALID_REQUEST,
            "Duplicate user filter component entity type",
        )
        r = describe(c, [("group", ANY, None)])
        assert (r.error_code, r.error_message) == (
            ErrorCode.UNSUPPORTED_VERSION,
            "Custom entity type 'group' not supported",
        )
        assert entries(describe(c, [("ip", EXACT, "1.2.3.4")])) == {
            (("ip", "1.2.3.4"),): {"connection_creation_rate": 5.0}
        }
        # v0 (not flexible) reads the same
        assert entries(describe(c, [("ip", ANY, None)], version=0)) == {
            (("ip", "1.2.3.4"),): {"connection_creation_rate": 5.0}
        }
    finally:
        c.close()


def test_quotas_survive_a_restart(make_broker, tmp_path):
    data = str(tmp_path / "d")
    b = make_broker(data_dir=data)
    c = RawClient(b.port)
    assert (
        alter(c, {"user": "alice", "client-id": None}, {"producer_byte_rate": 1000}).error_code == 0
    )
    c.close()
    b.stop()
    b = make_broker(data_dir=data)
    c = RawClient(b.port)
    try:
        assert entries(describe(c, [])) == {
            (("client-id", None), ("user", "alice")): {"producer_byte_rate": 1000.0}
        }
    finally:
        c.close()


def _create_topic(c, name: str) -> None:
    r = c.request(ApiKey.CREATE_TOPICS, 4, {
        "topics": [{"name": name, "num_partitions": 1, "replication_factor": 1,
                    "assignments": [], "configs": []}],
        "timeout_ms": 10000, "validate_only": False})  # fmt: skip
    assert r.topics[0].error_code == 0


def test_produce_throttle_time_and_muted_channel(make_broker):
    """A produce over producer_byte_rate (the RawClient's client id is raw-test; ANONYMOUS is
    the user on PLAINTEXT) is answered at once with throttle_time_ms; the connection is then
    muted: the next request's answer comes no sooner than that."""
    broker = make_broker({"metrics.port": 0})
    c = RawClient(broker.port)
    try:
        _create_topic(c, "q")
        assert (
            alter(
                c, {"user": "ANONYMOUS", "client-id": "raw-test"}, {"producer_byte_rate": 10000}
            ).error_code
            == 0
        )
        batch = values_batch([b"x" * 10000] * 12)  # ~120.3 kB in one request
        r = c.request(ApiKey.PRODUCE, 9, produce_body("q", batch))
        assert r.responses[0].partition_responses[0].error_code == 0
        # Kafka's QuotaUtils.throttleTime: (rate - quota) / quota x window, the window being
        # (quota.window.num - 1) x 1 s at first: (12.03 kB/s - 10 kB/s) / 10 kB/s x 10 s.
        throttle = r.throttle_time_ms
        assert 2000 <= throttle <= 2100
        # Muted: a Metadata request sent now waits out the throttle.
        sent = time.monotonic()
        m = c.request(
            ApiKey.METADATA,
            9,
            {
                "topics": [],
                "allow_auto_topic_creation": False,
                "include_cluster_authorized_operations": False,
                "include_topic_authorized_operations": False,
            },
        )
        assert m is not None
        assert time.monotonic() - sent >= throttle / 1000 - 0.05
        # Another client id is not throttled.
        other = RawClient(broker.port, client_id="other")
        try:
            r2 = other.request(ApiKey.PRODUCE, 9, produce_body("q", values_batch([b"y" * 10000])))
            assert r2.throttle_time_ms == 0
        finally:
            other.close()
        # Kafka's per-client sensors: kafka.server:type=Produce,user=ANONYMOUS,client-id=raw-test
        samples = scrape(broker.metrics_url)
        labels = {"user": "ANONYMOUS", "client_id": "raw-test"}
        assert value(samples, "kafka_server_produce_throttle_time_ms_total", **labels) == throttle
        assert value(samples, "kafka_server_produce_byte_rate", **labels) > 10000
    finally:
        c.close()


def test_throttled_fetch_is_empty(broker):
    c = RawClient(broker.port)
    try:
        _create_topic(c, "f")
        for _ in range(3):
            r = c.request(ApiKey.PRODUCE, 9, produce_body("f", values_batch([b"z" * 60000])))
            assert r.responses[0].partition_responses[0].error_code == 0
        assert alter(c, {"client-id": "raw-test"}, {"consumer_byte_rate": 10000}).error_code == 0
        # The fetch size is capped at quota x (quota.window.num - 1) windows = 100 kB: one
        # batch of 60 kB fits, and the rate stays within the quota.
        r = fetch(c, [("f", 0, 0)])
        first = r.responses[0].partitions[0]
        assert r.throttle_time_ms == 0 and len(first.records) > 60000
        # The next fetch would take the rate past the quota: an empty answer and a throttle.
        r = fetch(c, [("f", 0, 1)])
        assert r.throttle_time_ms > 0
        assert r.responses == []
    finally:
        c.close()


def test_request_percentage_throttles_every_api(broker):
    c = RawClient(broker.port)
    try:
        assert alter(c, {"client-id": "raw-test"}, {"request_percentage": 0.0001}).error_code == 0
        body = {"topics": [], "allow_auto_topic_creation": False,
                "include_cluster_authorized_operations": False,
                "include_topic_authorized_operations": False}  # fmt: skip
        throttles = []

        def throttled():
            throttles.append(c.request(ApiKey.METADATA, 9, body).throttle_time_ms)
            return throttles[-1] > 0

        wait_for(throttled, 10, "a throttled Metadata response")
        # ClientRequestQuotaManager bounds the throttle to one quota window (1 s).
        assert max(throttles) <= 1000
        # DescribeClientQuotas carries it too (every response with the field).
        wait_for(lambda: describe(c, []).throttle_time_ms > 0, 10, "throttled describe")
    finally:
        c.close()


def test_kafka_python_sees_the_throttle(broker):
    """kafka-python records every response's throttle_time_ms in its throttle-time metrics (and
    holds back its requests that long, client-side, as KIP-219 clients do)."""
    from kafka import KafkaProducer

    c = RawClient(broker.port)
    try:
        _create_topic(c, "kp")
        assert alter(c, {"client-id": "kp"}, {"producer_byte_rate": 20000}).error_code == 0
    finally:
        c.close()
    p = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, client_id="kp", linger_ms=0)
    try:
        # The quota lets 20 kB/s x (10 s + the first second's elapsed part) through at first,
        # at most 220 kB: 240 kB earn a throttle.
        for _ in range(24):
            p.send("kp", b"k" * 10000)
        p.flush(30)
        groups = p.metrics()
        maxima = [m["throttle-time-max"] for m in groups.values() if "throttle-time-max" in m]
        assert maxima and max(maxima) > 0, groups.keys()
    finally:
        p.close()


def test_requests_pipelined_behind_a_throttle_are_all_answered(make_broker):
    """KIP-219: a throttled channel reads nothing more until the throttle ends, then answers
    every request it had queued, in order (a producer with max.in.flight > 1 pipelines)."""
    from wire import produce_body, values_batch

    from protocol import codec

    # Two 1 s windows, so the rate is measured over ~1 s (with Kafka's 11 it is over >= 10 s).
    b = make_broker({"quota.window.num": "2"})
    c = RawClient(b.port)
    try:
        _create_topic(c, "pipelined")
        assert alter(c, {"client-id": "piped"}, {"producer_byte_rate": 10000}).error_code == 0
        c.sock.settimeout(60)
        # Three 20 kB produces in one write: all queued on the broker before the first is
        # answered, which throttles the channel (20 kB against 10 kB/s).
        batch = values_batch([b"x" * 1000] * 20)
        c.send_raw(b"".join(
            codec.encode_request(ApiKey.PRODUCE, 9, cid, "piped", produce_body("pipelined", batch))
            for cid in (101, 102, 103)
        ))  # fmt: skip
        got, throttles = [], []
        for _ in range(3):
            frame = c.recv_frame()
            assert frame is not None, f"answered only {got}"
            got.append(int.from_bytes(frame[:4], "big"))
            throttles.append(codec.decode_response(ApiKey.PRODUCE, 9, frame, 5).throttle_time_ms)
        assert got == [101, 102, 103]
        assert throttles[0] > 0  # the first answer throttled the channel with two queued
    finally:
        c.close()

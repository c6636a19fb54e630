"""The web console's JSON endpoints, against a real broker driven by real clients.

Changes made in the console must be what Kafka clients then see (and the reverse); errors carry
the HTTP status and Kafka's error name; bad input is refused without hurting the broker.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from console_helpers import EventStream, api, request, wait_for

from pykbroker.embedded import EmbeddedBroker


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    overrides = {"console.port": 0, "group.initial.rebalance.delay.ms": 0}
    # Kafka's built-in defaults (no server.properties): the config sources checked below are
    # DEFAULT_CONFIG, which a file's log.segment.bytes/log.retention.hours would make static.
    data = str(tmp_path_factory.mktemp("console") / "data")
    with EmbeddedBroker(data, overrides, properties=None) as b:
        yield b
        _admins.clear()  # before the broker goes


_admins: dict[str, AdminClient] = {}


def admin(b) -> AdminClient:
    """One client per broker, kept (its futures fail if the client is collected first)."""
    if b.bootstrap_servers not in _admins:
        _admins[b.bootstrap_servers] = AdminClient({"bootstrap.servers": b.bootstrap_servers})
    return _admins[b.bootstrap_servers]


def produce(b, topic: str, records, **conf) -> None:
    p = Producer({"bootstrap.servers": b.bootstrap_servers, "linger.ms": 5, **conf})
    for r in records:
        p.produce(topic, **r)
    assert p.flush(20) == 0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_console_is_off_by_default(broker):
    assert broker.broker.console is None and broker.console_url is None


def test_cluster_shows_this_broker_as_clients_see_it(console):
    c = api(console.console_url, "GET", "/api/cluster")
    md = admin(console).list_topics(timeout=10)
    assert c["cluster_id"] == md.cluster_id
    assert c["controller_id"] == md.controller_id
    [b] = c["brokers"]
    [seen] = md.brokers.values()
    assert (b["node_id"], b["host"], b["port"]) == (seen.id, seen.host, seen.port)
    assert b["alive"] and b["this"] and b["controller"]


def test_topic_created_in_console_is_the_topic_clients_see(console):
    url = console.console_url
    created = api(url, "POST", "/api/topics", {
        "name": "made-in-console", "partitions": 3, "replication_factor": 1,
        "configs": {"cleanup.policy": "compact", "retention.ms": 3600000},
    }, expect=201)  # fmt: skip
    assert (created["partitions"], created["replication_factor"]) == (3, 1)
    md = admin(console).list_topics("made-in-console", timeout=10)
    assert sorted(md.topics["made-in-console"].partitions) == [0, 1, 2]
    res = ConfigResource(ConfigResource.Type.TOPIC, "made-in-console")
    configs = admin(console).describe_configs([res])[res].result(10)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["retention.ms"].value == "3600000"

    listed = {t["name"]: t for t in api(url, "GET", "/api/topics")["topics"]}
    t = listed["made-in-console"]
    assert (t["partitions"], t["replication_factor"], t["internal"]) == (3, 1, False)
    detail = api(url, "GET", "/api/topics/made-in-console")
    assert [p["partition"] for p in detail["partitions"]] == [0, 1, 2]
    for p in detail["partitions"]:
        assert p["leader"] == 1 and p["replicas"] == [1] and p["isr"] == [1]
        assert (p["log_start_offset"], p["high_watermark"]) == (0, 0)
    by_name = {c["name"]: c for c in detail["configs"]}
    assert by_name["cleanup.policy"]["value"] == "compact"
    assert by_name["cleanup.policy"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert by_name["segment.bytes"]["source"] == "DEFAULT_CONFIG"


def test_topic_created_by_a_client_is_listed(console):
    admin(console).create_topics([NewTopic("made-by-client", 2, 1)])["made-by-client"].result(10)
    produce(console, "made-by-client", [{"value": b"x" * 100, "partition": 1}] * 5)
    t = {t["name"]: t for t in api(console.console_url, "GET", "/api/topics")["topics"]}
    assert t["made-by-client"]["partitions"] == 2
    assert t["made-by-client"]["messages"] == 5
    assert t["made-by-client"]["size"] > 500


@pytest.mark.parametrize(
    "body, status, error",
    [
        ({"name": "dup-target"}, 409, "TOPIC_ALREADY_EXISTS"),
        ({"name": "bad/name"}, 400, "INVALID_TOPIC_EXCEPTION"),
        ({"name": "x" * 250}, 400, "INVALID_TOPIC_EXCEPTION"),
        ({"name": "neg", "partitions": 0}, 400, "INVALID_PARTITIONS"),
        ({"name": "rf", "replication_factor": 3}, 400, "INVALID_REPLICATION_FACTOR"),
        ({"name": "cfg", "configs": {"retention.ms": "soon"}}, 400, "INVALID_CONFIG"),
        ({"name": "cfg", "configs": {"no.such.key": "1"}}, 400, "INVALID_CONFIG"),
        ({"partitions": 1}, 400, "INVALID_REQUEST"),
        ({"name": 5}, 400, "INVALID_REQUEST"),
    ],
)
def test_create_topic_errors_are_kafkas(console, body, status, error):
    request(console.console_url, "POST", "/api/topics", {"name": "dup-target"})  # 201 or 409
    code, _, data = request(console.console_url, "POST", "/api/topics", body)
    assert (code, data["error"]) == (status, error), data
    assert data["message"]
    assert "cfg" not in admin(console).list_topics(timeout=10).topics


def test_alter_and_reset_topic_configs(console):
    url = console.console_url
    api(url, "POST", "/api/topics", {"name": "altered"}, expect=201)
    res = ConfigResource(ConfigResource.Type.TOPIC, "altered")

    def client_view():
        return admin(console).describe_configs([res])[res].result(10)

    d = api(url, "PATCH", "/api/topics/altered/configs", {"set": {"retention.ms": "60000"}})
    assert {c["name"]: c["value"] for c in d["configs"]}["retention.ms"] == "60000"
    assert client_view()["retention.ms"].value == "60000"
    # Invalid: Kafka's error, and nothing changed.
    code, _, err = request(url, "PATCH", "/api/topics/altered/configs",
                           {"set": {"retention.ms": "-2", "segment.ms": "1000"}})  # fmt: skip
    assert (code, err["error"]) == (400, "INVALID_CONFIG")
    assert client_view()["retention.ms"].value == "60000"
    code, _, err = request(url, "PATCH", "/api/topics/nope/configs", {"set": {"retention.ms": "1"}})
    assert (code, err["error"]) == (404, "UNKNOWN_TOPIC_OR_PARTITION")
    # Deleting the override brings the broker default back (7 days).
    api(url, "PATCH", "/api/topics/altered/configs", {"delete": ["retention.ms"]})
    assert client_view()["retention.ms"].value == "604800000"
    assert client_view()["retention.ms"].is_default


def test_add_partitions_and_delete_topic(console):
    url = console.console_url
    api(url, "POST", "/api/topics", {"name": "doomed", "partitions": 1}, expect=201)
    d = api(url, "POST", "/api/topics/doomed/partitions", {"count": 4})
    assert len(d["partitions"]) == 4
    code, _, err = request(url, "POST", "/api/topics/doomed/partitions", {"count": 2})
    assert (code, err["error"]) == (400, "INVALID_PARTITIONS")
    assert len(admin(console).list_topics("doomed", timeout=10).topics["doomed"].partitions) == 4
    api(url, "DELETE", "/api/topics/doomed")
    wait_for(lambda: "doomed" not in admin(console).list_topics(timeout=10).topics, what="deletion")
    code, _, err = request(url, "DELETE", "/api/topics/doomed")
    assert (code, err["error"]) == (404, "UNKNOWN_TOPIC_OR_PARTITION")
    code, _, err = request(url, "GET", "/api/topics/doomed")
    assert (code, err["error"]) == (404, "UNKNOWN_TOPIC_OR_PARTITION")


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd"])
def test_message_browser_reads_what_was_produced(console, codec):
    url = console.console_url
    topic = f"browse-{codec}"
    admin(console).create_topics([NewTopic(topic, 2, 1)])[topic].result(10)
    base_ts = 1_700_000_000_000
    records = [
        {"key": f"k{i}".encode(), "value": json.dumps({"n": i}).encode(), "partition": 0,
         "timestamp": base_ts + i * 1000, "headers": [("trace", f"t{i}".encode()), ("empty", None)]}
        for i in range(30)
    ]  # fmt: skip
    records.append(
        {"key": None, "value": bytes(range(256)), "partition": 0, "timestamp": base_ts + 30_000}
    )
    produce(console, topic, records, **{"compression.type": codec})

    page = api(url, "GET", f"/api/topics/{topic}/messages?partition=0&offset=5&limit=10")
    assert [r["offset"] for r in page["records"]] == list(range(5, 15))
    assert (page["high_watermark"], page["next_offset"]) == (31, 15)
    first = page["records"][0]
    assert base64.b64decode(first["key"]) == b"k5"
    assert json.loads(base64.b64decode(first["value"])) == {"n": 5}
    assert first["timestamp"] == base_ts + 5000 and first["timestamp_type"] == "CreateTime"
    assert first["headers"] == [["trace", b64(b"t5")], ["empty", None]]

    newest = api(url, "GET", f"/api/topics/{topic}/messages?partition=0&limit=3")["records"]
    assert [r["offset"] for r in newest] == [28, 29, 30]
    assert newest[-1]["key"] is None and base64.b64decode(newest[-1]["value"]) == bytes(range(256))

    by_time = api(
        url, "GET", f"/api/topics/{topic}/messages?partition=0&timestamp={base_ts + 19_500}&limit=2"
    )
    assert [r["offset"] for r in by_time["records"]] == [20, 21]
    after_all = api(
        url, "GET", f"/api/topics/{topic}/messages?partition=0&timestamp={base_ts + 99_000}"
    )
    assert after_all["records"] == []
    assert api(url, "GET", f"/api/topics/{topic}/messages?partition=1")["records"] == []


def test_message_browser_bounds(console):
    url = console.console_url
    topic = "browse-bounds"
    admin(console).create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    big = bytes(200_000)
    produce(console, topic, [{"value": big}] + [{"value": b"%d" % i} for i in range(600)],
            **{"batch.size": 16384})  # fmt: skip
    r = api(url, "GET", f"/api/topics/{topic}/messages?offset=0&limit=1")["records"][0]
    assert r["value_size"] == 200_000 and r["truncated"]
    assert len(base64.b64decode(r["value"])) == 64 * 1024
    r = api(url, "GET", f"/api/topics/{topic}/messages?offset=1&limit=500")
    assert len(r["records"]) == 500 and r["next_offset"] == 501
    # max_bytes stops a read early (whole batches, at least one).
    small = api(url, "GET", f"/api/topics/{topic}/messages?offset=0&limit=500&max_bytes=1024")
    assert 1 <= len(small["records"]) < 500
    for query, message in [
        ("limit=501", "limit"), ("limit=0", "limit"), ("partition=1", "partition"),
        ("partition=x", "partition"), ("max_bytes=99999999", "max_bytes"), ("timestamp=-5", "timestamp"),
    ]:  # fmt: skip
        code, _, err = request(url, "GET", f"/api/topics/{topic}/messages?{query}")
        assert (code, err["error"]) == (400, "INVALID_REQUEST") and message in err["message"]
    code, _, err = request(url, "GET", "/api/topics/no-such-topic/messages")
    assert (code, err["error"]) == (404, "UNKNOWN_TOPIC_OR_PARTITION")


def test_live_tail_streams_new_records(console):
    url = console.console_url
    topic = "tailed"
    admin(console).create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    produce(console, topic, [{"value": b"before"}])
    stream = EventStream(url, f"/api/topics/{topic}/tail?partition=0")
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type") == "text/event-stream"
        produce(console, topic, [{"value": b"live-%d" % i} for i in range(3)])
        seen = []
        while len(seen) < 3:
            name, data = stream.next_event()
            assert name == "records"
            seen += [base64.b64decode(r["value"]) for r in data["records"]]
        assert seen == [b"live-0", b"live-1", b"live-2"]  # the record from before is not replayed
        assert data["next_offset"] == 4
    finally:
        stream.close()


def test_groups_lag_and_offset_reset(console):
    url = console.console_url
    topic = "consumed"
    admin(console).create_topics([NewTopic(topic, 2, 1)])[topic].result(10)
    produce(console, topic, [{"value": b"%d" % i, "partition": i % 2} for i in range(20)])
    consumer = Consumer({
        "bootstrap.servers": console.bootstrap_servers, "group.id": "readers",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })  # fmt: skip
    try:
        consumer.subscribe([topic])
        got = 0
        while got < 12:
            m = consumer.poll(1.0)
            if m is not None and m.error() is None:
                got += 1
                if got == 12:
                    consumer.commit(m, asynchronous=False)
        committed = {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)}  # fmt: skip
        lag = sum(10 - o for o in committed.values() if o >= 0) + sum(
            10 for o in committed.values() if o < 0
        )

        g = api(url, "GET", "/api/groups/readers")
        assert g["state"] == "Stable" and g["protocol_type"] == "consumer"
        [member] = g["members"]
        assert sorted((a["topic"], a["partition"]) for a in member["assignment"]) == [
            (topic, 0),
            (topic, 1),
        ]
        rows = {o["partition"]: o for o in g["offsets"]}
        for p in (0, 1):
            assert rows[p]["log_end_offset"] == 10
            assert rows[p]["member_id"] == member["member_id"]
            if committed[p] >= 0:
                assert rows[p]["current_offset"] == committed[p]
                assert rows[p]["lag"] == 10 - committed[p]
        listed = {x["group_id"]: x for x in api(url, "GET", "/api/groups")["groups"]}
        assert listed["readers"]["members"] == 1 and listed["readers"]["topics"] == [topic]
        assert listed["readers"]["lag"] == lag - sum(10 for o in committed.values() if o < 0)

        # Kafka's rule: an active group's offsets cannot be reset.
        code, _, err = request(url, "POST", "/api/groups/readers/reset-offsets", {"to": "earliest"})
        assert (code, err["error"]) == (409, "NON_EMPTY_GROUP")
        assert "inactive" in err["message"] and "Stable" in err["message"]
    finally:
        consumer.close()

    wait_for(lambda: api(url, "GET", "/api/groups/readers")["state"] == "Empty", what="group empty")
    r = api(
        url,
        "POST",
        "/api/groups/readers/reset-offsets",
        {"topic": topic, "to": "offset", "value": 3},
    )
    assert r["offsets"] == [{"topic": topic, "partition": 0, "offset": 3},
                            {"topic": topic, "partition": 1, "offset": 3}]  # fmt: skip
    g = api(url, "GET", "/api/groups/readers")
    assert [(o["current_offset"], o["lag"]) for o in g["offsets"]] == [(3, 7), (3, 7)]
    # Out of range goes to the nearest end, as kafka-consumer-groups does.
    r = api(url, "POST", "/api/groups/readers/reset-offsets", {"to": "offset", "value": 999})
    assert [o["offset"] for o in r["offsets"]] == [10, 10]
    api(url, "POST", "/api/groups/readers/reset-offsets", {"to": "earliest"})
    # The group's next consumer starts where the console put it.
    c2 = Consumer({"bootstrap.servers": console.bootstrap_servers, "group.id": "readers",
                   "enable.auto.commit": False})  # fmt: skip
    try:
        c2.subscribe([topic])
        first = None
        deadline = time.monotonic() + 20
        while first is None and time.monotonic() < deadline:
            m = c2.poll(1.0)
            if m is not None and m.error() is None:
                first = m
        assert first is not None and first.offset() == 0
    finally:
        c2.close()

    for body, error in [({"to": "sideways"}, "INVALID_REQUEST"), ({"to": "offset"}, "INVALID_REQUEST"),
                        ({"to": "earliest", "topic": "nope"}, "UNKNOWN_TOPIC_OR_PARTITION")]:  # fmt: skip
        code, _, err = request(url, "POST", "/api/groups/readers/reset-offsets", body)
        assert err["error"] == error, err


def test_metrics_follow_traffic(console):
    url = console.console_url
    topic = "charted"
    admin(console).create_topics([NewTopic(topic, 1, 1)])[topic].result(10)

    def seen():
        produce(console, topic, [{"value": b"m" * 1000}] * 50)
        m = api(url, "GET", f"/api/metrics?window=10&topic={topic}")
        return m if sum(m["messages_in"]) > 0 else None

    m = wait_for(seen, what="a sample with the produced messages")
    assert len(m["time"]) == len(m["bytes_in"]) == len(m["messages_in"])
    assert sum(m["bytes_in"]) > 0
    assert "Produce" in m["latency"] and any(m["latency"]["Produce"]["count"])
    overall = api(url, "GET", "/api/metrics?window=10")
    assert topic in [t["topic"] for t in overall["top_topics"]]
    code, _, err = request(url, "GET", "/api/metrics?window=100000")
    assert (code, err["error"]) == (400, "INVALID_REQUEST")


def test_bad_http_input_never_hurts_the_broker(console):
    url = console.console_url
    cases = [
        ("POST", "/api/topics", {"raw": b"{not json", "ct": "application/json"}, 400, "INVALID_REQUEST"),
        ("POST", "/api/topics", {"raw": b"[1, 2]", "ct": "application/json"}, 400, "INVALID_REQUEST"),
        ("PATCH", "/api/topics/x/configs", {"raw": b'{"set": [1]}', "ct": "application/json"}, 400, "INVALID_REQUEST"),
        ("POST", "/api/topics", {"raw": b'{"name": "x"}', "ct": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("GET", "/api/nothing", {}, 404, "NOT_FOUND"),
        ("PUT", "/api/topics", {}, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/static/../../etc/passwd", {}, 404, "NOT_FOUND"),
    ]  # fmt: skip
    for method, path, opts, status, error in cases:
        headers = {"Content-Type": opts["ct"]} if "ct" in opts else {}
        code, _, err = request(url, method, path, raw=opts.get("raw"), headers=headers)
        assert (code, err["error"]) == (status, error), (method, path, err)
    # Another site's page cannot make changes (its Origin is not the console's).
    code, _, err = request(url, "POST", "/api/topics", {"name": "csrf"},
                           headers={"Origin": "http://evil.example"})  # fmt: skip
    assert (code, err["error"]) == (403, "CLUSTER_AUTHORIZATION_FAILED")
    # Garbage and oversize input on the socket: refused by status, then the connection closes.
    host, port = url.split("//")[1].rstrip("/").split(":")
    for garbage, status in [
        (b"\x00\x01\x02\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 4000 + b"\r\n", b"431"),
        (b"POST /api/topics HTTP/1.1\r\nContent-Length: 2097152\r\n\r\n", b"413"),
        (b"POST /api/topics HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"413"),
        (b"POST /api/topics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
    ]:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(garbage)
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
            assert reply.split(b" ")[1] == status, reply
    # The broker still serves Kafka clients and the console.
    produce(console, "after-garbage", [{"value": b"ok"}])
    assert api(url, "GET", "/api/topics/after-garbage/messages")["records"][0]["value"] == b64(
        b"ok"
    )


def test_page_is_served_and_self_contained(console):
    url = console.console_url
    code, headers, html = request(url, "GET", "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/static/console.js" in html and b"/static/console.css" in html
    for name, ctype in [("console.js", "text/javascript"), ("console.css", "text/css")]:
        code, headers, body = request(url, "GET", f"/static/{name}")
        assert code == 200 and headers["Content-Type"].startswith(ctype) and len(body) > 1000
        # Works offline: nothing is loaded from another origin.
        assert b"https://" not in body and b"http://" not in body.replace(
            b"http://www.w3.org/2000/svg", b""
        )
    assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_read_only_console_refuses_changes(make_broker):
    b = make_broker({"console.port": 0, "console.read.only": "true"})
    url = b.console_url
    assert api(url, "GET", "/api/cluster")["read_only"] is True
    for method, path, body in [("POST", "/api/topics", {"name": "t"}),
                               ("DELETE", "/api/topics/t", None),
                               ("PATCH", "/api/topics/t/configs", {"set": {}}),
                               ("POST", "/api/groups/g/reset-offsets", {"to": "earliest"})]:  # fmt: skip
        code, _, err = request(url, method, path, body)
        assert (code, err["error"]) == (403, "CLUSTER_AUTHORIZATION_FAILED"), (method, path)
    assert api(url, "GET", "/api/topics")["topics"] == []


def test_other_host_names_are_refused(make_broker):
    """DNS rebinding: another site's name pointed at 127.0.0.1 reaches the console with its own
    Origin and Host alike; only loopback, the listeners' names and console.allowed.hosts pass."""
    b = make_broker({"console.port": 0, "console.allowed.hosts": "console.example"})
    url = b.console_url
    port = url.rstrip("/").rsplit(":", 1)[1]
    evil = f"evil.example:{port}"
    for method, path, body in [("GET", "/api/topics", None), ("GET", "/", None),
                               ("POST", "/api/topics", {"name": "rebound"})]:  # fmt: skip
        code, _, err = request(url, method, path, body,
                               headers={"Host": evil, "Origin": f"http://{evil}"})  # fmt: skip
        assert code == 421 and err["error"] == "MISDIRECTED_REQUEST", (method, path, code, err)
    for host in [f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST",
                 f"console.example:{port}"]:  # fmt: skip
        code, _, _ = request(url, "GET", "/api/topics", headers={"Host": host})
        assert code == 200, host
    code, _, _ = request(url, "POST", "/api/topics", {"name": "allowed"},
                         headers={"Host": f"console.example:{port}",
                                  "Origin": f"http://console.example:{port}"})  # fmt: skip
    assert code == 201
    assert [t["name"] for t in api(url, "GET", "/api/topics")["topics"]] == ["allowed"]


def test_a_client_that_stops_reading_loses_its_connection(console, monkeypatch):
    """A live tail whose client never reads: once the socket buffers are full, the console gives
    the connection up after its write timeout instead of holding the slot forever."""
    from pykbroker.console import http as console_http

    monkeypatch.setattr(console_http, "WRITE_TIMEOUT_S", 1.0)
    url, topic = console.console_url, "never-read"
    api(url, "POST", "/api/topics", {"name": topic, "partitions": 1}, expect=201)
    host, port = url.split("//")[1].rstrip("/").split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    try:
        s.sendall(f"GET /api/topics/{topic}/tail HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        me = s.getsockname()
        writers = console.broker.console.http.writers

        def served() -> bool:
            return any(w.get_extra_info("peername") == me for w in writers)

        wait_for(served, what="the tail connection")
        p = Producer({"bootstrap.servers": console.bootstrap_servers, "linger.ms": 5})
        deadline = time.monotonic() + 60
        while served() and time.monotonic() < deadline:
            for _ in range(20):
                p.produce(topic, value=os.urandom(60_000))
            assert p.flush(20) == 0
        assert not served(), "the console still holds a connection nobody reads"
    finally:
        s.close()


def _exchange(url: str, raw: bytes) -> bytes:
    """Everything the console sends back for `raw` until it closes the connection."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(raw)
        reply = b""
        while chunk := s.recv(65536):  # a timeout here: the console kept the connection open
            reply += chunk
    return reply


def test_head_of_a_tail_and_http_1_0_close(console):
    url, topic = console.console_url, "head-tail"
    api(url, "POST", "/api/topics", {"name": topic, "partitions": 1}, expect=201)
    # HEAD of the live tail: the head only, not an endless stream.
    reply = _exchange(
        url, f"HEAD /api/topics/{topic}/tail HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head and body == b""
    # HTTP/1.0 without Connection: keep-alive closes after the response (RFC 9112 9.3).
    reply = _exchange(url, b"GET /api/cluster HTTP/1.0\r\nHost: localhost\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    assert json.loads(body)["node_id"] == 1

"""Incremental fetch sessions (KIP-227) on the wire and with real consumers: a full fetch opens
a session, incremental fetches send only changed partitions and get only partitions with news,
forgotten partitions leave, epoch -1 closes; FETCH_SESSION_ID_NOT_FOUND (70) and
INVALID_FETCH_SESSION_EPOCH (71) as Kafka's FetchManager answers them; the cache's size and
eviction rules (max.incremental.fetch.session.cache.slots); consumers of 1,000 partitions."""

from __future__ import annotations

import struct
import time

import pytest
from helpers import RawClient
from wire import fetch_body, fetched_records, partition_response, produce_body, values_batch

from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from pykbroker.fetch_session import EVICTION_MS, FetchSessionCache

# Kafka's error codes, written down (protocol/errors.py must agree).
FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
FETCH_SESSION_TOPIC_ID_ERROR = 106


@pytest.fixture
def client(broker):
    c = RawClient(broker.port)
    yield c
    c.close()


def create(c, topic: str, partitions: int) -> None:
    r = c.request(ApiKey.CREATE_TOPICS, 7, {
        "topics": [{"name": topic, "num_partitions": partitions, "replication_factor": 1,
                    "assignments": [], "configs": []}],
        "timeout_ms": 30000, "validate_only": False,
    })  # fmt: skip
    assert r.topics[0].error_code == 0


def produce(c, topic: str, partition: int, values: list[bytes]) -> None:
    body = produce_body(topic, bytes(values_batch(values)), partition=partition)
    assert partition_response(c.request(ApiKey.PRODUCE, 9, body)).error_code == 0


def session_fetch(c, session_id: int, epoch: int, partitions=(), forgotten=(), **kwargs):
    """Fetch v12 in a session: `partitions` are (topic, partition, offset) to add or update,
    `forgotten` (topic, partition) to drop."""
    body = fetch_body(list(partitions), **kwargs)
    body["session_id"], body["session_epoch"] = session_id, epoch
    gone: dict[str, list[int]] = {}
    for t, p in forgotten:
        gone.setdefault(t, []).append(p)
    body["forgotten_topics_data"] = [{"topic": t, "partitions": ps} for t, ps in gone.items()]
    return c.request(ApiKey.FETCH, 12, body)


def answered(r) -> dict[tuple[str, int], list[bytes]]:
    return {(t.topic, p.partition_index): [rec.value for rec in fetched_records(p)]
            for t in r.responses for p in t.partitions}  # fmt: skip


def test_session_lifecycle(client):
    c = client
    create(c, "fs", 3)
    produce(c, "fs", 0, [b"a", b"b"])
    produce(c, "fs", 1, [b"c"])
    # Full fetch, epoch 0: a session is created; every partition is answered.
    r = session_fetch(c, 0, 0, [("fs", 0, 0), ("fs", 1, 0), ("fs", 2, 0)])
    assert r.error_code == 0 and r.session_id != 0
    sid = r.session_id
    assert answered(r) == {("fs", 0): [b"a", b"b"], ("fs", 1): [b"c"], ("fs", 2): []}
    # Incremental, epoch 1: the new positions of the two partitions read; nothing new
    # anywhere, so nothing is answered.
    r = session_fetch(c, sid, 1, [("fs", 0, 2), ("fs", 1, 1)])
    assert (r.error_code, r.session_id, answered(r)) == (0, sid, {})
    # New records in partition 2: only it is answered, though the request names nothing.
    produce(c, "fs", 2, [b"d"])
    r = session_fetch(c, sid, 2)
    assert (r.session_id, answered(r)) == (sid, {("fs", 2): [b"d"]})
    p2 = r.responses[0].partitions[0]
    assert (p2.high_watermark, p2.last_stable_offset, p2.log_start_offset) == (1, 1, 0)
    # The session keeps fetching partition 2 from offset 0 until told otherwise: the records
    # are answered again (the fetcher's position is what it last sent).
    r = session_fetch(c, sid, 3, [("fs", 2, 1)])
    assert answered(r) == {}
    # Forget partition 1: records produced to it afterwards are no longer answered.
    r = session_fetch(c, sid, 4, forgotten=[("fs", 1)])
    assert answered(r) == {}
    produce(c, "fs", 1, [b"e"])
    produce(c, "fs", 0, [b"f"])
    r = session_fetch(c, sid, 5)
    assert answered(r) == {("fs", 0): [b"f"]}
    # Epoch errors: the session stays, and the right epoch still works.
    r = session_fetch(c, sid, 5)
    assert (r.error_code, r.session_id, r.responses) == (INVALID_FETCH_SESSION_EPOCH, 0, [])
    r = session_fetch(c, sid, 9)
    assert r.error_code == INVALID_FETCH_SESSION_EPOCH
    r = session_fetch(c, sid, 6, [("fs", 0, 3)])
    assert (r.error_code, answered(r)) == (0, {})
    # Epoch -1 closes the session (and fetches without one); it is gone afterwards.
    r = session_fetch(c, sid, -1, [("fs", 1, 1)])
    assert (r.error_code, r.session_id, answered(r)) == (0, 0, {("fs", 1): [b"e"]})
    r = session_fetch(c, sid, 7)
    assert (r.error_code, r.session_id) == (FETCH_SESSION_ID_NOT_FOUND, 0)
    assert session_fetch(c, 123456, 1).error_code == FETCH_SESSION_ID_NOT_FOUND


def test_errors_and_high_watermark_changes_are_answered(broker, client):
    c = client
    create(c, "fe", 2)
    r = session_fetch(c, 0, 0, [("fe", 0, 0), ("fe", 1, 0)])
    sid = r.session_id
    # A partition whose requested offset is out of range is answered every time (errors are
    # always included), the other only when it changes.
    r = session_fetch(c, sid, 1, [("fe", 1, 50)])
    assert {(t.topic, p.partition_index): p.error_code for t in r.responses
            for p in t.partitions} == {("fe", 1): ErrorCode.OFFSET_OUT_OF_RANGE}  # fmt: skip
    r = session_fetch(c, sid, 2)
    assert [p.partition_index for t in r.responses for p in t.partitions] == [1]
    # Back in range: partition 1 is answered once more (its cached HW was reset by the
    # error), then not again; a log start offset change is news too.
    r = session_fetch(c, sid, 3, [("fe", 1, 0)])
    assert [(p.partition_index, p.error_code) for t in r.responses for p in t.partitions] == [
        (1, 0)
    ]
    assert answered(session_fetch(c, sid, 4)) == {}
    produce(c, "fe", 0, [b"x", b"y"])
    r = session_fetch(c, sid, 5, [("fe", 0, 2)])
    assert [(p.partition_index, p.high_watermark) for t in r.responses
            for p in t.partitions] == [(0, 2)]  # fmt: skip
    r = c.request(ApiKey.DELETE_RECORDS, 2, {
        "topics": [{"name": "fe", "partitions": [{"partition_index": 0, "offset": 1}]}],
        "timeout_ms": 5000,
    })  # fmt: skip
    assert r.topics[0].partitions[0].error_code == 0
    r = session_fetch(c, sid, 6)
    assert [(p.partition_index, p.log_start_offset) for t in r.responses
            for p in t.partitions] == [(0, 1)]  # fmt: skip


def test_incremental_fetch_waits_for_any_session_partition(broker, client):
    c = client
    create(c, "fw", 2)
    sid = session_fetch(c, 0, 0, [("fw", 0, 0), ("fw", 1, 0)]).session_id
    # A long poll over the session's partitions: a record in partition 1, named in no
    # incremental request, ends it.
    c.correlation_id += 1
    body = fetch_body([], max_wait_ms=10000)
    body["session_id"], body["session_epoch"] = sid, 1
    from protocol import codec

    c.send_raw(codec.encode_request(ApiKey.FETCH, 12, c.correlation_id, "t", body))
    from wire import wait_for

    wait_for(lambda: broker.call(lambda: len(
        broker.broker.replica_manager.get("fw", 1).waiters)) == 1, what="the waiting fetch")  # fmt: skip
    other = RawClient(broker.port)
    try:
        produce(other, "fw", 1, [b"wake"])
    finally:
        other.close()
    frame = c.recv_frame()
    r = codec.decode_response(ApiKey.FETCH, 12, frame, 5)
    assert answered(r) == {("fw", 1): [b"wake"]}


def test_cache_slots_and_eviction(make_broker):
    b = make_broker({"max.incremental.fetch.session.cache.slots": "2"})
    c = RawClient(b.port)
    try:
        create(c, "fc", 3)
        first = session_fetch(c, 0, 0, [("fc", 0, 0)]).session_id
        second = session_fetch(c, 0, 0, [("fc", 1, 0), ("fc", 2, 0)]).session_id
        assert first and second and first != second
        # Full, and neither session stale nor older than the eviction time (120 s): a
        # consumer's third session is refused (session id 0), the fetch still answered.
        r = session_fetch(c, 0, 0, [("fc", 0, 0), ("fc", 1, 0), ("fc", 2, 0)])
        assert (r.error_code, r.session_id) == (0, 0) and len(answered(r)) == 3
        # A follower's session is privileged: it evicts the smallest consumer session.
        body = fetch_body([("fc", 0, 0)])
        body.update(replica_id=7, session_id=0, session_epoch=0)
        assert c.request(ApiKey.FETCH, 12, body).session_id != 0
        assert session_fetch(c, first, 1).error_code == FETCH_SESSION_ID_NOT_FOUND
        assert session_fetch(c, second, 1).error_code == 0
    finally:
        c.close()
    b0 = make_broker({"max.incremental.fetch.session.cache.slots": "0"})
    c = RawClient(b0.port)
    try:
        create(c, "f0", 1)
        assert session_fetch(c, 0, 0, [("f0", 0, 0)]).session_id == 0
    finally:
        c.close()


class Req:
    """A request as the cache reads it (attribute names of kafka-python's FetchRequest)."""

    def __init__(self, session_id=0, epoch=0, parts=(), forgotten=()):
        self.session_id, self.session_epoch = session_id, epoch
        self.topics = [P(t, [Q(p) for p in ps]) for t, ps in parts]
        self.forgotten_topics_data = [F(t, ps) for t, ps in forgotten]


class P:
    def __init__(self, topic, partitions):
        self.topic, self.partitions = topic, partitions


class Q:
    def __init__(self, partition):
        self.partition, self.fetch_offset, self.partition_max_bytes = partition, 0, 1 << 20


class F:
    def __init__(self, topic, partitions):
        self.topic, self.partitions = topic, partitions


def open_session(cache, size: int, now: int, follower: bool = False) -> int:
    from protocol.hotpath import FetchPartitionResult

    ctx = cache.new_context(12, Req(parts=[("t", list(range(size)))]), follower, now)
    results = [(t.topic, [FetchPartitionResult(q.partition) for q in t.partitions])
               for t in ctx.topics]  # fmt: skip
    return cache.response_topics(ctx, results, follower, 12, now)[0]


def test_eviction_rules():
    """Kafka's FetchSessionCache.tryEvict, with the clock in hand: a stale session (unused for
    more than 120 s) goes first; else a larger session evicts a smaller one created more than
    120 s ago; a follower's session evicts a consumer's at any age, but not another
    follower's younger than 120 s."""
    cache = FetchSessionCache(2)
    t0 = 1_000_000
    small = open_session(cache, 1, t0)
    big = open_session(cache, 5, t0)
    assert small and big
    assert open_session(cache, 10, t0 + 1) == 0  # both younger than the eviction time
    later = t0 + EVICTION_MS + 1
    cache.sessions[big].last_used_ms = later  # big was used; small was not: stale
    third = open_session(cache, 1, later + 1)
    assert third and small not in cache.sessions
    # No stale session now (both used within 120 s); big is old, third is young.
    cache.sessions[third].last_used_ms = later + 1
    assert open_session(cache, 3, later + 2) == 0  # smaller than big, third too young
    fourth = open_session(cache, 6, later + 2)  # larger than big, which is old: evicted
    assert fourth and big not in cache.sessions
    # Followers: a privileged session evicts the smallest consumer session, young or not.
    follower = open_session(cache, 1, later + 3, follower=True)
    assert follower and third not in cache.sessions and fourth in cache.sessions
    assert open_session(cache, 1, later + 4, follower=True)
    assert fourth not in cache.sessions
    assert open_session(cache, 50, later + 5, follower=True) == 0  # two young followers
    assert cache.evictions == 4


def test_topic_id_sessions_are_not_mixed():
    """A session made by Fetch v13+ (topic ids) used by an older version, or the other way
    round, is FETCH_SESSION_TOPIC_ID_ERROR."""
    cache = FetchSessionCache(10)
    sid = open_session(cache, 2, 1000)
    ctx = cache.new_context(13, Req(sid, 1), False, 1001)
    assert (ctx.kind, ctx.error) == ("error", FETCH_SESSION_TOPIC_ID_ERROR)


def test_thousand_partitions_kafka_python_and_confluent(make_broker):
    """Consumers of 1,000 partitions read every record; kafka-python's fetches are
    incremental after the first (its FetchSessionHandler); librdkafka 2.16 fetches without
    sessions."""
    b = make_broker({"num.partitions": "1"})
    c = RawClient(b.port)
    c.sock.settimeout(120)  # 1,000 partition directories take a while on a loaded machine
    topic = "wide"
    n = 1000
    try:
        create(c, topic, n)
    finally:
        c.close()
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": b.bootstrap_servers, "linger.ms": 20})
    for i in range(n):
        p.produce(topic, b"v%d" % i, partition=i)
    assert p.flush(60) == 0
    expected = {b"v%d" % i for i in range(n)}

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=b.bootstrap_servers, auto_offset_reset="earliest",
                             enable_auto_commit=False, fetch_max_wait_ms=100)  # fmt: skip
    consumer.assign([TopicPartition(topic, i) for i in range(n)])
    got: set[bytes] = set()
    deadline = time.monotonic() + 60
    try:
        while len(got) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.update(r.value for r in records)
        assert got == expected
        # More records to a few partitions, read by the same consumer in its session.
        for i in range(0, n, 100):
            p.produce(topic, b"late%d" % i, partition=i)
        assert p.flush(60) == 0
        late = {b"late%d" % i for i in range(0, n, 100)}
        got = set()
        while got != late and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.update(r.value for r in records)
        incremental = b.call(lambda: b.broker.fetch_sessions.incremental_fetches)
    finally:
        consumer.close()
    assert got == late
    assert incremental > 0  # kafka-python fetched in a session

    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as CTP

    cc = Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "wide",
                   "enable.auto.commit": False})  # fmt: skip
    cc.assign([CTP(topic, i, 0) for i in range(n)])
    got = set()
    deadline = time.monotonic() + 60
    expected |= late
    try:
        while len(got) < len(expected) and time.monotonic() < deadline:
            m = cc.poll(0.2)
            if m is not None and m.error() is None:
                got.add(m.value())
    finally:
        cc.close()
    assert got == expected


def test_session_by_topic_id(client):
    """From Fetch v13 sessions hold topics by id: incremental answers by id, forgetting by
    id; a v13 session used with v12 (names) is FETCH_SESSION_TOPIC_ID_ERROR."""
    from test_topic_ids import fetch_by_id_body, topic_id

    c = client
    create(c, "fid", 2)
    tid = topic_id(c, "fid")
    produce(c, "fid", 0, [b"a"])
    body = fetch_by_id_body(tid, 0, 16)
    body["topics"][0]["partitions"].append({**body["topics"][0]["partitions"][0], "partition": 1})
    body["session_epoch"] = 0
    r = c.request(ApiKey.FETCH, 16, body)
    sid = r.session_id
    assert r.error_code == 0 and sid != 0
    assert [(t.topic_id, p.partition_index) for t in r.responses for p in t.partitions] == [
        (tid, 0), (tid, 1)
    ]  # fmt: skip

    def incremental(epoch: int, partitions=(), forget=(), version: int = 16):
        b = fetch_by_id_body(tid, 0, version)
        b["topics"] = [{"topic_id": tid, "partitions": [
            {**b["topics"][0]["partitions"][0], "partition": p, "fetch_offset": o}
            for p, o in partitions]}] if partitions else []  # fmt: skip
        b["forgotten_topics_data"] = (
            [{"topic_id": tid, "partitions": list(forget)}] if forget else []
        )
        b["session_id"], b["session_epoch"] = sid, epoch
        return c.request(ApiKey.FETCH, version, b)

    r = incremental(1, [(0, 1)])
    assert (r.error_code, r.session_id, r.responses) == (0, sid, [])
    produce(c, "fid", 1, [b"b"])
    r = incremental(2)
    assert [(t.topic_id, p.partition_index, [x.value for x in fetched_records(p)])
            for t in r.responses for p in t.partitions] == [(tid, 1, [b"b"])]  # fmt: skip
    r = incremental(3, forget=[1])
    assert r.responses == []
    produce(c, "fid", 1, [b"c"])
    assert incremental(4).responses == []
    r = session_fetch(c, sid, 5)  # v12: by name
    assert (r.error_code, r.session_id) == (FETCH_SESSION_TOPIC_ID_ERROR, 0)


def test_fetch_session_cache_metrics(make_broker):
    """Kafka's FetchSessionCache MBeans: NumIncrementalFetchSessions,
    NumIncrementalFetchPartitionsCached, IncrementalFetchSessionEvictionsPerSec."""
    from test_metrics import scrape, value

    b = make_broker({"metrics.port": 0, "max.incremental.fetch.session.cache.slots": "1"})
    c = RawClient(b.port)
    try:
        create(c, "fm", 3)
        assert session_fetch(c, 0, 0, [("fm", 0, 0), ("fm", 1, 0)]).session_id
        samples = scrape(b.metrics_url)
        prefix = "kafka_server_fetch_session_cache_"
        assert value(samples, prefix + "num_incremental_fetch_sessions") == 1
        assert value(samples, prefix + "num_incremental_fetch_partitions_cached") == 2
        body = fetch_body([("fm", 2, 0)])
        body.update(replica_id=5, session_id=0, session_epoch=0)  # a follower's evicts it
        assert c.request(ApiKey.FETCH, 12, body).session_id
        samples = scrape(b.metrics_url)
        assert value(samples, prefix + "num_incremental_fetch_partitions_cached") == 1
        assert value(samples, prefix + "incremental_fetch_session_evictions_total") == 1
    finally:
        c.close()


def grow(cache, session_id: int, epoch: int, partitions, now: int):
    """An incremental fetch adding `partitions` of topic t to the session."""
    return cache.new_context(12, Req(session_id, epoch, parts=[("t", list(partitions))]), False,
                             now)  # fmt: skip


def test_session_partition_bounds():
    """Sessions hold a bounded number of partitions: one session at most max_session_partitions,
    all of them at most max_partitions. A full fetch over the bound goes without a session; an
    incremental one that grows a session past it ends the session (FETCH_SESSION_ID_NOT_FOUND,
    the fetcher then starts over with a full fetch)."""
    cache = FetchSessionCache(10, max_session_partitions=100, max_partitions=250)
    t0 = 1_000_000

    def held() -> int:
        assert cache.num_partitions == sum(len(s.partitions) for s in cache.sessions.values())
        return cache.num_partitions

    assert open_session(cache, 101, t0) == 0 and held() == 0
    a = open_session(cache, 100, t0)
    assert a and held() == 100
    # Growing past 100: the session is gone, and its partitions with it.
    ctx = grow(cache, a, 1, range(100, 101), t0 + 1)
    assert (ctx.kind, ctx.error) == ("error", FETCH_SESSION_ID_NOT_FOUND)
    assert a not in cache.sessions and held() == 0
    # Forgetting and re-adding within the bound is fine; so is updating known partitions.
    b = open_session(cache, 100, t0)
    req = Req(b, 1, parts=[("t", [100])], forgotten=[("t", [0])])
    assert cache.new_context(12, req, False, t0 + 1).kind == "incremental" and held() == 100
    assert grow(cache, b, 2, range(1, 50), t0 + 2).kind == "incremental" and held() == 100
    # The cache as a whole: 100 + 100 held, a third session of 100 would make 300 > 250 and
    # neither young session may be evicted for one of the same size.
    c = open_session(cache, 100, t0 + 3)
    assert c and held() == 200
    assert open_session(cache, 100, t0 + 4) == 0 and held() == 200
    assert open_session(cache, 50, t0 + 4) and held() == 250
    ctx = grow(cache, c, 1, range(100, 101), t0 + 5)  # 251 > 250
    assert (ctx.kind, ctx.error) == ("error", FETCH_SESSION_ID_NOT_FOUND)
    assert c not in cache.sessions and held() == 150
    # A follower's session evicts consumers' sessions until it fits.
    f = open_session(cache, 100, t0 + 6, follower=True)
    assert f and held() <= 250 and cache.sessions[f].privileged
    # A full fetch naming a session closes it, and gives its partitions back.
    ctx = cache.new_context(12, Req(f, 0, parts=[("t", [0])]), True, t0 + 7)
    assert ctx.kind == "full" and f not in cache.sessions and held() <= 150
    assert cache.oversized == 3


def wide_fetch(c, session_id: int, epoch: int, topic: str, partitions: range):
    """Fetch v11 of many partitions, framed by hand (the schema codec takes seconds for
    50,000): (error code, session id, partitions answered)."""
    part = struct.Struct(">iiqqi")
    body = [struct.pack(">iiiibii", -1, 0, 1, 50 << 20, 0, session_id, epoch)]
    if partitions:
        body.append(struct.pack(">ih", 1, len(topic)) + topic.encode())
        body.append(struct.pack(">i", len(partitions)))
        body.extend(part.pack(p, -1, 0, -1, 1 << 20) for p in partitions)
    else:
        body.append(struct.pack(">i", 0))
    body.append(struct.pack(">ih", 0, 0))  # no forgotten topics, rack ""
    payload = struct.pack(">hhih", ApiKey.FETCH, 11, 9, 4) + b"wide" + b"".join(body)
    c.send_raw(struct.pack(">i", len(payload)) + payload)
    frame = c.recv_frame()
    assert frame is not None, "the broker closed the connection"
    _corr, _throttle, error, sid, ntopics = struct.unpack_from(">iihii", frame)
    answered = struct.unpack_from(">i", frame, 20 + len(topic))[0] if ntopics else 0
    return error, sid, answered


def test_a_session_holds_at_most_50000_partitions(make_broker):
    """On the wire, with the shipped bound (50,000 partitions a session, documented in
    DESIGN.md): a full fetch of 50,001 partitions is answered whole without a session; one of
    50,000 gets a session, which the next incremental fetch adding a partition ends."""
    b = make_broker({"metrics.port": 0})
    c = RawClient(b.port)
    try:
        create(c, "wide", 1)
        assert wide_fetch(c, 0, 0, "wide", range(50_001)) == (0, 0, 50_001)
        error, sid, n = wide_fetch(c, 0, 0, "wide", range(50_000))
        assert error == 0 and sid and n == 50_000
        # Incremental: partition 0 has nothing new; the 49,999 that don't exist are answered
        # their error each time, as Kafka does.
        assert wide_fetch(c, sid, 1, "wide", range(0)) == (0, sid, 49_999)
        r = wide_fetch(c, sid, 2, "wide", range(50_000, 50_001))
        assert r == (FETCH_SESSION_ID_NOT_FOUND, 0, 0)
        assert wide_fetch(c, sid, 3, "wide", range(0))[0] == FETCH_SESSION_ID_NOT_FOUND
        from test_metrics import scrape, value

        prefix = "kafka_server_fetch_session_cache_"
        samples = scrape(b.metrics_url)
        assert value(samples, prefix + "num_incremental_fetch_partitions_cached") == 0
    finally:
        c.close()

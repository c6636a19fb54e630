"""KIP-848 consumer groups with real clients: confluent-kafka (librdkafka) consumers with
group.protocol=consumer, and a kafka-python (classic protocol) member in the same group.

At every point checked the group's assignment is disjoint and covers every partition: four
members split the topic, one closes (leaves with epoch -1), one is SIGKILLed in a subprocess
(fenced after group.consumer.session.timeout.ms), a regex subscription picks up a topic created
later, and a classic member shares a group with a consumer-protocol member (the group converts
to a consumer group and back). Committed offsets and the group survive a broker restart.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from cli_helpers import tool
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from helpers import RawClient
from wire import wait_for

from protocol.apis import ApiKey

SESSION_MS = 3000
OVERRIDES = {
    "group.consumer.session.timeout.ms": SESSION_MS,
    "group.consumer.heartbeat.interval.ms": 300,
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
    "offsets.topic.num.partitions": 3,
}
CONSUMER_MEMBER, CLASSIC_MEMBER = 1, 0  # ConsumerGroupDescribe v1 MemberType


class Member:
    """A confluent-kafka consumer polled by its own thread; remembers its assignment."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], **config):
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
            "auto.offset.reset": "earliest", "enable.auto.commit": False, **config,
        })  # fmt: skip
        self.consumer.subscribe(topics)
        self.partitions: set[tuple[str, int]] = set()
        self.consumed = 0
        self.values: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.consumer.poll(0.05)
            if msg is not None and not msg.error():
                self.consumed += 1
                self.values.append(msg.value())
                self.consumer.commit(msg, asynchronous=True)
            self.partitions = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


def covers(members, expected: set[tuple[str, int]], sizes: list[int] | None = None) -> bool:
    """Disjoint and complete; optionally with these assignment sizes."""
    owned = [tp for m in members for tp in m.partitions]
    ok = len(owned) == len(set(owned)) and set(owned) == expected
    return ok and (sizes is None or sorted(len(m.partitions) for m in members) == sizes)


def describe(port: int, group: str) -> dict:
    client = RawClient(port)
    try:
        resp = client.request(ApiKey.CONSUMER_GROUP_DESCRIBE, 1, {"group_ids": [group]})
    finally:
        client.close()
    return resp.groups[0]


CRASHING_MEMBER = """
import sys
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
              "group.protocol": "consumer", "auto.offset.reset": "earliest"})
c.subscribe([sys.argv[3]])
while True:
    c.poll(0.05)
    if c.assignment():
        print("assigned", flush=True)
        break
while True:
    c.poll(0.05)
"""


def test_members_join_leave_and_crash(make_broker):
    broker = make_broker(OVERRIDES)
    bs = broker.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("orders", 8, 1)])["orders"].result()
    every = {("orders", p) for p in range(8)}
    producer = Producer({"bootstrap.servers": bs})
    for i in range(80):
        producer.produce("orders", value=b"%d" % i, partition=i % 8)
    producer.flush()

    members = [Member(bs, "g4", ["orders"]) for _ in range(3)]
    crash = subprocess.Popen(
        [sys.executable, "-c", CRASHING_MEMBER, bs, "g4", "orders"], stdout=subprocess.PIPE, text=True
    )  # fmt: skip
    try:
        assert crash.stdout.readline().strip() == "assigned"
        # Four members: each gets two of the eight partitions.
        group = wait_for(
            lambda: (d := describe(broker.port, "g4")).group_state == "Stable"
            and len(d.members) == 4 and covers(members, every - _owned_by_others(d, members))
            and d, 30, "4 members stable",
        )  # fmt: skip
        assert sorted(len(_parts(m.assignment)) for m in group.members) == [2, 2, 2, 2]
        assert all(m.member_type == CONSUMER_MEMBER for m in group.members)
        assert group.assignor_name == "uniform"  # group.consumer.assignors' first
        assert all(m.member_epoch == group.assignment_epoch for m in group.members)

        # One closes: it leaves with epoch -1 and the three left cover the topic.
        members.pop().close()
        wait_for(lambda: covers(members, every - _owned_by_others(describe(broker.port, "g4"), members)) and len(describe(broker.port, "g4").members) == 3, 30, "3 members")  # fmt: skip

        # The subprocess member crashes: fenced after the session timeout, the two remaining
        # members split everything.
        crash.kill()
        crash.wait()
        killed = time.monotonic()
        wait_for(lambda: covers(members, every, [4, 4]), 30, "2 members cover the topic")
        assert time.monotonic() - killed >= SESSION_MS / 1000 - 0.5
        # And they consume from every partition: one new record in each arrives.
        for p in range(8):
            producer.produce("orders", value=b"late-%d" % p, partition=p)
        producer.flush()
        late = {b"late-%d" % p for p in range(8)}
        wait_for(lambda: late <= {v for m in members for v in m.values}, 20, "late records")
    finally:
        crash.kill()
        for m in members:
            m.close()


def _parts(assignment) -> set[tuple[str, int]]:
    return {(t.topic_name, p) for t in assignment.topic_partitions for p in t.partitions}


def _owned_by_others(described, members) -> set[tuple[str, int]]:
    """Partitions the coordinator has given members other than these (the subprocess one)."""
    mine = {tp for m in members for tp in m.partitions}
    theirs = set()
    for m in described.members:
        theirs |= _parts(m.assignment)
    return theirs - mine if len(described.members) > len(members) else set()


def test_regex_subscription_picks_up_a_new_topic(make_broker):
    broker = make_broker(OVERRIDES)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic("rx-a", 2, 1)])["rx-a"].result()
    member = Member(broker.bootstrap_servers, "rx", ["^rx-.*"])
    try:
        wait_for(lambda: member.partitions == {("rx-a", 0), ("rx-a", 1)}, 30, "rx-a assigned")
        d = describe(broker.port, "rx")
        assert d.members[0].subscribed_topic_regex is not None
        admin.create_topics([NewTopic("rx-b", 3, 1)])["rx-b"].result()
        admin.create_topics([NewTopic("other", 1, 1)])["other"].result()
        # librdkafka refreshes metadata to learn the names of the new assignment's topic ids.
        expected = {("rx-a", 0), ("rx-a", 1), ("rx-b", 0), ("rx-b", 1), ("rx-b", 2)}
        wait_for(lambda: member.partitions == expected, 40, "rx-b assigned too")
    finally:
        member.close()


def test_classic_and_consumer_members_in_one_group(make_broker):
    from kafka import KafkaConsumer

    broker = make_broker(OVERRIDES)
    bs = broker.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("mixed", 4, 1)])["mixed"].result()
    every = {("mixed", p) for p in range(4)}
    classic = KafkaConsumer(
        "mixed", bootstrap_servers=bs, group_id="mix", session_timeout_ms=3000,
        heartbeat_interval_ms=300, auto_offset_reset="earliest",
    )  # fmt: skip
    stop = threading.Event()
    classic_parts: set[tuple[str, int]] = set()

    def poll() -> None:
        while not stop.is_set():
            # Not shorter: kafka-python 3.0.12 orphans a metadata-triggered rejoin whose
            # SyncGroup outlives one poll() (see compat-tests' drv_kafka_python GROUP_POLL_MS).
            classic.poll(1000)
            classic_parts.clear()
            classic_parts.update((tp.topic, tp.partition) for tp in classic.assignment())

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    member = None
    try:
        wait_for(lambda: classic_parts == every, 30, "classic member alone owns everything")
        member = Member(bs, "mix", ["mixed"])
        wait_for(
            lambda: len(member.partitions) == 2 and len(classic_parts) == 2
            and member.partitions | classic_parts == every, 30, "split between both protocols",
        )  # fmt: skip
        d = describe(broker.port, "mix")
        assert d.error_code == 0 and d.group_state in ("Stable", "Reconciling")
        assert sorted(m.member_type for m in d.members) == [CLASSIC_MEMBER, CONSUMER_MEMBER]
        # kafka-consumer-groups shows both members with their epochs (Kafka 4's columns).
        out = tool("kafka-consumer-groups", "--bootstrap-server", "localhost:9092",
                   "--describe", "--group", "mix", "--members", "--verbose", port=broker.port)  # fmt: skip
        assert out.returncode == 0, out.stderr
        lines = [ln.split() for ln in out.stdout.strip().splitlines()]
        assert lines[0] == ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS",
                            "CURRENT-EPOCH", "CURRENT-ASSIGNMENT", "TARGET-EPOCH",
                            "TARGET-ASSIGNMENT"]  # fmt: skip
        assert sorted(row[1] for row in lines[1:]) == sorted(m.member_id for m in d.members)
        clients = sorted(row[3] for row in lines[1:])
        assert clients[0].startswith("kafka-python") and clients[1] == "rdkafka"
        out = tool("kafka-consumer-groups", "--bootstrap-server", "localhost:9092",
                   "--describe", "--group", "mix", "--state", "--verbose", port=broker.port)  # fmt: skip
        header, row = (ln.split() for ln in out.stdout.strip().splitlines())
        assert header[-3:] == ["GROUP-EPOCH", "TARGET-ASSIGNMENT-EPOCH", "#MEMBERS"]
        assert row[-1] == "2" and row[3] == "uniform"
        member.close()
        member = None
        # The last consumer-protocol member left: a classic group again, which rebalances.
        wait_for(lambda: classic_parts == every, 30, "classic member owns everything again")
        d = describe(broker.port, "mix")
        assert d.error_code == 69  # GROUP_ID_NOT_FOUND: "Group mix is not a consumer group."
    finally:
        stop.set()
        thread.join(10)
        classic.close()
        if member is not None:
            member.close()


def test_commits_and_group_survive_a_restart(make_broker, tmp_path):
    data = str(tmp_path / "restart")
    broker = make_broker(OVERRIDES, data_dir=data)
    bs = broker.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("kept", 2, 1)])["kept"].result()
    producer = Producer({"bootstrap.servers": bs})
    for i in range(20):
        producer.produce("kept", value=b"%d" % i, partition=i % 2)
    producer.flush()
    member = Member(bs, "keep", ["kept"], **{"group.instance.id": "inst-1"})
    try:
        wait_for(lambda: member.consumed == 20, 30, "first 20 consumed")
    finally:
        # A static member closes with epoch -2 (its asynchronous commits done first): it keeps
        # its place and partitions for the session timeout, in __consumer_offsets as the broker
        # stops. That every commit landed shows below: the next member reads only new records.
        member.close()
    before = describe(broker.port, "keep")
    assert [m.member_epoch for m in before.members] == [-2]
    broker.stop()

    broker = make_broker(OVERRIDES, data_dir=data)
    after = describe(broker.port, "keep")
    assert after.error_code == 0
    assert (after.group_epoch, after.assignment_epoch) == (
        before.group_epoch,
        before.assignment_epoch,
    )
    assert [
        (m.member_id, m.instance_id, m.member_epoch, _parts(m.assignment)) for m in after.members
    ] == [(m.member_id, m.instance_id, -2, {("kept", 0), ("kept", 1)}) for m in before.members]
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(20, 30):
        producer.produce("kept", value=b"%d" % i, partition=i % 2)
    producer.flush()
    # A new member takes over once the old static member's session (started again by the
    # load) has run out, and resumes at the committed offsets: only the 10 new records.
    again = Member(broker.bootstrap_servers, "keep", ["kept"], **{"group.instance.id": "inst-2"})
    try:
        wait_for(lambda: again.consumed >= 10, 30, "10 new records")
        assert sorted(int(v) for v in again.values) == list(range(20, 30))
    finally:
        again.close()


@pytest.mark.parametrize("api,versions", [
    (ApiKey.CONSUMER_GROUP_HEARTBEAT, (0, 1)), (ApiKey.CONSUMER_GROUP_DESCRIBE, (0, 1)),
    (ApiKey.OFFSET_COMMIT, (2, 9)), (ApiKey.OFFSET_FETCH, (1, 9)),
])  # fmt: skip
def test_api_versions(broker, api, versions):
    """Kafka 4.1's ranges for these APIs."""
    client = RawClient(broker.port)
    try:
        resp = client.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})  # fmt: skip
    finally:
        client.close()
    got = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert got[api] == versions

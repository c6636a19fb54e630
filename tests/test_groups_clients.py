"""Consumer groups with real client libraries: kafka-python, aiokafka and confluent-kafka.

Each scenario runs four members of one group on a 4-partition topic: three in this process
(committing after every batch) and one in a subprocess that never commits and is SIGKILLed (a
crash: no LeaveGroup). The assignment must be disjoint and complete at every stable point; the
crashed member's partition must move within the session timeout; a member closing cleanly hands
its partitions over; and across all of it every record is consumed-and-committed exactly once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

TOPIC = "orders"
PARTITIONS = 4
SESSION_MS = 2000
HEARTBEAT_MS = 300
GROUP_OVERRIDES = {"group.initial.rebalance.delay.ms": 0, "group.min.session.timeout.ms": 1000}


def wait_until(cond, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def describe(admin: KafkaAdminClient, group: str) -> tuple[str, dict[str, tuple[str, set[int]]]]:
    """(state, {member id: (client id, assigned partitions)}) from DescribeGroups."""
    d = admin.describe_groups([group])[group]
    members = {}
    for m in d["members"]:
        assignment = m["member_assignment"] or {}
        parts = {p for a in assignment.get("assigned_partitions", []) for p in a["partitions"]}
        members[m["member_id"]] = (m["client_id"], parts)
    return d["group_state"], members


def stable_assignment(admin, group: str, n_members: int):
    """The group's assignment once Stable with n members, disjoint and covering every partition."""

    def check():
        state, members = describe(admin, group)
        if state != "Stable" or len(members) != n_members:
            return None
        owned = [p for _, parts in members.values() for p in parts]
        if sorted(owned) != list(range(PARTITIONS)):
            return None
        return members

    return wait_until(check, 30, f"a stable group of {n_members} covering all partitions")


def produce(bootstrap: str, count: int, start: int = 0) -> set[tuple[int, int]]:
    """count records spread evenly over the partitions; returns their (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    futures = [
        producer.send(TOPIC, value=str(i).encode(), partition=i % PARTITIONS)
        for i in range(start, start + count)
    ]
    producer.flush()
    producer.close()
    return {(f.get().partition, f.get().offset) for f in futures}


# --- members --------------------------------------------------------------------------------


class Member(threading.Thread):
    """A group member consuming in its own thread; records count once their commit succeeded."""

    def __init__(self, bootstrap: str, group: str, name: str, sink: list, lock: threading.Lock):
        super().__init__(name=name, daemon=True)
        self.bootstrap, self.group, self.client_id = bootstrap, group, name
        self.sink, self.lock = sink, lock
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def record(self, consumed: list[tuple[int, int]]) -> None:
        with self.lock:
            self.sink.extend(consumed)

    def run(self) -> None:
        try:
            self.consume()
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        assert not self.is_alive(), f"{self.name} did not stop"
        if self.error is not None:
            raise self.error


class KafkaPythonMember(Member):
    def consume(self) -> None:
        from kafka import KafkaConsumer

        c = KafkaConsumer(
            TOPIC, bootstrap_servers=self.bootstrap, group_id=self.group, client_id=self.client_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
        )  # fmt: skip
        while not self.stopping.is_set():
            # kafka-python 3.0.12 loses a join that is still in flight when poll() times out
            # and the leader's metadata changed meanwhile (need_rejoin() turns False before
            # the join completes, so its heartbeat is never re-enabled): poll long enough for
            # a rebalance to finish within one call.
            batch = c.poll(timeout_ms=2000)
            records = [(r.partition, r.offset) for rs in batch.values() for r in rs]
            if records:
                c.commit()
                self.record(records)
        c.close()


class AiokafkaMember(Member):
    def consume(self) -> None:
        asyncio.run(self._consume())

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(
            TOPIC, bootstrap_servers=self.bootstrap, group_id=self.group, client_id=self.client_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
        )  # fmt: skip
        await c.start()
        try:
            while not self.stopping.is_set():
                batch = await c.getmany(timeout_ms=100)
                records = [(r.partition, r.offset) for rs in batch.values() for r in rs]
                if records:
                    await c.commit()
                    self.record(records)
        finally:
            await c.stop()


class ConfluentMember(Member):
    def consume(self) -> None:
        from confluent_kafka import Consumer

        c = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group,
            "client.id": self.client_id, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS,
        })  # fmt: skip
        c.subscribe([TOPIC])
        while not self.stopping.is_set():
            msgs = [m for m in c.consume(num_messages=500, timeout=0.1) if not m.error()]
            if msgs:
                c.commit(asynchronous=False)
                self.record([(m.partition(), m.offset()) for m in msgs])
        c.close()


# A member in a subprocess that consumes without ever committing, to be SIGKILLed.
CRASH_SCRIPTS = {
    KafkaPythonMember: """
from kafka import KafkaConsumer
c = KafkaConsumer({topic!r}, bootstrap_servers={bootstrap!r}, group_id={group!r}, client_id="crasher",
    enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms={session},
    heartbeat_interval_ms={heartbeat})
while True:
    c.poll(timeout_ms=2000)
""",
    AiokafkaMember: """
import asyncio
from aiokafka import AIOKafkaConsumer
async def main():
    c = AIOKafkaConsumer({topic!r}, bootstrap_servers={bootstrap!r}, group_id={group!r},
        client_id="crasher", enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms={session}, heartbeat_interval_ms={heartbeat})
    await c.start()
    while True:
        await c.getmany(timeout_ms=100)
asyncio.run(main())
""",
    ConfluentMember: """
from confluent_kafka import Consumer
c = Consumer({{"bootstrap.servers": {bootstrap!r}, "group.id": {group!r}, "client.id": "crasher",
    "enable.auto.commit": False, "auto.offset.reset": "earliest",
    "session.timeout.ms": {session}, "heartbeat.interval.ms": {heartbeat}}})
c.subscribe([{topic!r}])
while True:
    c.poll(0.1)
""",
}


@pytest.mark.parametrize(
    "member_cls", [KafkaPythonMember, AiokafkaMember, ConfluentMember],
    ids=["kafka-python", "aiokafka", "confluent-kafka"],
)  # fmt: skip
def test_group_of_four_shares_partitions_and_survives_crash_and_handover(make_broker, member_cls):
    broker = make_broker(GROUP_OVERRIDES)
    bootstrap = broker.bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    group = f"group-{member_cls.__name__}"
    consumed: list[tuple[int, int]] = []
    lock = threading.Lock()

    def count() -> int:
        with lock:
            return len(consumed)

    script = CRASH_SCRIPTS[member_cls].format(
        topic=TOPIC, bootstrap=bootstrap, group=group, session=SESSION_MS, heartbeat=HEARTBEAT_MS
    )
    crasher = subprocess.Popen([sys.executable, "-c", script])
    members = [member_cls(bootstrap, group, f"member-{i}", consumed, lock) for i in range(3)]
    try:
        for m in members:
            m.start()
        # Four members, one partition each, together all four.
        assignment = stable_assignment(admin, group, 4)
        assert all(len(parts) == 1 for _, parts in assignment.values())
        crash_partitions = [parts for cid, parts in assignment.values() if cid == "crasher"][0]

        produced = produce(bootstrap, 200)
        wait_until(lambda: count() == 150, 30, "the three members' share of the records")

        # Crash: no LeaveGroup. The session timeout hands the partition to the survivors, who
        # read it from the start (the crashed member never committed).
        crasher.kill()
        crasher.wait(10)
        assignment = stable_assignment(admin, group, 3)
        assert "crasher" not in {cid for cid, _ in assignment.values()}
        wait_until(lambda: count() == 200, 30, "the crashed member's partition to be consumed")
        with lock:
            assert {p for p, _ in consumed[150:]} == crash_partitions

        # Clean handover: member-0 has committed everything and leaves; the others resume from
        # its committed offsets, so nothing is read again and nothing is skipped.
        members[0].stop()
        stable_assignment(admin, group, 2)
        produced |= produce(bootstrap, 200, start=200)
        wait_until(lambda: count() == 400, 30, "records produced after the handover")
        for m in members[1:]:
            m.stopping.set()
        for m in members[1:]:
            m.stop()
        assert len(consumed) == 400, "a record was consumed twice"
        assert set(consumed) == produced
    finally:
        crasher.kill()
        crasher.wait(10)
        for m in members:
            m.stopping.set()
        admin.close()


# --- confluent-kafka: cooperative rebalancing and static membership ------------------------


class Tracked:
    """A confluent-kafka consumer polled by the test, recording its (incremental) callbacks."""

    def __init__(self, bootstrap: str, group: str, **config):
        from confluent_kafka import Consumer

        self.assigned: list[set[int]] = []
        self.revoked: list[set[int]] = []
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": HEARTBEAT_MS, **config,
        })  # fmt: skip
        self.consumer.subscribe(
            [TOPIC],
            on_assign=lambda c, ps: self.assigned.append({p.partition for p in ps}),
            on_revoke=lambda c, ps: self.revoked.append({p.partition for p in ps}),
        )

    def owned(self) -> set[int]:
        return {p.partition for p in self.consumer.assignment()}


def poll_until(members: list[Tracked], cond, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        for m in members:
            m.consumer.poll(0.05)


def covers_all(members: list[Tracked]) -> bool:
    owned = [p for m in members for p in m.owned()]
    return sorted(owned) == list(range(PARTITIONS)) and all(m.owned() for m in members)


def test_confluent_cooperative_sticky_moves_only_what_it_must(make_broker):
    broker = make_broker(GROUP_OVERRIDES)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    admin.close()
    config = {"partition.assignment.strategy": "cooperative-sticky"}
    a, b = (Tracked(broker.bootstrap_servers, "coop", **config) for _ in range(2))
    poll_until([a, b], lambda: covers_all([a, b]), "two members sharing four partitions")
    before = {id(m): m.owned() for m in (a, b)}
    seen = {id(m): len(m.revoked) for m in (a, b)}

    c = Tracked(broker.bootstrap_servers, "coop", **config)
    poll_until([a, b, c], lambda: covers_all([a, b, c]), "three members sharing four partitions")
    # Incremental: a and b gave up only what c got, and were never asked to revoke the rest.
    moved = c.owned()
    revoked = set().union(*a.revoked[seen[id(a)] :], *b.revoked[seen[id(b)] :])
    assert revoked == moved
    for m in (a, b):
        assert m.owned() == before[id(m)] - moved
    group = broker.call(lambda: broker.broker.group_coordinator.groups["coop"])
    assert group.protocol_name == "cooperative-sticky"

    # c leaves: its partitions go back without a, b revoking anything more.
    revocations = (len(a.revoked), len(b.revoked))
    c.consumer.close()
    poll_until([a, b], lambda: covers_all([a, b]), "c's partitions back with a and b")
    for m, n in zip((a, b), revocations, strict=True):
        assert all(not r for r in m.revoked[n:])  # cooperative callbacks may be empty
    a.consumer.close()
    b.consumer.close()


def test_confluent_static_member_restarts_without_rebalance(make_broker):
    broker = make_broker(GROUP_OVERRIDES)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    admin.close()
    static = {"session.timeout.ms": 10000}
    a = Tracked(broker.bootstrap_servers, "static", **{"group.instance.id": "a", **static})
    b = Tracked(broker.bootstrap_servers, "static", **{"group.instance.id": "b", **static})
    poll_until([a, b], lambda: covers_all([a, b]), "two static members sharing partitions")
    coordinator = broker.call(lambda: broker.broker.group_coordinator)
    generation = broker.call(lambda: coordinator.groups["static"].generation_id)
    owned_a, owned_b, revoked_b = a.owned(), b.owned(), len(b.revoked)

    # A static member's close sends no LeaveGroup: the group keeps its place.
    a.consumer.close()
    a2 = Tracked(broker.bootstrap_servers, "static", **{"group.instance.id": "a", **static})
    poll_until([a2, b], lambda: a2.owned() == owned_a, "the restarted member's old partitions")
    assert broker.call(lambda: coordinator.groups["static"].generation_id) == generation
    assert b.owned() == owned_b and len(b.revoked) == revoked_b
    group = broker.call(lambda: coordinator.groups["static"])
    assert group.state.value == "Stable"
    assert sorted(m.group_instance_id for m in group.members.values()) == ["a", "b"]
    a2.consumer.close()
    b.consumer.close()

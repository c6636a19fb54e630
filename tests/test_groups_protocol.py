"""The group coordinator over the raw wire protocol: the classic state machine, static
membership, timeouts and Kafka's error codes for bad or stale input."""

from __future__ import annotations

import struct
import time

import pytest
from helpers import RawClient

from protocol import codec
from protocol.apis import ApiKey
from protocol.errors import ErrorCode

FAST = {
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 500,
    "num.partitions": 2,
}
SESSION = 10000


def subscription(*topics: str) -> bytes:
    """ConsumerProtocolSubscription v0: the metadata a consumer joins with."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


class Client(RawClient):
    def send(self, api: int, version: int, body: dict) -> None:
        self.correlation_id += 1
        self.send_raw(codec.encode_request(api, version, self.correlation_id, "raw-test", body))

    def recv(self, api: int, version: int):
        frame = self.recv_frame()
        assert frame is not None, "connection closed"
        offset = 4 + (1 if codec.response_is_flexible(api, version) else 0)
        return codec.decode_response(api, version, frame, offset)

    # --- group calls ------------------------------------------------------------------------

    def send_join(self, group: str, member_id: str = "", version: int = 5, instance: str | None = None,
                  session: int = SESSION, rebalance: int = 30000, protocol_type: str = "consumer",
                  protocols=(("range", None),)) -> None:  # fmt: skip
        self.send(ApiKey.JOIN_GROUP, version, {
            "group_id": group, "session_timeout_ms": session, "rebalance_timeout_ms": rebalance,
            "member_id": member_id, "group_instance_id": instance, "protocol_type": protocol_type,
            "protocols": [{"name": n, "metadata": m if m is not None else subscription("t")}
                          for n, m in protocols],
        })  # fmt: skip

    def join(self, group: str, member_id: str = "", version: int = 5, **kw):
        self.send_join(group, member_id, version, **kw)
        return self.recv(ApiKey.JOIN_GROUP, version)

    def join_new(self, group: str, version: int = 5, **kw):
        """A dynamic member's first join: MEMBER_ID_REQUIRED, then the real join."""
        r = self.join(group, version=version, **kw)
        assert r.error_code == ErrorCode.MEMBER_ID_REQUIRED
        assert r.member_id
        return self.join(group, r.member_id, version, **kw)

    def send_sync(self, group, generation, member_id, assignments=(), version=3, instance=None):
        self.send(ApiKey.SYNC_GROUP, version, {
            "group_id": group, "generation_id": generation, "member_id": member_id,
            "group_instance_id": instance,
            "assignments": [{"member_id": m, "assignment": a} for m, a in assignments],
        })  # fmt: skip

    def sync(self, group, generation, member_id, assignments=(), version=3, instance=None):
        self.send_sync(group, generation, member_id, assignments, version, instance)
        return self.recv(ApiKey.SYNC_GROUP, version)

    def heartbeat(self, group, generation, member_id, instance=None) -> int:
        return self.request(ApiKey.HEARTBEAT, 4, {
            "group_id": group, "generation_id": generation, "member_id": member_id,
            "group_instance_id": instance,
        }).error_code  # fmt: skip

    def describe(self, group):
        return self.request(ApiKey.DESCRIBE_GROUPS, 5, {
            "groups": [group], "include_authorized_operations": False,
        }).groups[0]  # fmt: skip

    def commit(self, group, offsets, generation=-1, member_id="", version=8, instance=None):
        """offsets: {(topic, partition): (offset, metadata)} -> {(topic, partition): error}."""
        topics: dict[str, list] = {}
        for (t, p), (off, meta) in offsets.items():
            topics.setdefault(t, []).append({
                "partition_index": p, "committed_offset": off, "committed_leader_epoch": 7,
                "committed_metadata": meta,
            })  # fmt: skip
        r = self.request(ApiKey.OFFSET_COMMIT, version, {
            "group_id": group, "generation_id_or_member_epoch": generation, "member_id": member_id,
            "group_instance_id": instance, "retention_time_ms": -1,
            "topics": [{"name": t, "partitions": ps} for t, ps in topics.items()],
        })  # fmt: skip
        return {(t.name, p.partition_index): p.error_code for t in r.topics for p in t.partitions}

    def fetch_offsets(self, group, partitions=None, version=8):
        if version >= 8:
            topics = None if partitions is None else [
                {"name": t, "partition_indexes": ps} for t, ps in partitions.items()
            ]  # fmt: skip
            r = self.request(ApiKey.OFFSET_FETCH, version, {
                "groups": [{"group_id": group, "topics": topics}], "require_stable": False,
            })  # fmt: skip
            g = r.groups[0]
            assert g.error_code == 0
            topics_out = g.topics
        else:
            r = self.request(ApiKey.OFFSET_FETCH, version, {
                "group_id": group,
                "topics": None if partitions is None
                else [{"name": t, "partition_indexes": ps} for t, ps in partitions.items()],
            })  # fmt: skip
            topics_out = r.topics
        return {
            (t.name, p.partition_index): (p.committed_offset, p.metadata, p.error_code)
            for t in topics_out
            for p in t.partitions
        }


@pytest.fixture
def fast_broker(make_broker):
    return make_broker(FAST)


@pytest.fixture
def client(fast_broker):
    clients = []

    def make() -> Client:
        c = Client(fast_broker.port)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def wait_until(cond, timeout: float = 15, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def create_topic(c: Client, name: str, partitions: int = 2) -> None:
    r = c.request(ApiKey.CREATE_TOPICS, 5, {
        "topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1,
                    "assignments": [], "configs": []}],
        "timeout_ms": 5000, "validate_only": False,
    })  # fmt: skip
    assert r.topics[0].error_code == 0


# --- FindCoordinator ----------------------------------------------------------------------


def test_find_coordinator_creates_offsets_topic_lazily(fast_broker, client):
    c = client()
    offsets_topic = lambda: fast_broker.call(  # noqa: E731
        lambda: fast_broker.broker.metadata.topic("__consumer_offsets")
    )
    assert offsets_topic() is None  # start-up doesn't create it
    r = c.request(ApiKey.FIND_COORDINATOR, 0, {"key": "g"})
    assert (r.error_code, r.node_id, r.port) == (0, 1, fast_broker.port)
    info = offsets_topic()
    assert info is not None and len(info.partitions) == 50
    assert info.configs["cleanup.policy"] == "compact"
    r = c.request(ApiKey.FIND_COORDINATOR, 3, {"key": "g", "key_type": 0})
    assert (r.error_code, r.node_id, r.host) == (0, 1, "127.0.0.1")


def test_find_coordinator_batched_and_key_types(fast_broker, client):
    c = client()
    r = c.request(ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["a", "b", ""]})
    assert [(x.key, x.error_code, x.node_id) for x in r.coordinators] == [
        ("a", 0, 1), ("b", 0, 1), ("", 0, 1),
    ]  # fmt: skip
    # Transactions: the leader of the id's __transaction_state partition (this broker).
    r = c.request(ApiKey.FIND_COORDINATOR, 4, {"key_type": 1, "coordinator_keys": ["tx"]})
    assert (r.coordinators[0].error_code, r.coordinators[0].node_id) == (0, 1)
    r = c.request(ApiKey.FIND_COORDINATOR, 2, {"key": "x", "key_type": 7})
    assert r.error_code == ErrorCode.INVALID_REQUEST


# --- JoinGroup / SyncGroup / Heartbeat ----------------------------------------------------


def test_first_join_requires_member_id_then_forms_generation(client):
    c = client()
    r = c.join("g", version=5)
    assert r.error_code == ErrorCode.MEMBER_ID_REQUIRED
    member = r.member_id
    assert member.startswith("raw-test-")  # client id, a dash, a UUID
    r = c.join("g", member, 5)
    assert (r.error_code, r.generation_id, r.leader, r.member_id) == (0, 1, member, member)
    assert r.protocol_name == "range"
    assert [(m.member_id, bytes(m.metadata)) for m in r.members] == [(member, subscription("t"))]
    s = c.sync("g", 1, member, [(member, b"assignment-1")], version=5)
    assert (s.error_code, bytes(s.assignment), s.protocol_name) == (0, b"assignment-1", "range")
    assert c.heartbeat("g", 1, member) == ErrorCode.NONE
    d = c.describe("g")
    assert (d.group_state, d.protocol_type, d.protocol_data) == ("Stable", "consumer", "range")
    assert d.members[0].client_host == "/127.0.0.1"
    assert bytes(d.members[0].member_assignment) == b"assignment-1"


def test_join_before_v4_needs_no_member_id_round_trip(client):
    r = client().join("g", version=3)
    assert r.error_code == 0 and r.generation_id == 1 and r.member_id


def test_join_v0_uses_session_timeout_as_rebalance_timeout(client):
    c = client()
    c.send(ApiKey.JOIN_GROUP, 0, {
        "group_id": "g0", "session_timeout_ms": SESSION, "member_id": "",
        "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": b"x"}],
    })  # fmt: skip
    r = c.recv(ApiKey.JOIN_GROUP, 0)
    assert r.error_code == 0 and r.generation_id == 1


def test_stale_and_unknown_members_get_kafkas_errors(client):
    c = client()
    r = c.join_new("g")
    member = r.member_id
    assert c.sync("g", 1, member, [(member, b"a")]).error_code == 0
    assert c.heartbeat("g", 0, member) == ErrorCode.ILLEGAL_GENERATION
    assert c.heartbeat("g", 2, member) == ErrorCode.ILLEGAL_GENERATION
    assert c.heartbeat("g", 1, "nobody") == ErrorCode.UNKNOWN_MEMBER_ID
    assert c.heartbeat("no-such-group", 1, member) == ErrorCode.UNKNOWN_MEMBER_ID
    assert c.heartbeat("", 1, member) == ErrorCode.INVALID_GROUP_ID
    assert c.sync("g", 0, member).error_code == ErrorCode.ILLEGAL_GENERATION
    assert c.sync("g", 1, "nobody").error_code == ErrorCode.UNKNOWN_MEMBER_ID
    assert c.sync("no-such-group", 1, member).error_code == ErrorCode.UNKNOWN_MEMBER_ID
    s = c.sync("g", 1, member, version=5)  # Stable: the member's assignment again
    assert (s.error_code, bytes(s.assignment)) == (0, b"a")
    c.send(ApiKey.SYNC_GROUP, 5, {
        "group_id": "g", "generation_id": 1, "member_id": member, "protocol_type": "consumer",
        "protocol_name": "roundrobin", "assignments": [],
    })  # fmt: skip
    assert c.recv(ApiKey.SYNC_GROUP, 5).error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    # A known member id for a group that doesn't exist, and a member id the group never gave.
    assert c.join("other", "made-up").error_code == ErrorCode.UNKNOWN_MEMBER_ID
    assert c.join("g", "made-up").error_code == ErrorCode.UNKNOWN_MEMBER_ID
    # Nothing was harmed: the member still heartbeats in its generation.
    assert c.heartbeat("g", 1, member) == ErrorCode.NONE


def test_join_validation_errors(fast_broker, client):
    c = client()
    assert c.join("").error_code == ErrorCode.INVALID_GROUP_ID
    assert c.join("g", session=100).error_code == ErrorCode.INVALID_SESSION_TIMEOUT
    assert c.join("g", session=10**9).error_code == ErrorCode.INVALID_SESSION_TIMEOUT
    assert c.join("g", protocol_type="", version=3).error_code == (
        ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    )
    first = c.join("g", version=3)
    assert first.error_code == 0
    # A member must share the group's protocol type and at least one protocol.
    other = client()
    assert other.join("g", version=3, protocol_type="connect").error_code == (
        ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    )
    assert other.join("g", version=3, protocols=(("sticky", None),)).error_code == (
        ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    )
    # Failed joins of new groups leave nothing behind.
    groups = c.request(ApiKey.LIST_GROUPS, 4, {"states_filter": []}).groups
    assert [g.group_id for g in groups] == ["g"]


def test_group_max_size(make_broker):
    b = make_broker({**FAST, "group.max.size": 1})
    a, c = Client(b.port), Client(b.port)
    assert a.join("g", version=3).error_code == 0
    assert c.join("g", version=3).error_code == ErrorCode.GROUP_MAX_SIZE_REACHED
    a.close()
    c.close()


def test_second_member_rebalances_and_protocol_is_voted(client):
    a, b = client(), client()
    ra = a.join_new("g", protocols=(("roundrobin", b"a1"), ("range", b"a2")))
    leader = ra.member_id
    assert ra.protocol_name == "roundrobin"
    assert a.sync("g", 1, leader, [(leader, b"all")]).error_code == 0
    # b prefers range; a still prefers roundrobin, so each has one vote: a tie, which goes to
    # the preference of the earliest member (a).
    rb = b.join("g", version=5, protocols=(("range", b"b1"), ("roundrobin", b"b2")))
    b.send_join("g", rb.member_id, 5, protocols=(("range", b"b1"), ("roundrobin", b"b2")))
    assert a.heartbeat("g", 1, leader) == ErrorCode.REBALANCE_IN_PROGRESS
    a.send_join("g", leader, 5, protocols=(("roundrobin", b"a1"), ("range", b"a2")))
    ja, jb = a.recv(ApiKey.JOIN_GROUP, 5), b.recv(ApiKey.JOIN_GROUP, 5)
    assert (ja.generation_id, jb.generation_id) == (2, 2)
    assert ja.leader == jb.leader == leader
    assert ja.protocol_name == jb.protocol_name == "roundrobin"
    # Only the leader gets the members, with the metadata of the chosen protocol.
    assert {(m.member_id, bytes(m.metadata)) for m in ja.members} == {
        (leader, b"a1"), (jb.member_id, b"b2"),
    }  # fmt: skip
    assert jb.members == []
    # The follower's sync waits for the leader's assignment.
    b.send_sync("g", 2, jb.member_id)
    sa = a.sync("g", 2, leader, [(leader, b"for-a"), (jb.member_id, b"for-b")])
    sb = b.recv(ApiKey.SYNC_GROUP, 3)
    assert (sa.error_code, bytes(sa.assignment)) == (0, b"for-a")
    assert (sb.error_code, bytes(sb.assignment)) == (0, b"for-b")


def test_member_that_does_not_rejoin_is_dropped_after_rebalance_timeout(client):
    a, b = client(), client()
    ra = a.join_new("g", rebalance=500)
    assert a.sync("g", 1, ra.member_id, [(ra.member_id, b"x")]).error_code == 0
    # b joins; a keeps heartbeating but never rejoins: after the rebalance timeout it is out.
    rb = b.join("g", version=5, rebalance=500)
    b.send_join("g", rb.member_id, 5, rebalance=500)
    assert a.heartbeat("g", 1, ra.member_id) == ErrorCode.REBALANCE_IN_PROGRESS
    jb = b.recv(ApiKey.JOIN_GROUP, 5)
    assert (jb.error_code, jb.generation_id, jb.leader) == (0, 2, jb.member_id)
    assert a.heartbeat("g", 1, ra.member_id) == ErrorCode.UNKNOWN_MEMBER_ID


def test_member_gone_during_join_does_not_hold_the_group(fast_broker, client):
    """A client that disconnects with its JoinGroup pending still counts as joined (as in
    Kafka), so the others aren't held until the rebalance timeout; its session then ends it."""
    a, b, c = client(), client(), client()
    kw = {"session": 10000, "rebalance": 60000}
    ra = a.join_new("g", session=600, rebalance=60000)
    rc = c.join("g", version=5, **kw)
    c.send_join("g", rc.member_id, 5, **kw)
    a.send_join("g", ra.member_id, 5, session=600, rebalance=60000)
    assert (
        a.recv(ApiKey.JOIN_GROUP, 5).generation_id
        == c.recv(ApiKey.JOIN_GROUP, 5).generation_id
        == 2
    )
    c.send_sync("g", 2, rc.member_id)
    assert (
        a.sync("g", 2, ra.member_id, [(ra.member_id, b"a"), (rc.member_id, b"c")]).error_code == 0
    )
    assert c.recv(ApiKey.SYNC_GROUP, 3).error_code == 0

    def member(member_id):
        return fast_broker.call(
            lambda: fast_broker.broker.group_coordinator.groups["g"].members[member_id]
        )

    rb = b.join("g", version=5, **kw)
    b.send_join("g", rb.member_id, 5, **kw)  # a rebalance starts
    a.send_join("g", ra.member_id, 5, session=600, rebalance=60000)
    wait_until(lambda: member(ra.member_id).awaiting_join, what="a's join to be pending")
    a.close()  # a's client goes away, its join still pending
    wait_until(lambda: member(ra.member_id).join_future.cancelled(), what="a's disconnect")
    c.send_join("g", rc.member_id, 5, **kw)  # the last member: the join completes at once
    jb, jc = b.recv(ApiKey.JOIN_GROUP, 5), c.recv(ApiKey.JOIN_GROUP, 5)
    assert jb.generation_id == jc.generation_id == 3
    assert jb.leader == jc.leader != ra.member_id  # a leader that can still answer
    leader, follower = (b, c) if jb.leader == rb.member_id else (c, b)
    members = [m.member_id for m in (jb if leader is b else jc).members]
    assert sorted(members) == sorted([ra.member_id, rb.member_id, rc.member_id])
    follower.send_sync("g", 3, jc.member_id if follower is c else jb.member_id)
    assert leader.sync("g", 3, jb.leader, [(m, b"p") for m in members]).error_code == 0
    assert follower.recv(ApiKey.SYNC_GROUP, 3).error_code == 0
    # a never heartbeats again: its session ends it, and the others rebalance without it.
    wait_until(lambda: b.heartbeat("g", 3, rb.member_id) == ErrorCode.REBALANCE_IN_PROGRESS,
               what="the gone member's session to end")  # fmt: skip


def test_session_timeout_removes_silent_member(client):
    c = client()
    r = c.join_new("g", session=600)
    assert c.sync("g", 1, r.member_id, [(r.member_id, b"x")]).error_code == 0
    assert c.describe("g").group_state == "Stable"
    # No more heartbeats: the session runs out and the group is left empty.
    wait_until(lambda: c.describe("g").group_state == "Empty", what="session expiry")
    assert c.describe("g").members == []
    assert c.heartbeat("g", 1, r.member_id) == ErrorCode.UNKNOWN_MEMBER_ID


def test_member_that_never_syncs_is_removed(client):
    a, b = client(), client()
    ra = a.join_new("g", rebalance=500)
    assert a.sync("g", 1, ra.member_id, [(ra.member_id, b"x")]).error_code == 0
    rb = b.join("g", version=5, rebalance=500)
    b.send_join("g", rb.member_id, 5, rebalance=500)
    a.send_join("g", ra.member_id, 5, rebalance=500)
    a.recv(ApiKey.JOIN_GROUP, 5)
    assert b.recv(ApiKey.JOIN_GROUP, 5).generation_id == 2
    # a (the leader) syncs; b never does: after the rebalance timeout b is removed.
    assert a.sync("g", 2, ra.member_id, [(ra.member_id, b"y")]).error_code == 0
    wait_until(lambda: a.heartbeat("g", 2, ra.member_id) == ErrorCode.REBALANCE_IN_PROGRESS,
               what="pending sync expiry")  # fmt: skip
    a.send_join("g", ra.member_id, 5, rebalance=500)
    j = a.recv(ApiKey.JOIN_GROUP, 5)
    assert (j.generation_id, [m.member_id for m in j.members]) == (3, [ra.member_id])


def test_initial_rebalance_delay_gathers_members(make_broker):
    b = make_broker({**FAST, "group.initial.rebalance.delay.ms": 1000})
    x, y = Client(b.port), Client(b.port)
    x.send_join("g", version=3)
    y.send_join("g", version=3)
    rx, ry = x.recv(ApiKey.JOIN_GROUP, 3), y.recv(ApiKey.JOIN_GROUP, 3)
    assert rx.generation_id == ry.generation_id == 1
    assert len(rx.members if rx.leader == rx.member_id else ry.members) == 2
    x.close()
    y.close()


def test_leave_group_batched_and_single(client):
    a, b = client(), client()
    r = a.join("g", version=3)
    assert a.sync("g", 1, r.member_id, [(r.member_id, b"x")]).error_code == 0
    lv = b.request(ApiKey.LEAVE_GROUP, 5, {"group_id": "g", "members": [
        {"member_id": r.member_id, "group_instance_id": None, "reason": "done"},
        {"member_id": "ghost", "group_instance_id": None, "reason": None},
    ]})  # fmt: skip
    assert lv.error_code == 0
    assert [(m.member_id, m.error_code) for m in lv.members] == [
        (r.member_id, 0), ("ghost", ErrorCode.UNKNOWN_MEMBER_ID),
    ]  # fmt: skip
    assert a.describe("g").group_state == "Empty"
    v0 = b.request(ApiKey.LEAVE_GROUP, 0, {"group_id": "g", "member_id": "ghost"})
    assert v0.error_code == ErrorCode.UNKNOWN_MEMBER_ID
    v3 = b.request(ApiKey.LEAVE_GROUP, 3, {"group_id": "nope", "members": [
        {"member_id": "ghost", "group_instance_id": None},
    ]})  # fmt: skip
    assert (v3.error_code, v3.members[0].error_code) == (0, ErrorCode.UNKNOWN_MEMBER_ID)


# --- static membership --------------------------------------------------------------------


def test_static_member_rejoins_without_rebalance_and_old_id_is_fenced(client):
    a, b = client(), client()
    create_topic(a, "t", 1)
    ra = a.join("g", version=5, instance="inst-a")  # static members skip MEMBER_ID_REQUIRED
    assert ra.error_code == 0 and ra.member_id.startswith("inst-a-")
    assert (
        a.sync("g", 1, ra.member_id, [(ra.member_id, b"a-part")], instance="inst-a").error_code == 0
    )
    rb = b.join("g", version=5)
    b.send_join("g", rb.member_id, 5)
    a.send_join("g", ra.member_id, 5, instance="inst-a")
    ja, jb = a.recv(ApiKey.JOIN_GROUP, 5), b.recv(ApiKey.JOIN_GROUP, 5)
    assert ja.leader == jb.leader == ra.member_id and ja.generation_id == 2
    b.send_sync("g", 2, rb.member_id)
    assert a.sync("g", 2, ra.member_id,
                  [(ra.member_id, b"a-part"), (rb.member_id, b"b-part")],
                  instance="inst-a").error_code == 0  # fmt: skip
    assert b.recv(ApiKey.SYNC_GROUP, 3).error_code == 0

    # "inst-a" restarts: a new member id, the same generation, no rebalance for b.
    a2 = client()
    r2 = a2.join("g", version=5, instance="inst-a")
    assert r2.error_code == 0 and r2.member_id != ra.member_id
    assert r2.generation_id == 2
    assert r2.leader == ra.member_id  # before v9 the old id: the new leader doesn't reassign
    s2 = a2.sync("g", 2, r2.member_id, instance="inst-a")
    assert (s2.error_code, bytes(s2.assignment)) == (0, b"a-part")
    assert b.heartbeat("g", 2, rb.member_id) == ErrorCode.NONE
    assert a2.heartbeat("g", 2, r2.member_id, "inst-a") == ErrorCode.NONE
    # The old incarnation is fenced everywhere.
    assert a.heartbeat("g", 2, ra.member_id, "inst-a") == ErrorCode.FENCED_INSTANCE_ID
    assert (
        a.sync("g", 2, ra.member_id, instance="inst-a").error_code == ErrorCode.FENCED_INSTANCE_ID
    )
    assert a.commit("g", {("t", 0): (1, "")}, 2, ra.member_id, instance="inst-a") == {
        ("t", 0): ErrorCode.FENCED_INSTANCE_ID
    }
    assert (
        a.join("g", ra.member_id, 5, instance="inst-a").error_code == ErrorCode.FENCED_INSTANCE_ID
    )
    assert a.describe("g").group_state == "Stable"

    # v9: a returning static leader is told it leads but must skip the assignment.
    a3 = client()
    r3 = a3.join("g", version=9, instance="inst-a")
    assert (r3.generation_id, r3.leader, r3.skip_assignment) == (2, r3.member_id, True)
    assert len(r3.members) == 2
    # Admin removal of a static member by instance id (member id unknown).
    lv = b.request(ApiKey.LEAVE_GROUP, 4, {"group_id": "g", "members": [
        {"member_id": "", "group_instance_id": "inst-a"},
    ]})  # fmt: skip
    assert lv.members[0].error_code == 0
    assert b.heartbeat("g", 2, rb.member_id) == ErrorCode.REBALANCE_IN_PROGRESS


# --- offsets ------------------------------------------------------------------------------


def test_commit_errors_leave_good_partitions_committed(fast_broker, client):
    c = client()
    create_topic(c, "t", 2)
    big = "m" * 4097  # offset.metadata.max.bytes is 4096
    errors = c.commit("simple", {
        ("t", 0): (5, "ok"), ("t", 1): (6, big), ("t", 9): (1, ""), ("nope", 0): (1, ""),
    })  # fmt: skip
    assert errors == {
        ("t", 0): 0,
        ("t", 1): ErrorCode.OFFSET_METADATA_TOO_LARGE,
        ("t", 9): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ("nope", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    got = c.fetch_offsets("simple", {"t": [0, 1]})
    assert got == {("t", 0): (5, "ok", 0), ("t", 1): (-1, "", 0)}
    # A generation the coordinator never handed out, for a group it doesn't know.
    assert c.commit("unknown", {("t", 0): (1, "")}, generation=3, member_id="m") == {
        ("t", 0): ErrorCode.ILLEGAL_GENERATION
    }
    assert c.commit("", {("t", 0): (1, "")}) == {("t", 0): 0}  # the empty group id is allowed


def test_commit_checks_membership_and_generation(client):
    a, b = client(), client()
    create_topic(a, "t", 2)
    r = a.join_new("g")
    member = r.member_id
    # CompletingRebalance: the member must sync first.
    assert a.commit("g", {("t", 0): (1, "")}, 1, member) == {
        ("t", 0): ErrorCode.REBALANCE_IN_PROGRESS
    }
    assert a.sync("g", 1, member, [(member, b"x")]).error_code == 0
    assert a.commit("g", {("t", 0): (3, "")}, 1, member) == {("t", 0): 0}
    assert a.commit("g", {("t", 0): (4, "")}, 0, member) == {("t", 0): ErrorCode.ILLEGAL_GENERATION}
    assert a.commit("g", {("t", 0): (4, "")}, 1, "nobody") == {
        ("t", 0): ErrorCode.UNKNOWN_MEMBER_ID
    }
    # A simple (generation -1) commit is only for groups without members.
    assert b.commit("g", {("t", 0): (9, "")}) == {("t", 0): ErrorCode.UNKNOWN_MEMBER_ID}
    # During a rebalance the current generation may still commit.
    rb = b.join("g", version=5)
    b.send_join("g", rb.member_id, 5)
    assert a.commit("g", {("t", 1): (8, "meta")}, 1, member) == {("t", 1): 0}
    assert a.fetch_offsets("g", {"t": [0, 1]}) == {("t", 0): (3, "", 0), ("t", 1): (8, "meta", 0)}


def test_offset_fetch_versions_and_groups(client):
    c = client()
    create_topic(c, "t", 2)
    assert c.commit("g1", {("t", 0): (10, "a")}) == {("t", 0): 0}
    assert c.commit("g2", {("t", 1): (20, "b")}) == {("t", 1): 0}
    # v1: requested partitions; an uncommitted one is -1 with empty metadata.
    assert c.fetch_offsets("g1", {"t": [0, 1]}, version=1) == {
        ("t", 0): (10, "a", 0), ("t", 1): (-1, "", 0),
    }  # fmt: skip
    # v2+: null topics means every committed offset.
    assert c.fetch_offsets("g1", None, version=7) == {("t", 0): (10, "a", 0)}
    assert c.fetch_offsets("nobody", None, version=5) == {}
    # v5+ carries the leader epoch.
    r = c.request(ApiKey.OFFSET_FETCH, 6, {"group_id": "g1", "topics": None})
    assert r.topics[0].partitions[0].committed_leader_epoch == 7
    # v8: several groups at once.
    r = c.request(ApiKey.OFFSET_FETCH, 8, {"groups": [
        {"group_id": "g1", "topics": None},
        {"group_id": "g2", "topics": [{"name": "t", "partition_indexes": [0, 1]}]},
        {"group_id": "missing", "topics": [{"name": "t", "partition_indexes": [0]}]},
    ], "require_stable": True})  # fmt: skip
    got = {
        g.group_id: {(t.name, p.partition_index): p.committed_offset for t in g.topics for p in t.partitions}
        for g in r.groups
    }  # fmt: skip
    assert got == {
        "g1": {("t", 0): 10}, "g2": {("t", 0): -1, ("t", 1): 20}, "missing": {("t", 0): -1},
    }  # fmt: skip


def test_offset_delete(client):
    c = client()
    create_topic(c, "t", 2)
    create_topic(c, "u", 1)
    r = c.join_new("g", protocols=(("range", subscription("t")),))
    assert c.sync("g", 1, r.member_id, [(r.member_id, b"x")]).error_code == 0
    assert c.commit("g", {("t", 0): (1, ""), ("u", 0): (2, "")}, 1, r.member_id) == {
        ("t", 0): 0, ("u", 0): 0,
    }  # fmt: skip

    def delete(group, parts):
        return c.request(ApiKey.OFFSET_DELETE, 0, {"group_id": group, "topics": [
            {"name": t, "partitions": [{"partition_index": p} for p in ps]} for t, ps in parts.items()
        ]})  # fmt: skip

    resp = delete("g", {"t": [0], "u": [0], "zz": [0]})
    assert resp.error_code == 0
    assert {(t.name, p.partition_index): p.error_code for t in resp.topics for p in t.partitions} == {
        ("t", 0): ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC, ("u", 0): 0,
        ("zz", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }  # fmt: skip
    assert c.fetch_offsets("g", None) == {("t", 0): (1, "", 0)}
    assert delete("nope", {"t": [0]}).error_code == ErrorCode.GROUP_ID_NOT_FOUND


def test_offset_delete_names_a_partition_twice(client):
    """Found by the fuzzer: a partition listed twice was deleted twice (KeyError, connection
    closed). Kafka's request keys partitions by index, so the duplicate is one partition."""
    c = client()
    create_topic(c, "t", 1)
    assert c.commit("idle", {("t", 0): (5, "")}) == {("t", 0): 0}
    resp = c.request(ApiKey.OFFSET_DELETE, 0, {"group_id": "idle", "topics": [
        {"name": "t", "partitions": [{"partition_index": 0}, {"partition_index": 0}]}]})  # fmt: skip
    assert resp is not None and resp.error_code == 0
    assert {p.error_code for t in resp.topics for p in t.partitions} == {0}
    assert c.fetch_offsets("idle", None) == {}


# --- DescribeGroups, ListGroups, DeleteGroups ---------------------------------------------


def test_describe_list_and_delete_groups(client):
    c = client()
    create_topic(c, "t", 1)
    r = c.join_new("active")
    assert c.sync("active", 1, r.member_id, [(r.member_id, b"x")]).error_code == 0
    assert c.commit("idle", {("t", 0): (1, "")}) == {("t", 0): 0}
    d = c.describe("unknown")
    assert (d.error_code, d.group_state, d.members) == (0, "Dead", [])
    d = c.request(
        ApiKey.DESCRIBE_GROUPS, 3, {"groups": ["idle"], "include_authorized_operations": True}
    )
    assert d.groups[0].group_state == "Empty"
    assert d.groups[0].authorized_operations == {3, 6, 8}  # READ, DELETE, DESCRIBE

    def listed(states=None, version=4):
        body = {"states_filter": states or []} if version >= 4 else {}
        r = c.request(ApiKey.LIST_GROUPS, version, body)
        assert r.error_code == 0
        return sorted((g.group_id, g.protocol_type) for g in r.groups)

    assert listed(version=0) == [("active", "consumer"), ("idle", "")]
    assert listed(["stable"]) == [("active", "consumer")]
    assert listed(["Empty", "Dead"]) == [("idle", "")]

    res = c.request(ApiKey.DELETE_GROUPS, 2, {"groups_names": ["active", "idle", "ghost"]})
    assert {x.group_id: x.error_code for x in res.results} == {
        "active": ErrorCode.NON_EMPTY_GROUP, "idle": 0, "ghost": ErrorCode.GROUP_ID_NOT_FOUND,
    }  # fmt: skip
    assert listed() == [("active", "consumer")]
    assert c.fetch_offsets("idle", None) == {}

"""The KIP-848 consumer group state machine, driven without I/O: heartbeats in, epochs,
assignments and records out (pykbroker/coordinator/consumer_group.py).

Expected values are Kafka's: error codes from Kafka's Errors (FENCED_MEMBER_EPOCH 110,
UNRELEASED_INSTANCE_ID 111, UNSUPPORTED_ASSIGNOR 112, UNKNOWN_MEMBER_ID 25, INVALID_REQUEST 42,
GROUP_MAX_SIZE_REACHED 81, INVALID_REGULAR_EXPRESSION 128), epochs as KIP-848 defines them
(join with 0, leave with -1, a static member's temporary leave -2; the group epoch moves with
every membership or subscription change and the target assignment takes it), and the range
assignor's split (the first partitions % members members take one more).
"""

from __future__ import annotations

import uuid

from pykbroker.coordinator import schema as S
from pykbroker.coordinator.assignors import MemberSpec, range_, uniform
from pykbroker.coordinator.classic_in_consumer import (
    encode_assignment,
    parse_assignment,
)
from pykbroker.coordinator.consumer_group import (
    ConsumerGroup,
    GroupConfig,
    HeartbeatRequest,
    MemberState,
    TopicMeta,
)
from pykbroker.coordinator.offsets_log import _Replay

T1 = uuid.UUID(int=1)
T2 = uuid.UUID(int=2)
TOPICS = {"orders": TopicMeta("orders", T1, 4)}

FENCED_MEMBER_EPOCH = 110
UNRELEASED_INSTANCE_ID = 111
UNSUPPORTED_ASSIGNOR = 112
UNKNOWN_MEMBER_ID = 25
INVALID_REQUEST = 42
GROUP_MAX_SIZE_REACHED = 81
INVALID_REGULAR_EXPRESSION = 128


def join(group, member_id, topics=("orders",), now=0, topic_view=TOPICS, **kw):
    req = HeartbeatRequest(
        "g", member_id, 0, rebalance_timeout_ms=30000, subscribed_topic_names=list(topics),
        owned={}, **kw,
    )  # fmt: skip
    assert group.validate_request(req) is None
    return group.heartbeat(req, topic_view, now)


def beat(group, member_id, epoch, owned=None, now=0, topic_view=TOPICS, **kw):
    req = HeartbeatRequest("g", member_id, epoch, owned=owned, **kw)
    invalid = group.validate_request(req)
    if invalid is not None:
        return invalid
    return group.heartbeat(req, topic_view, now)


def parts(assignment, topic=T1):
    return sorted((assignment or {}).get(topic, ()))


def no_partition_twice(group):
    seen = set()
    for m in group.members.values():
        for t, ps in m.assigned.items():
            for p in ps:
                assert (t, p) not in seen, f"partition {p} assigned twice"
                seen.add((t, p))


def test_first_member_gets_everything_in_epoch_1():
    g = ConsumerGroup("g", GroupConfig())
    r = join(g, "a")
    assert r.error == 0
    assert (r.member_epoch, g.group_epoch, g.assignment_epoch) == (1, 1, 1)
    assert parts(r.assignment) == [0, 1, 2, 3]
    assert r.heartbeat_interval_ms == 5000  # group.consumer.heartbeat.interval.ms default
    assert g.state.value == "Stable"
    # Records: group epoch (3), member (5), target (6, 7) and current assignment (8).
    types = {S.parse_cg_key(k)[0] for k, _ in r.records}
    assert types == {3, 5, 6, 7, 8}


def test_partitions_move_only_after_the_owner_revoked_them():
    g = ConsumerGroup("g", GroupConfig())
    join(g, "a")
    r = join(g, "b")
    # b is in epoch 2 but a still owns everything: nothing is free for b yet.
    assert (r.member_epoch, g.group_epoch) == (2, 2)
    assert parts(r.assignment) == []
    assert g.members["b"].state is MemberState.UNRELEASED_PARTITIONS
    assert g.state.value == "Reconciling"
    # a is asked to revoke two partitions and stays in epoch 1 until it does.
    r = beat(g, "a", 1, owned={T1: frozenset({0, 1, 2, 3})})
    assert r.member_epoch == 1
    kept = parts(r.assignment)
    assert len(kept) == 2
    assert g.members["a"].state is MemberState.UNREVOKED_PARTITIONS
    no_partition_twice(g)
    # b asks again: still nothing, the partitions are pending revocation on a.
    assert parts(beat(g, "b", 2, owned={}).assignment) == []
    # a acknowledges (owns only what it kept): epoch 2, stable.
    r = beat(g, "a", 1, owned={T1: frozenset(kept)})
    assert r.member_epoch == 2
    assert g.members["a"].state is MemberState.STABLE
    # now b gets the two released partitions.
    r = beat(g, "b", 2, owned={})
    assert parts(r.assignment) == sorted({0, 1, 2, 3} - set(kept))
    assert g.members["b"].state is MemberState.STABLE
    assert g.state.value == "Stable"
    no_partition_twice(g)


def test_epoch_checks():
    g = ConsumerGroup("g", GroupConfig())
    join(g, "a")
    assert beat(g, "a", 5).error == FENCED_MEMBER_EPOCH
    assert beat(g, "nobody", 1).error == UNKNOWN_MEMBER_ID
    join(g, "b")
    beat(g, "a", 1, owned={T1: frozenset({0, 1, 2, 3})})
    kept = g.members["a"].assigned[T1]
    beat(g, "a", 1, owned={T1: kept})
    assert g.members["a"].member_epoch == 2
    # The response with epoch 2 was lost: epoch 1 again is accepted while a owns a subset...
    assert beat(g, "a", 1, owned={T1: kept}).error == 0
    # ...but not when it claims partitions that are no longer its own.
    assert beat(g, "a", 1, owned={T1: frozenset({0, 1, 2, 3})}).error == FENCED_MEMBER_EPOCH


def test_leave_gives_partitions_to_the_others():
    g = ConsumerGroup("g", GroupConfig())
    join(g, "a")
    join(g, "b")
    beat(g, "a", 1, owned={T1: frozenset({0, 1, 2, 3})})
    beat(g, "a", 1, owned={T1: g.members["a"].assigned[T1]})
    beat(g, "b", 2, owned={})
    r = beat(g, "b", -1)
    assert (r.error, r.member_epoch) == (0, -1)
    assert "b" not in g.members and g.group_epoch == 3
    r = beat(g, "a", 2, owned={T1: g.members["a"].assigned[T1]})
    assert (r.member_epoch, parts(r.assignment)) == (3, [0, 1, 2, 3])


def test_session_timeout_fences_the_member():
    cfg = GroupConfig(session_timeout_ms=45000)  # group.consumer.session.timeout.ms default
    g = ConsumerGroup("g", cfg)
    join(g, "a", now=1000)
    join(g, "b", now=1000)
    gone, records = g.expire(1000 + 44999)
    assert gone == []
    beat(g, "a", 1, now=40000)
    gone, records = g.expire(1000 + 45000)
    assert gone == [("b", "session timeout")]
    assert g.group_epoch == 3 and set(g.members) == {"a"}
    # Tombstones for b's member, target and current-assignment records.
    tombstoned = {S.parse_cg_key(k)[0] for k, v in records if v is None}
    assert tombstoned == {5, 7, 8}


def test_rebalance_timeout_fences_a_member_that_never_revokes():
    g = ConsumerGroup("g", GroupConfig())
    join(g, "a", now=0)
    join(g, "b", now=0)
    beat(g, "a", 1, owned={T1: frozenset({0, 1, 2, 3})}, now=10)
    assert g.members["a"].rebalance_deadline == 10 + 30000
    beat(g, "b", 2, owned={}, now=20000)
    gone, _ = g.expire(30010)
    assert ("a", "rebalance timeout") in gone


def test_static_member_comes_back_without_a_rebalance():
    g = ConsumerGroup("g", GroupConfig())
    join(g, "a", instance_id="i-1")
    epoch = g.group_epoch
    r = beat(g, "a", -2, instance_id="i-1")
    assert (r.error, r.member_epoch) == (0, -2)
    assert g.members["a"].assigned[T1] == frozenset({0, 1, 2, 3})  # kept while away
    # Another process with the same instance id while a is still there: refused.
    g2 = ConsumerGroup("g", GroupConfig())
    join(g2, "x", instance_id="i-9")
    assert join_error(g2, "y", instance_id="i-9") == UNRELEASED_INSTANCE_ID
    r = join(g, "a2", instance_id="i-1")
    assert r.error == 0 and g.group_epoch == epoch  # no rebalance
    assert parts(r.assignment) == [0, 1, 2, 3]
    assert set(g.members) == {"a2"}


def join_error(group, member_id, **kw):
    req = HeartbeatRequest("g", member_id, 0, rebalance_timeout_ms=1, subscribed_topic_names=["orders"], owned={}, **kw)  # fmt: skip
    return group.heartbeat(req, TOPICS, 0).error


def test_regex_subscription_picks_up_new_topics():
    g = ConsumerGroup("g", GroupConfig())
    r = join(g, "a", topics=(), subscribed_topic_regex="ord.*")
    assert parts(r.assignment) == [0, 1, 2, 3]
    more = dict(TOPICS, orders2=TopicMeta("orders2", T2, 2), other=TopicMeta("other", uuid.uuid4(), 1))  # fmt: skip
    r = beat(g, "a", 1, owned=r.assignment, topic_view=more)
    assert r.member_epoch == 2
    assert parts(r.assignment, T2) == [0, 1]
    assert set(r.assignment) == {T1, T2}


def test_invalid_requests():
    g = ConsumerGroup("g", GroupConfig(max_size=1))
    no_timeout = HeartbeatRequest("g", "a", 0, subscribed_topic_names=["orders"], owned={})
    assert g.validate_request(no_timeout)[0] == INVALID_REQUEST
    no_member_id = HeartbeatRequest("g", "", 0, rebalance_timeout_ms=1, subscribed_topic_names=[], owned={})  # fmt: skip
    assert g.validate_request(no_member_id)[0] == INVALID_REQUEST
    bad = HeartbeatRequest("g", "a", 0, rebalance_timeout_ms=1, subscribed_topic_names=["orders"], owned={}, server_assignor="sticky")  # fmt: skip
    assert g.validate_request(bad)[0] == UNSUPPORTED_ASSIGNOR
    regex = HeartbeatRequest("g", "a", 0, rebalance_timeout_ms=1, subscribed_topic_regex="(", owned={})  # fmt: skip
    assert g.validate_request(regex)[0] == INVALID_REGULAR_EXPRESSION
    join(g, "a")
    assert join_error(g, "b") == GROUP_MAX_SIZE_REACHED


def test_range_and_uniform_assignors():
    members = {"a": MemberSpec(frozenset({T1})), "b": MemberSpec(frozenset({T1}))}
    out = range_(members, {T1: 5}, {})
    assert (sorted(out["a"][T1]), sorted(out["b"][T1])) == ([0, 1, 2], [3, 4])
    three = dict(members, c=MemberSpec(frozenset({T1})))
    first = uniform(three, {T1: 6}, {})
    assert sorted(len(a[T1]) for a in first.values()) == [2, 2, 2]
    # c goes: a and b keep their partitions and split c's.
    second = uniform(members, {T1: 6}, first)
    assert first["a"][T1] <= second["a"][T1] and first["b"][T1] <= second["b"][T1]
    assert sorted(second["a"][T1] | second["b"][T1]) == list(range(6))


def test_server_assignor_is_the_members_choice():
    g = ConsumerGroup("g", GroupConfig())
    join(g, "a", server_assignor="range")
    assert g.preferred_assignor() == "range"
    assert ConsumerGroup("h", GroupConfig()).preferred_assignor() == "uniform"


def test_records_replay_to_the_same_group():
    g = ConsumerGroup("g", GroupConfig())
    records = join(g, "a", instance_id="i-1", rack_id="r1").records
    records += join(g, "b", topics=(), subscribed_topic_regex="ord.*").records
    records += beat(g, "a", 1, owned={T1: frozenset({0, 1, 2, 3})}).records
    replay = _Replay()
    for k, v in records:
        replay.apply(k, v)
    data = replay.consumer["g"]
    assert data["epoch"] == (g.group_epoch, g.metadata_hash)
    assert data["target_epoch"] == g.assignment_epoch
    assert data["members"]["a"].instance_id == "i-1" and data["members"]["a"].rack_id == "r1"
    assert data["members"]["b"].subscribed_topic_regex == "ord.*"
    epoch, previous, state, assigned, pending = data["current"]["a"]
    a = g.members["a"]
    assert (epoch, state, assigned, pending) == (a.member_epoch, a.state, a.assigned, a.pending_revocation)  # fmt: skip
    assert data["targets"] == g.target


def test_consumer_protocol_assignment_bytes():
    blob = encode_assignment({T1: frozenset({2, 0})}, {T1: TOPICS["orders"]})
    assert parse_assignment(blob) == {"orders": [0, 2]}


# --- classic members in a consumer group (KIP-848 online migration) --------------------------

REBALANCE_IN_PROGRESS = 27
MEMBER_ID_REQUIRED = 79
ILLEGAL_GENERATION = 22


def subscription(topics, owned=None) -> bytes:
    """ConsumerProtocolSubscription: v0 without owned partitions, v1 with them."""
    import struct

    version = 0 if owned is None else 1
    out = struct.pack(">hi", version, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    out += struct.pack(">i", -1)
    if owned is not None:
        out += struct.pack(">i", len(owned))
        for t, ps in owned.items():
            out += struct.pack(">h", len(t)) + t.encode() + struct.pack(">i", len(ps))
            out += b"".join(struct.pack(">i", p) for p in ps)
    return out


def classic_join_request(member_id, meta, instance_id=None):
    from pykbroker.coordinator.group_coordinator import JoinRequest

    return JoinRequest("g", member_id, instance_id, instance_id is None, True, "kp", "/h",
                       30000, 10000, "consumer", [("range", meta)])  # fmt: skip


def test_classic_member_rejoins_to_acknowledge_revocation():
    from pykbroker.coordinator.classic_in_consumer import (
        classic_heartbeat,
        classic_join,
        classic_sync,
    )

    g = ConsumerGroup("g", GroupConfig())
    r, _ = classic_join(g, classic_join_request("", subscription(["orders"])), TOPICS, 0)
    assert r.error == MEMBER_ID_REQUIRED  # KIP-394, as for a classic group
    cid = r.member_id
    r, _ = classic_join(g, classic_join_request(cid, subscription(["orders"])), TOPICS, 0)
    assert (r.error, r.generation_id, r.leader_id, r.protocol_name) == (0, 1, "", "range")
    s = classic_sync(g, cid, None, 1, "consumer", "range", TOPICS, 0)
    assert parse_assignment(s.assignment) == {"orders": [0, 1, 2, 3]}
    # A consumer-protocol member joins: the classic member is told to rebalance...
    join(g, "c")
    assert classic_heartbeat(g, cid, None, 1, TOPICS, 0)[0] == REBALANCE_IN_PROGRESS
    assert parts(beat(g, "c", 2, owned={}).assignment) == []  # nothing released yet
    # ...an eager client gives everything up and joins again: that is its acknowledgement.
    r, _ = classic_join(g, classic_join_request(cid, subscription(["orders"])), TOPICS, 0)
    assert r.generation_id == 2
    mine = parse_assignment(
        classic_sync(g, cid, None, 2, "consumer", "range", TOPICS, 0).assignment
    )
    assert len(mine["orders"]) == 2
    assert classic_heartbeat(g, cid, None, 2, TOPICS, 0)[0] == 0
    assert classic_heartbeat(g, cid, None, 1, TOPICS, 0)[0] == ILLEGAL_GENERATION
    theirs = parts(beat(g, "c", 2, owned={}).assignment)
    assert sorted(mine["orders"] + theirs) == [0, 1, 2, 3]
    no_partition_twice(g)


def test_cooperative_classic_member_keeps_what_it_owns_until_it_revokes():
    from pykbroker.coordinator.classic_in_consumer import classic_join

    g = ConsumerGroup("g", GroupConfig())
    r, _ = classic_join(g, classic_join_request("k", subscription(["orders"]), "i-1"), TOPICS, 0)
    join(g, "c")
    # It still owns all four: it must revoke two, and stays in its epoch meanwhile.
    owned = {"orders": [0, 1, 2, 3]}
    r, _ = classic_join(g, classic_join_request("k", subscription(["orders"], owned), "i-1"), TOPICS, 0)  # fmt: skip
    assert r.generation_id == 1
    assert g.members["k"].state is MemberState.UNREVOKED_PARTITIONS
    kept = sorted(g.members["k"].assigned[T1])
    r, _ = classic_join(g, classic_join_request("k", subscription(["orders"], {"orders": kept}), "i-1"), TOPICS, 0)  # fmt: skip
    assert r.generation_id == 2 and g.members["k"].state is MemberState.STABLE


def test_conversions_keep_members_and_assignments():
    from pykbroker.coordinator.classic_in_consumer import (
        convert_classic_group,
        convert_consumer_group,
    )
    from pykbroker.coordinator.group import Group, Member

    classic = Group("g")
    classic.protocol_type, classic.protocol_name, classic.generation_id = "consumer", "range", 7
    blob = encode_assignment({T1: frozenset({0, 1, 2, 3})}, {T1: TOPICS["orders"]})
    classic.add(Member("m1", None, "kp", "/h", 30000, 10000, "consumer",
                       [("range", subscription(["orders"]))], blob))  # fmt: skip
    g = convert_classic_group(classic, GroupConfig(), TOPICS)
    m = g.members["m1"]
    assert (g.group_epoch, g.assignment_epoch, m.member_epoch) == (7, 7, 7)
    assert m.is_classic and m.assigned == {T1: frozenset({0, 1, 2, 3})}
    back = convert_consumer_group(g, TOPICS)
    assert back.generation_id == 7 and back.protocol_name == "range"
    assert parse_assignment(back.members["m1"].assignment) == {"orders": [0, 1, 2, 3]}

"""Classic members in consumer groups: KIP-848's online upgrade and downgrade.

A classic group with members converts to a consumer group when the first consumer-protocol
member joins (group.consumer.migration.policy = bidirectional or upgrade); its members stay
classic members of the consumer group and keep using JoinGroup/SyncGroup/Heartbeat:

- JoinGroup carries the member's subscription (ConsumerProtocolSubscription) and, for
  cooperative assignors, the partitions it still owns; the coordinator reconciles the member
  with them exactly as it does a consumer member's heartbeat, and answers at once with the
  member epoch as the generation (no leader: every classic member is a follower);
- SyncGroup returns the member's current assignment (ConsumerProtocolAssignment);
- Heartbeat answers REBALANCE_IN_PROGRESS while the member is not reconciled with the group's
  target assignment: the client then revokes (all of it when eager, what it lost when
  cooperative) and joins again, which is how a classic member acknowledges a revocation.

When the last consumer-protocol member leaves a group whose remaining members are all classic
(policy bidirectional or downgrade), it converts back to a classic group, which rebalances.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping

from protocol.errors import ErrorCode

from .consumer_group import (
    ConsumerGroup,
    ConsumerMember,
    GroupConfig,
    MemberState,
    Records,
    TopicMeta,
    generate_member_id,
)
from .group import Group, GroupState, JoinResult, Member, SyncResult
from .schema import ClassicMetadata, SchemaError, _Reader

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def parse_subscription(data: bytes) -> tuple[int, list[str], dict[str, list[int]]] | None:
    """(version, topics, owned partitions by topic name) of a ConsumerProtocolSubscription."""
    try:
        r = _Reader(data)
        version = r.int16()
        topics = [r.string() or "" for _ in range(max(r.int32(), 0))]
        owned: dict[str, list[int]] = {}
        if len(data) > r.pos:
            r.bytes_()  # user data
        if version >= 1 and len(data) > r.pos:
            for _ in range(max(r.int32(), 0)):
                name = r.string() or ""
                owned[name] = [r.int32() for _ in range(max(r.int32(), 0))]
        return version, topics, owned
    except SchemaError:
        return None


def parse_assignment(data: bytes) -> dict[str, list[int]]:
    """Partitions by topic name of a ConsumerProtocolAssignment (empty if unreadable)."""
    try:
        r = _Reader(data)
        r.int16()
        out = {}
        for _ in range(max(r.int32(), 0)):
            name = r.string() or ""
            out[name] = [r.int32() for _ in range(max(r.int32(), 0))]
        return out
    except SchemaError:
        return {}


def encode_assignment(assignment, by_id: Mapping[uuid.UUID, TopicMeta], version: int = 0) -> bytes:
    """ConsumerProtocolAssignment (versions 0-3 share these fields) with null user data."""
    out = bytearray(_I16.pack(max(0, min(version, 3))))
    named = sorted((by_id[t].name, sorted(ps)) for t, ps in assignment.items() if t in by_id)
    out += _I32.pack(len(named))
    for name, parts in named:
        b = name.encode()
        out += _I16.pack(len(b)) + b + _I32.pack(len(parts))
        for p in parts:
            out += _I32.pack(p)
    out += _I32.pack(-1)
    return bytes(out)


def encode_subscription(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0: the topics, null user data."""
    out = bytearray(_I16.pack(0) + _I32.pack(len(topics)))
    for name in topics:
        b = name.encode()
        out += _I16.pack(len(b)) + b
    return bytes(out + _I32.pack(-1))


def to_ids(by_name: Mapping[str, list[int]], topics: Mapping[str, TopicMeta]):
    out = {}
    for name, parts in by_name.items():
        t = topics.get(name)
        if t is not None and parts:
            out[t.topic_id] = frozenset(p for p in parts if 0 <= p < t.partitions)
    return {t: ps for t, ps in out.items() if ps}


def convert_classic_group(
    classic: Group, config: GroupConfig, topics: Mapping[str, TopicMeta]
) -> ConsumerGroup | None:
    """A classic consumer group as a consumer group of classic members, each keeping the
    assignment of the last generation it synced (or None if a subscription can't be read)."""
    group = ConsumerGroup(classic.group_id, config)
    group.offsets = classic.offsets
    group.group_epoch = group.assignment_epoch = classic.generation_id
    for m in classic.members.values():
        parsed = parse_subscription(m.metadata(classic.protocol_name or ""))
        if parsed is None:
            return None
        _, names, _ = parsed
        member = ConsumerMember(
            m.member_id, m.group_instance_id, None, m.client_id, m.client_host,
            m.rebalance_timeout_ms, sorted(set(names)), None, None,
            ClassicMetadata(m.session_timeout_ms, list(m.protocols)),
            member_epoch=classic.generation_id, previous_member_epoch=classic.generation_id,
            state=MemberState.STABLE, assigned=to_ids(parse_assignment(m.assignment), topics),
        )  # fmt: skip
        group.put_member(member)
        group.target[m.member_id] = dict(member.assigned)
    group.metadata_hash = group.compute_metadata_hash(group.subscribed_metadata(topics))
    return group


def convert_consumer_group(group: ConsumerGroup, topics: Mapping[str, TopicMeta]) -> Group:
    """A consumer group whose members are all classic, as a classic group (Stable in the
    group epoch, each member keeping its current assignment); the caller rebalances it."""
    by_id = {t.topic_id: t for t in topics.values()}
    classic = Group(group.group_id)
    classic.offsets = group.offsets
    classic.generation_id = group.group_epoch
    classic.protocol_type = "consumer"
    for m in group.members.values():
        assert m.classic is not None
        version = 0
        if m.classic.protocols:
            parsed = parse_subscription(m.classic.protocols[0][1])
            version = parsed[0] if parsed else 0
        classic.add(
            Member(
                m.member_id, m.instance_id, m.client_id, m.client_host, m.rebalance_timeout_ms,
                m.classic.session_timeout_ms, "consumer", list(m.classic.protocols),
                encode_assignment(m.assigned, by_id, version),
            )
        )  # fmt: skip
    classic.protocol_name = classic.select_protocol()
    classic.subscribed = classic.compute_subscribed_topics()
    classic.state = GroupState.STABLE
    return classic


# --- the classic APIs against a consumer group (sans-io) --------------------------------------


def _classic_member(group: ConsumerGroup, member_id: str, instance_id: str | None):
    """(member, error): the classic member named, or UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID."""
    member = group.members.get(member_id)
    if instance_id is not None:
        current = group.static_members.get(instance_id)
        if current is not None and current != member_id:
            return None, ErrorCode.FENCED_INSTANCE_ID
    if member is None or not member.is_classic:
        return None, ErrorCode.UNKNOWN_MEMBER_ID
    return member, None


def classic_join(
    group: ConsumerGroup, req, topics: Mapping[str, TopicMeta], now_ms: int
) -> tuple[JoinResult, Records]:
    """JoinGroup (a coordinator JoinRequest) of a classic member of a consumer group."""
    records: Records = []
    for pending, expiry in list(group.pending_members.items()):
        if expiry <= now_ms:  # handed an id (MEMBER_ID_REQUIRED) and never came back
            del group.pending_members[pending]
    parsed = parse_subscription(req.protocols[0][1]) if req.protocols else None
    if req.protocol_type != "consumer" or parsed is None:
        return JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, req.member_id), records
    _, names, owned_by_name = parsed
    member_id = req.member_id
    if not member_id:
        member_id = generate_member_id()
        if req.group_instance_id is None and req.require_known_member_id:
            group.pending_members[member_id] = now_ms + req.session_timeout_ms
            return JoinResult(ErrorCode.MEMBER_ID_REQUIRED, member_id), records
    member = group.members.get(member_id)
    bump = False
    if member is None:
        known = group.pending_members.pop(member_id, None) is not None
        if not known and req.member_id and req.group_instance_id is None:
            return JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id), records
        old_id = group.static_members.get(req.group_instance_id or "")
        old = group.members.get(old_id) if old_id is not None else None
        if old is None and len(group.members) >= group.config.max_size:
            return JoinResult(ErrorCode.GROUP_MAX_SIZE_REACHED, ""), records
        member = ConsumerMember(member_id, req.group_instance_id)
        if old is not None:
            # A static member returns under a new id and takes the old one's partitions.
            target = group.target.get(old.member_id)
            group.remove_member(old.member_id)
            records += group._member_tombstones(old.member_id)
            member.assigned, member.pending_revocation = old.assigned, old.pending_revocation
            member.member_epoch = member.previous_member_epoch = 0
            if target is not None:
                group.target[member_id] = target
        else:
            bump = True
    elif not member.is_classic:
        return JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id), records
    elif req.group_instance_id is not None and member.instance_id != req.group_instance_id:
        return JoinResult(ErrorCode.FENCED_INSTANCE_ID, member_id), records
    member.client_id, member.client_host = req.client_id, req.client_host
    member.rebalance_timeout_ms = req.rebalance_timeout_ms
    classic = ClassicMetadata(req.session_timeout_ms, list(req.protocols))
    subscribed = sorted(set(names))
    if bump or member.classic != classic or member.subscribed_topic_names != subscribed:
        bump = bump or member.subscribed_topic_names != subscribed
        member.classic, member.subscribed_topic_names = classic, subscribed
        group.put_member(member)
        records.append(group._member_record(member))
    member.session_deadline = now_ms + req.session_timeout_ms
    records += group._maybe_bump(bump, topics, now_ms)
    records += group._maybe_new_target(topics)
    # Eager assignors give everything up before joining (no owned partitions in their
    # subscription); cooperative ones list what they still own.
    if group.reconcile(member, to_ids(owned_by_name, topics), now_ms):
        records.append(group._current_record(member))
    group.update_state(now_ms)
    return JoinResult(
        ErrorCode.NONE, member_id, member.member_epoch, "consumer", req.protocols[0][0], "", []
    ), records


def classic_sync(
    group: ConsumerGroup, member_id: str, instance_id: str | None, generation: int,
    protocol_type: str | None, protocol_name: str | None, topics: Mapping[str, TopicMeta],
    now_ms: int,
) -> SyncResult:  # fmt: skip
    member, error = _classic_member(group, member_id, instance_id)
    if error is not None:
        return SyncResult(error)
    if generation != member.member_epoch:
        return SyncResult(ErrorCode.ILLEGAL_GENERATION)
    names = [name for name, _ in member.classic.protocols]
    if (protocol_type is not None and protocol_type != "consumer") or (
        protocol_name is not None and protocol_name not in names
    ):
        return SyncResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
    member.session_deadline = now_ms + member.classic.session_timeout_ms
    version = 0
    if member.classic.protocols:
        parsed = parse_subscription(member.classic.protocols[0][1])
        version = parsed[0] if parsed else 0
    by_id = {t.topic_id: t for t in topics.values()}
    return SyncResult(
        ErrorCode.NONE, "consumer", protocol_name or names[0],
        encode_assignment(member.assigned, by_id, version),
    )  # fmt: skip


def classic_heartbeat(
    group: ConsumerGroup, member_id: str, instance_id: str | None, generation: int,
    topics: Mapping[str, TopicMeta], now_ms: int,
) -> tuple[int, Records]:  # fmt: skip
    member, error = _classic_member(group, member_id, instance_id)
    if error is not None:
        return error, []
    if generation != member.member_epoch:
        return ErrorCode.ILLEGAL_GENERATION, []
    member.session_deadline = now_ms + member.classic.session_timeout_ms
    records = group._maybe_bump(False, topics, now_ms) + group._maybe_new_target(topics)
    group.update_state(now_ms)
    if member.state is not MemberState.STABLE or member.member_epoch != group.assignment_epoch:
        # Its target moved: it must (revoke and) join again to get its new assignment.
        return ErrorCode.REBALANCE_IN_PROGRESS, records
    return ErrorCode.NONE, records

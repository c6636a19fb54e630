"""Kafka's record formats in `__consumer_offsets`, and the group-to-partition mapping.

Keys and values are the coordinator's own versioned schemas (apache/kafka
group-coordinator/src/main/resources/common/message/*.json), each prefixed by an int16 version:

- OffsetCommitKey (key versions 0 and 1): group, topic, partition
- OffsetCommitValue v0-v4: offset, leaderEpoch (v3+), metadata, commitTimestamp,
  expireTimestamp (v1 only); v4 is flexible (compact strings, tagged fields)
- GroupMetadataKey (key version 2): group
- GroupMetadataValue v0-v4: protocolType, generation, protocol, leader, currentStateTimestamp
  (v2+), members [memberId, groupInstanceId (v3+), clientId, clientHost, rebalanceTimeout (v1+),
  sessionTimeout, subscription, assignment]; v4 is flexible

A null value is a tombstone. We write OffsetCommitValue v3 (v1 when the commit carries an
explicit retention time) and GroupMetadataValue v3, which every Kafka since 2.3 reads; we read
all versions, so a data directory written by Kafka's own coordinator replays too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


def partition_for(group_id: str, num_partitions: int) -> int:
    """Kafka's mapping: abs(Java String.hashCode(group id)) % partitions (abs(MIN_VALUE) = 0)."""
    h = 0
    data = group_id.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    h = 0 if h == -(1 << 31) else abs(h)
    return h % num_partitions


@dataclass(slots=True)
class OffsetAndMetadata:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = -1
    expire_timestamp: int = -1  # -1: expiry follows offsets.retention.minutes


@dataclass(slots=True)
class MemberRecord:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(slots=True)
class GroupRecord:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int = -1
    members: list[MemberRecord] = field(default_factory=list)


# --- writing ------------------------------------------------------------------------------


class _Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def int16(self, v: int) -> _Writer:
        self.buf += _I16.pack(v)
        return self

    def int32(self, v: int) -> _Writer:
        self.buf += _I32.pack(v)
        return self

    def int64(self, v: int) -> _Writer:
        self.buf += _I64.pack(v)
        return self

    def string(self, s: str | None) -> _Writer:
        if s is None:
            return self.int16(-1)
        b = s.encode()
        self.buf += _I16.pack(len(b)) + b
        return self

    def bytes_(self, b: bytes | None) -> _Writer:
        if b is None:
            return self.int32(-1)
        self.buf += _I32.pack(len(b)) + b
        return self


def offset_commit_key(group: str, topic: str, partition: int) -> bytes:
    w = _Writer().int16(OFFSET_COMMIT_KEY_VERSION).string(group).string(topic).int32(partition)
    return bytes(w.buf)


def offset_commit_value(om: OffsetAndMetadata) -> bytes:
    if om.expire_timestamp >= 0:  # v1 is the only version that keeps an expire timestamp
        w = _Writer().int16(1).int64(om.offset).string(om.metadata).int64(om.commit_timestamp)
        return bytes(w.int64(om.expire_timestamp).buf)
    w = _Writer().int16(3).int64(om.offset).int32(om.leader_epoch).string(om.metadata)
    return bytes(w.int64(om.commit_timestamp).buf)


def group_metadata_key(group: str) -> bytes:
    return bytes(_Writer().int16(GROUP_METADATA_KEY_VERSION).string(group).buf)


def group_metadata_value(rec: GroupRecord) -> bytes:
    w = _Writer().int16(3).string(rec.protocol_type).int32(rec.generation)
    w.string(rec.protocol).string(rec.leader).int64(rec.current_state_timestamp)
    w.int32(len(rec.members))
    for m in rec.members:
        w.string(m.member_id).string(m.group_instance_id).string(m.client_id)
        w.string(m.client_host).int32(m.rebalance_timeout_ms).int32(m.session_timeout_ms)
        w.bytes_(m.subscription).bytes_(m.assignment)
    return bytes(w.buf)


# --- reading ------------------------------------------------------------------------------


class SchemaError(ValueError):
    """A record in __consumer_offsets we can't parse."""


class _Reader:
    __slots__ = ("buf", "pos", "flexible")

    def __init__(self, buf: bytes, flexible: bool = False, pos: int = 0):
        self.buf = buf
        self.pos = pos
        self.flexible = flexible

    def _unpack(self, s: struct.Struct) -> int:
        if self.pos + s.size > len(self.buf):
            raise SchemaError("record too short")
        (v,) = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return v

    def int16(self) -> int:
        return self._unpack(_I16)

    def int32(self) -> int:
        return self._unpack(_I32)

    def int64(self) -> int:
        return self._unpack(_I64)

    def uvarint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.buf) or shift > 35:
                raise SchemaError("bad varint")
            b = self.buf[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise SchemaError("record too short")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def string(self) -> str | None:
        n = self.uvarint() - 1 if self.flexible else self.int16()
        return None if n < 0 else self._take(n).decode("utf-8", "replace")

    def bytes_(self) -> bytes | None:
        n = self.uvarint() - 1 if self.flexible else self.int32()
        return None if n < 0 else self._take(n)

    def array_len(self) -> int:
        return self.uvarint() - 1 if self.flexible else self.int32()

    def tagged_fields(self) -> None:
        if self.flexible:
            for _ in range(self.uvarint()):
                self.uvarint()  # tag
                self._take(self.uvarint())


def parse_key(key: bytes) -> tuple:
    """("offset", group, topic, partition) or ("group", group); ("unknown", version) otherwise."""
    r = _Reader(key)
    version = r.int16()
    if version in (0, 1):
        return "offset", r.string() or "", r.string() or "", r.int32()
    if version == 2:
        return "group", r.string() or ""
    return "unknown", version


def parse_offset_value(value: bytes) -> OffsetAndMetadata:
    r = _Reader(value)
    version = r.int16()
    if not 0 <= version <= 4:
        raise SchemaError(f"unknown OffsetCommitValue version {version}")
    r.flexible = version >= 4
    offset = r.int64()
    leader_epoch = r.int32() if version >= 3 else -1
    metadata = r.string() or ""
    commit_ts = r.int64()
    expire_ts = r.int64() if version == 1 else -1
    r.tagged_fields()
    return OffsetAndMetadata(offset, leader_epoch, metadata, commit_ts, expire_ts)


def parse_group_value(value: bytes) -> GroupRecord:
    r = _Reader(value)
    version = r.int16()
    if not 0 <= version <= 4:
        raise SchemaError(f"unknown GroupMetadataValue version {version}")
    r.flexible = version >= 4
    rec = GroupRecord(r.string() or "", r.int32(), r.string(), r.string())
    if version >= 2:
        rec.current_state_timestamp = r.int64()
    for _ in range(max(r.array_len(), 0)):
        member_id = r.string() or ""
        instance_id = r.string() if version >= 3 else None
        client_id = r.string() or ""
        client_host = r.string() or ""
        rebalance_timeout = r.int32() if version >= 1 else -1
        session_timeout = r.int32()
        if rebalance_timeout < 0:
            rebalance_timeout = session_timeout
        subscription = r.bytes_() or b""
        assignment = r.bytes_() or b""
        r.tagged_fields()
        rec.members.append(
            MemberRecord(member_id, instance_id, client_id, client_host, rebalance_timeout,
                         session_timeout, subscription, assignment)
        )  # fmt: skip
    r.tagged_fields()
    return rec


def subscribed_topics(subscription: bytes) -> set[str] | None:
    """Topics of a ConsumerProtocolSubscription (any version), or None if it can't be parsed.

    The subscription starts with an int16 version and an array of topic names; later fields
    (user data, owned partitions, generation, rack) don't matter here.
    """
    try:
        r = _Reader(subscription)
        if r.int16() < 0:
            return None
        n = r.int32()
        if n < 0 or n > len(subscription):
            return None
        return {r.string() or "" for _ in range(n)}
    except SchemaError:
        return None


# --- KIP-848 consumer group records -------------------------------------------------------
#
# Record types 3-8 of Kafka's group coordinator (keys: int16 type, then non-flexible fields;
# values: int16 version 0, then flexible fields with tagged fields):
#   3 ConsumerGroupMetadata (group) -> Epoch, tag 0 MetadataHash
#   4 ConsumerGroupPartitionMetadata (group) -> read and ignored (Kafka 4.1 stopped writing it)
#   5 ConsumerGroupMemberMetadata (group, member) -> InstanceId, RackId, ClientId, ClientHost,
#     SubscribedTopicNames, SubscribedTopicRegex, RebalanceTimeoutMs, ServerAssignor,
#     tag 0 ClassicMemberMetadata {SessionTimeoutMs, SupportedProtocols [Name, Metadata]}
#   6 ConsumerGroupTargetAssignmentMetadata (group) -> AssignmentEpoch
#   7 ConsumerGroupTargetAssignmentMember (group, member) -> TopicPartitions [TopicId, Partitions]
#   8 ConsumerGroupCurrentMemberAssignment (group, member) -> MemberEpoch, PreviousMemberEpoch,
#     State, AssignedPartitions, PartitionsPendingRevocation

CG_METADATA, CG_PARTITION_METADATA, CG_MEMBER_METADATA = 3, 4, 5
CG_TARGET_METADATA, CG_TARGET_MEMBER, CG_CURRENT_ASSIGNMENT = 6, 7, 8


class _FlexWriter(_Writer):
    __slots__ = ()

    def uvarint(self, v: int) -> _FlexWriter:
        while v >= 0x80:
            self.buf.append((v & 0x7F) | 0x80)
            v >>= 7
        self.buf.append(v)
        return self

    def string(self, s: str | None) -> _FlexWriter:
        if s is None:
            return self.uvarint(0)
        b = s.encode()
        self.uvarint(len(b) + 1)
        self.buf += b
        return self

    def bytes_(self, b: bytes | None) -> _FlexWriter:
        if b is None:
            return self.uvarint(0)
        self.uvarint(len(b) + 1)
        self.buf += b
        return self

    def uuid(self, u) -> _FlexWriter:
        self.buf += u.bytes
        return self

    def topic_partitions(self, assignment: dict) -> _FlexWriter:
        self.uvarint(len(assignment) + 1)
        for topic_id in sorted(assignment, key=str):
            parts = sorted(assignment[topic_id])
            self.uuid(topic_id).uvarint(len(parts) + 1)
            for p in parts:
                self.int32(p)
            self.uvarint(0)  # tagged fields
        return self


def cg_key(record_type: int, group: str, member: str | None = None) -> bytes:
    w = _Writer().int16(record_type).string(group)
    if member is not None:
        w.string(member)
    return bytes(w.buf)


def cg_metadata_value(epoch: int, metadata_hash: int) -> bytes:
    w = _FlexWriter().int16(0).int32(epoch)
    tag = _I64.pack(metadata_hash)
    w.uvarint(1).uvarint(0).uvarint(len(tag))
    w.buf += tag
    return bytes(w.buf)


def cg_member_value(m) -> bytes:
    """m: a ConsumerMember (consumer_group.py)."""
    w = _FlexWriter().int16(0).string(m.instance_id).string(m.rack_id)
    w.string(m.client_id).string(m.client_host)
    w.uvarint(len(m.subscribed_topic_names) + 1)
    for name in m.subscribed_topic_names:
        w.string(name)
    w.string(m.subscribed_topic_regex).int32(m.rebalance_timeout_ms).string(m.server_assignor)
    if m.classic is None:
        w.uvarint(0)
    else:
        c = _FlexWriter().int32(m.classic.session_timeout_ms)
        c.uvarint(len(m.classic.protocols) + 1)
        for name, meta in m.classic.protocols:
            c.string(name).bytes_(meta).uvarint(0)
        c.uvarint(0)
        w.uvarint(1).uvarint(0).uvarint(len(c.buf))
        w.buf += c.buf
    return bytes(w.buf)


def cg_target_metadata_value(assignment_epoch: int) -> bytes:
    return bytes(_FlexWriter().int16(0).int32(assignment_epoch).uvarint(0).buf)


def cg_target_member_value(assignment: dict) -> bytes:
    return bytes(_FlexWriter().int16(0).topic_partitions(assignment).uvarint(0).buf)


def cg_current_assignment_value(m) -> bytes:
    w = _FlexWriter().int16(0).int32(m.member_epoch).int32(m.previous_member_epoch)
    w.buf += bytes([m.state & 0xFF])
    return bytes(
        w.topic_partitions(m.assigned).topic_partitions(m.pending_revocation).uvarint(0).buf
    )


@dataclass(slots=True)
class ClassicMetadata:
    session_timeout_ms: int
    protocols: list[tuple[str, bytes]]


@dataclass(slots=True)
class ConsumerMemberRecord:
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed_topic_names: list[str]
    subscribed_topic_regex: str | None
    rebalance_timeout_ms: int
    server_assignor: str | None
    classic: ClassicMetadata | None


def _read_tags(r: _Reader) -> dict[int, bytes]:
    tags = {}
    for _ in range(r.uvarint()):
        tag = r.uvarint()
        tags[tag] = r._take(r.uvarint())
    return tags


def _read_topic_partitions(r: _Reader) -> dict:
    import uuid

    out = {}
    for _ in range(max(r.array_len(), 0)):
        topic_id = uuid.UUID(bytes=r._take(16))
        parts = frozenset(r.int32() for _ in range(max(r.array_len(), 0)))
        _read_tags(r)
        out[topic_id] = parts
    return out


def parse_cg_key(key: bytes) -> tuple[int, str, str | None] | None:
    """(record type, group, member or None) for keys 3-8, else None."""
    r = _Reader(key)
    record_type = r.int16()
    if not CG_METADATA <= record_type <= CG_CURRENT_ASSIGNMENT:
        return None
    group = r.string() or ""
    member = r.string() if record_type in (CG_MEMBER_METADATA, CG_TARGET_MEMBER, CG_CURRENT_ASSIGNMENT) else None  # fmt: skip
    return record_type, group, member


def parse_cg_value(record_type: int, value: bytes):
    r = _Reader(value, flexible=True)
    r.int16()  # version 0
    if record_type == CG_METADATA:
        epoch = r.int32()
        tags = _read_tags(r)
        return epoch, _I64.unpack(tags[0])[0] if len(tags.get(0, b"")) == 8 else 0
    if record_type == CG_MEMBER_METADATA:
        instance_id, rack_id = r.string(), r.string()
        client_id, client_host = r.string() or "", r.string() or ""
        names = [r.string() or "" for _ in range(max(r.array_len(), 0))]
        regex, rebalance_timeout, assignor = r.string(), r.int32(), r.string()
        classic = None
        tags = _read_tags(r)
        if 0 in tags:
            c = _Reader(tags[0], flexible=True)
            session_timeout = c.int32()
            protocols = []
            for _ in range(max(c.array_len(), 0)):
                protocols.append((c.string() or "", c.bytes_() or b""))
                _read_tags(c)
            classic = ClassicMetadata(session_timeout, protocols)
        return ConsumerMemberRecord(instance_id, rack_id, client_id, client_host, names, regex,
                                    rebalance_timeout, assignor, classic)  # fmt: skip
    if record_type == CG_TARGET_METADATA:
        return r.int32()
    if record_type == CG_TARGET_MEMBER:
        return _read_topic_partitions(r)
    if record_type == CG_CURRENT_ASSIGNMENT:
        epoch, previous = r.int32(), r.int32()
        state = r._take(1)[0]
        assigned = _read_topic_partitions(r)
        pending = _read_topic_partitions(r)
        return epoch, previous, state, assigned, pending
    return None

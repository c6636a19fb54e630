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

"""KIP-848 consumer groups (`group.protocol=consumer`): Kafka's group-coordinator state machine.

Sans-io: a heartbeat (or a timer firing) goes in with the current time and the topics the
broker knows; the group changes, and the answer comes out with the records to append to
`__consumer_offsets`. The GroupCoordinator does the I/O (timers, appends) around it.

The model is Kafka's:
- the group epoch is bumped by every change of membership or subscriptions (or of the
  subscribed topics' partitions); the target assignment is recomputed by the group's server
  assignor when the group epoch is ahead of it, and takes the group epoch as its epoch;
- each member converges to its target assignment on its own, by heartbeats: it first revokes
  partitions it must give up (UNREVOKED_PARTITIONS, staying in its epoch), then moves to the
  target epoch and receives the partitions that are free; a partition still held by another
  member (assigned or pending revocation there) is given only once that member has released
  it (UNRELEASED_PARTITIONS);
- a member's epoch is checked on every heartbeat (FENCED_MEMBER_EPOCH); a member may repeat
  the previous epoch if it owns no more than its assignment (a lost response);
- static members (instance id) leave with epoch -2 and keep their assignment for the session
  timeout, so a restarted instance takes it back under a new member id without a rebalance.

Classic members (JoinGroup/SyncGroup clients) can be members of a consumer group too (KIP-848's
online upgrade): they are ConsumerMembers with `classic` metadata, reconciled the same way,
their revocations asked for by REBALANCE_IN_PROGRESS on Heartbeat and acknowledged by rejoining.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from protocol.errors import ErrorCode

from . import schema as S
from .assignors import ASSIGNORS, Assignment, MemberSpec
from .schema import ClassicMetadata, OffsetAndMetadata

JOIN_EPOCH = 0
LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})

Records = list[tuple[bytes, bytes | None]]


class MemberState(IntEnum):
    STABLE = 0
    UNREVOKED_PARTITIONS = 1
    UNRELEASED_PARTITIONS = 2
    UNKNOWN = 127


class ConsumerGroupState(Enum):
    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class TopicMeta:
    name: str
    topic_id: uuid.UUID
    partitions: int


@dataclass(slots=True)
class GroupConfig:
    heartbeat_interval_ms: int = 5000
    session_timeout_ms: int = 45000
    assignors: tuple[str, ...] = ("uniform", "range")
    max_size: int = 2**31 - 1
    migration_policy: str = "bidirectional"


@dataclass(eq=False, slots=True)
class ConsumerMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    rebalance_timeout_ms: int = 300000
    subscribed_topic_names: list[str] = field(default_factory=list)
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    classic: ClassicMetadata | None = None
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: MemberState = MemberState.STABLE
    assigned: Assignment = field(default_factory=dict)
    pending_revocation: Assignment = field(default_factory=dict)
    # Not persisted: deadlines in ms (the coordinator's clock).
    session_deadline: float = 0.0
    rebalance_deadline: float | None = None

    @property
    def is_classic(self) -> bool:
        return self.classic is not None

    def session_timeout(self, config: GroupConfig) -> int:
        return (
            self.classic.session_timeout_ms
            if self.classic is not None
            else config.session_timeout_ms
        )

    def owned_partitions(self) -> set[tuple[uuid.UUID, int]]:
        return {
            (t, p)
            for a in (self.assigned, self.pending_revocation)
            for t, ps in a.items()
            for p in ps
        }


@dataclass(slots=True)
class HeartbeatRequest:
    group_id: str
    member_id: str
    member_epoch: int
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: list[str] | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    owned: Assignment | None = None
    client_id: str = ""
    client_host: str = ""
    api_version: int = 1


@dataclass(slots=True)
class HeartbeatResult:
    error: int = ErrorCode.NONE
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: Assignment | None = None
    records: Records = field(default_factory=list)


def topics_by_id(topics: Mapping[str, TopicMeta]) -> dict[uuid.UUID, TopicMeta]:
    return {t.topic_id: t for t in topics.values()}


def _is_subset(small: Assignment, big: Assignment) -> bool:
    return all(ps <= big.get(t, frozenset()) for t, ps in small.items())


def _minus(a: Assignment, b: Assignment) -> Assignment:
    out = {t: ps - b.get(t, frozenset()) for t, ps in a.items()}
    return {t: ps for t, ps in out.items() if ps}


def _intersect(a: Assignment, b: Assignment) -> Assignment:
    out = {t: ps & b.get(t, frozenset()) for t, ps in a.items()}
    return {t: ps for t, ps in out.items() if ps}


def _clean(a: Mapping[uuid.UUID, frozenset[int] | set[int]]) -> Assignment:
    return {t: frozenset(ps) for t, ps in a.items() if ps}


def compile_regex(regex: str) -> re.Pattern:
    """Kafka compiles subscriptions with RE2/J and matches whole topic names; Python's re is
    close enough for the RE2 subset clients send (no backreferences in RE2 anyway)."""
    return re.compile(regex)


class ConsumerGroup:
    """One consumer-protocol group; also answers the parts of the classic Group interface the
    coordinator's offset code reads (offsets, state, protocol type, subscribed topics)."""

    protocol_type = "consumer"
    is_consumer_group = True
    group_type = "consumer"

    def __init__(self, group_id: str, config: GroupConfig):
        self.group_id = group_id
        self.config = config
        self.group_epoch = 0
        self.assignment_epoch = 0
        self.metadata_hash = 0
        self.members: dict[str, ConsumerMember] = {}
        self.static_members: dict[str, str] = {}  # instance id -> member id
        self.target: dict[str, Assignment] = {}
        self.partition_epochs: dict[tuple[uuid.UUID, int], int] = {}
        self.offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
        self.pending_members: dict = {}  # classic MEMBER_ID_REQUIRED ids: id -> expiry (ms)
        self.state = ConsumerGroupState.EMPTY
        self.state_timestamp = -1
        self.dead = False
        self._regex_cache: dict[str, re.Pattern] = {}

    def __repr__(self) -> str:
        return f"ConsumerGroup({self.group_id!r}, {self.state.value}, epoch={self.group_epoch})"

    # --- the classic Group interface the offset code uses ------------------------------------

    def is_(self, state) -> bool:
        return self.state.value == state.value

    @property
    def generation_id(self) -> int:
        return self.group_epoch

    @property
    def subscribed(self) -> set[str]:
        names: set[str] = set()
        for m in self.members.values():
            names.update(m.subscribed_topic_names)
        return names

    def is_subscribed_to(self, topic: str) -> bool:
        return topic in self.subscribed or any(
            m.subscribed_topic_regex is not None and self._regex_matches(m.subscribed_topic_regex, topic)
            for m in self.members.values()
        )  # fmt: skip

    # --- queries ----------------------------------------------------------------------------

    def has_consumer_members(self) -> bool:
        return any(not m.is_classic for m in self.members.values())

    def preferred_assignor(self) -> str:
        """The assignor most members ask for (Kafka's rule), else the configured default."""
        votes: dict[str, int] = {}
        for m in self.members.values():
            if m.server_assignor:
                votes[m.server_assignor] = votes.get(m.server_assignor, 0) + 1
        if not votes:
            return self.config.assignors[0]
        return max(sorted(votes), key=lambda name: votes[name])

    def _regex_matches(self, regex: str, topic: str) -> bool:
        pattern = self._regex_cache.get(regex)
        if pattern is None:
            try:
                pattern = self._regex_cache[regex] = compile_regex(regex)
            except re.error:
                return False
        return pattern.fullmatch(topic) is not None

    def member_topic_names(
        self, member: ConsumerMember, topics: Mapping[str, TopicMeta]
    ) -> set[str]:
        names = {n for n in member.subscribed_topic_names if n in topics}
        if member.subscribed_topic_regex:
            names.update(
                n for n in topics
                if n not in INTERNAL_TOPICS and self._regex_matches(member.subscribed_topic_regex, n)
            )  # fmt: skip
        return names

    def subscribed_metadata(self, topics: Mapping[str, TopicMeta]) -> dict[str, TopicMeta]:
        names: set[str] = set()
        for m in self.members.values():
            names |= self.member_topic_names(m, topics)
        return {n: topics[n] for n in sorted(names)}

    @staticmethod
    def compute_metadata_hash(subscribed: Mapping[str, TopicMeta]) -> int:
        """A stable 64-bit digest of the subscribed topics (Kafka 4.1's MetadataHash idea):
        it changes when a subscribed topic appears, goes, or gains partitions."""
        h = hashlib.blake2b(digest_size=8)
        for name, t in sorted(subscribed.items()):
            h.update(f"{name}\0{t.topic_id}\0{t.partitions}\n".encode())
        return int.from_bytes(h.digest(), "big", signed=True)

    def update_state(self, now_ms: int) -> None:
        if self.dead:
            new = ConsumerGroupState.DEAD
        elif not self.members:
            new = ConsumerGroupState.EMPTY
        elif self.group_epoch > self.assignment_epoch:
            new = ConsumerGroupState.ASSIGNING
        elif any(
            m.member_epoch != self.assignment_epoch or m.state is not MemberState.STABLE
            for m in self.members.values()
        ):
            new = ConsumerGroupState.RECONCILING
        else:
            new = ConsumerGroupState.STABLE
        if new is not self.state:
            self.state = new
            self.state_timestamp = now_ms

    # --- records ----------------------------------------------------------------------------

    def _metadata_record(self) -> tuple[bytes, bytes]:
        return (
            S.cg_key(S.CG_METADATA, self.group_id),
            S.cg_metadata_value(self.group_epoch, self.metadata_hash),
        )

    def _member_record(self, m: ConsumerMember) -> tuple[bytes, bytes]:
        return S.cg_key(S.CG_MEMBER_METADATA, self.group_id, m.member_id), S.cg_member_value(m)

    def _current_record(self, m: ConsumerMember) -> tuple[bytes, bytes]:
        return (
            S.cg_key(S.CG_CURRENT_ASSIGNMENT, self.group_id, m.member_id),
            S.cg_current_assignment_value(m),
        )

    def _member_tombstones(self, member_id: str) -> Records:
        return [
            (S.cg_key(S.CG_CURRENT_ASSIGNMENT, self.group_id, member_id), None),
            (S.cg_key(S.CG_TARGET_MEMBER, self.group_id, member_id), None),
            (S.cg_key(S.CG_MEMBER_METADATA, self.group_id, member_id), None),
        ]

    def tombstones(self) -> Records:
        """Every record of the group (deletion, or conversion to a classic group)."""
        out: Records = []
        for member_id in self.members:
            out += self._member_tombstones(member_id)
        out.append((S.cg_key(S.CG_TARGET_METADATA, self.group_id), None))
        out.append((S.cg_key(S.CG_METADATA, self.group_id), None))
        return out

    def snapshot_records(self) -> Records:
        """The whole group as records (written when a classic group converts to this)."""
        out: Records = [self._metadata_record()]
        for m in self.members.values():
            out.append(self._member_record(m))
        for member_id, a in self.target.items():
            out.append(
                (
                    S.cg_key(S.CG_TARGET_MEMBER, self.group_id, member_id),
                    S.cg_target_member_value(a),
                )
            )
        out.append(
            (
                S.cg_key(S.CG_TARGET_METADATA, self.group_id),
                S.cg_target_metadata_value(self.assignment_epoch),
            )
        )
        for m in self.members.values():
            out.append(self._current_record(m))
        return out

    # --- membership changes -------------------------------------------------------------------

    def _set_partition_epochs(self, member: ConsumerMember, add: bool) -> None:
        for tp in member.owned_partitions():
            if add:
                self.partition_epochs[tp] = member.member_epoch
            elif self.partition_epochs.get(tp) is not None:
                del self.partition_epochs[tp]

    def put_member(self, member: ConsumerMember) -> None:
        old = self.members.get(member.member_id)
        if old is not None and old is not member:
            self._set_partition_epochs(old, add=False)
        self.members[member.member_id] = member
        if member.instance_id is not None:
            self.static_members[member.instance_id] = member.member_id
        self._set_partition_epochs(member, add=True)

    def remove_member(self, member_id: str) -> ConsumerMember | None:
        member = self.members.pop(member_id, None)
        if member is None:
            return None
        self._set_partition_epochs(member, add=False)
        if (
            member.instance_id is not None
            and self.static_members.get(member.instance_id) == member_id
        ):
            del self.static_members[member.instance_id]
        self.target.pop(member_id, None)
        return member

    def fence_member(self, member_id: str, now_ms: int) -> Records:
        """Remove a member (left, session or rebalance timeout): the group epoch moves on."""
        if self.remove_member(member_id) is None:
            return []
        records = self._member_tombstones(member_id)
        self.group_epoch += 1
        records.append(self._metadata_record())
        self.update_state(now_ms)
        return records

    def expire(self, now_ms: float) -> tuple[list[tuple[str, str]], Records]:
        """Members whose session or rebalance timeout passed: ([(member id, reason)], records)."""
        gone: list[tuple[str, str]] = []
        records: Records = []
        for m in list(self.members.values()):
            if m.session_deadline and now_ms >= m.session_deadline:
                gone.append((m.member_id, "session timeout"))
            elif m.rebalance_deadline is not None and now_ms >= m.rebalance_deadline:
                gone.append((m.member_id, "rebalance timeout"))
        for member_id, _ in gone:
            records += self.fence_member(member_id, int(now_ms))
        return gone, records

    def next_deadline(self) -> float | None:
        deadlines = [m.session_deadline for m in self.members.values() if m.session_deadline]
        deadlines += [
            m.rebalance_deadline for m in self.members.values() if m.rebalance_deadline is not None
        ]
        return min(deadlines, default=None)

    # --- the heartbeat ------------------------------------------------------------------------

    def validate_request(self, req: HeartbeatRequest) -> tuple[int, str] | None:
        """Kafka's throwIfConsumerGroupHeartbeatRequestIsInvalid (before any state is touched)."""
        bad = ErrorCode.INVALID_REQUEST
        if req.instance_id == "":
            return bad, "InstanceId can't be empty."
        if req.rack_id == "":
            return bad, "RackId can't be empty."
        if req.api_version >= 1 and not req.member_id:
            return bad, "MemberId can't be empty."
        if req.member_epoch > 0 and not req.member_id:
            return bad, "MemberId can't be empty."
        if req.member_epoch == JOIN_EPOCH:
            if req.rebalance_timeout_ms == -1:
                return bad, "RebalanceTimeoutMs must be provided in first request."
            if req.owned is None or req.owned:
                return bad, "TopicPartitions must be empty when (re-)joining."
            if req.subscribed_topic_names is None and req.subscribed_topic_regex is None:
                return (
                    bad,
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                )
        elif req.member_epoch == STATIC_LEAVE_EPOCH:
            if req.instance_id is None:
                return bad, "InstanceId can't be null."
        elif req.member_epoch < STATIC_LEAVE_EPOCH:
            return bad, f"MemberEpoch {req.member_epoch} is invalid."
        if req.server_assignor is not None and req.server_assignor not in self.config.assignors:
            return (
                ErrorCode.UNSUPPORTED_ASSIGNOR,
                f"ServerAssignor {req.server_assignor} is not supported. Supported assignors: {', '.join(self.config.assignors)}.",
            )
        if req.subscribed_topic_regex is not None:
            try:
                compile_regex(req.subscribed_topic_regex)
            except re.error as e:
                return (
                    ErrorCode.INVALID_REGULAR_EXPRESSION,
                    f"SubscribedTopicRegex `{req.subscribed_topic_regex}` is not a valid regular expression: {e}.",
                )
        return None

    def heartbeat(
        self, req: HeartbeatRequest, topics: Mapping[str, TopicMeta], now_ms: int
    ) -> HeartbeatResult:
        """One ConsumerGroupHeartbeat (validate_request passed)."""
        if req.member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
            return self._leave(req, now_ms)
        records: Records = []
        member = self.members.get(req.member_id) if req.member_id else None
        bump = False
        if req.member_epoch == JOIN_EPOCH:
            if member is None:
                error = self._join_checks(req)
                if error is not None:
                    return error
                member, bump = self._new_member(req, records)
            # A known member joining again (its response was lost) keeps its state and gets
            # its whole assignment in the response.
        else:
            if member is None:
                return HeartbeatResult(
                    ErrorCode.UNKNOWN_MEMBER_ID,
                    f"Member {req.member_id} is not a member of group {self.group_id}.",
                )
            if member.is_classic:
                return HeartbeatResult(
                    ErrorCode.UNKNOWN_MEMBER_ID,
                    f"Member {req.member_id} uses the classic protocol.",
                )
            error = self._check_epoch(member, req.member_epoch, req.owned)
            if error is not None:
                return error
        member.session_deadline = now_ms + self.config.session_timeout_ms
        if self._update_subscription(member, req) or bump:
            records.append(self._member_record(member))
            bump = True
        records += self._maybe_bump(bump, topics, now_ms)
        records += self._maybe_new_target(topics)
        before = (member.member_epoch, member.assigned)
        changed = self.reconcile(member, req.owned, now_ms)
        if changed:
            records.append(self._current_record(member))
        self.update_state(now_ms)
        full = (
            req.rebalance_timeout_ms != -1
            and (req.subscribed_topic_names is not None or req.subscribed_topic_regex is not None)
            and req.owned is not None
        )
        send_assignment = req.member_epoch == JOIN_EPOCH or full or before[1] != member.assigned
        return HeartbeatResult(
            ErrorCode.NONE, None, member.member_id, member.member_epoch,
            self.config.heartbeat_interval_ms,
            dict(member.assigned) if send_assignment else None, records,
        )  # fmt: skip

    def _join_checks(self, req: HeartbeatRequest) -> HeartbeatResult | None:
        if req.instance_id is not None:
            old_id = self.static_members.get(req.instance_id)
            old = self.members.get(old_id) if old_id is not None else None
            if old is not None and old.member_epoch != STATIC_LEAVE_EPOCH:
                return HeartbeatResult(
                    ErrorCode.UNRELEASED_INSTANCE_ID,
                    f"Static member {old_id} with instance id {req.instance_id} is not released yet.",
                )
            if old is not None:
                return None  # takes the place of the member that left
        if len(self.members) >= self.config.max_size:
            return HeartbeatResult(
                ErrorCode.GROUP_MAX_SIZE_REACHED,
                f"The consumer group has reached its maximum capacity of {self.config.max_size} members.",
            )
        return None

    def _new_member(self, req: HeartbeatRequest, records: Records) -> tuple[ConsumerMember, bool]:
        """(the member, whether it is new to the group: a returning static member is not)."""
        member_id = req.member_id or generate_member_id()
        if req.instance_id is not None and req.instance_id in self.static_members:
            # The static member comes back: a new member id, the old one's assignment and epoch.
            target = self.target.get(self.static_members[req.instance_id])
            old = self.remove_member(self.static_members[req.instance_id])
            records += self._member_tombstones(old.member_id)
            # Epoch 0 (as Kafka): reconciliation moves it to the target epoch at once, keeping
            # what the old member had and the target still gives it.
            member = ConsumerMember(
                member_id, req.instance_id, state=MemberState.STABLE, assigned=old.assigned,
                pending_revocation=old.pending_revocation,
            )  # fmt: skip
            if target is not None:
                self.target[member_id] = target
                records.append(
                    (
                        S.cg_key(S.CG_TARGET_MEMBER, self.group_id, member_id),
                        S.cg_target_member_value(target),
                    )
                )
            member.subscribed_topic_names = list(old.subscribed_topic_names)
            member.subscribed_topic_regex = old.subscribed_topic_regex
            member.server_assignor = old.server_assignor
            member.rack_id, member.rebalance_timeout_ms = old.rack_id, old.rebalance_timeout_ms
            is_new = False
        else:
            member = ConsumerMember(member_id, req.instance_id)
            is_new = True
        member.client_id, member.client_host = req.client_id, req.client_host
        self.put_member(member)
        return member, is_new

    def _check_epoch(
        self, member: ConsumerMember, epoch: int, owned: Assignment | None
    ) -> HeartbeatResult | None:
        """Kafka's throwIfMemberEpochIsInvalid."""
        if epoch > member.member_epoch:
            return HeartbeatResult(
                ErrorCode.FENCED_MEMBER_EPOCH,
                f"The consumer group member has a greater member epoch ({epoch}) than the one "
                f"known by the group coordinator ({member.member_epoch}). The member must abandon "
                "all its partitions and rejoin.",
            )
        # The response that bumped the epoch may have been lost: accept the previous epoch
        # as long as the member owns no more than its current assignment.
        if epoch < member.member_epoch and (
            epoch != member.previous_member_epoch
            or (owned is not None and not _is_subset(owned, member.assigned))
        ):
            return HeartbeatResult(
                ErrorCode.FENCED_MEMBER_EPOCH,
                f"The consumer group member has a smaller member epoch ({epoch}) than the one "
                f"known by the group coordinator ({member.member_epoch}). The member must "
                "abandon all its partitions and rejoin.",
            )
        return None

    def _update_subscription(self, member: ConsumerMember, req: HeartbeatRequest) -> bool:
        """Apply the fields the request sets (null means unchanged); True if the group epoch
        must move (subscription or assignor changed; a new member also bumps it)."""
        bump = False
        if req.rack_id is not None and req.rack_id != member.rack_id:
            member.rack_id = req.rack_id
        if req.rebalance_timeout_ms != -1:
            member.rebalance_timeout_ms = req.rebalance_timeout_ms
        if req.subscribed_topic_names is not None and sorted(req.subscribed_topic_names) != sorted(
            member.subscribed_topic_names
        ):
            member.subscribed_topic_names = sorted(set(req.subscribed_topic_names))
            bump = True
        if req.subscribed_topic_regex is not None:
            regex = req.subscribed_topic_regex or None
            if regex != member.subscribed_topic_regex:
                member.subscribed_topic_regex = regex
                bump = True
        if req.server_assignor is not None and req.server_assignor != member.server_assignor:
            member.server_assignor = req.server_assignor
            bump = True
        return bump

    def _maybe_bump(self, bump: bool, topics: Mapping[str, TopicMeta], now_ms: int) -> Records:
        """Bump the group epoch if membership/subscriptions changed or the subscribed topics did."""
        new_hash = self.compute_metadata_hash(self.subscribed_metadata(topics))
        if new_hash != self.metadata_hash:
            self.metadata_hash = new_hash
            bump = True
        if not bump:
            return []
        self.group_epoch += 1
        return [self._metadata_record()]

    def _maybe_new_target(self, topics: Mapping[str, TopicMeta]) -> Records:
        if self.group_epoch <= self.assignment_epoch:
            return []
        assignor = ASSIGNORS[self.preferred_assignor()]
        specs = {
            m.member_id: MemberSpec(
                frozenset(topics[n].topic_id for n in self.member_topic_names(m, topics)), m.rack_id
            )
            for m in self.members.values()
        }
        sizes = {t.topic_id: t.partitions for t in self.subscribed_metadata(topics).values()}
        new = {mid: _clean(a) for mid, a in assignor(specs, sizes, self.target).items()}
        records: Records = []
        for member_id, a in new.items():
            if self.target.get(member_id) != a:
                records.append(
                    (
                        S.cg_key(S.CG_TARGET_MEMBER, self.group_id, member_id),
                        S.cg_target_member_value(a),
                    )
                )
        self.target = new
        self.assignment_epoch = self.group_epoch
        records.append(
            (
                S.cg_key(S.CG_TARGET_METADATA, self.group_id),
                S.cg_target_metadata_value(self.assignment_epoch),
            )
        )
        return records

    def reconcile(self, member: ConsumerMember, owned: Assignment | None, now_ms: float) -> bool:
        """Kafka's CurrentAssignmentBuilder: move the member one step toward its target.
        `owned` is what the member reports owning (None: not reported). True if it changed."""
        before = (member.member_epoch, member.previous_member_epoch, member.state,
                  member.assigned, member.pending_revocation)  # fmt: skip
        target = self.target.get(member.member_id, {})
        state = member.state
        if state is MemberState.UNREVOKED_PARTITIONS:
            if _owns_any(owned, member.pending_revocation):
                return False
            self._next_assignment(member, target, owned)
        elif (
            state is MemberState.UNRELEASED_PARTITIONS
            or member.member_epoch != self.assignment_epoch
        ):
            self._next_assignment(member, target, owned)
        after = (member.member_epoch, member.previous_member_epoch, member.state,
                 member.assigned, member.pending_revocation)  # fmt: skip
        if after == before:
            return False
        if member.state is MemberState.UNREVOKED_PARTITIONS:
            if member.rebalance_deadline is None:
                member.rebalance_deadline = now_ms + member.rebalance_timeout_ms
        else:
            member.rebalance_deadline = None
        # Refresh which member holds which partition.
        self._set_partition_epochs_raw(before[3], before[4], member)
        return True

    def _set_partition_epochs_raw(self, old_assigned, old_pending, member: ConsumerMember) -> None:
        for a in (old_assigned, old_pending):
            for t, ps in a.items():
                for p in ps:
                    self.partition_epochs.pop((t, p), None)
        self._set_partition_epochs(member, add=True)

    def _next_assignment(
        self, member: ConsumerMember, target: Assignment, owned: Assignment | None
    ) -> None:
        current = member.assigned
        keep = _intersect(current, target)
        revoke = _minus(current, target)
        unreleased = False
        grant: dict[uuid.UUID, set[int]] = {}
        for t, ps in _minus(target, current).items():
            for p in ps:
                if (t, p) in self.partition_epochs and (t, p) not in _pairs(
                    member.pending_revocation
                ):
                    unreleased = True
                else:
                    grant.setdefault(t, set()).add(p)
        if revoke and _owns_any(owned, revoke):
            # Revoke first: the member stays in its epoch until it has let these go.
            member.state = MemberState.UNREVOKED_PARTITIONS
            member.assigned = keep
            member.pending_revocation = revoke
            return
        merged = {t: set(ps) for t, ps in keep.items()}
        for t, ps in grant.items():
            merged.setdefault(t, set()).update(ps)
        if member.member_epoch != self.assignment_epoch:
            member.previous_member_epoch = member.member_epoch
            member.member_epoch = self.assignment_epoch
        member.assigned = _clean(merged)
        member.pending_revocation = {}
        member.state = MemberState.UNRELEASED_PARTITIONS if unreleased else MemberState.STABLE

    def _leave(self, req: HeartbeatRequest, now_ms: int) -> HeartbeatResult:
        member = self.members.get(req.member_id)
        if member is None:
            if req.instance_id is not None and req.instance_id in self.static_members:
                return HeartbeatResult(
                    ErrorCode.FENCED_INSTANCE_ID,
                    f"Instance id {req.instance_id} belongs to another member.",
                )
            return HeartbeatResult(
                ErrorCode.UNKNOWN_MEMBER_ID,
                f"Member {req.member_id} is not a member of group {self.group_id}.",
            )
        if req.member_epoch == STATIC_LEAVE_EPOCH and member.instance_id is not None:
            # A static member leaves for a while: it keeps its assignment until its session ends.
            member.previous_member_epoch = member.member_epoch
            member.member_epoch = STATIC_LEAVE_EPOCH
            member.rebalance_deadline = None
            member.session_deadline = now_ms + self.config.session_timeout_ms
            self.update_state(now_ms)
            return HeartbeatResult(ErrorCode.NONE, None, member.member_id, STATIC_LEAVE_EPOCH,
                                   self.config.heartbeat_interval_ms, None, [self._current_record(member)])  # fmt: skip
        records = self.fence_member(member.member_id, now_ms)
        return HeartbeatResult(ErrorCode.NONE, None, member.member_id, LEAVE_EPOCH,
                               self.config.heartbeat_interval_ms, None, records)  # fmt: skip

    # --- replay -----------------------------------------------------------------------------

    def rebuild_partition_epochs(self) -> None:
        self.partition_epochs = {}
        for m in self.members.values():
            self._set_partition_epochs(m, add=True)


def _pairs(a: Assignment) -> set[tuple[uuid.UUID, int]]:
    return {(t, p) for t, ps in a.items() for p in ps}


def _owns_any(owned: Assignment | None, partitions: Assignment) -> bool:
    """Does the member still own any of these? Not reported (None) counts as yes."""
    if not partitions:
        return False
    if owned is None:
        return True
    return any(ps & owned.get(t, frozenset()) for t, ps in partitions.items())


def generate_member_id() -> str:
    """Kafka's Uuid.randomUuid().toString(): URL-safe base64 of 16 random bytes, unpadded."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

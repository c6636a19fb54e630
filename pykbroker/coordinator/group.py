"""A classic consumer group's state: members, generation, protocol, leader, committed offsets.

Plain data with small invariant-keeping methods; the GroupCoordinator drives the transitions.
Everything here runs on the broker's event loop, so there are no locks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum

from protocol.errors import ErrorCode

from .schema import OffsetAndMetadata, subscribed_topics

CONSUMER_PROTOCOL_TYPE = "consumer"


class GroupState(Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


# Kafka's allowed transitions: state -> the states it may be entered from.
_VALID_PREVIOUS = {
    GroupState.PREPARING_REBALANCE: {
        GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY,
    },
    GroupState.COMPLETING_REBALANCE: {GroupState.PREPARING_REBALANCE},
    GroupState.STABLE: {GroupState.COMPLETING_REBALANCE},
    GroupState.EMPTY: {GroupState.PREPARING_REBALANCE},
    GroupState.DEAD: set(GroupState),
}  # fmt: skip


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class JoinResult:
    error: int
    member_id: str = ""
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    skip_assignment: bool = False


@dataclass(slots=True)
class SyncResult:
    error: int
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(eq=False, slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_future: asyncio.Future | None = None
    sync_future: asyncio.Future | None = None
    is_new: bool = False
    deadline: float = 0.0  # loop time by which the next heartbeat is due
    timer: asyncio.TimerHandle | None = None

    @property
    def awaiting_join(self) -> bool:
        """In the current join round. A join whose client went away (its future cancelled)
        still counts, as in Kafka: the member is then dropped by its session timeout rather
        than holding the whole group until the rebalance timeout."""
        fut = self.join_future
        return fut is not None and (not fut.done() or fut.cancelled())

    @property
    def join_is_live(self) -> bool:
        return self.join_future is not None and not self.join_future.done()

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_future is not None and not self.sync_future.done()

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        for name, data in self.protocols:
            if name == protocol:
                return data
        return b""

    def matches(self, protocols: list[tuple[str, bytes]]) -> bool:
        return self.protocols == protocols

    def vote(self, candidates: set[str]) -> str:
        """This member's most preferred protocol among those every member supports."""
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise ValueError("member supports none of the candidate protocols")


def complete(fut: asyncio.Future | None, result) -> bool:
    """Resolve a waiting JoinGroup/SyncGroup; False if nobody is waiting on it any more."""
    if fut is None or fut.done():
        return False
    fut.set_result(result)
    return True


class Group:
    group_type = "classic"  # KIP-848's group types (ListGroups v5); ConsumerGroup's is "consumer"

    def __init__(self, group_id: str, state: GroupState = GroupState.EMPTY):
        self.group_id = group_id
        self.state = state
        self.state_timestamp = now_ms()
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.generation_id = 0
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # group.instance.id -> member id
        self.pending_members: dict[str, asyncio.TimerHandle | None] = {}  # MEMBER_ID_REQUIRED
        self.pending_sync: set[str] = set()
        self.offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
        self.subscribed: set[str] | None = None  # topics, for consumer groups
        # Timers of the rebalance in progress (one at a time) and of the pending-sync check.
        self.join_timer: asyncio.TimerHandle | None = None
        self.initial_delay_remaining_ms: int | None = None  # set while the initial delay runs
        self.new_member_added = False
        self.sync_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"Group({self.group_id!r}, {self.state.value}, generation={self.generation_id})"

    # --- queries --------------------------------------------------------------------------

    def is_(self, state: GroupState) -> bool:
        return self.state is state

    @property
    def is_consumer_group(self) -> bool:
        return self.protocol_type == CONSUMER_PROTOCOL_TYPE

    def has(self, member_id: str) -> bool:
        return member_id in self.members

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def static_member_id(self, instance_id: str | None) -> str | None:
        return None if instance_id is None else self.static_members.get(instance_id)

    def is_static_member_fenced(self, instance_id: str | None, member_id: str) -> bool:
        current = self.static_member_id(instance_id)
        return current is not None and current != member_id

    @property
    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def num_awaiting_join(self) -> int:
        return sum(1 for m in self.members.values() if m.awaiting_join)

    def all_members_joined(self) -> bool:
        return not self.pending_members and all(m.awaiting_join for m in self.members.values())

    def can_rebalance(self) -> bool:
        return self.state in _VALID_PREVIOUS[GroupState.PREPARING_REBALANCE]

    def candidate_protocols(self) -> set[str]:
        members = list(self.members.values())
        if not members:
            return set()
        candidates = set(members[0].protocol_names())
        for m in members[1:]:
            candidates &= set(m.protocol_names())
        return candidates

    def supports_protocols(self, protocol_type: str, protocols: list[str]) -> bool:
        if not self.members:
            return bool(protocol_type) and bool(protocols)
        return protocol_type == self.protocol_type and bool(
            self.candidate_protocols() & set(protocols)
        )

    def select_protocol(self) -> str:
        """Each member votes for its preferred protocol among those all support; most votes win.

        Ties go to the protocol preferred earliest by the members in join order, which makes the
        choice deterministic.
        """
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for m in self.members.values():
            choice = m.vote(candidates)
            votes[choice] = votes.get(choice, 0) + 1
        return max(votes, key=lambda name: votes[name])  # max keeps the first of equals

    # --- changes --------------------------------------------------------------------------

    def transition(self, state: GroupState) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise RuntimeError(
                f"group {self.group_id} can't move from {self.state.value} to {state.value}"
            )
        self.state = state
        self.state_timestamp = now_ms()

    def add(self, member: Member) -> None:
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if not self.members:
            self.protocol_type = member.protocol_type
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.members[member.member_id] = member
        timer = self.pending_members.pop(member.member_id, None)
        if timer is not None:
            timer.cancel()

    def remove(self, member_id: str) -> Member | None:
        member = self.members.pop(member_id, None)
        if member is not None:
            if member.group_instance_id is not None:
                self.static_members.pop(member.group_instance_id, None)
            if member.timer is not None:
                member.timer.cancel()
                member.timer = None
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        timer = self.pending_members.pop(member_id, None)
        if timer is not None:
            timer.cancel()
        self.pending_sync.discard(member_id)
        return member

    def replace_static_member(self, instance_id: str, old_id: str, new_id: str) -> Member:
        """Give a rejoining static member a new member id; fence whoever used the old one."""
        member = self.members.pop(old_id)
        complete(member.join_future, JoinResult(ErrorCode.FENCED_INSTANCE_ID, old_id))
        complete(member.sync_future, SyncResult(ErrorCode.FENCED_INSTANCE_ID))
        member.join_future = member.sync_future = None
        member.member_id = new_id
        self.members[new_id] = member
        if self.leader_id == old_id:
            self.leader_id = new_id
        self.static_members[instance_id] = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        return member

    def maybe_elect_joined_leader(self) -> bool:
        """Make sure the leader is a member that rejoined (preferring one whose client is still
        there to receive the response); False if no member rejoined."""
        if self.leader_id is None:
            return False
        for joined in (Member.join_is_live.fget, Member.awaiting_join.fget):
            if joined(self.members[self.leader_id]):
                return True
            for member_id, m in self.members.items():
                if joined(m):
                    self.leader_id = member_id
                    return True
        return False

    def init_next_generation(self) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed = self.compute_subscribed_topics()
            self.transition(GroupState.COMPLETING_REBALANCE)
        else:
            self.protocol_name = None
            self.subscribed = self.compute_subscribed_topics()
            self.transition(GroupState.EMPTY)
        self.pending_sync.clear()

    def compute_subscribed_topics(self) -> set[str] | None:
        if not self.is_consumer_group or self.protocol_name is None:
            return None
        topics: set[str] = set()
        for m in self.members.values():
            found = subscribed_topics(m.metadata(self.protocol_name))
            if found is None:
                return None
            topics |= found
        return topics

    def is_subscribed_to(self, topic: str) -> bool:
        return self.subscribed is not None and topic in self.subscribed

    def current_member_metadata(self) -> list[tuple[str, str | None, bytes]]:
        """(member id, instance id, metadata of the selected protocol), for the leader."""
        return [
            (m.member_id, m.group_instance_id, m.metadata(self.protocol_name or ""))
            for m in self.members.values()
        ]

    def generate_member_id(self, client_id: str, instance_id: str | None) -> str:
        return f"{instance_id if instance_id is not None else client_id}-{uuid.uuid4()}"

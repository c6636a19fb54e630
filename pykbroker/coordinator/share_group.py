"""Share groups (KIP-932): membership through ShareGroupHeartbeat, with the assignment computed
by the coordinator.

A share group's members need no partition of their own: records are handed out one lock at a
time by the share-partition leaders (share_fetch.py), so Kafka's SimpleAssignor may give a
partition to many members. Here every member is assigned every partition of the topics it
subscribes to: the group epoch moves when membership, subscriptions or the topics' partitions
change, and a member gets its new assignment (and the group epoch as its member epoch) on its
next heartbeat, with no revocation step. A member that misses `group.share.session.timeout.ms`
of heartbeats is removed; whatever it held is released by the share-partition leaders.

Groups are in memory; a share group whose members all left stays (Empty) while the share
coordinator holds state for it, and is known again after a restart from that state.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from protocol.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    from pykbroker.broker import Broker

log = structlog.get_logger(__name__)

ASSIGNOR = "simple"
LEAVE_EPOCH = -1
LEFT = "the member left"


@dataclass(slots=True)
class ShareMember:
    member_id: str
    client_id: str
    client_host: str
    rack_id: str | None = None
    member_epoch: int = 0
    subscribed: list[str] = field(default_factory=list)
    assignment: dict[uuid.UUID, list[int]] = field(default_factory=dict)
    sent_assignment: dict[uuid.UUID, list[int]] | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class ShareGroup:
    group_id: str
    group_epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ShareMember] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)  # every topic its members subscribed to

    @property
    def state(self) -> str:
        return "Stable" if self.members else "Empty"

    def subscribed_topics(self) -> set[str]:
        return {t for m in self.members.values() for t in m.subscribed}


class ShareGroupCoordinator:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        config = broker.config
        self.loop = asyncio.get_running_loop()
        self.session_timeout_ms = config.get("group.share.session.timeout.ms")
        self.heartbeat_interval_ms = config.get("group.share.heartbeat.interval.ms")
        self.max_size = config.get("group.share.max.size")
        self.groups: dict[str, ShareGroup] = {}
        self.member_expired_listeners: list = []  # fn(group_id, member_id)

    def startup(self, known_groups: set[str]) -> None:
        for group_id in known_groups:
            self.groups.setdefault(group_id, ShareGroup(group_id))

    def shutdown(self) -> None:
        for group in self.groups.values():
            for member in group.members.values():
                if member.timer is not None:
                    member.timer.cancel()

    # --- heartbeat ----------------------------------------------------------------------------

    def heartbeat(
        self, group_id: str, member_id: str, member_epoch: int, rack_id: str | None,
        subscribed: list[str] | None, client_id: str, client_host: str,
    ) -> dict:  # fmt: skip
        if not group_id:
            raise KafkaError(ErrorCode.INVALID_GROUP_ID, "GroupId can't be empty.")
        if not member_id:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "MemberId can't be empty.")
        if member_epoch < LEAVE_EPOCH:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"MemberEpoch is {member_epoch}.")
        if member_epoch == 0 and not subscribed:
            raise KafkaError(
                ErrorCode.INVALID_REQUEST, "SubscribedTopicNames must be set in first request."
            )
        self._check_not_other_type(group_id)
        group = self.groups.get(group_id)
        if member_epoch == LEAVE_EPOCH:
            if group is not None and member_id in group.members:
                self._remove_member(group, member_id, LEFT)
            return self._response(group_id, member_id, LEAVE_EPOCH, None)
        if group is None:
            if member_epoch != 0:
                raise KafkaError(ErrorCode.UNKNOWN_MEMBER_ID, f"Member {member_id} is not in group {group_id}.")  # fmt: skip
            group = self.groups[group_id] = ShareGroup(group_id)
        member = group.members.get(member_id)
        if member is None:
            if member_epoch != 0:
                raise KafkaError(ErrorCode.UNKNOWN_MEMBER_ID, f"Member {member_id} is not in group {group_id}.")  # fmt: skip
            if len(group.members) >= self.max_size:
                raise KafkaError(ErrorCode.GROUP_MAX_SIZE_REACHED,
                                 f"The share group has reached its maximum capacity of {self.max_size} members.")  # fmt: skip
            member = group.members[member_id] = ShareMember(member_id, client_id, client_host)
            group.group_epoch += 1
        elif member_epoch > member.member_epoch:
            raise KafkaError(ErrorCode.FENCED_MEMBER_EPOCH,
                             f"The share group member has a greater member epoch ({member_epoch}) than the one known by the group coordinator ({member.member_epoch}).")  # fmt: skip
        if member_epoch == 0:
            member.sent_assignment = None  # a rejoin: send the assignment again
        if rack_id is not None:
            member.rack_id = rack_id
        if subscribed is not None and sorted(subscribed) != sorted(member.subscribed):
            member.subscribed = list(subscribed)
            group.topics.update(subscribed)
            group.group_epoch += 1
        self._assign(group)
        self._touch(group, member)
        assignment = None
        if member.sent_assignment != member.assignment:
            member.sent_assignment = dict(member.assignment)
            assignment = member.assignment
        return self._response(group_id, member_id, member.member_epoch, assignment)

    def _response(self, group_id: str, member_id: str, epoch: int, assignment) -> dict:
        return {
            "throttle_time_ms": 0, "error_code": 0, "error_message": None,
            "member_id": member_id, "member_epoch": epoch,
            "heartbeat_interval_ms": self._group_config(group_id, "share.heartbeat.interval.ms"),
            "assignment": None if assignment is None else {
                "topic_partitions": [
                    {"topic_id": tid, "partitions": parts} for tid, parts in assignment.items()
                ]
            },
        }  # fmt: skip

    def _assign(self, group: ShareGroup) -> None:
        """Every member gets every partition of its subscribed topics (simple assignor with
        one partition per many members); a change moves the group epoch."""
        metadata = self.broker.metadata
        changed = False
        for member in group.members.values():
            target: dict[uuid.UUID, list[int]] = {}
            for name in sorted(member.subscribed):
                info = metadata.topic(name)
                if info is not None and not info.internal:
                    target[info.topic_id] = list(range(len(info.partitions)))
            if target != member.assignment:
                member.assignment = target
                changed = True
        if changed:
            group.group_epoch += 1
        if group.assignment_epoch != group.group_epoch:
            group.assignment_epoch = group.group_epoch
        for member in group.members.values():
            member.member_epoch = group.assignment_epoch

    def _touch(self, group: ShareGroup, member: ShareMember) -> None:
        if member.timer is not None:
            member.timer.cancel()
        timeout_ms = self._group_config(group.group_id, "share.session.timeout.ms")
        member.timer = self.loop.call_later(
            timeout_ms / 1000, self._expire, group.group_id, member.member_id
        )

    def _group_config(self, group_id: str, name: str) -> int:
        manager = self.broker.share_partitions
        if manager is None:
            return self.session_timeout_ms if "session" in name else self.heartbeat_interval_ms
        return int(manager.group_config(group_id, name))

    def _expire(self, group_id: str, member_id: str) -> None:
        group = self.groups.get(group_id)
        if group is not None and member_id in group.members:
            self._remove_member(group, member_id, "its session timed out")

    def _remove_member(self, group: ShareGroup, member_id: str, why: str) -> None:
        member = group.members.pop(member_id)
        if member.timer is not None:
            member.timer.cancel()
        group.group_epoch += 1
        self._assign(group)
        log.info("share_member_removed", group=group.group_id, member=member_id, reason=why)
        if why != LEFT:  # one that leaves still closes its share session, with its last acks
            for listener in self.member_expired_listeners:
                listener(group.group_id, member_id)

    def _check_not_other_type(self, group_id: str) -> None:
        classic = self.broker.group_coordinator
        groups = getattr(classic, "groups", {}) if classic is not None else {}
        if group_id in groups:
            raise KafkaError(
                ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a share group."
            )

    # --- reading ------------------------------------------------------------------------------

    def is_member(self, group_id: str, member_id: str) -> bool:
        group = self.groups.get(group_id)
        return group is not None and member_id in group.members

    def describe(self, group_id: str) -> dict:
        group = self.groups.get(group_id)
        if group is None:
            return {"error_code": ErrorCode.GROUP_ID_NOT_FOUND, "group_id": group_id,
                    "error_message": f"Group {group_id} not found.", "group_state": "Dead",
                    "group_epoch": -1, "assignment_epoch": -1, "assignor_name": "",
                    "members": []}  # fmt: skip
        names = {t.topic_id: t.name for t in self.broker.metadata.topics.values()}
        return {
            "error_code": 0, "error_message": None, "group_id": group_id,
            "group_state": group.state, "group_epoch": group.group_epoch,
            "assignment_epoch": group.assignment_epoch, "assignor_name": ASSIGNOR,
            "members": [{
                "member_id": m.member_id, "rack_id": m.rack_id, "member_epoch": m.member_epoch,
                "client_id": m.client_id, "client_host": m.client_host,
                "subscribed_topic_names": sorted(m.subscribed),
                "assignment": {"topic_partitions": [
                    {"topic_id": tid, "topic_name": names.get(tid, ""), "partitions": parts}
                    for tid, parts in m.assignment.items()
                ]},
            } for m in group.members.values()],
        }  # fmt: skip

    def create_empty(self, group_id: str) -> ShareGroup:
        self._check_not_other_type(group_id)
        return self.groups.setdefault(group_id, ShareGroup(group_id))

    def list(self) -> list[ShareGroup]:
        return list(self.groups.values())

    def delete(self, group_id: str) -> ErrorCode:
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.GROUP_ID_NOT_FOUND
        if group.members:
            return ErrorCode.NON_EMPTY_GROUP
        del self.groups[group_id]
        return ErrorCode.NONE

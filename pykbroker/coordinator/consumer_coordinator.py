"""The GroupCoordinator's I/O around KIP-848 consumer groups (consumer_group.py is the state
machine): ConsumerGroupHeartbeat, ConsumerGroupDescribe, session/rebalance timers, appends to
`__consumer_offsets`, replay, and the online conversion between classic and consumer groups.

A mixin of GroupCoordinator: one `groups` map holds both kinds, as Kafka's does.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

import structlog

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError

from .classic_in_consumer import (
    classic_heartbeat,
    classic_join,
    classic_sync,
    convert_consumer_group,
)
from .consumer_group import (
    ConsumerGroup,
    ConsumerMember,
    GroupConfig,
    HeartbeatRequest,
    HeartbeatResult,
    MemberState,
    Records,
    TopicMeta,
)
from .group import Group, GroupState, JoinResult, SyncResult, complete, now_ms

if TYPE_CHECKING:
    from .group_coordinator import GroupCoordinator

log = structlog.get_logger(__name__)


def group_config(config) -> GroupConfig:
    return GroupConfig(
        heartbeat_interval_ms=config.get("group.consumer.heartbeat.interval.ms"),
        session_timeout_ms=config.get("group.consumer.session.timeout.ms"),
        assignors=tuple(config.get("group.consumer.assignors")),
        max_size=config.get("group.consumer.max.size"),
        migration_policy=config.get("group.consumer.migration.policy"),
    )


class ConsumerGroupsMixin:
    """Methods GroupCoordinator gains for consumer-protocol groups."""

    def _topics_view(self: GroupCoordinator) -> dict[str, TopicMeta]:
        return {
            name: TopicMeta(name, info.topic_id, len(info.partitions))
            for name, info in self.broker.metadata.topics.items()
        }

    # --- ConsumerGroupHeartbeat -----------------------------------------------------------

    def consumer_group_heartbeat(
        self: GroupCoordinator, req: HeartbeatRequest
    ) -> HeartbeatResult | Awaitable[HeartbeatResult]:
        if not req.group_id:
            return HeartbeatResult(ErrorCode.INVALID_REQUEST, "GroupId can't be empty.")
        error = self._validate(req.group_id, ApiKey.CONSUMER_GROUP_HEARTBEAT)
        if error is not None:
            return HeartbeatResult(error)
        probe = ConsumerGroup(req.group_id, self.consumer_config)
        invalid = probe.validate_request(req)
        if invalid is not None:
            return HeartbeatResult(*invalid)
        group = self.groups.get(req.group_id)
        records: Records = []
        created = False
        if isinstance(group, Group) and not group.is_(GroupState.DEAD):
            if req.member_epoch != 0:
                return HeartbeatResult(
                    ErrorCode.GROUP_ID_NOT_FOUND, f"Group {req.group_id} is not a consumer group."
                )
            converted = self._upgrade_classic_group(group, records)
            if converted is None:
                return HeartbeatResult(
                    ErrorCode.GROUP_ID_NOT_FOUND, f"Group {req.group_id} is not a consumer group."
                )
            group = converted
        elif group is None or (isinstance(group, Group) and group.is_(GroupState.DEAD)):
            if req.member_epoch != 0:
                return HeartbeatResult(
                    ErrorCode.GROUP_ID_NOT_FOUND, f"Consumer group {req.group_id} not found."
                )
            group = ConsumerGroup(req.group_id, self.consumer_config)
            created = True
        now = now_ms()
        result = group.heartbeat(req, self._topics_view(), now)
        if result.error != ErrorCode.NONE:
            if created:
                return result
        elif created:
            self.groups[req.group_id] = group
        records += result.records
        result.records = []
        if result.error == ErrorCode.NONE and req.member_epoch in (-1, -2):
            log.info(
                "consumer_member_left", group=group.group_id, member_id=req.member_id,
                epoch=req.member_epoch,
            )  # fmt: skip
        if result.error == ErrorCode.NONE:
            self._after_consumer_change(group, records)
        self._schedule_consumer_timer(group)
        return self._write_then(group, records, result)

    def _write_then(self: GroupCoordinator, group, records: Records, result):
        """Append the records; the result once they are replicated (or an error result)."""
        if not records:
            return result
        try:
            pending = self.store.append_records(group.group_id, records)
        except KafkaError as e:
            log.warning("consumer_group_store_failed", group=group.group_id, error=e.code.name)
            return _errored(result, _coordinator_error(e.code))
        if pending is None:
            return result

        async def wait():
            error = await pending
            return (
                result if error == ErrorCode.NONE else _errored(result, _coordinator_error(error))
            )

        return wait()

    def _append_background(self: GroupCoordinator, group_id: str, records: Records) -> None:
        if not records:
            return
        try:
            pending = self.store.append_records(group_id, records)
        except KafkaError as e:
            log.warning("consumer_group_store_failed", group=group_id, error=e.code.name)
            return
        if pending is not None:
            self.loop.create_task(_log_failure(group_id, pending))

    def _after_consumer_change(self: GroupCoordinator, group: ConsumerGroup, records: Records):
        """Downgrade to a classic group when the last consumer-protocol member has left."""
        if (
            group.members
            and not group.has_consumer_members()
            and self.consumer_config.migration_policy in ("bidirectional", "downgrade")
        ):
            self._downgrade_consumer_group(group, records)

    # --- timers -------------------------------------------------------------------------------

    def _schedule_consumer_timer(self: GroupCoordinator, group) -> None:
        handle = self._cg_timers.pop(group.group_id, None)
        if handle is not None:
            handle.cancel()
        if not isinstance(group, ConsumerGroup) or self.groups.get(group.group_id) is not group:
            return
        deadline = group.next_deadline()
        if deadline is None:
            return
        delay = max(deadline - now_ms(), 0) / 1000
        self._cg_timers[group.group_id] = self.loop.call_later(
            delay + 0.001, self._on_consumer_timer, group
        )

    def _on_consumer_timer(self: GroupCoordinator, group: ConsumerGroup) -> None:
        self._cg_timers.pop(group.group_id, None)
        if self.groups.get(group.group_id) is not group:
            return
        gone, records = group.expire(now_ms())
        for member_id, reason in gone:
            log.info("consumer_member_fenced", group=group.group_id, member_id=member_id,
                     reason=reason)  # fmt: skip
            self._classic_member_gone(group, member_id)
        if gone:
            self._after_consumer_change(group, records)
        self._append_background(group.group_id, records)
        self._schedule_consumer_timer(group)

    def _cancel_consumer_timer(self: GroupCoordinator, group_id: str) -> None:
        handle = self._cg_timers.pop(group_id, None)
        if handle is not None:
            handle.cancel()

    def _classic_member_gone(self, group: ConsumerGroup, member_id: str) -> None:
        """Hook for classic members' waiting requests (see classic_in_consumer.py)."""

    def _unload_classic_members(self, group: ConsumerGroup) -> None:
        """Hook: answer classic members' waiting requests with NOT_COORDINATOR."""

    # --- ConsumerGroupDescribe ------------------------------------------------------------------

    def consumer_group_describe(self: GroupCoordinator, group_id: str):
        """(error, message, group or None)."""
        error = self._validate(group_id, ApiKey.CONSUMER_GROUP_DESCRIBE)
        if error is not None:
            return error, None, None
        group = self.groups.get(group_id)
        if group is None or (isinstance(group, Group) and group.is_(GroupState.DEAD)):
            return ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} not found.", None
        if not isinstance(group, ConsumerGroup):
            return ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a consumer group.", None
        return ErrorCode.NONE, None, group

    # --- offsets ----------------------------------------------------------------------------------

    def validate_consumer_offset_commit(
        self, group: ConsumerGroup, member_id: str, instance_id: str | None, epoch: int,
        api_version: int, transactional: bool = False,
    ) -> ErrorCode | None:  # fmt: skip
        """Kafka's ConsumerGroup.validateOffsetCommit."""
        if epoch < 0 and not group.members:
            return None  # the admin client, or a consumer without group management
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if member.is_classic:
            return None if epoch == member.member_epoch else ErrorCode.ILLEGAL_GENERATION
        if not transactional and api_version < 9:
            return ErrorCode.UNSUPPORTED_VERSION
        return _epoch_error(epoch, member.member_epoch)

    def validate_consumer_offset_fetch(
        self, group: ConsumerGroup, member_id: str | None, epoch: int
    ) -> ErrorCode | None:
        if epoch < 0 and member_id is None:
            return None
        member = group.members.get(member_id or "")
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if member.is_classic:
            return None
        return _epoch_error(epoch, member.member_epoch)

    # --- replay -----------------------------------------------------------------------------------

    def _load_consumer_groups(self: GroupCoordinator, loaded: dict, offsets_by_group: dict) -> None:
        now = now_ms()
        for group_id, data in loaded.items():
            if "epoch" not in data:
                continue  # members without group metadata: a half-deleted group
            group = ConsumerGroup(group_id, self.consumer_config)
            group.group_epoch, group.metadata_hash = data["epoch"]
            group.assignment_epoch = data.get("target_epoch", 0)
            for member_id, rec in data.get("members", {}).items():
                m = ConsumerMember(
                    member_id, rec.instance_id, rec.rack_id, rec.client_id, rec.client_host,
                    rec.rebalance_timeout_ms, list(rec.subscribed_topic_names),
                    rec.subscribed_topic_regex, rec.server_assignor, rec.classic,
                )  # fmt: skip
                current = data.get("current", {}).get(member_id)
                if current is not None:
                    m.member_epoch, m.previous_member_epoch, state, m.assigned, m.pending_revocation = current  # fmt: skip
                    m.state = MemberState(state) if state in (0, 1, 2) else MemberState.UNKNOWN
                # Members of a loaded group get a fresh session, as Kafka's do after a load.
                m.session_deadline = now + m.session_timeout(self.consumer_config)
                group.members[member_id] = m
                if m.instance_id is not None:
                    group.static_members[m.instance_id] = member_id
            group.target = {
                mid: a for mid, a in data.get("targets", {}).items() if mid in group.members
            }
            group.rebuild_partition_epochs()
            group.offsets = offsets_by_group.get(group_id, {})
            group.update_state(now)
            self.groups[group_id] = group
            self._schedule_consumer_timer(group)

    # --- conversions (KIP-848 online upgrade/downgrade) --------------------------------------------

    def _upgrade_classic_group(self: GroupCoordinator, classic: Group, records: Records):
        """A consumer-protocol member joins a classic group: the group becomes a consumer group
        if it is empty, or if the migration policy allows and its members can be carried over."""
        from .classic_in_consumer import convert_classic_group

        if not classic.members and not classic.pending_members:
            group = ConsumerGroup(classic.group_id, self.consumer_config)
            group.offsets = classic.offsets
            self._replace_group(classic, group, records)
            return group
        if self.consumer_config.migration_policy not in ("bidirectional", "upgrade"):
            return None
        if classic.protocol_type != "consumer":
            return None
        if len(classic.members) >= self.consumer_config.max_size:
            return None
        group = convert_classic_group(classic, self.consumer_config, self._topics_view())
        if group is None:
            return None
        # Mid-rebalance, as in Kafka: waiting joins and syncs end with REBALANCE_IN_PROGRESS
        # and those members join the consumer group with what they had.
        for m in classic.members.values():
            complete(m.join_future, JoinResult(ErrorCode.REBALANCE_IN_PROGRESS, m.member_id))
            complete(m.sync_future, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
            m.join_future = m.sync_future = None
        self._replace_group(classic, group, records)
        records += group.snapshot_records()
        for member in group.members.values():
            self._adopt_classic_member(group, member)
        log.info("group_upgraded", group=group.group_id, members=len(group.members))
        return group

    def _replace_group(self: GroupCoordinator, old: Group, new: ConsumerGroup, records: Records):
        from .schema import group_metadata_key

        self._cancel_timers(old)
        for member in old.members.values():
            if member.timer is not None:
                member.timer.cancel()
                member.timer = None
        old.state = GroupState.DEAD
        records.append((group_metadata_key(old.group_id), None))
        self.groups[new.group_id] = new

    def _adopt_classic_member(self, group: ConsumerGroup, member: ConsumerMember) -> None:
        """A classic member carried into a consumer group: its session goes on."""
        member.session_deadline = now_ms() + member.session_timeout(self.consumer_config)

    def _downgrade_consumer_group(
        self: GroupCoordinator, group: ConsumerGroup, records: Records
    ) -> None:
        """Only classic members are left: back to a classic group, which rebalances."""
        classic = convert_consumer_group(group, self._topics_view())
        self._cancel_consumer_timer(group.group_id)
        records += group.tombstones()
        self.groups[group.group_id] = classic
        log.info("group_downgraded", group=group.group_id, members=len(classic.members))
        for member in classic.members.values():
            self._schedule_heartbeat(classic, member, member.session_timeout_ms)
        assignment = {m.member_id: m.assignment for m in classic.members.values()}
        self._store_group(classic, assignment, lambda error: None)
        self._prepare_rebalance(classic, "the last consumer-protocol member left")

    def _empty_consumer_to_classic(self: GroupCoordinator, group: ConsumerGroup) -> Group:
        """A classic member joins an empty consumer group: it becomes a classic group."""
        self._cancel_consumer_timer(group.group_id)
        self._append_background(group.group_id, group.tombstones())
        classic = Group(group.group_id)
        classic.offsets = group.offsets
        self.groups[group.group_id] = classic
        return classic

    # --- classic members of consumer groups -------------------------------------------------------

    def classic_join_consumer_group(self: GroupCoordinator, group: ConsumerGroup, req, fut):
        result, records = classic_join(group, req, self._topics_view(), now_ms())
        if result.error == ErrorCode.NONE:
            self._after_consumer_change(group, records)
        self._schedule_consumer_timer(group)
        pending = self._write_then(group, records, result)
        if not isinstance(pending, Awaitable):
            fut.set_result(pending)
            return fut

        async def finish():
            r = await pending
            if not fut.done():
                fut.set_result(
                    r if isinstance(r, JoinResult) else JoinResult(r.error, req.member_id)
                )

        self.loop.create_task(finish())
        return fut

    def classic_sync_consumer_group(
        self: GroupCoordinator, group: ConsumerGroup, member_id, instance_id, generation,
        protocol_type, protocol_name,
    ) -> SyncResult:  # fmt: skip
        result = classic_sync(
            group, member_id, instance_id, generation, protocol_type, protocol_name,
            self._topics_view(), now_ms(),
        )  # fmt: skip
        self._schedule_consumer_timer(group)
        return result

    def classic_heartbeat_consumer_group(
        self: GroupCoordinator, group: ConsumerGroup, member_id, instance_id, generation
    ) -> ErrorCode:
        error, records = classic_heartbeat(
            group, member_id, instance_id, generation, self._topics_view(), now_ms()
        )
        self._append_background(group.group_id, records)
        self._schedule_consumer_timer(group)
        return error

    def classic_leave_consumer_group(
        self: GroupCoordinator, group: ConsumerGroup, members: list
    ) -> list[ErrorCode]:
        results = []
        records: Records = []
        for member_id, instance_id, reason in members:
            if not member_id and instance_id is not None:
                member_id = group.static_members.get(instance_id, "")
            member = group.members.get(member_id)
            if member is None or (instance_id is not None and member.instance_id != instance_id):
                results.append(
                    ErrorCode.FENCED_INSTANCE_ID
                    if member is not None
                    else ErrorCode.UNKNOWN_MEMBER_ID
                )
                continue
            log.info("member_left", group=group.group_id, member_id=member_id, reason=reason)
            records += group.fence_member(member_id, now_ms())
            results.append(ErrorCode.NONE)
        self._after_consumer_change(group, records)
        self._append_background(group.group_id, records)
        self._schedule_consumer_timer(group)
        return results


def _epoch_error(received: int, expected: int) -> ErrorCode | None:
    if received > expected:
        return ErrorCode.FENCED_MEMBER_EPOCH
    if received < expected:
        return ErrorCode.STALE_MEMBER_EPOCH
    return None


def _coordinator_error(code: int) -> int:
    if code in (
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.KAFKA_STORAGE_ERROR,
        ErrorCode.NOT_COORDINATOR,
    ):
        return ErrorCode.NOT_COORDINATOR
    return ErrorCode.COORDINATOR_NOT_AVAILABLE


def _errored(result: HeartbeatResult, code: int) -> HeartbeatResult:
    return HeartbeatResult(code, None)


async def _log_failure(group_id: str, pending: Awaitable[int]) -> None:
    error = await pending
    if error != ErrorCode.NONE:
        log.warning("consumer_group_store_failed", group=group_id, error=ErrorCode(error).name)


__all__ = ["ConsumerGroupsMixin", "group_config"]

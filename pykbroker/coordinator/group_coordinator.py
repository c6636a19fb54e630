"""The group coordinator: Kafka's classic group membership protocol and committed offsets.

One GroupCoordinator per broker, owned by the broker's event loop: every request handler and
timer callback runs on that loop and changes group state synchronously, so a group is a
single-owner state machine with no locks and no interleaving inside a transition. Waiting
requests (JoinGroup, SyncGroup) hold futures that the state machine resolves.

The protocol follows Kafka's GroupCoordinator: MEMBER_ID_REQUIRED on a first join (v4+),
group.initial.rebalance.delay.ms for a new group, the rebalance timeout for members that don't
rejoin, session timeouts via heartbeats, the pending-sync timeout, static membership with
fencing, and Kafka's error codes for each case.

State is persisted in `__consumer_offsets` (see OffsetsLog): group metadata when a generation
is assigned or the group empties, and every offset commit; both are replayed at start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import structlog

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError

from .consumer_coordinator import ConsumerGroupsMixin, group_config
from .consumer_group import ConsumerGroup
from .group import (
    Group,
    GroupState,
    JoinResult,
    Member,
    SyncResult,
    complete,
    now_ms,
)
from .offsets_log import GROUP_METADATA_TOPIC, OffsetsLog
from .schema import (
    GroupRecord,
    MemberRecord,
    OffsetAndMetadata,
    SchemaError,
    parse_key,
    parse_offset_value,
)

if TYPE_CHECKING:
    from pykbroker.broker import Broker

log = structlog.get_logger(__name__)
T = TypeVar("T")

NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000
UNKNOWN_MEMBER_ID = ""

EMPTY = GroupState.EMPTY
PREPARING = GroupState.PREPARING_REBALANCE
COMPLETING = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE
DEAD = GroupState.DEAD

# Kafka's GroupMetadataManager maps append failures to coordinator errors.
_STORE_GROUP_ERRORS = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.REQUEST_TIMED_OUT: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_LEADER_OR_FOLLOWER: ErrorCode.NOT_COORDINATOR,
    ErrorCode.KAFKA_STORAGE_ERROR: ErrorCode.NOT_COORDINATOR,
    ErrorCode.COORDINATOR_NOT_AVAILABLE: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_COORDINATOR: ErrorCode.NOT_COORDINATOR,
}
_TOO_LARGE = (
    ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE, ErrorCode.INVALID_FETCH_SIZE,
)  # fmt: skip


def _txn_store_error(code: int) -> int:
    """TxnOffsetCommit passes producer errors (INVALID_PRODUCER_EPOCH...) through."""
    if code == ErrorCode.NONE:
        return code
    if code in _STORE_GROUP_ERRORS:
        return _STORE_GROUP_ERRORS[code]
    if code in _TOO_LARGE:
        return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
    return code


def _store_error(code: int, commit: bool) -> ErrorCode:
    if code in _STORE_GROUP_ERRORS:
        return _STORE_GROUP_ERRORS[code]
    if commit and code in _TOO_LARGE:
        return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
    return ErrorCode.UNKNOWN_SERVER_ERROR


def _after_write(pending: Awaitable[int] | None, finish: Callable[[int], T]) -> T | Awaitable[T]:
    """finish(NONE) now when the write needed no wait (acks reached), else an awaitable that
    runs finish(error) once the write is replicated or has failed."""
    if pending is None:
        return finish(ErrorCode.NONE)

    async def wait() -> T:
        return finish(await pending)

    return wait()


@dataclass(slots=True)
class JoinRequest:
    group_id: str
    member_id: str
    group_instance_id: str | None
    require_known_member_id: bool
    supports_skip_assignment: bool
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    reason: str | None = None


class GroupCoordinator(ConsumerGroupsMixin):
    def __init__(self, broker: Broker):
        self.broker = broker
        config = broker.config
        self.loop = asyncio.get_running_loop()
        self.groups: dict[str, Group] = {}
        self.min_session_timeout_ms = config.get("group.min.session.timeout.ms")
        self.max_session_timeout_ms = config.get("group.max.session.timeout.ms")
        self.initial_rebalance_delay_ms = config.get("group.initial.rebalance.delay.ms")
        self.max_group_size = config.get("group.max.size")
        self.max_metadata_bytes = config.get("offset.metadata.max.bytes")
        self.retention_ms = config.get("offsets.retention.minutes") * 60 * 1000
        self.retention_check_interval_ms = config.get("offsets.retention.check.interval.ms")
        self.store = OffsetsLog(broker, config.get("offsets.commit.timeout.ms"))
        # TxnOffsetCommit offsets waiting for their transaction's marker:
        # producer id -> group -> (topic, partition) -> offset
        self.pending_txn_offsets: dict[
            int, dict[str, dict[tuple[str, int], OffsetAndMetadata]]
        ] = {}
        self.active = False
        self._expiry_task: asyncio.Task | None = None
        self.consumer_config = group_config(config)
        self._cg_timers: dict[str, asyncio.TimerHandle] = {}  # consumer group -> next deadline

    # --- lifecycle ----------------------------------------------------------------------------

    def startup(self) -> None:
        """Replay __consumer_offsets (if it exists yet) and start the offset expiry task.

        In a cluster, leadership of __consumer_offsets partitions moves: the replica manager
        tells us, and we load (or unload) the groups of that partition, as Kafka's
        onElection/onResignation do.
        """
        self._load(None)
        self.active = True
        self.broker.replica_manager.add_leadership_listener(self._on_leadership_change)
        self._expiry_task = self.loop.create_task(self._expiry_loop())

    def _load(self, partitions: list[int] | None) -> None:
        loaded = self.store.load(partitions)
        consumer = self.store.consumer_groups
        for group_id, (record, offsets) in loaded.items():
            if group_id in self.groups or (
                record is None and "epoch" in consumer.get(group_id, {})
            ):
                continue  # a consumer-protocol group: loaded below
            self._load_group(group_id, record, offsets)
        self._load_pending_txn_offsets(self.store.pending_txn)
        consumer = {g: d for g, d in consumer.items() if g not in self.groups}
        self._load_consumer_groups(consumer, {g: o for g, (_, o) in loaded.items()})
        if loaded or consumer:
            log.info(
                "groups_loaded", partitions=partitions if partitions is not None else "all",
                groups=len(loaded), offsets=sum(len(o) for _, o in loaded.values()),
            )  # fmt: skip

    def _on_leadership_change(self, topic: str, index: int, is_leader: bool, epoch: int) -> None:
        if topic != GROUP_METADATA_TOPIC or not self.active:
            return
        if is_leader:
            self._load([index])
            return
        doomed = [g for gid, g in self.groups.items() if self.store.partition_for(gid) == index]
        for group in doomed:
            self._unload_group(group)
        for groups in self.pending_txn_offsets.values():
            for gid in [g for g in groups if self.store.partition_for(g) == index]:
                del groups[gid]
        if doomed:
            log.info("groups_unloaded", partition=index, groups=len(doomed))

    def _unload_group(self, group: Group | ConsumerGroup) -> None:
        """Stop coordinating a group (shutdown, or another broker leads its partition now)."""
        if isinstance(group, ConsumerGroup):
            self._cancel_consumer_timer(group.group_id)
            self._unload_classic_members(group)
            if self.groups.get(group.group_id) is group:
                del self.groups[group.group_id]
            return
        self._cancel_timers(group)
        for member in group.members.values():
            complete(member.join_future, JoinResult(ErrorCode.NOT_COORDINATOR, member.member_id))
            complete(member.sync_future, SyncResult(ErrorCode.NOT_COORDINATOR))
            if member.timer is not None:
                member.timer.cancel()
                member.timer = None
        group.state = DEAD
        if self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]

    def shutdown(self) -> None:
        self.active = False
        if self._expiry_task is not None:
            self._expiry_task.cancel()
        for group in list(self.groups.values()):
            self._unload_group(group)

    def _load_group(
        self, group_id: str, record: GroupRecord | None, offsets: dict[tuple[str, int], OffsetAndMetadata]
    ) -> None:  # fmt: skip
        group = Group(group_id)
        group.offsets = offsets
        if record is not None:
            group.generation_id = record.generation
            group.protocol_type = record.protocol_type or None
            group.protocol_name = record.protocol
            group.state_timestamp = record.current_state_timestamp
            for m in record.members:
                group.add(
                    Member(
                        m.member_id, m.group_instance_id, m.client_id, m.client_host,
                        m.rebalance_timeout_ms, m.session_timeout_ms, record.protocol_type,
                        [(record.protocol or "", m.subscription)], m.assignment,
                    )
                )  # fmt: skip
            group.leader_id = record.leader if record.leader in group.members else group.leader_id
            group.protocol_type = record.protocol_type or None
            if group.members:
                group.state = STABLE
            group.subscribed = group.compute_subscribed_topics()
        self.groups[group_id] = group
        # Members of a loaded generation keep their assignment; expire those that don't return.
        for member in group.members.values():
            self._schedule_heartbeat(group, member, member.session_timeout_ms)

    # --- validation ---------------------------------------------------------------------------

    def _validate(self, group_id: str | None, api: int) -> ErrorCode | None:
        """Kafka's validateGroupStatus: a valid group id, and this broker coordinates it."""
        allow_empty = api in (
            ApiKey.OFFSET_COMMIT, ApiKey.OFFSET_FETCH, ApiKey.DESCRIBE_GROUPS, ApiKey.DELETE_GROUPS,
        )  # fmt: skip
        if group_id is None or (not group_id and not allow_empty):
            return ErrorCode.INVALID_GROUP_ID
        if not self.active:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        return self.store.coordinator_error(group_id)

    def _validate_member(
        self, group: Group, member_id: str, instance_id: str | None
    ) -> ErrorCode | None:
        """A static member must map to member_id (else FENCED_INSTANCE_ID); member_id must exist."""
        if instance_id is not None:
            current = group.static_member_id(instance_id)
            if current is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if current != member_id:
                log.info(
                    "static_member_fenced", group=group.group_id, instance_id=instance_id,
                    member_id=member_id, current_member_id=current,
                )  # fmt: skip
                return ErrorCode.FENCED_INSTANCE_ID
            return None
        if not group.has(member_id):
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    def _accept_joining_member(self, group: Group, member_id: str) -> bool:
        if group.state in (EMPTY, DEAD):
            return True
        if group.is_(PREPARING):
            member = group.members.get(member_id)
            return (
                member is not None and member.awaiting_join
            ) or group.num_awaiting_join() < self.max_group_size
        return group.has(member_id) or len(group.members) < self.max_group_size

    # --- JoinGroup ----------------------------------------------------------------------------

    def join_group(self, req: JoinRequest) -> asyncio.Future:
        """Returns a future of the JoinResult; it is resolved when the rebalance completes."""
        fut = self.loop.create_future()
        error = self._validate(req.group_id, ApiKey.JOIN_GROUP)
        if error is None and not (
            self.min_session_timeout_ms <= req.session_timeout_ms <= self.max_session_timeout_ms
        ):
            error = ErrorCode.INVALID_SESSION_TIMEOUT
        if error is not None:
            fut.set_result(JoinResult(error, req.member_id))
            return fut
        is_unknown = req.member_id == UNKNOWN_MEMBER_ID
        group = self.groups.get(req.group_id)
        if isinstance(group, ConsumerGroup):
            if group.members or group.pending_members:
                return self.classic_join_consumer_group(group, req, fut)
            group = self._empty_consumer_to_classic(group)
        if group is None:
            if not is_unknown:
                fut.set_result(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, req.member_id))
                return fut
            group = self.groups[req.group_id] = Group(req.group_id)
        if not self._accept_joining_member(group, req.member_id):
            group.remove(req.member_id)
            fut.set_result(JoinResult(ErrorCode.GROUP_MAX_SIZE_REACHED, UNKNOWN_MEMBER_ID))
        elif is_unknown:
            self._new_member_join(group, req, fut)
        else:
            self._current_member_join(group, req, fut)
        if group.is_(PREPARING):
            self._try_complete_join(group)
        self._forget_if_unused(group)
        return fut

    def _new_member_join(self, group: Group, req: JoinRequest, fut: asyncio.Future) -> None:
        names = [name for name, _ in req.protocols]
        if group.is_(DEAD):
            fut.set_result(JoinResult(ErrorCode.COORDINATOR_NOT_AVAILABLE, UNKNOWN_MEMBER_ID))
            return
        if not group.supports_protocols(req.protocol_type, names):
            fut.set_result(JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, UNKNOWN_MEMBER_ID))
            return
        new_id = group.generate_member_id(req.client_id, req.group_instance_id)
        if req.group_instance_id is not None:
            old_id = group.static_member_id(req.group_instance_id)
            if old_id is not None:
                log.info(
                    "static_member_rejoined", group=group.group_id, state=group.state.value,
                    instance_id=req.group_instance_id, old_member_id=old_id, member_id=new_id,
                )  # fmt: skip
                self._update_static_member_and_rebalance(group, old_id, new_id, req, fut)
            else:
                self._add_member_and_rebalance(group, new_id, req, fut)
        elif req.require_known_member_id:
            # Hand out the id and wait for the member to come back with it (KIP-394).
            group.pending_members[new_id] = self.loop.call_later(
                req.session_timeout_ms / 1000, self._expire_pending_member, group, new_id
            )
            fut.set_result(JoinResult(ErrorCode.MEMBER_ID_REQUIRED, new_id))
        else:
            self._add_member_and_rebalance(group, new_id, req, fut)

    def _current_member_join(self, group: Group, req: JoinRequest, fut: asyncio.Future) -> None:
        member_id = req.member_id
        names = [name for name, _ in req.protocols]
        if group.is_(DEAD):
            fut.set_result(JoinResult(ErrorCode.COORDINATOR_NOT_AVAILABLE, member_id))
            return
        if not group.supports_protocols(req.protocol_type, names):
            fut.set_result(JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id))
            return
        if member_id in group.pending_members:
            if req.group_instance_id is not None:  # pending members are never static
                fut.set_result(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id))
                return
            self._add_member_and_rebalance(group, member_id, req, fut)
            return
        error = self._validate_member(group, member_id, req.group_instance_id)
        if error is not None:
            fut.set_result(JoinResult(error, member_id))
            return
        member = group.members[member_id]
        state = group.state
        if state is PREPARING:
            self._update_member_and_rebalance(group, member, req, fut, "rejoin during rebalance")
        elif state is COMPLETING:
            if member.matches(req.protocols):
                # A retry of a join whose response was lost: answer with this generation again.
                fut.set_result(self._join_result(group, member, with_members=True))
            else:
                self._update_member_and_rebalance(group, member, req, fut, "metadata changed")
        elif state is STABLE:
            if group.is_leader(member_id):
                # The leader rejoins to have assignment-affecting changes (topic metadata) seen.
                self._update_member_and_rebalance(group, member, req, fut, "leader rejoined")
            elif not member.matches(req.protocols):
                self._update_member_and_rebalance(group, member, req, fut, "metadata changed")
            else:
                fut.set_result(self._join_result(group, member, with_members=False))
        else:  # Empty: the member's generation is gone; it resets and rejoins
            fut.set_result(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id))

    def _join_result(self, group: Group, member: Member, with_members: bool) -> JoinResult:
        leader = group.is_leader(member.member_id)
        return JoinResult(
            ErrorCode.NONE, member.member_id, group.generation_id, group.protocol_type,
            group.protocol_name, group.leader_id or "",
            group.current_member_metadata() if with_members and leader else [],
        )  # fmt: skip

    def _add_member_and_rebalance(
        self, group: Group, member_id: str, req: JoinRequest, fut: asyncio.Future
    ) -> None:
        member = Member(
            member_id, req.group_instance_id, req.client_id, req.client_host,
            req.rebalance_timeout_ms, req.session_timeout_ms, req.protocol_type,
            list(req.protocols), is_new=True,
        )  # fmt: skip
        if group.is_(PREPARING) and group.generation_id == 0:
            group.new_member_added = True
        group.add(member)
        member.join_future = fut
        # A new member can't heartbeat until its join completes; bound the wait instead.
        self._schedule_heartbeat(group, member, NEW_MEMBER_JOIN_TIMEOUT_MS)
        self._maybe_prepare_rebalance(group, f"new member {member_id} joined")

    def _update_member(self, member: Member, req: JoinRequest, fut: asyncio.Future | None) -> None:
        member.protocols = list(req.protocols)
        member.rebalance_timeout_ms = req.rebalance_timeout_ms
        member.session_timeout_ms = req.session_timeout_ms
        if member.join_future is not fut:
            # A retried join replaces one whose client gave up; don't leave that one hanging.
            complete(
                member.join_future, JoinResult(ErrorCode.REBALANCE_IN_PROGRESS, member.member_id)
            )
            member.join_future = fut

    def _update_member_and_rebalance(
        self, group: Group, member: Member, req: JoinRequest, fut: asyncio.Future, reason: str
    ) -> None:
        self._update_member(member, req, fut)
        self._maybe_prepare_rebalance(group, reason)

    def _update_static_member_and_rebalance(
        self, group: Group, old_id: str, new_id: str, req: JoinRequest, fut: asyncio.Future
    ) -> None:
        current_leader = group.leader_id
        member = group.replace_static_member(req.group_instance_id, old_id, new_id)
        self._schedule_heartbeat(group, member, member.session_timeout_ms)
        old = (member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms)
        self._update_member(member, req, fut)
        if group.is_(STABLE):
            if group.protocol_name != group.select_protocol():
                self._maybe_prepare_rebalance(group, "static member changed the group protocol")
                return
            # The group's assignment is unchanged: persist the new member id, no rebalance.
            member.join_future = None
            assignment = {m.member_id: m.assignment for m in group.members.values()}

            def done(error: int) -> None:
                if error != ErrorCode.NONE:
                    member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms = old
                    group.replace_static_member(req.group_instance_id, new_id, old_id)
                    complete(fut, JoinResult(
                        error, UNKNOWN_MEMBER_ID, group.generation_id, group.protocol_type,
                        group.protocol_name, current_leader or "",
                    ))  # fmt: skip
                elif req.supports_skip_assignment:
                    # v9+: a returning static leader learns it leads but must not reassign.
                    leader = group.is_leader(new_id)
                    result = self._join_result(group, member, with_members=leader)
                    result.skip_assignment = leader
                    complete(fut, result)
                else:
                    # Older clients get the old leader id, so a returning leader doesn't assign.
                    result = self._join_result(group, member, with_members=False)
                    result.leader_id = current_leader or ""
                    complete(fut, result)

            self._store_group(group, assignment, done)
        elif group.is_(COMPLETING):
            # The leader may already be assigning with the old member id: rebalance again.
            self._prepare_rebalance(group, "static member rejoined during CompletingRebalance")
        # PreparingRebalance: the join completes with the rebalance.

    def _expire_pending_member(self, group: Group, member_id: str) -> None:
        if member_id not in group.pending_members:
            return
        del group.pending_members[member_id]
        log.info("pending_member_expired", group=group.group_id, member_id=member_id)
        if group.is_(PREPARING):
            self._try_complete_join(group)
        self._forget_if_unused(group)

    # --- rebalancing --------------------------------------------------------------------------

    def _maybe_prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.can_rebalance():
            self._prepare_rebalance(group, reason)

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.is_(COMPLETING):
            self._reset_and_propagate_assignment_error(group, ErrorCode.REBALANCE_IN_PROGRESS)
        self._cancel_sync_timer(group)
        if group.join_timer is not None:
            group.join_timer.cancel()
        initial = group.is_(EMPTY)
        if initial:
            delay = self.initial_rebalance_delay_ms
            remaining = max(group.rebalance_timeout_ms - delay, 0)
            group.initial_delay_remaining_ms = remaining
            group.new_member_added = False
            group.join_timer = self.loop.call_later(
                delay / 1000, self._on_initial_delay, group, delay, remaining
            )
        else:
            group.initial_delay_remaining_ms = None
            group.join_timer = self.loop.call_later(
                group.rebalance_timeout_ms / 1000, self._on_join_timeout, group
            )
        old_state = group.state
        group.transition(PREPARING)
        log.info(
            "rebalance_preparing", group=group.group_id, from_state=old_state.value,
            generation=group.generation_id, reason=reason,
        )  # fmt: skip
        if not initial:
            self._try_complete_join(group)

    def _on_initial_delay(self, group: Group, delay_ms: int, remaining_ms: int) -> None:
        group.join_timer = None
        if not group.is_(PREPARING) or group.initial_delay_remaining_ms is None:
            return
        if group.new_member_added and remaining_ms > 0:
            # Members are still arriving: wait another delay, within the rebalance timeout.
            group.new_member_added = False
            delay = min(self.initial_rebalance_delay_ms, remaining_ms)
            remaining = max(remaining_ms - delay_ms, 0)
            group.initial_delay_remaining_ms = remaining
            group.join_timer = self.loop.call_later(
                delay / 1000, self._on_initial_delay, group, delay, remaining
            )
        else:
            self._complete_join(group)

    def _on_join_timeout(self, group: Group) -> None:
        group.join_timer = None
        if group.is_(PREPARING):
            self._complete_join(group)

    def _try_complete_join(self, group: Group) -> None:
        if (
            group.is_(PREPARING)
            and group.initial_delay_remaining_ms is None
            and group.all_members_joined()
        ):
            self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        """End of PreparingRebalance: drop members that didn't rejoin, start a new generation."""
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        group.initial_delay_remaining_ms = None
        dropped = [
            m.member_id
            for m in group.members.values()
            if not m.awaiting_join and m.group_instance_id is None
        ]
        for member_id in dropped:
            group.remove(member_id)
        if dropped:
            log.info("members_not_rejoined_removed", group=group.group_id, members=dropped)
        if group.is_(DEAD):
            return
        if group.members and not group.maybe_elect_joined_leader():
            # Only static members that haven't rejoined: wait for them (or their session expiry).
            group.join_timer = self.loop.call_later(
                group.rebalance_timeout_ms / 1000, self._on_join_timeout, group
            )
            return
        group.init_next_generation()
        if group.is_(EMPTY):
            log.info("group_empty", group=group.group_id, generation=group.generation_id)
            self._store_group(group, {}, lambda error: None)
            self._forget_if_unused(group)
            return
        log.info(
            "group_stabilizing", group=group.group_id, generation=group.generation_id,
            members=len(group.members), protocol=group.protocol_name, leader=group.leader_id,
        )  # fmt: skip
        for member in group.members.values():
            complete(
                member.join_future,
                self._join_result(group, member, with_members=group.is_leader(member.member_id)),
            )
            member.join_future = None
            self._schedule_heartbeat(group, member, member.session_timeout_ms)
            member.is_new = False
            group.pending_sync.add(member.member_id)
        group.sync_timer = self.loop.call_later(
            group.rebalance_timeout_ms / 1000, self._on_sync_timeout, group, group.generation_id
        )

    def _on_sync_timeout(self, group: Group, generation: int) -> None:
        """Members that got their JoinGroup response but never sent SyncGroup are removed."""
        group.sync_timer = None
        if generation != group.generation_id or group.state not in (COMPLETING, STABLE):
            return
        if group.pending_sync:
            missing = sorted(group.pending_sync)
            for member_id in missing:
                group.remove(member_id)
            self._prepare_rebalance(group, f"members {missing} did not sync")

    def _cancel_sync_timer(self, group: Group) -> None:
        group.pending_sync.clear()
        if group.sync_timer is not None:
            group.sync_timer.cancel()
            group.sync_timer = None

    def _cancel_timers(self, group: Group) -> None:
        self._cancel_sync_timer(group)
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        for timer in group.pending_members.values():
            if timer is not None:
                timer.cancel()

    # --- SyncGroup ----------------------------------------------------------------------------

    def sync_group(
        self, group_id: str, generation_id: int, member_id: str, instance_id: str | None,
        protocol_type: str | None, protocol_name: str | None, assignments: dict[str, bytes],
    ) -> asyncio.Future:  # fmt: skip
        fut = self.loop.create_future()
        error = self._validate(group_id, ApiKey.SYNC_GROUP)
        if error is not None:
            fut.set_result(SyncResult(error))
            return fut
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            fut.set_result(self.classic_sync_consumer_group(
                group, member_id, instance_id, generation_id, protocol_type, protocol_name
            ))  # fmt: skip
            return fut
        if group is None:
            fut.set_result(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
            return fut
        if group.is_(DEAD):
            error = ErrorCode.COORDINATOR_NOT_AVAILABLE
        else:
            error = self._validate_member(group, member_id, instance_id)
        if error is None:
            if generation_id != group.generation_id:
                error = ErrorCode.ILLEGAL_GENERATION
            elif (protocol_type is not None and protocol_type != group.protocol_type) or (
                protocol_name is not None and protocol_name != group.protocol_name
            ):
                error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            elif group.is_(EMPTY):
                error = ErrorCode.UNKNOWN_MEMBER_ID
            elif group.is_(PREPARING):
                error = ErrorCode.REBALANCE_IN_PROGRESS
        if error is not None:
            fut.set_result(SyncResult(error))
            return fut
        member = group.members[member_id]
        group.pending_sync.discard(member_id)
        if not group.pending_sync and group.sync_timer is not None:
            group.sync_timer.cancel()
            group.sync_timer = None
        if group.is_(STABLE):
            fut.set_result(
                SyncResult(
                    ErrorCode.NONE, group.protocol_type, group.protocol_name, member.assignment
                )
            )
            self._schedule_heartbeat(group, member, member.session_timeout_ms)
            return fut
        # CompletingRebalance: wait for the leader's assignment.
        if member.sync_future is not None and member.sync_future is not fut:
            complete(member.sync_future, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
        member.sync_future = fut
        if group.is_leader(member_id):
            full = {mid: assignments.get(mid, b"") for mid in group.members}
            missing = [mid for mid in group.members if mid not in assignments]
            if missing:
                log.warning(
                    "empty_assignment_for_members", group=group_id,
                    generation=generation_id, members=missing,
                )  # fmt: skip
            generation = group.generation_id

            def done(error: int) -> None:
                # Another member may have joined meanwhile: only finish this same generation.
                if not group.is_(COMPLETING) or group.generation_id != generation:
                    return
                if error != ErrorCode.NONE:
                    self._reset_and_propagate_assignment_error(group, error)
                    self._maybe_prepare_rebalance(group, f"storing the assignment failed: {error}")
                else:
                    for mid, m in group.members.items():
                        m.assignment = full[mid]
                    self._propagate_assignment(group, ErrorCode.NONE)
                    group.transition(STABLE)
                    log.info(
                        "group_stable", group=group.group_id, generation=generation,
                        members=len(group.members),
                    )  # fmt: skip

            self._store_group(group, full, done)
        return fut

    def _propagate_assignment(self, group: Group, error: int) -> None:
        ok = error == ErrorCode.NONE
        for member in group.members.values():
            result = SyncResult(
                error, group.protocol_type if ok else None, group.protocol_name if ok else None,
                member.assignment,
            )  # fmt: skip
            if member.sync_future is not None:
                # A session that ran out while the group waited for the leader starts afresh
                # (also for a member whose client has gone: its session must run out).
                complete(member.sync_future, result)
                self._schedule_heartbeat(group, member, member.session_timeout_ms)
            member.sync_future = None

    def _reset_and_propagate_assignment_error(self, group: Group, error: int) -> None:
        for member in group.members.values():
            member.assignment = b""
        self._propagate_assignment(group, error)

    # --- Heartbeat and sessions ---------------------------------------------------------------

    def heartbeat(
        self, group_id: str, member_id: str, instance_id: str | None, generation_id: int
    ) -> ErrorCode:
        error = self._validate(group_id, ApiKey.HEARTBEAT)
        if error is not None:
            return error
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            return self.classic_heartbeat_consumer_group(
                group, member_id, instance_id, generation_id
            )
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.is_(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        error = self._validate_member(group, member_id, instance_id)
        if error is not None:
            return error
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if group.is_(EMPTY):
            return ErrorCode.UNKNOWN_MEMBER_ID
        member = group.members[member_id]
        self._schedule_heartbeat(group, member, member.session_timeout_ms)
        if group.is_(PREPARING):
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def _schedule_heartbeat(self, group: Group, member: Member, timeout_ms: int) -> None:
        """The member's next heartbeat is due within timeout_ms (one timer per member)."""
        member.deadline = self.loop.time() + timeout_ms / 1000
        if member.timer is not None and member.timer.when() > member.deadline:
            member.timer.cancel()
            member.timer = None
        if member.timer is None:
            member.timer = self.loop.call_at(
                member.deadline, self._on_heartbeat_deadline, group, member
            )

    def _on_heartbeat_deadline(self, group: Group, member: Member) -> None:
        member.timer = None
        if group.members.get(member.member_id) is not member or group.is_(DEAD):
            return
        if self.loop.time() < member.deadline:
            member.timer = self.loop.call_at(
                member.deadline, self._on_heartbeat_deadline, group, member
            )
            return
        if not member.is_new and (member.awaiting_join or member.awaiting_sync):
            # Waiting on a rebalance counts as alive: look again a session later.
            self._schedule_heartbeat(group, member, member.session_timeout_ms)
            return
        log.info(
            "member_session_expired", group=group.group_id, member_id=member.member_id,
            instance_id=member.group_instance_id, state=group.state.value,
        )  # fmt: skip
        self._remove_member_and_update(group, member, "session timeout")

    def _remove_member_and_update(self, group: Group, member: Member, reason: str) -> None:
        complete(member.join_future, JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, UNKNOWN_MEMBER_ID))
        complete(member.sync_future, SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        group.remove(member.member_id)
        if group.state in (STABLE, COMPLETING):
            self._maybe_prepare_rebalance(group, f"member {member.member_id} left ({reason})")
        elif group.is_(PREPARING):
            self._try_complete_join(group)

    # --- LeaveGroup ---------------------------------------------------------------------------

    def leave_group(
        self, group_id: str, members: list[tuple[str, str | None, str | None]]
    ) -> tuple[ErrorCode, list[ErrorCode]]:
        """(top-level error, one error per (member id, instance id, reason))."""
        error = self._validate(group_id, ApiKey.LEAVE_GROUP)
        if error is not None:
            return error, []
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            return ErrorCode.NONE, self.classic_leave_consumer_group(group, members)
        if group is None:
            return ErrorCode.NONE, [ErrorCode.UNKNOWN_MEMBER_ID] * len(members)
        if group.is_(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, []
        results = []
        for member_id, instance_id, reason in members:
            if member_id == UNKNOWN_MEMBER_ID:
                # Admin removal of a static member by its instance id.
                current = group.static_member_id(instance_id)
                if current is None:
                    results.append(ErrorCode.UNKNOWN_MEMBER_ID)
                    continue
                member_id = current
            elif member_id in group.pending_members:
                timer = group.pending_members.pop(member_id)
                if timer is not None:
                    timer.cancel()
                if group.is_(PREPARING):
                    self._try_complete_join(group)
                results.append(ErrorCode.NONE)
                continue
            else:
                error = self._validate_member(group, member_id, instance_id)
                if error is not None:
                    results.append(error)
                    continue
            member = group.members[member_id]
            log.info(
                "member_left", group=group_id, member_id=member_id, instance_id=instance_id,
                reason=reason,
            )  # fmt: skip
            self._remove_member_and_update(group, member, f"LeaveGroup: {reason}")
            results.append(ErrorCode.NONE)
        return ErrorCode.NONE, results

    # --- offsets ------------------------------------------------------------------------------

    def commit_offsets(
        self, group_id: str, member_id: str, instance_id: str | None, generation_id: int,
        offsets: dict[tuple[str, int], OffsetAndMetadata], api_version: int = 8,
    ) -> dict[tuple[str, int], int] | Awaitable[dict[tuple[str, int], int]]:  # fmt: skip
        """Errors per partition; an awaitable of them when the write waits for replication.
        For a consumer-protocol group, generation_id is the member epoch (OffsetCommit v9)."""

        def all_(error: int) -> dict[tuple[str, int], int]:
            return dict.fromkeys(offsets, error)

        error = self._validate(group_id, ApiKey.OFFSET_COMMIT)
        if error is not None:
            return all_(error)
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            error = self.validate_consumer_offset_commit(
                group, member_id, instance_id, generation_id, api_version
            )
            if error is not None:
                return all_(error)
            return self._store_offsets(group, offsets)
        if group is None:
            if generation_id >= 0:
                # A member of a generation this coordinator doesn't know: reject.
                return all_(ErrorCode.ILLEGAL_GENERATION)
            # A consumer that doesn't use group management keeps its offsets here anyway.
            group = self.groups[group_id] = Group(group_id)
        error = self._validate_offset_commit(group, generation_id, member_id, instance_id)
        if error is not None:
            return all_(error)
        if group.is_(COMPLETING):
            return all_(ErrorCode.REBALANCE_IN_PROGRESS)
        if group.state in (STABLE, PREPARING):
            member = group.members[member_id]
            self._schedule_heartbeat(group, member, member.session_timeout_ms)
        return self._store_offsets(group, offsets)

    def _validate_offset_commit(
        self, group: Group, generation_id: int, member_id: str, instance_id: str | None
    ) -> ErrorCode | None:
        if group.is_(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if generation_id < 0 and group.is_(EMPTY):
            return None  # the admin client, or a consumer without group management
        if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or instance_id is not None:
            error = self._validate_member(group, member_id, instance_id)
            if error is not None:
                return error
            if generation_id != group.generation_id:
                return ErrorCode.ILLEGAL_GENERATION
            return None
        if not group.is_(EMPTY):
            return ErrorCode.UNKNOWN_MEMBER_ID  # only members commit for an active group
        return None

    def _check_metadata_size(
        self, offsets: dict[tuple[str, int], OffsetAndMetadata]
    ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], OffsetAndMetadata]]:
        """(OFFSET_METADATA_TOO_LARGE per partition over offset.metadata.max.bytes, the rest)."""
        results: dict[tuple[str, int], int] = {}
        valid: dict[tuple[str, int], OffsetAndMetadata] = {}
        for tp, om in offsets.items():
            if len(om.metadata.encode()) > self.max_metadata_bytes:
                results[tp] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            else:
                valid[tp] = om
        return results, valid

    def _store_offsets(
        self, group: Group, offsets: dict[tuple[str, int], OffsetAndMetadata]
    ) -> dict[tuple[str, int], int] | Awaitable[dict[tuple[str, int], int]]:
        results, valid = self._check_metadata_size(offsets)
        if not valid:
            return results
        try:
            pending = self.store.append_offsets(group.group_id, valid)
        except KafkaError as e:
            results.update(dict.fromkeys(valid, _store_error(e.code, commit=True)))
            return results

        def finish(error: int) -> dict[tuple[str, int], int]:
            if error == ErrorCode.NONE and self.groups.get(group.group_id) is group:
                group.offsets.update(valid)
            results.update(
                dict.fromkeys(
                    valid, error if error == ErrorCode.NONE else _store_error(error, True)
                )
            )
            return results

        return _after_write(pending, finish)

    def fetch_offsets(
        self, group_id: str, partitions: list[tuple[str, int]] | None,
        member_id: str | None = None, member_epoch: int = -1,
    ) -> tuple[ErrorCode, dict[tuple[str, int], OffsetAndMetadata | None]]:  # fmt: skip
        """Committed offsets (None for partitions without one); all of them if partitions is None.
        OffsetFetch v9 members of consumer-protocol groups name themselves and their epoch."""
        error = self._validate(group_id, ApiKey.OFFSET_FETCH)
        if error is not None:
            return error, {}
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            error = self.validate_consumer_offset_fetch(group, member_id, member_epoch)
            if error is not None:
                return error, {}
        offsets = group.offsets if group is not None and not group.is_(DEAD) else {}
        if partitions is None:
            return ErrorCode.NONE, dict(offsets)
        return ErrorCode.NONE, {tp: offsets.get(tp) for tp in partitions}

    def delete_offsets(
        self, group_id: str, partitions: list[tuple[str, int]]
    ) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        """OffsetDelete: only offsets of topics an active consumer group isn't subscribed to."""
        error = self._validate(group_id, ApiKey.OFFSET_DELETE)
        if error is not None:
            return error, {}
        group = self.groups.get(group_id)
        if group is None or group.is_(DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND, {}
        results: dict[tuple[str, int], ErrorCode] = {}
        partitions = list(dict.fromkeys(partitions))  # a partition named twice is one partition
        if group.is_(EMPTY):
            eligible = list(partitions)
        elif group.is_consumer_group and group.subscribed is not None:
            eligible = [tp for tp in partitions if not group.is_subscribed_to(tp[0])]
            results.update(
                {tp: ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC for tp in partitions if tp not in eligible}
            )
        else:
            return ErrorCode.NON_EMPTY_GROUP, {}
        removed = [tp for tp in eligible if tp in group.offsets]
        if removed:
            try:
                self.store.append_tombstones(group.group_id, removed, group_tombstone=False)
            except KafkaError as e:
                return _store_error(e.code, commit=False), {}
            for tp in removed:
                del group.offsets[tp]
            log.info("offsets_deleted", group=group_id, partitions=len(removed))
        results.update(dict.fromkeys(eligible, ErrorCode.NONE))
        return ErrorCode.NONE, results

    # --- transactional offsets (TxnOffsetCommit) ---------------------------------------------

    def commit_txn_offsets(
        self, group_id: str, producer_id: int, producer_epoch: int, member_id: str,
        instance_id: str | None, generation_id: int,
        offsets: dict[tuple[str, int], OffsetAndMetadata],
    ) -> dict[tuple[str, int], int] | Awaitable[dict[tuple[str, int], int]]:  # fmt: skip
        """Write offsets as part of a producer's transaction: pending until its marker (see
        complete_txn_offsets). Errors per partition, or an awaitable of them."""

        def all_(error: int) -> dict[tuple[str, int], int]:
            return dict.fromkeys(offsets, error)

        error = self._validate(group_id, ApiKey.TXN_OFFSET_COMMIT)
        if error is not None:
            return all_(error)
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = Group(group_id)  # as Kafka: a group to hold them
        if group.is_(DEAD):
            return all_(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if isinstance(group, ConsumerGroup):
            if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID:
                error = self.validate_consumer_offset_commit(
                    group, member_id, instance_id, generation_id, 9, transactional=True
                )
                if error is not None:
                    return all_(error)
        elif generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or instance_id is not None:
            error = self._validate_member(group, member_id, instance_id)
            if error is None and generation_id != group.generation_id:
                error = ErrorCode.ILLEGAL_GENERATION
            if error is not None:
                return all_(error)
        results, valid = self._check_metadata_size(offsets)
        if not valid:
            return results
        try:
            pending = self.store.append_txn_offsets(group_id, producer_id, producer_epoch, valid)
        except KafkaError as e:
            results.update(dict.fromkeys(valid, _txn_store_error(e.code)))
            return results

        def finish(error: int) -> dict[tuple[str, int], int]:
            if error == ErrorCode.NONE:
                by_group = self.pending_txn_offsets.setdefault(producer_id, {})
                by_group.setdefault(group_id, {}).update(valid)
            results.update(dict.fromkeys(valid, _txn_store_error(error)))
            return results

        return _after_write(pending, finish)

    def complete_txn_offsets(self, producer_id: int, offsets_partition: int, commit: bool) -> None:
        """A marker of the producer's transaction reached this __consumer_offsets partition:
        its offsets for the groups there become committed, or are dropped."""
        groups = self.pending_txn_offsets.get(producer_id)
        if not groups:
            return
        for group_id in [g for g in groups if self.store.partition_for(g) == offsets_partition]:
            offsets = groups.pop(group_id)
            if not commit:
                continue
            group = self.groups.get(group_id)
            if group is None or group.is_(DEAD):
                group = self.groups[group_id] = Group(group_id)
            group.offsets.update(offsets)
        if not groups:
            del self.pending_txn_offsets[producer_id]

    def unstable_partitions(self, group_id: str) -> set[tuple[str, int]]:
        """Partitions with transactional offsets of `group_id` awaiting their marker
        (OffsetFetch with require_stable answers them UNSTABLE_OFFSET_COMMIT)."""
        found: set[tuple[str, int]] = set()
        for groups in self.pending_txn_offsets.values():
            found.update(groups.get(group_id, ()))
        return found

    def _load_pending_txn_offsets(self, records: dict[int, list]) -> None:
        for producer_id, pairs in records.items():
            for key, value in pairs:
                if key is None or value is None:
                    continue
                try:
                    parsed = parse_key(key)
                    if parsed[0] != "offset":
                        continue
                    _, group, topic, partition = parsed
                    om = parse_offset_value(value)
                except SchemaError:
                    continue
                by_group = self.pending_txn_offsets.setdefault(producer_id, {})
                by_group.setdefault(group, {})[(topic, partition)] = om

    # --- group admin --------------------------------------------------------------------------

    def describe_group(self, group_id: str) -> tuple[ErrorCode, Group | None]:
        error = self._validate(group_id, ApiKey.DESCRIBE_GROUPS)
        if error is not None:
            return error, None
        group = self.groups.get(group_id)
        return ErrorCode.NONE, group if group is not None and not group.is_(DEAD) else None

    def list_groups(self, states: set[str] | None = None) -> tuple[ErrorCode, list[Group]]:
        if not self.active:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, []
        wanted = {s.lower() for s in states} if states else None
        return ErrorCode.NONE, [
            g
            for g in self.groups.values()
            if not g.is_(DEAD) and (wanted is None or g.state.value.lower() in wanted)
        ]

    def delete_groups(self, group_ids: list[str]) -> dict[str, ErrorCode]:
        results: dict[str, ErrorCode] = {}
        for group_id in group_ids:
            error = self._validate(group_id, ApiKey.DELETE_GROUPS)
            if error is not None:
                results[group_id] = error
                continue
            group = self.groups.get(group_id)
            if group is None or group.is_(DEAD):
                results[group_id] = ErrorCode.GROUP_ID_NOT_FOUND
            elif not group.is_(EMPTY):
                results[group_id] = ErrorCode.NON_EMPTY_GROUP
            else:
                try:
                    self.store.append_tombstones(
                        group_id, list(group.offsets), group_tombstone=True
                    )
                except KafkaError as e:
                    results[group_id] = _store_error(e.code, commit=False)
                    continue
                self._remove_group(group)
                log.info("group_deleted", group=group_id, offsets=len(group.offsets))
                results[group_id] = ErrorCode.NONE
        return results

    def _remove_group(self, group: Group | ConsumerGroup) -> None:
        if isinstance(group, ConsumerGroup):
            self._append_background(group.group_id, group.tombstones())
            group.dead = True
            group.update_state(now_ms())
            self._cancel_consumer_timer(group.group_id)
            if self.groups.get(group.group_id) is group:
                del self.groups[group.group_id]
            return
        group.transition(DEAD)
        self._cancel_timers(group)
        if self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]

    def _forget_if_unused(self, group: Group) -> None:
        """A group created by a join that failed holds nothing: don't keep (or list) it."""
        if (
            group.is_(EMPTY) and not group.members and not group.pending_members
            and not group.offsets and group.generation_id == 0
            and self.groups.get(group.group_id) is group
        ):  # fmt: skip
            del self.groups[group.group_id]

    def on_topic_deleted(self, topic: str) -> None:
        """Forget committed offsets of a deleted topic (Kafka's handleDeletedPartitions)."""
        for group in list(self.groups.values()):
            doomed = [tp for tp in group.offsets if tp[0] == topic]
            if not doomed:
                continue
            try:
                self.store.append_tombstones(group.group_id, doomed, group_tombstone=False)
            except KafkaError as e:
                log.warning("offset_cleanup_failed", group=group.group_id, error=e.code.name)
                continue
            for tp in doomed:
                del group.offsets[tp]

    # --- persistence --------------------------------------------------------------------------

    def _store_group(
        self, group: Group, assignment: dict[str, bytes], done: Callable[[int], None]
    ) -> None:
        """Write the group's metadata record; `done(error)` runs once it is replicated."""
        record = GroupRecord(
            group.protocol_type or "", group.generation_id, group.protocol_name,
            group.leader_id, group.state_timestamp,
            [
                MemberRecord(
                    m.member_id, m.group_instance_id, m.client_id, m.client_host,
                    m.rebalance_timeout_ms, m.session_timeout_ms,
                    m.metadata(group.protocol_name or ""), assignment.get(m.member_id, b""),
                )
                for m in group.members.values()
            ],
        )  # fmt: skip
        try:
            pending = self.store.append_group(group.group_id, record)
        except KafkaError as e:
            log.warning("group_store_failed", group=group.group_id, error=e.code.name)
            done(_store_error(e.code, commit=False))
            return
        if pending is None:
            done(ErrorCode.NONE)
            return

        async def wait() -> None:
            error = await pending
            done(error if error == ErrorCode.NONE else _store_error(error, commit=False))

        self.loop.create_task(wait())

    # --- offset expiry ------------------------------------------------------------------------

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retention_check_interval_ms / 1000)
            try:
                self.expire_offsets()
            except Exception:
                log.exception("offset_expiry_failed")

    def expire_offsets(self, now: int | None = None) -> int:
        """Remove offsets past offsets.retention.minutes (Kafka's rules); drop groups left empty.

        Empty groups: offsets expire a retention period after the group became empty. Stable
        consumer groups: offsets of topics no member subscribes to expire a retention period
        after their commit. Groups that never had members (simple consumers): after the commit.
        Explicit expire timestamps (OffsetCommit v2-v4 retention_time_ms) win.
        """
        now = now_ms() if now is None else now
        removed_total = 0
        for group in list(self.groups.values()):
            expired = self._expired_offsets(group, now)
            empty_after = group.is_(EMPTY) and len(expired) == len(group.offsets)
            empty_after = empty_after and not group.pending_members
            if not expired and not empty_after:
                continue
            try:
                self.store.append_tombstones(group.group_id, expired, group_tombstone=empty_after)
            except KafkaError as e:
                log.warning("offset_expiry_store_failed", group=group.group_id, error=e.code.name)
                continue
            for tp in expired:
                del group.offsets[tp]
            removed_total += len(expired)
            if empty_after:
                self._remove_group(group)
                log.info("group_expired", group=group.group_id)
        if removed_total:
            log.info("offsets_expired", offsets=removed_total)
        return removed_total

    def _expired_offsets(self, group: Group, now: int) -> list[tuple[str, int]]:
        def expired(om: OffsetAndMetadata, base: int) -> bool:
            if om.expire_timestamp >= 0:
                return now >= om.expire_timestamp
            return now - base >= self.retention_ms

        if group.protocol_type is not None and group.is_(EMPTY):
            since = group.state_timestamp
            return [
                tp for tp, om in group.offsets.items()
                if expired(om, since if since >= 0 else om.commit_timestamp)
            ]  # fmt: skip
        if group.is_consumer_group and group.subscribed is not None and group.is_(STABLE):
            return [
                tp for tp, om in group.offsets.items()
                if not group.is_subscribed_to(tp[0]) and expired(om, om.commit_timestamp)
            ]  # fmt: skip
        if group.protocol_type is None:
            return [tp for tp, om in group.offsets.items() if expired(om, om.commit_timestamp)]
        return []


__all__ = ["GROUP_METADATA_TOPIC", "GroupCoordinator", "JoinRequest"]

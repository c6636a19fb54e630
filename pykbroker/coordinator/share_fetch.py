"""The share-partition leader (KIP-932): ShareFetch and ShareAcknowledge over the partitions
this broker leads, with share sessions, acquisition locks and the persister.

For each (share group, topic partition) it keeps a protocol.share_partition.SharePartition,
loaded on first use from the share coordinator (ReadShareGroupState) or, when the group has no
state yet, started at `share.auto.offset.reset` (a group config: latest by default, earliest,
or by_duration:<ISO-8601 duration>) and written there (InitializeShareGroupState).
Acknowledgements, released locks and expired locks are written to the share coordinator
(WriteShareGroupState) before a request that carried them is answered; if that write fails,
the in-memory share-partition is dropped and reloaded from the persisted state, which is the
truth. Acquisitions are not persisted (Kafka doesn't either): after a failover an acquired
record is available again with the delivery count last written.

Share sessions (ShareSessionCache): keyed by (group, member). Epoch 0 opens one with the
request's partitions (a session already there is replaced, its records released), each later
request carries the next epoch (INVALID_SHARE_SESSION_EPOCH otherwise, SHARE_SESSION_NOT_FOUND
when there is none), and epoch -1 closes it. Fetching covers the session's partitions; topics
in a request add to it, ForgottenTopicsData removes. When a session closes, its member leaves
the group, or its connection drops, the records its member holds are released at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from protocol import records as rb
from protocol.errors import ErrorCode, KafkaError
from protocol.share_partition import (
    AVAILABLE,
    InvalidAcknowledgement,
    InvalidRecordState,
    SharePartition,
    StateBatch,
)

if TYPE_CHECKING:
    from pykbroker.broker import Broker

log = structlog.get_logger(__name__)

INITIAL_EPOCH, FINAL_EPOCH = 0, -1
READ_CHUNK = 1 << 20
READ_COMMITTED = "read_committed"


TP = tuple[str, uuid.UUID, str, int]  # (group, topic id, topic name, partition)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class ShareSession:
    group_id: str
    member_id: str
    epoch: int
    connection: object
    partitions: dict[tuple[uuid.UUID, int], str] = field(default_factory=dict)  # -> topic name


@dataclass(slots=True)
class Shared:
    """A loaded share-partition, with who waits for it to change and its lock timer."""

    sp: SharePartition
    key: tuple[str, uuid.UUID, int]
    topic: str
    waiters: set[asyncio.Future] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    timer_at: int = 0


class SharePartitionManager:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        config = broker.config
        self.loop = asyncio.get_running_loop()
        self.lock_ms = config.get("group.share.record.lock.duration.ms")
        self.delivery_limit = config.get("group.share.delivery.count.limit")
        self.max_in_flight = config.get("group.share.partition.max.record.locks")
        self.max_sessions = config.get("group.share.max.share.sessions")
        self.partitions: dict[tuple[str, uuid.UUID, int], Shared] = {}
        self._loading: dict[tuple[str, uuid.UUID, int], asyncio.Future] = {}
        self.sessions: dict[tuple[str, str], ShareSession] = {}
        self.group_configs = broker.share_group_configs

    # --- configuration ------------------------------------------------------------------------

    def group_config(self, group_id: str, name: str):
        """A group config's value (IncrementalAlterConfigs on resource type GROUP), else the
        broker's group.share.* key, else Kafka's default."""
        from .group_configs import BROKER_DEFAULTS, GROUP_CONFIGS

        key = GROUP_CONFIGS[name]
        raw = self.group_configs.get(group_id, {}).get(name)
        if raw is not None:
            return key.parse(raw)
        if name in BROKER_DEFAULTS:
            return self.broker.config.get(BROKER_DEFAULTS[name])
        return key.default

    def lock_duration(self, group_id: str) -> int:
        return int(self.group_config(group_id, "share.record.lock.duration.ms"))

    # --- share-partitions ---------------------------------------------------------------------

    async def get(self, group_id: str, topic_id: uuid.UUID, topic: str, partition: int) -> Shared:
        """The loaded share-partition; KafkaError when this broker doesn't lead the partition or
        the state can't be read."""
        part = self.broker.replica_manager.get_leader(topic, partition)
        key = (group_id, topic_id, partition)
        shared = self.partitions.get(key)
        if shared is not None:
            if shared.sp.start_offset < part.log.log_start_offset:
                shared.sp.move_start(part.log.log_start_offset)
            return shared
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = self.loop.create_future()
            try:
                shared = await self._load(key, topic, part)
                self.partitions[key] = shared
                loading.set_result(shared)
            except KafkaError as e:
                loading.set_exception(e)
                loading.exception()  # retrieved: others may not be waiting
                raise
            finally:
                del self._loading[key]
            return shared
        return await asyncio.shield(loading)

    async def _load(self, key, topic: str, part) -> Shared:
        persister = self.broker.share_persister
        state = await persister.read(key, part.leader_epoch)
        group_id = key[0]
        if state is None:
            start = self._initial_offset(group_id, part)
            await persister.initialize(key, 0, start)
            sp = self._new_sp(group_id, start, [], 0)
        else:
            start = max(state.start_offset, part.log.log_start_offset)
            sp = self._new_sp(group_id, start, state.batches, state.state_epoch)
        log.info("share_partition_loaded", group=group_id, topic=topic, partition=key[2],
                 start_offset=sp.start_offset, end_offset=sp.end_offset)  # fmt: skip
        return Shared(sp, key, topic)

    def _new_sp(self, group_id, start, batches, state_epoch) -> SharePartition:
        return SharePartition(
            start, max_in_flight=self.max_in_flight, lock_ms=self.lock_duration(group_id),
            delivery_limit=self.delivery_limit, state_batches=batches, state_epoch=state_epoch,
        )  # fmt: skip

    def _initial_offset(self, group_id: str, part) -> int:
        reset = str(self.group_config(group_id, "share.auto.offset.reset"))
        log_ = part.log
        if reset == "earliest":
            return log_.log_start_offset
        if reset.startswith("by_duration:"):
            found = log_.offset_for_timestamp(now_ms() - parse_iso_duration_ms(reset[12:]))
            return found[0] if found is not None else log_.high_watermark
        return log_.high_watermark

    def invalidate(self, key) -> None:
        """Forget a share-partition's in-memory state: it is reloaded from the persisted one."""
        shared = self.partitions.pop(key, None)
        if shared is not None:
            if shared.timer is not None:
                shared.timer.cancel()
            self._wake(shared)

    def invalidate_group(self, group_id: str) -> None:
        for key in [k for k in self.partitions if k[0] == group_id]:
            self.invalidate(key)

    async def persist(self, shared: Shared, changed: list[StateBatch]) -> ErrorCode:
        sp = shared.sp
        try:
            await self.broker.share_persister.write(
                shared.key, sp.state_epoch, self._leader_epoch(shared), sp.start_offset, changed
            )
        except KafkaError as e:
            log.warning("share_state_write_failed", group=shared.key[0], topic=shared.topic,
                        partition=shared.key[2], error=e.code.name)  # fmt: skip
            self.invalidate(shared.key)
            return e.code
        return ErrorCode.NONE

    def _leader_epoch(self, shared: Shared) -> int:
        part = self.broker.replica_manager.partitions.get((shared.topic, shared.key[2]))
        return part.leader_epoch if part is not None else -1

    # --- lock timers and waiters --------------------------------------------------------------

    def _schedule(self, shared: Shared) -> None:
        if shared.timer is not None:
            return  # locks taken since expire after the one the timer waits for
        deadline = shared.sp.next_deadline()
        if deadline is None:
            return
        shared.timer_at = deadline
        delay = max(deadline - now_ms(), 0) / 1000
        shared.timer = self.loop.call_later(delay, self._on_timer, shared)

    def _on_timer(self, shared: Shared) -> None:
        shared.timer = None
        if self.partitions.get(shared.key) is not shared:
            return
        changed = shared.sp.expire_locks(now_ms())
        if changed:
            log.debug("share_locks_expired", group=shared.key[0], topic=shared.topic,
                      partition=shared.key[2], batches=len(changed))  # fmt: skip
            self._persist_later(shared, changed)
            self._wake(shared)
        self._schedule(shared)

    def _persist_later(self, shared: Shared, changed: list[StateBatch]) -> None:
        task = self.loop.create_task(self.persist(shared, changed))
        self.broker.background.append(task)
        task.add_done_callback(self.broker.background.remove)

    def _wake(self, shared: Shared) -> None:
        for fut in shared.waiters:
            if not fut.done():
                fut.set_result(None)
        shared.waiters.clear()

    # --- members going away -------------------------------------------------------------------

    def release_member(self, group_id: str, member_id: str, only=None) -> None:
        for key, shared in list(self.partitions.items()):
            if key[0] != group_id or (only is not None and (key[1], key[2]) not in only):
                continue
            changed = shared.sp.release_member(member_id)
            if changed:
                self._persist_later(shared, changed)
                self._wake(shared)

    def on_member_expired(self, group_id: str, member_id: str) -> None:
        """Its heartbeats stopped: its share session goes, and its records are released."""
        self.sessions.pop((group_id, member_id), None)
        self.release_member(group_id, member_id)

    def connection_closed(self, connection) -> None:
        for key, session in list(self.sessions.items()):
            if session.connection is connection:
                del self.sessions[key]
                self.release_member(*key)

    # --- sessions -----------------------------------------------------------------------------

    def session_for(self, group_id: str, member_id: str, epoch: int, connection) -> ShareSession:
        key = (group_id, member_id)
        session = self.sessions.get(key)
        if epoch == INITIAL_EPOCH:
            if session is not None:
                self.release_member(group_id, member_id)
            elif len(self.sessions) >= self.max_sessions:
                raise KafkaError(ErrorCode.SHARE_SESSION_LIMIT_REACHED,
                                 "The limit of share sessions has been reached.")  # fmt: skip
            session = self.sessions[key] = ShareSession(group_id, member_id, 1, connection)
            return session
        if session is None:
            raise KafkaError(ErrorCode.SHARE_SESSION_NOT_FOUND, "The share session was not found.")
        if epoch == FINAL_EPOCH:
            return session
        if epoch != session.epoch:
            raise KafkaError(ErrorCode.INVALID_SHARE_SESSION_EPOCH,
                             f"The share session epoch is {epoch}, expected {session.epoch}.")  # fmt: skip
        session.epoch = session.epoch + 1 if session.epoch < 0x7FFFFFFF else 1
        session.connection = connection
        return session

    def close_session(self, session: ShareSession) -> None:
        if self.sessions.get((session.group_id, session.member_id)) is session:
            del self.sessions[(session.group_id, session.member_id)]
        self.release_member(session.group_id, session.member_id)

    # --- acknowledging ------------------------------------------------------------------------

    async def acknowledge(
        self, group_id: str, member_id: str, acks: dict[tuple[uuid.UUID, int], tuple[str, list]]
    ) -> dict[tuple[uuid.UUID, int], tuple[int, str | None]]:
        """Apply and persist acknowledgements; per partition (error code, message)."""
        results: dict[tuple[uuid.UUID, int], tuple[int, str | None]] = {}
        writes = []
        for (topic_id, partition), (topic, batches) in acks.items():
            try:
                shared = await self.get(group_id, topic_id, topic, partition)
                start = shared.sp.start_offset
                changed = shared.sp.acknowledge(member_id, batches)
            except KafkaError as e:
                results[(topic_id, partition)] = (e.code, e.message)
                continue
            except InvalidRecordState as e:
                results[(topic_id, partition)] = (ErrorCode.INVALID_RECORD_STATE, str(e))
                continue
            except InvalidAcknowledgement as e:
                results[(topic_id, partition)] = (ErrorCode.INVALID_REQUEST, str(e))
                continue
            if shared.sp.start_offset != start or any(c[2] == AVAILABLE for c in changed):
                self._wake(shared)  # something to acquire now: the window moved, or released
            writes.append(((topic_id, partition), self.persist(shared, changed)))
        codes = await asyncio.gather(*(w for _, w in writes))
        for (tp, _), code in zip(writes, codes, strict=True):
            results[tp] = (
                code,
                None if code == ErrorCode.NONE else "The share state write failed.",
            )
        return results

    # --- fetching -----------------------------------------------------------------------------

    def acquire(self, shared: Shared, member_id: str, max_bytes: int, max_records: int):
        """(records bytes, acquired runs) from one share-partition, or (None, []).

        The log is read READ_CHUNK at a time from the first acquirable offset, and only as far
        as acquisition goes (max_records, the in-flight window): a consumer's fetch.max.bytes
        (50 MiB) must not mean copying the rest of the log on every fetch."""
        sp = shared.sp
        offset = sp.fetch_offset()
        if offset is None:
            return None, []
        part = self.broker.replica_manager.get_leader(shared.topic, shared.key[2])
        committed = self.group_config(shared.key[0], "share.isolation.level") == READ_COMMITTED
        max_offset = part.last_stable_offset() if committed else part.log.high_watermark
        chunks: list[bytes] = []
        acquired: list[tuple[int, int, int]] = []
        active: set[int] = set()  # producers inside an aborted transaction (read_committed)
        while offset < max_offset and max_bytes > 0 and max_records > 0:
            region = part.log.read(offset, min(max_bytes, READ_CHUNK), max_offset, min_one=True)
            if region is None:
                break
            data = region.read()
            # An aborted transaction's batches are skipped from its first offset to its
            # producer's marker, as a read_committed consumer would.
            aborted = sorted((first, pid) for pid, first in part.aborted_transactions(offset, region)) if committed else []  # fmt: skip
            batches, ends = [], []
            for pos, header in rb.scan_batches(data):
                while aborted and aborted[0][0] <= header.base_offset:
                    active.add(aborted.pop(0)[1])
                pid = header.producer_id
                skip = header.is_control
                if header.is_control:
                    active.discard(pid)
                elif header.is_transactional and pid in active:
                    skip = True
                batches.append((header.base_offset, header.last_offset, skip))
                ends.append(pos + header.size)
            if not batches:
                break
            got = sp.acquire(member_id, batches, max_records, now_ms())
            if got:
                last = got[-1][1]
                cut = next(e for (_, l, _), e in zip(batches, ends, strict=True) if l >= last)  # noqa: E741
                chunks.append(bytes(data[:cut]))
                acquired += got
                max_records -= sum(b - a + 1 for a, b, _ in got)
                max_bytes -= cut
            if sp.end_offset - sp.start_offset >= sp.max_in_flight:
                break  # the window is full: nothing further can be acquired
            offset = batches[-1][1] + 1
        if not acquired:
            return None, []
        self._schedule(shared)
        return b"".join(chunks), acquired

    def add_waiter(self, shared_list: list[Shared], fut: asyncio.Future) -> None:
        for shared in shared_list:
            shared.waiters.add(fut)


def parse_iso_duration_ms(text: str) -> int:
    """PnDTnHnMnS (Java's Duration.parse subset Kafka documents for by_duration)."""
    import re

    m = re.fullmatch(
        r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", text.strip().upper()
    )
    if not m or text.strip().upper() in ("P", "PT"):
        raise ValueError(f"not an ISO-8601 duration: {text}")
    d, h, mi, s = (float(x) if x else 0.0 for x in m.groups())
    return int(((d * 24 + h) * 60 + mi) * 60000 + s * 1000)

"""Replica fetchers: a follower's connection to each leader it copies from.

One `ReplicaFetcher` (an asyncio task with one connection) per source broker, as Kafka's
ReplicaFetcherThread with num.replica.fetchers=1. It sends Fetch requests with replica_id =
this broker's id, so the leader reads up to its log end offset (not its HW) and learns the
follower's LEO from the fetch offset. Record batches come back as the leader stored them, offsets
already assigned, and are appended with `Log.append_as_follower`; the follower's HW is the
leader's, capped at its own LEO.

What to do with each answer (where to truncate, whether a batch may be appended) is decided by
the plain functions in follower.py; this module only does the I/O around them.
"""

from __future__ import annotations

import asyncio
import struct
import time

import structlog

from protocol import codec
from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.fetch_session import FetchSessionHandler
from pykbroker.quota.replication import ReplicationQuota

from .follower import apply_epoch_end, corrupt_batch, last_fetched_epoch, truncate

log = structlog.get_logger(__name__)

FETCH_VERSION = 12
LIST_OFFSETS_VERSION = 4
EPOCH_VERSION = 4
EARLIEST, LATEST = -2, -1
_SIZE = struct.Struct(">i")


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class PartitionFetchState:
    __slots__ = ("partition", "leader_epoch", "delayed_until", "truncating", "in_sync")

    def __init__(self, partition, leader_epoch: int):
        self.partition = partition
        self.leader_epoch = leader_epoch
        self.delayed_until = 0.0
        self.truncating = True  # a new leader: first find where our logs diverge
        # Caught up with the leader's HW at the last fetch (Kafka's isReplicaInSync, lag <= 0):
        # a throttle never holds such a partition back.
        self.in_sync = False


def _can_append(lg) -> bool:
    """Is the follower's log dir writable (a full one probed again, at most every 0.5 s)?"""
    if lg.log_dir.writable:
        return True
    try:
        lg.log_dir.check_writable(f"fetching {lg.topic}-{lg.partition} from its leader")
    except KafkaError:
        return False
    return True


class ReplicaFetcher:
    def __init__(self, manager: ReplicaFetcherManager, leader_id: int):
        self.manager = manager
        self.leader_id = leader_id
        self.node_id = manager.node_id
        self.config = manager.config
        self.partitions: dict[tuple[str, int], PartitionFetchState] = {}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reauth_at: float | None = None  # when the SASL session wants re-authenticating
        self.correlation_id = 0
        self.changed = asyncio.Event()
        self.stopping = False
        self.task = asyncio.get_running_loop().create_task(self.run())
        self.client_id = f"broker-{self.node_id}-fetcher-0"
        self.session = FetchSessionHandler()

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = self.config.get("replica.fetch.backoff.ms") / 1000
        loop = asyncio.get_running_loop()
        # The flag, not only the cancellation: a cancellation that lands as a socket timeout
        # fires (wait_for turns it into TimeoutError) must not leave the loop running.
        while not self.stopping:
            now = loop.time()
            ready = {k: s for k, s in self.partitions.items() if s.delayed_until <= now}
            for k, s in list(ready.items()):
                if not _can_append(s.partition.log):
                    # No fetching, so no claim to be in sync, until its log dir takes writes.
                    del ready[k]
                    s.delayed_until = now + backoff
            if len(ready) > 1:
                # Rotate who goes first: only the first partition may exceed its byte limit
                # (one whole batch), so no partition is starved by busier ones before it.
                keys = list(ready)
                shift = self.correlation_id % len(keys)
                ready = {k: ready[k] for k in keys[shift:] + keys[:shift]}
            if not ready:
                self.changed.clear()
                wake_at = min((s.delayed_until for s in self.partitions.values()), default=None)
                timeout = None if wake_at is None else max(wake_at - now, 0.01)
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            try:
                await self._connect()
                await self._fetch_once(ready)
            except asyncio.CancelledError:
                raise
            except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as e:
                log.debug("replica_fetch_failed", leader=self.leader_id, error=repr(e))
                self._close()
                for s in ready.values():
                    s.delayed_until = loop.time() + backoff
            except Exception:
                log.exception("replica_fetcher_error", leader=self.leader_id)
                self._close()
                for s in ready.values():
                    s.delayed_until = loop.time() + backoff

    async def _connect(self) -> None:
        timeout = self.config.get("replica.socket.timeout.ms") / 1000
        security = self.manager.security
        if self.writer is not None:
            if self.reauth_at is not None and asyncio.get_running_loop().time() >= self.reauth_at:
                # KIP-368, between two requests on the same connection, as Kafka's fetcher.
                self.reauth_at = await security.authenticate(
                    self.reader, self.writer, self.client_id, timeout
                )
            return
        broker = self.manager.metadata.live_brokers.get(self.leader_id)
        if broker is None:
            raise ConnectionError(f"leader {self.leader_id} is not alive")
        if security is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(broker.host, broker.port), timeout
            )
        else:
            self.reader, self.writer, self.reauth_at = await security.open_connection(
                broker.host, broker.port, self.client_id, timeout
            )

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.reauth_at = None

    async def _request(self, api_key: int, version: int, body: dict):
        self.correlation_id += 1
        cid = self.correlation_id
        reader = self.reader  # a stop() may close the connection while this waits
        self.writer.write(codec.encode_request(api_key, version, cid, self.client_id, body))
        timeout = self.config.get("replica.socket.timeout.ms") / 1000
        size = _SIZE.unpack(await asyncio.wait_for(reader.readexactly(4), timeout))[0]
        frame = await asyncio.wait_for(reader.readexactly(size), timeout)
        if _SIZE.unpack_from(frame)[0] != cid:
            raise EOFError("correlation id mismatch")
        offset = 4 + (1 if codec.response_is_flexible(api_key, version) else 0)
        return codec.decode_response(api_key, version, frame, offset)

    async def _fetch_once(self, ready: dict[tuple[str, int], PartitionFetchState]) -> None:
        cfg = self.config
        truncating = [s for s in ready.values() if s.truncating]
        if truncating:  # connected: the leader is reachable, so truncate now
            await self._truncate_on_new_leader(truncating)
            ready = {k: s for k, s in ready.items() if not s.truncating}
            if not ready:
                return
        wanted = {}
        quota = self.manager.quota
        over = quota.exceeded(_now_ms())
        for (topic, index), s in ready.items():
            if over and not s.in_sync and quota.is_throttled(topic, index):
                # Kafka's shouldFollowerThrottle: left out of this fetch (and of the session).
                s.delayed_until = (
                    asyncio.get_running_loop().time() + max(quota.delay_ms(_now_ms()), 10) / 1000
                )
                continue
            lg = s.partition.log
            wanted[(topic, index)] = {
                "partition": index, "current_leader_epoch": s.leader_epoch,
                "fetch_offset": lg.log_end_offset,
                "last_fetched_epoch": last_fetched_epoch(s.partition.epoch_cache),
                "log_start_offset": lg.log_start_offset,
                "partition_max_bytes": cfg.get("replica.fetch.max.bytes"),
            }  # fmt: skip
        if not wanted:
            return  # all throttled: the loop waits until the first may go again
        # An incremental fetch session (KIP-227), as Kafka's followers: after the first, full
        # request only partitions whose position changed go out, and only news comes back.
        session_id, epoch, send, forgotten = self.session.build(wanted)
        by_topic: dict[str, list[dict]] = {}
        for (topic, _), p in send.items():
            by_topic.setdefault(topic, []).append(p)
        gone: dict[str, list[int]] = {}
        for topic, index in forgotten:
            gone.setdefault(topic, []).append(index)
        body = {
            "cluster_id": None, "replica_id": self.node_id,
            "max_wait_ms": cfg.get("replica.fetch.wait.max.ms"),
            "min_bytes": cfg.get("replica.fetch.min.bytes"),
            "max_bytes": cfg.get("replica.fetch.response.max.bytes"),
            "isolation_level": 0, "session_id": session_id, "session_epoch": epoch,
            "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()],
            "forgotten_topics_data": [{"topic": t, "partitions": ps} for t, ps in gone.items()],
            "rack_id": "",
        }  # fmt: skip
        try:
            response = await self._request(ApiKey.FETCH, FETCH_VERSION, body)
        except BaseException:
            self.session.failed()  # the leader may or may not have moved the session on
            raise
        self.session.handle_response(response.error_code, response.session_id)
        if response.error_code in (
            ErrorCode.FETCH_SESSION_ID_NOT_FOUND,
            ErrorCode.INVALID_FETCH_SESSION_EPOCH,
        ):
            return  # evicted or out of step: the next request is a full one
        if response.error_code != ErrorCode.NONE:
            raise ConnectionError(f"fetch error {response.error_code}")
        loop = asyncio.get_running_loop()
        for t in response.responses:
            for r in t.partitions:
                s = self.partitions.get((t.topic, r.partition_index))
                if s is None or s is not ready.get((t.topic, r.partition_index)):
                    continue  # removed or re-added while the fetch was in flight
                try:
                    await self._process(s, r)
                except KafkaError as e:
                    log.info("replica_fetch_partition_error", topic=t.topic,
                                partition=r.partition_index, error=e.code.name)  # fmt: skip
                    s.delayed_until = loop.time() + cfg.get("replica.fetch.backoff.ms") / 1000

    async def _process(self, s: PartitionFetchState, r) -> None:
        p = s.partition
        lg = p.log
        code = ErrorCode(r.error_code)
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            await self._handle_out_of_range(s)
            return
        if code != ErrorCode.NONE:
            raise KafkaError(code)
        diverging = r.diverging_epoch
        if diverging is not None and diverging.end_offset >= 0:
            # KIP-320: our log is not a prefix of the leader's from our last fetched epoch on.
            apply_epoch_end(p, diverging.epoch, diverging.end_offset, "diverging_epoch_")
            return  # the next fetch goes on from there (or finds the next divergence)
        records = r.records
        if records:
            batches = list(rb.scan_batches(records))
            # Skip whole batches we already have (never expected, but never append twice).
            start = 0
            leo = lg.log_end_offset
            for pos, header in batches:
                if header.base_offset >= leo:
                    break
                start = pos + header.size
            bad = corrupt_batch(records, start)
            if bad is not None:
                # As Kafka's follower: refuse the whole response's records, retry after backoff.
                log.error("replica_fetch_corrupt_batch", topic=p.topic, partition=p.index,
                          leader=self.leader_id, base_offset=bad[0], reason=bad[1])  # fmt: skip
                raise KafkaError(ErrorCode.CORRUPT_MESSAGE, bad[1])
            if start < len(records):
                lg.append_as_follower(memoryview(records)[start:])
                if self.manager.quota.is_throttled(p.topic, p.index):
                    self.manager.quota.record(len(records) - start, _now_ms())
                cache = p.epoch_cache
                if cache is not None:
                    for pos, header in batches:
                        if pos >= start and header.partition_leader_epoch > cache.latest_epoch:
                            cache.assign(header.partition_leader_epoch, header.base_offset)
        lg.update_high_watermark(min(r.high_watermark, lg.log_end_offset))
        s.in_sync = lg.log_end_offset >= r.high_watermark
        if r.log_start_offset > lg.log_start_offset:
            lg.maybe_increment_log_start_offset(min(r.log_start_offset, lg.log_end_offset))

    async def _truncate_on_new_leader(self, states: list[PartitionFetchState]) -> None:
        """Ask the leader where our latest epoch ends in its log (OffsetsForLeaderEpoch) and
        truncate there (KIP-101/279); with no epochs to go by, truncate to our HW."""
        asking = []
        for s in states:
            cache = s.partition.epoch_cache
            if cache is None or cache.latest_epoch < 0:
                truncate(s.partition, s.partition.log.high_watermark, "no_leader_epochs")
                s.truncating = False
            else:
                asking.append(s)
        if not asking:
            return
        by_topic: dict[str, list[dict]] = {}
        for s in asking:
            p = s.partition
            by_topic.setdefault(p.topic, []).append({
                "partition": p.index, "current_leader_epoch": s.leader_epoch,
                "leader_epoch": p.epoch_cache.latest_epoch,
            })  # fmt: skip
        body = {"replica_id": self.node_id,
                "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]}  # fmt: skip
        response = await self._request(ApiKey.OFFSET_FOR_LEADER_EPOCH, EPOCH_VERSION, body)
        wanted = {(s.partition.topic, s.partition.index): s for s in asking}
        backoff = self.config.get("replica.fetch.backoff.ms") / 1000
        for t in response.topics:
            for r in t.partitions:
                s = wanted.get((t.topic, r.partition))
                if s is None or self.partitions.get((t.topic, r.partition)) is not s:
                    continue
                p = s.partition
                if r.error_code != ErrorCode.NONE:
                    log.info("offsets_for_leader_epoch_error", topic=p.topic, partition=p.index,
                             error=ErrorCode(r.error_code).name)  # fmt: skip
                    s.delayed_until = asyncio.get_running_loop().time() + backoff
                    continue
                # Not complete: we lacked the leader's epoch and cut back to the end of an
                # earlier one of ours; ask again about that one (Kafka's next round).
                s.truncating = not apply_epoch_end(p, r.leader_epoch, r.end_offset)

    async def _handle_out_of_range(self, s: PartitionFetchState) -> None:
        """Our LEO is past the leader's (it lost uncommitted records we have: truncate), or
        below its log start (retention removed what we need: start over at its start)."""
        p = s.partition
        lg = p.log
        leader_end = await self._leader_offset(p, LATEST, s.leader_epoch)
        if lg.log_end_offset > leader_end:
            truncate(p, leader_end, "past_leader_end")
            return
        leader_start = await self._leader_offset(p, EARLIEST, s.leader_epoch)
        if lg.log_end_offset < leader_start:
            log.warning("follower_behind_leader_start", topic=p.topic, partition=p.index,
                        log_end_offset=lg.log_end_offset, leader_start=leader_start)  # fmt: skip
            truncate_fully_and_start_at(lg, leader_start)
            if p.epoch_cache is not None:
                p.epoch_cache.truncate_from_end(lg.log_start_offset)

    async def _leader_offset(self, p, timestamp: int, leader_epoch: int) -> int:
        body = {
            "replica_id": self.node_id, "isolation_level": 0,
            "topics": [{"name": p.topic, "partitions": [{
                "partition_index": p.index, "current_leader_epoch": leader_epoch,
                "timestamp": timestamp,
            }]}],
        }  # fmt: skip
        response = await self._request(ApiKey.LIST_OFFSETS, LIST_OFFSETS_VERSION, body)
        part = response.topics[0].partitions[0]
        if part.error_code != ErrorCode.NONE:
            raise KafkaError(ErrorCode(part.error_code))
        return part.offset

    def stop(self) -> asyncio.Task:
        self.stopping = True
        self.task.cancel()
        self._close()
        return self.task


def truncate_fully_and_start_at(lg, offset: int) -> None:
    """Empty a follower's log and restart it at `offset` (the leader's log start)."""
    try:
        lg.truncate_to(lg.segments[0].base_offset)
        if lg.log_end_offset < offset:
            lg.roll(offset)
            lg.delete_segments(lg.segments[:-1])
            lg.maybe_increment_log_start_offset(offset)
    except OSError as e:  # the dir's state changes, not a connection failure retried forever
        raise lg._storage_error(e, "truncating") from None


class ReplicaFetcherManager:
    """Which partitions are fetched from which leader; one fetcher per leader broker."""

    def __init__(self, node_id: int, metadata, config, security=None):
        self.node_id = node_id
        self.metadata = metadata
        self.config = config
        # security/inter_broker.InterBrokerSecurity: TLS/SASL to the leaders; None: plain TCP
        self.security = security
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self.source: dict[tuple[str, int], int] = {}  # partition -> leader fetched from
        self.stopped = False  # shut down: no fetcher starts again (a late watch can't revive one)
        # A reassignment's throttle on what this broker copies (quota/replication.py).
        self.quota = ReplicationQuota("follower", node_id, config, metadata.topic_configs)

    def is_fetching(self, p, leader_id: int) -> bool:
        return self.source.get((p.topic, p.index)) == leader_id

    def add_partition(self, p, leader_id: int) -> None:
        """Fetch `p` from `leader_id` afresh: the first step is finding where to truncate."""
        self.remove_partition(p)
        if self.stopped:
            return
        fetcher = self.fetchers.get(leader_id)
        if fetcher is None:
            fetcher = self.fetchers[leader_id] = ReplicaFetcher(self, leader_id)
        fetcher.partitions[(p.topic, p.index)] = PartitionFetchState(p, p.state.leader_epoch)
        self.source[(p.topic, p.index)] = leader_id
        fetcher.changed.set()

    def update_epoch(self, p, leader_epoch: int) -> None:
        leader_id = self.source.get((p.topic, p.index))
        fetcher = self.fetchers.get(leader_id) if leader_id is not None else None
        if fetcher is not None:
            s = fetcher.partitions.get((p.topic, p.index))
            if s is not None:
                s.leader_epoch = leader_epoch
                s.delayed_until = 0.0
                fetcher.changed.set()

    def remove_partition(self, p) -> None:
        leader_id = self.source.pop((p.topic, p.index), None)
        if leader_id is None:
            return
        fetcher = self.fetchers.get(leader_id)
        if fetcher is None:
            return
        fetcher.partitions.pop((p.topic, p.index), None)
        if not fetcher.partitions:
            fetcher.stop()
            del self.fetchers[leader_id]

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop every fetcher and wait (bounded) for their tasks to end."""
        self.stopped = True
        tasks = [fetcher.stop() for fetcher in self.fetchers.values()]
        self.fetchers.clear()
        self.source.clear()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
            if pending:
                log.warning("replica_fetchers_not_stopped", count=len(pending))

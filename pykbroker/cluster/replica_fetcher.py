"""Replica fetchers: a follower's connection to each leader it copies from.

One `ReplicaFetcher` (an asyncio task with one connection) per source broker, as Kafka's
ReplicaFetcherThread with num.replica.fetchers=1. It sends Fetch requests with replica_id =
this broker's id, so the leader reads up to its log end offset (not its HW) and learns the
follower's LEO from the fetch offset. Record batches come back as the leader stored them, offsets
already assigned, and are appended with `Log.append_as_follower`; the follower's HW is the
leader's, capped at its own LEO.
"""

from __future__ import annotations

import asyncio
import struct

import structlog

from protocol import codec
from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError

log = structlog.get_logger(__name__)

FETCH_VERSION = 12
LIST_OFFSETS_VERSION = 4
EARLIEST, LATEST = -2, -1
_SIZE = struct.Struct(">i")


class PartitionFetchState:
    __slots__ = ("partition", "leader_epoch", "delayed_until", "truncate_to_hw")

    def __init__(self, partition, leader_epoch: int):
        self.partition = partition
        self.leader_epoch = leader_epoch
        self.delayed_until = 0.0
        self.truncate_to_hw = True  # a new leader: keep only what is known committed


def truncate_to_high_watermark(p) -> None:
    """Records above the HW may not be on the new leader: drop them before fetching (Kafka's
    rule before leader-epoch based truncation)."""
    lg = p.log
    hw = lg.high_watermark
    if hw < lg.log_end_offset:
        log.info("truncating_to_high_watermark", topic=p.topic, partition=p.index,
                 log_end_offset=lg.log_end_offset, high_watermark=hw)  # fmt: skip
        lg.truncate_to(hw)


class ReplicaFetcher:
    def __init__(self, manager: ReplicaFetcherManager, leader_id: int):
        self.manager = manager
        self.leader_id = leader_id
        self.node_id = manager.node_id
        self.config = manager.config
        self.partitions: dict[tuple[str, int], PartitionFetchState] = {}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.correlation_id = 0
        self.changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.run())
        self.client_id = f"broker-{self.node_id}-fetcher-0"

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = self.config.get("replica.fetch.backoff.ms") / 1000
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            ready = {k: s for k, s in self.partitions.items() if s.delayed_until <= now}
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
        if self.writer is not None:
            return
        broker = self.manager.metadata.live_brokers.get(self.leader_id)
        if broker is None:
            raise ConnectionError(f"leader {self.leader_id} is not alive")
        timeout = self.config.get("replica.socket.timeout.ms") / 1000
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(broker.host, broker.port), timeout
        )

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def _request(self, api_key: int, version: int, body: dict):
        self.correlation_id += 1
        cid = self.correlation_id
        self.writer.write(codec.encode_request(api_key, version, cid, self.client_id, body))
        timeout = self.config.get("replica.socket.timeout.ms") / 1000
        size = _SIZE.unpack(await asyncio.wait_for(self.reader.readexactly(4), timeout))[0]
        frame = await asyncio.wait_for(self.reader.readexactly(size), timeout)
        if _SIZE.unpack_from(frame)[0] != cid:
            raise EOFError("correlation id mismatch")
        offset = 4 + (1 if codec.response_is_flexible(api_key, version) else 0)
        return codec.decode_response(api_key, version, frame, offset)

    async def _fetch_once(self, ready: dict[tuple[str, int], PartitionFetchState]) -> None:
        cfg = self.config
        by_topic: dict[str, list[dict]] = {}
        for (topic, index), s in ready.items():
            if s.truncate_to_hw:  # connected: the leader is reachable, so truncate now
                truncate_to_high_watermark(s.partition)
                s.truncate_to_hw = False
            lg = s.partition.log
            by_topic.setdefault(topic, []).append({
                "partition": index, "current_leader_epoch": s.leader_epoch,
                "fetch_offset": lg.log_end_offset, "last_fetched_epoch": -1,
                "log_start_offset": lg.log_start_offset,
                "partition_max_bytes": cfg.get("replica.fetch.max.bytes"),
            })  # fmt: skip
        body = {
            "cluster_id": None, "replica_id": self.node_id,
            "max_wait_ms": cfg.get("replica.fetch.wait.max.ms"),
            "min_bytes": cfg.get("replica.fetch.min.bytes"),
            "max_bytes": cfg.get("replica.fetch.response.max.bytes"),
            "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()],
            "forgotten_topics_data": [], "rack_id": "",
        }  # fmt: skip
        response = await self._request(ApiKey.FETCH, FETCH_VERSION, body)
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
            if start < len(records):
                lg.append_as_follower(memoryview(records)[start:])
        lg.update_high_watermark(min(r.high_watermark, lg.log_end_offset))
        if r.log_start_offset > lg.log_start_offset:
            lg.maybe_increment_log_start_offset(min(r.log_start_offset, lg.log_end_offset))

    async def _handle_out_of_range(self, s: PartitionFetchState) -> None:
        """Our LEO is past the leader's (it lost uncommitted records we have: truncate), or
        below its log start (retention removed what we need: start over at its start)."""
        p = s.partition
        lg = p.log
        leader_end = await self._leader_offset(p, LATEST, s.leader_epoch)
        if lg.log_end_offset > leader_end:
            log.warning("truncating_to_leader_end", topic=p.topic, partition=p.index,
                        log_end_offset=lg.log_end_offset, leader_end=leader_end)  # fmt: skip
            lg.truncate_to(leader_end)
            return
        leader_start = await self._leader_offset(p, EARLIEST, s.leader_epoch)
        if lg.log_end_offset < leader_start:
            log.warning("follower_behind_leader_start", topic=p.topic, partition=p.index,
                        log_end_offset=lg.log_end_offset, leader_start=leader_start)  # fmt: skip
            lg.truncate_to(lg.log_start_offset)
            truncate_fully_and_start_at(lg, leader_start)

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

    def stop(self) -> None:
        self.task.cancel()
        self._close()


def truncate_fully_and_start_at(lg, offset: int) -> None:
    """Empty a follower's log and restart it at `offset` (the leader's log start)."""
    lg.truncate_to(lg.segments[0].base_offset)
    if lg.log_end_offset < offset:
        lg.roll(offset)
        lg.delete_segments(lg.segments[:-1])
        lg.maybe_increment_log_start_offset(offset)


class ReplicaFetcherManager:
    """Which partitions are fetched from which leader; one fetcher per leader broker."""

    def __init__(self, node_id: int, metadata, config):
        self.node_id = node_id
        self.metadata = metadata
        self.config = config
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self.source: dict[tuple[str, int], int] = {}  # partition -> leader fetched from

    def is_fetching(self, p, leader_id: int) -> bool:
        return self.source.get((p.topic, p.index)) == leader_id

    def add_partition(self, p, leader_id: int) -> None:
        self.remove_partition(p)
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

    def shutdown(self) -> None:
        for fetcher in self.fetchers.values():
            fetcher.stop()
        self.fetchers.clear()
        self.source.clear()

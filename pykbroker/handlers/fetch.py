"""Fetch: a long poll over partition logs; records go out as file regions (sendfile)."""

from __future__ import annotations

import asyncio
from time import perf_counter

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from protocol.hotpath import FetchPartitionResult, encode_fetch_response

from . import REGISTRY

READ_COMMITTED = 1


def read_partitions(broker, request, version: int, response_max_bytes: int):
    """One pass over the requested partitions: (topics, bytes found, answer at once: an error
    or a diverging epoch)."""
    rm = broker.replica_manager
    follower = request.replica_id >= 0
    read_committed = request.isolation_level == READ_COMMITTED
    remaining = response_max_bytes
    total = 0
    error = False
    topics = []
    for t in request.topics:
        results = []
        for p in t.partitions:
            r = FetchPartitionResult(p.partition)
            try:
                part = rm.get_leader(
                    t.topic, p.partition, p.current_leader_epoch if version >= 9 else -1
                )
                log = part.log
                r.high_watermark = log.high_watermark
                r.last_stable_offset = part.last_stable_offset()
                r.log_start_offset = log.log_start_offset
                last_epoch = p.last_fetched_epoch if version >= 12 else -1
                if follower:
                    # Validated before its offset counts for the HW and the ISR (KIP-320).
                    r.diverging_epoch = part.follower_fetch(
                        request.replica_id, p.fetch_offset, last_epoch
                    )
                    r.high_watermark = log.high_watermark
                else:
                    r.diverging_epoch = part.diverging_epoch(p.fetch_offset, last_epoch)
                if r.diverging_epoch is not None:
                    error = True  # answer now: the fetcher has to truncate first
                    results.append(r)
                    continue
                if follower:
                    max_offset = log.log_end_offset
                elif read_committed:
                    max_offset = r.last_stable_offset
                    r.aborted_transactions = []
                else:
                    max_offset = r.high_watermark
                limit = min(p.partition_max_bytes, remaining)
                region = log.read(p.fetch_offset, limit, max_offset, min_one=total == 0)
                if region is not None:
                    r.records = region
                    total += region.length
                    remaining = max(remaining - region.length, 0)
                    if read_committed:
                        r.aborted_transactions = part.aborted_transactions(p.fetch_offset, region)
            except KafkaError as e:
                r.error_code = e.code
                error = True
            except OSError as e:  # a read the disk failed: its log dir goes offline
                r.error_code = log.log_dir.failed(e, f"reading {t.topic}-{p.partition}").code
                r.records = None
                error = True
            results.append(r)
        topics.append((t.topic, results))
    return topics, total, error


@REGISTRY.register(ApiKey.FETCH, 4, 12)
async def handle_fetch(ctx, request):
    broker = ctx.broker
    version = ctx.api_version
    header = ctx.header
    if version >= 7 and request.session_id != 0:
        # We never create fetch sessions (a broker may decline to), so none can be found.
        return encode_fetch_response(
            version, header.correlation_id, 0, ErrorCode.FETCH_SESSION_ID_NOT_FOUND, 0, []
        )
    max_bytes = min(request.max_bytes, broker.config.get("fetch.max.bytes"))
    quotas = broker.quotas
    quota = (quotas.fetch.enabled or ctx.started) and request.replica_id < 0  # not followers
    if quota and quotas.fetch.enabled:
        max_bytes = quotas.fetch_max_bytes(ctx, max_bytes)
    elif request.replica_id >= 0:
        ctx.started = 0.0  # a follower's fetch is exempt from request quotas too
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.max_wait_ms / 1000
    keys = [(t.topic, p.partition) for t in request.topics for p in t.partitions]
    while True:
        pass_started = perf_counter()
        topics, total, error = read_partitions(broker, request, version, max_bytes)
        remaining = deadline - loop.time()
        if total >= request.min_bytes or error or remaining <= 0 or not keys:
            break
        fut = loop.create_future()
        watched = broker.replica_manager.add_waiter(keys, fut)
        broker.metrics.fetch_purgatory += 1
        try:
            await asyncio.wait((fut,), timeout=remaining)
        finally:
            broker.metrics.fetch_purgatory -= 1
            for part in watched:
                part.waiters.discard(fut)
    response = encode_fetch_response(version, header.correlation_id, 0, ErrorCode.NONE, 0, topics)
    if quota:
        size = int.from_bytes(response[0][:4], "big") + 4
        busy = ctx.busy + perf_counter() - pass_started  # not the long poll's wait
        throttle = quotas.fetch_throttle_ms(ctx, size, busy)
        if throttle:  # Kafka answers a throttled fetch with no data (KIP-219)
            return encode_fetch_response(
                version, header.correlation_id, throttle, ErrorCode.NONE, 0, []
            )
    if total:
        broker.metrics.record_fetch(topics, total)
    return response

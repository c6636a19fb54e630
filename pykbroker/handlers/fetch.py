"""Fetch: a long poll over partition logs; records go out as file regions (sendfile)."""

from __future__ import annotations

import asyncio

import structlog

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from protocol.hotpath import FetchPartitionResult, encode_fetch_response
from pykbroker.coordinator.group import now_ms
from pykbroker.fetch_session import INVALID_SESSION_ID

from . import REGISTRY

log = structlog.get_logger(__name__)

READ_COMMITTED = 1


def read_partitions(broker, request, version: int, response_max_bytes: int, wanted: list):
    """One pass over the partitions to read (`wanted`: [(topic, topic id, [partition
    params])], from the request or its fetch session): (topics as [(topic, topic id,
    [FetchPartitionResult])], bytes found, answer at once: an error or a diverging epoch)."""
    rm = broker.replica_manager
    follower = request.replica_id >= 0
    read_committed = request.isolation_level == READ_COMMITTED
    remaining = response_max_bytes
    total = 0
    error = False
    topics = []
    for topic, topic_id, partitions in wanted:
        results = []
        for p in partitions:
            r = FetchPartitionResult(p.partition)
            try:
                part = rm.get_leader(
                    topic, p.partition, p.current_leader_epoch if version >= 9 else -1
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
                r.error_code = log.log_dir.failed(e, f"reading {topic}-{p.partition}").code
                r.records = None
                error = True
            results.append(r)
        topics.append((topic, topic_id, results))
    return topics, total, error


@REGISTRY.register(ApiKey.FETCH, 4, 12)
async def handle_fetch(ctx, request):
    broker = ctx.broker
    version = ctx.api_version
    header = ctx.header
    follower = request.replica_id >= 0
    sessions = broker.fetch_sessions
    if version >= 7:
        # KIP-227: a full fetch may open a session; an incremental one reads the session's
        # partitions and answers only those with news.
        context = sessions.new_context(version, request, follower, now_ms())
        if context.kind == "error":
            return encode_fetch_response(
                version, header.correlation_id, 0, context.error, INVALID_SESSION_ID, []
            )
        wanted = context.topics
    else:
        context = None
        wanted = [(t.topic, None, t.partitions) for t in request.topics]
    max_bytes = min(request.max_bytes, broker.config.get("fetch.max.bytes"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.max_wait_ms / 1000
    keys = [(topic, p.partition) for topic, _, ps in wanted for p in ps]
    while True:
        topics, total, error = read_partitions(broker, request, version, max_bytes, wanted)
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
    session_id = INVALID_SESSION_ID
    if context is not None:
        session_id, topics = sessions.response_topics(context, topics, follower, version,
                                                      now_ms())  # fmt: skip
        if context.kind == "full" and session_id != INVALID_SESSION_ID:
            # A follower's session is made once per leader it fetches from; say so. Consumers'
            # sessions come and go with them (debug).
            (log.info if follower else log.debug)(
                "fetch_session_created", session_id=session_id, replica_id=request.replica_id,
                partitions=len(keys), client_id=header.client_id,
            )  # fmt: skip
    answer = [(name, results) for name, _, results in topics]
    if total:
        broker.metrics.record_fetch(answer, total)
    return encode_fetch_response(
        version, header.correlation_id, 0, ErrorCode.NONE, session_id, answer
    )

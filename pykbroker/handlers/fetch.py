"""Fetch: a long poll over partition logs; records go out as file regions (sendfile)."""

from __future__ import annotations

import asyncio

import structlog

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from protocol.hotpath import FetchPartitionResult, encode_fetch_response
from pykbroker.acl.checks import RT, Op, cluster_allowed, filter_allowed
from pykbroker.coordinator.group import now_ms
from pykbroker.fetch_session import INVALID_SESSION_ID

from . import REGISTRY

log = structlog.get_logger(__name__)

READ_COMMITTED = 1


def resolve_topics(broker, request, version: int, topics=None) -> list[tuple[str | None, object]]:
    """(topic name, the request's topic) for each topic (of the request, or `topics`: its fetch
    session's); from v13 topics come by id, and an id no topic has now (never had, or a deleted
    topic's) resolves to None: UNKNOWN_TOPIC_ID."""
    topics = request.topics if topics is None else topics
    if version < 13:
        return [(t.topic, t) for t in topics]
    by_id = broker.metadata.topic_by_id
    return [((info := by_id(t.topic_id)) and info.name, t) for t in topics]


def replica_id(request, version: int) -> int:
    """The fetching follower's broker id, -1 for a consumer (in ReplicaState from v15)."""
    if version >= 15:
        state = request.replica_state
        return state.replica_id if state is not None else -1
    return request.replica_id


def unauthorized_topics(ctx, request, resolved) -> dict[str, int]:
    """Topics this fetch may not read, with their error (Kafka's handleFetchRequest: a follower
    needs CLUSTER_ACTION on the cluster, else every partition fails; a consumer needs READ on
    each topic). Answered before the partitions are looked at, so nothing about them leaks."""
    names = {name for name, _ in resolved if name is not None}
    if replica_id(request, ctx.api_version) >= 0:
        allowed_names = names if cluster_allowed(ctx, Op.CLUSTER_ACTION) else set()
    else:
        allowed_names = filter_allowed(ctx, Op.READ, RT.TOPIC, names)
    return dict.fromkeys(names - allowed_names, ErrorCode.TOPIC_AUTHORIZATION_FAILED)


def read_partitions(broker, request, version: int, response_max_bytes: int, topics_in=None,
                    denied: dict | None = None):  # fmt: skip
    """One pass over the requested partitions: (topics, bytes found, answer at once: an error
    or a diverging epoch). Each topic's key is its name, or its id from v13. `denied`: topics
    the authorizer refused, with their error."""
    rm = broker.replica_manager
    replica = replica_id(request, version)
    follower = replica >= 0
    read_committed = request.isolation_level == READ_COMMITTED
    remaining = response_max_bytes
    total = 0
    error = False
    topics = []
    by_id = version >= 13
    # KIP-392: with a replica selector, the leader may send a consumer to a closer replica.
    selector = version >= 11 and broker.config.get("replica.selector.class") == RACK_AWARE
    # A reassignment's throttle (quota/replication.py): nothing of a throttled partition for a
    # replica outside its ISR while the leader's replication rate is over its bound.
    quota = rm.leader_quota if follower else None
    over = quota is not None and quota.exceeded(now_ms())
    client_rack = request.rack_id if version >= 11 else None
    # Partitions refused by the authorizer or of an unknown topic id are answered with their
    # error but, as Kafka filters them out before reading, don't end the long poll for the
    # others (a consumer of a deleted topic would otherwise fetch in a busy loop); a fetch of
    # nothing else is answered at once.
    filtered = interesting = 0
    for name, t in topics_in if topics_in is not None else resolve_topics(broker, request, version):
        results = []
        refused = denied.get(name) if denied and name is not None else None
        if name is None and refused is None:
            refused = ErrorCode.UNKNOWN_TOPIC_ID
        for p in t.partitions:
            r = FetchPartitionResult(p.partition)
            if refused is not None:
                r.error_code = refused
                filtered += 1
                results.append(r)
                continue
            interesting += 1
            try:
                epoch = p.current_leader_epoch if version >= 9 else -1
                if follower or version < 11:
                    part = rm.get_leader(name, p.partition, epoch)
                else:  # KIP-392: a follower serves consumers too, up to its HW
                    part = rm.get_for_consumer(name, p.partition, epoch)
                log = part.log
                if by_id and log.topic_id is not None and log.topic_id != t.topic_id:
                    # The name is the topic's, the log another's (Kafka's hasConsistentTopicId).
                    raise KafkaError(ErrorCode.INCONSISTENT_TOPIC_ID)
                r.high_watermark = log.high_watermark
                r.last_stable_offset = part.last_stable_offset()
                r.log_start_offset = log.log_start_offset
                last_epoch = p.last_fetched_epoch if version >= 12 else -1
                if follower:
                    # Validated before its offset counts for the HW and the ISR (KIP-320).
                    r.diverging_epoch = part.follower_fetch(replica, p.fetch_offset, last_epoch)
                    r.high_watermark = log.high_watermark
                    # KIP-1166 (v18): a follower that knows an older HW is answered at once.
                    if version >= 18 and p.high_watermark < r.high_watermark:
                        error = True
                else:
                    r.diverging_epoch = part.diverging_epoch(p.fetch_offset, last_epoch)
                if r.diverging_epoch is not None:
                    error = True  # answer now: the fetcher has to truncate first
                    results.append(r)
                    continue
                if selector and not follower:
                    r.preferred_read_replica = rm.preferred_read_replica(
                        part, client_rack, p.fetch_offset
                    )
                    if r.preferred_read_replica >= 0:
                        error = True  # answer now, without records: read there instead
                        results.append(r)
                        continue
                if over and replica not in part.state.isr and quota.is_throttled(name, p.partition):
                    results.append(r)  # Kafka's shouldLeaderThrottle: no records this time
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
                r.error_code = log.log_dir.failed(e, f"reading {name}-{p.partition}").code
                r.records = None
                error = True
            results.append(r)
        topics.append((t.topic_id if by_id else name, results))
    if filtered and not interesting:
        error = True
    return topics, total, error


RACK_AWARE = "org.apache.kafka.common.replica.RackAwareReplicaSelector"
_LEADER_MOVED = (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH)


def leader_endpoints(ctx, topics, names) -> list[tuple[int, str, int, str | None]]:
    """v16+ (KIP-951): a partition answered NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH gets
    its current leader and epoch, and the response those leaders' endpoints, so the client
    goes there without a Metadata round trip."""
    metadata = ctx.broker.metadata
    leaders: set[int] = set()
    for (_, results), name in zip(topics, names, strict=True):
        info = metadata.topic(name) if name is not None else None
        for r in results:
            if r.error_code not in _LEADER_MOVED or info is None:
                continue
            if 0 <= r.partition_index < len(info.partitions):
                state = info.partitions[r.partition_index]
                r.current_leader = (state.leader, state.leader_epoch)
                if state.leader >= 0:
                    leaders.add(state.leader)
    out = []
    for b in metadata.brokers():
        if b.node_id in leaders:
            host, port = b.address(ctx.listener)
            out.append((b.node_id, host, port, b.rack))
    return out


@REGISTRY.register(ApiKey.FETCH, 4, 18)
async def handle_fetch(ctx, request):
    broker = ctx.broker
    version = ctx.api_version
    header = ctx.header
    follower = replica_id(request, version) >= 0
    sessions = broker.fetch_sessions
    context = None
    topics_in = None  # the request's
    if version >= 7:
        # KIP-227: a full fetch may open a session; an incremental one reads the session's
        # partitions and is answered only those with news.
        context = sessions.new_context(version, request, follower, now_ms())
        if context.kind == "error":
            return encode_fetch_response(
                version, header.correlation_id, 0, context.error, INVALID_SESSION_ID, []
            )
        topics_in = context.topics
    max_bytes = min(request.max_bytes, broker.config.get("fetch.max.bytes"))
    quotas = broker.quotas
    quota = (quotas.fetch.enabled or ctx.started) and not follower  # not followers
    if quota and quotas.fetch.enabled:
        max_bytes = quotas.fetch_max_bytes(ctx, max_bytes)
    elif follower:
        ctx.started = 0.0  # a follower's fetch is exempt from request quotas too
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.max_wait_ms / 1000
    resolved = resolve_topics(broker, request, version, topics_in)
    keys = [(name, p.partition) for name, t in resolved if name is not None for p in t.partitions]
    denied = unauthorized_topics(ctx, request, resolved) if broker.authorizer is not None else None
    while True:
        topics, total, error = read_partitions(broker, request, version, max_bytes, resolved,
                                               denied)  # fmt: skip
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
        if version >= 13:  # a topic deleted (or re-created) meanwhile is not the same topic
            again = resolve_topics(broker, request, version, topics_in)
            if [n for n, _ in again] != [n for n, _ in resolved]:
                resolved = again
                keys = [(name, p.partition) for name, t in resolved if name is not None
                        for p in t.partitions]  # fmt: skip
                # Names found only now are authorized like the others, before any read.
                if broker.authorizer is not None:
                    denied = unauthorized_topics(ctx, request, resolved)
    endpoints = None
    if version >= 16 and error:  # only errors can name another leader
        endpoints = leader_endpoints(ctx, topics, [n for n, _ in resolved])
    if total:
        broker.metrics.record_fetch(_named(topics, resolved, version), total)
        if follower and broker.replica_manager.leader_quota is not None:
            record_throttled(broker.replica_manager.leader_quota, _named(topics, resolved, version))
    session_id, answer = INVALID_SESSION_ID, topics
    if context is not None:
        # Sized without touching the session first: a throttled answer carries nothing, and
        # the session must not count it as seen (Kafka's getResponseSize).
        session_id, answer = sessions.response_topics(
            context, topics, follower, version, now_ms(), update=not quota
        )
    response = encode_fetch_response(
        version, header.correlation_id, 0, ErrorCode.NONE, session_id, answer, endpoints
    )
    if quota:
        size = int.from_bytes(response[0][:4], "big") + 4
        busy = ctx.handler_seconds()  # every pass, not the long poll's waits
        throttle = quotas.fetch_throttle_ms(ctx, size, busy)
        keep = session_id if context is not None and context.kind == "incremental" else 0
        if throttle:  # Kafka answers a throttled fetch with no data (KIP-219)
            return encode_fetch_response(
                version, header.correlation_id, throttle, ErrorCode.NONE, keep, []
            )
        if context is not None:
            session_id, answer = sessions.response_topics(
                context, topics, follower, version, now_ms()
            )
            response = encode_fetch_response(
                version, header.correlation_id, 0, ErrorCode.NONE, session_id, answer, endpoints
            )
    if context is not None and context.kind == "full" and session_id != INVALID_SESSION_ID:
        # A follower's session is made once per leader it fetches from: say so. Consumers'
        # sessions come and go with them (debug).
        (log.info if follower else log.debug)(
            "fetch_session_created", session_id=session_id,
            replica_id=replica_id(request, version), partitions=len(keys),
            client_id=header.client_id,
        )  # fmt: skip
    return response


def record_throttled(quota, topics) -> None:
    """The bytes of throttled partitions sent to a follower, in sync or not (Kafka's
    sizeOfThrottledPartitions; records only, without the response's framing)."""
    size = 0
    for name, results in topics:
        for r in results:
            if r.records is not None and quota.is_throttled(name, r.partition_index):
                size += r.records.length
    quota.record(size, now_ms())


def _named(topics, resolved, version: int):
    """The response's topics keyed by name (for metrics), whatever the version keys them by."""
    if version < 13:
        return topics
    return [(name, results) for (name, _), (_, results) in zip(resolved, topics, strict=True)]

"""Incremental fetch sessions (KIP-227), Kafka's FetchSession.scala and FetchSessionHandler.

A fetcher that reads many partitions sends them all once (a full fetch, session epoch 0); the
broker keeps them as a session and answers with its id. Later requests (incremental, epoch 1,
2, ...) carry only the partitions whose fetch parameters changed and those to forget, and the
answer carries only the partitions with something new: records, a changed high watermark, last
stable offset or log start offset, an error, a diverging epoch. Epoch -1 ends a session (and
fetches without one).

Plain state, no I/O: the Fetch handler asks `FetchSessionCache.new_context` what to read and
`FetchContext.response_topics` what to answer; the replica fetcher builds its requests with a
`FetchSessionHandler`. Sessions are keyed by topic name below Fetch v13 and by topic id from
v13 on (a session of one kind used by the other is FETCH_SESSION_TOPIC_ID_ERROR, as Kafka).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ErrorCode

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
# Kafka's MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS: a session is safe from eviction by a
# larger one for this long after creation, and unused for longer it is stale.
EVICTION_MS = 120_000
# Bounds on the partitions sessions hold. Kafka bounds only the number of sessions
# (max.incremental.fetch.session.cache.slots, 1,000 by default), not their size, so one client
# could make a session hold any number of partitions (a Fetch request may name millions, and
# each incremental fetch may add more); a cached partition costs ~320 bytes here. A full fetch
# of more than MAX_SESSION_PARTITIONS is answered without a session (session id 0, as when the
# cache has no slot for it), and one that would take the cache past MAX_CACHED_PARTITIONS must
# evict sessions by Kafka's rules or go without. An incremental fetch that grows its session
# past either bound ends the session (FETCH_SESSION_ID_NOT_FOUND): the fetcher starts over with
# a full fetch. Either way it is still served, only without the incremental savings.
MAX_SESSION_PARTITIONS = 50_000
MAX_CACHED_PARTITIONS = 100_000  # all sessions together: ~32 MiB
_INT_MAX = (1 << 31) - 1
_LONG_MAX = (1 << 63) - 1


def next_epoch(epoch: int) -> int:
    """Kafka's FetchMetadata.nextEpoch: 1, 2, ... wrapping to 1, never 0 or -1."""
    if epoch < 0:
        return FINAL_EPOCH
    return 1 if epoch == _INT_MAX else epoch + 1


@dataclass(slots=True, eq=False)
class CachedPartition:
    """One partition of a session: the fetcher's last request parameters (the attribute names
    of a request's partition, so the read path takes either) and what was last answered."""

    topic: str
    partition: int
    topic_id: Any = None
    fetch_offset: int = -1
    partition_max_bytes: int = 0
    current_leader_epoch: int = -1
    last_fetched_epoch: int = -1
    log_start_offset: int = -1  # the fetcher's (followers send theirs)
    high_watermark: int = _LONG_MAX  # a v18 follower's
    # Last answered: -1 so a new partition is always in the next answer.
    sent_high_watermark: int = -1
    sent_last_stable_offset: int = -1
    sent_log_start_offset: int = -1

    def update_request(self, p) -> None:
        self.fetch_offset = p.fetch_offset
        self.partition_max_bytes = p.partition_max_bytes
        self.current_leader_epoch = getattr(p, "current_leader_epoch", -1)
        self.last_fetched_epoch = getattr(p, "last_fetched_epoch", -1)
        self.log_start_offset = getattr(p, "log_start_offset", -1)
        self.high_watermark = getattr(p, "high_watermark", _LONG_MAX)

    def must_respond(self, r, update: bool = True) -> bool:
        """Kafka's maybeUpdateResponseData: does the answer `r` (a FetchPartitionResult) hold
        anything the fetcher hasn't seen? With `update`, remember what it now will have."""
        respond = (
            (r.records is not None and r.records.length > 0)
            or self.sent_high_watermark != r.high_watermark
            or self.sent_last_stable_offset != r.last_stable_offset
            or self.sent_log_start_offset != r.log_start_offset
            or r.error_code != ErrorCode.NONE
            or r.diverging_epoch is not None
            or r.preferred_read_replica >= 0
        )
        if update:
            self.sent_high_watermark = r.high_watermark
            self.sent_last_stable_offset = r.last_stable_offset
            self.sent_log_start_offset = r.log_start_offset
            if r.error_code != ErrorCode.NONE:
                # Re-sent once the error is gone, since the cached HW no longer matches.
                self.sent_high_watermark = -1
        return respond


def session_key(topic: str, topic_id, partition: int):
    return (topic if topic_id is None else topic_id, partition)


@dataclass(slots=True, eq=False)
class FetchSession:
    id: int
    privileged: bool  # created by a follower
    uses_topic_ids: bool
    created_ms: int
    last_used_ms: int
    epoch: int  # the epoch the next request must carry
    partitions: OrderedDict = field(default_factory=OrderedDict)  # session_key -> Cached

    def evictable_key(self) -> tuple[bool, int, int]:
        """Kafka's EvictableKey order: unprivileged first, then fewer partitions, then id."""
        return (self.privileged, len(self.partitions), self.id)


@dataclass(slots=True)
class FetchContext:
    """What one Fetch request reads and how its answer is shaped.

    kind: "sessionless" (answer everything, session id 0), "full" (answer everything, then
    create a session), "incremental" (read the session's partitions, answer the changed ones),
    or "error" (answer `error` alone)."""

    kind: str
    error: int = ErrorCode.NONE
    session: FetchSession | None = None
    # What to read, in order: topics with `.partitions` (and `.topic`/`.topic_id` as the
    # request's): the request's own, or the session's as SessionTopic
    topics: list = field(default_factory=list)


@dataclass(slots=True)
class SessionTopic:
    """A run of a session's partitions of one topic, shaped like a request's topic."""

    topic: str | None
    topic_id: Any
    partitions: list


class FetchSessionCache:
    """Kafka's FetchSessionCache: at most `max_entries` sessions
    (max.incremental.fetch.session.cache.slots); a new session may evict a stale one (unused
    for EVICTION_MS), else the least valuable evictable one: a follower's session evicts a
    consumer's, and any session evicts a smaller one older than EVICTION_MS. The partitions
    they hold are bounded too (MAX_SESSION_PARTITIONS, MAX_CACHED_PARTITIONS)."""

    def __init__(self, max_entries: int, eviction_ms: int = EVICTION_MS, rng=None,
                 max_session_partitions: int = MAX_SESSION_PARTITIONS,
                 max_partitions: int = MAX_CACHED_PARTITIONS):  # fmt: skip
        self.max_entries = max_entries
        self.eviction_ms = eviction_ms
        self.max_session_partitions = max_session_partitions
        self.max_partitions = max_partitions
        self.sessions: dict[int, FetchSession] = {}
        self._rng = rng or random.Random()
        self.evictions = 0
        self.incremental_fetches = 0
        self.num_partitions = 0  # held by all sessions, kept as they change
        self.oversized = 0  # sessions refused or ended for their size

    # --- the request side ---------------------------------------------------------------------

    def new_context(self, version: int, request, follower: bool, now_ms: int) -> FetchContext:
        """Kafka's FetchManager.newContext for a Fetch request of `version` (7+)."""
        session_id, epoch = request.session_id, request.session_epoch
        if epoch in (INITIAL_EPOCH, FINAL_EPOCH):
            if session_id in self.sessions:  # a full fetch closes the session it names
                self._remove(self.sessions[session_id])
            kind = "sessionless" if epoch == FINAL_EPOCH or self.max_entries <= 0 else "full"
            return FetchContext(kind, topics=list(request.topics))
        session = self.sessions.get(session_id)
        if session is None:
            return FetchContext("error", ErrorCode.FETCH_SESSION_ID_NOT_FOUND)
        if session.epoch != epoch:
            return FetchContext("error", ErrorCode.INVALID_FETCH_SESSION_EPOCH)
        if session.uses_topic_ids != (version >= 13):
            return FetchContext("error", ErrorCode.FETCH_SESSION_TOPIC_ID_ERROR)
        before = len(session.partitions)
        _update_session(session, request, version)
        held = len(session.partitions)
        self.num_partitions += held - before
        if held > before and (
            held > self.max_session_partitions or self.num_partitions > self.max_partitions
        ):
            self._remove(session)
            self.oversized += 1
            return FetchContext("error", ErrorCode.FETCH_SESSION_ID_NOT_FOUND)
        if not held:
            # Every partition forgotten: the session ends, this fetch reads nothing.
            self._remove(session)
            return FetchContext("sessionless", topics=[])
        session.last_used_ms = now_ms
        session.epoch = next_epoch(session.epoch)
        self.incremental_fetches += 1
        return FetchContext("incremental", session=session, topics=_session_topics(session))

    # --- the response side --------------------------------------------------------------------

    def response_topics(self, context: FetchContext, results: list, follower: bool,
                        version: int, now_ms: int, update: bool = True) -> tuple[int, list]:  # fmt: skip
        """(session id, topics to answer) from what was read: `results` is [(topic key,
        [FetchPartitionResult])] in the order of `context.topics`. Without `update` (to size
        a response that may be throttled instead) neither the session nor the cache change."""
        if context.kind == "incremental":
            return context.session.id, _changed(context, results, update)
        if context.kind == "full" and update:
            session = self._create(context, results, follower, version, now_ms)
            return (session.id if session is not None else INVALID_SESSION_ID), results
        return INVALID_SESSION_ID, results

    def _create(self, context, results, privileged: bool, version: int, now_ms: int):
        size = sum(len(t.partitions) for t in context.topics)
        if size > self.max_session_partitions:
            self.oversized += 1
            return None
        while len(self.sessions) >= self.max_entries or (
            self.num_partitions + size > self.max_partitions
        ):
            if not self._try_evict(privileged, size, now_ms):
                return None
        session_id = self._new_id()
        session = FetchSession(session_id, privileged, version >= 13, now_ms, now_ms,
                               next_epoch(INITIAL_EPOCH))  # fmt: skip
        for t, (_, rs) in zip(context.topics, results, strict=True):
            name, topic_id = _names(t, version)
            answered = {r.partition_index: r for r in rs}
            for p in t.partitions:
                cp = CachedPartition(name, p.partition, topic_id)
                cp.update_request(p)
                r = answered.get(p.partition)
                if r is not None:
                    cp.must_respond(r)  # remember what this full answer told the fetcher
                session.partitions[session_key(name, topic_id, p.partition)] = cp
        self.sessions[session_id] = session
        self.num_partitions += len(session.partitions)
        return session

    def _new_id(self) -> int:
        while True:
            candidate = self._rng.randint(1, _INT_MAX)
            if candidate not in self.sessions:
                return candidate

    def _try_evict(self, privileged: bool, size: int, now_ms: int) -> bool:
        """Kafka's tryEvict: the least recently used session if stale; else the first of the
        sessions this one may evict, if it is worth less than the new one."""
        if not self.sessions:
            return False
        lru = min(self.sessions.values(), key=lambda s: (s.last_used_ms, s.id))
        if now_ms - lru.last_used_ms > self.eviction_ms:
            self._evict(lru)
            return True

        def evictable(s: FetchSession) -> bool:
            old = now_ms - s.created_ms > self.eviction_ms
            return (not s.privileged or old) if privileged else old

        candidates = [s for s in self.sessions.values() if evictable(s)]
        if not candidates:
            return False
        victim = min(candidates, key=FetchSession.evictable_key)
        if (privileged, size, 0) < victim.evictable_key():
            return False
        self._evict(victim)
        return True

    def _evict(self, session: FetchSession) -> None:
        self._remove(session)
        self.evictions += 1

    def _remove(self, session: FetchSession) -> None:
        del self.sessions[session.id]
        self.num_partitions -= len(session.partitions)


def _names(t, version: int) -> tuple[str | None, Any]:
    """A request topic's (name, topic id): by name below v13, by id from v13."""
    if version >= 13:
        return None, t.topic_id
    return t.topic, None


def _update_session(session: FetchSession, request, version: int) -> None:
    """Kafka's FetchSession.update: add or update the request's partitions, drop the
    forgotten ones."""
    parts = session.partitions
    for t in request.topics:
        name, topic_id = _names(t, version)
        for p in t.partitions:
            key = session_key(name, topic_id, p.partition)
            cp = parts.get(key)
            if cp is None:
                cp = parts[key] = CachedPartition(name, p.partition, topic_id)
            cp.update_request(p)
    for t in request.forgotten_topics_data or ():
        name, topic_id = _names(t, version)
        for index in t.partitions:
            parts.pop(session_key(name, topic_id, index), None)


def _session_topics(session: FetchSession) -> list:
    """The session's partitions in its order, consecutive ones of a topic grouped."""
    out: list[SessionTopic] = []
    for cp in session.partitions.values():
        if out and out[-1].topic == cp.topic and out[-1].topic_id == cp.topic_id:
            out[-1].partitions.append(cp)
        else:
            out.append(SessionTopic(cp.topic, cp.topic_id, [cp]))
    return out


def _changed(context: FetchContext, results: list, update: bool) -> list:
    """The incremental answer: only partitions with news. Those that return records move to
    the end of the session, so the next fetch reads the others first (Kafka's fairness)."""
    parts = context.session.partitions
    out = []
    to_end = []
    for t, (key, rs) in zip(context.topics, results, strict=True):
        kept = []
        for cp, r in zip(t.partitions, rs, strict=True):
            if cp.must_respond(r, update):
                kept.append(r)
                if r.records is not None and r.records.length > 0:
                    to_end.append(session_key(cp.topic, cp.topic_id, cp.partition))
        if kept:
            out.append((key, kept))
    if update:
        for k in to_end:
            parts.move_to_end(k)
    return out


class FetchSessionHandler:
    """The fetcher's side (Kafka's FetchSessionHandler), for the replica fetcher: builds each
    request's session id, epoch, partitions to send and partitions to forget."""

    def __init__(self) -> None:
        self.session_id = INVALID_SESSION_ID
        self.epoch = INITIAL_EPOCH
        self.sent: dict[tuple[str, int], tuple] = {}  # what the session holds, as last sent
        self._pending: dict = {}

    def build(self, wanted: dict[tuple[str, int], dict]) -> tuple[int, int, dict, list]:
        """(session id, epoch, partitions to send {tp: params}, forgotten [(topic, partition)])
        for fetching `wanted` ({(topic, partition): request partition dict})."""
        self._pending = dict(wanted)
        if self.epoch == INITIAL_EPOCH:
            # Full: (re)creates the session, closing the one named (Kafka's nextCloseExisting).
            return self.session_id, INITIAL_EPOCH, dict(wanted), []
        send = {tp: p for tp, p in wanted.items() if self.sent.get(tp) != _params(p)}
        forgotten = [tp for tp in self.sent if tp not in wanted]
        return self.session_id, self.epoch, send, forgotten

    def handle_response(self, error_code: int, session_id: int) -> None:
        """After the answer to the last built request: move to the next epoch, or start over
        with a full fetch after a session error (or when the leader made no session)."""
        if error_code != ErrorCode.NONE or session_id == INVALID_SESSION_ID:
            self.failed()
            if error_code == ErrorCode.FETCH_SESSION_ID_NOT_FOUND or error_code == ErrorCode.NONE:
                self.session_id = INVALID_SESSION_ID
            return
        self.session_id = session_id
        self.epoch = next_epoch(self.epoch)
        self.sent = {tp: _params(p) for tp, p in self._pending.items()}

    def failed(self) -> None:
        """The answer was lost or refused: the next request is full, closing the session."""
        self.epoch, self.sent = INITIAL_EPOCH, {}


def _params(p: dict) -> tuple:
    return (p["fetch_offset"], p["log_start_offset"], p["partition_max_bytes"],
            p["current_leader_epoch"], p["last_fetched_epoch"])  # fmt: skip

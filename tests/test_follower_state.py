"""A follower's truncation and a leader's fetch validation, driven deterministically: real logs
and leader epoch caches, the leader's answers handed to the follower's decision code (no sockets,
no ZooKeeper). Cases from issue 12: multi-round truncation (KIP-279), divergence found on the
fetch path (KIP-320), an epoch change under the same leader, a corrupt batch from the leader."""

from __future__ import annotations

import errno
import os
import time
import uuid

import pytest
from helpers import RawClient
from structlog.testing import capture_logs
from wire import fetch_body, produce_body, values_batch

from protocol import codec
from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from protocol.hotpath import FetchPartitionResult, encode_fetch_response
from pykbroker.cluster.follower import apply_epoch_end, last_fetched_epoch, truncate
from pykbroker.cluster.leader_epoch import LeaderEpochCache
from pykbroker.cluster.metadata import PartitionState, TopicInfo
from pykbroker.cluster.replica_fetcher import ReplicaFetcherManager
from pykbroker.cluster.replica_manager import Partition, ReplicaManager
from pykbroker.config import BrokerConfig, LogConfig
from pykbroker.storage.log import Log
from pykbroker.storage.log_dir_failure import LogDir
from pykbroker.storage.segment import LogSegment

LEADER, FOLLOWER, OTHER = 1, 2, 3
CONFIG = LogConfig(BrokerConfig({}).topic_defaults(), {})


def make_partition(tmp_path, node_id: int, epochs: list[tuple[int, int]], leo: int,
                   state: PartitionState) -> Partition:  # fmt: skip
    """A partition whose log holds one record per offset [0, leo), written in the given leader
    epochs ((epoch, start offset) pairs), with the matching epoch cache."""
    log = Log(str(tmp_path / f"node{node_id}" / "t-0"), "t", 0, CONFIG)
    starts = dict((start, epoch) for epoch, start in epochs)
    epoch = epochs[0][0]
    for offset in range(leo):
        epoch = starts.get(offset, epoch)
        batch = rb.build_batch([rb.Record(offset, int(time.time() * 1000), None, b"v")])
        log.append_as_leader(memoryview(batch), epoch)
    cache = LeaderEpochCache(log.dir)
    for e, start in epochs:
        cache.assign(e, start)
    p = Partition("t", 0, log, state, node_id)
    p.epoch_cache = cache
    return p


@pytest.fixture
def diverged(tmp_path):
    """The issue's case: follower epochs {0@0, 2@10} (LEO 15), leader {0@0, 1@5, 3@20} (LEO 25).
    The follower was leader in epoch 2, wrote 10-14 nobody else got; its 5-9 are from epoch 0
    but the leader's 5-9 are from epoch 1."""
    leader_state = PartitionState(LEADER, 3, [1, 2, 3], [LEADER, FOLLOWER], zk_version=0)
    leader = make_partition(tmp_path, LEADER, [(0, 0), (1, 5), (3, 20)], 25, leader_state)
    leader.reset_followers()
    leader.log.update_high_watermark(0)
    follower_state = PartitionState(LEADER, 3, [1, 2, 3], [LEADER, FOLLOWER], zk_version=0)
    follower = make_partition(tmp_path, FOLLOWER, [(0, 0), (2, 10)], 15, follower_state)
    follower.log.update_high_watermark(3)
    yield leader, follower
    leader.log.close()
    follower.log.close()


def test_truncation_asks_again_until_the_follower_has_the_leaders_epoch(diverged):
    leader, follower = diverged
    rounds = []
    done = False
    while not done:
        asked = follower.epoch_cache.latest_epoch
        epoch, end = leader.end_offset_for_epoch(asked)  # the OffsetsForLeaderEpoch answer
        done = apply_epoch_end(follower, epoch, end)
        rounds.append((asked, (epoch, end), follower.log.log_end_offset, done))
        assert len(rounds) <= 3
    # Round 1: the leader has no epoch 2 (its epoch 1 ends at 20); we never had epoch 1, so
    # cut back to where our epoch 0 ends (10) and ask about epoch 0: it ends at 5 on the leader.
    assert rounds == [(2, (1, 20), 10, False), (0, (0, 5), 5, True)]
    assert follower.epoch_cache.epochs == [0]


def test_divergence_found_on_the_fetch_path(diverged):
    leader, follower = diverged
    isr_changes = []
    leader.isr_listener = lambda p, isr: isr_changes.append(isr)

    def fetch(replica_id: int):
        return leader.follower_fetch(
            replica_id, follower.log.log_end_offset, last_fetched_epoch(follower.epoch_cache)
        )

    # The follower's fetch offset (15) is past where its last epoch (2) agrees with the leader:
    # answered as diverging, and counted neither for the HW nor for the ISR.
    assert fetch(FOLLOWER) == (1, 20)
    assert fetch(OTHER) == (1, 20)  # a replica outside the ISR: no expansion either
    assert leader.log.high_watermark == 0
    assert leader.followers[FOLLOWER].leo == -1 and isr_changes == []
    # The follower truncates from each answer; the next fetch names its new last epoch.
    assert not apply_epoch_end(follower, 1, 20)
    assert follower.log.log_end_offset == 10
    assert fetch(FOLLOWER) == (0, 5)
    assert leader.log.high_watermark == 0
    assert apply_epoch_end(follower, 0, 5)
    assert follower.log.log_end_offset == 5
    assert fetch(FOLLOWER) is None  # a prefix of the leader's log now: its offset counts
    assert leader.followers[FOLLOWER].leo == 5
    assert leader.log.high_watermark == 5


def test_a_fetch_offset_past_the_leaders_end_is_not_counted(diverged):
    leader, _ = diverged
    with pytest.raises(KafkaError) as e:
        leader.follower_fetch(OTHER, 30, -1)
    assert e.value.code == ErrorCode.OFFSET_OUT_OF_RANGE
    assert leader.followers[OTHER].leo == -1
    with pytest.raises(KafkaError) as e:  # an epoch newer than any the leader knows
        leader.follower_fetch(OTHER, 25, 4)
    assert e.value.code == ErrorCode.OFFSET_OUT_OF_RANGE


def test_leader_answers_diverging_epoch_on_the_wire(broker):
    """Fetch v12 from a consumer (replica_id -1) with last_fetched_epoch on a single broker
    (epoch 0 from offset 0): a fetch offset past the end of that epoch is answered with
    diverging_epoch and no records; a valid one is served."""
    client = RawClient(broker.port)
    try:
        r = client.request(
            ApiKey.PRODUCE, 9, produce_body("kip320", bytes(values_batch([b"a"] * 3)))
        )
        assert r.responses[0].partition_responses[0].error_code == 0

        def fetch(offset: int, last_epoch: int):
            body = fetch_body([("kip320", 0, offset)])
            body["topics"][0]["partitions"][0]["last_fetched_epoch"] = last_epoch
            return client.request(ApiKey.FETCH, 12, body).responses[0].partitions[0]

        p = fetch(5, 0)  # epoch 0 ends at 3 here: offsets 3 and 4 can't be ours
        assert p.error_code == 0 and not p.records
        assert (p.diverging_epoch.epoch, p.diverging_epoch.end_offset) == (0, 3)
        assert p.high_watermark == 3
        p = fetch(0, 0)
        assert p.error_code == 0 and p.records and p.diverging_epoch is None
        p = fetch(3, 5)  # an epoch the leader never had
        assert p.error_code == ErrorCode.OFFSET_OUT_OF_RANGE
    finally:
        client.close()


async def test_epoch_change_under_the_same_leader_restarts_the_fetch(tmp_path):
    """Leader 1 at epoch 5, then (A -> B -> A missed between two watch firings) leader 1 at
    epoch 7: the follower starts over with truncation, as Kafka's makeFollower does."""
    config = BrokerConfig({})
    metadata = _NoBrokers()
    rm = ReplicaManager(FOLLOWER, None, lambda topic: CONFIG, metadata, config)
    rm.ready = True
    rm.fetchers = ReplicaFetcherManager(FOLLOWER, metadata, config)
    p = make_partition(tmp_path, FOLLOWER, [(0, 0)], 3, PartitionState(-1, -1, [1, 2], [], -2))
    rm.partitions[("t", 0)] = p
    topic = TopicInfo("t", uuid.uuid4(), [p.state], {})

    def fetch_state():
        return rm.fetchers.fetchers[LEADER].partitions[("t", 0)]

    try:
        rm.partition_state_changed(topic, 0, PartitionState(LEADER, 5, [1, 2], [1, 2], 1))
        first = fetch_state()
        assert first.truncating and first.leader_epoch == 5
        first.truncating = False  # as after the fetcher's OffsetsForLeaderEpoch round
        # An ISR change (same leader, same epoch) keeps the fetch as it is.
        rm.partition_state_changed(topic, 0, PartitionState(LEADER, 5, [1, 2], [1], 2))
        assert fetch_state() is first and not first.truncating
        # A new epoch of the same leader: fetch afresh, truncating first.
        rm.partition_state_changed(topic, 0, PartitionState(LEADER, 7, [1, 2], [1], 3))
        again = fetch_state()
        assert again is not first and again.truncating and again.leader_epoch == 7
    finally:
        await rm.fetchers.shutdown()
        p.log.close()
    assert rm.fetchers.fetchers == {}


async def test_follower_refuses_a_corrupt_batch(tmp_path):
    """A batch whose CRC doesn't match, in the leader's Fetch response: refused and logged,
    nothing appended (as the leader refuses one from a producer)."""
    config = BrokerConfig({})
    metadata = _NoBrokers()
    state = PartitionState(LEADER, 0, [1, 2], [1, 2], 1)
    p = make_partition(tmp_path, FOLLOWER, [(0, 0)], 2, state)
    good = rb.build_batch(
        [rb.Record(2, int(time.time() * 1000), None, b"good")], partition_leader_epoch=0
    )
    bad = bytearray(rb.build_batch([rb.Record(3, 0, None, b"evil")], partition_leader_epoch=0))
    bad[-1] ^= 0xFF  # a flipped bit in the record, after the CRC was computed
    manager = ReplicaFetcherManager(FOLLOWER, metadata, config)
    manager.add_partition(p, LEADER)
    fetcher = manager.fetchers[LEADER]
    s = fetcher.partitions[("t", 0)]
    try:
        response = _fetch_response(bytes(good) + bytes(bad), high_watermark=4)
        with capture_logs() as logs, pytest.raises(KafkaError) as e:
            await fetcher._process(s, response)
        assert e.value.code == ErrorCode.CORRUPT_MESSAGE
        assert [x["base_offset"] for x in logs if x["event"] == "replica_fetch_corrupt_batch"] == [
            3
        ]
        assert p.log.log_end_offset == 2  # not even the good batch before it
        await fetcher._process(s, _fetch_response(bytes(good), high_watermark=3))
        assert p.log.log_end_offset == 3
    finally:
        await manager.shutdown()
        p.log.close()


class _NoBrokers:
    """Cluster metadata with no live broker: a fetcher never connects anywhere."""

    live_brokers: dict = {}

    def topic_configs(self, name: str) -> dict[str, str] | None:
        return None  # no topic has throttled replicas


def _fetch_response(records: bytes, high_watermark: int):
    """A leader's Fetch v12 response for t-0 carrying `records`, encoded and decoded as on the
    wire (the encoder is the leader's own)."""
    region = _Region(records)
    result = FetchPartitionResult(0, high_watermark=high_watermark, last_stable_offset=high_watermark,
                                  log_start_offset=0, records=region)  # fmt: skip
    parts = encode_fetch_response(12, 1, 0, 0, 0, [("t", [result])])
    frame = b"".join(p.data if isinstance(p, _Region) else p for p in parts)[4:]
    response = codec.decode_response(ApiKey.FETCH, 12, frame, 5)
    return response.responses[0].partitions[0]


class _Region:
    def __init__(self, data: bytes):
        self.data = data
        self.length = len(data)


async def test_no_fetcher_starts_after_shutdown(tmp_path):
    """Shutdown stops every fetcher and waits for them; a partition state change seen after it
    (a watch firing late) starts none again -- such a fetcher outlived the broker's stop."""
    config = BrokerConfig({})
    metadata = _NoBrokers()
    rm = ReplicaManager(FOLLOWER, None, lambda topic: CONFIG, metadata, config)
    rm.ready = True
    rm.fetchers = ReplicaFetcherManager(FOLLOWER, metadata, config)
    p = make_partition(tmp_path, FOLLOWER, [(0, 0)], 1, PartitionState(-1, -1, [1, 2], [], -2))
    rm.partitions[("t", 0)] = p
    topic = TopicInfo("t", uuid.uuid4(), [p.state], {})
    try:
        rm.partition_state_changed(topic, 0, PartitionState(LEADER, 5, [1, 2], [1, 2], 1))
        task = rm.fetchers.fetchers[LEADER].task
        rm.stopping = True
        await rm.fetchers.shutdown()
        assert task.done() and rm.fetchers.fetchers == {}
        rm.partition_state_changed(topic, 0, PartitionState(LEADER, 6, [1, 2], [1, 2], 2))
        rm.fetchers.add_partition(p, LEADER)
        assert rm.fetchers.fetchers == {}
    finally:
        await rm.fetchers.shutdown()
        p.log.close()


def test_failed_follower_truncation_takes_the_log_dir_offline(tmp_path, monkeypatch):
    """An EIO while truncating is the disk's failure (KAFKA_STORAGE_ERROR, dir offline), not a
    connection failure the fetcher retries forever."""
    state = PartitionState(LEADER, 3, [1, 2, 3], [LEADER, FOLLOWER], zk_version=0)
    follower = make_partition(tmp_path, FOLLOWER, [(0, 0)], 15, state)
    follower.log.log_dir = LogDir(str(tmp_path / f"node{FOLLOWER}"))

    def eio(self, offset):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(LogSegment, "truncate_to", eio)
    with pytest.raises(KafkaError) as raised:
        truncate(follower, 5, "test")
    assert raised.value.code == ErrorCode.KAFKA_STORAGE_ERROR
    assert follower.log.log_dir.offline
    follower.log.close()


def test_a_new_leader_whose_hw_lags_its_epoch_start_answers_offset_not_available(diverged):
    """KIP-207: a leader elected moments ago (epoch 3 starts at its offset 20) whose HW is still
    what it learned as a follower (0) must not answer an end offset below what the previous
    leader acknowledged: ListOffsets latest is OFFSET_NOT_AVAILABLE (78, retriable) until the
    ISR's fetches carry the HW into the epoch; then it answers the HW."""
    from pykbroker.handlers.list_offsets import EARLIEST, LATEST, list_offset

    leader, _ = diverged
    with pytest.raises(KafkaError) as e:
        list_offset(leader, LATEST, 0)
    assert e.value.code == 78
    assert list_offset(leader, EARLIEST, 0) == (-1, 0)  # the log start is known regardless
    with pytest.raises(KafkaError) as e:  # a timestamp lookup found nothing below the HW
        list_offset(leader, int(time.time() * 1000) + 60_000, 0)
    assert e.value.code == 78
    leader.update_follower(FOLLOWER, 25)  # the only other ISR member has everything
    assert leader.log.high_watermark == 25
    assert list_offset(leader, LATEST, 0) == (-1, 25)

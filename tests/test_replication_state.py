"""A leader Partition's replication bookkeeping on a real Log: HW over the ISR, ISR expansion
and shrinking, acks=all completion. (The cluster tests drive the same code over the network.)"""

from __future__ import annotations

import time

import pytest

from protocol import records as rb
from protocol.errors import ErrorCode
from pykbroker.cluster.metadata import PartitionState
from pykbroker.cluster.replica_manager import Partition
from pykbroker.config import BrokerConfig, LogConfig
from pykbroker.storage.log import Log

ME = 1


@pytest.fixture
def leader(tmp_path):
    config = LogConfig(BrokerConfig({}).topic_defaults(), {"min.insync.replicas": 2})
    log = Log(str(tmp_path / "t-0"), "t", 0, config)
    p = Partition("t", 0, log, PartitionState(ME, 3, [1, 2, 3], [1, 2], zk_version=0), ME)
    p.reset_followers()
    yield p
    log.close()


def append(p: Partition, n: int) -> int:
    base = p.log.log_end_offset
    batch = rb.build_batch(
        [rb.Record(base + i, int(time.time() * 1000), None, b"v") for i in range(n)]
    )
    return p.append_as_leader(memoryview(batch), -1).last_offset


def test_high_watermark_is_the_isr_minimum(leader):
    last = append(leader, 5)
    assert leader.log.high_watermark == 0  # follower 2's LEO unknown yet
    assert leader.replication_status(last + 1) is None
    leader.update_follower(3, 5)  # not in the ISR: doesn't count
    assert leader.log.high_watermark == 0
    leader.update_follower(2, 3)
    assert leader.log.high_watermark == 3
    leader.update_follower(2, 5)
    assert leader.log.high_watermark == 5
    assert leader.replication_status(last + 1) == ErrorCode.NONE
    leader.update_follower(2, 4)  # never backwards on a leader
    assert leader.log.high_watermark == 5


def test_isr_expands_once_caught_up_and_shrinks_when_lagging(leader):
    changes = []
    leader.isr_listener = lambda p, isr: changes.append(isr)
    append(leader, 4)
    leader.update_follower(2, 4)
    leader.update_follower(3, 2)  # behind the HW (4): not yet
    assert changes == []
    leader.update_follower(3, 4)
    assert changes == [[1, 2, 3]]
    assert leader.pending_isr == [1, 2, 3]
    # While the expansion is written, the joining replica holds the HW back (maximal ISR).
    append(leader, 1)
    leader.update_follower(2, 5)
    assert leader.log.high_watermark == 4
    leader.state = PartitionState(ME, 3, [1, 2, 3], [1, 2, 3], zk_version=1)
    leader.isr_change_done()
    assert leader.pending_isr is None
    # Follower 3 stops fetching: after replica.lag.time.max.ms it leaves the ISR.
    leader.followers[3].last_caught_up_ms -= 60_000
    leader.maybe_shrink_isr(30_000)
    assert changes[-1] == [1, 2]


def test_acks_all_after_the_isr_shrank_below_min_insync(leader):
    last = append(leader, 1)
    leader.update_follower(2, 1)
    leader.state = PartitionState(ME, 3, [1, 2, 3], [1], zk_version=1)
    assert leader.replication_status(last + 1) == ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    leader.state = PartitionState(2, 4, [1, 2, 3], [2], zk_version=2)
    assert leader.replication_status(last + 1) == ErrorCode.NOT_LEADER_OR_FOLLOWER

"""The replication throttle's arithmetic (Kafka's ReplicationQuotaManager), without clocks."""

from __future__ import annotations

from pykbroker.config import BrokerConfig
from pykbroker.quota.replication import ReplicationQuota, throttled_partitions


def test_throttled_replicas_lists():
    # Kafka's parseThrottledPartitions: "*" is every partition; else the pairs naming this broker.
    assert throttled_partitions("*", 1) is True
    assert throttled_partitions("0:1,1:2,2:1", 1) == {0, 2}
    assert throttled_partitions("0:1,1:2,2:1", 3) == frozenset()
    assert throttled_partitions("", 1) == frozenset()
    assert throttled_partitions(None, 1) == frozenset()


def test_quota_over_its_bound_until_the_window_passes(tmp_path):
    config = BrokerConfig({"log.dirs": str(tmp_path), "replication.quota.window.num": "2"})
    topics = {"t": {"follower.replication.throttled.replicas": "0:5,1:6"}}
    q = ReplicationQuota("follower", 5, config, topics.get)
    assert q.is_throttled("t", 0) and not q.is_throttled("t", 1) and not q.is_throttled("u", 0)
    # Unset (Kafka's default Long.MAX_VALUE): never exceeded, whatever is recorded.
    q.record(10**9, 0)
    assert not q.exceeded(0) and q.delay_ms(0) == 0
    config.set_dynamic({"follower.replication.throttled.rate": "1000"}, {})
    q = ReplicationQuota("follower", 5, config, topics.get)
    # Kafka's Rate at 500 ms: 500 ms elapsed plus the whole windows it lacks of samples - 1
    # (one), so the span is 1.5 s: 1000 B is 667 B/s, 2000 B is 1333 B/s, over the bound by
    # a third: QuotaUtils.throttleTime = (1333 - 1000) / 1000 * 1500 = 500 ms.
    q.record(1000, 0)
    assert not q.exceeded(500)
    q.record(1000, 500)
    assert q.exceeded(500) and q.delay_ms(500) == 500
    # Samples older than 2 windows are purged: within the bound again.
    assert not q.exceeded(2500)
    # A changed list is read again.
    topics["t"] = {"follower.replication.throttled.replicas": "*"}
    assert q.is_throttled("t", 1)

"""Replication throttles (Kafka's ReplicationQuotaManager, KIP-73), sans-io.

A reassignment run with `--throttle` marks the moving replicas in two topic configs,
`leader.replication.throttled.replicas` (the replicas copied from) and
`follower.replication.throttled.replicas` (the replicas copied to), as "partition:broker" pairs
or "*", and sets a rate on the brokers (`leader.replication.throttled.rate`,
`follower.replication.throttled.rate`). Each broker keeps one windowed rate per side across all
the partitions it throttles (replication.quota.window.num x replication.quota.window.size.seconds):
- leader side: a fetch from a replica that is not in the ISR gets no records of a throttled
  partition while the rate is over its bound; the bytes of throttled partitions sent to any
  follower are recorded (Kafka's sizeOfThrottledPartitions counts in-sync ones too);
- follower side: while the rate is over its bound a throttled partition that is not caught up
  (its fetch offset below the leader's HW) is left out of the next Fetch; the bytes appended
  for throttled partitions are recorded.
`replica.alter.log.dirs.io.max.bytes.per.second` bounds the same way the copying of replicas
between log dirs on one broker (every move is throttled, as Kafka's ReplicaAlterLogDirsThread).
Time is passed in (ms) so the arithmetic is tested without clocks.
"""

from __future__ import annotations

from .rate import Rate, throttle_time_ms

UNLIMITED = 2**63 - 1
RATE_KEYS = {
    "leader": "leader.replication.throttled.rate",
    "follower": "follower.replication.throttled.rate",
    "alter_log_dirs": "replica.alter.log.dirs.io.max.bytes.per.second",
}
REPLICAS_KEYS = {
    "leader": "leader.replication.throttled.replicas",
    "follower": "follower.replication.throttled.replicas",
}


def throttled_partitions(value: str | None, broker_id: int) -> frozenset[int] | bool:
    """Kafka's parseThrottledPartitions: True for "*", else the partitions whose pair names
    this broker."""
    if not value:
        return frozenset()
    entries = [e.strip() for e in value.split(",") if e.strip()]
    if entries == ["*"]:
        return True
    out = set()
    for e in entries:
        partition, _, broker = e.partition(":")
        if broker.strip().isdigit() and int(broker) == broker_id and partition.strip().isdigit():
            out.add(int(partition))
    return frozenset(out)


class ReplicationQuota:
    """One side's quota on one broker: `config` gives the (dynamic) rate, `topic_configs(name)`
    a topic's configs (None when unknown)."""

    def __init__(self, kind: str, broker_id: int, config, topic_configs=None):
        self.kind = kind
        self.broker_id = broker_id
        self.config = config
        self.topic_configs = topic_configs
        self.rate = Rate(
            config.get("replication.quota.window.num"),
            config.get("replication.quota.window.size.seconds") * 1000,
        )
        self._parsed: dict[str, tuple[str | None, frozenset[int] | bool]] = {}
        self.throttled_bytes = 0  # recorded in total (metrics, tests)

    @property
    def bound(self) -> int:
        return self.config.get(RATE_KEYS[self.kind])

    def is_throttled(self, topic: str, partition: int) -> bool:
        if self.kind == "alter_log_dirs":
            return True
        configs = self.topic_configs(topic) if self.topic_configs is not None else None
        raw = configs.get(REPLICAS_KEYS[self.kind]) if configs else None
        cached = self._parsed.get(topic)
        if cached is None or cached[0] != raw:
            cached = self._parsed[topic] = (raw, throttled_partitions(raw, self.broker_id))
        parts = cached[1]
        return parts is True or (parts is not False and partition in parts)

    def exceeded(self, now_ms: int) -> bool:
        """Kafka's isQuotaExceeded: the measured rate is over the bound."""
        bound = self.bound
        return bound < UNLIMITED and self.rate.measure(now_ms) > bound

    def delay_ms(self, now_ms: int) -> int:
        """How long until the rate is back within its bound, if nothing more is recorded."""
        bound = self.bound
        return 0 if bound >= UNLIMITED else throttle_time_ms(self.rate, bound, now_ms)

    def record(self, nbytes: int, now_ms: int) -> None:
        if nbytes > 0:
            self.rate.record(nbytes, now_ms)
            self.throttled_bytes += nbytes

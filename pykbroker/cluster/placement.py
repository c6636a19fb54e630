"""Replica placement, as Kafka's AdminUtils.assignReplicasToBrokers (plain code, no I/O).

Rack-unaware: partition p's first replica is broker (p + start) in the sorted broker list, the
others follow at a shift that grows by one every len(brokers) partitions, so leaders and
followers both spread evenly. Rack-aware (every broker has `broker.rack`): the same walk over
a rack-alternated broker list (one broker of each rack in turn), and a replica goes to a rack
that has none of the partition's replicas yet while there is one (then to any broker without
one). `start` and `shift` are random in Kafka unless fixed; callers pass them.
"""

from __future__ import annotations

from protocol.errors import ErrorCode, KafkaError


class RackInfoError(ValueError):
    """Some brokers have a rack and some don't (Kafka's AdminOperationException)."""


def rack_alternated(racks: dict[int, str]) -> list[int]:
    """Brokers ordered rack by rack in turn (racks sorted, brokers sorted within a rack)."""
    by_rack: dict[str, list[int]] = {}
    for broker, rack in racks.items():
        by_rack.setdefault(rack, []).append(broker)
    queues = [sorted(by_rack[r]) for r in sorted(by_rack)]
    out: list[int] = []
    i = 0
    while len(out) < len(racks):
        q = queues[i % len(queues)]
        if q:
            out.append(q.pop(0))
        i += 1
    return out


def _replica_index(first: int, shift: int, j: int, n: int) -> int:
    return (first + 1 + (shift + j) % (n - 1)) % n


def assign(partitions: int, replication_factor: int, brokers: dict[int, str | None],
           start: int = 0, shift: int = 0, first_partition: int = 0,
           rack_aware: bool = True) -> list[list[int]]:  # fmt: skip
    """Replica lists for partitions [first_partition, first_partition + partitions)."""
    if replication_factor <= 0:
        raise KafkaError(ErrorCode.INVALID_REPLICATION_FACTOR,
                         "Replication factor must be larger than 0.")  # fmt: skip
    if replication_factor > len(brokers):
        raise KafkaError(
            ErrorCode.INVALID_REPLICATION_FACTOR,
            f"Replication factor: {replication_factor} larger than available brokers: "
            f"{len(brokers)}.",
        )
    with_rack = {b: r for b, r in brokers.items() if r is not None}
    if rack_aware and with_rack and len(with_rack) != len(brokers):
        raise RackInfoError(
            "Not all brokers have rack information for replica rack aware assignment."
        )
    n = len(brokers)
    if rack_aware and with_rack:
        order = rack_alternated(with_rack)
        num_racks = len(set(with_rack.values()))
    else:
        order, num_racks = sorted(brokers), 0
    out = []
    for p in range(first_partition, first_partition + partitions):
        if p > 0 and p % n == 0:
            shift += 1
        first = (p + start) % n
        replicas = [order[first]]
        if num_racks == 0:
            replicas += [order[_replica_index(first, shift, j, n)]
                         for j in range(replication_factor - 1)]  # fmt: skip
        else:
            racks_used = {with_rack[order[first]]}
            k = 0
            while len(replicas) < replication_factor:
                b = order[_replica_index(first, shift * num_racks, k, n)]
                rack = with_rack[b]
                if (rack not in racks_used or len(racks_used) == num_racks) and (
                    b not in replicas or len(replicas) == n
                ):
                    replicas.append(b)
                    racks_used.add(rack)
                k += 1
        out.append(replicas)
    return out

"""Controlled shutdown's decisions, driven deterministically (no ZooKeeper, no sockets): the
controller's choice of leader and ISR with a broker shutting down (Kafka's
ControlledShutdownLeaderSelector: a new leader from the ISR minus that broker, the ISR without
it), which requests count (the broker epoch check), and what the stopping broker still waits
for."""

from __future__ import annotations

from pykbroker.cluster.controlled_shutdown import (
    decode_request,
    encode_request,
    remaining_partitions,
    shutting_down_brokers,
)
from pykbroker.cluster.controller import decide_state
from pykbroker.cluster.metadata import PartitionState


def state(leader: int, epoch: int, isr: list[int], replicas=(1, 2, 3)) -> PartitionState:
    return PartitionState(leader, epoch, list(replicas), isr, zk_version=4)


def decide(st, live=(1, 2, 3), shutting=(), unclean=False):
    return decide_state("t", st, set(live), set(shutting), lambda _t: unclean)


def test_leader_in_controlled_shutdown_hands_over_to_the_first_in_sync_replica():
    # Replicas in assignment order 1, 2, 3; 2 is out of sync, so 3 takes over, epoch + 1.
    assert decide(state(1, 7, [1, 3]), shutting={1}) == (3, 8, [3])
    assert decide(state(1, 7, [1, 2, 3]), shutting={1}) == (2, 8, [2, 3])


def test_leader_with_no_in_sync_successor_keeps_leading():
    # Kafka's selector finds no leader: nothing changes, the broker retries and then stops.
    assert decide(state(1, 7, [1]), shutting={1}) is None
    # ... never an out-of-sync replica, even with unclean election allowed ...
    assert decide(state(1, 7, [1]), shutting={1}, unclean=True) is None
    # ... but a dead replica still leaves its ISR.
    assert decide(state(1, 7, [1, 3]), live={1, 2}, shutting={1}) == (1, 8, [1])


def test_follower_in_controlled_shutdown_leaves_the_isr():
    assert decide(state(2, 3, [2, 1, 3]), shutting={1}) == (2, 4, [2, 3])
    assert decide(state(2, 3, [2, 3]), shutting={1}) is None  # already out


def test_two_brokers_shutting_down_at_once():
    assert decide(state(1, 0, [1, 2, 3]), shutting={1, 2}) == (3, 1, [3])


def test_a_dead_leader_never_fails_over_to_a_shutting_down_broker_while_another_is_in_sync():
    assert decide(state(1, 5, [1, 2, 3]), live={2, 3}, shutting={2}) == (3, 6, [3])
    # Only the shutting-down one is in sync: better it than an offline partition.
    assert decide(state(1, 5, [1, 2]), live={2, 3}, shutting={2}) == (2, 6, [2])


def test_new_partitions_avoid_shutting_down_brokers():
    new = PartitionState(-1, -1, [1, 2, 3], [], zk_version=-1)
    assert decide(new, shutting={1}) == (2, 0, [2, 3])


def test_without_controlled_shutdown_the_decisions_are_the_usual_ones():
    assert decide(state(1, 7, [1, 2, 3])) is None
    assert decide(state(1, 7, [1, 2, 3]), live={2, 3}) == (2, 8, [2, 3])
    assert decide(state(2, 7, [2, 1, 3]), live={2, 3}) == (2, 8, [2, 3])
    assert decide(state(1, 7, [1]), live={2, 3}) == (-1, 8, [1])
    assert decide(state(1, 7, [1]), live={2, 3}, unclean=True) == (2, 8, [2])


def test_only_a_request_naming_the_current_registration_counts():
    requests = {1: 100, 2: 90, 3: None}
    live_epochs = {1: 100, 2: 95, 3: 70}  # 2 restarted since it asked; 3's request unreadable
    assert shutting_down_brokers(requests, live_epochs, {1, 2, 3}) == {1}
    assert shutting_down_brokers(requests, live_epochs, {2, 3}) == set()  # 1 is gone
    assert decode_request(encode_request(12884901890)) == 12884901890
    assert decode_request(b"not json") is None and decode_request(None) is None


def test_what_the_stopping_broker_still_waits_for():
    states = [
        ("a", 0, state(1, 0, [1, 2, 3])),  # leads it, others live: must move
        ("a", 1, state(2, 0, [2, 1])),  # follows, in the ISR of a live leader: must leave
        ("a", 2, state(2, 0, [2, 3])),  # follows, already out of the ISR
        ("b", 0, state(1, 0, [1], replicas=(1,))),  # RF 1: nowhere to go (Kafka skips it too)
        ("b", 1, state(1, 0, [1], replicas=(1, 3))),  # its other replica is down
        ("b", 2, state(3, 0, [3, 1])),  # led by a dead broker: the controller's, not ours
    ]
    assert remaining_partitions(states, 1, {1, 2}) == [("a", 0), ("a", 1)]
    assert remaining_partitions(states, 1, {1}) == []

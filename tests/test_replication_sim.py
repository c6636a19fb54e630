"""The deterministic replication simulator (tests/replication_sim.py): many seeds, Kafka's
invariants after every step; a seed replays exactly; broken protocol variants are caught.

SIM_SEEDS=<n> runs more seeds (CI runs 600, about 12 s on 2 cores)."""

from __future__ import annotations

import os

import pytest
import replication_sim as sim

SEEDS = int(os.environ.get("SIM_SEEDS", "600"))


def test_seeds_keep_kafkas_invariants():
    failures = []
    acks = 0
    for seed in range(SEEDS):
        try:
            acks += len(sim.run_seed(seed).acked)
        except sim.Violation as e:
            failures.append(str(e))
    assert not failures, f"{len(failures)} of {SEEDS} seeds failed:\n" + "\n".join(failures[:10])
    assert acks > SEEDS  # the runs did acknowledge records (about 7 a seed)


def test_a_seed_replays_exactly():
    a, b = sim.Sim(1234, trace=True), sim.Sim(1234, trace=True)
    a.run()
    b.run()
    assert a.trace == b.trace and a.acked == b.acked and len(a.trace) > 20


@pytest.mark.parametrize("mutant", ["follower_never_truncates", "hw_ignores_isr"])
def test_broken_replication_is_caught(mutant, monkeypatch):
    """The invariants bite: a follower that never truncates to its leader, or a leader whose
    HW runs ahead of its ISR, fails seeds -- the same ones, with the same message, each time."""
    if mutant == "follower_never_truncates":
        monkeypatch.setattr(sim.Broker, "truncate", lambda self, offset: None)
    else:
        advance = sim.Sim.advance_hw

        def ahead(self, b):
            if b.leading:
                b.hw = b.leo
            advance(self, b)

        monkeypatch.setattr(sim.Sim, "advance_hw", ahead)

    def failing() -> dict[int, str]:
        out = {}
        for seed in range(24):
            try:
                sim.run_seed(seed)
            except sim.Violation as e:
                out[seed] = str(e)
        return out

    first = failing()
    assert len(first) >= 5, first
    assert failing() == first


def test_stale_follower_rejoining_after_an_unclean_election():
    """The follower led epoch 1 (offsets 5-9, never replicated); an out-of-sync replica was then
    elected uncleanly in epoch 2 with epoch 0 up to offset 7. The follower asks about epoch 1;
    the leader knows only epoch 0 below it, ending at 7; the follower's epoch 0 ends at 5, so it
    keeps 0-4 and fetches the leader's 5-6 and epoch 2 (Kafka's KIP-279 answer)."""
    from pykbroker.cluster.follower import truncation_for
    from pykbroker.cluster.leader_epoch import LeaderEpochCache

    follower, leader = LeaderEpochCache(None), LeaderEpochCache(None)
    follower.assign(0, 0)
    follower.assign(1, 5)
    leader.assign(0, 0)
    leader.assign(2, 7)
    epoch, end = leader.end_offset_for(follower.latest_epoch, 12)
    assert (epoch, end) == (0, 7)
    t = truncation_for(follower, 10, 3, epoch, end)
    assert (t.offset, t.complete) == (5, True)

"""The deterministic replication simulator (tests/replication_sim.py): many seeds of the real
controller, metadata cache, replica manager and follower code on a simulated network,
ZooKeeper and disk; Kafka's invariants after every step; a seed replays exactly; broken
variants are caught; and deterministic tests of the bugs it found.

SIM_SEEDS=<n> runs more seeds (CI runs 400, about 17 s of CPU)."""

from __future__ import annotations

import asyncio
import os

import pytest
import replication_sim as sim
from kazoo.exceptions import NodeExistsError

from pykbroker.cluster import controller as controller_mod
from pykbroker.cluster import follower
from pykbroker.cluster import zk as Z
from pykbroker.cluster.controller import Controller, decide_state, restarted_since
from pykbroker.cluster.leader_epoch import LeaderEpochCache
from pykbroker.cluster.metadata import PartitionState, TopicInfo
from pykbroker.cluster.replica_manager import Partition, ReplicaManager
from pykbroker.cluster.zk_metadata import ZkMetadata

SEEDS = int(os.environ.get("SIM_SEEDS", "400"))


def test_seeds_keep_kafkas_invariants():
    failures = []
    acks = power_losses = controller_epochs = several = 0
    for seed in range(SEEDS):
        try:
            s = sim.run_seed(seed)
        except sim.Violation as e:
            failures.append(str(e))
            continue
        acks += len(s.acked)
        power_losses += s.power_losses
        controller_epochs += s.controller_epoch_max
        several += len(s.assignment) > 1
    assert not failures, f"{len(failures)} of {SEEDS} seeds failed:\n" + "\n".join(failures[:10])
    # The runs did what they are for: acknowledged records, lost power, failed controllers
    # over, and ran several partitions.
    assert acks > 20 * SEEDS
    assert power_losses > SEEDS // 2
    assert controller_epochs > 2 * SEEDS
    assert several > SEEDS // 2


def test_a_seed_replays_exactly():
    a, b = sim.Sim(1234, trace=True), sim.Sim(1234, trace=True)
    with sim.quiet_logs():
        a.run()
        b.run()
    a.close()
    b.close()
    assert a.trace == b.trace and a.acked == b.acked and len(a.trace) > 50


def _failing(seeds: int) -> dict[int, str]:
    out = {}
    for seed in range(seeds):
        try:
            sim.run_seed(seed)
        except sim.Violation as e:
            out[seed] = str(e)
    return out


@pytest.mark.parametrize(
    "mutant", ["follower_never_truncates", "hw_ignores_isr", "restart_resumes_leadership"]
)
def test_broken_replication_is_caught(mutant, monkeypatch):
    """The invariants bite, through the real code: a follower that never truncates to its
    leader, a leader whose HW runs ahead of its ISR, or a restarted broker resuming a
    leadership from before its registration (the bug this simulator found) each fail seeds --
    the same ones, with the same message, each time."""
    if mutant == "follower_never_truncates":
        monkeypatch.setattr(follower, "truncate", lambda p, offset, reason: None)
    elif mutant == "hw_ignores_isr":
        advance = Partition.maybe_advance_high_watermark

        def ahead(self):
            if self.is_leader:
                self.log.high_watermark = self.log.log_end_offset
            return advance(self)

        monkeypatch.setattr(Partition, "maybe_advance_high_watermark", ahead)
    else:
        monkeypatch.setattr(ReplicaManager, "_role_state", lambda self, p, state: state)
        monkeypatch.setattr(controller_mod, "restarted_since", lambda st, live, epochs: set())
    first = _failing(20)
    assert len(first) >= 2, first
    assert _failing(20) == first


def _deposed_controller_writes(seed: int) -> tuple[sim.Sim, sim.Node, int]:
    """Run a seed's cluster until quiet; cut its controller off from ZooKeeper past its
    session; once another broker is controller (a higher controller epoch), have the deposed
    one -- still believing it is active, as it does until its /controller watch fires --
    write a partition's state at the znode's current version (so only the controller epoch
    can fence it); then reconnect it and let the write land."""
    s = sim.Sim(seed)
    for node in s.nodes.values():
        s.at(0, node.start)
    while not s.quiet():
        assert s.step()
    old = s.controller_node()
    old_epoch = old.controller.epoch
    s.cut_from_zk(old, 10_000)
    while (new := s.controller_node()) is None or new is old or not new.controller.active:
        assert s.step()
    assert old.controller.active and new.controller.epoch > old_epoch
    for _ in range(50):
        s.step()
    path = Z.state_path(sim.TOPIC, 0)
    version = s.zk.nodes[path].version
    leader, epoch, isr, _ = s.zk_state(0)
    write = sim.Task(old.controller._write_state(sim.TOPIC, 0, version, leader, epoch + 1, isr),
                     old)  # fmt: skip
    while not old.zk.queued:  # its transaction waits for the connection
        assert s.step()
    assert s.zk.nodes[path].version == version
    s.zk_cut.pop(old.id)
    old.zk.reconnect()
    for _ in range(200):
        s.step()
    return s, old, write


def test_a_deposed_controller_cannot_write():
    """Its write fails the /controller_epoch version check (the simulator's invariant would
    stop the run if a state written with a stale controller epoch landed): `_write_state`
    answers False and the deposed controller stands down (Kafka's ControllerMovedException)."""
    with sim.quiet_logs():
        s, old, write = _deposed_controller_writes(7)
    s.close()
    assert write.done() and write.result() is False
    assert not old.controller.active


def test_an_unfenced_controller_write_is_caught(monkeypatch):
    """The same with a controller that forgot the version of /controller_epoch it wrote (a
    check at version -1 passes whatever the version): the stale decision lands, and the
    simulator's invariant says so."""
    elect = Controller._elect

    async def elect_unfenced(self):
        await elect(self)
        self.epoch_zk_version = -1

    monkeypatch.setattr(Controller, "_elect", elect_unfenced)
    with pytest.raises(sim.Violation, match="written by a stale controller"), sim.quiet_logs():
        _deposed_controller_writes(7)


# --- the bugs the simulator found, one deterministic test each ----------------------------


class _Md:
    registration_zxid = 150  # this broker registered (czxid of /brokers/ids/1) at zxid 150


def _partition(rm: ReplicaManager) -> Partition:
    s = sim.Sim(0)
    lg = sim.SimLog(s, 1, 0)
    lg.append_as_leader((1, 2, 3), 3)
    p = Partition("t", 0, lg, PartitionState(-1, -1, [1, 2, 3], [], -2), 1)
    p.epoch_cache = LeaderEpochCache(None)
    rm.partitions[("t", 0)] = p
    rm.ready = True
    return p


def test_restarted_broker_does_not_resume_a_leadership_decided_before_it_registered():
    """Broker 1 led epoch 3 (state written at zxid 100), crashed, lost its unflushed tail to a
    power loss, and registered again at zxid 150 before any controller rewrote the state. It
    must not lead by that state (Kafka's restarted broker waits for the controller's
    LeaderAndIsr): its followers may hold acknowledged records it lost. A state written after
    its registration (zxid 200) it does lead by -- unless the controller decided it with an
    earlier registration of it in mind (broker epoch 120: its view of /brokers/ids lagged), which
    Kafka's brokers refuse too (LeaderAndIsr's broker epoch, KIP-380)."""
    rm = ReplicaManager(1, None, lambda _t: None, metadata=_Md())
    p = _partition(rm)
    topic = TopicInfo("t", sim.TOPIC_ID, [])
    stale = PartitionState(1, 3, [1, 2, 3], [1, 2, 3], 7, 2, zk_mzxid=100)
    rm.partition_state_changed(topic, 0, stale)
    assert not p.is_leader and p.state.leader == -1 and p.state.leader_epoch == 3
    lagging = PartitionState(1, 4, [1, 2, 3], [1], 8, 3, zk_mzxid=180, leader_registration=120)
    rm.partition_state_changed(topic, 0, lagging)
    assert not p.is_leader and p.state.leader_epoch == 4
    fresh = PartitionState(1, 5, [1, 2, 3], [1], 9, 3, zk_mzxid=200, leader_registration=150)
    rm.partition_state_changed(topic, 0, fresh)
    assert p.is_leader and p.state.leader_epoch == 5


def test_controller_treats_brokers_registered_after_the_state_as_failed():
    """State written at zxid 100: leader 1, ISR [1, 2, 3]. Brokers 1 and 3 registered again
    since (czxids 150, 160; a failover hid their restarts from the controller): for this
    partition they count as failed, so 2 leads in epoch 4 with ISR [2], as Kafka's controller
    does with a broker it saw fail and start. An offline partition is left to its last ISR
    member whatever its registration."""
    st = PartitionState(1, 3, [1, 2, 3], [1, 2, 3], 7, 2, zk_mzxid=100)
    live, epochs = {1, 2, 3}, {1: 150, 2: 90, 3: 160}
    assert restarted_since(st, live, epochs) == {1, 3}
    assert decide_state("t", st, live - restarted_since(st, live, epochs), set(),
                        lambda _t: False) == (2, 4, [2])  # fmt: skip
    # Elected (zxid 170, after every registration) by a controller that knew broker 1 by an
    # earlier registration (140): it restarted since, so it is failed for this partition too.
    lagging = PartitionState(1, 4, [1, 2, 3], [1, 2], 8, 2, zk_mzxid=170, leader_registration=140)
    assert restarted_since(lagging, live, epochs) == {1}
    offline = PartitionState(-1, 4, [1, 2, 3], [1], 8, 2, zk_mzxid=120)
    assert restarted_since(offline, live, epochs) == set()
    assert decide_state("t", offline, live, set(), lambda _t: False) == (1, 5, [1])


class _Stat:
    def __init__(self, owner: int, czxid: int = 0):
        self.ephemeralOwner, self.czxid = owner, czxid


class _ScriptedZk:
    """ZkClient's interface with answers given in order, for one interleaving."""

    def __init__(self, loop, session_id: int):
        self.loop, self.session_id = loop, session_id
        self.connected = asyncio.Event()
        self.connected.set()
        self.stopping = False
        self.answers: dict[str, list] = {}

    def watcher(self, fn):
        return fn

    async def _next(self, op: str, *args):
        answer = self.answers[op].pop(0)
        if callable(answer):
            answer = await answer(*args)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def create(self, path, value=b"", ephemeral=False, sequence=False, makepath=False):
        return await self._next("create", path)

    async def exists(self, path, watch=None):
        return await self._next("exists", path)

    async def get_children(self, path, watch=None):
        return await self._next("get_children", path)

    async def get(self, path, watch=None):
        return await self._next("get", path)


def _metadata(zk) -> ZkMetadata:
    return ZkMetadata(zk, "/unused", 1, ("127.0.0.1", 9001), None, None)


def test_register_broker_never_waits_for_its_own_registration():
    """The start-up registration found /brokers/ids/1 held by the previous run's session (5);
    while it looked again, its own session was renewed and the renewal's registration created
    the node (owner 7, this session). It must see the node is its own and go on, not wait
    for it to vanish (which it never does: the broker never became ready)."""

    async def main():
        zk = _ScriptedZk(asyncio.get_running_loop(), session_id=7)
        zk.answers = {
            "create": [NodeExistsError(), NodeExistsError()],
            "exists": [_Stat(5), _Stat(7), _Stat(7), _Stat(7, czxid=42)],
        }
        md = _metadata(zk)
        await asyncio.wait_for(md.register_broker(), 2.0)
        assert md.registration_zxid == 42 and 1 in md.live_brokers

    asyncio.run(main())


def test_overlapping_broker_reads_keep_the_latest():
    """Two reads of /brokers/ids overlap: the first listed 1, 2, 3 and is slow to fetch 3; the
    second, started by the watch when 3 left, lists 1, 2 and finishes first. The first must not
    install its older picture (3 live), since no watch is left to correct it: the controller
    kept a gone broker, or missed a new one, until the next change."""

    async def main():
        zk = _ScriptedZk(asyncio.get_running_loop(), session_id=7)
        release = asyncio.Event()
        data = Z.encode_broker(1, "127.0.0.1", 9092, None, "PLAINTEXT")

        async def slow(path):
            await release.wait()
            return data, _Stat(0, czxid=3)

        zk.answers = {
            "get_children": [["1", "2", "3"], ["1", "2"]],
            "get": [(data, _Stat(0, czxid=1)), (data, _Stat(0, czxid=2)), slow,
                    (data, _Stat(0, czxid=1)), (data, _Stat(0, czxid=2))],
        }  # fmt: skip
        md = _metadata(zk)
        first = asyncio.ensure_future(md._read_brokers())
        for _ in range(100):  # until the first read waits for broker 3
            if len(zk.answers["get"]) == 2 or first.done():
                break
            await asyncio.sleep(0)
        assert not first.done() and len(zk.answers["get"]) == 2
        await asyncio.wait_for(md._read_brokers(), 2.0)
        assert sorted(md.live_brokers) == [1, 2]
        release.set()
        await asyncio.wait_for(first, 2.0)
        assert sorted(md.live_brokers) == [1, 2]
        assert md.broker_epochs == {1: 1, 2: 2}

    asyncio.run(main())


def test_a_leadership_seen_before_the_broker_knows_its_registration_is_taken_once_it_does():
    """The controller saw broker 1's new registration (czxid 170) and elected it before the
    broker's own registration call had answered with that czxid (it still knew 150): not acted
    on at first, then taken once the registration is known (seed 601 stayed leaderless)."""
    md = _Md()
    state = PartitionState(1, 6, [1, 2, 3], [1], 9, 3, zk_mzxid=200, leader_registration=170)
    md.topic = lambda name: TopicInfo("t", sim.TOPIC_ID, [state])
    rm = ReplicaManager(1, None, lambda _t: None, metadata=md)
    p = _partition(rm)
    rm.partition_state_changed(md.topic("t"), 0, state)
    assert not p.is_leader
    md.registration_zxid = 170
    rm.registration_changed()
    assert p.is_leader and p.state.leader_epoch == 6

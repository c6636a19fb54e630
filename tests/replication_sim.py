"""A deterministic simulator of pykbroker's replication protocol (issue 12, "make it provable").

Three to five brokers replicate one partition in one process, on a simulated network (random
delays, drops, partitions between pairs), clock and ZooKeeper (conditional writes with znode
versions, watches that deliver the state as it is when they re-read, after a delay, so a
broker may miss A -> B -> A), with brokers crashing (the page cache survives a process crash:
the log is kept, the HW comes back from its last checkpoint) and restarting once their session
has expired, and clients producing acks=all (min.insync.replicas 2) to whichever broker their
possibly stale metadata names. Everything comes from one seed: a failing seed replays exactly
(`python tests/replication_sim.py SEED` prints its trace).

The decisions are the broker's own plain functions: the controller's `decide_state`, the
follower's `truncation_for` (OffsetsForLeaderEpoch and diverging-epoch answers), the leader's
`diverging_epoch` (KIP-320 fetch validation), and the real `LeaderEpochCache`. The shells here
do what replica_manager.Partition and the replica fetcher do around them: the HW is the
smallest LEO of the ISR (the joining follower counted while its addition is written), a
follower joins the ISR once at the HW and in the leader's epoch, lagging ones are dropped,
ISR changes are conditional writes at the znode version the leader saw.

Kafka's invariants are checked after every event:
- at most one leader per leader epoch;
- a broker's HW never moves back (within one run of the process);
- replicas are identical below the smaller of their HWs;
- an acknowledged record is never lost: every replica whose HW is past it holds it at its
  offset, every broker that becomes leader holds every record acknowledged so far, and a
  leader fenced by a newer one acknowledges nothing the newer leader lacks;
- at the end (faults healed, everyone restarted, quiet) the leader holds every acknowledged
  record at its acknowledged offset and every replica's log is the leader's.
"""

from __future__ import annotations

import heapq
import random
import sys
from dataclasses import dataclass, field

from protocol.errors import KafkaError
from pykbroker.cluster.controller import decide_state
from pykbroker.cluster.follower import diverging_epoch, truncation_for
from pykbroker.cluster.leader_epoch import LeaderEpochCache
from pykbroker.cluster.metadata import PartitionState

MIN_ISR = 2
SESSION_MS = 300  # a crashed broker leaves /brokers/ids after this
LAG_MS = 200  # replica.lag.time.max.ms
FETCH_MAX = 4  # records per fetch response


class Violation(AssertionError):
    pass


@dataclass
class Zk:
    """The partition's state znode, the registrations, and every (epoch, leader) written."""

    state: PartitionState
    live: set[int]
    leaders: dict[int, int] = field(default_factory=dict)


class Broker:
    def __init__(self, node_id: int, replicas: list[int]):
        self.id = node_id
        self.replicas = replicas
        self.alive = True
        self.run = 0  # process incarnation
        self.log: list[tuple[int, int]] = []  # (leader epoch, value) at each offset
        self.hw = 0
        self.hw_checkpoint = 0
        self.cache = LeaderEpochCache(None)
        self.known: PartitionState | None = None
        self.reset_roles()

    def reset_roles(self) -> None:
        self.leading = False
        self.follower_leo: dict[int, int] = {}
        self.caught_up: dict[int, int] = {}
        self.pending_isr: list[int] | None = None
        self.pending_acks: list[tuple[int, int]] = []  # (offset, value)
        self.following = -1
        self.epoch = -1  # the leader epoch it acts in
        self.truncating = False
        self.inflight = False

    @property
    def leo(self) -> int:
        return len(self.log)

    def truncate(self, offset: int) -> None:
        if offset < self.leo:
            del self.log[offset:]
        self.cache.truncate_from_end(self.leo)
        self.hw = min(self.hw, self.leo)


class Sim:
    def __init__(self, seed: int, trace: bool = False):
        self.rng = random.Random(seed)
        self.seed = seed
        self.trace_on = trace
        self.trace: list[str] = []
        n = self.rng.choice((3, 3, 4, 5))
        rf = min(n, self.rng.choice((3, 3, 4)))
        self.replicas = self.rng.sample(range(1, n + 1), rf)
        self.brokers = {i: Broker(i, self.replicas) for i in range(1, n + 1)}
        self.zk = Zk(PartitionState(-1, 0, self.replicas, [], -1), set(self.brokers))
        self.now = 0
        self.queue: list = []
        self.seq = 0
        self.cut: set[frozenset[int]] = set()  # pairs that can't talk
        self.acked: dict[int, tuple[int, int]] = {}  # value -> (offset, epoch)
        self.next_value = 0
        self.hw_seen: dict[tuple[int, int], int] = {}
        self.controller_due = False

    # --- the event loop -------------------------------------------------------------------------

    def at(self, delay: int, fn, *args) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (self.now + delay, self.seq, fn, args))

    def log(self, text: str) -> None:
        if self.trace_on:
            self.trace.append(f"{self.now:6d} {text}")

    def step(self) -> bool:
        if not self.queue:
            return False
        self.now, _, fn, args = heapq.heappop(self.queue)
        fn(*args)
        self.check()
        return True

    def send(self, src: int, dst: int, fn, *args) -> None:
        """A message: delivered after a random delay unless dropped, partitioned, or either
        end has died (or restarted) meanwhile."""
        if frozenset((src, dst)) in self.cut or self.rng.random() < 0.03:
            return
        runs = (self.brokers[src].run, self.brokers[dst].run)

        def deliver() -> None:
            s, d = self.brokers[src], self.brokers[dst]
            if (
                s.alive
                and d.alive
                and (s.run, d.run) == runs
                and frozenset((src, dst)) not in self.cut
            ):
                fn(*args)

        self.at(self.rng.randint(1, 20), deliver)

    # --- ZooKeeper and the controller -----------------------------------------------------------

    def schedule_controller(self) -> None:
        if not self.controller_due:
            self.controller_due = True
            self.at(self.rng.randint(1, 10), self.controller)

    def controller(self) -> None:
        self.controller_due = False
        change = decide_state("t", self.zk.state, set(self.zk.live), set(), lambda _t: False)
        if change is not None:
            self.write_state(*change)

    def write_state(self, leader: int, epoch: int, isr: list[int]) -> None:
        st = self.zk.state
        self.zk.state = PartitionState(leader, epoch, st.replicas, list(isr), st.zk_version + 1)
        if leader >= 0:
            seen = self.zk.leaders.setdefault(epoch, leader)
            if seen != leader:
                raise Violation(f"two leaders in epoch {epoch}: {seen} and {leader}")
        self.log(f"zk state leader={leader} epoch={epoch} isr={isr} v={self.zk.state.zk_version}")
        for b in self.brokers.values():
            if b.alive:
                self.at(self.rng.randint(1, 40), self.watch, b.id, b.run)
        self.schedule_controller()

    def watch(self, node_id: int, run: int) -> None:
        """A watch fired: the broker reads the znode as it is now (it may have missed some)."""
        b = self.brokers[node_id]
        if b.alive and b.run == run:
            self.apply(b, self.zk.state)

    def conditional_isr(self, node_id: int, run: int, version: int, epoch: int,
                        isr: list[int]) -> None:  # fmt: skip
        """A leader's ISR change reaching ZooKeeper: written only at the version it read."""
        b = self.brokers[node_id]
        ok = self.zk.state.zk_version == version
        if ok:
            st = self.zk.state
            self.zk.state = PartitionState(st.leader, st.leader_epoch, st.replicas, list(isr),
                                           version + 1)  # fmt: skip
            self.log(f"zk isr {isr} by {node_id} v={version + 1}")
            for o in self.brokers.values():
                if o.alive and o.id != node_id:
                    self.at(self.rng.randint(1, 40), self.watch, o.id, o.run)
            self.schedule_controller()

        def answer() -> None:
            if b.alive and b.run == run:
                if ok:
                    self.apply(b, self.zk.state if self.zk.state.zk_version == version + 1
                               else PartitionState(node_id, epoch, self.replicas, list(isr),
                                                   version + 1))  # fmt: skip
                if b.pending_isr is isr:
                    b.pending_isr = None
                    self.advance_hw(b)

        self.at(self.rng.randint(1, 10), answer)

    # --- a broker acting on a state -------------------------------------------------------------

    def apply(self, b: Broker, st: PartitionState) -> None:
        if b.id not in self.replicas:
            return  # hosts no replica of this partition
        if b.known is not None and st.zk_version <= b.known.zk_version:
            return
        old = b.known
        b.known = st
        if st.leader == b.id:
            if not b.leading or b.epoch != st.leader_epoch:
                self.become_leader(b, st)
            else:
                self.advance_hw(b)
        elif st.leader >= 0:
            if b.leading or old is None or b.following != st.leader or b.epoch != st.leader_epoch:
                self.fail_pending(b)
                b.reset_roles()
                b.following, b.epoch, b.truncating = st.leader, st.leader_epoch, True
                self.log(f"{b.id} follows {st.leader} in epoch {st.leader_epoch}")
        else:
            self.fail_pending(b)
            b.reset_roles()

    def become_leader(self, b: Broker, st: PartitionState) -> None:
        self.fail_pending(b)
        b.reset_roles()
        b.leading, b.epoch = True, st.leader_epoch
        b.cache.assign(st.leader_epoch, b.leo)
        b.follower_leo = {r: -1 for r in self.replicas if r != b.id}
        b.caught_up = {r: self.now for r in self.replicas if r != b.id}
        self.log(f"{b.id} leads epoch {st.leader_epoch} leo={b.leo} hw={b.hw}")
        for value, (offset, _epoch) in self.acked.items():
            if offset >= b.leo or b.log[offset][1] != value:
                raise Violation(f"new leader {b.id} (epoch {b.epoch}) lacks acked {value}@{offset}")
        self.advance_hw(b)

    def fail_pending(self, b: Broker) -> None:
        b.pending_acks = []  # their producers get NOT_LEADER_OR_FOLLOWER: nothing acked

    def advance_hw(self, b: Broker) -> None:
        """Partition.maybe_advance_high_watermark, then the acks=all answers it allows."""
        if not b.leading:
            return
        isr = set(b.known.isr) | set(b.pending_isr or ())
        hw = b.leo
        for r in isr:
            if r != b.id:
                leo = b.follower_leo.get(r, -1)
                if leo < 0:
                    return
                hw = min(hw, leo)
        if hw > b.hw:
            b.hw = hw
        done = [(o, v) for o, v in b.pending_acks if o < b.hw]
        if done:
            b.pending_acks = [(o, v) for o, v in b.pending_acks if o >= b.hw]
            if len(b.known.isr) >= MIN_ISR:
                for offset, value in done:
                    self.ack(b, offset, value)

    def ack(self, b: Broker, offset: int, value: int) -> None:
        self.acked[value] = (offset, b.epoch)
        self.log(f"{b.id} acks {value}@{offset} epoch {b.epoch}")
        for o in self.brokers.values():  # a newer leader must have what a fenced one acks
            if (o.alive and o.leading and o.epoch > b.epoch
                    and (offset >= o.leo or o.log[offset][1] != value)):  # fmt: skip
                raise Violation(f"fenced leader {b.id} (epoch {b.epoch}) acked {value}@"
                                    f"{offset}, which leader {o.id} (epoch {o.epoch}) lacks")  # fmt: skip

    def change_isr(self, b: Broker, isr: list[int]) -> None:
        b.pending_isr = isr
        self.send_zk(b, isr)

    def send_zk(self, b: Broker, isr: list[int]) -> None:
        self.at(self.rng.randint(1, 10), self.conditional_isr, b.id, b.run, b.known.zk_version,
                b.epoch, isr)  # fmt: skip

    # --- produce, fetch, OffsetsForLeaderEpoch ------------------------------------------------

    def produce(self) -> None:
        self.at(self.rng.randint(2, 12), self.produce)
        st = self.zk.state
        target = st.leader
        if self.rng.random() < 0.2:  # stale metadata
            target = self.rng.choice(list(self.brokers))
        b = self.brokers.get(target)
        if b is None or not b.alive or not b.leading or len(b.known.isr) < MIN_ISR:
            return
        value = self.next_value
        self.next_value += 1
        b.log.append((b.epoch, value))
        b.pending_acks.append((b.leo - 1, value))
        self.advance_hw(b)

    def tick(self, node_id: int, run: int) -> None:
        b = self.brokers[node_id]
        if not b.alive or b.run != run:
            return
        self.at(self.rng.randint(5, 15), self.tick, node_id, run)
        if self.rng.random() < 0.2:
            b.hw_checkpoint = b.hw
        if b.leading and b.pending_isr is None:
            lagging = [r for r in b.known.isr
                       if r != b.id and self.now - b.caught_up.get(r, self.now) > LAG_MS]  # fmt: skip
            if lagging:
                self.change_isr(b, [r for r in b.known.isr if r not in lagging])
        elif b.following >= 0 and not b.inflight:
            b.inflight = True
            if b.truncating:
                self.send(b.id, b.following, self.on_epoch_request, b.id, b.epoch,
                          b.cache.latest_epoch)  # fmt: skip
            else:
                self.send(b.id, b.following, self.on_fetch, b.id, b.epoch, b.leo,
                          b.cache.latest_epoch)  # fmt: skip
            self.at(60, self.fetch_timeout, b.id, b.run, b.following, b.epoch)

    def fetch_timeout(self, node_id: int, run: int, leader: int, epoch: int) -> None:
        b = self.brokers[node_id]
        if b.alive and b.run == run and b.following == leader and b.epoch == epoch:
            b.inflight = False

    def on_epoch_request(self, follower: int, epoch: int, requested: int) -> None:
        leader = self._leader_for(follower)
        if leader is None or leader.epoch != epoch:
            return
        answer = leader.cache.end_offset_for(requested, leader.leo)
        self.send(leader.id, follower, self.on_epoch_answer, follower, epoch, *answer)

    def _leader_for(self, follower: int) -> Broker | None:
        """The broker a follower fetches from, if it does lead (a stale one doesn't answer)."""
        following = self.brokers[follower].following
        leader = self.brokers.get(following)
        return leader if leader is not None and leader.leading else None

    def on_epoch_answer(self, follower: int, epoch: int, leader_epoch: int, end: int) -> None:
        b = self.brokers[follower]
        if b.epoch != epoch or not b.truncating:
            return
        b.inflight = False
        t = truncation_for(b.cache, b.leo, b.hw, leader_epoch, end)
        b.truncate(t.offset)
        b.truncating = not t.complete

    def on_fetch(self, follower: int, epoch: int, offset: int, last_epoch: int) -> None:
        leader = self._leader_for(follower)
        if leader is None or leader.epoch != epoch:
            return
        try:
            diverging = diverging_epoch(leader.cache, leader.leo, offset, last_epoch)
        except KafkaError:
            diverging = (-1, -1)
        if diverging is None and offset > leader.leo:
            diverging = (-1, -1)
        if diverging is not None:
            self.send(
                leader.id, follower, self.on_fetched, follower, epoch, offset, [], 0, diverging
            )
            return
        # Validated: the fetch offset is the follower's LEO.
        leader.follower_leo[follower] = offset
        if offset >= leader.leo:
            leader.caught_up[follower] = self.now
        if (follower not in leader.known.isr and leader.pending_isr is None
                and offset >= leader.hw and offset >= leader.cache.offsets[-1]):  # fmt: skip
            self.change_isr(leader, [*leader.known.isr, follower])
        self.advance_hw(leader)
        records = leader.log[offset : offset + FETCH_MAX]
        self.send(leader.id, follower, self.on_fetched, follower, epoch, offset, records,
                  leader.hw, None)  # fmt: skip

    def on_fetched(self, follower: int, epoch: int, offset: int, records, hw: int,
                   diverging) -> None:  # fmt: skip
        b = self.brokers[follower]
        if b.epoch != epoch or b.truncating or b.following < 0:
            return
        b.inflight = False
        if diverging is not None:
            if diverging == (-1, -1):
                b.truncating = True  # out of range: find the truncation point again
                return
            t = truncation_for(b.cache, b.leo, b.hw, *diverging)
            b.truncate(t.offset)
            return
        if offset != b.leo:
            return
        for record_epoch, value in records:
            b.cache.assign(record_epoch, b.leo)
            b.log.append((record_epoch, value))
        b.hw = max(b.hw, min(hw, b.leo))

    # --- faults -------------------------------------------------------------------------------

    def crash(self, node_id: int) -> None:
        b = self.brokers[node_id]
        if not b.alive:
            return
        self.log(f"crash {node_id}")
        b.alive = False
        b.reset_roles()
        self.at(SESSION_MS, self.session_expired, node_id, b.run)

    def session_expired(self, node_id: int, run: int) -> None:
        b = self.brokers[node_id]
        if b.run == run:
            self.zk.live.discard(node_id)
            self.log(f"session of {node_id} expired")
            self.schedule_controller()
            if not b.alive:
                self.at(self.rng.randint(1, 200), self.restart, node_id)

    def restart(self, node_id: int) -> None:
        b = self.brokers[node_id]
        if b.alive:
            return
        b.alive = True
        b.run += 1
        b.known = None
        b.reset_roles()
        b.hw = min(b.hw_checkpoint, b.leo)  # replication-offset-checkpoint
        b.cache.truncate_from_end(b.leo)
        self.zk.live.add(node_id)
        self.log(f"restart {node_id} leo={b.leo} hw={b.hw}")
        self.hw_seen = {k: v for k, v in self.hw_seen.items() if k[0] != node_id}
        self.at(self.rng.randint(1, 20), self.watch, node_id, b.run)
        self.at(1, self.tick, node_id, b.run)
        self.schedule_controller()

    def nemesis(self) -> None:
        self.at(self.rng.randint(20, 120), self.nemesis)
        r = self.rng.random()
        alive = [i for i, b in self.brokers.items() if b.alive]
        if r < 0.35 and len(alive) > 1:
            leader = self.zk.state.leader
            victim = (
                leader if leader in alive and self.rng.random() < 0.6 else self.rng.choice(alive)
            )
            self.crash(victim)
        elif r < 0.55:
            a, b = self.rng.sample(list(self.brokers), 2)
            self.cut.add(frozenset((a, b)))
            self.log(f"partition {a}|{b}")
        elif r < 0.75 and self.cut:
            self.cut.clear()
            self.log("heal")

    # --- invariants ---------------------------------------------------------------------------

    def check(self) -> None:
        alive = [b for b in self.brokers.values() if b.alive]
        for b in alive:
            key = (b.id, b.run)
            if b.hw < self.hw_seen.get(key, 0):
                raise Violation(f"HW of {b.id} moved back: {self.hw_seen[key]} -> {b.hw}")
            self.hw_seen[key] = b.hw
            if b.hw > b.leo:
                raise Violation(f"HW of {b.id} past its LEO")
        for i, a in enumerate(alive):
            for c in alive[i + 1 :]:
                below = min(a.hw, c.hw)
                if a.log[:below] != c.log[:below]:
                    raise Violation(f"replicas {a.id} and {c.id} differ below HW {below}")
        for value, (offset, _) in self.acked.items():
            for b in alive:
                if b.hw > offset and b.log[offset][1] != value:
                    raise Violation(f"acked {value}@{offset} lost on {b.id} (HW {b.hw})")

    # --- a run ----------------------------------------------------------------------------------

    def run(self, events: int = 400) -> None:
        self.schedule_controller()
        for b in self.brokers.values():
            self.at(1, self.tick, b.id, b.run)
        self.at(5, self.produce)
        self.at(50, self.nemesis)
        for _ in range(events):
            self.step()
        # Heal: no more faults, everyone back; run until quiet.
        self.queue = [e for e in self.queue if e[2] not in (self.nemesis, self.produce)]
        heapq.heapify(self.queue)
        self.cut.clear()
        for i, b in self.brokers.items():
            if not b.alive:
                self.at(SESSION_MS, self.session_expired, i, b.run)
        deadline = self.now + 5_000
        for _ in range(4_000):
            if self.quiet() or self.now > deadline or not self.step():
                break
        if not self.quiet():
            raise Violation(f"no quiet state after healing: {self.zk.state}")
        leader = self.brokers[self.zk.state.leader]
        for value, (offset, _) in self.acked.items():
            if offset >= leader.hw or leader.log[offset][1] != value:
                raise Violation(f"acked {value}@{offset} missing at the end")
        for r in self.replicas:
            if self.brokers[r].log != leader.log:
                raise Violation(f"replica {r} differs from the leader at the end")

    def quiet(self) -> bool:
        st = self.zk.state
        if st.leader < 0 or sorted(st.isr) != sorted(self.replicas):
            return False
        leader = self.brokers[st.leader]
        if not leader.leading or leader.hw != leader.leo:
            return False
        return all(self.brokers[r].alive and self.brokers[r].leo == leader.leo
                   and self.brokers[r].hw == leader.hw for r in self.replicas)  # fmt: skip


def run_seed(seed: int, trace: bool = False) -> Sim:
    sim = Sim(seed, trace)
    try:
        sim.run()
    except Violation as e:
        raise Violation(
            f"seed {seed}: {e} (replay: python tests/replication_sim.py {seed})"
        ) from None
    return sim


if __name__ == "__main__":
    s = Sim(int(sys.argv[1]), trace=True)
    try:
        s.run()
        print(f"seed {s.seed}: ok, {len(s.acked)} acks")
    finally:
        print("\n".join(s.trace[-200:]))

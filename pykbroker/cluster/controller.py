"""The controller: one broker, elected through the ephemeral /controller znode, that decides
partition leadership.

It works level-triggered: on any change it may care about (brokers come or go, topics or
partitions appear, deletions are requested, a state znode changes) it looks at the whole cached
picture again and writes what differs from what should be:

- a partition without a state znode gets one: leader = first live replica, ISR = live replicas;
- a partition whose leader is not alive, or not in the ISR (a leader whose log dir filled up or
  failed takes itself out), gets a new leader, the first live replica in assignment
  order that is in the ISR (leader epoch + 1); with none, the leader becomes -1 (offline) and the
  ISR keeps its last member, unless unclean.leader.election.enable allows an out-of-sync replica;
- dead replicas leave the ISR (leader epoch + 1, as Kafka's ZooKeeper-mode controller does);
- a broker that restarted (its /brokers/ids znode has a new czxid, Kafka's broker epoch) is
  treated as failed then started, so it never keeps leadership across a crash unnoticed;
- topics under /admin/delete_topics lose their znodes (every replica deletes its logs when
  the topic znode goes);
- a broker in controlled shutdown (controlled_shutdown.py: its /controlled_shutdown/N znode
  names its current registration) counts as gone for leadership and ISRs, except that a
  partition it leads keeps it as leader when no other ISR member is live (Kafka's
  ControlledShutdownLeaderSelector: new leader from the ISR minus the shutting-down broker);
- every leader.imbalance.check.interval.seconds (auto.leader.rebalance.enable), a broker that
  leads too few of the partitions it is the preferred (first) replica of gets them back when it
  is in their ISR;
- a partition being reassigned whose whole target is in the ISR completes its move
  (reassignment.py); reassignments come from AlterPartitionReassignments or, as in Kafka's
  ZooKeeper mode, /admin/reassign_partitions (deleted once all its moves are done);
- ElectLeaders (preferred or unclean) and /admin/preferred_replica_election elect on request.

Every write is a ZooKeeper transaction that also checks the /controller_epoch version, so a
deposed controller can't overwrite its successor's decisions; state writes are conditional on
the znode version read, so they never lose a leader's concurrent ISR change.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import structlog
from kazoo.exceptions import KazooException, RolledBackError

from protocol.errors import ErrorCode

from . import reassignment as R
from . import zk as Z
from .controlled_shutdown import CONTROLLED_SHUTDOWN, decode_request, shutting_down_brokers
from .metadata import registered_after
from .zk_metadata import NOT_READ, ZkMetadata

log = structlog.get_logger(__name__)


class Controller:
    def __init__(self, metadata: ZkMetadata, unclean_allowed: Callable[[str], bool], config=None):
        self.md = metadata
        self.zk = metadata.zk
        self.loop = metadata.loop
        self.node_id = metadata.node_id
        self.unclean_allowed = unclean_allowed
        self.active = False
        self.epoch = 0
        self.epoch_zk_version = -1
        self._scheduled = False
        self._electing = False
        self._inflight: set[tuple[str, int]] = set()
        self._deleting: set[str] = set()
        self._broker_epochs: dict[int, int] = {}
        self._stopped = False
        self.config = config
        self._rebalancer: asyncio.Task | None = None
        self.shutdown_requests: dict[int, int | None] = {}  # /controlled_shutdown: id -> epoch
        self.shutting_down: set[int] = set()
        self._completing: set[str] = set()  # topics whose reassignment completion is written
        self._zk_reassignments: dict[tuple[str, int], list[int]] = {}  # /admin/reassign_partitions
        self._deleting_reassign_znode = False

    def start(self) -> None:
        self.md.on_change = self.schedule
        self.md.on_controller_change = self._controller_changed
        self._controller_changed(self.md.controller_id)
        self.md._spawn(self.md.retrying(self._read_shutdown_requests), "controlled_shutdown")
        self.md._spawn(self.md.retrying(self._read_reassign_znode), "reassign_partitions")
        self.md._spawn(self.md.retrying(self._read_preferred_election_znode), "preferred_election")
        if self.config is not None and self.config.get("auto.leader.rebalance.enable"):
            self._rebalancer = self.loop.create_task(self._rebalance_loop())

    async def stop(self) -> None:
        self._stopped = True
        self.active = False
        if self._rebalancer is not None:
            self._rebalancer.cancel()

    # --- election -----------------------------------------------------------------------

    def _controller_changed(self, controller_id: int) -> None:
        if self.active and controller_id != self.node_id:
            log.info("controller_resigned", node_id=self.node_id, new_controller=controller_id)
            self.active = False
        if controller_id == -1 and not self._stopped and not self._electing:
            self.md._spawn(self.md.retrying(self._elect), "controller_election")

    async def _elect(self) -> None:
        self._electing = True
        try:
            while not self._stopped:
                try:
                    data, stat = await self.zk.get(Z.CONTROLLER_EPOCH)
                    epoch, version = int(data or b"0"), stat.version
                except Z.NoNodeError:
                    try:
                        await self.zk.create(Z.CONTROLLER_EPOCH, b"0")
                    except Z.NodeExistsError:
                        pass
                    continue
                registration = json.dumps(
                    {
                        "version": 1,
                        "brokerid": self.node_id,
                        "timestamp": str(int(time.time() * 1000)),
                    }
                ).encode()
                txn = self.zk.transaction()
                txn.create(Z.CONTROLLER, registration, ephemeral=True)
                txn.set_data(Z.CONTROLLER_EPOCH, str(epoch + 1).encode(), version)
                results = await self.zk.commit(txn)
                if isinstance(results[0], Z.NodeExistsError):
                    return  # someone else is controller; the /controller watch tells us more
                if isinstance(results[1], Z.BadVersionError):
                    continue  # an epoch bump raced with ours: read it again
                failed = [r for r in results if isinstance(r, Exception)]
                if failed:
                    raise failed[0]
                self.epoch = epoch + 1
                self.epoch_zk_version = results[1].version
                self.active = True
                self._broker_epochs = dict(self.md.broker_epochs)
                log.info("controller_elected", node_id=self.node_id, controller_epoch=self.epoch)
                self.schedule()
                # Requests left in ZooKeeper for the previous controller are ours now.
                self.md._spawn(self.md.retrying(self._read_reassign_znode), "reassign_partitions")
                self.md._spawn(self.md.retrying(self._read_preferred_election_znode),
                               "preferred_election")  # fmt: skip
                return
        finally:
            self._electing = False

    async def _read_shutdown_requests(self) -> None:
        w = self.md._watch(CONTROLLED_SHUTDOWN, self._read_shutdown_requests)
        await self.zk.ensure_path(CONTROLLED_SHUTDOWN)
        requests: dict[int, int | None] = {}
        for child in await self.zk.get_children(CONTROLLED_SHUTDOWN, watch=w):
            try:
                data, _ = await self.zk.get(f"{CONTROLLED_SHUTDOWN}/{child}")
                requests[int(child)] = decode_request(data)
            except (Z.NoNodeError, ValueError):
                continue
        self.shutdown_requests = requests
        self.schedule()

    # --- reconciliation -------------------------------------------------------------------

    def schedule(self) -> None:
        if self.active and not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._reconcile)

    def _reconcile(self) -> None:
        self._scheduled = False
        if not self.active:
            return
        md = self.md
        live = set(md.live_brokers)
        epochs = md.broker_epochs
        bounced = {
            b for b in live if b in self._broker_epochs and self._broker_epochs[b] != epochs.get(b)
        }
        if bounced:
            log.info("brokers_restarted", brokers=sorted(bounced))
            live -= bounced  # first as failed; the next pass sees them started
        shutting = shutting_down_brokers(self.shutdown_requests, epochs, live)
        if shutting != self.shutting_down:
            log.info("brokers_shutting_down", brokers=sorted(shutting))
        self.shutting_down = shutting
        for name in md.marked_for_deletion - self._deleting:
            self._deleting.add(name)
            md._spawn(self._delete_topic(name), "delete_topic")
        for name, info in list(md.topics.items()):
            for index, st in enumerate(info.partitions):
                if st.zk_version == NOT_READ or (name, index) in self._inflight:
                    continue
                change = decide_state(name, st, live - restarted_since(st, live, epochs),
                                      shutting, self.unclean_allowed)  # fmt: skip
                if change is not None:
                    self._inflight.add((name, index))
                    md._spawn(self._write_state(name, index, st.zk_version, *change), "state")
                elif st.reassigning and name not in self._completing:
                    done = R.completion(st, live - shutting)
                    if done is not None:
                        self._completing.add(name)
                        self._inflight.add((name, index))
                        md._spawn(self._complete_reassignment(name, index, st, *done), "reassign")
        zk_moves = self._zk_reassignments
        if zk_moves and not self._deleting_reassign_znode and all(map(self._moved, zk_moves)):
            self._deleting_reassign_znode = True
            md._spawn(self._delete_reassign_znode(), "reassign_partitions")
        self._broker_epochs = {b: e for b, e in epochs.items() if b not in bounced}
        if bounced:
            self.schedule()

    async def _rebalance_loop(self) -> None:
        interval = self.config.get("leader.imbalance.check.interval.seconds")
        threshold = self.config.get("leader.imbalance.per.broker.percentage") / 100
        while True:
            await asyncio.sleep(interval)
            if self.active:
                try:
                    self.rebalance_leaders(threshold)
                except Exception:
                    log.exception("leader_rebalance_failed")

    def rebalance_leaders(self, threshold: float) -> None:
        """Preferred replica election (Kafka's checkAndTriggerAutoLeaderRebalance)."""
        live = set(self.md.live_brokers)
        preferred: dict[int, list[tuple[str, int]]] = {}
        for name, info in self.md.topics.items():
            for index, st in enumerate(info.partitions):
                if st.replicas and st.zk_version >= 0:
                    preferred.setdefault(st.replicas[0], []).append((name, index))
        for broker_id, owned in preferred.items():
            if broker_id not in live or broker_id in self.shutting_down:
                continue
            states = [(n, i, self.md.topics[n].partitions[i]) for n, i in owned]
            elsewhere = [(n, i, st) for n, i, st in states if st.leader != broker_id]
            if not elsewhere or len(elsewhere) / len(states) <= threshold:
                continue
            for name, index, st in elsewhere:
                if broker_id in st.isr and (name, index) not in self._inflight:
                    log.info("preferred_replica_election", topic=name, partition=index,
                             leader=broker_id)  # fmt: skip
                    self._inflight.add((name, index))
                    self.md._spawn(
                        self._write_state(name, index, st.zk_version, broker_id,
                                          st.leader_epoch + 1, st.isr),
                        "preferred_election",
                    )  # fmt: skip

    async def _write_state(self, topic: str, index: int, version: int, leader: int,
                           leader_epoch: int, isr: list[int]) -> bool:  # fmt: skip
        """Write a partition's state znode at `version`; True once written."""
        path = Z.state_path(topic, index)
        registration = self.md.broker_epochs.get(leader, -1)
        data = Z.encode_state(leader, leader_epoch, isr, self.epoch, registration)
        try:
            if version == -1:
                await self.zk.ensure_path(Z.state_path(topic, index).rsplit("/", 1)[0])
            txn = self.zk.transaction()
            txn.check(Z.CONTROLLER_EPOCH, self.epoch_zk_version)
            if version == -1:
                txn.create(path, data)
            else:
                txn.set_data(path, data, version)
            results = await self.zk.commit(txn)
            # A failed transaction fails every op: RolledBackError on the epoch check only means
            # the state write lost a race, not that another controller took over.
            if isinstance(results[0], Exception) and not isinstance(results[0], RolledBackError):
                log.warning("controller_fenced", node_id=self.node_id, controller_epoch=self.epoch)
                self.active = False
                return False
            if isinstance(results[1], Exception):
                await self.md._read_state(topic, index)  # lost a race: look again
                return False
            new_version = 0 if version == -1 else results[1].version
            mzxid = -1 if version == -1 else results[1].mzxid
            log.info(
                "partition_state_changed", topic=topic, partition=index, leader=leader,
                leader_epoch=leader_epoch, isr=isr,
            )  # fmt: skip
            self.md.apply_state(topic, index, leader, leader_epoch, isr, self.epoch, new_version,
                                mzxid, registration)  # fmt: skip
            return True
        except KazooException as e:
            log.warning("partition_state_write_failed", topic=topic, partition=index, error=repr(e))
            await asyncio.sleep(0.5)
            return False
        finally:
            self._inflight.discard((topic, index))
            self.schedule()

    # --- elections on request (ElectLeaders, /admin/preferred_replica_election) ------------

    async def elect_leaders(self, election_type: int, partitions: list[tuple[str, int]] | None,
                            timeout_s: float) -> dict[tuple[str, int], tuple[int, str | None]]:  # fmt: skip
        """Elect leaders as asked; (error code, message) by partition, answered once the new
        state is in ZooKeeper (Kafka's DelayedElectLeader waits for the metadata likewise).
        With partitions=None, every partition, and those needing no election are left out
        (as Kafka's controller answers an election of all partitions)."""
        every = partitions is None
        if every:
            partitions = [(n, i) for n, info in self.md.topics.items()
                          for i in range(len(info.partitions))]  # fmt: skip
        deadline = self.loop.time() + max(timeout_s, 0.1)
        out = await asyncio.gather(*(self._elect_one(election_type, t, i, deadline)
                                     for t, i in partitions))  # fmt: skip
        return {
            tp: r for tp, r in zip(partitions, out, strict=True)
            if not (every and r[0] == ErrorCode.ELECTION_NOT_NEEDED)
        }  # fmt: skip

    async def _elect_one(self, election_type: int, topic: str, index: int,
                         deadline: float) -> tuple[int, str | None]:  # fmt: skip
        name = f"{topic}-{index}"
        while True:
            if not self.active:
                return ErrorCode.NOT_CONTROLLER, None
            info = self.md.topics.get(topic)
            if info is None or not 0 <= index < len(info.partitions):
                return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "The partition does not exist."
            st = info.partitions[index]
            if st.zk_version >= 0 and (topic, index) not in self._inflight:
                serving = set(self.md.live_brokers) - self.shutting_down
                e = R.elect(election_type, st, serving, name)
                if e.error:
                    return e.error, e.message
                if election_type == R.UNCLEAN and e.leader not in st.isr:
                    log.warning("unclean_leader_election", topic=topic, partition=index,
                                leader=e.leader, requested=True)  # fmt: skip
                self._inflight.add((topic, index))
                if await self._write_state(topic, index, st.zk_version, e.leader,
                                           st.leader_epoch + 1, list(e.isr)):  # fmt: skip
                    return ErrorCode.NONE, None
            if self.loop.time() >= deadline:
                return ErrorCode.REQUEST_TIMED_OUT, f"Timed out electing a leader for {name}"
            await asyncio.sleep(0.05)

    async def _read_preferred_election_znode(self) -> None:
        """Kafka's ZooKeeper-mode tools ask for preferred elections by creating this znode; the
        controller elects and deletes it."""
        path = Z.PREFERRED_REPLICA_ELECTION
        w = self.md._watch(path, self._read_preferred_election_znode)
        try:
            data, _ = await self.zk.get(path, watch=w)
        except Z.NoNodeError:
            if await self.zk.exists(path, watch=w) is not None:
                await self._read_preferred_election_znode()
            return
        if not self.active:
            return
        try:
            wanted = [(p["topic"], int(p["partition"])) for p in json.loads(data)["partitions"]]
        except (TypeError, ValueError, KeyError):
            log.warning("preferred_replica_election_unreadable", data=repr(data[:200]))
            wanted = []
        results = await self.elect_leaders(R.PREFERRED, wanted, 30.0)
        log.info("preferred_replica_election_done",
                 results={f"{t}-{i}": ErrorCode(c).name for (t, i), (c, _) in results.items()})  # fmt: skip
        try:
            await self.zk.delete(path)
        except Z.NoNodeError:
            pass

    # --- reassignments ------------------------------------------------------------------------

    async def alter_reassignments(self, changes: dict[tuple[str, int], list[int] | None]
                                  ) -> dict[tuple[str, int], tuple[int, str | None]]:  # fmt: skip
        """Start (target replicas) or cancel (None) reassignments: written to the topic znodes,
        answered once written; the moves themselves go on in the background."""
        by_topic: dict[str, dict[int, list[int] | None]] = {}
        for (t, i), target in changes.items():
            by_topic.setdefault(t, {})[i] = target
        results: dict[tuple[str, int], tuple[int, str | None]] = {}
        for topic, parts in by_topic.items():
            results.update(await self._alter_topic(topic, parts))
        return results

    async def _alter_topic(self, topic: str, parts: dict[int, list[int] | None]
                           ) -> dict[tuple[str, int], tuple[int, str | None]]:  # fmt: skip
        for _attempt in range(10):
            results: dict[tuple[str, int], tuple[int, str | None]] = {}
            if not self.active:
                return {(topic, i): (ErrorCode.NOT_CONTROLLER, None) for i in parts}
            info = self.md.topics.get(topic)
            if info is None or topic in self.md.marked_for_deletion:
                return {(topic, i): (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                     "The partition does not exist.") for i in parts}  # fmt: skip
            live = set(self.md.live_brokers)
            assignment = [list(st.replicas) for st in info.partitions]
            adding = {i: list(st.adding) for i, st in enumerate(info.partitions)}
            removing = {i: list(st.removing) for i, st in enumerate(info.partitions)}
            changed = False
            for i, target in parts.items():
                if not 0 <= i < len(info.partitions):
                    results[(topic, i)] = (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                           "The partition does not exist.")  # fmt: skip
                    continue
                st = info.partitions[i]
                if target is None:
                    if not st.reassigning:
                        results[(topic, i)] = (ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
                                               f"Unable to cancel reassignment of {topic}-{i}: "
                                               "no reassignment is in progress.")  # fmt: skip
                        continue
                    new = R.cancel(st)
                else:
                    bad = R.validate_replicas(list(target), live)
                    if bad is not None:
                        results[(topic, i)] = bad
                        continue
                    new = R.reassign_to(st, list(target))
                assignment[i], adding[i], removing[i] = new
                results[(topic, i)] = (ErrorCode.NONE, None)
                changed = True
                log.info("partition_reassignment", topic=topic, partition=i,
                         target=target, replicas=new[0], adding=new[1], removing=new[2])  # fmt: skip
            if not changed:
                return results
            data = Z.encode_topic(assignment, info.topic_id, adding, removing)
            txn = self.zk.transaction()
            txn.check(Z.CONTROLLER_EPOCH, self.epoch_zk_version)
            txn.set_data(Z.topic_path(topic), data, self.md._topic_versions.get(topic, -1))
            outcome = await self.zk.commit(txn)
            if isinstance(outcome[0], Exception) and not isinstance(outcome[0], RolledBackError):
                self.active = False
                continue
            await self.md._read_topic(topic)
            if not isinstance(outcome[1], Exception):
                self.schedule()
                return results
        return {(topic, i): (ErrorCode.REQUEST_TIMED_OUT, "The topic kept changing; try again.")
                for i in parts}  # fmt: skip

    async def _complete_reassignment(self, topic: str, index: int, st, leader: int,
                                     isr: list[int]) -> None:  # fmt: skip
        """One transaction: the new leader and ISR (leader epoch + 1) and replicas = target."""
        try:
            info = self.md.topics.get(topic)
            if info is None:
                return
            target = R.target_replicas(st)
            assignment = [list(p.replicas) for p in info.partitions]
            adding = {i: list(p.adding) for i, p in enumerate(info.partitions)}
            removing = {i: list(p.removing) for i, p in enumerate(info.partitions)}
            assignment[index], adding[index], removing[index] = target, [], []
            registration = self.md.broker_epochs.get(leader, -1)
            state = Z.encode_state(leader, st.leader_epoch + 1, isr, self.epoch, registration)
            txn = self.zk.transaction()
            txn.check(Z.CONTROLLER_EPOCH, self.epoch_zk_version)
            txn.set_data(Z.state_path(topic, index), state, st.zk_version)
            txn.set_data(Z.topic_path(topic),
                         Z.encode_topic(assignment, info.topic_id, adding, removing),
                         self.md._topic_versions.get(topic, -1))  # fmt: skip
            results = await self.zk.commit(txn)
            if isinstance(results[0], Exception) and not isinstance(results[0], RolledBackError):
                self.active = False
                return
            if any(isinstance(r, Exception) for r in results):
                await self.md._read_state(topic, index)
                await self.md._read_topic(topic)
                return
            log.info("partition_reassignment_completed", topic=topic, partition=index,
                     replicas=target, leader=leader, isr=isr)  # fmt: skip
            self.md.apply_state(topic, index, leader, st.leader_epoch + 1, isr, self.epoch,
                                results[1].version, results[1].mzxid, registration)  # fmt: skip
            await self.md._read_topic(topic)
        except KazooException as e:
            log.warning("reassignment_completion_failed", topic=topic, partition=index,
                        error=repr(e))  # fmt: skip
            await asyncio.sleep(0.5)
        finally:
            self._completing.discard(topic)
            self._inflight.discard((topic, index))
            self.schedule()

    def _moved(self, tp: tuple[str, int]) -> bool:
        info = self.md.topics.get(tp[0])
        if info is None or not 0 <= tp[1] < len(info.partitions):
            return True
        st = info.partitions[tp[1]]
        return not st.reassigning

    async def _read_reassign_znode(self) -> None:
        """Kafka's ZooKeeper-mode way to ask for reassignments: /admin/reassign_partitions. The
        controller starts each listed move and deletes the znode once all are done."""
        path = Z.REASSIGN_PARTITIONS
        w = self.md._watch(path, self._read_reassign_znode)
        try:
            data, _ = await self.zk.get(path, watch=w)
        except Z.NoNodeError:
            if await self.zk.exists(path, watch=w) is not None:
                await self._read_reassign_znode()
                return
            self._zk_reassignments = {}
            self._deleting_reassign_znode = False
            return
        try:
            wanted = {
                (p["topic"], int(p["partition"])): [int(r) for r in p["replicas"]]
                for p in json.loads(data)["partitions"]
            }
        except (TypeError, ValueError, KeyError):
            log.warning("reassign_partitions_unreadable", data=repr(data[:200]))
            wanted = {}
        if not self.active:
            return
        start = {}
        for (t, i), target in wanted.items():
            info = self.md.topics.get(t)
            if info is not None and 0 <= i < len(info.partitions):
                st = info.partitions[i]
                if R.target_replicas(st) != target or (
                    not st.reassigning and st.replicas != target
                ):
                    start[(t, i)] = target
        results = await self.alter_reassignments(start) if start else {}
        for tp, (code, message) in results.items():
            if code:
                log.warning("reassignment_refused", partition=f"{tp[0]}-{tp[1]}",
                            error=ErrorCode(code).name, message=message)  # fmt: skip
                wanted.pop(tp, None)
        self._zk_reassignments = wanted
        self.schedule()

    async def _delete_reassign_znode(self) -> None:
        try:
            await self.zk.delete(Z.REASSIGN_PARTITIONS)
            log.info("reassign_partitions_completed")
        except Z.NoNodeError:
            pass
        finally:
            self._zk_reassignments = {}
            self._deleting_reassign_znode = False

    async def _delete_topic(self, name: str) -> None:
        try:
            await self.zk.delete_recursive(Z.topic_path(name))
            try:
                await self.zk.delete(Z.topic_config_path(name))
            except Z.NoNodeError:
                pass
            try:
                await self.zk.delete(Z.delete_topic_path(name))
            except Z.NoNodeError:
                pass
            log.info("topic_deletion_completed", topic=name)
        finally:
            self._deleting.discard(name)


def decide_state(topic: str, st, live: set[int], shutting: set[int],
                 unclean_allowed: Callable[[str], bool]) -> tuple[int, int, list[int]] | None:  # fmt: skip
    """(leader, leader epoch, ISR) to write for a partition, or None if it's right. `live`:
    registered brokers; `shutting`: those of them in controlled shutdown."""
    serving = live - shutting
    if st.zk_version == -1:  # new partition: no state yet
        online = [r for r in st.replicas if r in serving]
        if not online:
            return None
        return online[0], 0, online
    isr = [r for r in st.isr if r in serving]
    candidates = [r for r in st.replicas if r in isr]
    if st.leader in shutting:
        if candidates:  # Kafka's ControlledShutdownLeaderSelector
            return candidates[0], st.leader_epoch + 1, isr
        # No one in sync to take over: it keeps leading until it stops; dead replicas still go.
        isr = [r for r in st.isr if r in live]
        return None if len(isr) == len(st.isr) else (st.leader, st.leader_epoch + 1, isr)
    if st.leader in live and (st.leader in st.isr or not candidates):
        if not isr:  # a leader out of its own ISR (failed log dir): keep who is left
            isr = [r for r in st.isr if r in live]
        if len(isr) == len(st.isr):
            return None
        return st.leader, st.leader_epoch + 1, isr
    # Here the leader is gone, or it took itself out of the ISR (its log dir failed).
    if candidates:
        leader = candidates[0]
    elif in_sync_shutting := [r for r in st.replicas if r in shutting and r in st.isr]:
        leader, isr = in_sync_shutting[0], in_sync_shutting[:1]  # better than offline
    elif unclean_allowed(topic):
        online = [r for r in st.replicas if r in serving]
        if not online:
            return _offline(st)
        leader, isr = online[0], [online[0]]
        log.warning("unclean_leader_election", topic=topic, leader=leader)
    else:
        return _offline(st)
    return leader, st.leader_epoch + 1, isr


def restarted_since(st, live: set[int], epochs: dict[int, int]) -> set[int]:
    """Live brokers that registered after the partition's state was written: for it they count
    as failed (out of the ISR, not its leader) until a new state is written. The controller
    that saw them restart does so anyway (`bounced`); this also covers restarts no controller
    saw, during a controller failover. A partition without a leader is left alone: its last ISR
    member coming back is who must lead it."""
    if st.leader < 0:
        return set()
    stale = {b for b in live if registered_after(st, epochs.get(b, -1))}
    if 0 <= st.leader_registration != epochs.get(st.leader, st.leader_registration):
        stale.add(st.leader)  # elected as an earlier registration of it: it restarted since
    return stale


def _offline(st) -> tuple[int, int, list[int]] | None:
    """No eligible leader: leader -1, the ISR keeps its last member (who alone may lead)."""
    if st.leader == -1:
        return None
    return -1, st.leader_epoch + 1, st.isr[-1:] if st.isr else []

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
  is in their ISR.

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

from . import zk as Z
from .controlled_shutdown import CONTROLLED_SHUTDOWN, decode_request, shutting_down_brokers
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

    def start(self) -> None:
        self.md.on_change = self.schedule
        self.md.on_controller_change = self._controller_changed
        self._controller_changed(self.md.controller_id)
        self.md._spawn(self.md.retrying(self._read_shutdown_requests), "controlled_shutdown")
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
                change = decide_state(name, st, live, shutting, self.unclean_allowed)
                if change is not None:
                    self._inflight.add((name, index))
                    md._spawn(self._write_state(name, index, st.zk_version, *change), "state")
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
                           leader_epoch: int, isr: list[int]) -> None:  # fmt: skip
        path = Z.state_path(topic, index)
        data = Z.encode_state(leader, leader_epoch, isr, self.epoch)
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
                return
            if isinstance(results[1], Exception):
                await self.md._read_state(topic, index)  # lost a race: look again
                return
            new_version = 0 if version == -1 else results[1].version
            log.info(
                "partition_state_changed", topic=topic, partition=index, leader=leader,
                leader_epoch=leader_epoch, isr=isr,
            )  # fmt: skip
            self.md.apply_state(topic, index, leader, leader_epoch, isr, self.epoch, new_version)
        except KazooException as e:
            log.warning("partition_state_write_failed", topic=topic, partition=index, error=repr(e))
            await asyncio.sleep(0.5)
        finally:
            self._inflight.discard((topic, index))
            self.schedule()

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


def _offline(st) -> tuple[int, int, list[int]] | None:
    """No eligible leader: leader -1, the ISR keeps its last member (who alone may lead)."""
    if st.leader == -1:
        return None
    return -1, st.leader_epoch + 1, st.isr[-1:] if st.isr else []

"""ZkMetadata: cluster metadata kept in ZooKeeper, cached locally and refreshed by watches.

Same interface as `LocalMetadata`, so handlers don't care which one runs. Reads come from the
local cache (never from ZooKeeper on a request path). Changes made by this broker (create,
delete, configs, partitions) update the cache at once and write their znodes in the
background; the watches then confirm them, as they deliver every other broker's changes.
`committed(topic)` is the write in flight for a topic: CreateTopics, CreatePartitions and
AlterConfigs answer only once ZooKeeper holds their change, as Kafka's do. A topic is created
with one transaction creating both its config and its assignment znodes, so of two brokers
creating the same name at once (CreateTopics here, a Metadata auto-create there) exactly one
writes anything; the other drops what it cached and reads what the winner wrote. A topic's
configs in the cache are always what was last read from its (watched) config znode.

Kafka's ZooKeeper-mode brokers learn partition leadership from the controller's LeaderAndIsr
and UpdateMetadata requests. pykbroker's brokers instead watch the partition state znodes
themselves: the controller only writes ZooKeeper, every broker reacts to the watches. Same
znodes, same epochs, one fewer RPC family to keep consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from protocol.errors import ErrorCode, KafkaError
from pykbroker.features import default_levels

from . import zk as Z
from .metadata import (
    DEFAULT_ENTITY,
    BrokerInfo,
    MetadataBase,
    PartitionState,
    TopicInfo,
    load_meta_properties,
    new_cluster_id,
)

log = structlog.get_logger(__name__)

NOT_READ = -2  # PartitionState.zk_version before its znode has been read
PRODUCER_ID_BLOCK_SIZE = 1000


class ZkMetadata(MetadataBase):
    def __init__(
        self, zk: Z.ZkClient, data_dir: str, node_id: int, advertised: tuple[str, int],
        rack: str | None, configured_cluster_id: str | None, listener_name: str = "PLAINTEXT",
    ):  # fmt: skip
        self.zk = zk
        self.loop = zk.loop
        self.data_dir = data_dir
        self.node_id = node_id
        self.broker = BrokerInfo(node_id, advertised[0], advertised[1], rack)
        self.listener_name = listener_name
        self.configured_cluster_id = configured_cluster_id
        self.cluster_id = ""
        self.live_brokers: dict[int, BrokerInfo] = {}
        self.topics: dict[str, TopicInfo] = {}
        self._topic_versions: dict[str, int] = {}  # zk version of /brokers/topics/T
        self.marked_for_deletion: set[str] = set()
        self._pending_creates: set[str] = set()  # written here, znode not written yet
        self._unconfirmed: set[str] = set()  # written here, znode not read back yet
        self._assumed_ids: set[str] = set()  # topics whose znode had no topic_id when read
        self._pending_deletes: set[str] = set()  # deletion requested here, not written yet
        self._writes: dict[str, asyncio.Future] = {}  # topic -> its write in flight from here
        self.broker_epochs: dict[int, int] = {}  # czxid of /brokers/ids/N: changes on restart
        self.registration_zxid = -1  # czxid of our own /brokers/ids/N, once registered
        self._brokers_reads = 0  # _read_brokers started so far
        self._topics_lock = asyncio.Lock()
        self._session_lost = False
        self._controller_id = -1
        self._watchers: dict[str, Callable] = {}
        self._tasks: set[asyncio.Task] = set()
        self._pid_next = 0
        self._pid_end = 0  # exclusive
        self._pid_prefetch: asyncio.Task | None = None
        self._pid_next_block: tuple[int, int] | None = None
        # Who reacts to changes (set by the broker's wiring).
        self.replica_manager = None  # partition_state_changed / topic_removed / update_config
        self.on_change: Callable[[], None] | None = None  # the controller's "look again"
        self.on_controller_change: Callable[[int], None] | None = None
        self.on_broker_configs: Callable[[], None] | None = None  # the broker re-applies them
        self.dynamic_configs: dict[str, dict[str, str]] = {}
        self.features: dict[str, int] = {}
        self.features_epoch = -1  # until /feature is read
        self.entity_configs: dict[str, dict[str, dict[str, str]]] = {t: {} for t in Z.ENTITY_TYPES}
        self.on_entity_configs: Callable[[str, str], None] | None = None  # (type, name) changed
        self.delegation_tokens: dict[str, dict] = {}

    # --- start-up -----------------------------------------------------------------------------

    async def start(self) -> None:
        for path in Z.PERSISTENT_PATHS:
            await self.zk.ensure_path(path)
        self.cluster_id = await self._cluster_id()
        load_meta_properties(self.data_dir, self.node_id, self.cluster_id)
        for entity in (str(self.node_id), DEFAULT_ENTITY):
            await self._read_broker_configs(entity)
        for entity_type in Z.ENTITY_TYPES:
            await self._read_entities(entity_type)
        await self._read_delegation_tokens()
        await self._read_brokers()
        await self._read_delete_requests()
        await self._read_topics()
        await self._read_controller()
        await self._read_features()
        await self._allocate_producer_id_block(prefetch=False)

    async def _cluster_id(self) -> str:
        """The cluster's id lives in /cluster/id; the first broker up creates it."""
        try:
            data, _ = await self.zk.get(Z.CLUSTER_ID)
            return json.loads(data)["id"]
        except Z.NoNodeError:
            pass
        cluster_id = self.configured_cluster_id or new_cluster_id()
        try:
            await self.zk.create(
                Z.CLUSTER_ID, json.dumps({"version": "1", "id": cluster_id}).encode()
            )
            log.info("cluster_id_created", cluster_id=cluster_id)
            return cluster_id
        except Z.NodeExistsError:
            data, _ = await self.zk.get(Z.CLUSTER_ID)
            return json.loads(data)["id"]

    async def register_broker(self) -> None:
        """Create /brokers/ids/N (ephemeral). A previous session of ours (a crash moments ago)
        may still hold it: wait for ZooKeeper to expire that session, as Kafka does."""
        path = Z.broker_path(self.node_id)
        b = self.broker
        data = Z.encode_broker(b.node_id, b.host, b.port, b.rack, self.listener_name, b.endpoints)
        warned = False
        while True:
            try:
                await self.zk.create(path, data, ephemeral=True)
                break
            except Z.NodeExistsError:
                stat = await self.zk.exists(path)
                if stat is not None and stat.ephemeralOwner == self.zk.session_id:
                    break
                if not warned:
                    log.warning("broker_id_registered_by_old_session", node_id=self.node_id)
                    warned = True
                gone = self.loop.create_future()
                stat = await self.zk.exists(path, watch=self.zk.watcher(_resolver(gone)))
                # Ours by now (a renewed session's registration ran meanwhile): never wait for
                # our own node to go.
                if stat is not None and stat.ephemeralOwner != self.zk.session_id:
                    await gone
        stat = await self.zk.exists(path)
        if stat is not None and stat.ephemeralOwner == self.zk.session_id:
            self.registration_zxid = stat.czxid
            if self.replica_manager is not None:
                self.replica_manager.registration_changed()
        self.live_brokers[self.node_id] = self.broker
        log.info("broker_registered", node_id=self.node_id, path=path)

    # --- queries ------------------------------------------------------------------------------

    @property
    def controller_id(self) -> int:
        return self._controller_id

    def brokers(self) -> list[BrokerInfo]:
        return [self.live_brokers[i] for i in sorted(self.live_brokers)]

    def live_broker_ids(self) -> list[int]:
        return sorted(self.live_brokers)

    def _check_not_being_deleted(self, name: str) -> None:
        if name in self.marked_for_deletion:
            raise KafkaError(
                ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' is marked for deletion."
            )

    # --- changes (cache now, ZooKeeper in the background) -------------------------------------

    def create_topic(
        self, name: str, assignment: list[list[int]], configs: dict[str, str]
    ) -> TopicInfo:
        """Kafka's AdminZkClient order: the config znode first, then the topic znode (which the
        controller watches); the controller then elects leaders."""
        topic_id = uuid.uuid4()
        info = TopicInfo(
            name, topic_id,
            [PartitionState(-1, 0, list(r), [], zk_version=-1) for r in assignment],
            dict(configs),
        )  # fmt: skip
        self.topics[name] = info
        self.topic_added()
        self._pending_creates.add(name)
        self._unconfirmed.add(name)

        async def write() -> None:
            try:
                won = await self._create_topic_znodes(name, assignment, topic_id, configs)
            finally:
                self._pending_creates.discard(name)
            if won:
                log.info("topic_created", topic=name, partitions=len(assignment),
                         replication_factor=len(assignment[0]))  # fmt: skip
            else:
                # Another broker created it first: what we cached (our assignment, our
                # configs) was never true. Forget it and take what the winner wrote.
                log.warning("topic_creation_lost_race", topic=name)
                self._unconfirmed.discard(name)
                if self.topics.get(name) is info:
                    del self.topics[name]
                    if self.replica_manager is not None:
                        self.replica_manager.remove_topic(name, len(info.partitions))
            await self._read_topics()
            if not won:
                raise KafkaError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")

        self._track(name, self._spawn(write(), "create_topic"))
        return info

    async def _create_topic_znodes(self, name: str, assignment: list[list[int]],
                                   topic_id: uuid.UUID, configs: dict[str, str]) -> bool:  # fmt: skip
        """Create /config/topics/T and /brokers/topics/T together, only if T doesn't exist
        (ZooKeeper's create: NodeExists for the loser of a race). False: it existed."""
        config_path, topic_path = Z.topic_config_path(name), Z.topic_path(name)
        config_data, topic_data = Z.encode_config(configs), Z.encode_topic(assignment, topic_id)
        config_version = None  # None: create the config znode; else overwrite this version
        while True:
            txn = self.zk.transaction()
            if config_version is None:
                txn.create(config_path, config_data)
            else:
                txn.set_data(config_path, config_data, config_version)
            txn.create(topic_path, topic_data)
            results = await self.zk.commit(txn)
            if not any(isinstance(r, Exception) for r in results):
                return True
            if isinstance(results[1], Z.NodeExistsError):
                return False
            if await self.zk.exists(topic_path) is not None:
                return False
            if isinstance(results[0], Z.NodeExistsError | Z.BadVersionError):
                # A config znode without a topic: left by a deletion cut short. Overwrite it,
                # at the version read, so a concurrent creator still wins or loses cleanly.
                stat = await self.zk.exists(config_path)
                config_version = stat.version if stat is not None else None
                continue
            if isinstance(results[0], Z.NoNodeError):
                await self.zk.ensure_path(Z.CONFIG_TOPICS)
                config_version = None
                continue
            raise next(r for r in results if isinstance(r, Exception))

    def committed(self, name: str) -> Awaitable[None] | None:
        """The write of this broker's latest change to topic `name`, while in flight (it raises
        KafkaError TOPIC_ALREADY_EXISTS for a create that lost a race)."""
        return self._writes.get(name)

    def _track(self, name: str, task: asyncio.Future) -> None:
        self._writes[name] = task

        def done(t: asyncio.Future) -> None:
            if self._writes.get(name) is t:
                del self._writes[name]

        task.add_done_callback(done)

    def delete_topic(self, name: str) -> TopicInfo:
        """Mark for deletion (/admin/delete_topics/T); the controller removes the znodes and every
        replica deletes its logs when the topic's znode goes."""
        info = self.topics.pop(name)
        self.marked_for_deletion.add(name)
        self._pending_deletes.add(name)

        async def write() -> None:
            try:
                await self.zk.create(Z.delete_topic_path(name))
            except Z.NodeExistsError:
                pass
            finally:
                self._pending_deletes.discard(name)
            log.info("topic_marked_for_deletion", topic=name)
            await self._read_delete_requests()

        self._spawn(write(), "delete_topic")
        return info

    def set_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        self.topics[name].configs = dict(configs)
        path = Z.topic_config_path(name)

        async def write() -> None:
            try:
                await self._set_or_create(path, Z.encode_config(dict(configs)))
            finally:
                await self._read_topic_configs(name)  # what ZooKeeper holds, come what may

        self._track(name, self._spawn(write(), "set_topic_configs"))

    def set_broker_configs(self, entity: str, configs: dict[str, str]) -> None:
        """Cache at once (this broker applies them now); other brokers see the znode change."""
        self.dynamic_configs[entity] = dict(configs)
        self._spawn(
            self._set_or_create(Z.broker_config_path(entity), Z.encode_config(dict(configs))),
            "set_broker_configs",
        )

    def alter_entity_configs(self, entity_type: str, name: str, changes: dict[str, str | None]):
        """Set (or with None remove) some keys of /config/<type>/<name>, keeping the others
        (a user's znode holds quotas and SCRAM credentials, each written by its own code):
        read-modify-write on the znode's version, then Kafka's change notification. Cached at
        once; the returned future is the write (answer after it)."""
        cached = self.entity_configs[entity_type]
        merged = _merged(cached.get(name, {}), changes)
        if merged:
            cached[name] = merged
        else:
            cached.pop(name, None)
        path = Z.entity_config_path(entity_type, name)

        async def write() -> None:
            try:
                while True:
                    try:
                        data, stat = await self.zk.get(path)
                        current, version = Z.decode_config(data), stat.version
                    except Z.NoNodeError:
                        current, version = {}, None
                    data = Z.encode_config(_merged(current, changes))
                    try:
                        if version is None:
                            await self.zk.create(path, data, makepath=True)
                        else:
                            await self.zk.set(path, data, version)
                        break
                    except (Z.BadVersionError, Z.NodeExistsError, Z.NoNodeError):
                        continue  # changed under us: read again
                notice = {"version": 2, "entity_path": f"{entity_type}/{Z.sanitize(name)}"}
                await self.zk.create(f"{Z.CONFIG_CHANGES}/config_change_",
                                     json.dumps(notice).encode(), sequence=True)  # fmt: skip
            finally:
                await self._read_entity(entity_type, name)  # what ZooKeeper holds

        return self._spawn(write(), "alter_entity_configs")

    def add_partitions(self, name: str, assignment: list[list[int]]) -> None:
        info = self.topics[name]
        old_count = len(info.partitions)
        info.partitions.extend(
            PartitionState(-1, 0, list(r), [], zk_version=-1) for r in assignment
        )
        full = [p.replicas for p in info.partitions]
        adding = {i: p.adding for i, p in enumerate(info.partitions) if p.adding}
        removing = {i: p.removing for i, p in enumerate(info.partitions) if p.removing}
        data = Z.encode_topic(full, info.topic_id, adding, removing)
        version = self._topic_versions.get(name, -1)

        async def write() -> None:  # _spawn takes a coroutine; zk.set returns a future
            try:
                await self.zk.set(Z.topic_path(name), data, version)
            except Z.BadVersionError:
                # Changed meanwhile (another broker added partitions): take ZooKeeper's version.
                del info.partitions[old_count:]
                await self._read_topic(name)
                raise KafkaError(
                    ErrorCode.INVALID_PARTITIONS,
                    f"The partitions of topic {name} changed concurrently; try again.",
                ) from None

        self._track(name, self._spawn(write(), "add_partitions"))

    async def _read_features(self) -> None:
        """/feature, watched; the first broker of a new cluster writes 4.1's defaults."""
        w = self._watch(Z.FEATURE, self._read_features)
        try:
            data, stat = await self.zk.get(Z.FEATURE, watch=w)
        except Z.NoNodeError:
            try:
                await self.zk.create(Z.FEATURE, Z.encode_features(default_levels()))
            except Z.NodeExistsError:
                pass
            return await self._read_features()
        if stat.version >= self.features_epoch:
            self.features, self.features_epoch = Z.decode_features(data), stat.version

    def update_features(self, change) -> Awaitable[None]:
        """A conditional write of /feature at the version last read; on a conflict the levels
        are read again and `change` applied to them anew."""

        async def write() -> None:
            while True:
                new = change(dict(self.features))
                try:
                    stat = await self.zk.set(Z.FEATURE, Z.encode_features(new), self.features_epoch)
                except Z.BadVersionError:
                    await self._read_features()
                    continue
                if stat.version > self.features_epoch:
                    self.features, self.features_epoch = new, stat.version
                return

        return self._spawn(write(), "update_features")

    def update_isr(
        self, topic: str, index: int, state: PartitionState, isr: list[int]
    ) -> Awaitable[bool]:
        """The leader's ISR change (Kafka's AlterPartition in ZooKeeper mode): a conditional write of
        the state znode at the version the leader last saw. False if someone changed it first."""

        async def write() -> bool:
            data = Z.encode_state(state.leader, state.leader_epoch, isr, state.controller_epoch,
                                  state.leader_registration)  # fmt: skip
            try:
                stat = await self.zk.set(Z.state_path(topic, index), data, state.zk_version)
            except (Z.BadVersionError, Z.NoNodeError):
                await self._read_state(topic, index)
                return False
            self.apply_state(topic, index, state.leader, state.leader_epoch, isr,
                             state.controller_epoch, stat.version, stat.mzxid,
                             state.leader_registration)  # fmt: skip
            return True

        return self._spawn(write(), "update_isr")

    def next_producer_id(self) -> int:
        """Ids come in blocks claimed in /latest_producer_id_block, unique across brokers."""
        if self._pid_next >= self._pid_end:
            if self._pid_next_block is None:
                self._maybe_prefetch_block()
                raise KafkaError(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, "Allocating producer ids")
            self._pid_next, self._pid_end = self._pid_next_block
            self._pid_next_block = None
        pid = self._pid_next
        self._pid_next += 1
        if self._pid_end - self._pid_next < PRODUCER_ID_BLOCK_SIZE // 2:
            self._maybe_prefetch_block()
        return pid

    def _maybe_prefetch_block(self) -> None:
        if self._pid_next_block is None and (
            self._pid_prefetch is None or self._pid_prefetch.done()
        ):
            self._pid_prefetch = self._spawn(
                self._allocate_producer_id_block(prefetch=True), "pid_block"
            )

    async def _allocate_producer_id_block(self, prefetch: bool) -> None:
        while True:
            try:
                data, stat = await self.zk.get(Z.PRODUCER_ID_BLOCK)
                d = json.loads(data) if data else None
                start = int(d["block_end"]) + 1 if d else 0
                version = stat.version
            except Z.NoNodeError:
                start, version = 0, None
            end = start + PRODUCER_ID_BLOCK_SIZE - 1
            value = json.dumps({"version": 1, "broker": self.node_id,
                                "block_start": str(start), "block_end": str(end)}).encode()  # fmt: skip
            try:
                if version is None:
                    await self.zk.create(Z.PRODUCER_ID_BLOCK, value)
                else:
                    await self.zk.set(Z.PRODUCER_ID_BLOCK, value, version)
            except (Z.BadVersionError, Z.NodeExistsError):
                continue  # another broker took a block meanwhile: try the next one
            break
        if prefetch:
            self._pid_next_block = (start, end + 1)
        else:
            self._pid_next, self._pid_end = start, end + 1

    # --- the cache: reads and watches -------------------------------------------------------

    def _spawn(self, aw, what: str) -> asyncio.Future:
        """Run a coroutine (or wait on a future) in the background, logging its failure."""
        task = asyncio.ensure_future(aw, loop=self.loop)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            error = None if t.cancelled() else t.exception()
            if error is not None and not isinstance(error, KafkaError):  # those go to a client
                log.error("zookeeper_task_failed", task=what, error=repr(error))

        task.add_done_callback(done)
        return task

    def _watch(self, path: str, reread: Callable[[], Awaitable[Any]]) -> Callable:
        """One watcher per path (kazoo keeps each function once): a fired watch re-reads.
        kazoo also fires every watch when the connection drops; the re-read then waits for the
        session to be back, so no watch is ever lost."""
        w = self._watchers.get(path)
        if w is None:
            w = self._watchers[path] = self.zk.watcher(
                lambda _e: self._spawn(self.retrying(reread), path)
            )
        return w

    async def retrying(self, op: Callable[[], Awaitable[Any]]) -> Any:
        """Run a ZooKeeper operation, again and again while the connection is down."""
        while not self.zk.stopping:
            await self.zk.connected.wait()
            try:
                return await op()
            except Z.TRANSIENT_ERRORS as e:
                log.debug("zookeeper_retry", error=repr(e))
                await asyncio.sleep(0.2)
        return None

    def session_state_changed(self, state: str) -> None:
        """A new session after an expired one: our ephemeral registration is gone, register again
        (the watches re-read everything by themselves)."""
        if state == "LOST":
            log.error("zookeeper_session_lost", node_id=self.node_id)
            self._session_lost = True
        elif state == "CONNECTED" and self._session_lost:
            self._session_lost = False
            log.info("zookeeper_session_renewed", node_id=self.node_id)
            self._spawn(self.retrying(self.register_broker), "register_broker")

    async def _set_or_create(self, path: str, data: bytes) -> None:
        try:
            await self.zk.set(path, data)
        except Z.NoNodeError:
            try:
                await self.zk.create(path, data, makepath=True)
            except Z.NodeExistsError:
                await self.zk.set(path, data)

    async def _read_brokers(self) -> None:
        # Reads overlap (a watch fires while one is under way); only the latest one started
        # may install what it found, or an older one finishing last brings back brokers that
        # left, or hides one that came, with no watch left to correct it.
        self._brokers_reads += 1
        generation = self._brokers_reads
        w = self._watch(Z.BROKER_IDS, self._read_brokers)
        ids = {int(c) for c in await self.zk.get_children(Z.BROKER_IDS, watch=w)}
        found: dict[int, BrokerInfo] = {}
        epochs: dict[int, int] = {}
        for node_id in ids:
            try:
                data, stat = await self.zk.get(Z.broker_path(node_id))
            except Z.NoNodeError:
                continue
            host, port, rack = Z.decode_broker(data, self.listener_name)
            found[node_id] = BrokerInfo(node_id, host, port, rack, Z.decode_endpoints(data))
            epochs[node_id] = stat.czxid
        if generation != self._brokers_reads:
            return
        if set(found) != set(self.live_brokers):
            log.info("live_brokers_changed", brokers=sorted(found))
        self.live_brokers = found
        self.broker_epochs = epochs
        self._changed()

    async def _read_controller(self) -> None:
        w = self._watch(Z.CONTROLLER, self._read_controller)
        try:
            data, _ = await self.zk.get(Z.CONTROLLER, watch=w)
            controller = json.loads(data)["brokerid"]
        except Z.NoNodeError:
            if await self.zk.exists(Z.CONTROLLER, watch=w) is not None:
                return await self._read_controller()
            controller = -1
        if controller != self._controller_id:
            self._controller_id = controller
            if self.on_controller_change is not None:
                self.on_controller_change(controller)

    async def _read_delete_requests(self) -> None:
        w = self._watch(Z.DELETE_TOPICS, self._read_delete_requests)
        children = set(await self.zk.get_children(Z.DELETE_TOPICS, watch=w))
        self.marked_for_deletion = children | self._pending_deletes
        for name in self.marked_for_deletion:
            info = self.topics.pop(name, None)
            if info is not None and self.replica_manager is not None:
                self.replica_manager.remove_topic(name, len(info.partitions))
        self._changed()

    async def _read_topics(self) -> None:
        async with self._topics_lock:
            await self._read_topics_locked()

    async def _read_topics_locked(self) -> None:
        w = self._watch(Z.BROKER_TOPICS, self._read_topics)
        names = set(await self.zk.get_children(Z.BROKER_TOPICS, watch=w))
        for name in list(self.topics):
            if name not in names and name not in self._pending_creates:
                info = self.topics.pop(name)
                log.info("topic_removed", topic=name)
                if self.replica_manager is not None:
                    self.replica_manager.remove_topic(name, len(info.partitions))
        new = [n for n in names if n not in self.topics or n in self._unconfirmed]
        await asyncio.gather(
            *(self._read_topic(n) for n in new if n not in self.marked_for_deletion)
        )
        self._changed()

    async def _read_topic(self, name: str) -> None:
        """A topic's assignment (and, the first time, its configs and partition states)."""
        path = Z.topic_path(name)
        w = self._watch(path, lambda: self._read_topic(name))
        try:
            data, stat = await self.zk.get(path, watch=w)
        except Z.NoNodeError:
            return  # deleted meanwhile: the children watch handles it
        assignment, topic_id = Z.decode_topic(data)
        adding, removing = Z.decode_reassignments(data)
        self._topic_versions[name] = stat.version
        info = self.topics.get(name)
        if topic_id is None:
            known = info.topic_id if info is not None else None
            topic_id = await self._assign_topic_id(name, data, stat.version, known)
        elif name in self._assumed_ids:
            # The id written for an id-less topic (by us or another broker): same topic.
            self._assumed_ids.discard(name)
            if info is not None and info.topic_id != topic_id:
                info.topic_id = topic_id
                if self.replica_manager is not None:
                    self.replica_manager.adopt_topic_id(info)
        ours = name in self._unconfirmed
        self._unconfirmed.discard(name)
        if info is not None and info.topic_id != topic_id:
            # Created first by another broker, or deleted and created again: what we had
            # (partitions opened with our assignment and configs) goes. A missing id (older
            # tools) never counts as a different topic: that would delete its logs.
            if self.replica_manager is not None:
                self.replica_manager.remove_topic(name, len(info.partitions))
            info = None
        if info is None:
            configs = await self._read_configs(name)
            info = TopicInfo(
                name, topic_id,
                [PartitionState(-1, 0, r, [], zk_version=NOT_READ) for r in assignment], configs,
            )  # fmt: skip
            self.topics[name] = info
            self.topic_added()
            new_indexes = range(len(assignment))
        elif ours:
            # Configs as ZooKeeper has them (the cache held what we wrote).
            configs = await self._read_configs(name)
            if configs != info.configs:
                info.configs = configs
                if self.replica_manager is not None:
                    self.replica_manager.update_config(name)
            new_indexes = range(len(info.partitions))
        else:
            old = len(info.partitions)
            for i, replicas in enumerate(assignment):
                if i >= old:
                    info.partitions.append(PartitionState(-1, 0, replicas, [], zk_version=NOT_READ))
            new_indexes = range(old, len(assignment))
        for i, st in enumerate(info.partitions[: len(assignment)]):
            # In place: the partition's state object is shared with the replica manager.
            st.replicas, st.adding, st.removing = (
                assignment[i],
                adding.get(i, []),
                removing.get(i, []),
            )
        if self.replica_manager is not None:
            self.replica_manager.replicas_changed(info)
            self.replica_manager.ensure_partitions(info)
        await asyncio.gather(*(self._read_state(name, i) for i in new_indexes))
        self._changed()

    async def _assign_topic_id(self, name: str, data: bytes, version: int,
                               known: uuid.UUID | None) -> uuid.UUID:  # fmt: skip
        """Give a topic znode without an id (older tools) one, as Kafka's controller does on
        upgrade: a conditional set, so one broker's id wins and the others adopt it."""
        topic_id = known or uuid.uuid4()
        self._assumed_ids.add(name)
        try:
            await self.zk.set(Z.topic_path(name), Z.add_topic_id(data, topic_id), version)
        except (Z.BadVersionError, Z.NoNodeError):
            pass  # changed meanwhile: the watch re-reads it
        except Exception as e:  # noqa: BLE001 - the id stays local until a later read
            log.warning("topic_id_write_failed", topic=name, error=repr(e))
        return topic_id

    async def _read_topic_configs(self, name: str) -> None:
        """Re-read a topic's config znode into the cache (and its partitions' LogConfig)."""
        configs = await self._read_configs(name)
        info = self.topics.get(name)
        if info is not None and configs != info.configs:
            info.configs = configs
            if self.replica_manager is not None:
                self.replica_manager.update_config(name)
        # Even unchanged (this broker cached its own write): the controller looks again, e.g.
        # at unclean.leader.election.enable.
        self._changed()

    async def _read_configs(self, name: str) -> dict[str, str]:
        path = Z.topic_config_path(name)
        w = self._watch(path, lambda: self._read_topic_configs(name))
        try:
            data, _ = await self.zk.get(path, watch=w)
            return Z.decode_config(data)
        except Z.NoNodeError:
            await self.zk.exists(path, watch=w)
            return {}

    async def _read_broker_configs(self, entity: str) -> None:
        path = Z.broker_config_path(entity)
        w = self._watch(path, lambda: self._read_broker_configs(entity))
        try:
            data, _ = await self.zk.get(path, watch=w)
            configs = Z.decode_config(data)
        except Z.NoNodeError:
            await self.zk.exists(path, watch=w)
            configs = {}
        if configs != self.dynamic_configs.get(entity, {}):
            self.dynamic_configs[entity] = configs
            if self.on_broker_configs is not None:
                self.on_broker_configs()

    async def _read_entities(self, entity_type: str) -> None:
        """/config/users (or /config/clients): children watched, each one's configs too."""
        path = Z.entity_config_path(entity_type)
        w = self._watch(path, lambda: self._read_entities(entity_type))
        names = {Z.desanitize(c) for c in await self.zk.get_children(path, watch=w)}
        cached = self.entity_configs[entity_type]
        for name in set(cached) - names:
            cached.pop(name, None)
            self._entity_changed(entity_type, name)
        for name in names:
            if name not in cached:
                await self._read_entity(entity_type, name)

    async def _read_entity(self, entity_type: str, name: str) -> None:
        path = Z.entity_config_path(entity_type, name)
        w = self._watch(path, lambda: self._read_entity(entity_type, name))
        try:
            data, _ = await self.zk.get(path, watch=w)
            configs = Z.decode_config(data)
        except Z.NoNodeError:
            configs = {}
        cached = self.entity_configs[entity_type]
        if configs != cached.get(name, {}):
            if configs:
                cached[name] = configs
            else:
                cached.pop(name, None)
            self._entity_changed(entity_type, name)

    def set_delegation_token(self, token_id: str, info: dict | None):
        """Write (None: delete) /delegation_token/tokens/<id>; cached at once, the returned
        future is the write. Every broker reads tokens from the watched znodes."""
        if info is None:
            self.delegation_tokens.pop(token_id, None)
        else:
            self.delegation_tokens[token_id] = info
        path = f"{Z.DELEGATION_TOKENS}/{token_id}"

        async def write() -> None:
            if info is None:
                with contextlib.suppress(Z.NoNodeError):
                    await self.zk.delete(path)
                return
            await self._set_or_create(path, json.dumps(info).encode())

        return self._spawn(write(), "set_delegation_token")

    async def _read_delegation_tokens(self) -> None:
        w = self._watch(Z.DELEGATION_TOKENS, self._read_delegation_tokens)
        ids = set(await self.zk.get_children(Z.DELEGATION_TOKENS, watch=w))
        for gone in set(self.delegation_tokens) - ids:
            self.delegation_tokens.pop(gone, None)
        for token_id in ids:
            await self._read_delegation_token(token_id)

    async def _read_delegation_token(self, token_id: str) -> None:
        path = f"{Z.DELEGATION_TOKENS}/{token_id}"
        w = self._watch(path, lambda: self._read_delegation_token(token_id))
        try:
            data, _ = await self.zk.get(path, watch=w)
            self.delegation_tokens[token_id] = json.loads(data)
        except Z.NoNodeError:
            self.delegation_tokens.pop(token_id, None)
        except ValueError:
            log.warning("invalid_delegation_token_znode", token_id=token_id)

    def _entity_changed(self, entity_type: str, name: str) -> None:
        if self.on_entity_configs is not None:
            self.on_entity_configs(entity_type, name)

    async def _read_state(self, topic: str, index: int) -> None:
        path = Z.state_path(topic, index)
        w = self._watch(path, lambda: self._read_state(topic, index))
        try:
            data, stat = await self.zk.get(path, watch=w)
        except Z.NoNodeError:
            if await self.zk.exists(path, watch=w) is not None:
                return await self._read_state(topic, index)
            info = self.topics.get(topic)
            if (
                info is not None
                and index < len(info.partitions)
                and info.partitions[index].zk_version == NOT_READ
            ):
                info.partitions[index].zk_version = -1
                self._changed()
            return
        leader, epoch, isr, controller_epoch = Z.decode_state(data)
        self.apply_state(topic, index, leader, epoch, isr, controller_epoch, stat.version,
                         stat.mzxid, Z.state_leader_registration(data))  # fmt: skip

    def apply_state(self, topic: str, index: int, leader: int, leader_epoch: int, isr: list[int],
                    controller_epoch: int, zk_version: int, mzxid: int = -1,
                    leader_registration: int = -1) -> None:  # fmt: skip
        """Install a partition state read from (or just written to) ZooKeeper, newest wins."""
        info = self.topics.get(topic)
        if info is None or index >= len(info.partitions):
            return
        old = info.partitions[index]
        if zk_version <= old.zk_version:
            return
        new = PartitionState(
            leader, leader_epoch, old.replicas, list(isr), zk_version, controller_epoch,
            old.adding, old.removing, mzxid, leader_registration,
        )  # fmt: skip
        info.partitions[index] = new
        if self.replica_manager is not None:
            self.replica_manager.partition_state_changed(info, index, new)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _merged(configs: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    out = dict(configs)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _resolver(fut: asyncio.Future) -> Callable[[Any], None]:
    return lambda _event: fut.done() or fut.set_result(None)


def now_ms() -> int:
    return int(time.time() * 1000)

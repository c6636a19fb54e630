"""A deterministic simulator of pykbroker's replication (issue 12, "make it provable").

Three to five brokers replicate one to three partitions of one topic (leaders spread, so a
broker leads one partition and follows another) in one process, on a simulated clock, network,
ZooKeeper and disk, everything drawn from one seed: a failing seed replays exactly
(`.venv/bin/python tests/replication_sim.py SEED` prints its trace).

What runs is the broker's own code, not a model of it:
- the controller is the real `Controller` (election through /controller and /controller_epoch,
  level-triggered `_reconcile`, `decide_state`, state writes fenced by the controller epoch's
  znode version, bounced-broker detection by registration czxid);
- each broker's metadata cache is the real `ZkMetadata` (its watches, `_read_state`,
  `apply_state`, `update_isr`, `register_broker`, session renewal);
- each broker's partitions are the real `ReplicaManager` and `Partition` (become leader or
  follower, HW from the ISR's LEOs, ISR expansion and shrinking, acks=all's
  `replication_status`, `follower_fetch` validation) with the real `LeaderEpochCache` (loaded
  at restart with `LeaderEpochCache.load`) and the follower's `apply_epoch_end` / `truncate`.
The shells here are what those talk to: a ZooKeeper (znodes, versions, ephemeral nodes,
sessions that expire, one-shot watches, multi-op transactions) behind kazoo's async API as
`ZkClient` offers it, a coroutine driver standing in for asyncio, a log (`SimLog`: the
`Log` methods Partition uses) with a page cache and a disk, and the replica fetcher's request
loop (OffsetsForLeaderEpoch, Fetch with the last fetched epoch, as `replica_fetcher` does).

Faults: message delays and drops, network partitions between brokers, process crashes (the
page cache survives: the log is kept, the HW comes back from its checkpoint), power losses
(what was not fsynced is lost, and the last batch may be torn: recovery drops it, the leader
epoch checkpoint is cut to the log's end), a broker cut off from ZooKeeper (its session expires
past 300 ms: a controller loses /controller but may still send writes, which the epoch check
must refuse), slow ZooKeeper links (writes arriving after a failover), restarts at any time.

Kafka's invariants, checked after every event:
- at most one leader per leader epoch of a partition;
- a state write that elects (a new leader epoch) carries the current controller epoch: a stale
  controller's decision is never applied; a partition's controller epoch never goes back;
  at most one active controller per controller epoch;
- a broker's HW never moves back while it acts in one leader epoch (in one process run);
- every replica agrees, below its HW, with what has ever been below any HW (committed data is
  final), unless every copy of it was lost to power losses;
- an acknowledged acks=all record is never lost: every broker that becomes leader holds every
  acknowledged record, a leader fenced by a newer one acknowledges nothing the newer leader
  lacks, no truncation removes the last copy of one -- unless every replica that held it lost
  it in a power loss (Kafka's guarantee is replication, not fsync: acks=all survives while one
  replica that has it survives);
- at the end (faults healed, everyone back, quiet) every partition's leader holds every
  acknowledged record at its offset and every replica's log equals its leader's.
"""

from __future__ import annotations

import heapq
import inspect
import json
import random
import sys
import uuid
from bisect import bisect_right
from contextlib import contextmanager

from kazoo.exceptions import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    RuntimeInconsistency,
)

from protocol.errors import ErrorCode, KafkaError
from pykbroker.cluster import controller as controller_mod
from pykbroker.cluster import follower
from pykbroker.cluster import leader_epoch as leader_epoch_mod
from pykbroker.cluster import replica_manager as replica_manager_mod
from pykbroker.cluster import zk as Z
from pykbroker.cluster import zk_metadata as zk_metadata_mod
from pykbroker.cluster.controller import Controller
from pykbroker.cluster.leader_epoch import LeaderEpochCache
from pykbroker.cluster.metadata import PartitionState, TopicInfo
from pykbroker.cluster.replica_fetcher import PartitionFetchState
from pykbroker.cluster.replica_manager import Partition, ReplicaManager
from pykbroker.cluster.zk_metadata import NOT_READ, ZkMetadata
from pykbroker.storage.log import AppendInfo, Log

TOPIC = "t"
TOPIC_ID = uuid.UUID(int=12)
MIN_ISR = 2
SESSION_MS = 300  # zookeeper.session.timeout.ms
LAG_MS = 200  # replica.lag.time.max.ms
FETCH_MAX = 3  # batches per fetch response
BACKOFF_MS = 20  # replica.fetch.backoff.ms
PRODUCE_TIMEOUT_MS = 400


class Violation(AssertionError):
    pass


# --- a stand-in for asyncio: futures, tasks and call_soon on the simulated clock -------------


class Fut:
    __slots__ = ("_done", "_value", "_exc", "_callbacks")

    def __init__(self):
        self._done = False
        self._value = None
        self._exc = None
        self._callbacks: list = []

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def result(self):
        if self._exc is not None:
            raise self._exc
        return self._value

    def exception(self):
        return self._exc

    def set_result(self, value) -> None:
        if not self._done:
            self._done, self._value = True, value
            self._fire()

    def set_exception(self, exc) -> None:
        if not self._done:
            self._done, self._exc = True, exc
            self._fire()

    def _fire(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    def add_done_callback(self, fn) -> None:
        if self._done:
            fn(self)
        else:
            self._callbacks.append(fn)

    def __await__(self):
        if not self._done:
            yield self
        return self.result()


class Task(Fut):
    """Runs a real coroutine of the broker; it dies with its broker's process."""

    __slots__ = ("coro", "host")

    def __init__(self, coro, host: Node):
        super().__init__()
        self.coro, self.host = coro, host
        host.sim.at(0, self._step, host.run)

    def _step(self, run: int, _fut=None) -> None:
        if not self.host.alive or self.host.run != run:
            self.coro.close()
            return
        try:
            awaited = self.coro.send(None)
        except StopIteration as e:
            self.set_result(e.value)
            return
        except KafkaError as e:
            self.set_exception(e)
            return
        if not isinstance(awaited, Fut):
            raise TypeError(f"a broker coroutine awaited {awaited!r}, not a simulated future")
        awaited.add_done_callback(lambda f: self._step(run, f))


class Loop:
    """What the broker's code asks of its event loop."""

    def __init__(self, node: Node):
        self.node = node

    def call_soon(self, fn, *args) -> None:
        node = self.node
        node.sim.at(0, node.guarded(fn), *args)

    def create_future(self) -> Fut:
        return Fut()

    def create_task(self, coro) -> Task:
        return Task(coro, self.node)

    def time(self) -> float:
        return self.node.sim.now / 1000


class Event:
    """asyncio.Event's wait/set/clear for ZkClient.connected."""

    def __init__(self):
        self._set = False
        self._waiters: list[Fut] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.set_result(True)

    def clear(self) -> None:
        self._set = False

    def wait(self) -> Fut:
        f = Fut()
        if self._set:
            f.set_result(True)
        else:
            self._waiters.append(f)
        return f


class _Quiet:
    def __getattr__(self, _name):
        return _noop


def _noop(*_args, **_kwargs) -> None:
    return None


@contextmanager
def quiet_logs():
    """The broker's structlog loggers do nothing while a seed runs (fast, and no output)."""
    modules = (controller_mod, follower, leader_epoch_mod, replica_manager_mod, Z,
               zk_metadata_mod)  # fmt: skip
    saved = [m.log for m in modules]
    for m in modules:
        m.log = _Quiet()
    try:
        yield
    finally:
        for m, saved_log in zip(modules, saved, strict=True):
            m.log = saved_log


# --- ZooKeeper ------------------------------------------------------------------------------


class Stat:
    __slots__ = ("version", "czxid", "mzxid", "ephemeralOwner")

    def __init__(self, version: int, czxid: int, mzxid: int, owner: int):
        self.version, self.czxid, self.mzxid, self.ephemeralOwner = version, czxid, mzxid, owner


class Znode:
    __slots__ = ("data", "version", "czxid", "mzxid", "owner", "children")

    def __init__(self, data: bytes, zxid: int, owner: int):
        self.data, self.version, self.czxid, self.mzxid = data, 0, zxid, zxid
        self.owner = owner
        self.children: dict[str, None] = {}

    def stat(self) -> Stat:
        return Stat(self.version, self.czxid, self.mzxid, self.owner)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class ZkServer:
    """One ZooKeeper ensemble: znodes, sessions, one-shot watches, multi-op transactions."""

    def __init__(self, sim: Sim):
        self.sim = sim
        self.nodes: dict[str, Znode] = {"/": Znode(b"", 0, 0)}
        self.zxid = 0
        self.sessions: dict[int, ZkClient] = {}  # live session id -> its client
        self.next_session = 1
        self.data_watches: dict[str, dict] = {}  # path -> {watcher: session}
        self.child_watches: dict[str, dict] = {}

    # --- sessions ------------------------------------------------------------------------------

    def open_session(self, client: ZkClient) -> int:
        sid = self.next_session
        self.next_session += 1
        self.sessions[sid] = client
        return sid

    def expire(self, sid: int) -> None:
        client = self.sessions.pop(sid, None)
        if client is None:
            return
        self.sim.log(f"zk session {sid} of {client.node.id} expired")
        for path in [p for p, n in self.nodes.items() if n.owner == sid]:
            self._delete(path)
        for watches in (*self.data_watches.values(), *self.child_watches.values()):
            for w in [w for w, s in watches.items() if s == sid]:
                del watches[w]
        self.sim.failed(client.node.id)  # the controller takes it for dead

    def drop_watches(self, sid: int) -> list:
        """The client lost its connection: kazoo fires all its watches (they re-read once the
        session is back), so the server forgets them."""
        fired = []
        for watches in (*self.data_watches.values(), *self.child_watches.values()):
            for w in [w for w, s in watches.items() if s == sid]:
                del watches[w]
                fired.append(w)
        return fired

    def _fire(self, table: dict, path: str) -> None:
        watches = table.pop(path, None)
        if watches:
            for w, sid in watches.items():
                client = self.sessions.get(sid)
                if client is not None:
                    client.deliver_watch(w)

    # --- writes --------------------------------------------------------------------------------

    def _create(self, path: str, data: bytes, owner: int) -> None:
        self.zxid += 1
        self.nodes[path] = Znode(data, self.zxid, owner)
        self.nodes[_parent(path)].children[path.rsplit("/", 1)[1]] = None
        self.sim.on_znode_written(path, None, data)
        self._fire(self.data_watches, path)
        self._fire(self.child_watches, _parent(path))

    def _set(self, path: str, data: bytes) -> Znode:
        n = self.nodes[path]
        old = n.data
        self.zxid += 1
        n.data, n.version, n.mzxid = data, n.version + 1, self.zxid
        self.sim.on_znode_written(path, old, data)
        self._fire(self.data_watches, path)
        return n

    def _delete(self, path: str) -> None:
        del self.nodes[path]
        self.nodes[_parent(path)].children.pop(path.rsplit("/", 1)[1], None)
        self._fire(self.data_watches, path)
        self._fire(self.child_watches, _parent(path))

    def _check_create(self, path: str) -> None:
        if path in self.nodes:
            raise NodeExistsError()
        if _parent(path) not in self.nodes:
            raise NoNodeError()

    def _check_version(self, path: str, version: int) -> Znode:
        n = self.nodes.get(path)
        if n is None:
            raise NoNodeError()
        if version != -1 and version != n.version:
            raise BadVersionError()
        return n

    # --- operations (run for session `sid`) -----------------------------------------------

    def get(self, sid: int, path: str, watch=None):
        n = self.nodes.get(path)
        if n is None:
            raise NoNodeError()
        if watch is not None:
            self.data_watches.setdefault(path, {})[watch] = sid
        return n.data, n.stat()

    def exists(self, sid: int, path: str, watch=None):
        if watch is not None:
            self.data_watches.setdefault(path, {})[watch] = sid
        n = self.nodes.get(path)
        return None if n is None else n.stat()

    def get_children(self, sid: int, path: str, watch=None):
        n = self.nodes.get(path)
        if n is None:
            raise NoNodeError()
        if watch is not None:
            self.child_watches.setdefault(path, {})[watch] = sid
        return list(n.children)

    def create(self, sid: int, path: str, value: bytes = b"", ephemeral: bool = False,
               sequence: bool = False, makepath: bool = False):  # fmt: skip
        if makepath:
            self.ensure_path(sid, _parent(path))
        self._check_create(path)
        self._create(path, value, sid if ephemeral else 0)
        return path

    def set(self, sid: int, path: str, value: bytes, version: int = -1):
        self._check_version(path, version)
        return self._set(path, value).stat()

    def delete(self, sid: int, path: str, version: int = -1):
        n = self._check_version(path, version)
        if n.children:
            raise NotEmptyError()
        self._delete(path)
        return True

    def ensure_path(self, sid: int, path: str):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/" + "/".join(parts[:i])
            if p not in self.nodes:
                self._create(p, b"", 0)
        return True

    def commit(self, sid: int, ops: list[tuple]):
        """A multi: all ops or none; the failed op's error, RolledBackError before it and
        RuntimeInconsistency after it (as ZooKeeper answers)."""
        for i, op in enumerate(ops):
            try:
                kind, path = op[0], op[1]
                if kind == "create":
                    self._check_create(path)
                elif kind in ("set_data", "check", "delete"):
                    self._check_version(path, op[-1])
            except (NoNodeError, NodeExistsError, BadVersionError) as e:
                return ([RolledBackError() for _ in ops[:i]] + [e]
                        + [RuntimeInconsistency() for _ in ops[i + 1 :]])  # fmt: skip
        results = []
        for kind, path, *rest in ops:
            if kind == "create":
                self._create(path, rest[0], sid if rest[1] else 0)
                results.append(path)
            elif kind == "set_data":
                results.append(self._set(path, rest[0]).stat())
            elif kind == "delete":
                self._delete(path)
                results.append(True)
            else:
                results.append(True)
        return results


class Txn:
    """kazoo's TransactionRequest: the ops, committed with ZkClient.commit."""

    def __init__(self):
        self.ops: list[tuple] = []

    def create(self, path, value=b"", acl=None, ephemeral=False, sequence=False):
        self.ops.append(("create", path, value, ephemeral))

    def set_data(self, path, value, version=-1):
        self.ops.append(("set_data", path, value, version))

    def delete(self, path, version=-1):
        self.ops.append(("delete", path, version))

    def check(self, path, version):
        self.ops.append(("check", path, version))


class ZkClient:
    """pykbroker's ZkClient interface (kazoo's async API as futures) over the simulated
    ensemble: requests and answers take time; cut off, they wait for the connection (a
    session that expired meanwhile is replaced by a new one on reconnecting, and the broker's
    session listener is told LOST then CONNECTED, as kazoo does)."""

    def __init__(self, node: Node):
        self.node = node
        self.sim = node.sim
        self.loop = node.loop
        self.server = node.sim.zk
        self.connected = Event()
        self.stopping = False
        self.session_listeners: list = []
        self.sid = self.server.open_session(self)
        self.queued: list = []  # (fn, args) waiting for the connection
        # ZooKeeper answers a session's requests in order, watch events in line with them.
        self.last_request = self.last_answer = 0
        self.connected.set()

    @property
    def session_id(self) -> int:
        return self.sid

    def _live(self) -> bool:
        return self.node.alive and self.node.zk is self

    def _request(self, op: str, *args) -> Fut:
        fut = Fut()
        self.last_request = max(self.sim.now + self.sim.zk_delay(self.node.id), self.last_request)
        self.sim.at(self.last_request - self.sim.now, self._arrive, self._execute, (op, args, fut))
        return fut

    def _send(self, fn, *args) -> None:
        """To the client, after what was sent to it before."""
        self.last_answer = max(self.sim.now + self.sim.zk_delay(self.node.id), self.last_answer)
        self.sim.at(self.last_answer - self.sim.now, self._arrive, fn, args)

    def _arrive(self, fn, args) -> None:
        if not self._live():
            return
        if not self.connected.is_set():
            self.queued.append((fn, args))
        else:
            fn(*args)

    def _execute(self, op: str, args: tuple, fut: Fut) -> None:
        try:
            result, exc = getattr(self.server, op)(self.sid, *args), None
        except (NoNodeError, NodeExistsError, BadVersionError, NotEmptyError) as e:
            result, exc = None, e
        self._send(self._answer, fut, result, exc)

    def _answer(self, fut: Fut, result, exc) -> None:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def deliver_watch(self, w) -> None:
        self._send(lambda: w(None))

    def disconnect(self) -> None:
        self.connected.clear()
        for w in self.server.drop_watches(self.sid):
            self.loop.call_soon(w, None)

    def reconnect(self) -> None:
        if self.sid not in self.server.sessions:  # expired while away: a new session
            self.sid = self.server.open_session(self)
            for fn in list(self.session_listeners):
                fn("LOST")
            self.connected.set()
            for fn in list(self.session_listeners):
                fn("CONNECTED")
        else:
            self.connected.set()
        queued, self.queued = self.queued, []
        for fn, args in queued:
            fn(*args)

    # --- kazoo's API, as pykbroker.cluster.zk.ZkClient offers it ------------------------------

    def watcher(self, fn):
        return lambda event: self.loop.call_soon(fn, event)

    def get(self, path, watch=None) -> Fut:
        return self._request("get", path, watch)

    def get_children(self, path, watch=None) -> Fut:
        return self._request("get_children", path, watch)

    def exists(self, path, watch=None) -> Fut:
        return self._request("exists", path, watch)

    def create(self, path, value=b"", ephemeral=False, sequence=False, makepath=False) -> Fut:
        return self._request("create", path, value, ephemeral, sequence, makepath)

    def set(self, path, value, version=-1) -> Fut:
        return self._request("set", path, value, version)

    def delete(self, path, version=-1) -> Fut:
        return self._request("delete", path, version)

    def ensure_path(self, path) -> Fut:
        return self._request("ensure_path", path)

    def transaction(self) -> Txn:
        return Txn()

    def commit(self, txn: Txn) -> Fut:
        return self._request("commit", list(txn.ops))


# --- the disk -------------------------------------------------------------------------------


class LogDir:
    offline = False
    writable = True


class SimLog:
    """A partition's log as Partition and the follower code use it (`Log`'s HW, fetch-range and
    truncation rules), in batches of records (leader epoch, value), on a disk that keeps only
    what was flushed: a power loss drops the rest, possibly tearing the last batch. Its
    checkpoints (leader epochs, the HW) are written atomically and fsynced, as the broker's are."""

    update_high_watermark = Log.update_high_watermark
    check_fetch_offset = Log.check_fetch_offset

    def __init__(self, sim: Sim, node_id: int, index: int):
        self.sim, self.node_id, self.index = sim, node_id, index
        self.records: list[tuple[int, int]] = []  # (leader epoch, value) at each offset
        self.bases: list[int] = []  # base offset of each batch
        self.flushed = 0  # offsets below this are on the disk
        self.high_watermark = 0
        self.log_start_offset = 0
        self.config = {"min.insync.replicas": MIN_ISR}
        self.log_dir = LogDir()
        self.epoch_checkpoint: list[tuple[int, int]] | None = None  # leader-epoch-checkpoint
        self.hw_checkpoint = 0  # its entry in replication-offset-checkpoint
        self.verified = 0  # offsets below this were checked against the committed history
        # Past this, the log holds history that a power loss of the whole ISR may have ended:
        # not checked until the log is truncated there or leads (see Sim.on_truncate).
        self.barrier: int | None = None
        self.power_lost = False  # a power loss took records from it

    @property
    def log_end_offset(self) -> int:
        return len(self.records)

    def append_as_leader(self, values: tuple, leader_epoch: int) -> AppendInfo:
        first = len(self.records)
        self.bases.append(first)
        self.records.extend((leader_epoch, v) for v in values)
        return AppendInfo(first, len(self.records) - 1, -1, 0, record_count=len(values))

    def append_as_follower(self, batches: list[tuple[int, int, tuple]]) -> None:
        for base, epoch, values in batches:
            if base != len(self.records):
                raise AssertionError(f"follower append at {base}, LEO {len(self.records)}")
            self.bases.append(base)
            self.records.extend((epoch, v) for v in values)

    def read(self, offset: int, max_batches: int) -> list[tuple[int, int, tuple]]:
        """Whole batches from the one holding `offset`, up to the LEO (a follower's read)."""
        i = max(bisect_right(self.bases, offset) - 1, 0)
        out = []
        for j in range(i, min(i + max_batches, len(self.bases))):
            base = self.bases[j]
            end = self.bases[j + 1] if j + 1 < len(self.bases) else len(self.records)
            out.append((base, self.records[base][0], tuple(v for _, v in self.records[base:end])))
        return out

    def truncate_to(self, offset: int) -> None:
        if offset >= len(self.records):
            return
        self.sim.on_truncate(self, offset)
        if self.barrier is not None and offset <= self.barrier:
            self.barrier = None
        del self.records[offset:]
        while self.bases and self.bases[-1] >= offset:
            self.bases.pop()
        self.flushed = min(self.flushed, offset)
        self.high_watermark = min(self.high_watermark, offset)
        self.verified = min(self.verified, offset)

    def flush(self) -> None:
        self.flushed = len(self.records)

    def power_loss(self, rng: random.Random) -> int:
        """What survives: the flushed part, plus some of what the OS wrote back on its own;
        recovery drops a torn last batch. Returns the offset the log was cut to."""
        written = rng.randint(self.flushed, len(self.records))
        cut = max([b for b in self.bases if b <= written] + [self.flushed])
        if written == len(self.records):
            cut = written
        if cut < len(self.records):
            self.power_lost = True
            self.sim.on_truncate(self, cut, power_loss=True)
            del self.records[cut:]
            while self.bases and self.bases[-1] >= cut:
                self.bases.pop()
            self.verified = min(self.verified, cut)
        self.flushed = len(self.records)
        return cut


class SimEpochCache(LeaderEpochCache):
    """The real leader epoch cache, its checkpoint file on the simulated disk."""

    def __init__(self, directory):
        super().__init__(None)
        self.disk: SimLog = directory
        self.path = "leader-epoch-checkpoint"

    def _read(self):
        return None if self.disk.epoch_checkpoint is None else list(self.disk.epoch_checkpoint)

    def flush(self) -> None:
        self.disk.epoch_checkpoint = list(zip(self.epochs, self.offsets, strict=True))


# --- a broker -------------------------------------------------------------------------------


class Fetchers:
    """The ReplicaFetcherManager interface ReplicaManager drives; the requests go out in
    Sim.fetch_round, handled as replica_fetcher does."""

    def __init__(self):
        self.states: dict[int, PartitionFetchState] = {}  # partition index -> state
        self.source: dict[int, int] = {}  # partition index -> leader fetched from
        self.inflight: dict[int, int] = {}  # partition index -> when the request times out

    def is_fetching(self, p, leader_id: int) -> bool:
        return self.source.get(p.index) == leader_id

    def add_partition(self, p, leader_id: int) -> None:
        self.remove_partition(p)
        self.states[p.index] = PartitionFetchState(p, p.state.leader_epoch)
        self.source[p.index] = leader_id

    def update_epoch(self, p, leader_epoch: int) -> None:
        s = self.states.get(p.index)
        if s is not None:
            s.leader_epoch = leader_epoch
            s.delayed_until = 0.0

    def remove_partition(self, p) -> None:
        self.states.pop(p.index, None)
        self.source.pop(p.index, None)
        self.inflight.pop(p.index, None)


class Node:
    """One broker: a process run (its ZooKeeper client, metadata cache, controller, replica
    manager) over a disk that outlives it."""

    def __init__(self, sim: Sim, node_id: int):
        self.sim = sim
        self.id = node_id
        self.alive = False
        self.run = 0
        self.disk = {i: SimLog(sim, node_id, i)
                     for i, r in enumerate(sim.assignment) if node_id in r}  # fmt: skip
        # acks=all produces waiting: (partition, end offset, values, deadline, epoch, Partition)
        self.pending: list[tuple] = []

    def guarded(self, fn):
        run = self.run

        def call(*args):
            if self.alive and self.run == run:
                fn(*args)

        return call

    def start(self) -> None:
        sim = self.sim
        self.alive = True
        self.run += 1
        self.pending = []
        self.loop = Loop(self)
        self.zk = ZkClient(self)
        md = self.md = ZkMetadata(self.zk, "/sim", self.id, ("127.0.0.1", 9000 + self.id),
                                  None, None)  # fmt: skip
        md._spawn = lambda aw, what: Task(aw, self)
        md.topics[TOPIC] = TopicInfo(TOPIC, TOPIC_ID, [
            PartitionState(-1, -1, list(r), [], NOT_READ) for r in sim.assignment
        ])  # fmt: skip
        self.zk.session_listeners.append(md.session_state_changed)
        rm = self.rm = ReplicaManager(self.id, None, lambda _t: None, metadata=md)
        rm.fetchers = self.fetch = Fetchers()
        md.replica_manager = rm
        for i, lg in self.disk.items():
            lg.high_watermark = max(min(lg.hw_checkpoint, lg.log_end_offset), lg.log_start_offset)
            p = Partition(TOPIC, i, lg, PartitionState(-1, -1, list(sim.assignment[i]), [], -2),
                          self.id)  # fmt: skip
            p.clock = self._clock
            p.epoch_cache = SimEpochCache.load(lg, lg.log_end_offset)
            rm.partitions[(TOPIC, i)] = p
        self.parts = [(key[1], p) for key, p in rm.partitions.items()]
        self.controller = Controller(md, lambda _t: False, None)
        Task(self._boot(), self)
        sim.at(1, self.guarded(sim.tick), self)

    def _clock(self) -> int:
        return self.sim.now

    async def _boot(self) -> None:
        """Kafka's start-up order: the cache first, then the registration, then roles."""
        md = self.md
        await md.retrying(md._read_brokers)
        for i in range(len(self.sim.assignment)):
            await md.retrying(lambda i=i: md._read_state(TOPIC, i))
        await md.retrying(md._read_controller)
        await md.retrying(md.register_broker)
        self.rm.make_ready()
        self.controller.start()

    def crash(self) -> None:
        self.alive = False
        self.pending = []
        self.controller.active = False


# --- the simulation -------------------------------------------------------------------------


class Sim:
    def __init__(self, seed: int, trace: bool = False):
        self.rng = rng = random.Random(seed)
        self.seed = seed
        self.trace_on = trace
        self.trace: list[str] = []
        n = rng.choice((3, 3, 4, 5))
        rf = min(n, rng.choice((3, 3, 4)))
        partitions = rng.choice((1, 2, 2, 3))
        ids = list(range(1, n + 1))
        rng.shuffle(ids)
        # Kafka's assignment: replicas shifted by one per partition, so leaders spread.
        self.assignment = [[ids[(i + k) % n] for k in range(rf)] for i in range(partitions)]
        self.now = 0
        self.queue: list = []
        self.seq = 0
        self.cut: set[frozenset[int]] = set()  # broker pairs that can't talk
        self.zk_cut: dict[int, int] = {}  # broker -> episode id, while cut off from ZooKeeper
        self.zk_slow: dict[int, int] = {}  # broker -> until when its ZooKeeper link is slow
        self.episodes = 0
        self.zk = ZkServer(self)
        for path in ("/brokers/ids", f"/brokers/topics/{TOPIC}/partitions", "/admin",
                     "/controlled_shutdown", "/config/topics"):  # fmt: skip
            self.zk.ensure_path(0, path)
        self.nodes = {i: Node(self, i) for i in sorted(ids)}
        self.acked: dict[tuple[int, int], int] = {}  # (partition, offset) -> value
        self.acked_in: dict[tuple[int, int], int] = {}  # (partition, offset) -> leader epoch
        self.exempt: set[tuple[int, int]] = set()  # acked, then lost on every replica to power
        self.committed: list[list[int | None]] = [[] for _ in self.assignment]
        self.crashed_since_write: list[set[int]] = [set() for _ in self.assignment]
        self.states = [(-1, -1, [], 0) for _ in self.assignment]  # the state znodes, decoded
        self.leaders: dict[tuple[int, int], int] = {}  # (partition, leader epoch) -> leader
        self.hw_seen: dict[tuple[int, int, int], tuple[int, int]] = {}
        self.next_value = 0
        self.power_losses = 0
        self.failovers = 0
        self.controller_epoch_max = 0

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
        self.after_event()
        return True

    def zk_delay(self, node_id: int) -> int:
        if self.zk_slow.get(node_id, -1) > self.now:
            return self.rng.randint(20, 250)
        return self.rng.randint(1, 6)

    def send(self, src: int, dst: int, fn, *args) -> None:
        """A message between brokers: delivered after a random delay unless dropped, cut, or
        either end died (or restarted) meanwhile."""
        if frozenset((src, dst)) in self.cut or self.rng.random() < 0.02:
            return
        s, d = self.nodes[src], self.nodes[dst]
        runs = (s.run, d.run)

        def deliver() -> None:
            if (s.alive and d.alive and (s.run, d.run) == runs
                    and frozenset((src, dst)) not in self.cut):  # fmt: skip
                fn(*args)

        self.at(self.rng.randint(1, 15), deliver)

    # --- the broker's periodic work ---------------------------------------------------------------

    def tick(self, node: Node) -> None:
        self.at(self.rng.randint(4, 12), node.guarded(self.tick), node)
        rng = self.rng
        for p in node.rm.partitions.values():
            if p.is_leader and len(p.state.isr) > 1:
                p.maybe_shrink_isr(LAG_MS)  # the ISR expiration loop
        if rng.random() < 0.2:  # the HW checkpoint loop
            for lg in node.disk.values():
                lg.hw_checkpoint = lg.high_watermark
        if rng.random() < 0.08:  # the OS writes dirty pages back (Kafka doesn't fsync)
            for lg in node.disk.values():
                lg.flush()
        self.fetch_round(node)

    def fetch_round(self, node: Node) -> None:
        f = node.fetch
        for i, s in list(f.states.items()):
            if f.inflight.get(i, -1) > self.now or s.delayed_until > self.now:
                continue
            p, leader = s.partition, f.source[i]
            cache = p.epoch_cache
            if s.truncating and (cache is None or cache.latest_epoch < 0):
                follower.truncate(p, p.log.high_watermark, "no_leader_epochs")
                s.truncating = False
            f.inflight[i] = self.now + 60
            if s.truncating:
                self.send(node.id, leader, self.on_epoch_request, leader, node.id, i,
                          s.leader_epoch, cache.latest_epoch, s)  # fmt: skip
            else:
                self.send(node.id, leader, self.on_fetch, leader, node.id, i, s.leader_epoch,
                          p.log.log_end_offset, follower.last_fetched_epoch(cache), s)  # fmt: skip

    # --- OffsetsForLeaderEpoch and Fetch, leader side as the handlers, follower side as
    # --- replica_fetcher._truncate_on_new_leader and _process

    def on_epoch_request(self, leader_id, follower_id, i, current_epoch, requested, s) -> None:
        try:
            part = self.nodes[leader_id].rm.get_leader(TOPIC, i, current_epoch)
            answer = (ErrorCode.NONE, *part.end_offset_for_epoch(requested))
        except KafkaError as e:
            answer = (e.code, -1, -1)
        self.send(leader_id, follower_id, self.on_epoch_answer, follower_id, i, s, *answer)

    def on_epoch_answer(self, follower_id, i, s, code, epoch, end) -> None:
        f = self.nodes[follower_id].fetch
        if f.states.get(i) is not s or not s.truncating:
            return
        f.inflight.pop(i, None)
        if code != ErrorCode.NONE:
            s.delayed_until = self.now + BACKOFF_MS
            return
        s.truncating = not follower.apply_epoch_end(s.partition, epoch, end)

    def on_fetch(self, leader_id, follower_id, i, current_epoch, offset, last_epoch, s) -> None:
        part = None
        try:
            part = self.nodes[leader_id].rm.get_leader(TOPIC, i, current_epoch)
            diverging = part.follower_fetch(follower_id, offset, last_epoch)
            batches = [] if diverging is not None else part.log.read(offset, FETCH_MAX)
            answer = (ErrorCode.NONE, part.log.high_watermark, diverging, batches, -1)
        except KafkaError as e:
            leo = part.log.log_end_offset if part is not None else -1
            answer = (e.code, -1, None, [], leo)
        self.send(leader_id, follower_id, self.on_fetched, follower_id, i, s, *answer)

    def on_fetched(self, follower_id, i, s, code, hw, diverging, batches, leader_end) -> None:
        f = self.nodes[follower_id].fetch
        if f.states.get(i) is not s or s.truncating:
            return
        f.inflight.pop(i, None)
        p = s.partition
        lg = p.log
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            if leader_end >= 0 and lg.log_end_offset > leader_end:
                follower.truncate(p, leader_end, "past_leader_end")
            return
        if code != ErrorCode.NONE:
            s.delayed_until = self.now + BACKOFF_MS
            return
        if diverging is not None:
            follower.apply_epoch_end(p, diverging[0], diverging[1], "diverging_epoch_")
            return
        new = [b for b in batches if b[0] >= lg.log_end_offset]
        if new:
            lg.append_as_follower(new)
            cache = p.epoch_cache
            for base, epoch, _ in new:
                if epoch > cache.latest_epoch:
                    cache.assign(epoch, base)
        lg.update_high_watermark(min(hw, lg.log_end_offset))

    # --- producers ----------------------------------------------------------------------------

    def produce(self) -> None:
        self.at(self.rng.randint(2, 10), self.produce)
        i = self.rng.randrange(len(self.assignment))
        target = self.zk_state(i)[0]
        if self.rng.random() < 0.2:  # stale metadata
            target = self.rng.choice(list(self.nodes))
        node = self.nodes.get(target)
        if node is None or not node.alive:
            return
        values = tuple(range(self.next_value, self.next_value + self.rng.choice((1, 1, 2, 3))))
        self.next_value += len(values)
        self.at(self.rng.randint(1, 8), node.guarded(self.on_produce), node, i, values)

    def on_produce(self, node: Node, i: int, values: tuple) -> None:
        """The Produce handler with acks=all: append as leader, then wait for the HW."""
        try:
            p = node.rm.get_leader(TOPIC, i)
            info = p.append_as_leader(values, -1)
        except KafkaError:
            return
        node.pending.append((i, info.last_offset + 1, values, self.now + PRODUCE_TIMEOUT_MS,
                             p.state.leader_epoch, p))  # fmt: skip

    def settle_produces(self, node: Node) -> None:
        keep = []
        for entry in node.pending:
            i, end, values, deadline, epoch, p = entry
            status = p.replication_status(end)
            if status is None:
                if self.now < deadline:
                    keep.append(entry)
            elif status == ErrorCode.NONE:
                for k, value in enumerate(values):
                    self.ack(node, i, end - len(values) + k, value, epoch)
        node.pending = keep

    def ack(self, node: Node, i: int, offset: int, value: int, epoch: int) -> None:
        self.acked[(i, offset)] = value
        self.acked_in[(i, offset)] = epoch
        self.log(f"{node.id} acks {value}@{i}/{offset} epoch {epoch}")
        for o in self.nodes.values():  # a newer leader must have what a fenced one acks
            p = o.rm.partitions.get((TOPIC, i)) if o.alive else None
            if (p is not None and p.is_leader and p.state.leader_epoch > epoch
                    and not self.holds(p.log, offset, value)):  # fmt: skip
                raise Violation(f"fenced leader {node.id} (epoch {epoch}) acked {value}@{i}/"
                                f"{offset}, which leader {o.id} (epoch {p.state.leader_epoch}) "
                                "lacks")  # fmt: skip

    @staticmethod
    def holds(lg: SimLog, offset: int, value: int) -> bool:
        return offset < len(lg.records) and lg.records[offset][1] == value

    # --- ZooKeeper hooks: the invariants of what gets written ------------------------------------

    def zk_state(self, i: int) -> tuple[int, int, list[int], int]:
        return self.states[i]

    def on_znode_written(self, path: str, old: bytes | None, data: bytes) -> None:
        if path == Z.CONTROLLER_EPOCH:
            self.controller_epoch_max = max(self.controller_epoch_max, int(data or b"0"))
            self.failovers += 1
            self.log(f"zk controller epoch {int(data or b'0')}")
            return
        if not path.endswith("/state"):
            return
        i = int(path.split("/")[-2])
        self.states[i] = Z.decode_state(data)
        # Written by a view that may lag: who is down now counts as crashed since.
        self.crashed_since_write[i] = {n.id for n in self.nodes.values() if not n.alive}
        self.isr_down(i)
        leader, epoch, isr, cepoch = Z.decode_state(data)
        self.log(f"zk {i}: leader={leader} epoch={epoch} isr={isr} controller_epoch={cepoch}")
        current = int(self.zk.nodes[Z.CONTROLLER_EPOCH].data or b"0")
        if (old is None or Z.decode_state(old)[1] != epoch) and cepoch != current:
            raise Violation(f"partition {i}: leader epoch {epoch} written by a stale "
                            f"controller (epoch {cepoch}, current {current})")  # fmt: skip
        if old is not None and Z.decode_state(old)[3] > cepoch:
            raise Violation(f"partition {i}: controller epoch went back to {cepoch}")
        if leader >= 0:
            seen = self.leaders.setdefault((i, epoch), leader)
            if seen != leader:
                raise Violation(f"partition {i}: two leaders in epoch {epoch}: {seen}, {leader}")

    # --- the disk's hooks -----------------------------------------------------------------------

    def on_truncate(self, lg: SimLog, offset: int, power_loss: bool = False) -> None:
        """Records at `offset` and past it are about to go from this replica. A committed one
        may go while another replica still has it. One lost to a power loss while no running
        ISR member holds it (the ISR all down at once, one losing its unflushed writes: the
        controller keeps the last ISR member, who may be that one) may be gone for good: Kafka's
        guarantee is replication, not fsync. From then on it is exempt from the checks, and the
        committed history is cut there."""
        i = lg.index
        isr = self.zk_state(i)[2]
        others = [n.disk[i] for n in self.nodes.values() if i in n.disk and n.disk[i] is not lg
                  and (not power_loss or (n.alive and n.id in isr))]  # fmt: skip
        committed = self.committed[i]
        for at in range(offset, min(len(lg.records), len(committed))):
            value = committed[at]
            if lg.records[at][1] != value or any(self.holds(o, at, value) for o in others):
                continue
            if not power_loss:
                if (i, at) in self.acked and (i, at) not in self.exempt:
                    raise Violation(f"the last copy of acked {value}@{i}/{at} truncated "
                                    f"on {lg.node_id}")  # fmt: skip
                continue
            self.log(f"power loss with the ISR {isr} down: {value}@{i}/{at} may be lost")
            self.history_lost(i, at, lg)
            break

    def history_lost(self, i: int, at: int, lg: SimLog | None = None) -> None:
        """Partition i's committed history from `at` on may be gone (Kafka doesn't promise it):
        acked records there are exempt; replicas' logs past it are checked again only once
        truncated there, or once they lead (their log is the history then)."""
        del self.committed[i][at:]
        for n in self.nodes.values():
            o = n.disk.get(i)
            if o is not None and o is not lg:
                o.verified = min(o.verified, at)
                o.barrier = at if o.barrier is None else min(o.barrier, at)
        self.exempt.update(k for k in self.acked if k[0] == i and k[1] >= at)

    def isr_down(self, i: int) -> None:
        """Every ISR member failed (crashed, or lost its ZooKeeper session) since the ISR was
        last written (or was down when it was), one of them without committed records it lost to a power loss: the controller keeps or
        elects an ISR member, which may be that one, so Kafka may lose them (its guarantee
        needs one ISR member that stays up with its data)."""
        isr = self.zk_state(i)[2]
        if not isr or any(b not in self.crashed_since_write[i] for b in isr):
            return
        committed = self.committed[i]
        lost = len(committed)
        for b in isr:
            lg = self.nodes[b].disk[i]
            if lg.power_lost:
                lost = min([at for at in range(min(lost, len(committed)))
                            if not self.holds(lg, at, committed[at])] + [lost])  # fmt: skip
        if lost < len(committed):
            self.log(f"ISR {isr} of {i} all crashed, one without committed records from {lost}")
            self.history_lost(i, lost)

    # --- invariants -----------------------------------------------------------------------------

    def after_event(self) -> None:
        active = []
        for node in self.nodes.values():
            if not node.alive:
                continue
            if node.pending:
                self.settle_produces(node)
            if node.controller.active:
                active.append(node.controller.epoch)
            for i, p in node.parts:
                lg = p.log
                state = p.state
                if state.leader == node.id:
                    self.check_leader(node, i, p, lg, state.leader_epoch)
                if lg.high_watermark > lg.verified and lg.barrier != lg.verified:
                    self.check_committed(node, i, lg)
        if len(active) > 1 and len(active) != len(set(active)):
            raise Violation(f"two active controllers in one controller epoch: {active}")

    def check_leader(self, node: Node, i: int, p: Partition, lg: SimLog, epoch: int) -> None:
        key = (node.id, node.run, i)
        seen = self.hw_seen.get(key)
        if seen is not None and seen[0] == epoch:
            if lg.high_watermark < seen[1]:
                raise Violation(f"HW of leader {node.id} for {i} moved back in epoch {epoch}: "
                                f"{seen[1]} -> {lg.high_watermark}")  # fmt: skip
            if lg.high_watermark == seen[1]:
                return
        self.hw_seen[key] = (epoch, lg.high_watermark)
        if seen is not None and seen[0] == epoch:
            return
        self.log(f"{node.id} leads {i} in epoch {epoch}, leo={lg.log_end_offset} "
                 f"hw={lg.high_watermark}")  # fmt: skip
        lg.barrier = None  # what it holds is the partition's history from now on
        # Acked before this epoch began (a leader acting late on a superseded state is a
        # zombie: it acks nothing, see ack()).
        for (pi, offset), value in self.acked.items():
            if (pi == i and self.acked_in[(pi, offset)] < epoch
                    and (pi, offset) not in self.exempt
                    and not self.holds(lg, offset, value)):  # fmt: skip
                raise Violation(f"new leader {node.id} (epoch {epoch}) of {i} "
                                f"lacks acked {value}@{offset}")  # fmt: skip

    def check_committed(self, node: Node, i: int, lg: SimLog) -> None:
        """Below its HW a replica holds what has ever been below any HW."""
        committed = self.committed[i]
        limit = lg.high_watermark if lg.barrier is None else min(lg.high_watermark, lg.barrier)
        for offset in range(lg.verified, limit):
            value = lg.records[offset][1]
            if offset == len(committed):
                committed.append(value)
            elif committed[offset] != value:
                raise Violation(f"replica {node.id} of {i} has {value} at {offset} below its HW "
                                f"{lg.high_watermark}, committed there: {committed[offset]}")  # fmt: skip
        lg.verified = max(limit, lg.verified)

    # --- faults -------------------------------------------------------------------------------

    def crash(self, victims: list[Node], power_loss: bool) -> None:
        """Processes die at once; with a power loss their disks keep only what was flushed."""
        for node in victims:
            self.log(f"crash {node.id}" + (" (power loss)" if power_loss else ""))
            node.crash()
            self.at(SESSION_MS, self.zk.expire, node.zk.sid)  # no heartbeats from now on
            self.at(self.rng.randint(30, 500), self.restart, node)
        if power_loss:
            self.power_losses += 1
            for node in victims:
                for lg in node.disk.values():
                    leo = lg.log_end_offset
                    cut = lg.power_loss(self.rng)
                    if cut < leo:
                        self.log(f"  {node.id}/{lg.index}: {leo - cut} unflushed records lost")
        for node in victims:
            self.failed(node.id)

    def failed(self, node_id: int) -> None:
        for i in range(len(self.assignment)):
            self.crashed_since_write[i].add(node_id)
            self.isr_down(i)

    def restart(self, node: Node) -> None:
        if node.alive:
            return
        node.start()
        self.log(f"restart {node.id} (run {node.run}): " + ", ".join(
            f"{i}: leo={lg.log_end_offset} hw={lg.high_watermark}" for i, lg in node.disk.items()
        ))  # fmt: skip

    def cut_from_zk(self, node: Node, duration: int) -> None:
        if not node.alive or node.id in self.zk_cut:
            return
        self.episodes += 1
        episode = self.zk_cut[node.id] = self.episodes
        self.log(f"{node.id} cut off from ZooKeeper for {duration} ms")
        node.zk.disconnect()
        client = node.zk
        if duration > SESSION_MS:
            self.at(SESSION_MS, self.zk_expire, node, client, episode)
        self.at(duration, self.zk_heal, node, client, episode)

    def zk_expire(self, node: Node, client: ZkClient, episode: int) -> None:
        if self.zk_cut.get(node.id) == episode:
            self.zk.expire(client.sid)

    def zk_heal(self, node: Node, client: ZkClient, episode: int) -> None:
        if self.zk_cut.get(node.id) != episode:
            return
        del self.zk_cut[node.id]
        if node.alive and node.zk is client:
            self.log(f"{node.id} back in touch with ZooKeeper")
            client.reconnect()

    def nemesis(self) -> None:
        self.at(self.rng.randint(20, 120), self.nemesis)
        rng = self.rng
        r = rng.random()
        alive = [n for n in self.nodes.values() if n.alive]
        leaders = [self.nodes[lead] for lead in (self.zk_state(i)[0] for i in range(len(self.assignment)))
                   if lead in self.nodes and self.nodes[lead].alive]  # fmt: skip
        controller = self.controller_node()
        if r < 0.25 and len(alive) > 1:
            pick = rng.random()
            if pick < 0.3 and controller is not None:
                victim = controller
            elif pick < 0.7 and leaders:
                victim = rng.choice(leaders)
            else:
                victim = rng.choice(alive)
            self.crash([victim], power_loss=rng.random() < 0.35)
        elif r < 0.28:  # a power cut of every broker at once: unflushed acks may be lost
            self.crash(alive, power_loss=True)
        elif r < 0.45:
            victim = controller if controller is not None and rng.random() < 0.6 else (
                rng.choice(alive) if alive else None)  # fmt: skip
            if victim is not None:
                self.cut_from_zk(victim, rng.choice((rng.randint(20, 250), rng.randint(320, 700))))
        elif r < 0.52 and alive:
            victim = controller if controller is not None and rng.random() < 0.6 else (
                rng.choice(alive))  # fmt: skip
            self.zk_slow[victim.id] = self.now + rng.randint(100, 500)
            self.log(f"slow ZooKeeper link for {victim.id}")
        elif r < 0.68:
            a, b = rng.sample(list(self.nodes), 2)
            self.cut.add(frozenset((a, b)))
            self.log(f"partition {a}|{b}")
        elif r < 0.8 and self.cut:
            self.cut.clear()
            self.log("heal")

    def controller_node(self) -> Node | None:
        n = self.zk.nodes.get(Z.CONTROLLER)
        if n is None:
            return None
        node = self.nodes.get(json.loads(n.data)["brokerid"])
        return node if node is not None and node.alive else None

    # --- a run ----------------------------------------------------------------------------------

    def run(self, events: int = 1500) -> None:
        for node in self.nodes.values():
            self.at(self.rng.randint(0, 5), node.start)
        self.at(30, self.produce)
        self.at(80, self.nemesis)
        for _ in range(events):
            self.step()
        # Heal: no more faults or produces, everyone back; run until quiet.
        self.queue = [e for e in self.queue if e[2] not in (self.nemesis, self.produce)]
        heapq.heapify(self.queue)
        self.cut.clear()
        self.zk_slow.clear()
        for node in self.nodes.values():
            if node.id in self.zk_cut:
                self.zk_cut.pop(node.id)
                if node.alive:
                    node.zk.reconnect()
            if not node.alive:
                self.at(1, self.restart, node)
        deadline = self.now + 5_000
        while not self.quiet():
            if self.now > deadline or not self.step():
                states = [self.zk_state(i) for i in range(len(self.assignment))]
                raise Violation(f"no quiet state after healing: {states}")
        for i, replicas in enumerate(self.assignment):
            leader = self.nodes[self.zk_state(i)[0]].disk[i]
            for (pi, offset), value in self.acked.items():
                if (pi == i and (pi, offset) not in self.exempt
                        and not self.holds(leader, offset, value)):  # fmt: skip
                    raise Violation(f"acked {value}@{i}/{offset} missing at the end")
            for r in replicas:
                if self.nodes[r].disk[i].records != leader.records:
                    raise Violation(f"replica {r} of {i} differs from its leader at the end")

    def close(self) -> None:
        """Drop what is left to run (coroutines never started are closed, quietly)."""
        for _, _, fn, _ in self.queue:
            owner = getattr(fn, "__self__", None)
            if isinstance(owner, Task) and inspect.getcoroutinestate(owner.coro) == "CORO_CREATED":
                owner.coro.close()
        self.queue = []

    def quiet(self) -> bool:
        if self.controller_node() is None:
            return False
        for i, replicas in enumerate(self.assignment):
            leader_id, _epoch, isr, _ = self.zk_state(i)
            if leader_id < 0 or sorted(isr) != sorted(replicas):
                return False
            node = self.nodes[leader_id]
            p = node.rm.partitions[(TOPIC, i)] if node.alive else None
            if p is None or not p.is_leader or p.log.high_watermark != p.log.log_end_offset:
                return False
            for r in replicas:
                lg = self.nodes[r].disk[i]
                if (not self.nodes[r].alive or lg.log_end_offset != p.log.log_end_offset
                        or lg.high_watermark != p.log.high_watermark):  # fmt: skip
                    return False
        return True


def run_seed(seed: int, trace: bool = False, events: int = 1500) -> Sim:
    sim = Sim(seed, trace)
    try:
        with quiet_logs():
            sim.run(events)
    except Violation as e:
        raise Violation(
            f"seed {seed}: {e} (replay: .venv/bin/python tests/replication_sim.py {seed})"
        ) from None
    finally:
        sim.close()
    return sim


if __name__ == "__main__":
    s = Sim(int(sys.argv[1]), trace=True)
    try:
        with quiet_logs():
            s.run()
        print(f"seed {s.seed}: ok, {len(s.acked)} acks, {len(s.exempt)} lost to power losses")
    finally:
        s.close()
        print("\n".join(s.trace[-300:]))

"""ZooKeeper access for a multi-broker cluster: kazoo bridged into asyncio, and Kafka's znodes.

kazoo runs its own threads: its completions and watch callbacks never touch broker state
directly, they hop onto the broker's event loop with `loop.call_soon_threadsafe`. Every call
here is kazoo's non-blocking `*_async` variant wrapped in an asyncio future, so the event loop
never waits on ZooKeeper I/O.

The znode layout and JSON formats are Apache Kafka's (ZooKeeper mode), so `zkCli.sh` users
find what they expect:

    /cluster/id                               {"version":"1","id":"<cluster id>"}
    /controller                               {"version":1,"brokerid":N,"timestamp":".."} ephemeral
    /controller_epoch                         "E"
    /brokers/ids/N                            {"host":..,"port":..,"endpoints":[..],"rack":..} ephemeral
    /brokers/topics/T                         {"version":3,"partitions":{"0":[1,2]},"topic_id":..}
    /brokers/topics/T/partitions/P/state      {"controller_epoch":E,"leader":L,"leader_epoch":N,"isr":[..]}
    /config/topics/T                          {"version":1,"config":{..}}
    /admin/delete_topics/T                    (a deletion request)
    /admin/reassign_partitions                {"version":1,"partitions":[{"topic":..,"partition":..,"replicas":[..]}]}
    /admin/preferred_replica_election         {"version":1,"partitions":[{"topic":..,"partition":..}]}
    /latest_producer_id_block                 {"version":1,"broker":N,"block_start":"..","block_end":".."}
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    OperationTimeoutError,
    SessionExpiredError,
)

log = structlog.get_logger(__name__)

# Errors that mean "not connected right now": retry once the session is back.
TRANSIENT_ERRORS = (
    ConnectionLoss,
    ConnectionClosedError,
    SessionExpiredError,
    OperationTimeoutError,
)

__all__ = [
    "TRANSIENT_ERRORS",
    "BadVersionError",
    "NoNodeError",
    "NodeExistsError",
    "ZkClient",
]

# --- paths --------------------------------------------------------------------------------

CLUSTER_ID = "/cluster/id"
CONTROLLER = "/controller"
CONTROLLER_EPOCH = "/controller_epoch"
BROKER_IDS = "/brokers/ids"
BROKER_TOPICS = "/brokers/topics"
CONFIG_TOPICS = "/config/topics"
CONFIG_CHANGES = "/config/changes"
DELETE_TOPICS = "/admin/delete_topics"
REASSIGN_PARTITIONS = "/admin/reassign_partitions"
PREFERRED_REPLICA_ELECTION = "/admin/preferred_replica_election"
PRODUCER_ID_BLOCK = "/latest_producer_id_block"
FEATURE = "/feature"  # the finalized feature levels (Kafka's FeatureZNode); its version: the epoch
PERSISTENT_PATHS = (
    BROKER_IDS,
    BROKER_TOPICS,
    "/brokers/seqid",
    CONFIG_TOPICS,
    CONFIG_CHANGES,
    "/config/brokers",
    "/config/users",
    "/config/clients",
    DELETE_TOPICS,
    "/isr_change_notification",
    "/cluster",
    "/delegation_token/tokens",
)


def broker_path(node_id: int) -> str:
    return f"{BROKER_IDS}/{node_id}"


def topic_path(topic: str) -> str:
    return f"{BROKER_TOPICS}/{topic}"


def partitions_path(topic: str) -> str:
    return f"{BROKER_TOPICS}/{topic}/partitions"


def state_path(topic: str, partition: int) -> str:
    return f"{BROKER_TOPICS}/{topic}/partitions/{partition}/state"


def topic_config_path(topic: str) -> str:
    return f"{CONFIG_TOPICS}/{topic}"


def broker_config_path(entity: str) -> str:
    """/config/brokers/<id>, or /config/brokers/<default> for the cluster-wide default."""
    return f"/config/brokers/{entity}"


ENTITY_TYPES = ("users", "clients")
DELEGATION_TOKENS = "/delegation_token/tokens"  # Kafka's: one znode per token id


def sanitize(name: str) -> str:
    """Kafka's Sanitizer: an entity name as a znode name (URL-encoded, * as %2A)."""
    from urllib.parse import quote

    return quote(name, safe="").replace("~", "%7E")


def desanitize(name: str) -> str:
    from urllib.parse import unquote

    return unquote(name)


def entity_config_path(entity_type: str, name: str | None = None) -> str:
    """/config/users/<sanitized name>, /config/clients/<id> (Kafka's client entity configs)."""
    return f"/config/{entity_type}" if name is None else f"/config/{entity_type}/{sanitize(name)}"


def delete_topic_path(topic: str) -> str:
    return f"{DELETE_TOPICS}/{topic}"


# --- znode JSON, in Kafka's formats -------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _loads(data: bytes | None) -> Any:
    if not data:
        return None
    return json.loads(data)


def uuid_to_kafka(u: uuid.UUID) -> str:
    """Kafka's Uuid.toString(): 22 characters of URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(u.bytes).decode().rstrip("=")


def uuid_from_kafka(s: str) -> uuid.UUID:
    return uuid.UUID(bytes=base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))


def encode_broker(node_id: int, host: str, port: int, rack: str | None, listener: str,
                  endpoints: dict[str, tuple[str, int]] | None = None) -> bytes:  # fmt: skip
    """/brokers/ids/N: every advertised listener in `endpoints`; host and port are the
    inter-broker listener's (`listener`), as Kafka writes them."""
    endpoints = endpoints or {listener: (host, port)}
    data = {
        "features": {},
        "listener_security_protocol_map": {name: "PLAINTEXT" for name in endpoints},
        "endpoints": [f"{name}://{_host(h)}:{p}" for name, (h, p) in endpoints.items()],
        "jmx_port": -1,
        "port": port,
        "host": host,
        "version": 5,
        "timestamp": str(int(time.time() * 1000)),
    }
    if rack is not None:
        data["rack"] = rack
    return _dumps(data)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def decode_endpoints(data: bytes) -> dict[str, tuple[str, int]]:
    """Listener name -> (host, port) of a /brokers/ids/N node."""
    out = {}
    for ep in _loads(data).get("endpoints") or ():
        name, _, rest = ep.partition("://")
        h, _, p = rest.rpartition(":")
        out[name] = (h.strip("[]"), int(p))
    return out


def decode_broker(data: bytes, listener: str | None = None) -> tuple[str, int, str | None]:
    """(host, port, rack) of a /brokers/ids/N node: the endpoint of `listener` (the inter-broker
    listener), else the first endpoint, else host/port."""
    d = _loads(data)
    host, port = d.get("host"), d.get("port", -1)
    endpoints = decode_endpoints(data)
    if endpoints:
        host, port = endpoints.get(listener) or next(iter(endpoints.values()))
    return host, port, d.get("rack")


def encode_topic(assignment: list[list[int]], topic_id: uuid.UUID,
                 adding: dict[int, list[int]] | None = None,
                 removing: dict[int, list[int]] | None = None) -> bytes:  # fmt: skip
    """Kafka's topic znode (version 3): each partition's replicas and, for a partition being
    reassigned (KIP-455), its adding and removing replicas."""
    return _dumps(
        {
            "partitions": {str(i): replicas for i, replicas in enumerate(assignment)},
            "topic_id": uuid_to_kafka(topic_id),
            "adding_replicas": {str(i): r for i, r in sorted((adding or {}).items()) if r},
            "removing_replicas": {str(i): r for i, r in sorted((removing or {}).items()) if r},
            "version": 3,
        }
    )


def add_topic_id(data: bytes, topic_id: uuid.UUID) -> bytes:
    """A topic znode written without an id, with one (other fields kept)."""
    d = _loads(data)
    d["topic_id"] = uuid_to_kafka(topic_id)
    d["version"] = max(int(d.get("version", 1)), 2)  # v2 added topic_id
    return _dumps(d)


def decode_topic(data: bytes) -> tuple[list[list[int]], uuid.UUID | None]:
    d = _loads(data)
    parts = {int(k): list(v) for k, v in d.get("partitions", {}).items()}
    assignment = [parts[i] for i in sorted(parts)]
    topic_id = d.get("topic_id")
    return assignment, uuid_from_kafka(topic_id) if topic_id else None


def decode_reassignments(data: bytes) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(adding replicas, removing replicas) by partition, from a topic znode."""
    d = _loads(data)

    def part(key: str) -> dict[int, list[int]]:
        return {int(k): list(v) for k, v in (d.get(key) or {}).items() if v}

    return part("adding_replicas"), part("removing_replicas")


def encode_state(leader: int, leader_epoch: int, isr: list[int], controller_epoch: int,
                 leader_registration: int = -1) -> bytes:  # fmt: skip
    """Kafka's partition state znode. `leader_registration` (pykbroker's own field; Kafka's
    readers ignore it): the leader's broker epoch (/brokers/ids czxid) the controller decided
    with, as Kafka's LeaderAndIsr carries it (KIP-380)."""
    d = {
        "controller_epoch": controller_epoch,
        "leader": leader,
        "version": 1,
        "leader_epoch": leader_epoch,
        "isr": isr,
    }
    if leader_registration >= 0:
        d["leader_broker_epoch"] = leader_registration
    return _dumps(d)


def state_leader_registration(data: bytes) -> int:
    """The leader's broker epoch a state was decided with (-1: not recorded)."""
    return _loads(data).get("leader_broker_epoch", -1)


def decode_state(data: bytes) -> tuple[int, int, list[int], int]:
    """(leader, leader_epoch, isr, controller_epoch)."""
    d = _loads(data)
    return d["leader"], d["leader_epoch"], list(d["isr"]), d.get("controller_epoch", 0)


def encode_features(levels: dict[str, int]) -> bytes:
    """Kafka's FeatureZNode (version 2, status 1 = enabled)."""
    features = {name: {"max_version_level": lvl} for name, lvl in sorted(levels.items())}
    return json.dumps({"version": 2, "status": 1, "features": features}).encode()


def decode_features(data: bytes | None) -> dict[str, int]:
    d = json.loads(data) if data else {}
    return {name: int(f["max_version_level"]) for name, f in d.get("features", {}).items()
            if int(f["max_version_level"]) > 0}  # fmt: skip


def encode_config(configs: dict[str, str]) -> bytes:
    return _dumps({"version": 1, "config": configs})


def decode_config(data: bytes | None) -> dict[str, str]:
    d = _loads(data)
    return dict(d.get("config", {})) if d else {}


# --- the client ---------------------------------------------------------------------------


class ZkClient:
    """kazoo's non-blocking API as coroutines on one event loop; watches delivered on it too.

    `zookeeper.connect` may carry a chroot (`host:2181/kafka`), created on first use as Kafka does.
    """

    def __init__(self, connect: str, session_timeout_ms: int, loop: asyncio.AbstractEventLoop):
        self.connect = connect
        self.loop = loop
        self.session_timeout_ms = session_timeout_ms
        self.client = KazooClient(hosts=connect, timeout=session_timeout_ms / 1000)
        self.session_listeners: list[Callable[[str], None]] = []
        self.connected = asyncio.Event()
        self.stopping = False
        self.client.add_listener(self._on_state)

    async def start(self, timeout_s: float) -> None:
        hosts, _, chroot = self.connect.partition("/")
        if chroot:
            # The chroot must exist before a chrooted session can use it.
            boot = KazooClient(hosts=hosts, timeout=self.session_timeout_ms / 1000)
            await self._blocking(boot.start, timeout_s)
            try:
                await self._blocking(boot.ensure_path, "/" + chroot)
            finally:
                await self._blocking(boot.stop)
                boot.close()
        await self._blocking(self.client.start, timeout_s)
        self.connected.set()

    async def stop(self) -> None:
        """Close the session: this broker's ephemeral nodes vanish at once."""
        self.stopping = True
        await self._blocking(self.client.stop)
        self.client.close()

    async def _blocking(self, fn, *args):
        """For the few calls kazoo has no async variant of (connect, close): off the loop."""
        return await self.loop.run_in_executor(None, fn, *args)

    def _on_state(self, state: str) -> None:
        # Runs on a kazoo thread: never touch broker state here.
        self.loop.call_soon_threadsafe(self._state_changed, state)

    def _state_changed(self, state: str) -> None:
        if state == KazooState.CONNECTED:
            self.connected.set()
        else:
            self.connected.clear()
        if self.stopping:
            return
        for fn in self.session_listeners:
            fn(state)

    @property
    def session_id(self) -> int | None:
        sid = self.client.client_id
        return sid[0] if sid else None

    # --- futures --------------------------------------------------------------------------

    def _future(self, async_result) -> asyncio.Future:
        fut = self.loop.create_future()

        def settle(result) -> None:
            if fut.done():
                return
            if result.successful():
                fut.set_result(result.value)
            else:
                fut.set_exception(result.exception)

        async_result.rawlink(lambda r: self.loop.call_soon_threadsafe(settle, r))
        return fut

    def watcher(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """A kazoo watch callback that runs `fn(event)` on the event loop."""
        return lambda event: self.loop.call_soon_threadsafe(fn, event)

    # --- operations -----------------------------------------------------------------------

    def get(self, path: str, watch=None) -> asyncio.Future:
        return self._future(self.client.get_async(path, watch=watch))

    def get_children(self, path: str, watch=None) -> asyncio.Future:
        return self._future(self.client.get_children_async(path, watch=watch))

    def exists(self, path: str, watch=None) -> asyncio.Future:
        return self._future(self.client.exists_async(path, watch=watch))

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False,
               sequence: bool = False, makepath: bool = False) -> asyncio.Future:  # fmt: skip
        return self._future(
            self.client.create_async(
                path, value, ephemeral=ephemeral, sequence=sequence, makepath=makepath
            )
        )

    def set(self, path: str, value: bytes, version: int = -1) -> asyncio.Future:
        return self._future(self.client.set_async(path, value, version))

    def delete(self, path: str, version: int = -1) -> asyncio.Future:
        return self._future(self.client.delete_async(path, version))

    def ensure_path(self, path: str) -> asyncio.Future:
        return self._future(self.client.ensure_path_async(path))

    def transaction(self):
        return self.client.transaction()

    def commit(self, txn) -> asyncio.Future:
        """Commit a kazoo transaction; the future's value is the list of per-op results."""
        return self._future(txn.commit_async())

    async def delete_recursive(self, path: str) -> None:
        """Delete a subtree, children first (tolerating nodes that vanish meanwhile)."""
        try:
            children = await self.get_children(path)
        except NoNodeError:
            return
        for child in children:
            await self.delete_recursive(f"{path}/{child}")
        try:
            await self.delete(path)
        except NoNodeError:
            pass
        except NotEmptyError:
            await self.delete_recursive(path)  # a child appeared meanwhile


def session_lost(state: str) -> bool:
    return state == KazooState.LOST

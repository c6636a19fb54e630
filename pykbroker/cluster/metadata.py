"""Cluster metadata: brokers, topics, partition leadership, topic configs, producer-id blocks.

`LocalMetadata` is the single-broker store: this broker leads every partition, and the state
lives in `<log dir>/meta.properties` and `<log dir>/topics.json` (rewritten atomically).
`ZkMetadata` (cluster/zk_metadata.py) has the same interface, kept in ZooKeeper, for a
multi-broker cluster. Both share `MetadataBase`'s validation and replica placement.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import structlog

from protocol.errors import ErrorCode, KafkaError
from pykbroker.config import ConfigError, parse_topic_configs
from pykbroker.features import default_levels
from pykbroker.storage.files import atomic_write

log = structlog.get_logger(__name__)

MAX_TOPIC_NAME = 249
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
PRODUCER_ID_BLOCK = 1000

_monotonic = time.monotonic  # (tests pin it)


def validate_topic_name(name: str) -> None:
    if not name:
        raise KafkaError(
            ErrorCode.INVALID_TOPIC_EXCEPTION, "Topic name is illegal, it can't be empty"
        )
    if name in (".", ".."):
        raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, 'Topic name cannot be "." or ".."')
    if len(name) > MAX_TOPIC_NAME:
        raise KafkaError(
            ErrorCode.INVALID_TOPIC_EXCEPTION,
            f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME} characters, topic name: {name}",
        )
    if not _LEGAL_TOPIC.match(name):
        raise KafkaError(
            ErrorCode.INVALID_TOPIC_EXCEPTION,
            f"Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'",
        )


@dataclass(slots=True)
class BrokerInfo:
    node_id: int
    host: str  # host and port: the inter-broker listener's advertised address
    port: int
    rack: str | None = None
    # Every advertised listener: name -> (host, port). A client is given the address of the
    # listener it connected to (as with Kafka), so one broker can be reached as broker1:9092
    # inside a Docker network and as localhost:9093 from the host.
    endpoints: dict[str, tuple[str, int]] | None = None

    def address(self, listener: str | None) -> tuple[str, int]:
        """(host, port) for a client on `listener`; the default address if the broker has no
        listener of that name."""
        if listener and self.endpoints and listener in self.endpoints:
            return self.endpoints[listener]
        return self.host, self.port


@dataclass(slots=True)
class PartitionState:
    leader: int  # -1: no leader (offline, or not yet elected)
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    # ZooKeeper mode: version of the .../partitions/P/state znode this was read from (-1: the
    # znode doesn't exist yet, -2: not read yet), and the controller epoch that wrote it.
    zk_version: int = -1
    controller_epoch: int = 0
    # A reassignment in progress (KIP-455): `replicas` is then the union of the original and
    # the target replicas; the target is `replicas` without `removing`.
    adding: list[int] = field(default_factory=list)
    removing: list[int] = field(default_factory=list)
    # The zxid of the write it was read from (-1: unknown). A broker that registered after it
    # (restarted, or renewed its session, since) must not lead by it: see `registered_after`.
    zk_mzxid: int = -1
    # The leader's registration (broker epoch) the controller decided with (-1: not recorded):
    # a broker registered since (restarted) doesn't lead by it (Kafka's LeaderAndIsr check).
    leader_registration: int = -1

    @property
    def reassigning(self) -> bool:
        return bool(self.adding or self.removing)

    def to_json(self) -> dict[str, Any]:
        return {
            "leader": self.leader,
            "leader_epoch": self.leader_epoch,
            "replicas": self.replicas,
            "isr": self.isr,
        }


def registered_after(st: PartitionState, registration_zxid: int) -> bool:
    """Was the state written before a broker's current registration (its /brokers/ids znode's
    czxid, Kafka's broker epoch)? Then it was decided about an earlier run of that broker,
    whose log may since have lost its unflushed tail: a leadership or an ISR place in it is
    not this run's to take (Kafka's controller treats the broker as failed and started, and
    the restarted broker waits for its LeaderAndIsr)."""
    return 0 <= st.zk_mzxid < registration_zxid


@dataclass(slots=True)
class TopicInfo:
    name: str
    topic_id: uuid.UUID
    partitions: list[PartitionState]
    configs: dict[str, str] = field(default_factory=dict)  # overrides, as strings

    @property
    def internal(self) -> bool:
        return self.name in INTERNAL_TOPICS

    @property
    def replication_factor(self) -> int:
        return len(self.partitions[0].replicas) if self.partitions else 0


def new_cluster_id() -> str:
    """Kafka's format: a random UUID as 22 characters of URL-safe base64."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


DEFAULT_ENTITY = "<default>"  # the cluster-wide default broker entity, as Kafka names it


class MetadataBase:
    """Validation and replica placement shared by the single-broker and ZooKeeper stores."""

    topics: dict[str, TopicInfo]
    # Dynamic broker configs (strings, as clients sent them) by entity: a broker id or
    # DEFAULT_ENTITY. Each broker keeps its own and the default.
    dynamic_configs: dict[str, dict[str, str]]

    # Client entities' configs, Kafka's /config/users/<name> and /config/clients/<id>: SCRAM
    # credentials and quotas, strings as stored, by entity type ("users", "clients") and name
    # (the name unsanitized; Kafka's "<default>" for the default entity).
    entity_configs: dict[str, dict[str, dict[str, str]]]

    # Finalized feature levels (pykbroker/features.py), and their epoch: it grows with every
    # change, so clients can tell newer from older (ApiVersions' FinalizedFeaturesEpoch).
    features: dict[str, int]
    features_epoch: int = -1

    # Delegation tokens by id: Kafka's token znode content (security/delegation_tokens.py).
    delegation_tokens: dict[str, dict]

    def set_delegation_token(self, token_id: str, info: dict | None):
        """Store (None: remove) a token. Returns an awaitable of the write when it is made in
        the background (ZooKeeper), else None."""
        raise NotImplementedError

    def update_features(self, change) -> Awaitable[None] | None:
        """Finalized levels := change(current levels) (which may raise KafkaError), stored;
        an awaitable of the write where it is not done at once."""
        raise NotImplementedError

    def broker_configs(self, entity: str) -> dict[str, str]:
        return dict(self.dynamic_configs.get(entity, {}))

    def user_configs(self, name: str) -> dict[str, str]:
        """A user's stored configs (SCRAM-SHA-256=..., quotas); read on every SCRAM login."""
        return self.entity_configs.get("users", {}).get(name, {})

    def entities(self, entity_type: str) -> dict[str, dict[str, str]]:
        return self.entity_configs.get(entity_type, {})

    def alter_entity_configs(self, entity_type: str, name: str, changes: dict[str, str | None]):
        """Set (None: remove) some of an entity's keys, keeping the others. Returns an
        awaitable of the write when it is made in the background (ZooKeeper), else None."""
        raise NotImplementedError

    @contextlib.contextmanager
    def batch(self):
        """Changes made inside are persisted once, at the end (one admin request, one write)."""
        yield

    def set_broker_configs(self, entity: str, configs: dict[str, str]) -> None:
        raise NotImplementedError

    def live_broker_ids(self) -> list[int]:
        raise NotImplementedError

    def brokers(self) -> list[BrokerInfo]:
        raise NotImplementedError

    def topic(self, name: str) -> TopicInfo | None:
        return self.topics.get(name)

    def topic_configs(self, name: str) -> dict[str, str] | None:
        """A topic's config overrides (as strings), None for an unknown topic."""
        info = self.topics.get(name)
        return info.configs if info is not None else None

    _by_id: dict[uuid.UUID, TopicInfo] = {}  # an index of `topics`, rebuilt when it misses
    _by_id_built: float | None = None  # when it was built; None: a topic was added since

    def topic_added(self) -> None:
        """Every store calls this when it adds a topic: the next id miss rebuilds the index."""
        self._by_id_built = None

    def topic_by_id(self, topic_id: uuid.UUID | None) -> TopicInfo | None:
        """The topic with this id (Fetch and Produce v13+ name topics by id): a dict lookup,
        checked against `topics` (which both stores change in place). A miss rebuilds the index
        only if a topic was added since, or after 100 ms (an id written back into a cached
        topic): unknown ids, which anyone can send by the thousand, must not each cost a scan
        of every topic."""
        if topic_id is None or topic_id.int == 0:
            return None
        t = self._by_id.get(topic_id)
        if t is not None and t.topic_id == topic_id and self.topics.get(t.name) is t:
            return t
        now = _monotonic()
        if self._by_id_built is not None and now - self._by_id_built < 0.1:
            return None
        self._by_id = {t.topic_id: t for t in self.topics.values()}
        self._by_id_built = now
        return self._by_id.get(topic_id)

    def leader_for(self, topic: str, partition: int) -> BrokerInfo | None:
        """The live broker leading a partition, or None (unknown partition, or no leader)."""
        info = self.topics.get(topic)
        if info is None or not 0 <= partition < len(info.partitions):
            return None
        leader = info.partitions[partition].leader
        for b in self.brokers():
            if b.node_id == leader:
                return b
        return None

    def _check_not_being_deleted(self, name: str) -> None:
        """Hook: the ZooKeeper store refuses names still marked for deletion."""

    def committed(self, name: str):
        """An awaitable of the write of the latest change to topic `name` while it is in flight,
        else None. (The local store writes at once; the ZooKeeper one in the background.)"""
        return None

    def check_new_topic(
        self, name: str, num_partitions: int, replication_factor: int,
        assignments: dict[int, list[int]] | None, configs: dict[str, str],
    ) -> list[list[int]]:  # fmt: skip
        """Validate a CreateTopics entry; returns the replica assignment. Raises KafkaError."""
        validate_topic_name(name)
        self._check_not_being_deleted(name)
        if name in self.topics:
            raise KafkaError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        collision = name.replace(".", "_")
        for other in self.topics:
            if other.replace(".", "_") == collision:
                raise KafkaError(
                    ErrorCode.INVALID_TOPIC_EXCEPTION,
                    f"Topic '{name}' collides with existing topic: {other}",
                )
        try:
            parse_topic_configs(configs)
        except ConfigError as e:
            raise KafkaError(ErrorCode.INVALID_CONFIG, str(e)) from None
        if assignments:
            if num_partitions != -1 or replication_factor != -1:
                raise KafkaError(
                    ErrorCode.INVALID_REQUEST,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
                )
            return self._check_assignments(assignments)
        if num_partitions <= 0:
            raise KafkaError(
                ErrorCode.INVALID_PARTITIONS,
                "Number of partitions was set to an invalid non-positive value.",
            )
        if replication_factor <= 0:
            raise KafkaError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                "Replication factor must be larger than 0, or -1 to use the default value.",
            )
        return self.assign_replicas(num_partitions, replication_factor)

    def _check_assignments(self, assignments: dict[int, list[int]]) -> list[list[int]]:
        live = set(self.live_broker_ids())
        if sorted(assignments) != list(range(len(assignments))):
            raise KafkaError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                "Partitions should be a consecutive 0-based integer sequence",
            )
        out = []
        for p in range(len(assignments)):
            replicas = assignments[p]
            if not replicas or len(set(replicas)) != len(replicas):
                raise KafkaError(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"Duplicate or empty replica assignment for partition {p}",
                )
            if not set(replicas) <= live:
                raise KafkaError(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"Replica assignment for partition {p} names unknown brokers",
                )
            out.append(list(replicas))
        return out

    def assign_replicas(
        self, num_partitions: int, replication_factor: int, start: int = 0
    ) -> list[list[int]]:
        """Round-robin replica placement, as Kafka's (rack-unaware) assignor does, for
        partitions [start, num_partitions) (callers bound the count: see handlers/admin.py)."""
        brokers = sorted(self.live_broker_ids())
        if replication_factor > len(brokers):
            raise KafkaError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"Unable to replicate the partition {replication_factor} time(s): The target replication "
                f"factor of {replication_factor} cannot be reached because only {len(brokers)} broker(s) "
                "are registered.",
            )
        racks = {b.node_id: b.rack for b in self.brokers() if b.node_id in brokers}
        if len(racks) == len(brokers) and all(racks.values()):
            # Every broker has broker.rack: Kafka's rack-aware placement (placement.py).
            from .placement import assign

            return assign(num_partitions - start, replication_factor, racks, first_partition=start)
        n = len(brokers)
        return [
            [brokers[(p + r) % n] for r in range(replication_factor)]
            for p in range(start, num_partitions)
        ]


class LocalMetadata(MetadataBase):
    def __init__(self, data_dir: str, node_id: int, advertised: tuple[str, int], rack: str | None = None,
                 cluster_id: str | None = None):  # fmt: skip
        self.data_dir = data_dir
        self.node_id = node_id
        self.broker = BrokerInfo(node_id, advertised[0], advertised[1], rack)
        self.topics: dict[str, TopicInfo] = {}
        self.dynamic_configs: dict[str, dict[str, str]] = {}
        self.client_quotas: dict[str, dict[str, str]] = {}  # entity path -> quota configs
        self.entity_configs: dict[str, dict[str, dict[str, str]]] = {}
        self.delegation_tokens: dict[str, dict] = {}
        self._topics_path = os.path.join(data_dir, "topics.json")
        self._batching = False
        self._batch_undos: list = []
        self._dirty = False
        self._next_producer_id = 0
        self._producer_id_block_end = 0
        self.cluster_id = load_meta_properties(data_dir, node_id, cluster_id)
        self.features: dict[str, int] | None = None
        self.features_epoch = 0
        self._load_topics()
        if self.features is None:  # a new cluster (or one from before features): 4.1's defaults
            self.features = default_levels()
            with contextlib.suppress(KafkaError):  # a full disk: written with the next change
                self._save()

    # --- persistence ------------------------------------------------------------------------

    def _load_topics(self) -> None:
        if not os.path.exists(self._topics_path):
            return
        with open(self._topics_path) as f:
            state = json.load(f)
        self._producer_id_block_end = state.get("producer_id_block_end", 0)
        self.dynamic_configs = state.get("broker_configs", {})
        self.client_quotas = state.get("client_quotas", {})
        self.entity_configs = state.get("entity_configs", {})
        self.delegation_tokens = state.get("delegation_tokens", {})
        self.features = state.get("features")
        self.features_epoch = state.get("features_epoch", 0)
        # Never hand out an id from a block that may have been used before a crash.
        self._next_producer_id = self._producer_id_block_end
        for t in state["topics"]:
            self.topics[t["name"]] = TopicInfo(
                t["name"], uuid.UUID(t["id"]),
                [PartitionState(p["leader"], p["leader_epoch"], p["replicas"], p["isr"]) for p in t["partitions"]],
                t.get("configs", {}),
            )  # fmt: skip

    @contextlib.contextmanager
    def batch(self):
        """Changes made inside are written once, at the end; if that write fails, every change
        made with an undo is taken back and the KafkaError raised from here."""
        outer = not self._batching
        if outer:
            self._batch_undos = []
        self._batching = True
        try:
            yield
        finally:
            if outer:
                self._batching = False
                undos, self._batch_undos = self._batch_undos, []
                if self._dirty:
                    try:
                        self._save()
                    except KafkaError:
                        for undo in reversed(undos):
                            undo()
                        raise

    def _save(self) -> None:
        if self._batching:
            self._dirty = True
            return
        self._dirty = False
        head = {
            "producer_id_block_end": self._producer_id_block_end,
            "broker_configs": self.dynamic_configs,
            "client_quotas": self.client_quotas,
            "entity_configs": self.entity_configs,
            "delegation_tokens": self.delegation_tokens,
            "features": self.features,
            "features_epoch": self.features_epoch,
        }
        # One topic per line, each through json's C encoder (indent= would select the pure-Python
        # one, seconds for thousands of partitions, on every topic change).
        topics = ",\n".join(
            json.dumps({"name": t.name, "id": str(t.topic_id), "configs": t.configs,
                        "partitions": [p.to_json() for p in t.partitions]})
            for t in self.topics.values()
        )  # fmt: skip
        try:
            atomic_write(
                self._topics_path, json.dumps(head)[:-1] + ', "topics": [\n' + topics + "\n]}\n"
            )
        except OSError as e:
            self._dirty = True  # memory is ahead of the file: written with the next change
            raise KafkaError(
                ErrorCode.KAFKA_STORAGE_ERROR,
                f"Error while writing {self._topics_path}: [Errno {e.errno}] {e.strerror}",
            ) from None

    def _save_or_undo(self, undo) -> None:
        """Persist a change, or take it back (a full disk) so memory never promises what a
        restart would forget."""
        if self._batching:  # written (or undone) when the batch ends
            self._batch_undos.append(undo)
            self._dirty = True
            return
        try:
            self._save()
        except KafkaError:
            undo()
            raise

    # --- queries ------------------------------------------------------------------------------

    @property
    def controller_id(self) -> int:
        return self.node_id

    def brokers(self) -> list[BrokerInfo]:
        return [self.broker]

    def live_broker_ids(self) -> list[int]:
        return [self.node_id]

    # --- changes ------------------------------------------------------------------------------

    def create_topic(
        self, name: str, assignment: list[list[int]], configs: dict[str, str]
    ) -> TopicInfo:
        info = TopicInfo(
            name, uuid.uuid4(),
            [PartitionState(replicas[0], 0, list(replicas), list(replicas)) for replicas in assignment],
            dict(configs),
        )  # fmt: skip
        self.topics[name] = info
        self.topic_added()
        self._save_or_undo(lambda: self.topics.pop(name, None))
        log.info(
            "topic_created",
            topic=name,
            partitions=len(assignment),
            replication_factor=len(assignment[0]),
        )
        return info

    def delete_topic(self, name: str) -> TopicInfo:
        info = self.topics.pop(name)
        self._save()
        log.info("topic_deleted", topic=name)
        return info

    def set_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        self.topics[name].configs = dict(configs)
        self._save()

    def add_partitions(self, name: str, assignment: list[list[int]]) -> None:
        info = self.topics[name]
        before = len(info.partitions)
        info.partitions.extend(PartitionState(r[0], 0, list(r), list(r)) for r in assignment)
        self._save_or_undo(lambda: info.partitions.__delitem__(slice(before, None)))

    def set_broker_configs(self, entity: str, configs: dict[str, str]) -> None:
        self.dynamic_configs[entity] = dict(configs)
        self._save()

    def update_features(self, change) -> None:
        old, old_epoch = self.features, self.features_epoch
        self.features, self.features_epoch = change(dict(old)), old_epoch + 1

        def undo() -> None:
            self.features, self.features_epoch = old, old_epoch

        self._save_or_undo(undo)

    def set_client_quotas(self, changes: dict[str, dict[str, str]]) -> None:
        """Replace the quota configs of entities (by Kafka's entity path; {} removes them)."""
        before = {path: self.client_quotas.get(path) for path in changes}
        for path, values in changes.items():
            if values:
                self.client_quotas[path] = dict(values)
            else:
                self.client_quotas.pop(path, None)

        def undo() -> None:
            for path, values in before.items():
                if values is None:
                    self.client_quotas.pop(path, None)
                else:
                    self.client_quotas[path] = values

        self._save_or_undo(undo)

    def set_delegation_token(self, token_id: str, info: dict | None) -> None:
        old = self.delegation_tokens.get(token_id)
        if info is None:
            self.delegation_tokens.pop(token_id, None)
        else:
            self.delegation_tokens[token_id] = info

        def undo() -> None:
            if old is None:
                self.delegation_tokens.pop(token_id, None)
            else:
                self.delegation_tokens[token_id] = old

        self._save_or_undo(undo)

    def alter_entity_configs(
        self, entity_type: str, name: str, changes: dict[str, str | None]
    ) -> None:
        entities = self.entity_configs.setdefault(entity_type, {})
        old = entities.get(name)
        merged = dict(old or {})
        for key, value in changes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        if merged:
            entities[name] = merged
        else:
            entities.pop(name, None)

        def undo() -> None:
            if old is None:
                entities.pop(name, None)
            else:
                entities[name] = old

        self._save_or_undo(undo)
        return None

    def next_producer_id(self) -> int:
        if self._next_producer_id >= self._producer_id_block_end:
            end = self._producer_id_block_end
            self._producer_id_block_end = self._next_producer_id + PRODUCER_ID_BLOCK
            self._save_or_undo(lambda: setattr(self, "_producer_id_block_end", end))
        pid = self._next_producer_id
        self._next_producer_id += 1
        return pid


def stored_broker_configs(data_dir: str) -> tuple[dict[str, dict[str, str]], str | None]:
    """The dynamic broker configs a single broker keeps in `<data_dir>/topics.json`, read
    without starting it (`pykbroker --print-config`); and the file's path, None if absent."""
    path = os.path.join(data_dir, "topics.json")
    try:
        with open(path) as f:
            return json.load(f).get("broker_configs", {}), path
    except FileNotFoundError:
        return {}, None


def load_meta_properties(data_dir: str, node_id: int, configured: str | None) -> str:
    """Check (or write) `meta.properties`: this log dir belongs to this node and cluster."""
    path = os.path.join(data_dir, "meta.properties")
    props: dict[str, str] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    k, v = line.strip().split("=", 1)
                    props[k] = v
    stored_node = props.get("node.id")
    if stored_node is not None and int(stored_node) != node_id:
        raise ConfigError(
            f"Stored node id {stored_node} in {path} doesn't match configured node.id {node_id}"
        )
    cluster_id = props.get("cluster.id") or configured or new_cluster_id()
    if configured and configured != cluster_id:
        raise ConfigError(
            f"Stored cluster id {cluster_id} doesn't match configured cluster.id {configured}"
        )
    if not props:
        atomic_write(path, f"version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n")
    return cluster_id

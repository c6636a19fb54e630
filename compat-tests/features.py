"""The feature columns of the compatibility matrix, shared by every client's driver.

Each feature names the Kafka APIs it needs. Before running a driver, the runner asks the broker
(ApiVersions) which APIs it serves: a feature whose APIs are not all served is reported as
`not built`, never run and never counted as passed. When the broker starts serving them the
feature runs by itself and shows pass or fail.

`needs` is a list of requirements; each requirement is a tuple of API keys of which at least one
must be served (e.g. AlterConfigs or IncrementalAlterConfigs). `topics` are created by the
runner before the driver starts (name suffix -> (partitions, topic configs)), so that features
other than admin don't depend on the admin APIs of the client under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Kafka API keys (Apache Kafka's ApiKeys enum).
PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR = 8, 9, 10
JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 11, 12, 13, 14
API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS, INIT_PRODUCER_ID = 18, 19, 20, 22
ADD_PARTITIONS_TO_TXN, ADD_OFFSETS_TO_TXN, END_TXN, TXN_OFFSET_COMMIT = 24, 25, 26, 28
DESCRIBE_CONFIGS, ALTER_CONFIGS, CREATE_PARTITIONS = 32, 33, 37
INCREMENTAL_ALTER_CONFIGS = 44

API_NAMES = {
    PRODUCE: "Produce", FETCH: "Fetch", LIST_OFFSETS: "ListOffsets", METADATA: "Metadata",
    OFFSET_COMMIT: "OffsetCommit", OFFSET_FETCH: "OffsetFetch",
    FIND_COORDINATOR: "FindCoordinator", JOIN_GROUP: "JoinGroup", HEARTBEAT: "Heartbeat",
    LEAVE_GROUP: "LeaveGroup", SYNC_GROUP: "SyncGroup", API_VERSIONS: "ApiVersions",
    CREATE_TOPICS: "CreateTopics", DELETE_TOPICS: "DeleteTopics",
    INIT_PRODUCER_ID: "InitProducerId", ADD_PARTITIONS_TO_TXN: "AddPartitionsToTxn",
    ADD_OFFSETS_TO_TXN: "AddOffsetsToTxn", END_TXN: "EndTxn",
    TXN_OFFSET_COMMIT: "TxnOffsetCommit", DESCRIBE_CONFIGS: "DescribeConfigs",
    ALTER_CONFIGS: "AlterConfigs", CREATE_PARTITIONS: "CreatePartitions",
    INCREMENTAL_ALTER_CONFIGS: "IncrementalAlterConfigs",
}  # fmt: skip

CORE = [(API_VERSIONS,), (METADATA,), (PRODUCE,), (FETCH,), (LIST_OFFSETS,)]
GROUPS = [(FIND_COORDINATOR,), (JOIN_GROUP,), (SYNC_GROUP,), (HEARTBEAT,), (LEAVE_GROUP,),
          (OFFSET_COMMIT,), (OFFSET_FETCH,)]  # fmt: skip

# A topic config that lets the large-message feature send 4 MiB records.
LARGE = {"max.message.bytes": str(8 * 1024 * 1024)}


@dataclass(frozen=True)
class Feature:
    name: str
    title: str
    needs: list[tuple[int, ...]]
    topics: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    timeout: float = 60.0
    # Something beyond APIs that must exist (e.g. "multi-broker"); None when APIs suffice.
    needs_capability: str | None = None
    replication_factor: int = 1  # of the feature's topics (3 on the matrix's cluster)
    core: bool = False  # part of the quick subset run by `make test`


FEATURES: list[Feature] = [
    Feature("metadata", "ApiVersions negotiation and metadata", CORE,
            {"t": (3, {})}, core=True),
    Feature("produce_consume", "produce/consume with keys and headers", CORE,
            {"t": (1, {})}, core=True),
    Feature("compression.gzip", "gzip", CORE, {"t": (1, {})}, core=True),
    Feature("compression.snappy", "snappy", CORE, {"t": (1, {})}, core=True),
    Feature("compression.lz4", "lz4", CORE, {"t": (1, {})}, core=True),
    Feature("compression.zstd", "zstd", CORE, {"t": (1, {})}, core=True),
    Feature("ordering", "multi-partition ordering", CORE, {"t": (4, {})}, core=True),
    Feature("groups.commit_resume", "consumer group: join, commit, resume", CORE + GROUPS,
            {"t": (3, {})}, timeout=90, core=True),
    Feature("groups.rebalance", "consumer group: rebalance on member loss", CORE + GROUPS,
            {"t": (4, {})}, timeout=120),
    Feature("admin.topics", "admin: create/delete topics, create partitions",
            CORE + [(CREATE_TOPICS,), (DELETE_TOPICS,), (CREATE_PARTITIONS,)], core=True),
    Feature("admin.configs", "admin: describe/alter configs",
            CORE + [(DESCRIBE_CONFIGS,), (ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS)],
            {"t": (1, {})}, core=True),
    Feature("idempotent", "idempotent producer", CORE + [(INIT_PRODUCER_ID,)],
            {"t": (2, {})}, core=True),
    Feature("transactions", "transactions + read_committed",
            CORE + [(FIND_COORDINATOR,), (INIT_PRODUCER_ID,), (ADD_PARTITIONS_TO_TXN,),
                    (END_TXN,)],
            {"t": (2, {})}, timeout=90, core=True),
    Feature("offsets_by_timestamp", "offsets by timestamp", CORE, {"t": (1, {})}, core=True),
    Feature("large_messages", "large messages (4 MiB)", CORE,
            {"big": (1, LARGE), "default": (1, {})}, core=True),
    Feature("failover", "failover: acks=all through a SIGKILLed leader (3 brokers)", CORE,
            {"t": (3, {"min.insync.replicas": "2"})}, timeout=120,
            needs_capability="multi-broker", replication_factor=3),
]  # fmt: skip

BY_NAME = {f.name: f for f in FEATURES}


def missing_apis(feature: Feature, served: dict[int, tuple[int, int]],
                 extra: list[tuple[int, ...]] = ()) -> list[str]:  # fmt: skip
    """Names of the APIs this feature needs that the broker does not serve."""
    missing = []
    for alternatives in list(feature.needs) + [a for a in extra if a not in feature.needs]:
        if not any(k in served for k in alternatives):
            missing.append(" or ".join(API_NAMES.get(k, str(k)) for k in alternatives))
    return missing

"""Feature flags (KIP-584, KIP-1022): what this broker supports, and the cluster's finalized
levels, which ApiVersions advertises and UpdateFeatures (`kafka-features`) changes.

Kafka 4.1's features that do not depend on KRaft's metadata.version, with our supported range:

- transaction.version 0-2: 2 is transactions v2 (KIP-890 part 2); clients use Produce v12 /
  EndTxn v5 in transactions only when it is finalized at 2.
- group.version 0-1: 1 allows the consumer rebalance protocol (KIP-848).
- share.version 0-1: 1 turns share groups on (KIP-932); off by default, as in Kafka 4.1.
- eligible.leader.replicas.version, streams.version: Kafka 4.1 supports 0-1; we support only 0
  (no ELR election, no Streams groups), so they can't be enabled here.

metadata.version and kraft.version belong to KRaft's quorum and are not served (pykbroker uses
ZooKeeper's layout). A new cluster starts at Kafka 4.1's defaults for a new cluster; the levels
are stored once, with an epoch that grows with every change (the `/feature` znode's version in
ZooKeeper, as Kafka's ZooKeeper mode keeps them; `topics.json` on a single broker).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import ErrorCode, KafkaError


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    min_version: int
    max_version: int
    default_level: int  # a new cluster's level (Kafka 4.1's bootstrap defaults)


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature("eligible.leader.replicas.version", 0, 0, 0),
        Feature("group.version", 0, 1, 1),
        Feature("share.version", 0, 1, 0),
        Feature("streams.version", 0, 0, 0),
        Feature("transaction.version", 0, 2, 2),
    )
}

# UpdateFeatures' upgrade types (FeatureUpdate.UpgradeType).
UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE = 1, 2, 3


def default_levels() -> dict[str, int]:
    """A new cluster's finalized levels (features at 0 are not finalized, as in Kafka)."""
    return {f.name: f.default_level for f in FEATURES.values() if f.default_level > 0}


def level(levels: dict[str, int], name: str) -> int:
    return levels.get(name, 0)


def _invalid(name: str, version: int, reason: str) -> KafkaError:
    return KafkaError(
        ErrorCode.INVALID_UPDATE_VERSION,
        f"Invalid update version {version} for feature {name}. {reason}",
    )


def _range(f: Feature) -> str:
    # Kafka's VersionRange.toString
    if f.min_version == f.max_version:
        return str(f.min_version)
    return f"{f.min_version}-{f.max_version}"


def apply_updates(
    current: dict[str, int], updates: list[tuple[str, int, int]], node_id: int
) -> dict[str, int]:
    """The finalized levels after `updates` ((feature, level, upgrade type) each), or the
    KafkaError of the first one Kafka's FeatureControlManager would refuse: the request is
    applied whole or not at all."""
    new = dict(current)
    seen: set[str] = set()
    for name, version, upgrade_type in updates:
        if name in seen:
            raise KafkaError(
                ErrorCode.INVALID_REQUEST, f"Feature {name} was specified more than once."
            )
        seen.add(name)
        if not name:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "Feature name can not be empty.")
        if upgrade_type not in (UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE):
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown upgrade type {upgrade_type}.")
        if version < 0:
            raise _invalid(name, version, "A feature version cannot be less than 0.")
        feature = FEATURES.get(name)
        if feature is None:
            if version > 0:
                raise _invalid(
                    name, version, f"Local controller {node_id} does not support this feature."
                )
            continue
        if not feature.min_version <= version <= feature.max_version:
            raise _invalid(
                name, version,
                f"Local controller {node_id} only supports versions {_range(feature)}",
            )  # fmt: skip
        if version < level(current, name) and upgrade_type == UPGRADE:
            raise _invalid(
                name, version,
                "Can't downgrade the version of this feature without setting the upgrade type "
                "to either safe or unsafe downgrade.",
            )  # fmt: skip
        if version == 0:
            new.pop(name, None)
        else:
            new[name] = version
    return new

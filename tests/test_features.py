"""Feature flags: supported and finalized features in ApiVersions, UpdateFeatures, and the
kafka-features tool with Kafka's output."""

from __future__ import annotations

import pytest
from cli_helpers import tool
from helpers import RawClient

from protocol.apis import ApiKey

# Kafka 4.1's finalized levels on a new cluster, for the features that don't depend on KRaft's
# metadata.version (share groups and Streams groups are off by default in 4.1).
KAFKA_41_DEFAULTS = {"group.version": 1, "transaction.version": 2}
# Our supported ranges: Kafka 4.1's, except ELR and Streams groups, which are not implemented
# (Kafka 4.1 supports 0-1 for both).
SUPPORTED = {
    "eligible.leader.replicas.version": (0, 0),
    "group.version": (0, 1),
    "share.version": (0, 1),
    "streams.version": (0, 0),
    "transaction.version": (0, 2),
}
INVALID_UPDATE_VERSION = 95  # Kafka's Errors.INVALID_UPDATE_VERSION


def api_versions(port: int, version: int = 4):
    c = RawClient(port)
    try:
        return c.request(ApiKey.API_VERSIONS, version, {
            "client_software_name": "t", "client_software_version": "1"})  # fmt: skip
    finally:
        c.close()


def finalized(resp) -> dict[str, int]:
    return {f.name: f.max_version_level for f in resp.finalized_features or ()}


def features(broker, *args):
    return tool("kafka-features", "--bootstrap-server", "localhost:9092", *args, port=broker.port)


def update(port: int, version: int, updates: list[tuple[str, int, int]], validate_only=False):
    c = RawClient(port)
    try:
        body = {"timeout_ms": 5000, "validate_only": validate_only, "feature_updates": [
            {"feature": n, "max_version_level": lvl, "upgrade_type": kind,
             "allow_downgrade": kind != 1} for n, lvl, kind in updates]}  # fmt: skip
        return c.request(ApiKey.UPDATE_FEATURES, version, body)
    finally:
        c.close()


def test_new_cluster_advertises_kafka_41_defaults(broker):
    r = api_versions(broker.port)
    assert {f.name: (f.min_version, f.max_version) for f in r.supported_features} == SUPPORTED
    assert finalized(r) == KAFKA_41_DEFAULTS
    assert r.finalized_features_epoch == 0
    # v3 leaves out features supported from level 0 (KAFKA-17011): all of these.
    r3 = api_versions(broker.port, 3)
    assert not r3.supported_features and finalized(r3) == KAFKA_41_DEFAULTS


def test_kafka_features_describe_upgrade_downgrade_disable(make_broker, tmp_path):
    data = str(tmp_path / "d")
    b = make_broker(data_dir=data)
    r = features(b, "describe")
    assert r.returncode == 0
    assert r.lines == [
        "Feature: eligible.leader.replicas.version\tSupportedMinVersion: 0\tSupportedMaxVersion: 0\tFinalizedVersionLevel: 0\tEpoch: 0",
        "Feature: group.version\tSupportedMinVersion: 0\tSupportedMaxVersion: 1\tFinalizedVersionLevel: 1\tEpoch: 0",
        "Feature: share.version\tSupportedMinVersion: 0\tSupportedMaxVersion: 1\tFinalizedVersionLevel: 0\tEpoch: 0",
        "Feature: streams.version\tSupportedMinVersion: 0\tSupportedMaxVersion: 0\tFinalizedVersionLevel: 0\tEpoch: 0",
        "Feature: transaction.version\tSupportedMinVersion: 0\tSupportedMaxVersion: 2\tFinalizedVersionLevel: 2\tEpoch: 0",
    ]  # fmt: skip

    r = features(b, "upgrade", "--feature", "transaction.version=3")
    assert r.returncode == 1
    assert r.lines == [
        "Could not upgrade transaction.version to 3. Invalid update version 3 for feature "
        "transaction.version. Local controller 1 only supports versions 0-2"
    ]
    assert r.stderr == "1 out of 1 operation(s) failed.\n"

    r = features(b, "upgrade", "--feature", "transaction.version=1")
    assert r.returncode == 1 and r.lines == [
        "Could not upgrade transaction.version to 1. Invalid update version 1 for feature "
        "transaction.version. Can't downgrade the version of this feature without setting the "
        "upgrade type to either safe or unsafe downgrade."
    ]  # fmt: skip

    r = features(b, "downgrade", "--feature", "transaction.version=1", "--dry-run")
    assert (r.returncode, r.lines) == (0, ["transaction.version can be downgraded to 1."])
    assert finalized(api_versions(b.port))["transaction.version"] == 2  # a dry run changes nothing

    r = features(b, "downgrade", "--feature", "transaction.version=1")
    assert (r.returncode, r.lines) == (0, ["transaction.version was downgraded to 1."])
    r = features(b, "upgrade", "--feature", "share.version=1", "--feature", "transaction.version=2")
    assert (r.returncode, r.lines) == (0, [
        "share.version was upgraded to 1.", "transaction.version was upgraded to 2."])  # fmt: skip
    r = features(b, "disable", "--feature", "group.version")
    assert (r.returncode, r.lines) == (0, ["group.version was disabled."])

    r = features(b, "upgrade", "--feature", "no.such.feature=1")
    assert r.returncode == 1 and r.lines == [
        "Could not upgrade no.such.feature to 1. Invalid update version 1 for feature "
        "no.such.feature. Local controller 1 does not support this feature."
    ]  # fmt: skip
    r = features(b, "upgrade")
    assert (r.returncode, r.stderr) == (1, "You must specify at least one feature to upgrade\n")

    want = {"share.version": 1, "transaction.version": 2}
    resp = api_versions(b.port)
    assert finalized(resp) == want and resp.finalized_features_epoch == 3  # one per change
    b.stop()
    b = make_broker(data_dir=data)  # the levels are stored, not defaults again
    resp = api_versions(b.port)
    assert finalized(resp) == want and resp.finalized_features_epoch == 3


@pytest.mark.parametrize("version", [0, 1, 2])
def test_update_features_is_all_or_nothing(broker, version):
    """One refused update refuses the request (Kafka applies them atomically); before v2 each
    feature's result repeats the error, v2 answers it once."""
    r = update(broker.port, version, [("share.version", 1, 1), ("transaction.version", 9, 1)])
    assert r.error_code == INVALID_UPDATE_VERSION
    assert r.error_message == ("Invalid update version 9 for feature transaction.version. "
                               "Local controller 1 only supports versions 0-2")  # fmt: skip
    if version < 2:
        assert sorted((x.feature, x.error_code) for x in r.results) == [
            ("share.version", INVALID_UPDATE_VERSION),
            ("transaction.version", INVALID_UPDATE_VERSION),
        ]
    assert finalized(api_versions(broker.port)) == KAFKA_41_DEFAULTS
    if version >= 1:  # validate_only (v1+)
        r = update(broker.port, version, [("share.version", 1, 1)], validate_only=True)
        assert r.error_code == 0
        assert finalized(api_versions(broker.port)) == KAFKA_41_DEFAULTS
    r = update(broker.port, version, [("share.version", 1, 1)])
    assert r.error_code == 0
    assert finalized(api_versions(broker.port)) == {**KAFKA_41_DEFAULTS, "share.version": 1}


def test_kafka_python_reads_the_features(broker):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        got = admin.describe_features()
    finally:
        admin.close()
    assert {k: v["supported"] for k, v in got.items()} == SUPPORTED
    assert {k: v["finalized"][1] for k, v in got.items() if "finalized" in v} == KAFKA_41_DEFAULTS
    assert {v["finalized_epoch"] for v in got.values() if "finalized" in v} == {0}

"""UpdateFeatures: change the cluster's finalized feature levels (`kafka-features`); the levels
are advertised in every ApiVersions answer (handlers/api_versions.py)."""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.checks import Op, cluster_allowed
from pykbroker.features import UPGRADE, apply_updates

from . import REGISTRY
from .committed import wait_committed


@REGISTRY.register(ApiKey.UPDATE_FEATURES, 0, 2)
def handle_update_features(ctx, request):
    version = ctx.api_version
    updates = []
    for u in request.feature_updates:
        # v0 has allow_downgrade (a safe downgrade, 2), v1+ the upgrade type
        upgrade_type = u.upgrade_type if version >= 1 else 2 if u.allow_downgrade else UPGRADE
        updates.append((u.feature, u.max_version_level, upgrade_type))
    if not cluster_allowed(ctx, Op.ALTER):  # Kafka: ALTER on the cluster
        return _response(version, updates, ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None)
    metadata = ctx.broker.metadata
    node_id = ctx.broker.node_id
    result = {"error_code": ErrorCode.NONE, "error_message": None}
    try:
        apply_updates(metadata.features, updates, node_id)  # validate (all or nothing)
    except KafkaError as e:
        return _response(version, updates, e.code, e.message)
    if version >= 1 and request.validate_only:
        return _response(version, updates, ErrorCode.NONE, None)
    write = metadata.update_features(lambda current: apply_updates(current, updates, node_id))
    if write is None:
        return _response(version, updates, ErrorCode.NONE, None)

    async def answer():
        await wait_committed(ctx.broker, [(result, write)])
        return _response(version, updates, result["error_code"], result["error_message"])

    return answer()


def _response(version: int, updates, code: int, message: str | None) -> dict:
    """One error for the whole request (Kafka applies the updates atomically); before v2 it is
    repeated for each feature."""
    body = {"throttle_time_ms": 0, "error_code": code, "error_message": message}
    if version < 2:
        body["results"] = [
            {"feature": name, "error_code": code, "error_message": message}
            for name, _, _ in updates
        ]
    return body

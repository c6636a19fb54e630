"""DescribeClientQuotas and AlterClientQuotas (KIP-546), with Kafka's validation and errors."""

from __future__ import annotations

import ipaddress

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.checks import Op, cluster_allowed
from pykbroker.quota.entities import (
    CLIENT_ID,
    IP,
    USER,
    apply_ops,
    entity_path,
    make_entity,
    path_entity,
)

from . import REGISTRY

MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2
_DUPLICATE = {USER: "user", CLIENT_ID: "client", IP: "ip"}


def _filter(components, strict: bool):
    """Kafka's ClientQuotaFilter checks; returns {entity type: (match type, name)}."""
    by_type: dict[str, tuple[int, str | None]] = {}
    for c in components:
        t = c.entity_type
        if t in (USER, CLIENT_ID, IP):
            if t in by_type:
                raise KafkaError(
                    ErrorCode.INVALID_REQUEST,
                    f"Duplicate {_DUPLICATE[t]} filter component entity type",
                )
        elif t == "":
            raise KafkaError(
                ErrorCode.INVALID_REQUEST, "Unexpected empty filter component entity type"
            )
        else:
            raise KafkaError(
                ErrorCode.UNSUPPORTED_VERSION, f"Custom entity type '{t}' not supported"
            )
        if c.match_type not in (MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED):
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unexpected match type: {c.match_type}")
        by_type[t] = (c.match_type, c.match)
    if IP in by_type and (USER in by_type or CLIENT_ID in by_type):
        raise KafkaError(
            ErrorCode.INVALID_REQUEST,
            "Invalid entity filter component combination, IP filter component should not be "
            "used with user or clientId filter component.",
        )
    return by_type


def _matches(by_type: dict, strict: bool, entity: dict) -> bool:
    for t, (match_type, name) in by_type.items():
        if t not in entity:
            return False
        if match_type == MATCH_EXACT and entity[t] != name:
            return False
        if match_type == MATCH_DEFAULT and entity[t] is not None:
            return False
    # Entity types the filter doesn't name: allowed unless the filter is strict.
    return not strict or all(t in by_type for t in entity)


@REGISTRY.register(ApiKey.DESCRIBE_CLIENT_QUOTAS, 0, 1)
def handle_describe_client_quotas(ctx, request):
    if not cluster_allowed(ctx, Op.DESCRIBE_CONFIGS):  # Kafka: DESCRIBE_CONFIGS on the cluster
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                "error_message": None, "entries": None}  # fmt: skip
    try:
        by_type = _filter(request.components, request.strict)
    except KafkaError as e:
        return {"throttle_time_ms": 0, "error_code": e.code, "error_message": e.message,
                "entries": None}  # fmt: skip
    entries = []
    for path, values in sorted(ctx.broker.quota_store.configs.items()):
        entity = path_entity(path)
        if entity is None or not values or not _matches(by_type, request.strict, dict(entity)):
            continue
        entries.append({
            "entity": [{"entity_type": t, "entity_name": n} for t, n in _wire_order(entity)],
            "values": [{"key": k, "value": float(v)} for k, v in values.items()],
        })  # fmt: skip
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "error_message": None,
            "entries": entries}  # fmt: skip


def _wire_order(entity):
    """user before client-id, as Kafka's ClientQuotaEntity maps usually print."""
    order = {USER: 0, CLIENT_ID: 1, IP: 2}
    return sorted(entity, key=lambda pair: order[pair[0]])


def _check_ip(entity) -> None:
    ip = dict(entity).get(IP, "")
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise KafkaError(
                ErrorCode.INVALID_REQUEST, f"{ip} is not a valid IP or resolvable host."
            ) from None


@REGISTRY.register(ApiKey.ALTER_CLIENT_QUOTAS, 0, 1)
async def handle_alter_client_quotas(ctx, request):
    store = ctx.broker.quota_store
    results = []
    changes: dict[str, dict[str, str]] = {}
    permitted = cluster_allowed(ctx, Op.ALTER_CONFIGS)  # Kafka: ALTER_CONFIGS on the cluster
    for entry in request.entries:
        echoed = [{"entity_type": e.entity_type, "entity_name": e.entity_name}
                  for e in entry.entity]  # fmt: skip
        if not permitted:
            results.append({"error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                            "error_message": None, "entity": echoed})  # fmt: skip
            continue
        try:
            entity = make_entity((e.entity_type, e.entity_name) for e in entry.entity)
            path = entity_path(entity)
            _check_ip(entity)
            current = changes.get(path, store.configs.get(path, {}))
            new = apply_ops(path, current, ((op.key, op.value, op.remove) for op in entry.ops))
            if not request.validate_only:
                changes[path] = new
            results.append({"error_code": ErrorCode.NONE, "error_message": None,
                            "entity": echoed})  # fmt: skip
        except KafkaError as e:
            results.append({"error_code": e.code, "error_message": e.message, "entity": echoed})
    if changes:
        try:
            await store.alter(changes)
        except KafkaError as e:
            for r in results:
                if r["error_code"] == ErrorCode.NONE:
                    r["error_code"], r["error_message"] = e.code, e.message
    return {"throttle_time_ms": 0, "entries": results}

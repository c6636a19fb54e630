"""DescribeAcls, CreateAcls, DeleteAcls (Kafka's KafkaApis / AclApis)."""

from __future__ import annotations

import structlog

from protocol.apis import ApiKey
from protocol.errors import ErrorCode
from pykbroker.acl.authorizer import (
    CLUSTER_NAME,
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
    parse_principal,
)
from pykbroker.acl.checks import allowed
from pykbroker.acl.store import group_by_pattern

from . import REGISTRY

log = structlog.get_logger(__name__)

_NO_AUTHORIZER = "No Authorizer is configured."


def _cluster_denied(ctx, op: AclOperation) -> bool:
    return not allowed(ctx, op, ResourceType.CLUSTER, CLUSTER_NAME)


def _filter(f) -> AclBindingFilter:
    """A DescribeAcls request or a DeleteAcls filter as an AclBindingFilter."""
    return AclBindingFilter(
        _enum(ResourceType, f.resource_type_filter), f.resource_name_filter,
        _enum(PatternType, f.pattern_type_filter), f.principal_filter, f.host_filter,
        _enum(AclOperation, f.operation), _enum(AclPermissionType, f.permission_type),
    )  # fmt: skip


def _enum(enum, code: int):
    try:
        return enum(code)
    except ValueError:
        return enum(0)  # UNKNOWN


@REGISTRY.register(ApiKey.DESCRIBE_ACLS, 1, 3)
def handle_describe_acls(ctx, request) -> dict:
    authorizer = ctx.broker.authorizer
    error = message = None
    if authorizer is None:
        error, message = ErrorCode.SECURITY_DISABLED, _NO_AUTHORIZER
    elif _cluster_denied(ctx, AclOperation.DESCRIBE):
        error = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    else:
        flt = _filter(request)
        if flt.unknown_field() is not None:
            error, message = ErrorCode.INVALID_REQUEST, "The filter has UNKNOWN fields."
    if error is not None:
        return {"throttle_time_ms": 0, "error_code": error, "error_message": message,
                "resources": []}  # fmt: skip
    resources = []
    for pattern, entries in group_by_pattern(authorizer.bindings(flt)).items():
        resources.append({
            "resource_type": pattern.resource_type, "resource_name": pattern.name,
            "pattern_type": pattern.pattern_type,
            "acls": [{"principal": e.principal, "host": e.host, "operation": e.operation,
                      "permission_type": e.permission_type} for e in entries],
        })  # fmt: skip
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "error_message": None,
            "resources": resources}  # fmt: skip


def _creation_error(c) -> str | None:
    """Why one CreateAcls entry is invalid (Kafka answers INVALID_REQUEST), or None."""
    rt = _enum(ResourceType, c.resource_type)
    pt = _enum(PatternType, c.resource_pattern_type)
    op = _enum(AclOperation, c.operation)
    perm = _enum(AclPermissionType, c.permission_type)
    if ResourceType.UNKNOWN in (rt,) or 0 in (pt, op, perm):
        return "Invalid ACL creation request: UNKNOWN fields."
    if rt == ResourceType.ANY or pt not in (PatternType.LITERAL, PatternType.PREFIXED):
        return "Invalid ACL creation request: the resource pattern must be specific."
    if op == AclOperation.ANY or perm == AclPermissionType.ANY:
        return "Invalid ACL creation request: ANY is not a valid operation or permission type."
    if rt == ResourceType.CLUSTER and c.resource_name != CLUSTER_NAME:
        return f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
    if not c.resource_name:
        return "Invalid empty resource name specified"
    try:
        parse_principal(c.principal)
    except ValueError:
        return f"Invalid principal: {c.principal}"
    if not c.host:
        return "Invalid empty host specified"
    return None


@REGISTRY.register(ApiKey.CREATE_ACLS, 1, 3)
def handle_create_acls(ctx, request):
    authorizer = ctx.broker.authorizer
    n = len(request.creations)
    if authorizer is None:
        return _create_response([(ErrorCode.SECURITY_DISABLED, _NO_AUTHORIZER)] * n)
    if _cluster_denied(ctx, AclOperation.ALTER):
        return _create_response([(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None)] * n)
    results: list = []
    valid: list[AclBinding] = []
    for c in request.creations:
        problem = _creation_error(c)
        if problem is not None:
            results.append((ErrorCode.INVALID_REQUEST, problem))
            continue
        results.append((ErrorCode.NONE, None))
        valid.append(
            AclBinding(
                ResourcePattern(ResourceType(c.resource_type), c.resource_name,
                                PatternType(c.resource_pattern_type)),
                AccessControlEntry(c.principal, c.host, AclOperation(c.operation),
                                   AclPermissionType(c.permission_type)),
            )
        )  # fmt: skip
    if not valid:
        return _create_response(results)
    return _create_then_answer(ctx.broker.acl_store, valid, results)


async def _create_then_answer(store, bindings: list[AclBinding], results: list) -> dict:
    error = await _stored(store.add(bindings))
    if error is not None:
        results = [r if r[0] else error for r in results]
    return _create_response(results)


async def _stored(write) -> tuple[int, str] | None:
    """Await a store write; a failure is reported to the client as Kafka's authorizer does
    (UNKNOWN_SERVER_ERROR with the reason), the connection stays up."""
    try:
        await write
    except Exception as e:  # a full disk, ZooKeeper trouble
        log.error("acl_store_write_failed", error=repr(e))
        return ErrorCode.UNKNOWN_SERVER_ERROR, f"Failed to store ACLs: {e}"
    return None


def _create_response(results: list) -> dict:
    return {"throttle_time_ms": 0,
            "results": [{"error_code": code, "error_message": msg} for code, msg in results]}  # fmt: skip


@REGISTRY.register(ApiKey.DELETE_ACLS, 1, 3)
def handle_delete_acls(ctx, request):
    authorizer = ctx.broker.authorizer
    n = len(request.filters)
    if authorizer is None:
        return _delete_response([(ErrorCode.SECURITY_DISABLED, _NO_AUTHORIZER, [])] * n)
    if _cluster_denied(ctx, AclOperation.ALTER):
        return _delete_response([(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None, [])] * n)
    results = []
    doomed: dict[AclBinding, None] = {}
    for f in request.filters:
        flt = _filter(f)
        if flt.unknown_field() is not None:
            results.append((ErrorCode.INVALID_REQUEST, "The filter has UNKNOWN fields.", []))
            continue
        matched = authorizer.bindings(flt)
        doomed.update(dict.fromkeys(matched))
        results.append((ErrorCode.NONE, None, matched))
    if not doomed:
        return _delete_response(results)
    return _delete_then_answer(ctx.broker.acl_store, list(doomed), results)


async def _delete_then_answer(store, bindings: list[AclBinding], results: list) -> dict:
    error = await _stored(store.remove(bindings))
    if error is not None:
        results = [
            (code, msg, matched) if not matched else (*error, []) for code, msg, matched in results
        ]
    return _delete_response(results)


def _delete_response(results: list) -> dict:
    return {
        "throttle_time_ms": 0,
        "filter_results": [
            {"error_code": code, "error_message": msg, "matching_acls": [
                {"error_code": 0, "error_message": None,
                 "resource_type": b.pattern.resource_type, "resource_name": b.pattern.name,
                 "pattern_type": b.pattern.pattern_type, "principal": b.entry.principal,
                 "host": b.entry.host, "operation": b.entry.operation,
                 "permission_type": b.entry.permission_type}
                for b in matched]}
            for code, msg, matched in results
        ],
    }  # fmt: skip

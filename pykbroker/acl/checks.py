"""The questions handlers ask the authorizer, in Kafka's KafkaApis terms.

Handlers test `ctx.broker.authorizer is not None` (or call these, which do) before anything
else, so a broker without an authorizer pays one attribute check per request.
"""

from __future__ import annotations

from collections.abc import Collection

import structlog

from .authorizer import CLUSTER_NAME, AclOperation, ResourceType, all_operations

log = structlog.get_logger("pykbroker.authorizer")  # Kafka's kafka.authorizer.logger

Op = AclOperation
RT = ResourceType


def who(ctx) -> tuple[str, str]:
    """(principal as Kafka writes it, client IP address) of the request's session; kept on the
    connection until its session changes (sessions are replaced, never mutated)."""
    conn = ctx.connection
    session = conn.session
    cached = getattr(conn, "_acl_who", None)
    if cached is not None and cached[0] is session:
        return cached[1]
    answer = (str(session.principal), session.client_host)
    conn._acl_who = (session, answer)
    return answer


def allowed(ctx, op: int, resource_type: int, name: str) -> bool:
    """May this request's principal, from its host, do `op` on the resource?"""
    authorizer = ctx.broker.authorizer
    if authorizer is None:
        return True
    principal, host = who(ctx)
    if authorizer.authorize(principal, host, op, resource_type, name):
        return True
    _log_denied(ctx, principal, host, op, resource_type, name)
    return False


def _log_denied(ctx, principal, host, op, resource_type, name) -> None:
    log.debug("authorization_denied", principal=principal, host=host, operation=Op(op).name,
              resource=f"{RT(resource_type).name}:{name}", api_key=ctx.header.api_key)  # fmt: skip


def cluster_allowed(ctx, op: int) -> bool:
    return allowed(ctx, op, RT.CLUSTER, CLUSTER_NAME)


def filter_allowed(ctx, op: int, resource_type: int, names: Collection[str]) -> set[str]:
    """The names among `names` the principal may do `op` on."""
    authorizer = ctx.broker.authorizer
    if authorizer is None:
        return set(names)
    principal, host = who(ctx)
    authorize = authorizer.authorize
    out = {n for n in names if authorize(principal, host, op, resource_type, n)}
    if len(out) != len(names):  # some refused (or `names` repeats some): log the refused ones
        for n in set(names) - out:
            _log_denied(ctx, principal, host, op, resource_type, n)
    return out


def allowed_on_any(ctx, op: int, resource_type: int) -> bool:
    """Kafka's authorizeByResourceType: `op` is allowed on at least one resource of the type."""
    authorizer = ctx.broker.authorizer
    return authorizer is None or authorizer.authorize_any(*who(ctx), op, resource_type)


def authorized_operations(ctx, resource_type: int, name: str) -> set[int]:
    """The authorized operations (a bitfield on the wire) Metadata/DescribeGroups/DescribeCluster return when
    asked; every operation of the type when no authorizer is configured, as Kafka."""
    authorizer = ctx.broker.authorizer
    if authorizer is None:
        return all_operations(resource_type)
    return authorizer.authorized_operations(*who(ctx), resource_type, name)

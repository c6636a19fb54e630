"""CreateDelegationToken, RenewDelegationToken, ExpireDelegationToken, DescribeDelegationToken
(KIP-48, KIP-373), with Kafka's KafkaApis checks: tokens only over an authenticated channel
that is not itself a token's, an owner other than oneself needs CREATE_TOKENS on that user,
renew/expire only by the owner, requester or a renewer, describe what one owns or may DESCRIBE.
The decisions are in security/delegation_tokens.py; this is the request plumbing."""

from __future__ import annotations

import time

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.checks import RT, Op, allowed
from pykbroker.security.delegation_tokens import TokenInfo

from . import REGISTRY


def _now() -> int:
    return int(time.time() * 1000)


def _tokens(ctx) -> dict[str, TokenInfo]:
    return {t: TokenInfo.from_json(d) for t, d in ctx.broker.metadata.delegation_tokens.items()}


def _check_channel(ctx) -> None:
    """Kafka's allowTokenRequests: not over PLAINTEXT, not as a token, not over one-way SSL."""
    session = ctx.session
    if (
        getattr(session.principal, "token_authenticated", False)
        or session.security_protocol == "PLAINTEXT"
        or (session.security_protocol == "SSL" and str(session.principal) == "User:ANONYMOUS")
    ):
        raise KafkaError(ErrorCode.DELEGATION_TOKEN_REQUEST_NOT_ALLOWED)


def _split(principal: str) -> tuple[str, str]:
    kind, _, name = principal.partition(":")
    return kind, name


async def _store(ctx, info: TokenInfo | None, token_id: str) -> None:
    pending = ctx.broker.metadata.set_delegation_token(token_id, info and info.to_json())
    if pending is not None:
        await pending


@REGISTRY.register(ApiKey.CREATE_DELEGATION_TOKEN, 1, 3)  # v0 removed in Kafka 4.0 (KIP-896)
async def handle_create(ctx, request) -> dict:
    requester = str(ctx.principal)
    owner = requester
    if ctx.api_version >= 3 and request.owner_principal_name:
        owner = f"{request.owner_principal_type or 'User'}:{request.owner_principal_name}"
    answer = {"error_code": 0, "principal_type": "", "principal_name": "",
              "token_requester_principal_type": "", "token_requester_principal_name": "",
              "issue_timestamp_ms": -1, "expiry_timestamp_ms": -1, "max_timestamp_ms": -1,
              "token_id": "", "hmac": b"", "throttle_time_ms": 0}  # fmt: skip
    try:
        _check_channel(ctx)
        if any(r.principal_type != "User" for r in request.renewers):
            raise KafkaError(ErrorCode.INVALID_PRINCIPAL_TYPE)
        if owner != requester and not allowed(ctx, Op.CREATE_TOKENS, RT.USER, owner):
            raise KafkaError(ErrorCode.DELEGATION_TOKEN_AUTHORIZATION_FAILED)
        manager = ctx.broker.delegation_tokens
        renewers = [f"{r.principal_type}:{r.principal_name}" for r in request.renewers]
        info = manager.create(owner, requester, renewers, request.max_lifetime_ms, _now())
        await _store(ctx, info, info.token_id)
    except KafkaError as e:
        answer["error_code"] = e.code
        return answer
    (otype, oname), (rtype, rname) = _split(owner), _split(requester)
    answer.update(principal_type=otype, principal_name=oname,
                  token_requester_principal_type=rtype, token_requester_principal_name=rname,
                  issue_timestamp_ms=info.issue_ms, expiry_timestamp_ms=info.expiry_ms,
                  max_timestamp_ms=info.max_ms, token_id=info.token_id,
                  hmac=manager.hmac(info.token_id))  # fmt: skip
    return answer


async def _renew_or_expire(ctx, request, period_ms: int, expire: bool) -> dict:
    try:
        _check_channel(ctx)
        manager = ctx.broker.delegation_tokens
        info = manager.find(_tokens(ctx), bytes(request.hmac))
        now, principal = _now(), str(ctx.principal)
        if expire:
            new = manager.expire(info, principal, period_ms, now)
            expiry = now if new is None else new.expiry_ms
        else:
            new = manager.renew(info, principal, period_ms, now)
            expiry = new.expiry_ms
        await _store(ctx, new, info.token_id)
    except KafkaError as e:
        return {"error_code": e.code, "expiry_timestamp_ms": -1, "throttle_time_ms": 0}
    return {"error_code": 0, "expiry_timestamp_ms": expiry, "throttle_time_ms": 0}


@REGISTRY.register(ApiKey.RENEW_DELEGATION_TOKEN, 1, 2)
async def handle_renew(ctx, request) -> dict:
    return await _renew_or_expire(ctx, request, request.renew_period_ms, expire=False)


@REGISTRY.register(ApiKey.EXPIRE_DELEGATION_TOKEN, 1, 2)
async def handle_expire(ctx, request) -> dict:
    return await _renew_or_expire(ctx, request, request.expiry_time_period_ms, expire=True)


@REGISTRY.register(ApiKey.DESCRIBE_DELEGATION_TOKEN, 1, 3)
def handle_describe(ctx, request) -> dict:
    try:
        _check_channel(ctx)
        manager = ctx.broker.delegation_tokens
        if not manager.enabled:
            raise KafkaError(ErrorCode.DELEGATION_TOKEN_AUTH_DISABLED)
    except KafkaError as e:
        return {"error_code": e.code, "tokens": [], "throttle_time_ms": 0}
    if request.owners is not None and not request.owners:
        return {"error_code": 0, "tokens": [], "throttle_time_ms": 0}
    owners = (
        None if request.owners is None
        else {f"{o.principal_type}:{o.principal_name}" for o in request.owners}
    )  # fmt: skip
    principal, now = str(ctx.principal), _now()
    tokens = []
    for info in sorted(_tokens(ctx).values(), key=lambda t: t.issue_ms):
        if info.expiry_ms < now or (owners is not None and info.owner not in owners):
            continue
        if not (info.owner_or_renewer(principal)
                or allowed(ctx, Op.DESCRIBE, RT.DELEGATION_TOKEN, info.token_id)):  # fmt: skip
            continue
        (otype, oname), (rtype, rname) = _split(info.owner), _split(info.requester)
        tokens.append({
            "principal_type": otype, "principal_name": oname,
            "token_requester_principal_type": rtype, "token_requester_principal_name": rname,
            "issue_timestamp": info.issue_ms, "expiry_timestamp": info.expiry_ms,
            "max_timestamp": info.max_ms, "token_id": info.token_id,
            "hmac": manager.hmac(info.token_id),
            "renewers": [dict(zip(("principal_type", "principal_name"), _split(r), strict=True))
                         for r in info.renewers],
        })  # fmt: skip
    return {"error_code": 0, "tokens": tokens, "throttle_time_ms": 0}

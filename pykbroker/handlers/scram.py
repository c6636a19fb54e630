"""DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554), as Kafka's ZooKeeper
mode has them (ZkAdminManager): credentials live in the user's entity config
(`/config/users/<user>`, key = mechanism name, value = Kafka's credential string), the client
sends the salt and salted password, the broker keeps StoredKey/ServerKey only."""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from protocol.sasl.scram import (
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    ScramCredential,
    credential_from_salted,
)
from pykbroker.acl.checks import Op, cluster_allowed

from . import REGISTRY
from .committed import wait_committed

# Kafka's ScramMechanism types (the int8 on the wire)
MECHANISM_TYPES = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
MECHANISM_IDS = {name: i for i, name in MECHANISM_TYPES.items()}
_EMPTY_USER = "Username must not be empty"


def _credential_infos(configs: dict[str, str]) -> list[dict]:
    infos = []
    for mechanism_id, name in MECHANISM_TYPES.items():
        text = configs.get(name)
        if text:
            try:
                iterations = ScramCredential.from_config(text).iterations
            except ValueError:
                continue
            infos.append({"mechanism": mechanism_id, "iterations": iterations})
    return infos


@REGISTRY.register(ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS, 0, 0)
def handle_describe_user_scram_credentials(ctx, request) -> dict:
    if not cluster_allowed(ctx, Op.DESCRIBE):  # Kafka: DESCRIBE on the cluster
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                "error_message": None, "results": []}  # fmt: skip
    users_configs = ctx.broker.metadata.entities("users")
    results = []
    if not request.users:  # null or empty: every user with a credential, sorted
        for user in sorted(users_configs):
            infos = _credential_infos(users_configs[user])
            if infos:
                results.append(
                    {
                        "user": user,
                        "error_code": 0,
                        "error_message": None,
                        "credential_infos": infos,
                    }
                )
        return {"error_code": 0, "error_message": None, "results": results}
    names = [u.name for u in request.users]
    seen = set()
    for user in names:
        if user in seen:
            continue
        seen.add(user)
        if not user:
            results.append({"user": user, "error_code": ErrorCode.RESOURCE_NOT_FOUND,
                            "error_message": _EMPTY_USER, "credential_infos": []})  # fmt: skip
        elif names.count(user) > 1:
            results.append({
                "user": user, "error_code": ErrorCode.DUPLICATE_RESOURCE, "credential_infos": [],
                "error_message": "Cannot describe SCRAM credentials for the same user twice in a "
                                 f"single request: {user}",
            })  # fmt: skip
        else:
            infos = _credential_infos(users_configs.get(user, {}))
            if infos:
                results.append(
                    {
                        "user": user,
                        "error_code": 0,
                        "error_message": None,
                        "credential_infos": infos,
                    }
                )
            else:
                results.append({
                    "user": user, "error_code": ErrorCode.RESOURCE_NOT_FOUND, "credential_infos": [],
                    "error_message": f"Attempt to describe a user credential that does not exist: {user}",
                })  # fmt: skip
    return {"error_code": 0, "error_message": None, "results": results}


@REGISTRY.register(ApiKey.ALTER_USER_SCRAM_CREDENTIALS, 0, 0)
async def handle_alter_user_scram_credentials(ctx, request) -> dict:
    metadata = ctx.broker.metadata
    results: list[dict] = []
    errors: dict[str, tuple[int, str]] = {}
    if not cluster_allowed(ctx, Op.ALTER):  # Kafka: ALTER on the cluster, for every user
        users = dict.fromkeys(x.name for x in [*request.deletions, *request.upsertions])
        return {"results": [{"user": u, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                             "error_message": None} for u in users]}  # fmt: skip

    def fail(user: str, code: int, message: str) -> None:
        errors.setdefault(user, (code, message))

    # Illegal entries: empty user, unknown mechanism, iterations out of [4096, 16384].
    for d in request.deletions:
        if not d.name:
            fail(d.name, ErrorCode.UNACCEPTABLE_CREDENTIAL, _EMPTY_USER)
        elif d.mechanism not in MECHANISM_TYPES:
            fail(d.name, ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")
    for u in request.upsertions:
        if not u.name:
            fail(u.name, ErrorCode.UNACCEPTABLE_CREDENTIAL, _EMPTY_USER)
        elif u.mechanism not in MECHANISM_TYPES:
            fail(u.name, ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")
        elif u.iterations > MAX_ITERATIONS:
            fail(u.name, ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too many iterations")
        elif u.iterations < MIN_ITERATIONS:
            fail(u.name, ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations")
    for user, (code, message) in errors.items():
        results.append({"user": user, "error_code": code, "error_message": message})
    invalid = set(errors)
    # The same (user, mechanism) twice: that user fails.
    pairs = [(x.name, x.mechanism) for x in [*request.upsertions, *request.deletions]
             if x.name not in invalid]  # fmt: skip
    duplicated = {user for user, mech in pairs if pairs.count((user, mech)) > 1}
    for user in sorted(duplicated):
        results.append({"user": user, "error_code": ErrorCode.DUPLICATE_RESOURCE,
                        "error_message": "A user credential cannot be altered twice in the same request"})  # fmt: skip
    candidates = list(dict.fromkeys(user for user, _ in pairs if user not in duplicated))
    # Deleting a credential the user doesn't have.
    missing = []
    for d in request.deletions:
        stored = metadata.user_configs(d.name)
        if (
            d.name in candidates
            and d.name not in missing
            and not stored.get(MECHANISM_TYPES[d.mechanism])
        ):
            missing.append(d.name)
    for user in missing:
        results.append({"user": user, "error_code": ErrorCode.RESOURCE_NOT_FOUND,
                        "error_message": "Attempt to delete a user credential that does not exist"})  # fmt: skip
    pending = []
    for user in candidates:
        if user in missing:
            continue
        changes: dict[str, str | None] = {}
        for d in request.deletions:
            if d.name == user:
                changes[MECHANISM_TYPES[d.mechanism]] = None
        for u in request.upsertions:
            if u.name == user:
                mechanism = MECHANISM_TYPES[u.mechanism]
                credential = credential_from_salted(
                    mechanism, bytes(u.salted_password), bytes(u.salt), u.iterations
                )
                changes[mechanism] = credential.to_config()
        result = {"user": user, "error_code": 0, "error_message": None}
        try:
            write = metadata.alter_entity_configs("users", user, changes)
        except KafkaError as e:  # the single broker's metadata file could not be written
            result.update(error_code=e.code, error_message=e.message)
            write = None
        if write is not None:
            pending.append((result, write))
        results.append(result)
    if pending:
        await wait_committed(ctx.broker, pending)
    return {"results": results}

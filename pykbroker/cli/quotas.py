"""kafka-configs for users, clients and ips: client quotas (and the split with SCRAM credentials)
as Apache Kafka's ConfigCommand does it with --bootstrap-server.

    kafka-configs --bootstrap-server localhost:9092 --alter --entity-type users --entity-name alice \\
        --add-config 'producer_byte_rate=1024,consumer_byte_rate=2048'
    kafka-configs --bootstrap-server localhost:9092 --describe --entity-type users --entity-name alice
    Quota configs for user-principal 'alice' are producer_byte_rate=1024.0, consumer_byte_rate=2048.0

Quotas go through AlterClientQuotas / DescribeClientQuotas. Kafka's tool prints the entities and
their keys in the iteration order of Java HashMaps; `java_hash_order` reproduces it, so the lines
come out in the same order as Kafka's.
"""

from __future__ import annotations

from pykbroker.quota.entities import java_double

from . import common
from .common import CommandError

CLIENT_QUOTA_KEYS = ("producer_byte_rate", "consumer_byte_rate", "request_percentage",
                     "controller_mutation_rate")  # fmt: skip
IP_QUOTA_KEYS = ("connection_creation_rate",)
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_ENTITY_TYPE = {"users": "user", "clients": "client-id", "ips": "ip"}
_EXACT, _DEFAULT, _ANY = 0, 1, 2


# --- Java's HashMap iteration order ------------------------------------------------------------


def java_string_hash(s: str) -> int:
    h = 0
    for unit in s.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h


def _spread(h: int) -> int:
    return (h ^ (h >> 16)) & 0xFFFFFFFF


def java_hash_order(items: list, hash_of) -> list:
    """The order a java.util.HashMap filled with `items` (in this order) iterates them: by
    bucket of the spread hash in a table of the size the map grew to, then insertion order."""
    capacity = 16
    while len(items) > capacity * 0.75:
        capacity *= 2
    indexed = [(_spread(hash_of(item)) & (capacity - 1), i, item) for i, item in enumerate(items)]
    return [item for _, _, item in sorted(indexed)]


def _entity_hash(entity: list[tuple[str, str | None]]) -> int:
    """ClientQuotaEntity.hashCode: its Map<String, String>'s (sum of key ^ value hashes)."""
    total = 0
    for entity_type, name in entity:
        total += java_string_hash(entity_type) ^ (0 if name is None else java_string_hash(name))
    return total & 0xFFFFFFFF


# --- talking to the cluster ------------------------------------------------------------------


def describe_quotas(admin, types: list[str], names: list[str]) -> list:
    """Kafka's getAllClientQuotasConfigs: [(entity [(type, name)], [(key, value)])] matching
    exactly the given entity types (containsOnly), in the order Kafka's tool prints them."""
    from kafka.protocol.admin import DescribeClientQuotasRequest

    if len(names) > len(types):
        raise CommandError("More entity names specified than entity types")
    components = []
    for i, kind in enumerate(types):
        name = names[i] if i < len(names) else None
        if name is None:
            components.append((_ENTITY_TYPE[kind], _ANY, None))
        elif name == "":
            components.append((_ENTITY_TYPE[kind], _DEFAULT, None))
        else:
            components.append((_ENTITY_TYPE[kind], _EXACT, name))
    request = DescribeClientQuotasRequest(components=components, strict=True, min_version=0)
    response = common.send(admin, request)
    common.check(response.error_code, response.error_message)
    found = []
    for entry in response.entries or []:
        entity = [(e.entity_type, e.entity_name) for e in entry.entity]
        values = java_hash_order([(v.key, v.value) for v in entry.values],
                                 lambda kv: java_string_hash(kv[0]))  # fmt: skip
        found.append((entity, values))
    return java_hash_order(found, lambda ev: _entity_hash(ev[0]))


def entity_text(entity: list[tuple[str, str | None]]) -> str:
    named = dict(entity)
    parts = []
    for entity_type, label in (
        ("user", "user-principal"),
        ("client-id", "client-id"),
        ("ip", "ip"),
    ):
        if entity_type in named:
            name = named[entity_type]
            parts.append(f"the default {label}" if not name else f"{label} '{name}'")
    return ", ".join(parts)


def describe_client_entities(admin, types: list[str], names: list[str]) -> None:
    for entity, values in describe_quotas(admin, types, names):
        configs = ", ".join(f"{k}={java_double(v)}" for k, v in values)
        print(f"Quota configs for {entity_text(entity)} are {configs}")
    if types[0] != "ips" and "clients" not in types and "" not in names:
        describe_user_scram(admin, names)


def describe_user_scram(admin, names: list[str]) -> None:
    """SCRAM credentials of the users (Kafka's describeClientQuotaAndUserScramCredentialConfigs
    prints them after the quotas)."""
    from . import user_scram

    user_scram.describe(admin, [n for n in names if n])


def alter_client_entity(admin, types: list[str], names: list[str], to_add: dict[str, str],
                        to_delete: list[str]) -> None:  # fmt: skip
    """ConfigCommand.alterConfig for users/clients/ips: check what may be set, then quotas by
    AlterClientQuotas, or a user's SCRAM credentials."""
    kind = types[0]
    if kind == "ips":
        unknown = {k for k in [*to_add, *to_delete] if k not in IP_QUOTA_KEYS}
        if unknown:
            raise CommandError(
                "Only connection quota configs can be added for 'ips' using --bootstrap-server. "
                f"Unexpected config names: {', '.join(sorted(unknown))}"
            )
        alter_quotas(admin, types, names, to_add, to_delete)
        return
    quota_add = [k for k in to_add if k in CLIENT_QUOTA_KEYS]
    quota_delete = [k for k in to_delete if k in CLIENT_QUOTA_KEYS]
    scram_add = {k: v for k, v in to_add.items() if k in SCRAM_MECHANISMS}
    scram_delete = [k for k in to_delete if k in SCRAM_MECHANISMS]
    unknown_add = {k for k in to_add if k not in CLIENT_QUOTA_KEYS and k not in SCRAM_MECHANISMS}
    unknown_delete = {k for k in to_delete if k not in CLIENT_QUOTA_KEYS
                      and k not in SCRAM_MECHANISMS}  # fmt: skip
    if kind == "clients" or len(types) == 2:
        if unknown_add or scram_add:
            raise CommandError(
                "Only quota configs can be added for 'clients' using --bootstrap-server. "
                f"Unexpected config names: {','.join(sorted(unknown_add | set(scram_add)))}"
            )
        if unknown_delete or scram_delete:
            raise CommandError(
                "Only quota configs can be deleted for 'clients' using --bootstrap-server. "
                f"Unexpected config names: {','.join(sorted(unknown_delete | set(scram_delete)))}"
            )
    else:
        if unknown_add:
            raise CommandError(
                "Only quota and SCRAM credential configs can be added for 'users' using "
                f"--bootstrap-server. Unexpected config names: {','.join(sorted(unknown_add))}"
            )
        if unknown_delete:
            raise CommandError(
                "Only quota and SCRAM credential configs can be deleted for 'users' using "
                f"--bootstrap-server. Unexpected config names: {','.join(sorted(unknown_delete))}"
            )
        if scram_add or scram_delete:
            if "" in names:
                raise CommandError(
                    "The use of --entity-default or --user-defaults is not allowed with User "
                    "SCRAM Credentials using --bootstrap-server."
                )
            if quota_add or quota_delete:
                raise CommandError(
                    "Cannot alter both quota and SCRAM credential configs simultaneously for "
                    "'users' using --bootstrap-server."
                )
    if quota_add or quota_delete:
        alter_quotas(admin, types, names, to_add, to_delete)
    else:
        alter_user_scram(admin, names[0], scram_add, scram_delete)


def alter_user_scram(admin, user: str, to_add: dict[str, str], to_delete: list[str]) -> None:
    from . import user_scram

    user_scram.alter(admin, user, to_add, to_delete)


def alter_quotas(admin, types: list[str], names: list[str], to_add: dict[str, str],
                 to_delete: list[str]) -> None:  # fmt: skip
    from kafka.protocol.admin import AlterClientQuotasRequest

    if len(types) != len(names):
        raise CommandError("Exactly one entity name must be specified for every entity type")
    current = describe_quotas(admin, types, names)
    old = dict(current[0][1]) if current else {}
    invalid = [k for k in to_delete if k not in old]
    if invalid:
        raise CommandError(f"Invalid config(s): {','.join(invalid)}")
    ops = []
    for key, value in to_add.items():
        try:
            number = float(value)
        except ValueError:
            raise CommandError(
                f"Cannot parse quota configuration value for {key}: {value}"
            ) from None
        ops.append((key, number, False))
    ops += [(key, 0.0, True) for key in to_delete]
    entity = [(_ENTITY_TYPE[t], n or None) for t, n in zip(types, names, strict=True)]
    request = AlterClientQuotasRequest(entries=[(entity, ops)], validate_only=False,
                                       min_version=0)  # fmt: skip
    for entry in common.send(admin, request).entries:
        common.check(entry.error_code, entry.error_message)

"""Client quota entities and configs as Kafka names and stores them.

An entity is Kafka's ClientQuotaEntity: a map of entity type ("user", "client-id", "ip") to a
name, None meaning the default entity. Stored configs are keyed by Kafka's ZooKeeper entity
path under /config: `users/<user>`, `users/<user>/clients/<client-id>`, `clients/<client-id>`,
`ips/<ip>`, with names sanitized (Kafka's Sanitizer: URL-encoding) and `<default>` for the
default. Values are strings as Kafka writes them ("1024" for the long-typed byte rates,
"200.0" for the double-typed percentages).
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote, unquote

from protocol.errors import ErrorCode, KafkaError

USER, CLIENT_ID, IP = "user", "client-id", "ip"
DEFAULT = "<default>"  # ConfigEntityName.Default

PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
CONTROLLER_MUTATION_RATE = "controller_mutation_rate"
CONNECTION_CREATION_RATE = "connection_creation_rate"
# DynamicConfig.User / DynamicConfig.Client quota keys and their types (QuotaConfig).
CLIENT_QUOTA_KEYS = {
    PRODUCER_BYTE_RATE: "LONG",
    CONSUMER_BYTE_RATE: "LONG",
    REQUEST_PERCENTAGE: "DOUBLE",
    CONTROLLER_MUTATION_RATE: "DOUBLE",
}
IP_QUOTA_KEYS = {CONNECTION_CREATION_RATE: "INT"}

Entity = tuple[tuple[str, str | None], ...]  # sorted (type, name) pairs; name None: default


def sanitize(name: str) -> str:
    """Kafka's Sanitizer.sanitize: Java's URLEncoder, with "+" as %20 and "*" as %2A."""
    return quote(name, safe="").replace("~", "%7E")


def desanitize(name: str) -> str:
    return unquote(name)


def _path_name(name: str | None) -> str:
    return DEFAULT if name is None else sanitize(name)


def _entity_name(part: str) -> str | None:
    return None if part == DEFAULT else desanitize(part)


def entity_path(entity: Entity) -> str:
    """Kafka's config path of an entity (INVALID_REQUEST for combinations Kafka refuses)."""
    d = dict(entity)
    if not d:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Invalid empty client quota entity")
    if IP in d:
        if len(d) > 1:
            raise KafkaError(
                ErrorCode.INVALID_REQUEST,
                "Invalid quota entity combination, IP entity should not be used with user/client "
                "ID entity.",
            )
        return f"ips/{_path_name(d[IP])}"
    if USER in d and CLIENT_ID in d:
        return f"users/{_path_name(d[USER])}/clients/{_path_name(d[CLIENT_ID])}"
    if USER in d:
        return f"users/{_path_name(d[USER])}"
    return f"clients/{_path_name(d[CLIENT_ID])}"


def path_entity(path: str) -> Entity | None:
    """The entity of a config path (None for paths that are not client quota entities)."""
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == "users":
        return ((USER, _entity_name(parts[1])),)
    if len(parts) == 4 and parts[0] == "users" and parts[2] == "clients":
        return ((CLIENT_ID, _entity_name(parts[3])), (USER, _entity_name(parts[1])))
    if len(parts) == 2 and parts[0] == "clients":
        return ((CLIENT_ID, _entity_name(parts[1])),)
    if len(parts) == 2 and parts[0] == "ips":
        return ((IP, _entity_name(parts[1])),)
    return None


def make_entity(pairs) -> Entity:
    """From (type, name) pairs as a request carries them; INVALID_REQUEST as Kafka checks them."""
    out: dict[str, str | None] = {}
    for entity_type, name in pairs:
        if entity_type not in (USER, CLIENT_ID, IP):
            raise KafkaError(
                ErrorCode.INVALID_REQUEST, f"Unhandled client quota entity type: {entity_type}"
            )
        if name is not None and name == "":
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Empty {entity_type} not supported")
        out[entity_type] = name
    return tuple(sorted(out.items()))


def keys_for(path: str) -> dict[str, str]:
    return IP_QUOTA_KEYS if path.startswith("ips/") else CLIENT_QUOTA_KEYS


def quota_configs(path: str, configs: dict[str, str]) -> dict[str, str]:
    """The quota keys of an entity's stored configs (a user's znode also holds SCRAM creds)."""
    keys = keys_for(path)
    return {k: v for k, v in configs.items() if k in keys}


def apply_ops(path: str, current: dict[str, str], ops) -> dict[str, str]:
    """An entity's quota configs after AlterClientQuotas ops [(key, value, remove)], validated
    as Kafka's ZkAdminManager.alterClientQuotas does."""
    keys = keys_for(path)
    out = dict(current)
    for key, value, remove in ops:
        if remove:
            out.pop(key, None)
            continue
        kind = keys.get(key)
        if kind is None:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Invalid configuration key {key}")
        if value < 0:  # a negative rate would make negative throttle times and fetch sizes
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Configuration {key} must not be negative")
        if kind == "DOUBLE":
            out[key] = java_double(value)
        else:
            epsilon = 1e-6
            whole = int(value + epsilon)
            if abs(whole - value) > epsilon:
                raise KafkaError(
                    ErrorCode.INVALID_REQUEST, f"Configuration {key} must be a {kind} value"
                )
            out[key] = str(whole)
    return out


def java_double(value: float) -> str:
    """Java's Double.toString, as Kafka stores DOUBLE quota values and kafka-configs prints
    them ("200.0", "1024.0", "1.5E7" from 10^7 up, "1.0E-4" below 10^-3)."""
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0.0"
    if 1e-3 <= abs(value) < 1e7:
        return repr(value)
    sign, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    power = len(text) - 1 + exponent
    return f"{'-' if value < 0 else ''}{text[0]}.{text[1:] or '0'}E{power}"

"""Configs: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs.

Topic configs are overrides stored with the topic (strings, as clients sent them) on top of the
broker's defaults, which come from the `log.*` synonyms in server.properties. A change is
validated as a whole (every key known, every value of the right type and range, checks across
keys) before anything is stored, so a bad request changes nothing; then it is persisted with the
topic and applied to the partitions' live LogConfig.

Broker resources are described from the static configuration. Dynamic broker configs are not
supported: altering one is refused with INVALID_REQUEST (an empty change succeeds).
"""

from __future__ import annotations

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.cluster.metadata import validate_topic_name
from pykbroker.config import (
    BROKER_CONFIGS,
    TOPIC_CONFIGS,
    ConfigError,
    ConfigKey,
    parse_topic_configs,
    validate_topic_values,
)

from . import REGISTRY

# ConfigResource.Type
TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8
# ConfigEntry.ConfigSource
DYNAMIC_TOPIC_CONFIG = 1
DYNAMIC_BROKER_CONFIG = 2
DYNAMIC_DEFAULT_BROKER_CONFIG = 3
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5
# AlterConfigOp.OpType
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
_OP_NAMES = {APPEND: "append", SUBTRACT: "subtract"}


class Describer:
    """Builds DescribeConfigs entries for one request's flags."""

    def __init__(self, broker, synonyms: bool, documentation: bool):
        self.config = broker.config
        self.synonyms = synonyms
        self.documentation = documentation

    def _entry(self, key: ConfigKey, value: str | None, source: int, read_only: bool,
               synonyms: list[dict]) -> dict:  # fmt: skip
        sensitive = key.is_sensitive
        return {
            "name": key.name,
            "value": None if sensitive else value,
            "read_only": read_only,
            "config_source": source,
            "is_sensitive": sensitive,
            "synonyms": synonyms if self.synonyms else [],
            "config_type": key.type_id,
            "documentation": key.doc if self.documentation else None,
        }

    def _synonym(self, key: ConfigKey, name: str, value: str | None, source: int) -> dict:
        return {"name": name, "value": None if key.is_sensitive else value, "source": source}

    def _broker_synonyms(self, key: ConfigKey, names: list[str]) -> list[dict]:
        """Static settings first, then defaults, for each broker key in precedence order."""
        out = []
        for name in names:
            if name in self.config.originals and self.config.is_set(name):
                raw = self.config.originals[name]
                out.append(self._synonym(key, name, raw, STATIC_BROKER_CONFIG))
        for name in names:
            bkey = BROKER_CONFIGS[name]
            if bkey.default is not None:
                out.append(self._synonym(key, name, bkey.render(bkey.default), DEFAULT_CONFIG))
        return out

    def topic(self, overrides: dict[str, str], names: list[str] | None,
              implicit: dict | None = None) -> list[dict]:  # fmt: skip
        """Entries of a topic: its stored overrides, and `implicit` ones the broker applies
        itself (parsed values, e.g. __consumer_offsets is compacted), then broker defaults."""
        implicit = implicit or {}
        entries = []
        for key in _selected(TOPIC_CONFIGS, names):
            broker_keys = [k for k, _ in key.synonyms]
            synonyms = self._broker_synonyms(key, broker_keys)
            if key.name in overrides or key.name in implicit:
                raw = overrides.get(key.name)
                if raw is None:
                    raw = key.render(implicit[key.name])
                synonyms.insert(0, self._synonym(key, key.name, raw, DYNAMIC_TOPIC_CONFIG))
                entries.append(self._entry(key, raw, DYNAMIC_TOPIC_CONFIG, False, synonyms))
                continue
            value, source, _ = self.config.topic_default(key.name)
            source_id = STATIC_BROKER_CONFIG if source == "STATIC_BROKER_CONFIG" else DEFAULT_CONFIG
            entries.append(self._entry(key, key.render(value), source_id, False, synonyms))
        return entries

    def broker(self, names: list[str] | None) -> list[dict]:
        entries = []
        for key in _selected(BROKER_CONFIGS, names):
            source = STATIC_BROKER_CONFIG if self.config.is_set(key.name) else DEFAULT_CONFIG
            value = key.render(self.config.get(key.name))
            synonyms = self._broker_synonyms(key, [key.name])
            # No dynamic broker configs here: every broker config is read-only at runtime.
            entries.append(self._entry(key, value, source, True, synonyms))
        return entries


def _selected(keys: dict[str, ConfigKey], names: list[str] | None) -> list[ConfigKey]:
    """All keys (names None), or the requested ones that exist, in request order."""
    if names is None:
        return [keys[n] for n in sorted(keys)]
    return [keys[n] for n in dict.fromkeys(names) if n in keys]


def check_broker_resource(broker, name: str) -> None:
    """A broker resource is this broker's id, or "" for the cluster-wide default."""
    if name == "":
        return
    try:
        node = int(name)
    except ValueError:
        raise KafkaError(
            ErrorCode.INVALID_REQUEST, f"Broker id must be an integer, but it is: {name}"
        ) from None
    if node != broker.node_id:
        raise KafkaError(
            ErrorCode.INVALID_REQUEST,
            f"Unexpected broker id, expected {broker.node_id} or empty string, but received {name}",
        )


def existing_topic(broker, name: str):
    try:
        validate_topic_name(name)
    except KafkaError as e:
        raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, e.message) from None
    info = broker.metadata.topic(name)
    if info is None:
        raise KafkaError(
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist."
        )
    return info


def unsupported_resource(resource_type: int) -> KafkaError:
    return KafkaError(
        ErrorCode.INVALID_REQUEST, f"Unsupported resource type {resource_type} for this broker"
    )


@REGISTRY.register(ApiKey.DESCRIBE_CONFIGS, 1, 4)
def handle_describe_configs(ctx, request) -> dict:
    broker = ctx.broker
    describer = Describer(
        broker,
        synonyms=request.include_synonyms,
        documentation=ctx.api_version >= 3 and request.include_documentation,
    )
    results = []
    for r in request.resources:
        result = {"error_code": ErrorCode.NONE, "error_message": None,
                  "resource_type": r.resource_type, "resource_name": r.resource_name,
                  "configs": []}  # fmt: skip
        keys = r.configuration_keys
        try:
            if r.resource_type == TOPIC:
                info = existing_topic(broker, r.resource_name)
                implicit = broker.log_config_for(info.name).overrides
                result["configs"] = describer.topic(info.configs, keys, implicit)
            elif r.resource_type == BROKER:
                check_broker_resource(broker, r.resource_name)
                # The default resource ("") holds dynamic cluster-wide configs: there are none.
                if r.resource_name != "":
                    result["configs"] = describer.broker(keys)
            elif r.resource_type == BROKER_LOGGER:
                check_broker_resource(broker, r.resource_name)
            else:
                raise unsupported_resource(r.resource_type)
        except KafkaError as e:
            result.update(error_code=e.code, error_message=e.message or e.code.name)
        results.append(result)
    return {"throttle_time_ms": 0, "results": results}


# --- altering ------------------------------------------------------------------------------------


def check_topic_overrides(broker, overrides: dict[str, str | None]) -> None:
    """Validate a topic's complete set of overrides; KafkaError(INVALID_CONFIG) naming the key."""
    try:
        parsed = parse_topic_configs(overrides)
        validate_topic_values({**broker.config.topic_defaults(), **parsed})
    except ConfigError as e:
        raise KafkaError(ErrorCode.INVALID_CONFIG, str(e)) from None


def apply_topic_overrides(broker, name: str, overrides: dict[str, str]) -> None:
    """Persist a topic's overrides, then hand its partitions the new LogConfig."""
    broker.metadata.set_topic_configs(name, overrides)
    broker.replica_manager.update_config(name)


def _check_duplicates(names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise KafkaError(
                ErrorCode.INVALID_REQUEST, f"Error due to duplicate config keys: {name}"
            )
        seen.add(name)


def _refuse_broker_changes(broker, resource, changed: list[str]) -> None:
    check_broker_resource(broker, resource.resource_name)
    if changed:
        raise KafkaError(
            ErrorCode.INVALID_REQUEST,
            f"Cannot update these configs dynamically: {', '.join(sorted(changed))}. "
            "This broker does not support dynamic broker configs: set them in server.properties "
            "or with --override and restart it.",
        )


def _duplicate_resources(resources) -> set[tuple[int, str]]:
    seen, dupes = set(), set()
    for r in resources:
        key = (r.resource_type, r.resource_name)
        (dupes if key in seen else seen).add(key)
    return dupes


def _alter(ctx, request, change_topic, broker_changes) -> dict:
    """Shared body of AlterConfigs and IncrementalAlterConfigs: one result per resource."""
    broker = ctx.broker
    dupes = _duplicate_resources(request.resources)
    responses = []
    for r in request.resources:
        response = {"error_code": ErrorCode.NONE, "error_message": None,
                    "resource_type": r.resource_type, "resource_name": r.resource_name}  # fmt: skip
        try:
            if (r.resource_type, r.resource_name) in dupes:
                raise KafkaError(
                    ErrorCode.INVALID_REQUEST,
                    f"Error due to duplicate resource {r.resource_name} in the request",
                )
            _check_duplicates([c.name for c in r.configs])
            if r.resource_type == TOPIC:
                info = existing_topic(broker, r.resource_name)
                overrides = change_topic(broker, dict(info.configs), r.configs)
                check_topic_overrides(broker, overrides)
                if not request.validate_only and overrides != info.configs:
                    apply_topic_overrides(broker, info.name, overrides)
            elif r.resource_type in (BROKER, BROKER_LOGGER):
                _refuse_broker_changes(broker, r, broker_changes(r.configs))
            else:
                raise unsupported_resource(r.resource_type)
        except KafkaError as e:
            response.update(error_code=e.code, error_message=e.message or e.code.name)
        responses.append(response)
    return {"throttle_time_ms": 0, "responses": responses}


def _known_topic_key(name: str) -> ConfigKey:
    key = TOPIC_CONFIGS.get(name)
    if key is None:
        raise KafkaError(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {name}")
    return key


def _replace_topic_configs(broker, current: dict[str, str], configs) -> dict[str, str | None]:
    """AlterConfigs: the request's set replaces every override (missing keys revert)."""
    overrides = {}
    for c in configs:
        _known_topic_key(c.name)
        overrides[c.name] = c.value
    return overrides


def _incremental_topic_configs(broker, current: dict[str, str], configs) -> dict[str, str | None]:
    overrides: dict[str, str | None] = dict(current)
    for c in configs:
        key = _known_topic_key(c.name)
        op = c.config_operation
        if op == SET:
            overrides[c.name] = c.value
        elif op == DELETE:
            overrides.pop(c.name, None)
        elif op in (APPEND, SUBTRACT):
            if key.type != "list":
                raise KafkaError(
                    ErrorCode.INVALID_CONFIG,
                    f"Config value {_OP_NAMES[op]} is not allowed for config key: {c.name}",
                )
            if c.value is None:
                raise KafkaError(
                    ErrorCode.INVALID_CONFIG,
                    f"Null value not supported for topic configs: {c.name}",
                )
            base = _current_list(broker, key, overrides.get(c.name))
            values = key.parse(c.value)
            if op == APPEND:
                result = base + [v for v in values if v not in base]
            else:
                result = [v for v in base if v not in values]
            overrides[c.name] = ",".join(result)
        else:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown config operation {op}")
    return overrides


def _current_list(broker, key: ConfigKey, override: str | None) -> list[str]:
    """The list an APPEND/SUBTRACT starts from: the override, else the effective default."""
    if override is not None:
        try:
            return list(key.parse(override))
        except ConfigError:
            return []
    value, _, _ = broker.config.topic_default(key.name)
    return list(value or [])


@REGISTRY.register(ApiKey.ALTER_CONFIGS, 0, 2)
def handle_alter_configs(ctx, request) -> dict:
    # Setting a broker resource's dynamic configs to an empty set is a no-op, anything else is
    # refused.
    return _alter(ctx, request, _replace_topic_configs, lambda configs: [c.name for c in configs])


@REGISTRY.register(ApiKey.INCREMENTAL_ALTER_CONFIGS, 0, 1)
def handle_incremental_alter_configs(ctx, request) -> dict:
    # Deleting a dynamic broker config that isn't set is a no-op; other operations are refused.
    return _alter(
        ctx,
        request,
        _incremental_topic_configs,
        lambda configs: [c.name for c in configs if c.config_operation != DELETE],
    )

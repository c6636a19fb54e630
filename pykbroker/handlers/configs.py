"""Configs: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs.

Topic configs are overrides stored with the topic (strings, as clients sent them) on top of the
broker's defaults, which come from the `log.*` synonyms in server.properties. A change is
validated as a whole (every key known, every value of the right type and range, checks across
keys) before anything is stored, so a bad request changes nothing; then it is persisted with the
topic and applied to the partitions' live LogConfig.

Broker resources: the broker keys that are topic defaults (`log.retention.ms`, `message.max.bytes`,
... see config.DYNAMIC_BROKER_CONFIGS) can be changed at runtime for one broker (resource name =
its id) or for every broker (resource name ""), as in Kafka; they are stored in the cluster
metadata and take precedence over server.properties. Any other key is refused with
INVALID_REQUEST ("Cannot update these configs dynamically"), as Kafka does.
"""

from __future__ import annotations

import copy

from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.checks import RT, Op, allowed, cluster_allowed
from pykbroker.cluster.metadata import DEFAULT_ENTITY, validate_topic_name
from pykbroker.config import (
    BROKER_CONFIGS,
    DYNAMIC_BROKER_CONFIGS,
    TOPIC_CONFIGS,
    ConfigError,
    ConfigKey,
    parse_dynamic_broker_configs,
    parse_topic_configs,
    validate_topic_values,
    warn_deprecated_topic_configs,
)
from pykbroker.coordinator import group_configs
from pykbroker.coordinator.group_configs import GROUP, GROUP_CONFIGS

from . import REGISTRY
from .committed import pending_write, wait_committed

# ConfigResource.Type
TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8
# ConfigEntry.ConfigSource
GROUP_CONFIG = 8
DYNAMIC_TOPIC_CONFIG = 1
DYNAMIC_BROKER_CONFIG = 2
DYNAMIC_DEFAULT_BROKER_CONFIG = 3
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5
# AlterConfigOp.OpType
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
# BrokerConfig names a value's source by Kafka's name; the protocol carries its id.
_SOURCE_IDS = {
    "DYNAMIC_BROKER_CONFIG": DYNAMIC_BROKER_CONFIG,
    "DYNAMIC_DEFAULT_BROKER_CONFIG": DYNAMIC_DEFAULT_BROKER_CONFIG,
    "STATIC_BROKER_CONFIG": STATIC_BROKER_CONFIG,
    "DEFAULT_CONFIG": DEFAULT_CONFIG,
}
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
        """Dynamic (this broker, then the cluster default), static, then default settings, and
        within each the broker keys in precedence order."""
        out = []
        for layer, source in (
            (self.config.dynamic_broker, DYNAMIC_BROKER_CONFIG),
            (self.config.dynamic_default, DYNAMIC_DEFAULT_BROKER_CONFIG),
        ):
            for name in names:
                if name in layer:
                    raw = BROKER_CONFIGS[name].render(layer[name])
                    out.append(self._synonym(key, name, raw, source))
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
            entries.append(
                self._entry(key, key.render(value), _SOURCE_IDS[source], False, synonyms)
            )
        return entries

    def broker(self, names: list[str] | None) -> list[dict]:
        """Every broker config with its effective value; read-only unless dynamic."""
        entries = []
        for key in _selected(BROKER_CONFIGS, names):
            source = _SOURCE_IDS[self.config.source(key.name)]
            value = key.render(self.config.get(key.name))
            synonyms = self._broker_synonyms(key, _synonym_group(key.name))
            read_only = key.name not in DYNAMIC_BROKER_CONFIGS
            entries.append(self._entry(key, value, source, read_only, synonyms))
        return entries

    def group(self, broker, group_id: str, names: list[str] | None) -> list[dict]:
        """A group's configs: what it sets, else the broker's group.share.* value or the
        default (Kafka's GroupConfig)."""
        if not group_id:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "Group name must not be empty.")
        overrides = broker.share_group_configs.get(group_id, {})
        entries = []
        for key in _selected(GROUP_CONFIGS, names):
            if key.name in overrides:
                entries.append(self._entry(key, overrides[key.name], GROUP_CONFIG, False, []))
                continue
            broker_key = group_configs.BROKER_DEFAULTS.get(key.name)
            raw = key.render(self.config.get(broker_key) if broker_key else key.default)
            entries.append(self._entry(key, raw, DEFAULT_CONFIG, False, []))
        return entries

    def broker_default(self, names: list[str] | None) -> list[dict]:
        """The default resource (""): just the cluster-wide dynamic configs, as Kafka."""
        defaults = self.config.dynamic_default
        entries = []
        for key in _selected(BROKER_CONFIGS, names):
            if key.name in defaults:
                raw = key.render(defaults[key.name])
                synonym = self._synonym(key, key.name, raw, DYNAMIC_DEFAULT_BROKER_CONFIG)
                entries.append(
                    self._entry(key, raw, DYNAMIC_DEFAULT_BROKER_CONFIG, False, [synonym])
                )
        return entries


def _synonym_group(name: str) -> list[str]:
    """The broker keys setting the same thing as `name` (log.retention.ms/minutes/hours), in
    precedence order, as Kafka lists a broker config's synonyms."""
    for key in TOPIC_CONFIGS.values():
        names = [n for n, _ in key.synonyms]
        if name in names:
            return names
    return [name]


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
            if broker.authorizer is not None:
                check_config_access(ctx, r.resource_type, r.resource_name, Op.DESCRIBE_CONFIGS)
            if r.resource_type == TOPIC:
                info = existing_topic(broker, r.resource_name)
                implicit = broker.log_config_for(info.name).overrides
                result["configs"] = describer.topic(info.configs, keys, implicit)
            elif r.resource_type == BROKER:
                check_broker_resource(broker, r.resource_name)
                if r.resource_name == "":
                    result["configs"] = describer.broker_default(keys)
                else:
                    result["configs"] = describer.broker(keys)
            elif r.resource_type == BROKER_LOGGER:
                check_broker_resource(broker, r.resource_name)
            elif r.resource_type == GROUP:
                result["configs"] = describer.group(broker, r.resource_name, keys)
            else:
                raise unsupported_resource(r.resource_type)
        except KafkaError as e:
            result.update(error_code=e.code, error_message=e.message or e.code.name)
        results.append(result)
    return {"throttle_time_ms": 0, "results": results}


def check_config_access(ctx, resource_type: int, name: str, op: int) -> None:
    """Kafka: DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic, or on the cluster for broker and
    broker-logger resources (before looking the resource up, so nothing leaks)."""
    if resource_type == TOPIC and not allowed(ctx, op, RT.TOPIC, name):
        raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed.")
    if resource_type in (BROKER, BROKER_LOGGER) and not cluster_allowed(ctx, op):
        raise KafkaError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")


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


def check_broker_configs(broker, name: str, configs: dict[str, str]) -> None:
    """Validate a broker entity's complete set of dynamic configs (for this broker, name = its
    id, or for every broker, name = ""), with the topic defaults they would make."""
    trial = copy.copy(broker.config)
    try:
        parsed = parse_dynamic_broker_configs(configs)
        if name:
            trial.dynamic_broker = parsed
        else:
            trial.dynamic_default = parsed
        validate_topic_values(trial.topic_defaults())
    except ConfigError as e:
        raise KafkaError(
            ErrorCode.INVALID_REQUEST,
            f"Invalid config value for resource ConfigResource(type=BROKER, name='{name}'): {e}",
        ) from None


def _refuse_logger_changes(broker, resource, changed: list[str]) -> None:
    check_broker_resource(broker, resource.resource_name)
    if changed:
        raise KafkaError(
            ErrorCode.INVALID_REQUEST,
            f"Cannot update these broker loggers dynamically: {', '.join(sorted(changed))}",
        )


def _duplicate_resources(resources) -> set[tuple[int, str]]:
    seen, dupes = set(), set()
    for r in resources:
        key = (r.resource_type, r.resource_name)
        (dupes if key in seen else seen).add(key)
    return dupes


def _alter(ctx, request, change, logger_changes) -> dict:
    """Shared body of AlterConfigs and IncrementalAlterConfigs: one result per resource.
    `change(current, configs, key_of, current_list)` gives the resource's new set."""
    broker = ctx.broker
    dupes = _duplicate_resources(request.resources)
    responses = []
    writes: list = []
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
            if broker.authorizer is not None:
                check_config_access(ctx, r.resource_type, r.resource_name, Op.ALTER_CONFIGS)
            if r.resource_type == TOPIC:
                info = existing_topic(broker, r.resource_name)
                overrides = change(
                    dict(info.configs), r.configs, _topic_key,
                    lambda key: list(broker.config.topic_default(key.name)[0] or []),
                )  # fmt: skip
                check_topic_overrides(broker, overrides)
                if not request.validate_only and overrides != info.configs:
                    previous = dict(info.configs)
                    apply_topic_overrides(broker, info.name, overrides)
                    pending_write(broker, info.name, response, writes)
                    warn_deprecated_topic_configs(info.name, overrides, previous)
            elif r.resource_type == BROKER:
                check_broker_resource(broker, r.resource_name)
                entity = r.resource_name or DEFAULT_ENTITY
                current = broker.metadata.broker_configs(entity)
                configs = change(
                    current, r.configs, _broker_key,
                    lambda key: list(broker.config.get(key.name) or []),
                )  # fmt: skip
                configs = {k: v for k, v in configs.items() if v is not None}
                check_broker_configs(broker, r.resource_name, configs)
                if not request.validate_only and configs != current:
                    broker.set_dynamic_configs(entity, configs)
            elif r.resource_type == BROKER_LOGGER:
                _refuse_logger_changes(broker, r, logger_changes(r.configs))
            elif r.resource_type == GROUP:
                _alter_group(broker, r, change, request.validate_only)
            else:
                raise unsupported_resource(r.resource_type)
        except KafkaError as e:
            response.update(error_code=e.code, error_message=e.message or e.code.name)
        responses.append(response)
    result = {"throttle_time_ms": 0, "responses": responses}
    return _after(broker, writes, result) if writes else result


def _alter_group(broker, resource, change, validate_only: bool) -> None:
    if not resource.resource_name:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "Group name must not be empty.")
    current = broker.share_group_configs.get(resource.resource_name, {})
    configs = change(dict(current), resource.configs, _group_key, lambda key: [])
    configs = {k: v for k, v in configs.items() if v is not None}
    for name, value in configs.items():
        try:
            GROUP_CONFIGS[name].parse(value)
        except ConfigError as e:
            raise KafkaError(ErrorCode.INVALID_CONFIG, str(e)) from None
    if validate_only or configs == current:
        return
    if configs:
        broker.share_group_configs[resource.resource_name] = configs
    else:
        broker.share_group_configs.pop(resource.resource_name, None)
    try:
        group_configs.save(broker.log_manager.data_dir, broker.share_group_configs)
    except OSError as e:
        raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, f"saving group configs: {e}") from None


def _group_key(name: str) -> ConfigKey:
    key = GROUP_CONFIGS.get(name)
    if key is None:
        raise KafkaError(ErrorCode.INVALID_CONFIG, f"Unknown group config name: {name}")
    return key


async def _after(broker, writes: list, result: dict) -> dict:
    await wait_committed(broker, writes)
    return result


def _topic_key(name: str) -> ConfigKey:
    key = TOPIC_CONFIGS.get(name)
    if key is None:
        raise KafkaError(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {name}")
    return key


def _broker_key(name: str) -> ConfigKey:
    key = BROKER_CONFIGS.get(name)
    if key is None:
        # Kafka keeps unknown names (for plugins); nothing here would read them.
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown broker config name: {name}")
    return key


def _replace_configs(current, configs, key_of, current_list) -> dict[str, str | None]:
    """AlterConfigs: the request's set replaces every one (missing keys revert)."""
    replaced = {}
    for c in configs:
        key_of(c.name)
        replaced[c.name] = c.value
    return replaced


def _incremental_configs(current, configs, key_of, current_list) -> dict[str, str | None]:
    """IncrementalAlterConfigs: SET, DELETE, and APPEND/SUBTRACT on list-typed keys, which
    start from the current value (`current_list(key)` where there is none in `current`)."""
    result: dict[str, str | None] = dict(current)
    for c in configs:
        key = key_of(c.name)
        op = c.config_operation
        if op == SET:
            result[c.name] = c.value
        elif op == DELETE:
            result.pop(c.name, None)
        elif op in (APPEND, SUBTRACT):
            if key.type != "list":
                raise KafkaError(
                    ErrorCode.INVALID_CONFIG,
                    f"Config value {_OP_NAMES[op]} is not allowed for config key: {c.name}",
                )
            if c.value is None:
                raise KafkaError(
                    ErrorCode.INVALID_CONFIG, f"Null value not supported for configs: {c.name}"
                )
            base = _list_value(key, result.get(c.name), current_list)
            try:
                values = key.parse(c.value)
            except ConfigError as e:
                raise KafkaError(ErrorCode.INVALID_CONFIG, str(e)) from None
            if op == APPEND:
                merged = base + [v for v in values if v not in base]
            else:
                merged = [v for v in base if v not in values]
            result[c.name] = ",".join(merged)
        else:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown config operation {op}")
    return result


def _list_value(key: ConfigKey, raw: str | None, current_list) -> list[str]:
    """The list an APPEND/SUBTRACT starts from: the stored value, else the effective one."""
    if raw is not None:
        try:
            return list(key.parse(raw))
        except ConfigError:
            return []
    return current_list(key)


@REGISTRY.register(ApiKey.ALTER_CONFIGS, 0, 2)
def handle_alter_configs(ctx, request) -> dict:
    # Broker loggers: setting an empty set is a no-op, anything else is refused.
    return _alter(ctx, request, _replace_configs, lambda configs: [c.name for c in configs])


@REGISTRY.register(ApiKey.INCREMENTAL_ALTER_CONFIGS, 0, 1)
def handle_incremental_alter_configs(ctx, request) -> dict:
    # Broker loggers: a DELETE is a no-op, anything else is refused.
    return _alter(
        ctx,
        request,
        _incremental_configs,
        lambda configs: [c.name for c in configs if c.config_operation != DELETE],
    )


# --- ListConfigResources (KIP-1142; v0 was ListClientMetricsResources, KIP-714) ---------------

CLIENT_METRICS = 16
# The types a v1 request may name, in the order Kafka lists them; an empty list means all.
LISTED_TYPES = (GROUP, CLIENT_METRICS, BROKER_LOGGER, BROKER, TOPIC)


@REGISTRY.register(ApiKey.LIST_CONFIG_RESOURCES, 0, 1)
def handle_list_config_resources(ctx, request) -> dict:
    """The resources that have configs: groups with group configs, client-metrics
    subscriptions (none: KIP-714 telemetry is not served), each broker (and its loggers), every
    topic. Needs DESCRIBE_CONFIGS on the cluster, as in Kafka."""
    broker = ctx.broker
    if not cluster_allowed(ctx, Op.DESCRIBE_CONFIGS):
        return {"throttle_time_ms": 0, "error_code": ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                "config_resources": []}  # fmt: skip
    if ctx.api_version == 0:
        wanted = {CLIENT_METRICS}
    else:
        wanted = set(request.resource_types) or set(LISTED_TYPES)
        if not wanted <= set(LISTED_TYPES):  # the whole request fails, as Kafka's does
            return {"throttle_time_ms": 0, "error_code": ErrorCode.UNSUPPORTED_VERSION,
                    "config_resources": []}  # fmt: skip
    brokers = [str(i) for i in sorted(broker.metadata.live_broker_ids())]
    names = {
        GROUP: sorted(broker.share_group_configs),
        CLIENT_METRICS: [],
        BROKER_LOGGER: brokers,
        BROKER: brokers,
        TOPIC: sorted(broker.metadata.topics),
    }
    resources = [{"resource_name": name, "resource_type": t}
                 for t in LISTED_TYPES if t in wanted for name in names[t]]  # fmt: skip
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "config_resources": resources}

"""kafka-configs: describe and alter topic and broker configs (Apache Kafka's ConfigCommand).

    kafka-configs --describe --entity-type topics --entity-name user_activity --bootstrap-server localhost:9092
    kafka-configs --alter --entity-type topics --entity-name system_logs --add-config 'cleanup.policy=compact' --bootstrap-server localhost:9092

Prints what Kafka's tool prints: `Dynamic configs for topic T are:` (or `All configs ...` with
--all) and one `  key=value sensitive=false synonyms={SOURCE:key=value, ...}` line per config;
`Completed updating config for topic T.` after an alter. Bad arguments print one line on stderr;
a failure reported by the cluster prints `Error while executing config command with args '...'`
and the error. Either way the exit status is 1.
"""

from __future__ import annotations

import re
import sys

from . import common
from .common import CommandError, ExecutionError, ToolParser, UsageError

DESCRIPTION = (
    "This tool helps to manipulate and describe entity config for a topic, client, user, broker, "
    "ip, client-metrics or group"
)
ENTITY_TYPES = ("broker-loggers", "topics", "clients", "users", "brokers", "ips",
                "client-metrics", "groups")  # fmt: skip
SUPPORTED_TYPES = ("topics", "brokers", "broker-loggers", "users", "clients", "ips", "groups")
RESOURCE_TYPES = {"topics": 2, "brokers": 4, "broker-loggers": 8, "groups": 32}
# ConfigEntry.ConfigSource names, by wire id
SOURCES = {0: "UNKNOWN", 1: "DYNAMIC_TOPIC_CONFIG", 2: "DYNAMIC_BROKER_CONFIG",
           3: "DYNAMIC_DEFAULT_BROKER_CONFIG", 4: "STATIC_BROKER_CONFIG", 5: "DEFAULT_CONFIG",
           6: "DYNAMIC_BROKER_LOGGER_CONFIG", 7: "CLIENT_METRICS_CONFIG", 8: "GROUP_CONFIG"}  # fmt: skip
SET, DELETE = 0, 1


def build_parser() -> ToolParser:
    p = ToolParser("kafka-configs", DESCRIPTION)
    common.add_bootstrap_server(p, required_note=False)
    p.add_argument(
        "--bootstrap-controller",
        metavar="<String: controller to connect to>",
        help="The Kafka controllers to connect to (treated like --bootstrap-server).",
    )
    p.add_argument("--alter", action="store_true", help="Alter the configuration for the entity.")
    p.add_argument("--describe", action="store_true", help="List configs for the given entity.")
    p.add_argument(
        "--all",
        action="store_true",
        help="List all configs for the given entity, including static configs if available.",
    )
    p.add_argument(
        "--entity-type",
        action="append",
        default=[],
        metavar="<String>",
        help="Type of entity (topics/clients/users/brokers/broker-loggers/ips/"
        "client-metrics/groups)",
    )
    p.add_argument(
        "--entity-name",
        action="append",
        default=[],
        metavar="<String>",
        help="Name of entity (topic name/client id/user principal name/broker id/ip/"
        "client metrics/group id)",
    )
    p.add_argument(
        "--entity-default",
        action="store_true",
        help="Default entity name for clients/users/brokers/ips (applies to "
        "corresponding entity type)",
    )
    p.add_argument(
        "--add-config",
        metavar="<String>",
        help="Key Value pairs of configs to add. Square brackets can be used to group "
        "values which contain commas: 'k1=v1,k2=[v1,v2,v2],k3=v3'.",
    )
    p.add_argument(
        "--add-config-file",
        metavar="<String>",
        help="Path to a properties file with configs to add. See add-config for a "
        "list of valid configurations.",
    )
    p.add_argument(
        "--delete-config",
        action="append",
        default=[],
        metavar="<String>",
        help="config keys to remove 'k1,k2'",
    )
    p.add_argument("--force", action="store_true", help="Suppress console prompts")
    p.add_argument("--topic", metavar="<String>", help="The topic's name.")
    p.add_argument("--broker", metavar="<String>", help="The broker's ID.")
    p.add_argument(
        "--broker-defaults", action="store_true", help="The config defaults for all brokers."
    )
    p.add_argument("--broker-logger", metavar="<String>",
                   help="The broker's ID for its logger config.")  # fmt: skip
    p.add_argument("--user", metavar="<String>", help="The user's principal name.")
    p.add_argument("--user-defaults", action="store_true",
                   help="The config defaults for all users.")  # fmt: skip
    p.add_argument("--client", metavar="<String>", help="The client's ID.")
    p.add_argument("--client-defaults", action="store_true",
                   help="The config defaults for all clients.")  # fmt: skip
    p.add_argument("--ip", metavar="<String>", help="The IP address.")
    p.add_argument("--ip-defaults", action="store_true",
                   help="The config defaults for all IPs.")  # fmt: skip
    return p


def entities(args) -> tuple[list[str], list[str]]:
    """(entity types, entity names); "" names the default entity."""
    types = list(args.entity_type)
    names = list(args.entity_name)
    if args.entity_default:
        names.append("")
    shortcuts = [(args.topic, "topics"), (args.broker, "brokers"),
                 (args.broker_logger, "broker-loggers"), (args.user, "users"),
                 (args.client, "clients"), (args.ip, "ips")]  # fmt: skip
    for value, kind in shortcuts:
        if value is not None:
            types.append(kind)
            names.append(value)
    for flag, kind in ((args.broker_defaults, "brokers"), (args.user_defaults, "users"),
                       (args.client_defaults, "clients"), (args.ip_defaults, "ips")):  # fmt: skip
        if flag:
            types.append(kind)
            names.append("")
    return types, names


def check_args(args) -> None:
    if args.alter == args.describe:
        raise UsageError("Command must include exactly one action: --describe, --alter")
    if args.describe:
        for option in ("add_config", "add_config_file"):
            if getattr(args, option):
                raise UsageError(
                    f'Option "[describe]" can\'t be used with option "[{option.replace("_", "-")}]"'
                )
        if args.delete_config:
            raise UsageError('Option "[describe]" can\'t be used with option "[delete-config]"')
    types, names = entities(args)
    if len(types) != len(set(types)):
        dupes = sorted({t for t in types if types.count(t) > 1})
        raise CommandError(f"Duplicate entity type(s) specified: {','.join(dupes)}")
    if not args.bootstrap_server and not args.bootstrap_controller:
        raise CommandError("Either --bootstrap-server or --bootstrap-controller must be specified.")
    if args.bootstrap_server and args.bootstrap_controller:
        raise CommandError(
            "Only one of --bootstrap-server or --bootstrap-controller can be specified"
        )
    for t in types:
        if t not in ENTITY_TYPES:
            raise CommandError(
                f"Invalid entity type {t}, the entity type must be one of "
                f"{', '.join(ENTITY_TYPES)} with a --bootstrap-server or --bootstrap-controller "
                "argument"
            )
    if not types:
        raise CommandError("At least one entity type must be specified")
    if len(types) > 1 and set(types) != {"users", "clients"}:
        raise CommandError("Only 'users' and 'clients' entity types may be specified together")
    explicit = args.entity_name or args.entity_type or args.entity_default
    specific = (args.topic, args.broker, args.broker_logger, args.broker_defaults, args.user,
                args.user_defaults, args.client, args.client_defaults, args.ip, args.ip_defaults)  # fmt: skip
    if explicit and any(x for x in specific if x not in (None, False)):
        raise CommandError(
            "--entity-{type,name,default} should not be used in conjunction with specific entity "
            "flags"
        )
    has_name = any(names)
    has_default = "" in names
    if has_name and types[0] in ("brokers", "broker-loggers"):
        for name in names:
            if name and not re.fullmatch(r"[+-]?\d+", name):
                raise CommandError(
                    f"The entity name for {types[0]} must be a valid integer broker id, but it "
                    f"is: {name}"
                )
    if args.describe:
        if types[0] not in ("users", "clients", "brokers", "ips") and args.entity_default:
            raise CommandError(
                f"--entity-default must not be specified with --describe of {types[0]}"
            )
        if types[0] == "broker-loggers" and not has_name:
            raise CommandError(f"An entity name must be specified with --describe of {types[0]}")
    if args.alter:
        if types[0] in ("users", "clients", "brokers", "ips"):
            if not has_name and not has_default:
                raise CommandError(
                    "An entity-name or default entity must be specified with --alter of users, "
                    "clients, brokers or ips"
                )
        elif not has_name:
            raise CommandError(f"An entity name must be specified with --alter of {types[0]}")
        if args.add_config and args.add_config_file:
            raise CommandError("Only one of --add-config or --add-config-file must be specified")
        if not args.add_config and not args.add_config_file and not args.delete_config:
            raise CommandError(
                "At least one of --add-config, --add-config-file, or --delete-config must be "
                "specified with --alter"
            )
        if len(types) != len(names):
            raise CommandError("An entity name must be specified for every entity type")
    if types[0] not in SUPPORTED_TYPES:
        raise CommandError(
            f"Entity type {types[0]} is not supported by this kafka-configs (it handles "
            f"{', '.join(SUPPORTED_TYPES)})"
        )


# --- parsing configs ----------------------------------------------------------------------------

_OUTSIDE_BRACKETS = r"(?=[^\]]*(?:\[|$))"


def parse_configs_to_add(args) -> dict[str, str]:
    """--add-config 'k1=v1,k2=[a,b]' (and --add-config-file) as {key: value}."""
    props: dict[str, str] = {}
    if args.add_config_file:
        props.update(common.client_properties(args.add_config_file))
    if args.add_config:
        items = re.split("," + _OUTSIDE_BRACKETS, args.add_config)
        while items and items[-1] == "":  # Java's split drops trailing empty strings
            items.pop()
        pairs = [re.split(r"\s*=\s*" + _OUTSIDE_BRACKETS, item) for item in items]
        if any(len(pair) != 2 for pair in pairs):
            raise CommandError(
                'Invalid entity config: all configs to be added must be in the format "key=val" '
                'or  "key=[val1,val2]" to group values which contain commas.'
            )
        for key, value in pairs:
            props[key.strip()] = re.sub(r"[\[\]]", "", value).strip()
    for key in props:
        if not re.fullmatch(r"[$a-zA-Z0-9._-]*", key):
            raise CommandError(f"Invalid character found for config key: {key}")
    return props


def parse_configs_to_delete(args) -> list[str]:
    return [k.strip() for item in args.delete_config for k in item.split(",") if k.strip()]


# --- talking to the cluster ---------------------------------------------------------------------


def describe_resource(admin, entity_type: str, name: str, synonyms: bool) -> list:
    from kafka.protocol.admin import DescribeConfigsRequest

    request = DescribeConfigsRequest(
        resources=[(RESOURCE_TYPES[entity_type], name, None)],
        include_synonyms=synonyms,
        min_version=1,
    )
    result = common.send(admin, request, node_id=target_node(entity_type, name)).results[0]
    common.check(result.error_code, result.error_message)
    return sorted(result.configs, key=lambda c: c.name)


def target_node(entity_type: str, name: str) -> int | None:
    """A broker's own configs are served by that broker (as Kafka's admin client routes
    them); topics and the cluster-wide default by any broker."""
    return int(name) if entity_type in ("brokers", "broker-loggers") and name else None


def dynamic_source(entity_type: str, name: str) -> int | None:
    if entity_type == "topics":
        return 1  # DYNAMIC_TOPIC_CONFIG
    if entity_type == "groups":
        return 8  # GROUP_CONFIG
    if entity_type == "brokers":
        return 3 if name == "" else 2  # DYNAMIC_DEFAULT_BROKER_CONFIG / DYNAMIC_BROKER_CONFIG
    return None  # broker-loggers: every entry


def resource_configs(admin, entity_type: str, name: str, synonyms: bool, all_: bool) -> list:
    configs = describe_resource(admin, entity_type, name, synonyms)
    source = dynamic_source(entity_type, name)
    if all_ or source is None:
        return configs
    return [c for c in configs if c.config_source == source]


def describe(admin, args, entity_type: str, names: list[str]) -> None:
    if names:
        targets = names[:1]
    elif entity_type == "topics":
        targets = sorted(t["name"] for t in admin.describe_topics() if not t["error_code"])
    elif entity_type == "groups":
        targets = sorted(g["group_id"] for g in admin.list_groups())
    else:
        targets = sorted(str(b.node_id) for b in admin._manager.cluster.brokers()) + [""]
    for name in targets:
        if name == "":
            print(f"Default configs for {entity_type} in the cluster are:")
        else:
            kind = "All" if args.all else "Dynamic"
            print(f"{kind} configs for {entity_type[:-1]} {name} are:")
        for c in resource_configs(admin, entity_type, name, True, args.all):
            print(config_line(c))


def config_line(c) -> str:
    synonyms = ", ".join(
        f"{SOURCES.get(s.source, s.source)}:{s.name}={_java(s.value)}" for s in c.synonyms or []
    )
    sensitive = "true" if c.is_sensitive else "false"
    return f"  {c.name}={_java(c.value)} sensitive={sensitive} synonyms={{{synonyms}}}"


def _java(value) -> str:
    return "null" if value is None else str(value)


def alter(admin, args, entity_type: str, name: str, types=None, names=None) -> None:
    from kafka.protocol.admin import IncrementalAlterConfigsRequest

    to_add = parse_configs_to_add(args)
    to_delete = parse_configs_to_delete(args)
    if entity_type in ("users", "clients", "ips"):
        from .quotas import alter_client_entity

        alter_client_entity(admin, types, names, to_add, to_delete)
        _completed(entity_type, name)
        return
    current = {c.name for c in resource_configs(admin, entity_type, name, False, False)}
    invalid = [k for k in to_delete if k not in current]
    if invalid:
        raise CommandError(f"Invalid config(s): {','.join(invalid)}")
    ops = [(k, DELETE, "") for k in to_delete] + [(k, SET, v) for k, v in to_add.items()]
    request = IncrementalAlterConfigsRequest(
        resources=[(RESOURCE_TYPES[entity_type], name, ops)], validate_only=False
    )
    for response in common.send(admin, request, node_id=target_node(entity_type, name)).responses:
        common.check(response.error_code, response.error_message)
    _completed(entity_type, name)


def _completed(entity_type: str, name: str) -> None:
    if name:
        print(f"Completed updating config for {entity_type[:-1]} {name}.")
    else:
        print(f"Completed updating default config for {entity_type} in the cluster.")


# --- entry point --------------------------------------------------------------------------------


def run(argv: list[str]) -> int:
    parser = build_parser()
    if not argv:
        print("Add/Remove entity config for a topic, client, user or broker", file=sys.stderr)
        parser.print_help(sys.stderr)
        return 1
    args = parser.parse_args(argv)
    check_args(args)
    types, names = entities(args)
    common.quiet_client_logging()
    admin = common.admin_client(
        common.bootstrap_servers(args.bootstrap_server or args.bootstrap_controller),
        common.client_properties(args.command_config),
    )
    try:
        if args.alter:
            alter(admin, args, types[0], names[0], types, names)
        elif types[0] in ("users", "clients", "ips"):
            from .quotas import describe_client_entities

            describe_client_entities(admin, types, names)
        else:
            describe(admin, args, types[0], names)
    finally:
        admin.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)

    def report(error: CommandError) -> None:
        if isinstance(error, ExecutionError):
            print(f"Error while executing config command with args '{' '.join(args)}'",
                  file=sys.stderr)  # fmt: skip
            detail = error.qualified if isinstance(error, common.BrokerError) else error.message
            print(detail, file=sys.stderr)
        else:
            print(error.message, file=sys.stderr)

    return common.run_tool(run, args, report)


if __name__ == "__main__":
    sys.exit(main())

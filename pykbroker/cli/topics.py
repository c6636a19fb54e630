"""kafka-topics: create, delete, describe, or change a topic (Apache Kafka's TopicCommand).

    kafka-topics --create --topic user_activity --bootstrap-server localhost:9092 --partitions 1
    kafka-topics --describe --topic high_traffic --bootstrap-server localhost:9092

Output and errors follow Kafka's tool: `Created topic T.`, tab-separated describe lines,
`Error while executing topic command : <message>` on stdout for failures the broker reports,
argument problems on stderr; exit status 1 on any failure.
"""

from __future__ import annotations

import re
import sys

from . import common
from .common import CommandError, ExecutionError, ToolParser, UsageError

DESCRIPTION = "This tool helps to create, delete, describe, or change a topic."
ACTIONS = ("list", "describe", "create", "alter", "delete")
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})
CONFIGS_HINT = " (To alter topic configurations, the kafka-configs tool can be used.)"
DEFAULT_CONFIG = 5  # ConfigEntry.ConfigSource.DEFAULT_CONFIG
REPORT_OPTIONS = ("under_replicated_partitions", "unavailable_partitions",
                  "under_min_isr_partitions", "at_min_isr_partitions")  # fmt: skip


def build_parser() -> ToolParser:
    p = ToolParser("kafka-topics", DESCRIPTION)
    common.add_bootstrap_server(p)
    p.add_argument("--list", action="store_true", help="List all available topics.")
    p.add_argument("--create", action="store_true", help="Create a new topic.")
    p.add_argument("--delete", action="store_true", help="Delete a topic.")
    p.add_argument(
        "--alter",
        action="store_true",
        help="Alter the number of partitions and replica assignment." + CONFIGS_HINT,
    )
    p.add_argument("--describe", action="store_true", help="List details for the given topics.")
    p.add_argument(
        "--topic",
        metavar="<String: topic>",
        help="The topic to create, alter, describe or delete. It also accepts a regular "
        "expression, except for --create option.",
    )
    p.add_argument("--topic-id", metavar="<String: topic-id>", help="The topic-id to describe.")
    p.add_argument(
        "--config",
        action="append",
        metavar="<String: name=value>",
        help="A topic configuration override for the topic being created. It is "
        "supported only in combination with --create." + CONFIGS_HINT,
    )
    p.add_argument(
        "--delete-config",
        action="append",
        metavar="<String: name>",
        help="This option is no longer supported and has been deprecated since 4.0",
    )
    p.add_argument(
        "--partitions",
        type=int,
        metavar="<Integer: # of partitions>",
        help="The number of partitions for the topic being created or altered. If not "
        "supplied with --create, the topic uses the cluster default. (WARNING: If "
        "partitions are increased for a topic that has a key, the partition logic or "
        "ordering of the messages will be affected).",
    )
    p.add_argument(
        "--replication-factor",
        type=int,
        metavar="<Integer: replication factor>",
        help="The replication factor for each partition in the topic being created. "
        "If not supplied, the topic uses the cluster default.",
    )
    p.add_argument(
        "--replica-assignment",
        metavar="<String: broker_id_for_part1_replica1 : "
        "broker_id_for_part1_replica2 , broker_id_for_part2_replica1 : "
        "broker_id_for_part2_replica2 , ...>",
        help="A list of manual partition-to-broker assignments for the topic being "
        "created or altered.",
    )
    p.add_argument(
        "--under-replicated-partitions",
        action="store_true",
        help="If set when describing topics, only show under-replicated partitions.",
    )
    p.add_argument(
        "--unavailable-partitions",
        action="store_true",
        help="If set when describing topics, only show partitions whose leader is not available.",
    )
    p.add_argument(
        "--under-min-isr-partitions",
        action="store_true",
        help="If set when describing topics, only show partitions whose isr count is "
        "less than the configured minimum.",
    )
    p.add_argument(
        "--at-min-isr-partitions",
        action="store_true",
        help="If set when describing topics, only show partitions whose isr count is "
        "equal to the configured minimum.",
    )
    p.add_argument(
        "--topics-with-overrides",
        action="store_true",
        help="If set when describing topics, only show topics that have overridden configs.",
    )
    p.add_argument(
        "--if-exists",
        action="store_true",
        help="If set when altering or deleting or describing topics, the action will "
        "only execute if the topic exists.",
    )
    p.add_argument(
        "--if-not-exists",
        action="store_true",
        help="If set when creating topics, the create request will not fail if the "
        "topic already exists, but the request will still be sent.",
    )
    p.add_argument(
        "--exclude-internal",
        action="store_true",
        help="Exclude internal topics when listing or describing topics. By default, "
        "the internal topics are included.",
    )
    p.add_argument("--partition-size-limit-per-response", type=int,
                   metavar="<Integer: maximum number of partitions per response>",
                   help="The maximum partition size to be included in one DescribeTopicPartitions "
                   "response (accepted for compatibility).")  # fmt: skip
    return p


def _not_with(args, option: str, allowed: tuple[str, ...]) -> None:
    """Kafka's checkInvalidArgs: `option` may only be combined with the `allowed` actions."""
    for action in ACTIONS:
        if getattr(args, action) and action not in allowed:
            raise UsageError(
                f'Option "[{option.replace("_", "-")}]" can\'t be used with option "[{action}]"'
            )


def check_args(args) -> None:
    actions = [a for a in ACTIONS if getattr(args, a)]
    if len(actions) != 1:
        raise UsageError(
            "Command must include exactly one action: --list, --describe, --create, --alter or "
            "--delete"
        )
    if args.delete_config:
        print(
            "delete-config option is no longer supported and deprecated since version 4.0. The "
            "config will be fully removed in future releases.",
            file=sys.stderr,
        )
    if not args.bootstrap_server:
        raise CommandError("--bootstrap-server must be specified")
    if args.describe and args.if_exists and not args.topic and not args.topic_id:
        raise UsageError("--topic or --topic-id is required to describe a topic")
    if not args.list and not args.describe and not args.topic:
        raise UsageError('Missing required argument "[topic]"')
    if args.alter:
        if args.config:
            raise UsageError(
                'Option "[alter]" can\'t be used with option "[config]"' + CONFIGS_HINT
            )
        if args.partitions is None:
            raise UsageError('Missing required argument "[partitions]"')
    if args.config:
        _not_with(args, "config", ("alter", "create"))
    if args.partitions is not None:
        _not_with(args, "partitions", ("alter", "create"))
    if args.replication_factor is not None:
        _not_with(args, "replication-factor", ("create",))
    if args.replica_assignment:
        _not_with(args, "replica-assignment", ("alter", "create"))
        if args.create and (args.partitions is not None or args.replication_factor is not None):
            raise UsageError(
                'Option "[replica-assignment]" can\'t be used with option "[partitions]"'
                if args.partitions is not None
                else 'Option "[replica-assignment]" can\'t be used with option '
                '"[replication-factor]"'
            )
    reports = [o for o in REPORT_OPTIONS if getattr(args, o)]
    for option in reports + (["topics_with_overrides"] if args.topics_with_overrides else []):
        _not_with(args, option, ("describe",))
    if args.topics_with_overrides and reports:
        raise UsageError(
            f'Option "[topics-with-overrides]" can\'t be used with option '
            f'"[{reports[0].replace("_", "-")}]"'
        )
    if args.if_exists:
        _not_with(args, "if-exists", ("alter", "delete", "describe"))
    if args.if_not_exists:
        _not_with(args, "if-not-exists", ("create",))
    if args.exclude_internal:
        _not_with(args, "exclude-internal", ("list", "describe"))


# --- helpers ------------------------------------------------------------------------------------


def parse_replica_assignment(text: str) -> dict[int, list[int]]:
    """'1:2,2:3' -> {0: [1, 2], 1: [2, 3]}."""
    out: dict[int, list[int]] = {}
    for i, part in enumerate(text.split(",")):
        try:
            brokers = [int(b.strip()) for b in part.split(":")]
        except ValueError:
            raise CommandError(f"Invalid replica assignment: {text}") from None
        dupes = sorted({b for b in brokers if brokers.count(b) > 1})
        if dupes:
            raise ExecutionError(
                "Partition replica lists may not contain duplicate entries: "
                + ",".join(map(str, dupes))
            )
        if out and len(brokers) != len(out[0]):
            raise ExecutionError(f"Partition {i} has different replication factor: {brokers}")
        out[i] = brokers
    return out


def parse_topic_configs(items: list[str] | None) -> dict[str, str]:
    configs = {}
    for item in items or []:
        pair = re.split(r"\s*=\s*", item)
        if len(pair) != 2:
            raise CommandError(
                "requirement failed: Invalid topic config: all configs to be added must be in "
                'the format "key=val".'
            )
        configs[pair[0].strip()] = pair[1].strip()
    return configs


def include_pattern(text: str) -> re.Pattern:
    """Kafka's IncludeList: a Java regex; ',' separates alternatives, quotes are stripped."""
    text = text.strip().replace(",", "|").replace(" ", "")
    text = re.sub(r"""^["']+|["']+$""", "", text)
    try:
        return re.compile(text)
    except re.error as e:
        raise CommandError(f"Invalid regular expression {text!r}: {e}") from None


class TopicService:
    def __init__(self, admin):
        self.admin = admin

    def all_topics(self) -> list[dict]:
        return [t for t in self.admin.describe_topics() if not t["error_code"]]

    def topics(self, topic: str | None, exclude_internal: bool) -> list[str]:
        names = sorted(t["name"] for t in self.all_topics())
        if topic is not None:
            pattern = include_pattern(topic)
            names = [n for n in names if pattern.fullmatch(n)]
        if exclude_internal:
            names = [n for n in names if n not in INTERNAL_TOPICS]
        return names

    @staticmethod
    def ensure_exists(found: list[str], requested: str | None, required: bool) -> None:
        if requested and required and not found:
            raise CommandError(f"Topic '{requested}' does not exist as expected")

    def configs(self, names: list[str]) -> dict[str, list]:
        from kafka.protocol.admin import DescribeConfigsRequest

        if not names:
            return {}
        request = DescribeConfigsRequest(
            resources=[(2, name, None) for name in names], include_synonyms=False, min_version=1
        )
        out = {}
        for result in common.send(self.admin, request).results:
            common.check(result.error_code, result.error_message)
            out[result.resource_name] = result.configs
        return out


# --- actions ------------------------------------------------------------------------------------


def create(service: TopicService, args) -> None:
    if args.replication_factor is not None and not 1 <= args.replication_factor <= 32767:
        raise CommandError("The replication factor must be between 1 and 32767 inclusive")
    if args.partitions is not None and args.partitions < 1:
        raise CommandError("The partitions must be greater than 0")
    spec: dict = {"configs": parse_topic_configs(args.config)}
    if args.replica_assignment:
        spec["assignments"] = parse_replica_assignment(args.replica_assignment)
    else:
        spec["num_partitions"] = args.partitions if args.partitions is not None else -1
        spec["replication_factor"] = (
            args.replication_factor if args.replication_factor is not None else -1
        )
    if "." in args.topic or "_" in args.topic:
        print(
            "WARNING: Due to limitations in metric names, topics with a period ('.') or "
            "underscore ('_') could collide. To avoid issues it is best to use either, but not "
            "both."
        )
    result = service.admin.create_topics({args.topic: spec}, raise_errors=False)
    entry = result["topics"][0]
    if entry["error_code"] == 36 and args.if_not_exists:  # TOPIC_ALREADY_EXISTS
        return
    common.check(entry["error_code"], entry["error_message"])
    print(f"Created topic {args.topic}.")


def list_topics(service: TopicService, args) -> None:
    print("\n".join(service.topics(args.topic, args.exclude_internal)))


def alter(service: TopicService, args) -> None:
    topics = service.topics(args.topic, args.exclude_internal)
    service.ensure_exists(topics, args.topic, not args.if_exists)
    if not topics:
        return
    described = {t["name"]: t for t in service.admin.describe_topics(topics)}
    request: dict = {}
    for name in topics:
        if args.replica_assignment:
            assignment = parse_replica_assignment(args.replica_assignment)
            start = len(described[name]["partitions"])
            new = [assignment[i] for i in sorted(assignment) if i >= start]
            request[name] = {"count": args.partitions, "assignments": new}
        else:
            request[name] = args.partitions
    response = service.admin.create_partitions(request, raise_errors=False)
    for result in response.results:
        common.check(result.error_code, result.error_message)


def delete(service: TopicService, args) -> None:
    topics = service.topics(args.topic, args.exclude_internal)
    service.ensure_exists(topics, args.topic, not args.if_exists)
    if not topics:
        return
    result = service.admin.delete_topics(topics, raise_errors=False)
    for entry in result["topics"]:
        common.check(entry["error_code"], entry.get("error_message"))


def describe(service: TopicService, args) -> None:
    if args.topic_id:
        described = [t for t in service.all_topics() if common.kafka_uuid(t["topic_id"]) ==
                     args.topic_id or str(t["topic_id"]) == args.topic_id]  # fmt: skip
        if args.exclude_internal:
            described = [t for t in described if t["name"] not in INTERNAL_TOPICS]
        if not described and not args.if_exists:
            raise CommandError(f"TopicId '{args.topic_id}' does not exist as expected")
    else:
        topics = service.topics(args.topic, args.exclude_internal)
        service.ensure_exists(topics, args.topic, not args.if_exists)
        described = service.admin.describe_topics(topics) if topics else []
        for t in described:
            common.check(t["error_code"])
    described.sort(key=lambda t: t["name"])
    configs = service.configs([t["name"] for t in described])
    live = {b.node_id for b in service.admin._manager.cluster.brokers()}
    reporting = any(getattr(args, o) for o in REPORT_OPTIONS)
    for t in described:
        entries = configs.get(t["name"], [])
        overrides = [c for c in entries if c.config_source != DEFAULT_CONFIG]
        partitions = sorted(t["partitions"], key=lambda p: p["partition_index"])
        if not reporting and (not args.topics_with_overrides or overrides):
            print(topic_line(t, partitions, overrides))
        if args.topics_with_overrides:
            continue
        min_isr = next((int(c.value) for c in entries if c.name == "min.insync.replicas"), 1)
        for p in partitions:
            if reporting and not _reported(args, p, min_isr, live):
                continue
            print(partition_line(t["name"], p))


def topic_line(topic: dict, partitions: list[dict], overrides: list) -> str:
    configs = ",".join(f"{c.name}={c.value}" for c in overrides)
    line = f"Topic: {topic['name']}"
    topic_id = topic.get("topic_id")
    if topic_id and str(topic_id) != str(common.ZERO_UUID):
        line += f"\tTopicId: {common.kafka_uuid(topic_id)}"
    rf = len(partitions[0]["replica_nodes"]) if partitions else 0
    return (
        line + f"\tPartitionCount: {len(partitions)}\tReplicationFactor: {rf}\tConfigs: {configs}"
    )


def partition_line(topic: str, p: dict) -> str:
    leader = p["leader_id"] if p["leader_id"] is not None and p["leader_id"] >= 0 else "none"
    replicas = ",".join(map(str, p["replica_nodes"]))
    isr = ",".join(map(str, p["isr_nodes"]))
    return (
        f"\tTopic: {topic}\tPartition: {p['partition_index']}\tLeader: {leader}"
        f"\tReplicas: {replicas}\tIsr: {isr}"
    )


def _reported(args, p: dict, min_isr: int, live: set[int]) -> bool:
    has_leader = p["leader_id"] is not None and p["leader_id"] >= 0
    isr = len(p["isr_nodes"])
    return (
        (args.under_replicated_partitions and len(p["replica_nodes"]) > isr)
        or (args.unavailable_partitions and (not has_leader or p["leader_id"] not in live))
        or (args.under_min_isr_partitions and (not has_leader or isr < min_isr))
        or (args.at_min_isr_partitions and isr == min_isr)
    )


# --- entry point --------------------------------------------------------------------------------


def run(argv: list[str]) -> int:
    parser = build_parser()
    if not argv:
        print(DESCRIPTION.replace("This tool helps to c", "C"), file=sys.stderr)
        parser.print_help(sys.stderr)
        return 1
    args = parser.parse_args(argv)
    check_args(args)
    common.quiet_client_logging()
    admin = common.admin_client(
        common.bootstrap_servers(args.bootstrap_server),
        common.client_properties(args.command_config),
    )
    try:
        service = TopicService(admin)
        {"create": create, "list": list_topics, "alter": alter, "delete": delete,
         "describe": describe}[next(a for a in ACTIONS if getattr(args, a))](service, args)  # fmt: skip
    finally:
        admin.close()
    return 0


def report(error: CommandError) -> None:
    """Failures during the command go to stdout, prefixed, as TopicCommand prints them."""
    if isinstance(error, common.ExecutionError):
        print(f"Error while executing topic command : {error.message}")
    else:
        print(error.message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return common.run_tool(run, argv, report)


if __name__ == "__main__":
    sys.exit(main())

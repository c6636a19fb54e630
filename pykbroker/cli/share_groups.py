"""kafka-share-groups: list, describe and delete share groups and reset their start offsets
(Apache Kafka's ShareGroupCommand, KIP-932).

    kafka-share-groups --bootstrap-server localhost:9092 --list [--state [S]]
    kafka-share-groups --bootstrap-server localhost:9092 --describe --group G [--members|--state|--offsets] [--verbose]
    kafka-share-groups --bootstrap-server localhost:9092 --delete --group G
    kafka-share-groups --bootstrap-server localhost:9092 --reset-offsets --group G --topic T \\
        --to-earliest|--to-latest|--to-datetime D --execute|--dry-run
    kafka-share-groups --bootstrap-server localhost:9092 --delete-offsets --group G --topic T

Share-group APIs (ShareGroupDescribe, DescribeShareGroupOffsets, AlterShareGroupOffsets,
DeleteShareGroupOffsets) go through kafka-python's client with the message classes
protocol.codec makes from Kafka's specs.
"""

from __future__ import annotations

import sys

from protocol import codec
from protocol.apis import ApiKey

from . import common
from .common import ToolParser, UsageError
from .consumer_groups import GroupTool, OffsetsService, error, fitted_table, parse_datetime

DESCRIPTION = (
    "This tool helps to list, describe, reset and delete share groups."
)  # fmt: skip
ACTIONS = ("list", "describe", "delete", "reset_offsets", "delete_offsets")
RESET_SCENARIOS = ("to_datetime", "to_earliest", "to_latest")
MISSING = "-"


def build_parser() -> ToolParser:
    p = ToolParser("kafka-share-groups", DESCRIPTION)
    common.add_bootstrap_server(p)
    p.add_argument("--list", action="store_true", help="List all share groups.")
    p.add_argument("--describe", action="store_true", help="Describe share group, members and "
                   "offset information.")  # fmt: skip
    p.add_argument("--delete", action="store_true", help="Delete share group.")
    p.add_argument("--reset-offsets", dest="reset_offsets", action="store_true",
                   help="Reset offsets of share group. Supports one share group at a time, and "
                   "instances must be inactive.\nHas 2 execution options: --dry-run (the "
                   "default) to plan which offsets to reset, and --execute to reset the "
                   "offsets.\nYou must choose one of the following reset specifications: "
                   "--to-datetime, --to-earliest, --to-latest.\nTo define the scope use "
                   "--all-topics or --topic.")  # fmt: skip
    p.add_argument("--delete-offsets", dest="delete_offsets", action="store_true",
                   help="Delete offsets of share group. Supports one share group at the time, "
                   "and multiple topics.")  # fmt: skip
    p.add_argument("--group", action="append", metavar="<String: share group>",
                   help="The share group we wish to act on.")  # fmt: skip
    p.add_argument("--all-groups", dest="all_groups", action="store_true",
                   help="Apply to all share groups.")  # fmt: skip
    p.add_argument("--topic", action="append", metavar="<String: topic>",
                   help="The topic whose share group information should be deleted or topic "
                   "which should be included in the reset offset process.")  # fmt: skip
    p.add_argument("--all-topics", dest="all_topics", action="store_true",
                   help="Consider all topics assigned to a share group in the `reset-offsets` "
                   "process.")  # fmt: skip
    p.add_argument("--to-earliest", dest="to_earliest", action="store_true",
                   help="Reset offsets to earliest offset.")  # fmt: skip
    p.add_argument("--to-latest", dest="to_latest", action="store_true",
                   help="Reset offsets to latest offset.")  # fmt: skip
    p.add_argument("--to-datetime", dest="to_datetime", metavar="<String: datetime>",
                   help="Reset offsets to offset from datetime. Format: 'YYYY-MM-DDTHH:mm:SS.sss'")  # fmt: skip
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="Only show results without executing changes on share groups. "
                   "Supported operations: reset-offsets.")  # fmt: skip
    p.add_argument("--execute", action="store_true", help="Execute operation. Supported "
                   "operations: reset-offsets.")  # fmt: skip
    p.add_argument("--members", action="store_true", help="Describe members of the group. "
                   "This option may be used with the '--describe' option only.")  # fmt: skip
    p.add_argument("--offsets", action="store_true", help="Describe the group and list all "
                   "topic partitions in the group along with their offset information. This "
                   "is the default sub-action and may be used with the '--describe' option "
                   "only.")  # fmt: skip
    p.add_argument("--state", nargs="?", const="", default=None, metavar="[String]",
                   help="When specified with '--describe', includes the state of the group. "
                   "When specified with '--list', it displays the state of all groups. It can "
                   "also be used to list groups with specific states.")  # fmt: skip
    p.add_argument("--verbose", action="store_true", help="Provide additional information, "
                   "if any, when describing the group.")  # fmt: skip
    p.add_argument("--timeout", type=int, default=5000, metavar="<Long: timeout (ms)>",
                   help="The timeout that can be set for some use cases.")  # fmt: skip
    return p


def check_args(args) -> None:
    actions = [a for a in ACTIONS if getattr(args, a)]
    if len(actions) != 1:
        raise UsageError("Command must include exactly one action: --list, --describe, "
                         "--delete, --reset-offsets, --delete-offsets.")  # fmt: skip
    action = actions[0]
    if action in ("describe", "delete") and not (args.group or args.all_groups):
        raise UsageError(f"Option [{'describe' if action == 'describe' else 'delete'}] takes "
                         "one of these options: [all-groups], [group]")  # fmt: skip
    if action in ("reset_offsets", "delete_offsets") and not args.group:
        raise UsageError("Option [reset-offsets] takes the option: [group]"
                         if action == "reset_offsets" else
                         "Option [delete-offsets] takes the following options: [topic], [group]")  # fmt: skip
    if action == "reset_offsets":
        chosen = [s for s in RESET_SCENARIOS if getattr(args, s)]
        if len(chosen) != 1:
            raise UsageError("Command must include exactly one action: --to-datetime, "
                             "--to-earliest, --to-latest.")  # fmt: skip
        if not (args.topic or args.all_topics):
            raise UsageError("Option [reset-offsets] takes one of these options: "
                             "[all-topics], [topic]")  # fmt: skip
        if args.dry_run and args.execute:
            raise UsageError("Option [reset-offsets] only takes one of these options: "
                             "[dry-run], [execute]")  # fmt: skip


# --- requests -------------------------------------------------------------------------------


def build(cls, data: dict):
    """A kafka-python message object (nested structs included) from a dict of its fields."""
    kwargs = {}
    for name, fld in cls.fields.items():
        if name not in data:
            continue
        value = data[name]
        if value is not None and fld.is_struct_array():
            value = [build(fld.data_class, v) for v in value]
        elif value is not None and fld.is_struct():
            value = build(fld.data_class, value)
        kwargs[name] = value
    return cls(**kwargs)


class ShareGroupService(OffsetsService):
    def __init__(self, admin):
        super().__init__(admin)
        self._coordinators: dict[str, int] = {}

    def request(self, api_key: int, body: dict, node_id: int | None = None):
        return common.send(self.admin, build(codec.request_class(api_key), body), node_id)

    def coordinator(self, group_id: str) -> int:
        from kafka.protocol.metadata import FindCoordinatorRequest

        if group_id not in self._coordinators:
            r = common.send(self.admin, FindCoordinatorRequest(key=group_id, key_type=0,
                                                               max_version=3))  # fmt: skip
            common.check(r.error_code, r.error_message)
            self._coordinators[group_id] = r.node_id
        return self._coordinators[group_id]

    def list_groups(self, states: list[str] | None) -> list[dict]:
        groups = self.admin.list_groups(states_filter=states or None)
        return [g for g in groups if g.get("protocol_type") == "share"]

    def describe(self, group_id: str):
        r = self.request(ApiKey.SHARE_GROUP_DESCRIBE, {"group_ids": [group_id],
                         "include_authorized_operations": False}, self.coordinator(group_id))  # fmt: skip
        return r.groups[0]

    def start_offsets(self, group_id: str, topics: list[str] | None = None) -> dict:
        """(topic, partition) -> share-partition start offset (-1: none yet)."""
        wanted = None if topics is None else [
            {"topic_name": t, "partitions": [p for _, p in self.topic_partitions([t])]}
            for t in topics
        ]  # fmt: skip
        r = self.request(ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS,
                         {"groups": [{"group_id": group_id, "topics": wanted}]},
                         self.coordinator(group_id))  # fmt: skip
        g = r.groups[0]
        common.check(g.error_code, g.error_message)
        return {(t.topic_name, p.partition_index): p.start_offset
                for t in g.topics for p in t.partitions if not p.error_code}  # fmt: skip


# --- actions --------------------------------------------------------------------------------


def group_ids(service: ShareGroupService, args) -> list[str]:
    if args.all_groups:
        return sorted(g["group_id"] for g in service.list_groups(None))
    return list(dict.fromkeys(args.group))


def list_groups(service: ShareGroupService, args) -> None:
    if args.state is None:
        for g in sorted(service.list_groups(None), key=lambda g: g["group_id"]):
            print(g["group_id"])
        return
    states = [s.strip() for s in args.state.split(",") if s.strip()]
    known = {"stable": "Stable", "empty": "Empty", "dead": "Dead"}
    for s in states:
        if s.lower() not in known:
            raise common.ExecutionError(f"Invalid state list '{args.state}'. Valid states are: "
                                        "Dead, Empty, Stable")  # fmt: skip
    groups = service.list_groups([known[s.lower()] for s in states] if states else None)
    rows = sorted((g["group_id"], g["group_state"]) for g in groups)
    width = max([len("GROUP")] + [len(g) for g, _ in rows])
    print(f"{'GROUP'.ljust(width)} STATE")
    for g, s in rows:
        print(f"{g.ljust(width)} {s}")


def describe(service: ShareGroupService, args) -> None:
    for group_id in group_ids(service, args):
        d = service.describe(group_id)
        if d.error_code == 69 or d.group_state == "Dead":  # GROUP_ID_NOT_FOUND
            error(f"Share group '{group_id}' does not exist.")
            continue
        common.check(d.error_code, d.error_message)
        if args.members:
            describe_members(d, args.verbose)
        elif args.state is not None:
            describe_state(service, d, args.verbose)
        else:
            describe_offsets(service, d, args.verbose)


def describe_state(service: ShareGroupService, d, verbose: bool) -> None:
    node = service.coordinator(d.group_id)
    broker = next((b for b in service.admin._manager.cluster.brokers() if b.node_id == node), None)
    coordinator = f"{broker.host}:{broker.port} ({node})" if broker else f"({node})"
    header = ["GROUP", "COORDINATOR (ID)", "STATE", "#MEMBERS"]
    row = [d.group_id, coordinator, d.group_state, len(d.members)]
    if verbose:
        header[3:3] = ["GROUP-EPOCH", "ASSIGNMENT-EPOCH"]
        row[3:3] = [d.group_epoch, d.assignment_epoch]
    fitted_table(header, [row])


def describe_members(d, verbose: bool) -> None:
    if not d.members:
        print(f"\nShare group '{d.group_id}' has no active members.")
        return
    header = ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"]
    if verbose:
        header[5:5] = ["MEMBER-EPOCH"]
    rows = []
    for m in d.members:
        parts = [(tp.topic_name, p) for tp in m.assignment.topic_partitions for p in tp.partitions]
        assignment = ",".join(f"{t}:{p}" for t, p in sorted(parts)) or MISSING
        row = [d.group_id, m.member_id, m.client_host, m.client_id, len(parts), assignment]
        if verbose:
            row[5:5] = [m.member_epoch]
        rows.append(row)
    fitted_table(header, rows)


def describe_offsets(service: ShareGroupService, d, verbose: bool) -> None:
    offsets = service.start_offsets(d.group_id)
    if not offsets:
        print(f"\nShare group '{d.group_id}' has no offset information.")
        return
    header = ["GROUP", "TOPIC", "PARTITION", "START-OFFSET"]
    rows = [[d.group_id, t, p, o if o >= 0 else MISSING] for (t, p), o in sorted(offsets.items())]
    fitted_table(header, rows)


def delete(service: ShareGroupService, args) -> None:
    from kafka import errors

    ids = group_ids(service, args)
    failed = {}
    for group_id, outcome in service.admin.delete_groups(ids).items():
        if outcome != "OK":
            failed[group_id] = getattr(errors, outcome, errors.UnknownError).errno
    ok = [g for g in ids if g not in failed]
    if ok:
        print(f"Deletion of requested share groups ({', '.join(repr(g) for g in ok)}) was "
              "successful.")  # fmt: skip
    if failed:
        print("Deletion of some share groups failed:")
        for g, code in failed.items():
            name = common.exception_name(code).rsplit(".", 1)[1]
            print(f"* Share group '{g}' could not be deleted due to: {name}")


def reset_offsets(service: ShareGroupService, args) -> None:
    group_id = args.group[0]
    if args.all_topics:
        topics = sorted({t for t, _ in service.start_offsets(group_id)})
    else:
        topics = list(dict.fromkeys(args.topic))
    partitions = service.topic_partitions(topics)
    from kafka.admin import OffsetSpec

    if args.to_earliest:
        plan = service.log_offsets(partitions, OffsetSpec.EARLIEST)
    elif args.to_latest:
        plan = service.log_offsets(partitions, OffsetSpec.LATEST)
    else:
        plan = service.log_offsets(partitions, max(parse_datetime(args.to_datetime), 0))
        latest = service.log_offsets(partitions, OffsetSpec.LATEST)
        plan = {tp: (plan.get(tp, -1) if plan.get(tp, -1) >= 0 else latest[tp])
                for tp in partitions}  # fmt: skip
    if args.execute:
        by_topic: dict[str, list] = {}
        for (t, p), o in sorted(plan.items()):
            by_topic.setdefault(t, []).append({"partition_index": p, "start_offset": o})
        r = service.request(ApiKey.ALTER_SHARE_GROUP_OFFSETS, {"group_id": group_id, "topics": [
            {"topic_name": t, "partitions": ps} for t, ps in by_topic.items()]},
            service.coordinator(group_id))  # fmt: skip
        if r.error_code == 68:  # NON_EMPTY_GROUP
            error(f"Share group '{group_id}' is not empty.")
            return
        common.check(r.error_code, r.error_message)
        for t in r.responses:
            for p in t.partitions:
                common.check(p.error_code, p.error_message)
    header = ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]
    rows = [[group_id, t, p, o] for (t, p), o in sorted(plan.items())]
    fitted_table(header, rows)


def delete_offsets(service: ShareGroupService, args) -> None:
    group_id = args.group[0]
    r = service.request(ApiKey.DELETE_SHARE_GROUP_OFFSETS, {"group_id": group_id, "topics": [
        {"topic_name": t} for t in dict.fromkeys(args.topic or [])]}, service.coordinator(group_id))  # fmt: skip
    if r.error_code:
        error(f"Encountered some issues while trying to delete offsets: "
              f"{common.broker_error_message(r.error_code, r.error_message)}")  # fmt: skip
        return
    rows = [[t.topic_name, "Successful" if not t.error_code
             else f"Error: {common.broker_error_message(t.error_code, t.error_message)}"]
            for t in r.responses]  # fmt: skip
    fitted_table(["TOPIC", "STATUS"], rows)


def main(argv: list[str] | None = None) -> int:
    actions = {"list": list_groups, "describe": describe, "delete": delete,
               "reset_offsets": reset_offsets, "delete_offsets": delete_offsets}  # fmt: skip
    tool = GroupTool("share group", DESCRIPTION, build_parser, check_args, ShareGroupService,
                     actions)  # fmt: skip
    return common.run_tool(tool.run, argv, tool.report)


if __name__ == "__main__":
    sys.exit(main())

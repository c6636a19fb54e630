"""kafka-consumer-groups: list, describe, delete consumer groups and reset their offsets
(Apache Kafka's ConsumerGroupCommand).

    kafka-consumer-groups --bootstrap-server localhost:9092 --list
    kafka-consumer-groups --bootstrap-server localhost:9092 --describe --group G [--members|--state]
    kafka-consumer-groups --bootstrap-server localhost:9092 --delete --group G
    kafka-consumer-groups --bootstrap-server localhost:9092 --reset-offsets --group G --topic T \\
        --to-earliest|--to-latest|--to-offset N|--shift-by N|--to-current|--to-datetime D| \\
        --by-duration PnDTnHnMnS --execute|--dry-run [--export]
    kafka-consumer-groups --bootstrap-server localhost:9092 --reset-offsets --group G \\
        --from-file plan.csv --execute

A thin client over the wire protocol (kafka-python's admin client), printing Kafka's tables:
GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID, and so on.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import common
from .common import CommandError, ToolParser, UsageError

DESCRIPTION = (
    "This tool helps to list all consumer groups, describe a consumer group, delete consumer "
    "group info, or reset consumer group offsets."
)
ACTIONS = ("list", "describe", "delete", "reset_offsets", "delete_offsets")
# Kafka's allResetOffsetScenarioOpts, in its order.
RESET_SCENARIOS = ("to_offset", "shift_by", "to_datetime", "by_duration", "to_earliest",
                   "to_latest", "to_current", "from_file")  # fmt: skip
MISSING = "-"
GROUP_ID_NOT_FOUND = 69
STATES = (
    "PreparingRebalance",
    "CompletingRebalance",
    "Stable",
    "Dead",
    "Empty",
    "Assigning",
    "Reconciling",
)  # the last two: consumer-protocol (KIP-848) groups
NOT_EMPTY = 68  # NON_EMPTY_GROUP: Kafka names it GroupNotEmptyException


def build_parser() -> ToolParser:
    p = ToolParser("kafka-consumer-groups", DESCRIPTION)
    common.add_bootstrap_server(p)
    p.add_argument("--list", action="store_true", help="List all consumer groups.")
    p.add_argument("--describe", action="store_true",
                   help="Describe consumer group and list offset lag (number of messages not yet "
                   "processed) related to given group.")  # fmt: skip
    p.add_argument("--delete", action="store_true", help="Pass in groups to delete topic "
                   "partition offsets and ownership information over the entire consumer group.")  # fmt: skip
    p.add_argument("--reset-offsets", dest="reset_offsets", action="store_true",
                   help="Reset offsets of consumer group. Supports one consumer group at the "
                   "time, and instances should be inactive\nHas 2 execution options: "
                   "--dry-run (the default) to plan which offsets to reset, and --execute to "
                   "update the offsets. Additionally, the --export option is used to export "
                   "the results to a CSV format.\nYou must choose one of the following reset "
                   "specifications: --to-datetime, --by-duration, --to-earliest, --to-latest, "
                   "--shift-by, --from-file, --to-current, --to-offset.\nTo define the scope "
                   "use --all-topics or --topic. One scope must be specified unless you use "
                   "'--from-file'.")  # fmt: skip
    p.add_argument("--delete-offsets", dest="delete_offsets", action="store_true",
                   help="Delete offsets of consumer group. Supports one consumer group at the "
                   "time, and multiple topics.")  # fmt: skip
    p.add_argument("--group", action="append", metavar="<String: consumer group>",
                   help="The consumer group we wish to act on.")  # fmt: skip
    p.add_argument("--all-groups", dest="all_groups", action="store_true",
                   help="Apply to all consumer groups.")  # fmt: skip
    p.add_argument("--topic", action="append", metavar="<String: topic>",
                   help="The topic whose consumer group information should be deleted or topic "
                   "whose should be included in the reset offset process. In `reset-offsets` "
                   "case, partitions can be specified using this format: "
                   "`topic1:0,1,2`, where 0,1,2 are the partition to be included in the process.")  # fmt: skip
    p.add_argument("--all-topics", dest="all_topics", action="store_true",
                   help="Consider all topics assigned to a group in the `reset-offsets` process.")  # fmt: skip
    p.add_argument("--to-earliest", dest="to_earliest", action="store_true",
                   help="Reset offsets to earliest offset.")  # fmt: skip
    p.add_argument("--to-latest", dest="to_latest", action="store_true",
                   help="Reset offsets to latest offset.")  # fmt: skip
    p.add_argument("--to-offset", dest="to_offset", type=int, metavar="<Long: offset>",
                   help="Reset offsets to a specific offset.")  # fmt: skip
    p.add_argument("--shift-by", dest="shift_by", type=int,
                   metavar="<Long: number-of-offsets>",
                   help="Reset offsets shifting current offset by 'n', where 'n' can be "
                   "positive or negative.")  # fmt: skip
    p.add_argument("--to-current", dest="to_current", action="store_true",
                   help="Reset offsets to current offset.")  # fmt: skip
    p.add_argument("--to-datetime", dest="to_datetime", metavar="<String: datetime>",
                   help="Reset offsets to offset from datetime. Format: "
                   "'YYYY-MM-DDTHH:mm:SS.sss'")  # fmt: skip
    p.add_argument("--by-duration", dest="by_duration", metavar="<String: duration>",
                   help="Reset offsets to offset by duration from current timestamp. Format: "
                   "'PnDTnHnMnS'")  # fmt: skip
    p.add_argument("--from-file", dest="from_file", metavar="<String: path to CSV file>",
                   help="Reset offsets to values defined in CSV file.")  # fmt: skip
    p.add_argument("--execute", action="store_true",
                   help="Execute operation. Supported operations: reset-offsets.")  # fmt: skip
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="Only show results without executing changes on Consumer Groups. "
                   "Supported operations: reset-offsets.")  # fmt: skip
    p.add_argument("--export", action="store_true",
                   help="Export operation execution to a CSV file. Supported operations: "
                   "reset-offsets.")  # fmt: skip
    p.add_argument("--members", action="store_true",
                   help="Describe members of the group. This option may be used with "
                   "'--describe' and '--bootstrap-server' options only.")  # fmt: skip
    p.add_argument("--offsets", action="store_true",
                   help="Describe the group and list all topic partitions in the group along "
                   "with their offset lag. This is the default sub-action of and may be used "
                   "with '--describe' and '--bootstrap-server' options only.")  # fmt: skip
    p.add_argument("--state", nargs="?", const="", default=None, metavar="[String]",
                   help="When specified with '--describe', includes the state of the group. "
                   "When specified with '--list', it displays the state of all groups. It "
                   "can also be used to list groups with specific states.")  # fmt: skip
    p.add_argument("--verbose", action="store_true",
                   help="Provide additional information, if any, when describing the group. "
                   "This option may be used with '--offsets'/'--members'/'--state' and "
                   "'--bootstrap-server' options only.")  # fmt: skip
    p.add_argument("--timeout", type=int, default=5000, metavar="<Long: timeout (ms)>",
                   help="The timeout that can be set for some use cases. (default: %(default)s)")  # fmt: skip
    return p


def check_args(args) -> None:
    actions = [a for a in ACTIONS if getattr(args, a)]
    if len(actions) != 1:
        raise UsageError(
            "Command must include exactly one action: --list, --describe, --delete, "
            "--reset-offsets, --delete-offsets"
        )
    if not args.bootstrap_server:
        raise UsageError('Missing required argument "[bootstrap-server]"')
    action = actions[0]
    if action in ("describe", "delete", "reset_offsets") and not (args.group or args.all_groups):
        raise UsageError(
            f"Option [{action.replace('_', '-')}] takes one of these options: [all-groups], [group]"
        )
    if action == "delete_offsets" and not (args.group and args.topic):
        raise UsageError("Option [delete-offsets] takes the following options: [group], [topic]")
    if action == "reset_offsets":
        check_reset_args(args)


def option(dest: str) -> str:
    """An option as jopt-simple prints it: `[to-datetime]`."""
    return f"[{dest.replace('_', '-')}]"


def check_reset_args(args) -> None:
    """Kafka's checks of --reset-offsets: one of --execute/--dry-run at most, one reset
    specification, and a scope (--topic or --all-topics) unless the plan comes from a file."""
    if args.execute and args.dry_run:
        raise UsageError("Option [reset-offsets] only accepts one of [execute] and [dry-run]")
    used = [s for s in RESET_SCENARIOS if getattr(args, s) not in (None, False)]
    # checkInvalidArgs, scenario by scenario in Kafka's order: the first one used names the
    # first other one used.
    for first in ("to_offset", "to_datetime", "by_duration", "to_earliest", "to_latest",
                  "to_current", "shift_by", "from_file"):  # fmt: skip
        if first in used and len(used) > 1:
            other = next(s for s in used if s != first)
            raise UsageError(
                f'Option "{option(first)}" can\'t be used with option "{option(other)}"'
            )
    if not (args.topic or args.all_topics or args.from_file):
        raise UsageError("One of the reset scopes should be defined: --all-topics, --topic.")
    if not used:
        raise UsageError(
            "Option '[reset-offsets]' requires one of the following scenarios: "
            f"[{', '.join(option(s) for s in RESET_SCENARIOS)}]"
        )


# --- the admin side -----------------------------------------------------------------------


@dataclass
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    host: str
    partitions: list[tuple[str, int]]
    # Consumer-protocol (KIP-848) groups only: member epoch, target assignment.
    epoch: int | None = None
    target: list[tuple[str, int]] | None = None


@dataclass
class Group:
    group_id: str
    state: str
    protocol: str
    members: list[Member]
    group_epoch: int | None = None  # consumer-protocol groups only
    assignment_epoch: int | None = None

    @property
    def is_consumer_protocol(self) -> bool:
        return self.group_epoch is not None


class OffsetsService:
    """What kafka-consumer-groups and kafka-share-groups both ask: a topic's partitions, and the
    log's offsets for a spec (earliest, latest, a timestamp)."""

    def __init__(self, admin):
        self.admin = admin

    def topic_partitions(self, topics: list[str]) -> list[tuple[str, int]]:
        found = []
        for t in self.admin.describe_topics(topics):
            name = t.get("name") or t.get("topic")
            code = t.get("error_code", 0)
            if code:
                common.check(code, f"The topic {name} doesn't exist or has an error")
            found.extend((name, p["partition_index"]) for p in t["partitions"])
        return sorted(found)

    def log_offsets(self, partitions, spec) -> dict[tuple[str, int], int]:
        from kafka import TopicPartition

        if not partitions:
            return {}
        result = self.admin.list_partition_offsets(
            {TopicPartition(t, p): spec for t, p in partitions}
        )
        return {(tp.topic, tp.partition): o.offset for tp, o in result.items()}


class GroupService(OffsetsService):
    def list_groups(self, states: list[str] | None = None) -> list[dict]:
        groups = self.admin.list_groups(states_filter=states or None)
        # The consumer groups: those of the consumer protocol, and those only keeping offsets.
        return [g for g in groups if g.get("protocol_type", "") in ("consumer", "")]

    def describe(self, group_id: str) -> Group:
        consumer = self.describe_consumer_group(group_id)
        if consumer is not None:
            return consumer
        d = self.admin.describe_groups([group_id])[group_id]
        if d.get("error") and "GroupIdNotFoundError" in d["error"]:
            # DescribeGroups v6 (KIP-1043) says so where older versions answered Dead.
            return Group(group_id, "Dead", "", [])
        if d.get("error"):
            raise common.ExecutionError(d["error"])
        members = []
        for m in d["members"]:
            assignment = m.get("member_assignment") or {}
            parts = [
                (a["topic"], p)
                for a in assignment.get("assigned_partitions", [])
                for p in a["partitions"]
            ]
            members.append(
                Member(m["member_id"], m.get("group_instance_id"), m["client_id"],
                       m["client_host"], parts)
            )  # fmt: skip
        return Group(group_id, d["group_state"], d.get("protocol_data") or "", members)

    def describe_consumer_group(self, group_id: str) -> Group | None:
        """A consumer-protocol group through ConsumerGroupDescribe (as Kafka's admin client
        describes one); None for a classic group (GROUP_ID_NOT_FOUND) or an older broker."""
        from protocol import codec
        from protocol.apis import ApiKey

        _, _, node_id = self.coordinator(group_id)
        request = codec.request_class(ApiKey.CONSUMER_GROUP_DESCRIBE)(
            group_ids=[group_id], include_authorized_operations=False, max_version=1
        )
        try:
            r = common.send(self.admin, request, node_id)
        except Exception:  # the broker doesn't serve ConsumerGroupDescribe
            return None
        g = r.groups[0]
        if g.error_code == GROUP_ID_NOT_FOUND:
            return None
        common.check(g.error_code, g.error_message)

        def parts(assignment) -> list[tuple[str, int]]:
            return [(t.topic_name, p) for t in assignment.topic_partitions for p in t.partitions]

        members = [
            Member(m.member_id, m.instance_id, m.client_id, m.client_host, parts(m.assignment),
                   m.member_epoch, parts(m.target_assignment))
            for m in g.members
        ]  # fmt: skip
        return Group(group_id, g.group_state, g.assignor_name, members, g.group_epoch,
                     g.assignment_epoch)  # fmt: skip

    def committed(self, group_id: str) -> dict[tuple[str, int], int]:
        offsets = self.admin.list_group_offsets(group_id).get(group_id, {})
        return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items() if om.offset >= 0}

    def latest(self, partitions) -> dict[tuple[str, int], int]:
        from kafka.admin import OffsetSpec

        return self.log_offsets(partitions, OffsetSpec.LATEST)

    def earliest(self, partitions) -> dict[tuple[str, int], int]:
        from kafka.admin import OffsetSpec

        return self.log_offsets(partitions, OffsetSpec.EARLIEST)

    def missing_partitions(self, partitions) -> list[tuple[str, int]]:
        """Those of `partitions` the cluster doesn't have."""
        if not partitions:
            return []
        known = set()
        for t in self.admin.describe_topics(sorted({t for t, _ in partitions})):
            if not t.get("error_code"):
                name = t.get("name") or t.get("topic")
                known.update((name, p["partition_index"]) for p in t["partitions"])
        return [tp for tp in partitions if tp not in known]

    def coordinator(self, group_id: str) -> tuple[str, int, int]:
        from kafka.protocol.metadata import FindCoordinatorRequest

        r = common.send(self.admin, FindCoordinatorRequest(key=group_id, key_type=0, max_version=3))
        common.check(r.error_code, r.error_message)
        return r.host, r.port, r.node_id

    def alter(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        errors = self.admin.alter_group_offsets(
            group_id,
            {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()},
        )
        for err in errors.values():
            common.check(err.errno, getattr(err, "description", None))

    def delete_groups(self, group_ids: list[str]) -> dict[str, int]:
        from kafka import errors

        results = {}
        for group_id, outcome in self.admin.delete_groups(group_ids).items():
            code = 0 if outcome == "OK" else getattr(errors, outcome, errors.UnknownError).errno
            results[group_id] = code
        return results

    def delete_offsets(self, group_id: str, partitions) -> dict[tuple[str, int], int]:
        from kafka import TopicPartition

        result = self.admin.delete_group_offsets(
            group_id, [TopicPartition(t, p) for t, p in partitions]
        )
        return {(tp.topic, tp.partition): err.errno for tp, err in result.items()}


# --- output -------------------------------------------------------------------------------


def error(message: str) -> None:
    """Kafka's printError: a blank line, then `Error: message`, on stdout."""
    print(f"\nError: {message}")


def should_print(group: Group, rows: int | None) -> bool:
    """Kafka's shouldPrintMemberState: say why a group shows nothing, or that it rebalances."""
    if rows is None or group.state == "Dead":
        error(f"Consumer group '{group.group_id}' does not exist.")
        return False
    if group.state == "Empty":
        print(f"\nConsumer group '{group.group_id}' has no active members.", file=sys.stderr)
    elif group.state in ("PreparingRebalance", "CompletingRebalance"):
        print(f"\nWarning: Consumer group '{group.group_id}' is rebalancing.", file=sys.stderr)
    return rows > 0


def table(header: list[str], rows: list[list], widths: list[int]) -> None:
    """Kafka's printf rows: each column left-justified to its width, one space apart."""

    def line(cells) -> str:
        out = []
        for cell, width in zip(cells, widths, strict=False):
            out.append(str(cell).ljust(width) if width else str(cell))
        return " ".join(out)

    print()
    print(line(header))
    for row in rows:
        print(line(row))


def fitted_table(header: list[str], rows: list[list]) -> None:
    """A table whose columns are as wide as their widest cell (the last one unpadded), as
    Kafka's ShareGroupCommand prints them."""
    widths = [max([len(str(h))] + [len(str(r[i])) for r in rows]) for i, h in enumerate(header)]
    widths[-1] = 0
    table(header, rows, widths)


def describe_offsets(service: GroupService, group: Group) -> None:
    committed = service.committed(group.group_id)
    rows: list[list] = []
    assigned: set[tuple[str, int]] = set()
    members = sorted((m for m in group.members if m.partitions), key=lambda m: -len(m.partitions))
    for m in members:
        for tp in sorted(m.partitions, key=lambda tp: (tp[1], tp[0])):
            assigned.add(tp)
            rows.append([tp, m.member_id, m.host, m.client_id])
    for tp in sorted(set(committed) - assigned):
        rows.append([tp, MISSING, MISSING, MISSING])
    if not should_print(group, len(rows)):
        return
    ends = service.latest([r[0] for r in rows])
    out = []
    for (topic, partition), consumer, host, client in rows:
        offset, end = committed.get((topic, partition)), ends.get((topic, partition))
        lag = end - offset if offset is not None and end is not None else None
        out.append([
            group.group_id, topic, partition,
            MISSING if offset is None else offset, MISSING if end is None else end,
            MISSING if lag is None else lag, consumer, host, client,
        ])  # fmt: skip
    widths = [
        max(15, *(len(str(r[0])) for r in out)), max(15, *(len(str(r[1])) for r in out)),
        10, 15, 15, 15, max(15, *(len(str(r[6])) for r in out)),
        max(15, *(len(str(r[7])) for r in out)), 0,
    ]  # fmt: skip
    header = ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
              "CONSUMER-ID", "HOST", "CLIENT-ID"]  # fmt: skip
    table(header, out, widths)


def _assignment_text(partitions: list[tuple[str, int]]) -> str:
    by_topic: dict[str, list[int]] = {}
    for t, p in partitions:
        by_topic.setdefault(t, []).append(p)
    return ", ".join(sorted(
        f"{t}({','.join(str(p) for p in sorted(ps))})" for t, ps in by_topic.items()
    )) or MISSING  # fmt: skip


def describe_members(group: Group, verbose: bool) -> None:
    if not should_print(group, len(group.members)):
        return
    with_instance = any(m.instance_id for m in group.members)
    header = ["GROUP", "CONSUMER-ID"] + (["GROUP-INSTANCE-ID"] if with_instance else [])
    header += ["HOST", "CLIENT-ID", "#PARTITIONS"]
    # Kafka 4's tool shows a consumer-protocol group's member and target epochs and
    # assignments in verbose mode.
    epochs = verbose and group.is_consumer_protocol
    rows = []
    for m in group.members:
        row = [group.group_id, m.member_id] + ([m.instance_id or ""] if with_instance else [])
        row += [m.host, m.client_id, len(m.partitions)]
        if epochs:
            row += [m.epoch, _assignment_text(m.partitions), group.assignment_epoch,
                    _assignment_text(m.target or [])]  # fmt: skip
        elif verbose:
            row.append(_assignment_text(m.partitions))
        rows.append(row)
    widths = [
        max(15, len(group.group_id)), max(15, *(len(m.member_id) for m in group.members)),
    ]  # fmt: skip
    if with_instance:
        widths.append(max(17, *(len(m.instance_id or "") for m in group.members)))
    widths += [
        max(15, *(len(m.host) for m in group.members)),
        max(15, *(len(m.client_id) for m in group.members)), 15,
    ]  # fmt: skip
    if epochs:
        header += ["CURRENT-EPOCH", "CURRENT-ASSIGNMENT", "TARGET-EPOCH", "TARGET-ASSIGNMENT"]
        widths += [15, max(20, *(len(r[-3]) for r in rows)), 15, 0]
        table(header, rows, widths)
        return
    # Kafka's row format ends "%-15s " before the optional ASSIGNMENT column.
    header.append("ASSIGNMENT" if verbose else "")
    widths.append(0)
    if not verbose:
        rows = [[*row, ""] for row in rows]
    table(header, rows, widths)


def describe_state(service: GroupService, group: Group, verbose: bool = False) -> None:
    if not should_print(group, 1):
        return
    host, port, node_id = service.coordinator(group.group_id)
    coordinator = f"{host}:{port}  ({node_id})"
    width = max(25, len(coordinator))
    header = ["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"]
    row = [group.group_id, coordinator, group.protocol, group.state, len(group.members)]
    widths = [width, 25, 20, 15, 0]
    if verbose:
        # Kafka 4: the group and target assignment epochs (MISSING for a classic group).
        header[4:4] = ["GROUP-EPOCH", "TARGET-ASSIGNMENT-EPOCH"]
        row[4:4] = [
            MISSING if group.group_epoch is None else group.group_epoch,
            MISSING if group.assignment_epoch is None else group.assignment_epoch,
        ]
        widths = [width, 25, 20, 15, 15, 25, 0]
    table(header, [row], widths)


# --- actions ------------------------------------------------------------------------------


def group_ids(service: GroupService, args) -> list[str]:
    if args.all_groups:
        return sorted(g["group_id"] for g in service.list_groups())
    return list(dict.fromkeys(args.group))


def list_groups(service: GroupService, args) -> None:
    if args.state is None:
        for g in service.list_groups():
            print(g["group_id"])
        return
    states = [s.strip() for s in args.state.split(",") if s.strip()]
    by_lower = {s.lower(): s for s in STATES}
    bad = [s for s in states if s.lower() not in by_lower]
    if bad:
        raise UsageError(
            f"Invalid state list '{args.state}'. Valid states are: {', '.join(STATES)}"
        )
    groups = service.list_groups([by_lower[s.lower()] for s in states])
    width = max([15, *(len(g["group_id"]) for g in groups)]) + 10
    print(f"{'GROUP'.ljust(width)} {'STATE'.ljust(20)}")
    for g in groups:
        print(f"{g['group_id'].ljust(width)} {g.get('group_state', '').ljust(20)}")


def describe(service: GroupService, args) -> None:
    for group_id in sorted(group_ids(service, args)):
        group = service.describe(group_id)
        if args.members:
            describe_members(group, args.verbose)
        elif args.state is not None and not args.offsets:
            describe_state(service, group, args.verbose)
        else:
            describe_offsets(service, group)


def delete(service: GroupService, args) -> None:
    ids = group_ids(service, args)
    results = service.delete_groups(ids)
    ok = [g for g in ids if results.get(g) == 0]
    failed = {g: results.get(g, -1) for g in ids if results.get(g) != 0}
    if not failed:
        joined = ", ".join(ok)
        print(f"Deletion of requested consumer groups ('{joined}') was successful.")
        return
    error("Deletion of some consumer groups failed:")
    for g, code in failed.items():
        name = common.exception_name(code)
        if code == NOT_EMPTY:
            name = "org.apache.kafka.common.errors.GroupNotEmptyException"
        print(f"* Group '{g}' could not be deleted due to: {name}: "
              f"{common.broker_error_message(code, None)}")  # fmt: skip
    if ok:
        print(f"\nThese consumer groups were deleted successfully: '{', '.join(ok)}'")


def parse_topic_partitions(service: GroupService, topics: list[str]) -> list[tuple[str, int]]:
    explicit, whole = [], []
    for arg in topics:
        if ":" in arg:
            name, parts = arg.split(":", 1)
            try:
                explicit.extend((name, int(p)) for p in parts.split(","))
            except ValueError:
                raise UsageError(f"Invalid topic arg '{arg}', expected topic name and partitions")
        else:
            whole.append(arg)
    return explicit + (service.topic_partitions(whole) if whole else [])


def clamp(offsets, earliest, latest) -> dict[tuple[str, int], int]:
    """Kafka's checkOffsetsRange: keep each new offset within [log start, log end]."""
    out = {}
    for tp, offset in offsets.items():
        end, start = latest.get(tp), earliest.get(tp)
        if end is not None and offset > end:
            common.warn(f"New offset ({offset}) is higher than latest offset for topic partition "
                        f"{tp[0]}-{tp[1]}. Value will be set to {end}")  # fmt: skip
            offset = end
        elif start is not None and offset < start:
            common.warn(f"New offset ({offset}) is lower than earliest offset for topic partition "
                        f"{tp[0]}-{tp[1]}. Value will be set to {start}")  # fmt: skip
            offset = start
        out[tp] = offset
    return out


# --- reset specifications -------------------------------------------------------------------

DATETIME = re.compile(r"(\d{4})-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)(Z|[+-]\d\d(?::?\d\d)?)")


def parse_datetime(text: str) -> int:
    """--to-datetime as Kafka's Utils.getDateTime reads it: 'YYYY-MM-DDTHH:mm:SS.sss' with an
    optional zone (Z, +hh, +hhmm or +hh:mm); without a zone the time is UTC, as in Kafka.
    Milliseconds since the epoch."""
    parts = text.split("T")
    while parts and not parts[-1]:
        parts.pop()  # Java's split drops trailing empty strings
    if len(parts) < 2:
        raise common.ExecutionError(
            "java.text.ParseException: Error parsing timestamp. It does not contain a 'T' "
            "according to ISO8601 format"
        )
    if not any(c in parts[1] for c in "+-Z"):
        text += "Z"
    m = DATETIME.fullmatch(text)
    try:
        if not m or int(m.group(7)) > 999:
            raise ValueError(text)
        year, month, day, hour, minute, second, millis = (int(g) for g in m.groups()[:7])
        zone, offset = m.group(8), 0
        if zone != "Z":
            hours, minutes = int(zone[1:3]), int(zone[3:].lstrip(":") or 0)
            if hours > 23 or minutes > 59:
                raise ValueError(zone)
            offset = (hours * 60 + minutes) * (-1 if zone[0] == "-" else 1)
        tz = timezone(timedelta(minutes=offset))
        moment = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:
        raise common.ExecutionError(
            f'java.text.ParseException: Unparseable date: "{text}"'
        ) from None
    return int(moment.timestamp()) * 1000 + millis


DURATION = re.compile(
    r"([-+]?)P(?:([-+]?[0-9]+)D)?"
    r"(T(?:([-+]?[0-9]+)H)?(?:([-+]?[0-9]+)M)?(?:([-+]?[0-9]+)(?:[.,]([0-9]{0,9}))?S)?)?",
    re.IGNORECASE,
)


def parse_duration(text: str) -> int:
    """--by-duration as java.time.Duration.parse reads ISO-8601 'PnDTnHnMn.nS' (a sign on the
    whole and on each part, letters in either case). Nanoseconds."""
    m = DURATION.fullmatch(text)
    if not m or m.group(3) in ("T", "t") or not any(m.group(i) for i in (2, 4, 5, 6)):
        raise common.ExecutionError("Text cannot be parsed to a Duration")
    days, hours, minutes, seconds = (int(m.group(i) or 0) for i in (2, 4, 5, 6))
    nanos = int((m.group(7) or "").ljust(9, "0"))
    if (m.group(6) or "").startswith("-"):
        nanos = -nanos
    total = (days * 86400 + hours * 3600 + minutes * 60 + seconds) * 1_000_000_000 + nanos
    return -total if m.group(1) == "-" else total


def read_reset_plan(path: str, groups: list[str] | None) -> dict[str, dict[tuple[str, int], int]]:
    """A --from-file plan, in the CSV that --export writes: `topic,partition,offset` lines when
    exactly one --group is given (and the file has 3 columns), else
    `group,topic,partition,offset` (Kafka's parseResetPlan)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise common.ExecutionError(f"java.nio.file.NoSuchFileException: {path}") from None
    except OSError as e:
        raise common.ExecutionError(f"java.io.IOException: {path}: {e.strerror}") from None
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), 1) if row]

    def numbers(row: list[str]) -> tuple[int, int] | None:
        try:
            return int(row[-2]), int(row[-1])
        except ValueError:
            return None

    without_group = bool(rows) and len(rows[0][1]) == 3 and numbers(rows[0][1]) is not None
    width = 3 if len(groups or []) == 1 and without_group else 4
    plan: dict[str, dict[tuple[str, int], int]] = {}
    for n, row in rows:
        parsed = numbers(row) if len(row) == width else None
        if parsed is None:
            expected = "topic,partition,offset" if width == 3 else "group,topic,partition,offset"
            raise common.ExecutionError(
                f"Invalid line {n} in reset plan file {path}: '{','.join(row)}', expected "
                f"{expected}"
            )
        group = groups[0] if width == 3 else row[0]
        plan.setdefault(group, {})[(row[-3], parsed[0])] = parsed[1]
    return plan


def offsets_by_timestamp(service: GroupService, partitions, timestamp: int, notice) -> dict:
    """Kafka's getLogTimestampOffsets: each partition's first offset with a timestamp at or
    after `timestamp`; a partition without one falls back to its log end offset."""
    found = service.log_offsets(partitions, max(timestamp, 0))
    empty = sorted(tp for tp in partitions if found.get(tp, -1) < 0)
    for t, p in empty:
        notice(f"\nWarn: Partition {p} from topic {t} is empty. Falling back to latest known "
               "offset.")  # fmt: skip
    found.update(service.latest(empty))
    return {tp: found[tp] for tp in partitions}


def check_exist(service: GroupService, partitions) -> None:
    missing = service.missing_partitions(partitions)
    if missing:
        names = ",".join(f"{t}-{p}" for t, p in missing)
        raise common.ExecutionError(f'The partitions "{names}" do not exist')


def plan_reset(service: GroupService, group_id: str, args, context: dict) -> dict:
    committed = service.committed(group_id)
    if args.all_topics:
        partitions = sorted(committed)
    elif args.topic:
        partitions = parse_topic_partitions(service, args.topic)
    else:
        partitions = []  # --from-file without a scope
    check_exist(service, partitions)
    if args.to_earliest:
        return service.earliest(partitions)
    if args.to_latest:
        return service.latest(partitions)
    if args.to_datetime is not None:
        timestamp = parse_datetime(args.to_datetime)
        return offsets_by_timestamp(service, partitions, timestamp, context["notice"])
    if args.by_duration is not None:
        timestamp = (time.time_ns() - parse_duration(args.by_duration)) // 1_000_000
        return offsets_by_timestamp(service, partitions, timestamp, context["notice"])
    if args.from_file is not None:
        # Read once, when the first inactive group needs it (Kafka reads it per group).
        if "plan" not in context:
            context["plan"] = read_reset_plan(args.from_file, args.group)
        requested = context["plan"].get(group_id)
        if requested is None:
            error(f"No reset plan for group {group_id} found.")
            return {}
        check_exist(service, sorted(requested))
        earliest, latest = service.earliest(requested), service.latest(requested)
        return clamp(requested, earliest, latest)
    earliest, latest = service.earliest(partitions), service.latest(partitions)
    if args.to_offset is not None:
        return clamp(dict.fromkeys(partitions, args.to_offset), earliest, latest)
    if args.shift_by is not None:
        missing = [tp for tp in partitions if tp not in committed]
        if missing:
            t, p = missing[0]
            raise UsageError(
                f"Cannot shift offset for partition {t}-{p} since there is no current "
                "committed offset"
            )
        return clamp({tp: committed[tp] + args.shift_by for tp in partitions}, earliest, latest)
    # --to-current: the committed offset, or the log end where there is none.
    return {tp: committed[tp] if tp in committed else latest[tp] for tp in partitions}


def reset_offsets(service: GroupService, args) -> None:
    if not args.execute and not args.dry_run:
        common.warn(
            "WARN: No action will be performed as the --execute option is missing. In a future "
            "major release, the default behavior of this command will be to prompt the user "
            "before executing the reset rather than doing a dry run. You should add the "
            "--dry-run option explicitly if you are scripting this command and want to keep "
            "the current default behavior without prompting."
        )
    # Kafka prints its "partition is empty" notices on stdout; with --export they go to stderr,
    # so that the CSV on stdout stays one that --from-file reads back.
    out = sys.stderr if args.export else sys.stdout
    context: dict = {"notice": lambda line: print(line, file=out)}
    plans: dict[str, dict[tuple[str, int], int]] = {}
    for group_id in group_ids(service, args):
        state = service.describe(group_id).state
        if state not in ("Empty", "Dead"):
            error(f"Assignments can only be reset if the group '{group_id}' is inactive, but the "
                  f"current state is {state}.")  # fmt: skip
            plans[group_id] = {}
            continue
        plan = plan_reset(service, group_id, args, context)
        if args.execute and plan:
            service.alter(group_id, plan)
        plans[group_id] = plan
    if args.export:
        export_csv(plans, single=len(args.group or []) == 1)
        return
    # As Kafka: the header whenever a group was considered, even if none has a row.
    rows = [[g, t, p, o] for g, plan in plans.items() for (t, p), o in sorted(plan.items())]
    if plans:
        table(["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], rows, [30, 30, 10, 15])


def export_csv(plans: dict[str, dict[tuple[str, int], int]], single: bool) -> None:
    """Kafka's exportOffsetsToCsv: `topic,partition,offset` lines when exactly one --group was
    given, else `group,topic,partition,offset` (CSV-quoted where needed); then the empty line
    of Kafka's println."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for group_id, plan in plans.items():
        for (t, p), offset in sorted(plan.items()):
            writer.writerow([t, p, offset] if single else [group_id, t, p, offset])
    print(buf.getvalue())


def delete_offsets(service: GroupService, args) -> None:
    from kafka.errors import KafkaError as KafkaClientError

    group_id = args.group[0]
    partitions = parse_topic_partitions(service, args.topic)
    try:
        results = service.delete_offsets(group_id, partitions)
    except KafkaClientError as e:
        code = getattr(e, "errno", -1)
        messages = {
            24: f"'{group_id}' is not valid.",
            69: f"'{group_id}' does not exist.",
            30: f"Access to '{group_id}' is not authorized.",
            68: f"Deleting offsets of a consumer group '{group_id}' is forbidden if the group "
            "is not empty.",
        }
        error(messages.get(code, f"Encounter some unknown error: {type(e).__name__}"))
        return
    if all(code == 0 for code in results.values()):
        print(f"Request succeed for deleting offsets with topic {', '.join(args.topic)} "
              f"group {group_id}")  # fmt: skip
    else:
        error("Encounter some partition level error, see the follow-up details:")
    rows = []
    for (t, p), code in sorted(results.items()):
        status = "Successful" if code == 0 else f"Error: :{common.broker_error_message(code, None)}"
        rows.append([t, p, status])
    table(["TOPIC", "PARTITION", "STATUS"], rows, [30, 15, 15])


class GroupTool:
    """kafka-consumer-groups and kafka-share-groups: parse, check, then one action on a service
    over an admin client; `kind` names the groups in Kafka's failure line."""

    def __init__(self, kind: str, description: str, build_parser, check_args, service, actions):
        self.kind, self.description = kind, description
        self.build_parser, self.check_args = build_parser, check_args
        self.service, self.actions = service, actions

    def run(self, argv: list[str]) -> int:
        parser = self.build_parser()
        if not argv:
            print(self.description, file=sys.stderr)
            parser.print_help(sys.stderr)
            return 1
        args = parser.parse_args(argv)
        self.check_args(args)
        common.quiet_client_logging()
        props = common.client_properties(args.command_config)
        props.setdefault("request.timeout.ms", str(max(args.timeout, 1000)))
        admin = common.admin_client(common.bootstrap_servers(args.bootstrap_server), props)
        try:
            action = next(a for a in self.actions if getattr(args, a))
            self.actions[action](self.service(admin), args)
        finally:
            admin.close()
        return 0

    def report(self, e: CommandError) -> None:
        """Kafka prints failures of the command as `Error: Executing consumer group command
        failed due to <message>` on stdout; a failure already reported has an empty message."""
        if not e.message:
            return
        if isinstance(e, common.ExecutionError):
            error(f"Executing {self.kind} command failed due to {e.message}")
        else:
            print(e.message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    actions = {"list": list_groups, "describe": describe, "delete": delete,
               "reset_offsets": reset_offsets, "delete_offsets": delete_offsets}  # fmt: skip
    tool = GroupTool("consumer group", DESCRIPTION, build_parser, check_args, GroupService,
                     actions)  # fmt: skip
    return common.run_tool(tool.run, argv, tool.report)


if __name__ == "__main__":
    sys.exit(main())

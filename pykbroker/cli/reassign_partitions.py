"""kafka-reassign-partitions: move partitions between brokers.

Kafka's ReassignPartitionsCommand, its actions, JSON formats and output:
  --generate --topics-to-move-json-file F --broker-list 1,2,3   propose an assignment
      F: {"version":1,"topics":[{"topic":"foo"}]}
  --execute --reassignment-json-file F [--throttle B/s]          start the moves
      F: {"version":1,"partitions":[{"topic":"foo","partition":0,"replicas":[1,2],
          "log_dirs":["any","any"]}]}
  --verify / --cancel --reassignment-json-file F                  progress / back out
  --list                                                          moves in progress
A throttle is written as Kafka writes it (leader/follower.replication.throttled.rate on the
brokers, *.replication.throttled.replicas on the topics) and cleared by --verify once done.
Log dirs other than "any" move those replicas between their broker's log dirs
(AlterReplicaLogDirs), and --verify reports those moves too (DescribeLogDirs).
"""

from __future__ import annotations

import json
import random
import sys
import time

from . import common
from .common import CommandError, ToolParser, UsageError

ACTIONS = ("generate", "execute", "verify", "cancel", "list")
BROKER_THROTTLES = ("leader.replication.throttled.rate", "follower.replication.throttled.rate",
                    "replica.alter.log.dirs.io.max.bytes.per.second")  # fmt: skip
TOPIC_THROTTLES = ("leader.replication.throttled.replicas",
                   "follower.replication.throttled.replicas")  # fmt: skip
EXISTING = ("Cannot execute because there is an existing partition assignment.  Use --additional "
            "to override this and create a new partition assignment in addition to the existing "
            "one. The --additional flag can also be used to change the throttle by resubmitting "
            "the current reassignment.")  # fmt: skip


def build_parser() -> ToolParser:
    p = ToolParser("kafka-reassign-partitions",
                   "This tool helps to move topic partitions between replicas.")  # fmt: skip
    common.add_bootstrap_server(p)
    for action, text in [
        ("generate", "Generate a candidate partition reassignment configuration. Note that this "
         "only generates a candidate assignment, it does not execute it."),
        ("execute", "Kick off the reassignment as specified by the --reassignment-json-file option."),
        ("verify", "Verify if the reassignment completed as specified by the "
         "--reassignment-json-file option. If there is a throttle engaged for the replicas "
         "specified, and the rebalance has completed, the throttle will be removed"),
        ("cancel", "Cancel an active reassignment."),
        ("list", "List all active partition reassignments."),
    ]:  # fmt: skip
        p.add_argument(f"--{action}", action="store_true", help=text)
    p.add_argument("--reassignment-json-file", metavar="<String: manual assignment json file path>",
                   help="The JSON file with the partition reassignment configuration.")  # fmt: skip
    p.add_argument("--topics-to-move-json-file", metavar="<String: topics to reassign json file path>",
                   help="Generate a reassignment configuration to move the partitions of the "
                   "specified topics to the list of brokers specified by the --broker-list "
                   'option. The format to use is - {"topics": [{"topic": "foo"},{"topic": '
                   '"foo1"}], "version":1}')  # fmt: skip
    p.add_argument("--broker-list", metavar="<String: brokerlist>",
                   help='The list of brokers to which the partitions need to be reassigned in '
                   'the form "0,1,2". This is required if --topics-to-move-json-file is used '
                   "to generate reassignment configuration")  # fmt: skip
    p.add_argument("--disable-rack-aware", action="store_true",
                   help="Disable rack aware replica assignment")  # fmt: skip
    p.add_argument("--throttle", metavar="<Long: throttle>", type=int, default=-1,
                   help="The movement of partitions between brokers will be throttled to this "
                   "value (bytes/sec). (default: -1)")  # fmt: skip
    p.add_argument("--replica-alter-log-dirs-throttle", metavar="<Long: replicaAlterLogDirsThrottle>",
                   type=int, default=-1, help="The movement of replicas between log directories "
                   "on the same broker will be throttled to this value (bytes/sec). (default: -1)")  # fmt: skip
    p.add_argument("--timeout", metavar="<Long: timeout>", type=int, default=10000,
                   help="The maximum time in ms to wait for log directory replica assignment to "
                   "begin. (default: 10000)")  # fmt: skip
    p.add_argument("--additional", action="store_true",
                   help="Execute this reassignment in addition to any other ongoing ones.")  # fmt: skip
    p.add_argument("--preserve-throttles", action="store_true",
                   help="Do not modify broker or topic throttles.")  # fmt: skip
    return p


PERMITTED = {
    "generate": {"topics_to_move_json_file", "broker_list", "disable_rack_aware"},
    "execute": {
        "reassignment_json_file",
        "additional",
        "throttle",
        "replica_alter_log_dirs_throttle",
        "timeout",
    },  # fmt: skip
    "verify": {"reassignment_json_file", "preserve_throttles"},
    "cancel": {"reassignment_json_file", "preserve_throttles", "timeout"},
    "list": set(),
}
REQUIRED = {"generate": ("topics_to_move_json_file", "broker_list"),
            "execute": ("reassignment_json_file",), "verify": ("reassignment_json_file",),
            "cancel": ("reassignment_json_file",), "list": ()}  # fmt: skip
DEFAULTS = {"throttle": -1, "replica_alter_log_dirs_throttle": -1, "timeout": 10000}


def check_args(args) -> str:
    chosen = [a for a in ACTIONS if getattr(args, a)]
    if len(chosen) != 1:
        raise UsageError("Command must include exactly one action: --generate, --execute, "
                         "--verify, --cancel, --list")  # fmt: skip
    action = chosen[0]
    if not args.bootstrap_server:
        raise UsageError("Please specify either --bootstrap-server or --bootstrap-controller")
    missing = [k for k in REQUIRED[action] if getattr(args, k) is None]
    if missing:
        raise UsageError(f'Missing required argument "[{missing[0].replace("_", "-")}]"')
    for key in ("reassignment_json_file", "topics_to_move_json_file", "broker_list",
                "disable_rack_aware", "additional", "preserve_throttles", "throttle",
                "replica_alter_log_dirs_throttle", "timeout"):  # fmt: skip
        value = getattr(args, key)
        if value not in (None, False, DEFAULTS.get(key)) and key not in PERMITTED[action]:
            raise UsageError(f"Option \"[{key.replace('_', '-')}]\" can't be used with action "
                             f"\"[{action}]\"")  # fmt: skip
    return action


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise CommandError(f"{path} ({e.strerror})") from None
    except ValueError as e:
        raise CommandError(f"Error: {e}") from None


def parse_reassignment(path: str) -> tuple[dict[tuple[str, int], list[int]], list, dict]:
    """Kafka's reassignment JSON (version 1): partition -> target replicas, the partitions in
    file order, and (topic, partition, broker) -> log dir for the replicas not "any"."""
    data = read_json(path)
    version = data.get("version", 1) if isinstance(data, dict) else None
    if version != 1:
        raise CommandError(f"Not supported version field value {version}")
    out: dict[tuple[str, int], list[int]] = {}
    seen: list[tuple[str, int]] = []
    dirs: dict[tuple[str, int, int], str] = {}  # (topic, partition, broker) -> log dir
    for p in data.get("partitions", []):
        tp = (p["topic"], int(p["partition"]))
        replicas = [int(r) for r in p["replicas"]]
        log_dirs = p.get("log_dirs", ["any"] * len(replicas))
        if len(log_dirs) != len(replicas):
            raise CommandError(f"Size of replicas list {replicas} is different from size of log "
                               f"dirs list {log_dirs} for partition {tp[0]}-{tp[1]}")  # fmt: skip
        for broker, d in zip(replicas, log_dirs, strict=True):
            if d != "any":
                dirs[(tp[0], tp[1], broker)] = d
        seen.append(tp)
        out[tp] = replicas
    return out, seen, dirs


def format_assignment(parts: dict[tuple[str, int], list[int]]) -> str:
    """Kafka's formatAsReassignmentJson: partitions sorted by topic then partition."""
    entries = [
        {"topic": t, "partition": i, "replicas": r, "log_dirs": ["any"] * len(r)}
        for (t, i), r in sorted(parts.items())
    ]
    return json.dumps({"version": 1, "partitions": entries}, separators=(",", ":"))


def names(parts) -> str:
    return ",".join(f"{t}-{i}" for t, i in sorted(parts))


# --- cluster access ---------------------------------------------------------------------------


def describe_cluster(admin) -> dict[int, str | None]:
    """Broker id -> rack."""
    from kafka.protocol.admin import DescribeClusterRequest

    r = common.send(admin, DescribeClusterRequest(include_cluster_authorized_operations=False))
    common.check(r.error_code, r.error_message)
    return {b.broker_id: b.rack for b in r.brokers}


def current_assignment(admin, topics) -> dict[tuple[str, int], list[int]]:
    out = {}
    for t in admin.describe_topics(sorted(set(topics))):
        if t["error_code"] == 3:
            raise CommandError(f"Error: org.apache.kafka.common.errors.UnknownTopicOrPartitionException: "
                               f"Topic {t['topic'] if 'topic' in t else t['name']} not found.")  # fmt: skip
        common.check(t["error_code"])
        for p in t["partitions"]:
            out[(t["name"], p["partition_index"])] = list(p["replica_nodes"])
    return out


def list_reassignments(admin, partitions=None) -> dict[tuple[str, int], tuple]:
    from kafka.protocol.admin import ListPartitionReassignmentsRequest as L

    topics = None
    if partitions is not None:
        by_topic: dict[str, list[int]] = {}
        for t, i in partitions:
            by_topic.setdefault(t, []).append(i)
        topics = [L.ListPartitionReassignmentsTopics(name=t, partition_indexes=ps)
                  for t, ps in by_topic.items()]  # fmt: skip
    from .leader_election import to_controller

    r = to_controller(admin, L(timeout_ms=30000, topics=topics), lambda r: [r.error_code])
    common.check(r.error_code, r.error_message)
    return {
        (t.name, p.partition_index): (list(p.replicas), list(p.adding_replicas),
                                      list(p.removing_replicas))
        for t in r.topics for p in t.partitions
    }  # fmt: skip


def alter(admin, changes: dict[tuple[str, int], list[int] | None]) -> dict:
    """AlterPartitionReassignments at the controller: errors by partition."""
    from kafka.protocol.admin import AlterPartitionReassignmentsRequest as A

    from .leader_election import to_controller

    by_topic: dict[str, list] = {}
    for (t, i), replicas in sorted(changes.items()):
        by_topic.setdefault(t, []).append(
            A.ReassignableTopic.ReassignablePartition(partition_index=i, replicas=replicas)
        )
    request = A(timeout_ms=30000, topics=[A.ReassignableTopic(name=t, partitions=ps)
                                          for t, ps in by_topic.items()])  # fmt: skip
    r = to_controller(admin, request, lambda r: [r.error_code])
    common.check(r.error_code, r.error_message)
    return {
        (t.name, p.partition_index): common.BrokerError(p.error_code, p.error_message)
        for t in r.responses for p in t.partitions if p.error_code
    }  # fmt: skip


def incremental_alter(admin, resources) -> None:
    from kafka.protocol.admin import IncrementalAlterConfigsRequest

    from .configs import target_node

    for kind, name, ops in resources:
        node = target_node("brokers", name) if kind == 4 else None
        request = IncrementalAlterConfigsRequest(resources=[(kind, name, ops)], validate_only=False)
        for response in common.send(admin, request, node_id=node).responses:
            common.check(response.error_code, response.error_message)


# --- actions ----------------------------------------------------------------------------------


def generate(admin, args) -> None:
    from pykbroker.cluster.placement import RackInfoError, assign

    try:
        brokers = [int(b) for b in args.broker_list.split(",")]
    except ValueError:
        raise CommandError(f"Error: invalid broker list {args.broker_list}") from None
    dups = sorted({b for b in brokers if brokers.count(b) > 1})
    if dups:
        raise CommandError(f"Error: Broker list contains duplicate entries: {dups}")
    data = read_json(args.topics_to_move_json_file)
    version = data.get("version", 1)
    if version != 1:
        raise CommandError(f"Error: Not supported version field value {version}")
    topics = [t["topic"] for t in data.get("topics", [])]
    dups = sorted({t for t in topics if topics.count(t) > 1})
    if dups:
        raise CommandError(f"Error: List of topics to reassign contains duplicate entries: {dups}")
    current = current_assignment(admin, topics)
    cluster = describe_cluster(admin)
    chosen = {b: (None if args.disable_rack_aware else cluster[b]) for b in brokers if b in cluster}
    proposed: dict[tuple[str, int], list[int]] = {}
    for topic in dict.fromkeys(topics):
        parts = sorted(i for t, i in current if t == topic)
        rf = len(current[(topic, parts[0])])
        n = max(len(chosen), 1)
        try:  # a random start and shift, as Kafka's --generate
            lists = assign(len(parts), rf, chosen, random.randrange(n), random.randrange(n),
                           rack_aware=not args.disable_rack_aware)  # fmt: skip
        except RackInfoError:
            raise CommandError(
                "Error: Not all brokers have rack information. Add "
                "--disable-rack-aware in command line to make replica "
                "assignment without rack information."
            ) from None
        except Exception as e:  # noqa: BLE001 - KafkaError from the placement checks
            raise CommandError(f"Error: {e}") from None
        proposed.update({(topic, i): r for i, r in zip(parts, lists, strict=True)})
    print("Current partition replica assignment")
    print(format_assignment(current))
    print()
    print("Proposed partition reassignment configuration")
    print(format_assignment(proposed))


def execute(admin, args) -> None:
    parts, order, dirs = parse_reassignment(args.reassignment_json_file)
    if not parts:
        raise CommandError("Error: Partition reassignment list cannot be empty")
    if any(not r for r in parts.values()):
        raise CommandError("Error: Partition replica list cannot be empty")
    dups = sorted({tp for tp in order if order.count(tp) > 1})
    if dups:
        raise CommandError("Error: Partition reassignment contains duplicate topic partitions: "
                           + ",".join(f"{t}-{i}" for t, i in dups))  # fmt: skip
    bad = [f"{t}-{i} contains multiple entries for "
           + ",".join(str(b) for b in sorted({b for b in r if r.count(b) > 1}))
           for (t, i), r in sorted(parts.items()) if len(set(r)) != len(r)]  # fmt: skip
    if bad:
        raise CommandError("Error: Partition replica lists may not contain duplicate entries: "
                           + ". ".join(bad))  # fmt: skip
    ongoing = list_reassignments(admin)
    if ongoing and not args.additional:
        raise CommandError(EXISTING)
    cluster = describe_cluster(admin)
    for r in parts.values():
        for b in r:
            if b not in cluster:
                raise CommandError(f"Error: Unknown broker id {b}")
    current = current_assignment(admin, [t for t, _ in parts])
    missing = [tp for tp in parts if tp not in current]
    if missing:
        raise CommandError("Error: org.apache.kafka.common.errors.UnknownTopicOrPartitionException: "
                           "Unable to find partition: " + ", ".join(f"{t}-{i}" for t, i in missing))  # fmt: skip
    print("Current partition replica assignment")
    print()
    print(format_assignment({tp: current[tp] for tp in parts}))
    print()
    print("Save this to use as the --reassignment-json-file option during rollback")
    if args.throttle >= 0 or (dirs and args.replica_alter_log_dirs_throttle >= 0):
        print("Warning: You must run --verify periodically, until the reassignment completes, "
              "to ensure the throttle is removed.")  # fmt: skip
    if args.throttle >= 0:
        set_throttles(admin, parts, current, ongoing, args.throttle)
    if dirs and args.replica_alter_log_dirs_throttle >= 0:  # the brokers with log-dir moves
        rate = str(args.replica_alter_log_dirs_throttle)
        incremental_alter(admin, [(4, str(b), [(BROKER_THROTTLES[2], 0, rate)])
                                  for b in sorted({b for _, _, b in dirs})])  # fmt: skip
        print(f"The replica-alter-dir throttle limit was set to {rate} B/s")
    errors = alter(admin, parts)
    if errors:
        raise CommandError("Error reassigning partition(s):\n" + "\n".join(
            f"{t}-{i}: {e.message}" for (t, i), e in sorted(errors.items())))  # fmt: skip
    print(f"Successfully started partition reassignment{'' if len(parts) == 1 else 's'} for "
          f"{names(parts)}")  # fmt: skip
    if dirs:
        execute_moves(admin, dirs, args.timeout)


def set_throttles(admin, parts, current, ongoing, rate: int) -> None:
    """Kafka's throttle: sources (leader side) and destinations (follower side) per topic,
    and the rate on every broker involved."""
    moves: dict[str, dict[int, tuple[set[int], set[int]]]] = {}
    for (t, i), (replicas, adding, _removing) in ongoing.items():
        moves.setdefault(t, {})[i] = (set(replicas) - set(adding), set(adding))
    for (t, i), target in parts.items():
        topic_moves = moves.setdefault(t, {})
        sources = topic_moves[i][0] if i in topic_moves else set(current[(t, i)])
        topic_moves[i] = (sources, set(target) - sources)
    resources = []
    brokers: set[int] = set()
    for t, pm in moves.items():
        leader = sorted({f"{i}:{s}" for i, (src, _) in pm.items() for s in src})
        follower = sorted({f"{i}:{d}" for i, (src, dst) in pm.items() for d in dst if d not in src})
        resources.append((2, t, [(TOPIC_THROTTLES[0], 0, ",".join(leader)),
                                 (TOPIC_THROTTLES[1], 0, ",".join(follower))]))  # fmt: skip
        for src, dst in pm.values():
            brokers |= src | dst
    for b in sorted(brokers):
        resources.append((4, str(b), [(BROKER_THROTTLES[0], 0, str(rate)),
                                      (BROKER_THROTTLES[1], 0, str(rate))]))  # fmt: skip
    incremental_alter(admin, resources)
    print(f"The inter-broker throttle limit was set to {rate} B/s")


def clear_throttles(admin, parts) -> None:
    brokers = set(describe_cluster(admin))
    for r in parts.values():
        brokers |= set(r)
    topics = sorted({t for t, _ in parts})
    print(f"Clearing broker-level throttles on broker{'' if len(brokers) == 1 else 's'} "
          + ",".join(str(b) for b in sorted(brokers)))  # fmt: skip
    incremental_alter(admin, [(4, str(b), [(k, 1, None) for k in BROKER_THROTTLES])
                              for b in sorted(brokers)])  # fmt: skip
    print(f"Clearing topic-level throttles on topic{'' if len(topics) == 1 else 's'} "
          + ",".join(topics))  # fmt: skip
    incremental_alter(admin, [(2, t, [(k, 1, None) for k in TOPIC_THROTTLES]) for t in topics])


def verify(admin, args) -> int:
    parts, _, dirs = parse_reassignment(args.reassignment_json_file)
    ongoing = list_reassignments(admin)
    current = current_assignment(admin, [t for t, _ in parts])
    lines = ["Status of partition reassignment:"]
    for tp, target in sorted(parts.items()):
        name = f"{tp[0]}-{tp[1]}"
        if tp in ongoing:
            lines.append(f"Reassignment of partition {name} is still in progress.")
        elif current.get(tp, []) == target:
            lines.append(f"Reassignment of partition {name} is completed.")
        else:
            lines.append(f"There is no active reassignment of partition {name}, but replica set "
                         f"is {','.join(map(str, current.get(tp, [])))} rather than "
                         f"{','.join(map(str, target))}.")  # fmt: skip
    print("\n".join(lines))
    states = move_states(admin, dirs)
    print("\n".join(text for _state, text in states.values()))
    moving = any(state != "completed" for state, _ in states.values())
    if not ongoing and not moving and not args.preserve_throttles:
        clear_throttles(admin, parts)
    return 0


# --- moves between log dirs (AlterReplicaLogDirs, DescribeLogDirs) -------------------------------


def execute_moves(admin, dirs: dict[tuple[str, int, int], str], timeout_ms: int) -> None:
    """Ask each broker to move its replicas; again every 100 ms while a broker doesn't have
    its replica yet (it is being added), until `timeout_ms` (Kafka's executeMoves)."""
    from kafka.protocol.admin import AlterReplicaLogDirsRequest as A

    pending = dict(dirs)
    deadline = time.monotonic() + timeout_ms / 1000
    while pending:
        done = []
        by_broker: dict[int, dict[str, dict[str, list[int]]]] = {}
        for (t, i, b), d in pending.items():
            by_broker.setdefault(b, {}).setdefault(d, {}).setdefault(t, []).append(i)
        for broker, paths in sorted(by_broker.items()):
            request = A(dirs=[A.AlterReplicaLogDir(path=d, topics=[
                A.AlterReplicaLogDir.AlterReplicaLogDirTopic(name=t, partitions=ps)
                for t, ps in topics.items()]) for d, topics in paths.items()])  # fmt: skip
            try:
                r = common.send(admin, request, node_id=broker)
            except Exception:  # noqa: BLE001 - that broker is away: try again
                continue
            for t in r.results:
                for p in t.partitions:
                    if p.error_code == 0:
                        done.append((t.topic_name, p.partition_index, broker))
        for key in sorted(done, key=lambda k: (k[2], k[0], k[1])):
            print(f"Successfully started moving log directory to {pending[key]} for replica "
                  f"{key[0]}-{key[1]} with broker {key[2]} ")  # fmt: skip
            del pending[key]
        if pending and time.monotonic() >= deadline:
            left = ",".join(
                f"{b}-{t}-{i}" for t, i, b in sorted(pending, key=lambda k: (k[2], k[0], k[1]))
            )
            raise CommandError(f"Timed out before log directory move{'' if len(pending) == 1 else 's'} "
                               f"could be started for: {left}")  # fmt: skip
        if pending:
            time.sleep(0.1)


def replica_dirs(admin, brokers) -> dict[tuple[str, int, int], tuple[str | None, str | None]]:
    """(topic, partition, broker) -> (current log dir, future log dir), from DescribeLogDirs."""
    from kafka.protocol.admin import DescribeLogDirsRequest

    out: dict[tuple[str, int, int], list] = {}
    for b in sorted(brokers):
        try:
            r = common.send(admin, DescribeLogDirsRequest(topics=None), node_id=b)
        except Exception:  # noqa: BLE001 - an unreachable broker: its replicas are missing
            continue
        for res in r.results:
            if res.error_code:
                continue
            for t in res.topics:
                for p in t.partitions:
                    entry = out.setdefault((t.name, p.partition_index, b), [None, None])
                    entry[1 if p.is_future_key else 0] = res.log_dir
    return {k: (v[0], v[1]) for k, v in out.items()}


def move_states(admin, dirs: dict[tuple[str, int, int], str]) -> dict:
    """Kafka's log-dir move states and their text, by replica (sorted by broker, topic, partition)."""
    if not dirs:
        return {}
    found = replica_dirs(admin, {b for _, _, b in dirs})
    out = {}
    for key in sorted(dirs, key=lambda k: (k[2], k[0], k[1])):
        t, i, b = key
        target = dirs[key]
        current, future = found.get(key, (None, None))
        if key not in found:
            out[key] = ("missing", f"Partition {t}-{i} cannot be found in any live log directory "
                                   f"on broker {b}.")  # fmt: skip
        elif current is None:
            out[key] = ("missing", f"Partition {t}-{i} is not found in any live log dir on "
                                   f"broker {b}. There is likely an offline log directory on "
                                   "the broker.")  # fmt: skip
        elif future is None:
            if current == target:
                out[key] = ("completed", f"Reassignment of replica {b}-{t}-{i} completed "
                                         "successfully.")  # fmt: skip
            else:
                out[key] = ("cancelled", f"Partition {t}-{i} on broker {b} is not being moved "
                                         f"from log dir {current} to {target}.")  # fmt: skip
        elif future == target:
            out[key] = ("active", f"Reassignment of replica {b}-{t}-{i} is still in progress.")
        else:
            out[key] = ("active", f"Partition {t}-{i} on broker {b} is being moved to log dir "
                                  f"{future} instead of {target}.")  # fmt: skip
    return out


def cancel(admin, args) -> None:
    parts, _, dirs = parse_reassignment(args.reassignment_json_file)
    active = [tp for tp, (_r, adding, removing) in list_reassignments(admin, list(parts)).items()
              if adding or removing]  # fmt: skip
    if active:
        errors = alter(admin, dict.fromkeys(active))
        if errors:
            raise CommandError(
                f"Error cancelling partition reassignment{'' if len(errors) == 1 else 's'} for:\n"
                + "\n".join(f"{t}-{i}: {e.message}" for (t, i), e in sorted(errors.items())))  # fmt: skip
        print(f"Successfully cancelled partition reassignment{'' if len(active) == 1 else 's'} "
              f"for: {names(active)}")  # fmt: skip
    else:
        print("None of the specified partition reassignments are active.")
    found = replica_dirs(admin, {b for _, _, b in dirs}) if dirs else {}
    back = {key: found[key][0] for key, (state, _) in move_states(admin, dirs).items()
            if state == "active"}  # fmt: skip
    if back:  # move them back to where they are (Kafka's cancel of a log-dir move)
        execute_moves(admin, back, args.timeout)
    else:
        sys.stdout.write("None of the specified partition moves are active.")
    if not args.preserve_throttles:
        clear_throttles(admin, parts)


def list_action(admin) -> None:
    ongoing = list_reassignments(admin)
    if not ongoing:
        print("No partition reassignments found.")
        return
    print("Current partition reassignments:")
    for (t, i), (replicas, adding, removing) in sorted(ongoing.items()):
        line = f"{t}-{i}: replicas: {','.join(map(str, replicas))}."
        if adding:
            line += f" adding: {','.join(map(str, adding))}."
        if removing:
            line += f" removing: {','.join(map(str, removing))}."
        print(line)


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    action = check_args(args)
    common.quiet_client_logging()
    admin = common.admin_client(common.bootstrap_servers(args.bootstrap_server),
                                {"client.id": "reassign-partitions-tool",
                                 **common.client_properties(args.command_config)})  # fmt: skip
    try:
        if action == "generate":
            generate(admin, args)
        elif action == "execute":
            execute(admin, args)
        elif action == "verify":
            verify(admin, args)
        elif action == "cancel":
            cancel(admin, args)
        else:
            list_action(admin)
    finally:
        admin.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    # Kafka's tool prints its failures on stdout ("Error: ..." for unexpected ones).
    return common.run_tool(run, argv, lambda e: print(e.message))


if __name__ == "__main__":
    sys.exit(main())

"""kafka-leader-election: elect the preferred or, unclean, any live replica as leader.

Kafka's LeaderElectionCommand: one of --topic/--partition, --path-to-json-file
({"partitions": [{"topic": "foo", "partition": 1}]}) or --all-topic-partitions; the request goes
to the controller (ElectLeaders); the output lists the partitions elected, those whose valid
leader was already in place, and one line per failure (exit 1).
"""

from __future__ import annotations

import json
import sys

from . import common
from .common import CommandError, ToolParser, UsageError

TYPES = {"PREFERRED": 0, "UNCLEAN": 1}
NOT_NEEDED = 84  # ELECTION_NOT_NEEDED


def build_parser() -> ToolParser:
    p = ToolParser("kafka-leader-election", "This tool attempts to elect a new leader for a set "
                   "of topic partitions. The type of elections supported are preferred replicas "
                   "and unclean replicas.")  # fmt: skip
    p.add_argument("--bootstrap-server", metavar="<String: host:port>",
                   help="A hostname and port for the broker to connect to, in the form host:port. "
                   "Multiple comma separated URLs can be given. REQUIRED.")  # fmt: skip
    p.add_argument("--command-config", "--admin.config", dest="command_config",
                   metavar="<String: Config file>",
                   help="Config properties file to pass to the admin client.")  # fmt: skip
    p.add_argument("--path-to-json-file", metavar="<String: Path to JSON file>",
                   help="The JSON file with the list of partition for which leader elections "
                   "should be performed. Not allowed if --all-topic-partitions or --topic flags "
                   "are specified.")  # fmt: skip
    p.add_argument("--topic", metavar="<String: topic name>",
                   help="Name of topic for which to perform an election. Not allowed if "
                   "--path-to-json-file or --all-topic-partitions is specified.")  # fmt: skip
    p.add_argument("--partition", metavar="<Integer: partition id>", type=int,
                   help="Partition id for which to perform an election. REQUIRED if --topic is "
                   "specified.")  # fmt: skip
    p.add_argument("--all-topic-partitions", action="store_true",
                   help="Perform election on all of the eligible topic partitions based on the "
                   "type of election (see the --election-type flag). Not allowed if --topic or "
                   "--path-to-json-file is specified.")  # fmt: skip
    p.add_argument("--election-type", metavar="<[PREFERRED,UNCLEAN]: election type>",
                   help='Type of election to attempt. Possible values are "preferred" for '
                   'preferred leader election or "unclean" for unclean leader election. '
                   "REQUIRED.")  # fmt: skip
    return p


def check_args(args) -> list[tuple[str, int]] | None:
    if not args.bootstrap_server:
        raise UsageError("Missing required option(s) [bootstrap-server]")
    if not args.election_type:
        raise UsageError("Missing required option(s) [election-type]")
    if args.election_type.upper() not in TYPES:
        raise UsageError(f"Invalid election type: {args.election_type}")
    sources = [
        args.all_topic_partitions,
        args.topic is not None,
        args.path_to_json_file is not None,
    ]
    if sum(sources) != 1:
        raise UsageError("One and only one of the following options is required: "
                         "all-topic-partitions, topic, path-to-json-file")  # fmt: skip
    if args.topic is not None:
        if args.partition is None:
            raise UsageError("Missing required option(s) [partition]")
        return [(args.topic, args.partition)]
    if args.partition is not None:
        raise UsageError("Option partition is only allowed if topic is used")
    if args.path_to_json_file:
        return read_partitions(args.path_to_json_file)
    return None


def read_partitions(path: str) -> list[tuple[str, int]]:
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise CommandError(f"{path} ({e.strerror})") from None
    except ValueError:
        raise CommandError("Replica election data is empty") from None
    if not isinstance(data, dict) or "partitions" not in data:
        raise CommandError('Replica election data is missing "partitions" field')
    out = [(p["topic"], int(p["partition"])) for p in data["partitions"]]
    dups = sorted({f"{t}-{i}" for t, i in out if out.count((t, i)) > 1})
    if dups:
        raise CommandError(f"Replica election data contains duplicate partitions: {','.join(dups)}")
    return out


def elect(admin, election_type: int, partitions: list[tuple[str, int]] | None, timeout_ms: int):
    """Send ElectLeaders to the controller (again to a new one if it moved)."""
    from kafka.protocol.admin import ElectLeadersRequest as E

    topics: dict[str, list[int]] = {}
    for t, i in partitions or []:
        topics.setdefault(t, []).append(i)
    request = E(
        election_type=election_type,
        topic_partitions=None if partitions is None
        else [E.TopicPartitions(topic=t, partitions=ps) for t, ps in topics.items()],
        timeout_ms=timeout_ms,
    )  # fmt: skip
    return to_controller(admin, request, lambda r: [
        p.error_code for t in r.replica_election_results for p in t.partition_result])  # fmt: skip


def to_controller(admin, request, codes):
    """Send to the controller; after NOT_CONTROLLER (41), find it again and retry once."""
    for attempt in range(2):
        controller = admin._manager.run(admin._refresh_controller_id)
        response = common.send(admin, request, node_id=controller)
        if 41 not in codes(response) or attempt:
            return response
    return response


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    partitions = check_args(args)
    type_name = args.election_type.upper()
    common.quiet_client_logging()
    admin = common.admin_client(common.bootstrap_servers(args.bootstrap_server),
                                common.client_properties(args.command_config))  # fmt: skip
    try:
        response = elect(admin, TYPES[type_name], partitions, 30000)
    finally:
        admin.close()
    common.check(getattr(response, "error_code", 0))
    succeeded, noop, failed = [], [], []
    for t in response.replica_election_results:
        for p in t.partition_result:
            name = f"{t.topic}-{p.partition_id}"
            if p.error_code == 0:
                succeeded.append(name)
            elif p.error_code == NOT_NEEDED:
                noop.append(name)
            else:
                failed.append((name, common.BrokerError(p.error_code, p.error_message)))
    if succeeded:
        print(f"Successfully completed leader election ({type_name}) for partitions "
              + ", ".join(succeeded))  # fmt: skip
    if noop:
        print("Valid replica already elected for partitions " + ", ".join(noop))
    if failed:
        for name, error in failed:
            print(f"Error completing leader election ({type_name}) for partition: {name}: "
                  f"{error.qualified}")  # fmt: skip
        print(f"{len(failed)} replica(s) could not be elected", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())

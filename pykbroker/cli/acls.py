"""kafka-acls: add, remove and list ACLs (Apache Kafka's AclCommand, over the Admin API).

    kafka-acls --bootstrap-server localhost:9092 --add --allow-principal User:alice --operation Read --topic orders
    kafka-acls --bootstrap-server localhost:9092 --add --allow-principal User:bob --producer --topic orders
    kafka-acls --bootstrap-server localhost:9092 --list --topic orders
    kafka-acls --bootstrap-server localhost:9092 --remove --force --topic orders

Prints what Kafka's tool prints: "Adding ACLs for resource `ResourcePattern(...)`:" followed by
one tab-indented "(principal=..., host=..., operation=..., permissionType=...)" line per ACL,
"Current ACLs for resource `...`:" for --list, and "Error while executing ACL command: ..." (exit
status 1) when the cluster refuses.
"""

from __future__ import annotations

import sys

from pykbroker.acl.authorizer import (
    CLUSTER_NAME,
    SUPPORTED_OPERATIONS,
    AccessControlEntry,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
    parse_principal,
)
from pykbroker.acl.store import camel, from_camel

from . import common
from .common import CommandError, ExecutionError, ToolParser, UsageError

Op = AclOperation
RT = ResourceType
DESCRIPTION = "This tool helps to manage acls on kafka."


def build_parser() -> ToolParser:
    p = ToolParser("kafka-acls", DESCRIPTION)
    common.add_bootstrap_server(p, required_note=False)
    p.add_argument(
        "--bootstrap-controller",
        metavar="<String: controller to connect to>",
        help="The Kafka controllers to connect to (treated like --bootstrap-server).",
    )
    for flag, text in (
        ("--add", "Indicates you are trying to add ACLs."),
        ("--remove", "Indicates you are trying to remove ACLs."),
        (
            "--list",
            "List ACLs for the specified resource, use --topic <topic> or "
            "--group <group> or --cluster to specify a resource.",
        ),
    ):
        p.add_argument(flag, action="store_true", help=text)
    multi = {"action": "append", "default": []}
    p.add_argument(
        "--topic",
        metavar="<String: topic>",
        **multi,
        help="topic to which ACLs should be added or removed. A value of '*' "
        "indicates ACL should apply to all topics.",
    )
    p.add_argument("--cluster", action="store_true", help="Add/Remove cluster ACLs.")
    p.add_argument(
        "--group",
        metavar="<String: group>",
        **multi,
        help="Consumer Group to which the ACLs should be added or removed. A value "
        "of '*' indicates the ACLs should apply to all groups.",
    )
    p.add_argument(
        "--transactional-id",
        metavar="<String: transactional-id>",
        **multi,
        help="The transactionalId to which ACLs should be added or removed. A value "
        "of '*' indicates the ACLs should apply to all transactionalIds.",
    )
    p.add_argument(
        "--delegation-token",
        metavar="<String: delegation-token>",
        **multi,
        help="Delegation token to which ACLs should be added or removed. A value of "
        "'*' indicates ACL should apply to all tokens.",
    )
    p.add_argument(
        "--user-principal",
        metavar="<String: user-principal>",
        **multi,
        help="Specifies a user principal as a resource in relation with the operation.",
    )
    p.add_argument(
        "--idempotent",
        action="store_true",
        help="Enable idempotence for the producer. This should be used in "
        "combination with the --producer option.",
    )
    p.add_argument(
        "--resource-pattern-type",
        metavar="<ANY|MATCH|LITERAL|PREFIXED>",
        default="LITERAL",
        help="The type of the resource pattern or pattern filter (default: LITERAL).",
    )
    p.add_argument(
        "--operation",
        metavar="<String>",
        **multi,
        help="Operation that is being allowed or denied (default: All): "
        + ", ".join(camel(o.name) for o in _OPERATIONS)
        + ".",
    )
    p.add_argument(
        "--allow-principal",
        metavar="<String: allow-principal>",
        **multi,
        help="principal is in principalType:name format. User:'*' is the wild card "
        "indicating all users.",
    )
    p.add_argument(
        "--deny-principal",
        metavar="<String: deny-principal>",
        **multi,
        help="principal is in principalType:name format. DENY RULES TAKE PRECEDENCE "
        "OVER ALLOW RULES.",
    )
    p.add_argument(
        "--principal",
        metavar="<String: principal>",
        **multi,
        help="List ACLs for the specified principal (with --list).",
    )
    p.add_argument(
        "--allow-host",
        metavar="<String: allow-host>",
        **multi,
        help="Host from which principals listed in --allow-principal will have "
        "access (default: '*').",
    )
    p.add_argument(
        "--deny-host",
        metavar="<String: deny-host>",
        **multi,
        help="Host from which principals listed in --deny-principal will be denied "
        "access (default: '*').",
    )
    p.add_argument(
        "--producer",
        action="store_true",
        help="Convenience option to add/remove ACLs for producer role. This will "
        "generate ACLs that allows WRITE,DESCRIBE and CREATE on topic.",
    )
    p.add_argument(
        "--consumer",
        action="store_true",
        help="Convenience option to add/remove ACLs for consumer role. This will "
        "generate ACLs that allows READ,DESCRIBE on topic and READ on group.",
    )
    p.add_argument(
        "--force", action="store_true", help="Assume Yes to all queries and do not prompt."
    )
    return p  # fmt: skip


_OPERATIONS = [o for o in Op if o not in (Op.UNKNOWN, Op.ANY)]


def _usage(message: str) -> UsageError:
    return UsageError(message)


def check_args(args) -> None:
    """AclCommandOptions.checkArgs, with Kafka's messages."""
    if args.bootstrap_server and args.bootstrap_controller:
        raise _usage("Only one of --bootstrap-server or --bootstrap-controller must be specified")
    if not args.bootstrap_server and not args.bootstrap_controller:
        raise _usage("One of --bootstrap-server or --bootstrap-controller must be specified")
    if sum((args.add, args.remove, args.list)) != 1:
        raise _usage("Command must include exactly one action: --list, --add, --remove. ")
    _invalid_with(args, "list", "producer", "consumer", "allow_host", "allow_principal",
                  "deny_host", "deny_principal")  # fmt: skip
    for role in ("producer", "consumer"):
        _invalid_with(args, role, "operation", "deny_principal", "deny_host")
    if args.principal and not args.list:
        raise _usage("The --principal option is only available if --list is set")
    if args.producer and not args.topic:
        raise _usage("With --producer you must specify a --topic")
    if args.idempotent and not args.producer:
        raise _usage("The --idempotent option is only available if --producer is set")
    if args.consumer and (
        not args.topic or not args.group
        or (not args.producer and (args.cluster or args.transactional_id))
    ):  # fmt: skip
        raise _usage("With --consumer you must specify a --topic and a --group and no --cluster "
                     "or --transactional-id option should be specified.")  # fmt: skip


def _invalid_with(args, used: str, *others: str) -> None:
    if not getattr(args, used):
        return
    for other in others:
        if getattr(args, other):
            flag = lambda n: n.replace("_", "-")  # noqa: E731
            raise _usage(f'Option "[{flag(used)}]" can\'t be used with option "[{flag(other)}]"')


def pattern_type(args) -> PatternType:
    try:
        pt = from_camel(PatternType, args.resource_pattern_type)
    except ValueError:
        pt = PatternType.UNKNOWN
    if pt == PatternType.UNKNOWN:
        raise _usage(f"Unknown resource-pattern-type: {args.resource_pattern_type}")
    return pt


def resource_filters(args, die_if_none: bool) -> list[ResourcePattern]:
    """The resources named on the command line, as patterns (or pattern filters)."""
    pt = pattern_type(args)
    out = [ResourcePattern(RT.TOPIC, t.strip(), pt) for t in args.topic]
    if pt == PatternType.LITERAL and (args.cluster or args.idempotent):
        out.append(ResourcePattern(RT.CLUSTER, CLUSTER_NAME, PatternType.LITERAL))
    out += [ResourcePattern(RT.GROUP, g.strip(), pt) for g in args.group]
    out += [ResourcePattern(RT.TRANSACTIONAL_ID, t, pt) for t in args.transactional_id]
    out += [ResourcePattern(RT.DELEGATION_TOKEN, t.strip(), pt) for t in args.delegation_token]
    out += [ResourcePattern(RT.USER, u.strip(), pt) for u in args.user_principal]
    if not out and die_if_none:
        raise _usage("You must provide at least one resource: --topic <topic> or --cluster or "
                     "--group <group> or --delegation-token <Delegation Token ID>")  # fmt: skip
    return list(dict.fromkeys(out))


def _principals(values: list[str]) -> list[str]:
    out = []
    for v in values:
        try:
            kind, name = parse_principal(v.strip())
        except ValueError:
            raise _usage(f"Invalid principal: {v.strip()}") from None
        out.append(f"{kind}:{name}")
    return out


def entries(args, operations) -> set[AccessControlEntry]:
    allow = _principals(args.allow_principal)
    deny = _principals(args.deny_principal)
    allow_hosts = [h.strip() for h in args.allow_host] or (["*"] if allow else [])
    deny_hosts = [h.strip() for h in args.deny_host] or (["*"] if deny else [])
    out = set()
    for principals, hosts, perm in ((allow, allow_hosts, AclPermissionType.ALLOW),
                                    (deny, deny_hosts, AclPermissionType.DENY)):  # fmt: skip
        out |= {AccessControlEntry(p, h, op, perm) for p in principals for op in operations
                for h in hosts}  # fmt: skip
    return out


def cli_operations(args) -> set[Op]:
    ops = set()
    for name in args.operation or ["All"]:
        try:
            op = from_camel(Op, name.strip())
        except ValueError:
            op = Op.UNKNOWN
        if op in (Op.UNKNOWN, Op.ANY):
            raise _usage(f"Invalid operation: {name.strip()}")
        ops.add(op)
    return ops


def filter_to_entries(args) -> dict[ResourcePattern, set[AccessControlEntry]]:
    """AclCommand.getResourceFilterToAcls: explicit ACLs, or the --producer/--consumer sets."""
    out: dict[ResourcePattern, set[AccessControlEntry]] = {}
    if not args.producer and not args.consumer:
        acls = entries(args, cli_operations(args))
        out = {f: set(acls) for f in resource_filters(args, True)}
    filters = resource_filters(args, True) if args.producer or args.consumer else []
    if args.producer:
        for f in filters:
            if f.resource_type == RT.TOPIC:
                out[f] = entries(args, {Op.WRITE, Op.DESCRIBE, Op.CREATE})
            elif f.resource_type == RT.TRANSACTIONAL_ID:
                out[f] = entries(args, {Op.WRITE, Op.DESCRIBE})
        if args.idempotent:
            cluster = ResourcePattern(RT.CLUSTER, CLUSTER_NAME, PatternType.LITERAL)
            out[cluster] = entries(args, {Op.IDEMPOTENT_WRITE})
    if args.consumer:
        for f in filters:
            if f.resource_type == RT.TOPIC:
                out.setdefault(f, set()).update(entries(args, {Op.READ, Op.DESCRIBE}))
            elif f.resource_type == RT.GROUP:
                out.setdefault(f, set()).update(entries(args, {Op.READ}))
    for f, acls in out.items():  # AclCommand.validateOperation
        valid = set(SUPPORTED_OPERATIONS[f.resource_type]) | {Op.ALL}
        if any(a.operation not in valid for a in acls):
            names = ", ".join(o.name for o in sorted(valid))
            raise _usage(f"ResourceType {f.resource_type.name} only supports operations [{names}]")
    return out


# --- talking to the cluster ---------------------------------------------------------------------


def _sorted_entries(acls) -> list[AccessControlEntry]:
    return sorted(acls, key=lambda e: (e.principal, e.host, e.operation, e.permission_type))


def describe(admin, f: ResourcePattern | None) -> dict[ResourcePattern, set[AccessControlEntry]]:
    from kafka.protocol.admin import DescribeAclsRequest

    any_ = 1
    request = DescribeAclsRequest(
        resource_type_filter=f.resource_type if f else any_,
        resource_name_filter=f.name if f else None,
        pattern_type_filter=f.pattern_type if f else any_,
        principal_filter=None, host_filter=None, operation=any_, permission_type=any_,
        min_version=1,
    )  # fmt: skip
    response = common.send(admin, request)
    common.check(response.error_code, response.error_message)
    out: dict[ResourcePattern, set[AccessControlEntry]] = {}
    for r in response.resources:
        pattern = ResourcePattern(RT(r.resource_type), r.resource_name, PatternType(r.pattern_type))
        out.setdefault(pattern, set()).update(
            AccessControlEntry(a.principal, a.host, Op(a.operation),
                               AclPermissionType(a.permission_type))
            for a in r.acls
        )  # fmt: skip
    return out


def create(admin, bindings: list[AclBinding]) -> None:
    from kafka.protocol.admin import CreateAclsRequest

    creation = CreateAclsRequest.AclCreation
    request = CreateAclsRequest(
        creations=[
            creation(resource_type=b.pattern.resource_type, resource_name=b.pattern.name,
                     resource_pattern_type=b.pattern.pattern_type, principal=b.entry.principal,
                     host=b.entry.host, operation=b.entry.operation,
                     permission_type=b.entry.permission_type)
            for b in bindings
        ],
        min_version=1,
    )  # fmt: skip
    for result in common.send(admin, request).results:
        common.check(result.error_code, result.error_message)


def delete(admin, f: ResourcePattern, acls: list[AccessControlEntry | None]) -> None:
    """Delete with one filter per entry (None: every entry of the resource filter)."""
    from kafka.protocol.admin import DeleteAclsRequest

    flt = DeleteAclsRequest.DeleteAclsFilter
    any_ = 1
    request = DeleteAclsRequest(
        filters=[
            flt(resource_type_filter=f.resource_type, resource_name_filter=f.name,
                pattern_type_filter=f.pattern_type,
                principal_filter=e.principal if e else None, host_filter=e.host if e else None,
                operation=e.operation if e else any_,
                permission_type=e.permission_type if e else any_)
            for e in acls
        ],
        min_version=1,
    )  # fmt: skip
    for result in common.send(admin, request).filter_results:
        common.check(result.error_code, result.error_message)


def _block(title: str, acls) -> str:
    return f"{title}\n" + "\n".join(f"\t{e}" for e in _sorted_entries(acls))


def _order(pattern: ResourcePattern):
    return (pattern.resource_type, pattern.pattern_type, pattern.name)


def add_acls(admin, args) -> None:
    if pattern_type(args) not in (PatternType.LITERAL, PatternType.PREFIXED):
        raise _usage(f"A '--resource-pattern-type' value of '{pattern_type(args).name}' is not "
                     "valid when adding acls.")  # fmt: skip
    wanted = filter_to_entries(args)
    if any(not acls for acls in wanted.values()):
        raise _usage("You must specify one of: --allow-principal, --deny-principal when trying "
                     "to add ACLs.")  # fmt: skip
    for pattern in sorted(wanted, key=_order):
        existing = describe(admin, pattern).get(pattern, set())
        new = []
        for e in _sorted_entries(wanted[pattern]):
            if e in existing:
                print(f"Acl (pattern={pattern}, entry={e}) already exists.")
            else:
                new.append(e)
        if new:
            print(f"Adding ACLs for resource `{pattern}`: \n " +
                  "\n".join(f"\t{e}" for e in new) + "\n")  # fmt: skip
            create(admin, [AclBinding(pattern, e) for e in new])


def remove_acls(admin, args) -> None:
    for f, acls in sorted(filter_to_entries(args).items(), key=lambda kv: _order(kv[0])):
        if not acls:
            question = f"Are you sure you want to delete all ACLs for resource filter `{f}`? (y/n)"
        else:
            question = ("Are you sure you want to remove ACLs: \n " +
                        "\n".join(f"\t{e}" for e in _sorted_entries(acls)) +
                        f"\n from resource filter `{f}`? (y/n)")  # fmt: skip
        if _confirm(args, question):
            delete(admin, f, _sorted_entries(acls) or [None])


def _confirm(args, question: str) -> bool:
    if args.force:
        return True
    print(question, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() == "y"


def list_acls(admin, args) -> None:
    filters = resource_filters(args, False)
    found: dict[ResourcePattern, set[AccessControlEntry]] = {}
    for f in filters or [None]:
        for pattern, acls in describe(admin, f).items():
            found.setdefault(pattern, set()).update(acls)
    principals = _principals(args.principal)
    if not principals:
        _print_resources(found)
        return
    for principal in principals:
        print(f"ACLs for principal `{principal}`")
        _print_resources({p: {a for a in acls if a.principal == principal}
                          for p, acls in found.items()})  # fmt: skip


def _print_resources(found: dict) -> None:
    for pattern in sorted(found, key=_order):
        if found[pattern]:
            print(_block(f"Current ACLs for resource `{pattern}`:", found[pattern]) + "\n")


def run(argv: list[str]) -> int:
    parser = build_parser()
    if not argv:
        print(DESCRIPTION, file=sys.stderr)
        parser.print_help(sys.stderr)
        return 1
    args = parser.parse_args(argv)
    check_args(args)
    pattern_type(args)
    common.quiet_client_logging()
    admin = common.admin_client(
        common.bootstrap_servers(args.bootstrap_server or args.bootstrap_controller),
        common.client_properties(args.command_config),
    )
    try:
        if args.add:
            add_acls(admin, args)
        elif args.remove:
            remove_acls(admin, args)
        else:
            list_acls(admin, args)
    finally:
        admin.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)

    def report(error: CommandError) -> None:
        if isinstance(error, ExecutionError):
            detail = error.qualified if isinstance(error, common.BrokerError) else error.message
            print(f"Error while executing ACL command: {detail}")  # stdout, as Kafka's
        else:
            print(error.message, file=sys.stderr)

    return common.run_tool(run, args, report)


if __name__ == "__main__":
    sys.exit(main())

"""kafka-delegation-tokens: create, renew, expire and describe delegation tokens (Apache Kafka's
DelegationTokenCommand), over an authenticated connection given by --command-config.

    kafka-delegation-tokens --bootstrap-server localhost:9092 --command-config admin.properties \\
        --create --max-life-time-period -1 --renewer-principal User:bob
    kafka-delegation-tokens ... --renew --hmac <HMAC> --renew-time-period -1
    kafka-delegation-tokens ... --expire --hmac <HMAC> --expiry-time-period -1
    kafka-delegation-tokens ... --describe [--owner-principal User:alice]

Prints what Kafka's tool prints (its `Calling ... operation` lines and token table).
"""

from __future__ import annotations

import base64
import datetime
import sys
from collections.abc import Sequence

from protocol import codec
from protocol.apis import ApiKey

from . import common
from .common import UsageError

ACTIONS = ("create", "renew", "expire", "describe")


def build_parser() -> common.ToolParser:
    p = common.ToolParser(
        "kafka-delegation-tokens",
        "This tool helps to create, renew, expire, or describe delegation tokens.",
    )
    common.add_bootstrap_server(p)
    for action in ACTIONS:
        p.add_argument(f"--{action}", action="store_true",
                       help=f"{action.capitalize()} a delegation token.")  # fmt: skip
    p.add_argument("--max-life-time-period", type=int, metavar="max life period",
                   help="Max life period for the token in milliseconds. If the value is -1, "
                   "then token max life time will default to a server side config value "
                   "(delegation.token.max.lifetime.ms).")  # fmt: skip
    p.add_argument("--renewer-principal", action="append", default=[], metavar="renewer",
                   help="renewer is a Kafka principal. It should be in principalType:name "
                   "format.")  # fmt: skip
    p.add_argument("--owner-principal", action="append", default=[], metavar="owner",
                   help="owner is a Kafka principal. It should be in principalType:name "
                   "format.")  # fmt: skip
    p.add_argument("--hmac", metavar="hmac", help="HMAC of the delegation token")
    p.add_argument("--renew-time-period", type=int, metavar="renew time period",
                   help="Renew time period in milliseconds. If the value is -1, then the "
                   "renew time period will default to a server side config value "
                   "(delegation.token.expiry.time.ms).")  # fmt: skip
    p.add_argument("--expiry-time-period", type=int, metavar="expiry time period",
                   help="Expiry time period in milliseconds. If the value is -1, then the "
                   "token will get invalidated immediately.")  # fmt: skip
    return p


def _principal(text: str) -> tuple[str, str]:
    kind, sep, name = text.partition(":")
    if not sep or not kind or not name:
        raise UsageError(f"Invalid principal format: {text}. It should be principalType:name.")
    return kind, name


def _date(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%dT%H:%M")


def print_tokens(tokens: list[dict]) -> None:
    """Kafka's DelegationTokenCommand.printToken table."""
    row = "\n%-15s %-30s %-15s %-15s %-25s %-15s %-15s %-15s"
    print(row % ("TOKENID", "HMAC", "OWNER", "REQUESTER", "RENEWERS", "ISSUEDATE", "EXPIRYDATE",
                 "MAXDATE"))  # fmt: skip
    for t in tokens:
        renewers = "[" + ", ".join(t["renewers"]) + "]"
        print(row % (t["token_id"], base64.b64encode(t["hmac"]).decode(), t["owner"],
                     t["requester"], renewers, _date(t["issue"]), _date(t["expiry"]),
                     _date(t["max"])))  # fmt: skip


def _request(api_key: int, **fields):
    return codec.request_class(api_key)(**fields)


def main(argv: Sequence[str] | None = None) -> int:
    return common.run_tool(_run, argv)


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    chosen = [a for a in ACTIONS if getattr(args, a)]
    if len(chosen) != 1:
        raise UsageError("Command must include exactly one action: --create, --renew, --expire "
                         "or --describe")  # fmt: skip
    if not args.command_config:
        raise UsageError('Missing required argument "[command-config]"')
    action = chosen[0]
    if action == "create" and args.max_life_time_period is None:
        raise UsageError('Missing required argument "[max-life-time-period]"')
    if action in ("renew", "expire") and not args.hmac:
        raise UsageError('Missing required argument "[hmac]"')
    servers = common.bootstrap_servers(args.bootstrap_server)
    admin = common.admin_client(servers, common.client_properties(args.command_config))
    try:
        return globals()[f"_{action}"](admin, args)
    finally:
        admin.close()


def _create(admin, args) -> int:
    renewers = [_principal(r) for r in args.renewer_principal]
    owner = _principal(args.owner_principal[0]) if args.owner_principal else (None, None)
    print("Calling create token operation with renewers :"
          f"[{', '.join(args.renewer_principal)}] , max-life-time-period :"
          f"{args.max_life_time_period}")  # fmt: skip
    r = common.send(admin, _request(
        ApiKey.CREATE_DELEGATION_TOKEN, owner_principal_type=owner[0],
        owner_principal_name=owner[1], renewers=[(t, n) for t, n in renewers],
        max_lifetime_ms=args.max_life_time_period))  # fmt: skip
    common.check(r.error_code)
    print(f"Created delegation token with tokenId : {r.token_id}")
    print_tokens([_row(r, args.renewer_principal, r.issue_timestamp_ms,
                       r.expiry_timestamp_ms, r.max_timestamp_ms)])  # fmt: skip
    return 0


def _hmac(args) -> bytes:
    try:
        return base64.b64decode(args.hmac, validate=True)
    except ValueError:
        raise UsageError(f"Invalid hmac: {args.hmac}") from None


def _renew(admin, args) -> int:
    period = -1 if args.renew_time_period is None else args.renew_time_period
    print(f"Calling renew token operation with hmac :{args.hmac} , renew-time-period :{period}")
    r = common.send(admin, _request(ApiKey.RENEW_DELEGATION_TOKEN, hmac=_hmac(args),
                                    renew_period_ms=period))  # fmt: skip
    common.check(r.error_code)
    print(f"Completed renew operation. New expiry date : {_date(r.expiry_timestamp_ms)}")
    return 0


def _expire(admin, args) -> int:
    period = -1 if args.expiry_time_period is None else args.expiry_time_period
    print(f"Calling expire token operation with hmac :{args.hmac} , expire-time-period :{period}")
    r = common.send(admin, _request(ApiKey.EXPIRE_DELEGATION_TOKEN, hmac=_hmac(args),
                                    expiry_time_period_ms=period))  # fmt: skip
    common.check(r.error_code)
    print(f"Completed expire operation. New expiry date : {_date(r.expiry_timestamp_ms)}")
    return 0


def _describe(admin, args) -> int:
    owners = [_principal(o) for o in args.owner_principal]
    if owners:
        print(f"Calling describe token operation for owners: [{', '.join(args.owner_principal)}]")
    else:
        print("Calling describe token operation for current user.")
    r = common.send(admin, _request(ApiKey.DESCRIBE_DELEGATION_TOKEN,
                                    owners=[(t, n) for t, n in owners] if owners else None))  # fmt: skip
    common.check(r.error_code)
    print(f"Total number of tokens : {len(r.tokens)}")
    print_tokens([_row(t, [f"{x.principal_type}:{x.principal_name}" for x in t.renewers],
                       t.issue_timestamp, t.expiry_timestamp, t.max_timestamp)
                  for t in r.tokens])  # fmt: skip
    return 0


def _row(t, renewers: list[str], issue: int, expiry: int, max_ms: int) -> dict:
    """One printed token from a Create answer or a Describe entry (v3 adds the requester)."""
    owner = f"{t.principal_type}:{t.principal_name}"
    requester = (
        f"{t.token_requester_principal_type}:{t.token_requester_principal_name}"
        if t.token_requester_principal_type else owner
    )  # fmt: skip
    return {"token_id": t.token_id, "hmac": bytes(t.hmac), "owner": owner,
            "requester": requester, "renewers": renewers, "issue": issue, "expiry": expiry,
            "max": max_ms}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

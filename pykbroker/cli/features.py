"""kafka-features: describe and change the cluster's feature flags (Apache Kafka's FeatureCommand).

    kafka-features --bootstrap-server localhost:9092 describe
    kafka-features --bootstrap-server localhost:9092 upgrade --feature transaction.version=2
    kafka-features --bootstrap-server localhost:9092 downgrade --feature group.version=0
    kafka-features --bootstrap-server localhost:9092 disable --feature share.version

Prints what Kafka's tool prints: one `Feature: ...\tSupportedMinVersion: ...` line per feature
for describe; `<feature> was upgraded to <level>.` (or `can be` with --dry-run) per update, or
`Could not upgrade <feature> to <level>. <reason>` and, on stderr, `N out of M operation(s)
failed.` with exit status 1. metadata.version (--metadata, --release-version) is KRaft's and is
not served by pykbroker.
"""

from __future__ import annotations

import argparse
import sys

from . import common
from .common import ExecutionError, UsageError

UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE = 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse4j's behaviour: usage errors are one line and exit 1."""

    def error(self, message: str):
        raise UsageError(f"Command line error: {message}. Type --help for help.")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kafka-features", description="This tool manages feature flags in Kafka.")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--bootstrap-server",
        help="A comma-separated list of host:port pairs to use for establishing the connection "
        "to the Kafka cluster.",
    )
    target.add_argument(
        "--bootstrap-controller",
        help="A comma-separated list of host:port pairs to use for establishing the connection "
        "to the KRaft quorum (treated like --bootstrap-server).",
    )
    p.add_argument(
        "--command-config", help="Property file containing configs to be passed to Admin Client."
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("describe", help="Describes the current active feature flags.")
    up = sub.add_parser("upgrade", help="Upgrade one or more feature flags.")
    up.add_argument(
        "--metadata",
        help="The level to which we should upgrade the metadata. For example, 4.1-IV1.",
    )
    up.add_argument(
        "--feature", action="append",
        help="A feature upgrade we should perform, in feature=level format. For example: "
        "`transaction.version=2`.",
    )  # fmt: skip
    up.add_argument(
        "--dry-run", action="store_true", help="Validate this upgrade, but do not perform it."
    )
    down = sub.add_parser("downgrade", help="Downgrade one or more feature flags.")
    down.add_argument(
        "--metadata",
        help="The level to which we should downgrade the metadata. For example, 3.3-IV3.",
    )
    down.add_argument(
        "--feature", action="append",
        help="A feature downgrade we should perform, in feature=level format. For example: "
        "`transaction.version=1`.",
    )  # fmt: skip
    down.add_argument(
        "--unsafe", action="store_true",
        help="Perform this downgrade even if it may irreversibly destroy metadata.",
    )  # fmt: skip
    down.add_argument(
        "--dry-run", action="store_true", help="Validate this downgrade, but do not perform it."
    )
    disable = sub.add_parser(
        "disable",
        help="Disable one or more feature flags. This is the same as downgrading the version to zero.",
    )
    disable.add_argument("--feature", action="append", help="A feature flag to disable.")
    disable.add_argument(
        "--unsafe", action="store_true",
        help="Disable this feature flag even if it may irreversibly destroy metadata.",
    )  # fmt: skip
    disable.add_argument(
        "--dry-run", action="store_true", help="Perform a dry-run of this disable operation."
    )
    return p


def parse_name_and_level(text: str) -> tuple[str, int]:
    name, eq, level = text.partition("=")
    if not eq:
        raise ExecutionError(f"Can't parse feature=level string {text}: equals sign not found.")
    try:
        value = int(level.strip())
        if not -(2**15) <= value < 2**15:
            raise ValueError
    except ValueError:
        raise ExecutionError(
            f"Can't parse feature=level string {text}: unable to parse {level.strip()} as a short."
        ) from None
    return name.strip(), value


def describe(admin) -> None:
    from kafka.protocol.metadata import ApiVersionsRequest

    # The newest ApiVersions (v4): older ones leave out features supported from level 0.
    resp = common.send(admin, ApiVersionsRequest(
        client_software_name="kafka-features", client_software_version="4.1.0", max_version=4))  # fmt: skip
    common.check(resp.error_code)
    finalized = {f.name: f.max_version_level for f in resp.finalized_features or ()}
    epoch = resp.finalized_features_epoch
    epoch_text = str(epoch) if epoch is not None and epoch >= 0 else "-"
    for f in sorted(resp.supported_features or (), key=lambda f: f.name):
        print(f"Feature: {f.name}\tSupportedMinVersion: {f.min_version}\t"
              f"SupportedMaxVersion: {f.max_version}\tFinalizedVersionLevel: "
              f"{finalized.get(f.name, 0)}\tEpoch: {epoch_text}")  # fmt: skip


def update(admin, op: str, updates: dict[str, tuple[int, int]], dry_run: bool) -> None:
    """Send the updates (name -> (level, upgrade type)) and report each as Kafka's tool does."""
    from kafka.protocol.admin import UpdateFeaturesRequest

    if not updates:
        raise ExecutionError(f"You must specify at least one feature to {op}")
    request = UpdateFeaturesRequest(
        timeout_ms=60000,
        feature_updates=[
            UpdateFeaturesRequest.FeatureUpdateKey(
                feature=name,
                max_version_level=level,
                upgrade_type=kind,
                allow_downgrade=kind != UPGRADE,
            )  # fmt: skip
            for name, (level, kind) in updates.items()
        ],
        validate_only=dry_run,
        min_version=1,  # validate_only needs v1
    )
    resp = common.send(admin, request)
    errors = {}
    for name in updates:  # v2 answers one error for all (the updates are atomic)
        errors[name] = (resp.error_code, resp.error_message)
    for r in getattr(resp, "results", None) or ():
        errors[r.feature] = (r.error_code, r.error_message)
    failures = 0
    for name in sorted(errors):
        code, message = errors[name]
        level = updates[name][0]
        if code:
            failures += 1
            helper = "Can not " if dry_run else "Could not "
            what = f"disable {name}" if op == "disable" else f"{op} {name} to {level}"
            print(f"{helper}{what}. {common.broker_error_message(code, message)}")
        else:
            verb = " can be " if dry_run else " was "
            done = "disabled." if op == "disable" else f"{op}d to {level}."
            print(f"{name}{verb}{done}")
    if failures:
        raise ExecutionError(f"{failures} out of {len(updates)} operation(s) failed.")


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    bootstrap = common.bootstrap_servers(args.bootstrap_server or args.bootstrap_controller)
    props = common.client_properties(args.command_config)
    if args.command != "describe" and args.command != "disable" and args.metadata is not None:
        raise ExecutionError(
            f"Unsupported metadata version {args.metadata}: metadata.version is a KRaft "
            "feature, which pykbroker (ZooKeeper mode) does not have."
        )
    admin = common.admin_client(bootstrap, props)
    try:
        if args.command == "describe":
            describe(admin)
            return 0
        if args.command == "upgrade":
            kind = UPGRADE
        else:
            kind = UNSAFE_DOWNGRADE if args.unsafe else SAFE_DOWNGRADE
        updates: dict[str, tuple[int, int]] = {}
        for item in args.feature or ():
            if args.command == "disable":
                name, level = item, 0
            else:
                name, level = parse_name_and_level(item)
            if name in updates:
                raise ExecutionError(f"Feature {name} was specified more than once.")
            updates[name] = (level, kind)
        update(admin, args.command, updates, args.dry_run)
    finally:
        admin.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run_tool(run, argv)  # failures: their message on stderr, exit 1


if __name__ == "__main__":
    sys.exit(main())

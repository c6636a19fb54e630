"""`pykbroker [server.properties] [--override key=value ...]`: run a broker."""

from __future__ import annotations

import argparse
import sys

from pykbroker.config import BrokerConfig, ConfigError, default_data_dir, load_properties


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="pykbroker",
        description="A Kafka broker in Python. With no arguments it listens on localhost:9092 "
        f"and keeps its data in {default_data_dir()}.",
    )
    p.add_argument("properties", nargs="?", help="a server.properties file (Kafka's keys)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config key, overriding the properties file (repeatable)")  # fmt: skip
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> BrokerConfig:
    props: dict[str, str] = {}
    if args.properties:
        props.update(load_properties(args.properties))
    for item in args.override:
        if "=" not in item:
            raise ConfigError(f"--override expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        props[key.strip()] = value.strip()
    return BrokerConfig(props)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pykbroker.logs import configure

    configure()
    try:
        config = build_config(args)
    except (ConfigError, OSError) as e:
        print(f"pykbroker: {e}", file=sys.stderr)
        return 2
    import uvloop

    from pykbroker.broker import serve

    try:
        uvloop.run(serve(config))
    except OSError as e:
        print(f"pykbroker: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`pykbroker [server.properties] [--override key=value ...] [--from-env]`: run a broker.

`pykbroker healthcheck [...]` makes one ApiVersions round trip to a broker and exits 0 if it
answered, 1 if not (the container image's HEALTHCHECK). `pykbroker --print-config [...]` prints
the configuration a broker would start with and exits.

Configuration sources, later ones winning: Kafka's defaults, the properties file (the shipped
config/server.properties when none is given), then (with `--from-env`, as the container
entrypoint passes) KAFKA_* environment variables, then `--override` flags; a running broker
also applies the dynamic broker configs stored in its cluster metadata.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import time
from collections.abc import Mapping

from pykbroker.config import (
    SHIPPED_PROPERTIES,
    BrokerConfig,
    ConfigError,
    default_data_dir,
    load_properties,
)

# Variables the JVM Kafka images read for themselves, never broker configs (Confluent's list).
NOT_CONFIGS = frozenset(
    {
        "KAFKA_VERSION", "KAFKA_HOME", "KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
        "KAFKA_JMX_PORT", "KAFKA_JMX_HOSTNAME", "KAFKA_LOG4J_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS",
        "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL", "KAFKA_LOG4J_LOGGERS",
        "KAFKA_TOOLS_LOG4J_LOGLEVEL", "KAFKA_DEBUG",
    }
)  # fmt: skip
BITNAMI_PREFIX = "KAFKA_CFG_"
CONFLUENT_PREFIX = "KAFKA_"


def env_name_to_key(name: str) -> str | None:
    """The Kafka config key an environment variable sets, or None if it sets none.

    Confluent's convention (also Apache Kafka's own image): strip KAFKA_, lower-case, then
    `___` -> `_`, `__` -> `-`, `_` -> `.`; so KAFKA_ADVERTISED_LISTENERS is advertised.listeners.
    Bitnami's KAFKA_CFG_ prefix is accepted too, with the same underscore rules.
    """
    if name.startswith(BITNAMI_PREFIX):
        rest = name[len(BITNAMI_PREFIX) :]
    elif name.startswith(CONFLUENT_PREFIX) and name not in NOT_CONFIGS:
        rest = name[len(CONFLUENT_PREFIX) :]
    else:
        return None
    if not rest:
        return None
    rest = rest.lower().replace("___", "\0").replace("__", "-").replace("_", ".")
    return rest.replace("\0", "_")


def env_to_config(environ: Mapping[str, str]) -> dict[str, str]:
    """Config key -> value from KAFKA_* variables; KAFKA_CFG_* win over plain KAFKA_*.

    An empty value leaves the key unset, so `KAFKA_X: ""` in a compose file means "default".
    """
    props: dict[str, str] = {}
    for bitnami in (False, True):
        for name, value in sorted(environ.items()):
            if name.startswith(BITNAMI_PREFIX) != bitnami:
                continue
            key = env_name_to_key(name)
            if key is not None and value.strip():
                props[key] = value.strip()
    return props


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "properties", nargs="?",
        help=f"a server.properties file (Kafka's keys); default: the shipped {SHIPPED_PROPERTIES}",
    )  # fmt: skip
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config key, overriding the properties file (repeatable)")  # fmt: skip
    p.add_argument(
        "--from-env", action="store_true",
        help="also take KAFKA_* environment variables as config keys, as Kafka's container "
        "images do (KAFKA_ADVERTISED_LISTENERS -> advertised.listeners; '__' -> '-', "
        "'___' -> '_'); --override still wins",
    )  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="pykbroker",
        description="A Kafka broker in Python. With no arguments it listens on localhost:9092 "
        f"and keeps its data in {default_data_dir()}. "
        "`pykbroker healthcheck --help` for the health check.",
    )
    _add_config_args(p)
    p.add_argument(
        "--print-config", action="store_true",
        help="print every config key with its effective value and where it comes from "
        "(default, file, env, override, dynamic), in kafka-configs --describe --all's format, "
        "and exit",
    )  # fmt: skip
    return p.parse_args(argv)


def properties_path(args: argparse.Namespace) -> str | None:
    """The file a broker starts from: the one given, else the shipped one."""
    if args.properties:
        return args.properties
    return SHIPPED_PROPERTIES if os.path.exists(SHIPPED_PROPERTIES) else None


def config_layers(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> list[tuple[str, dict[str, str]]]:
    """(source, keys it sets), lowest precedence first: file, env, override."""
    layers = []
    path = properties_path(args)
    if path:
        layers.append(("file", load_properties(path)))
    if getattr(args, "from_env", False):
        layers.append(("env", env_to_config(os.environ if environ is None else environ)))
    overrides = {}
    for item in args.override:
        if "=" not in item:
            raise ConfigError(f"--override expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    layers.append(("override", overrides))
    return layers


def build_config(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> BrokerConfig:
    props: dict[str, str] = {}
    for _source, layer in config_layers(args, environ):
        props.update(layer)
    return BrokerConfig(props)


# Broker keys Kafka 3.x accepts and ignores; setting one is logged, as Kafka does.
DEPRECATED_BROKER_CONFIGS = ("log.message.format.version", "log.message.downconversion.enable")


def config_warnings(config: BrokerConfig) -> list[tuple[str, dict]]:
    """(event, fields) for the keys a broker will ignore: unknown, or deprecated."""
    out = [("unknown_config_ignored", {"key": key}) for key in sorted(config.unknown)]
    for key in DEPRECATED_BROKER_CONFIGS:
        if config.is_set(key):
            out.append(("deprecated_config_ignored", {"key": key, "value": config.originals[key]}))
    return out


def raise_open_file_limit() -> None:
    """Lift the soft open-file limit to the hard one. Each partition holds a few descriptors and
    every client one more: Debian's soft default of 1,024 runs out at a few hundred partitions,
    and Kafka's docs ask operators for 100,000+. Only the soft limit moves, never past the hard."""
    import resource

    import structlog

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        structlog.get_logger(__name__).warning("open_file_limit_unchanged", soft=soft, error=str(e))
        return
    structlog.get_logger(__name__).info("open_file_limit_raised", soft=soft, now=target)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "healthcheck":
        return healthcheck_main(argv[1:])
    args = parse_args(argv)
    if args.print_config:
        return print_config_main(args)
    from pykbroker.logs import configure

    configure()
    try:
        config = build_config(args)
        # Listener names, protocols and advertised addresses: checked before anything binds.
        config.advertised_endpoints([(host, port) for _, host, port in config.listeners])
    except (ConfigError, OSError) as e:
        print(f"pykbroker: {e}", file=sys.stderr)
        return 2
    warnings = config_warnings(config)
    if warnings:
        import structlog

        log = structlog.get_logger("pykbroker.config")
        for event, fields in warnings:
            log.warning(event, **fields)
    raise_open_file_limit()
    import uvloop

    from pykbroker.broker import serve

    try:
        uvloop.run(serve(config))
    except ConfigError as e:  # found while building the listeners (TLS stores, SASL, JAAS)
        print(f"pykbroker: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pykbroker: {e}", file=sys.stderr)
        return 1
    return 0


# --- print-config -------------------------------------------------------------------------


def print_config_main(args: argparse.Namespace) -> int:
    """`pykbroker --print-config`: every broker key, its effective value and its source."""
    try:
        layers = config_layers(args)
        config = build_config(args)
    except (ConfigError, OSError) as e:
        print(f"pykbroker: {e}", file=sys.stderr)
        return 2
    path = properties_path(args)
    print(f"# file: {os.path.realpath(path) if path else '(none)'}", file=sys.stderr)
    print(f"# dynamic: {load_dynamic_configs(config)}", file=sys.stderr)
    for event, fields in config_warnings(config):
        print(f"# {event}: {' '.join(f'{k}={v}' for k, v in fields.items())}", file=sys.stderr)
    for line in describe_lines(config, layers):
        print(line)
    return 0


def load_dynamic_configs(config: BrokerConfig) -> str:
    """Apply the dynamic broker configs a broker with this config would find, where they can be
    read without it; says where they came from (or why not)."""
    from pykbroker.cluster.metadata import DEFAULT_ENTITY, stored_broker_configs

    if config.get("zookeeper.connect"):
        return (
            f"kept in ZooKeeper ({config.get('zookeeper.connect')}), not read here; "
            f"`kafka-configs --describe --all --entity-type brokers --entity-name "
            f"{config.node_id}` shows them from a running broker"
        )
    data_dir = config.log_dirs[0]
    stored, where = stored_broker_configs(data_dir)
    if where is None:
        return f"none ({data_dir} holds no cluster metadata yet)"
    config.set_dynamic(stored.get(str(config.node_id), {}), stored.get(DEFAULT_ENTITY, {}))
    return f"read from {where}"


_DYNAMIC_SOURCES = {"DYNAMIC_BROKER_CONFIG": "dynamic-broker",
                    "DYNAMIC_DEFAULT_BROKER_CONFIG": "dynamic-default"}  # fmt: skip


def key_source(config: BrokerConfig, layers: list[tuple[str, dict[str, str]]], name: str) -> str:
    """default, file, env, override, dynamic-broker or dynamic-default."""
    kafka_source = config.source(name)
    if kafka_source in _DYNAMIC_SOURCES:
        return _DYNAMIC_SOURCES[kafka_source]
    for source, layer in reversed(layers):
        if name in layer:
            return source
    return "default"


def describe_lines(config: BrokerConfig, layers: list[tuple[str, dict[str, str]]]) -> list[str]:
    """kafka-configs --describe --all's lines for this broker, each with `source=`."""
    from types import SimpleNamespace

    from pykbroker.cli.configs import SOURCES, _java
    from pykbroker.handlers.configs import Describer

    describer = Describer(SimpleNamespace(config=config), synonyms=True, documentation=False)
    lines = [f"All configs for broker {config.node_id} are:"]
    for entry in describer.broker(None):
        name = entry["name"]
        synonyms = ", ".join(
            f"{SOURCES[s['source']]}:{s['name']}={_java(s['value'])}" for s in entry["synonyms"]
        )
        sensitive = "true" if entry["is_sensitive"] else "false"
        lines.append(
            f"  {name}={_java(entry['value'])} sensitive={sensitive} "
            f"source={key_source(config, layers, name)} synonyms={{{synonyms}}}"
        )
    return lines


# --- healthcheck ----------------------------------------------------------------------------


def healthcheck_target(config: BrokerConfig) -> tuple[str, int, bool]:
    """Where a local health check connects: the first listener, wildcards made loopback, and
    whether that listener speaks TLS (SSL, SASL_SSL)."""
    name, host, port = config.listeners[0]
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    tls = config.security_protocols().get(name, "PLAINTEXT") in ("SSL", "SASL_SSL")
    return host, port, tls


def api_versions_round_trip(host: str, port: int, timeout: float = 5.0, tls: bool = False) -> int:
    """Send ApiVersions v3 and read the answer; the number of APIs the broker offers. With
    `tls`, over TLS without checking the certificate (a liveness probe of the local broker;
    ApiVersions is served before SASL authentication, and without a client certificate
    unless ssl.client.auth=required).

    Raises OSError if the broker can't be reached or answers badly.
    """
    from protocol import codec
    from protocol.apis import ApiKey

    body = {"client_software_name": "pykbroker-healthcheck", "client_software_version": "1"}
    request = codec.encode_request(ApiKey.API_VERSIONS, 3, 1, "pykbroker-healthcheck", body)
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
        if tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            sock = stack.enter_context(ctx.wrap_socket(sock))
        sock.sendall(request)
        buf = b""
        size = None
        while size is None or len(buf) < 4 + size:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("connection closed before a response")
            buf += chunk
            if size is None and len(buf) >= 4:
                size = int.from_bytes(buf[:4], "big")
    frame = buf[4 : 4 + size]
    if int.from_bytes(frame[:4], "big") != 1:
        raise OSError("response with the wrong correlation id")
    response = codec.decode_response(ApiKey.API_VERSIONS, 3, frame, 4)
    if response.error_code != 0:
        raise OSError(f"ApiVersions error code {response.error_code}")
    return len(response.api_keys)


def healthcheck_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="pykbroker healthcheck",
        description="One ApiVersions round trip to a broker: exit 0 if it answered, 1 if not. "
        "Without --bootstrap-server it checks the first listener of the given configuration.",
    )
    _add_config_args(p)
    p.add_argument("--bootstrap-server", metavar="HOST:PORT", help="the broker to check")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    p.add_argument("--tls", action="store_true",
                   help="with --bootstrap-server: the broker's listener speaks TLS (SSL, "
                   "SASL_SSL); without it, taken from the first listener's protocol")  # fmt: skip
    args = p.parse_args(argv)
    try:
        if args.bootstrap_server:
            host, _, port = args.bootstrap_server.rpartition(":")
            host, port, tls = host.strip("[]") or "127.0.0.1", int(port), args.tls
        else:
            host, port, tls = healthcheck_target(build_config(args))
    except (ConfigError, OSError, ValueError) as e:
        print(f"pykbroker healthcheck: {e}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        apis = api_versions_round_trip(host, port, args.timeout, tls)
    except Exception as e:  # refused, timed out, or not a Kafka answer: all unhealthy
        print(f"UNHEALTHY: {host}:{port}: {e}", file=sys.stderr)
        return 1
    ms = (time.monotonic() - started) * 1000
    print(f"OK: {host}:{port} answered ApiVersions ({apis} APIs) in {ms:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

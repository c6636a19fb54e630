"""Shared plumbing of Kafka's command-line tools (kafka-topics, kafka-configs, ...).

The tools are thin clients over the wire protocol, built on kafka-python, so they work against
any Kafka broker. What they share: Kafka-style option parsing (`--bootstrap-server`, `--help`,
usage errors exit 1), client properties from `--command-config` / `--command-property`, Kafka's
names for errors, and a way to send a raw request and read its per-resource error messages
(kafka-python's high-level admin calls drop some of them).
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import sys
import textwrap
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from pykbroker.config import load_properties

DEFAULT_BOOTSTRAP = "localhost:9092"


class CommandError(Exception):
    """A failure to report as one line on stderr (or stdout), then exit with `code`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(CommandError):
    """Bad command line: the message on stderr; exit 1 (like jopt-simple)."""


class ExecutionError(CommandError):
    """The command failed while running (unreachable cluster, an error it returned, ...), as
    opposed to a bad argument; Kafka's tools report the two differently."""


class ToolParser(argparse.ArgumentParser):
    """argparse that behaves like Kafka's tools: jopt-style help, usage errors exit 1."""

    def __init__(self, prog: str, description: str, **kwargs: Any):
        kwargs.setdefault("add_help", False)
        super().__init__(prog=prog, description=description, **kwargs)
        self.add_argument("--help", action="help", help="Print usage information.")
        self.add_argument(
            "--version", action="version", version=_version(), help="Display the version."
        )

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def format_help(self) -> str:
        """Kafka's (jopt-simple) layout: the description, then an Option/Description table."""
        width = 41
        lines = [self.description or "", "Option".ljust(width) + "Description",
                 "------".ljust(width) + "-----------"]  # fmt: skip
        actions = [a for a in self._actions if a.option_strings]
        for action in sorted(actions, key=lambda a: a.option_strings[-1].lstrip("-")):
            left = ", ".join(action.option_strings)
            if action.nargs != 0:
                left += " " + (action.metavar or f"<{action.dest}>")
            text = (action.help or "") % {"default": action.default}
            desc = []
            for para in text.split("\n"):
                desc.extend(textwrap.wrap(para, 38) or [""])
            if len(left) >= width:
                lines.append(left)
                lines.extend(" " * width + d for d in desc)
            else:
                lines.append(left.ljust(width) + desc[0])
                lines.extend(" " * width + d for d in desc[1:])
        return "\n".join(line.rstrip() for line in lines) + "\n"

    def print_help(self, file=None) -> None:
        (file or sys.stdout).write(self.format_help())


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"{version('pykbroker')} (pykbroker)"
    except Exception:
        return "pykbroker"


def add_bootstrap_server(parser: argparse.ArgumentParser, required_note: bool = True) -> None:
    parser.add_argument(
        "--bootstrap-server",
        metavar="<String: server to connect to>",
        help=("REQUIRED: " if required_note else "")
        + "The Kafka server(s) to connect to, host:port[,host:port...].",
    )
    parser.add_argument(
        "--command-config",
        metavar="<String: config file>",
        help="Property file containing configs to be passed to the client "
        "(Kafka's client keys, e.g. client.id, request.timeout.ms, security.protocol).",
    )


def bootstrap_servers(value: str | None, required: bool = True) -> list[str]:
    """Split a --bootstrap-server value into host:port strings."""
    if not value:
        if required:
            raise CommandError("--bootstrap-server must be specified")
        value = DEFAULT_BOOTSTRAP
    servers = [s.strip() for s in value.split(",") if s.strip()]
    if not servers:
        raise CommandError(f"Invalid --bootstrap-server value: {value!r}")
    return servers


def parse_key_value_args(items: Iterable[str] | None, what: str = "property") -> dict[str, str]:
    """key=value strings (Kafka's CommandLineUtils.parseKeyValueArgs): split at the first '='."""
    props: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise CommandError(f"Invalid {what} {item!r}: expected key=value")
        key, value = item.split("=", 1)
        props[key.strip()] = value
    return props


def client_properties(command_config: str | None, extra: dict[str, str] | None = None) -> dict:
    """Kafka client properties (file, then command-line overrides) as a plain dict."""
    props: dict[str, str] = {}
    if command_config:
        try:
            props.update(load_properties(command_config))
        except OSError as e:
            raise CommandError(f"Unable to read {command_config}: {e.strerror}") from None
    props.update(extra or {})
    return props


def client_kwargs(props: dict[str, str], accepted: Iterable[str]) -> dict[str, Any]:
    """Map Kafka's dotted client keys to kafka-python keyword arguments it accepts.

    Unknown keys are reported and ignored, as the Java clients do ("supplied but isn't a known
    config").
    """
    accepted = set(accepted)
    kwargs: dict[str, Any] = {}
    props = dict(props)
    jaas = props.pop("sasl.jaas.config", None)
    if jaas is not None:
        kwargs.update(_jaas_credentials(jaas))
    kwargs.update(_pem_stores(props))
    for key, raw in props.items():
        name = key.replace(".", "_").replace("-", "_")
        if name not in accepted or name == "bootstrap_servers":
            if name != "bootstrap_servers":
                warn(f"The configuration '{key}' was supplied but isn't a known config.")
            continue
        kwargs[name] = _coerce(raw)
    return kwargs


def _jaas_credentials(text: str) -> dict[str, str]:
    """A Java client's `sasl.jaas.config` (PlainLoginModule / ScramLoginModule with username
    and password) as kafka-python's sasl_plain_username / sasl_plain_password."""
    from pykbroker.config import ConfigError
    from pykbroker.security.jaas import parse_jaas_config

    try:
        entries = parse_jaas_config(text)
    except ConfigError as e:
        raise CommandError(f"Invalid sasl.jaas.config: {e}") from None
    options = entries[0].options if entries else {}
    out = {}
    if "username" in options:
        out["sasl_plain_username"] = options["username"]
    if "password" in options:
        out["sasl_plain_password"] = options["password"]
    return out


def _pem_stores(props: dict[str, str]) -> dict[str, Any]:
    """A Java client's PEM stores (taken out of `props`) as kafka-python's TLS arguments:
    ssl.truststore.location -> ssl_cafile, ssl.keystore.location (key and chain in one file)
    -> ssl_certfile/ssl_keyfile, ssl.key.password -> ssl_password; an empty
    ssl.endpoint.identification.algorithm turns the host name check off."""
    out: dict[str, Any] = {}
    for key in ("ssl.truststore.type", "ssl.keystore.type"):
        kind = props.pop(key, "PEM")
        if kind.upper() != "PEM":
            raise CommandError(f"{key}={kind}: only PEM stores can be read (type PEM)")
    if "ssl.truststore.location" in props:
        out["ssl_cafile"] = props.pop("ssl.truststore.location")
    if "ssl.keystore.location" in props:
        out["ssl_certfile"] = out["ssl_keyfile"] = props.pop("ssl.keystore.location")
    if "ssl.key.password" in props:
        out["ssl_password"] = props.pop("ssl.key.password")
    if props.get("ssl.endpoint.identification.algorithm") == "":
        del props["ssl.endpoint.identification.algorithm"]
        out["ssl_check_hostname"] = False
    return out


def _coerce(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        return raw


def quiet_client_logging() -> None:
    """kafka-python logs connection chatter; the tools report failures themselves."""
    level = os.environ.get("PYKBROKER_CLI_LOG_LEVEL", "CRITICAL").upper()
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s] %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(getattr(logging, level, logging.CRITICAL))


def admin_client(bootstrap: list[str], props: dict[str, str] | None = None):
    """A KafkaAdminClient for a tool; connection failures become one CommandError line."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    kwargs = {"client_id": "pykbroker-admin", "bootstrap_timeout_ms": 30000}
    kwargs.update(client_kwargs(props or {}, KafkaAdminClient.DEFAULT_CONFIG))
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **kwargs)
    except KafkaError as e:
        raise ExecutionError(
            f"Unable to connect to {','.join(bootstrap)}: {describe_client_error(e)}"
        ) from None
    route_around_unreachable_brokers(admin._manager)
    return admin


def route_around_unreachable_brokers(manager) -> None:
    """Send requests that may go to any broker to another one when the chosen one can't be
    reached, as Kafka's AdminClient does.

    kafka-python sends such requests (Metadata, DescribeConfigs of topics, FindCoordinator, ...)
    to one broker it picks from the cluster metadata and gives up if that broker refuses the
    connection. A broker that has just died stays in the metadata until ZooKeeper expires its
    session (`zookeeper.session.timeout.ms`), so without this a tool run in that window fails
    with `111 ECONNREFUSED` about a third of the time on three brokers. Requests aimed at one
    broker (a broker's configs, a group's coordinator) still go only there.
    """
    from kafka import errors

    retry_elsewhere = (errors.KafkaConnectionError, errors.NodeNotReadyError)
    send_to = manager.send

    async def send(request, node_id=None, request_timeout_ms=None):
        if node_id is not None:
            return await send_to(request, node_id=node_id, request_timeout_ms=request_timeout_ms)
        tried: set = set()
        last_error: Exception | None = None
        while True:
            node = manager.least_loaded_node()
            if node is None or node in tried:
                untried = [b.node_id for b in manager.cluster.brokers() if b.node_id not in tried]
                if not untried:
                    if last_error is not None:
                        raise last_error
                    # No metadata yet: let kafka-python pick (and fail) as it would.
                    return await send_to(request, request_timeout_ms=request_timeout_ms)
                node = untried[0]
            try:
                return await send_to(request, node_id=node, request_timeout_ms=request_timeout_ms)
            except retry_elsewhere as e:
                tried.add(node)
                last_error = e

    manager.send = send


def send(admin, request, node_id: int | None = None):
    """Send one request with an admin client and return the decoded response (no error checks)."""

    async def call():
        return await admin._manager.send(request, node_id=node_id)

    return admin._manager.run(call)


# --- errors -------------------------------------------------------------------------------------

# Kafka's exception class for an error code, where it isn't the code's name in CamelCase.
_EXCEPTION_NAMES = {
    3: "UnknownTopicOrPartitionException",
    6: "NotLeaderOrFollowerException",
    17: "InvalidTopicException",
    29: "TopicAuthorizationException",
    31: "ClusterAuthorizationException",
    36: "TopicExistsException",
    37: "InvalidPartitionsException",
    38: "InvalidReplicationFactorException",
    39: "InvalidReplicaAssignmentException",
    40: "InvalidConfigurationException",
    42: "InvalidRequestException",
    44: "PolicyViolationException",
    73: "TopicDeletionDisabledException",
    91: "ResourceNotFoundException",
    100: "UnknownTopicIdException",
}


def exception_name(code: int) -> str:
    """Kafka's fully qualified exception class for an error code."""
    from protocol.errors import ErrorCode

    name = _EXCEPTION_NAMES.get(code)
    if name is None:
        try:
            words = ErrorCode(code).name.lower().split("_")
        except ValueError:
            words = ["unknown", "server"]
        name = "".join(w.capitalize() for w in words)
        if not name.endswith("Exception"):
            name += "Exception"
    return f"org.apache.kafka.common.errors.{name}"


# Kafka's default messages (the Errors enum) where kafka-python's description differs.
_KAFKA_MESSAGES = {
    29: "Topic authorization failed.",
    30: "Group authorization failed.",
    31: "Cluster authorization failed.",
    53: "Transactional Id authorization failed.",
    54: "Security features are disabled.",
}


def broker_error_message(code: int, message: str | None) -> str:
    """The broker's message for an error, or Kafka's default text for its code."""
    if message:
        return message
    if code in _KAFKA_MESSAGES:
        return _KAFKA_MESSAGES[code]
    from kafka import errors

    cls = errors.for_code(code)
    return cls.description or cls.message or f"Error code {code}"


class BrokerError(ExecutionError):
    """An error code (and message) a broker returned for one resource."""

    def __init__(self, code: int, message: str | None):
        self.error_code = code
        super().__init__(broker_error_message(code, message))

    @property
    def qualified(self) -> str:
        return f"{exception_name(self.error_code)}: {self.message}"


def check(code: int, message: str | None = None) -> None:
    if code:
        raise BrokerError(code, message)


def describe_client_error(e: BaseException) -> str:
    """One line for a kafka-python exception (no '[Error N]' prefixes)."""
    from kafka import errors

    if isinstance(e, getattr(errors, "NoBrokersAvailable", ())):
        return "no broker is reachable"
    if isinstance(e, errors.KafkaTimeoutError):
        return "timed out waiting for the broker"
    text = e.args[0] if e.args else type(e).__name__
    return str(text)


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def run_tool(main, argv: Sequence[str] | None, report=None) -> int:
    """Run a tool's body and turn failures into Kafka-style output and an exit code.

    `main(args)` returns an exit code (None: 0). Usage errors print their message to stderr and
    exit 1. Other CommandErrors (kafka-python errors become ExecutionErrors) go to `report(error)`,
    by default their message on stderr: each tool decides how Kafka's version shows them.
    """
    from kafka.errors import KafkaError

    report = report or (lambda e: print(e.message, file=sys.stderr))
    try:
        return main(list(sys.argv[1:] if argv is None else argv)) or 0
    except UsageError as e:
        print(e.message, file=sys.stderr)
        return e.code
    except CommandError as e:
        report(e)
        return e.code
    except KafkaError as e:
        error = ExecutionError(describe_client_error(e))
        report(error)
        return error.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Downstream closed (e.g. `| head`): stop quietly, like Kafka's checkError.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 1


# --- formatting ---------------------------------------------------------------------------------


def kafka_uuid(value: uuid.UUID | str | None) -> str:
    """A topic id as Kafka prints it: 22 characters of URL-safe base64."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = uuid.UUID(value)
    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


ZERO_UUID = uuid.UUID(int=0)


def bound_record_decompression(limit: int | None = None) -> None:
    """kafka-python decompresses fetched batches without a bound; the tools read through
    protocol.compression instead, which stops at `limit` bytes a batch (the broker's bound by
    default) and raises kafka-python's CorruptRecordError for a batch that inflates past it or
    does not decompress, rather than expanding it."""
    import kafka.record.default_records as default_records
    from kafka.errors import CorruptRecordError

    from protocol import compression

    limit = compression.DEFAULT_LIMIT if limit is None else limit

    def bounded(codec: int):
        def decode(data):
            try:
                return bytes(compression.decompress(codec, data, limit))
            except compression.DecompressionError as e:
                raise CorruptRecordError(f"Unreadable record batch: {e}") from None

        return decode

    default_records.gzip_decode = bounded(compression.GZIP)
    default_records.snappy_decode = bounded(compression.SNAPPY)
    default_records.lz4_decode = bounded(compression.LZ4)
    default_records.zstd_decode = bounded(compression.ZSTD)

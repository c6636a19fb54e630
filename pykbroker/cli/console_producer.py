"""kafka-console-producer: one record per line of standard input (Apache Kafka's ConsoleProducer).

    echo 'user1:hello' | kafka-console-producer --topic t --bootstrap-server localhost:9092 \
        --property parse.key=true --property key.separator=:

Reader properties are Kafka's LineMessageReader's: parse.key, key.separator (default tab),
parse.headers, headers.delimiter, headers.separator, headers.key.separator, null.marker,
ignore.error. A `>` prompt is shown when reading from a terminal.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

from . import common
from .common import CommandError, ToolParser, UsageError

DESCRIPTION = "This tool helps to read data from standard input and publish it to Kafka."
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def build_parser() -> ToolParser:
    p = ToolParser("kafka-console-producer", DESCRIPTION)
    common.add_bootstrap_server(p)
    p.add_argument(
        "--topic",
        metavar="<String: topic>",
        help="REQUIRED: The topic name to produce messages to.",
    )
    p.add_argument(
        "--property",
        "--reader-property",
        dest="property",
        action="append",
        default=[],
        metavar="<String: prop>",
        help="A mechanism to pass user-defined properties in the form key=value to "
        "the message reader: parse.key, key.separator, parse.headers, "
        "headers.delimiter, headers.separator, headers.key.separator, null.marker, "
        "ignore.error.",
    )
    p.add_argument(
        "--reader-config",
        metavar="<String: config file>",
        help="Config properties file for the message reader. Note that --property "
        "takes precedence over this config.",
    )
    p.add_argument(
        "--producer-property",
        "--command-property",
        dest="producer_property",
        action="append",
        default=[],
        metavar="<String: producer_prop>",
        help="Producer config properties in the form key=value.",
    )
    p.add_argument(
        "--producer.config",
        dest="producer_config",
        metavar="<String: config file>",
        help="Producer config properties file. Note that --producer-property takes "
        "precedence over this config.",
    )
    p.add_argument(
        "--compression-codec",
        nargs="?",
        const="gzip",
        metavar="[String: compression-codec]",
        help="The compression codec: either 'none', 'gzip', 'snappy', 'lz4', or "
        "'zstd'. If specified without value, then it defaults to 'gzip'",
    )
    p.add_argument(
        "--sync",
        action="store_true",
        help="If set message send requests to the brokers are synchronously, one at a "
        "time as they arrive.",
    )
    p.add_argument(
        "--request-required-acks",
        default="-1",
        metavar="<String: request required acks>",
        help="The required acks of the producer requests (default: -1)",
    )
    p.add_argument(
        "--request-timeout-ms",
        type=int,
        default=1500,
        metavar="<Integer: request timeout ms>",
        help="The ack timeout of the producer requests. Value must be non-negative and "
        "non-zero. (default: 1500)",
    )
    p.add_argument(
        "--timeout",
        type=int,
        default=1000,
        metavar="<Long: timeout_ms>",
        help="If set and the producer is running in asynchronous mode, this gives the "
        "maximum amount of time a message will queue awaiting sufficient batch size. "
        "(default: 1000)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=16384,
        metavar="<Integer: size>",
        help="Number of messages to send in a single batch if they are not being sent "
        "synchronously. (default: 16384)",
    )
    p.add_argument(
        "--max-block-ms",
        type=int,
        default=60000,
        metavar="<Long: max block on send>",
        help="The max time that the producer will block for during a send request. "
        "(default: 60000)",
    )
    p.add_argument(
        "--message-send-max-retries",
        type=int,
        default=3,
        metavar="<Integer>",
        help="The number of retries before the producer gives up. (default: 3)",
    )
    p.add_argument("--retry-backoff-ms", type=int, default=100, metavar="<Long>",
                   help="Backoff before retrying a failed send. (default: 100)")  # fmt: skip
    return p


@dataclass
class LineReader:
    """Kafka's LineMessageReader: splits a line into headers, key and value."""

    parse_key: bool = False
    key_separator: str = "\t"
    parse_headers: bool = False
    headers_delimiter: str = "\t"
    headers_separator: str = ","
    headers_key_separator: str = ":"
    ignore_error: bool = False
    null_marker: str | None = None
    line_number: int = 0

    @classmethod
    def configure(cls, props: dict[str, str]) -> LineReader:
        r = cls()
        truthy = lambda k: props[k].strip().lower() == "true"  # noqa: E731
        if "parse.key" in props:
            r.parse_key = truthy("parse.key")
        if "parse.headers" in props:
            r.parse_headers = truthy("parse.headers")
        if "ignore.error" in props:
            r.ignore_error = truthy("ignore.error")
        for name in ("key.separator", "headers.delimiter", "headers.separator",
                     "headers.key.separator", "null.marker"):  # fmt: skip
            if name in props:
                setattr(r, name.replace(".", "_"), props[name])
        distinct = [("headers.delimiter", "headers.separator"),
                    ("headers.delimiter", "headers.key.separator"),
                    ("headers.separator", "headers.key.separator")]  # fmt: skip
        for a, b in distinct:
            if getattr(r, a.replace(".", "_")) == getattr(r, b.replace(".", "_")):
                raise CommandError(f"{a} and {b} may not be equal")
        if r.null_marker is not None:
            for other in ("key.separator", "headers.separator", "headers.delimiter",
                          "headers.key.separator"):  # fmt: skip
                if getattr(r, other.replace(".", "_")) == r.null_marker:
                    raise CommandError(f"null.marker and {other} may not be equal")
        return r

    def _split(self, enabled: bool, line: str, start: int, sep: str, what: str) -> str | None:
        if not enabled:
            return None
        i = line.find(sep, start)
        if i == -1:
            if self.ignore_error:
                return None
            raise CommandError(f"No {what} found on line number {self.line_number}: '{line}'")
        return line[start:i]

    def _bytes(self, text: str | None) -> bytes | None:
        if text is None or text == self.null_marker:
            return None
        return text.encode("utf-8")

    def parse(self, line: str) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]:
        """(key, value, headers) of one line (without its newline)."""
        self.line_number += 1
        headers_text = self._split(self.parse_headers, line, 0, self.headers_delimiter,
                                   "headers delimiter")  # fmt: skip
        offset = 0 if headers_text is None else len(headers_text) + len(self.headers_delimiter)
        key = self._split(self.parse_key, line, offset, self.key_separator, "key separator")
        offset += 0 if key is None else len(key) + len(self.key_separator)
        headers = []
        if headers_text is not None and headers_text != self.null_marker:
            for pair in headers_text.split(self.headers_separator):
                i = pair.find(self.headers_key_separator)
                if i == -1:
                    if self.ignore_error:
                        headers.append((pair, None))
                        continue
                    raise CommandError(
                        f"No header key separator found in pair '{pair}' on line number "
                        f"{self.line_number}"
                    )
                name = pair[:i]
                if name == self.null_marker:
                    raise CommandError(
                        f"Header keys should not be equal to the null marker '{self.null_marker}' "
                        "as they can't be null"
                    )
                headers.append((name, self._bytes(pair[i + len(self.headers_key_separator) :])))
        return self._bytes(key), self._bytes(line[offset:]), headers


def producer_config(args) -> dict:
    from kafka import KafkaProducer

    acks = args.request_required_acks.strip().lower()
    if acks not in ("all", "-1", "0", "1"):
        raise UsageError(f"Invalid value {args.request_required_acks} for --request-required-acks")
    codec = args.compression_codec or "none"
    if codec not in CODECS:
        raise UsageError(f"Invalid compression codec {codec}: use one of {', '.join(CODECS)}")
    config = {
        "client_id": "console-producer",
        "acks": "all" if acks in ("all", "-1") else int(acks),
        "compression_type": None if codec == "none" else codec,
        "linger_ms": 0 if args.sync else args.timeout,
        "batch_size": args.batch_size,
        "max_block_ms": args.max_block_ms,
        "retries": args.message_send_max_retries,
        "retry_backoff_ms": args.retry_backoff_ms,
    }
    props = common.client_properties(
        args.producer_config or args.command_config,
        common.parse_key_value_args(args.producer_property, "producer property"),
    )
    config.update(common.client_kwargs(props, KafkaProducer.DEFAULT_CONFIG))
    return config


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.topic:
        raise UsageError('Missing required argument "[topic]"')
    if not args.bootstrap_server:
        raise UsageError('Missing required argument "[bootstrap-server]"')
    reader_props = common.client_properties(args.reader_config)
    reader_props.update(common.parse_key_value_args(args.property))
    reader = LineReader.configure(reader_props)
    config = producer_config(args)
    common.quiet_client_logging()
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        producer = KafkaProducer(
            bootstrap_servers=common.bootstrap_servers(args.bootstrap_server), **config
        )
    except KafkaError as e:
        raise common.ExecutionError(
            f"Unable to connect to {args.bootstrap_server}: {common.describe_client_error(e)}"
        ) from None
    prompt = sys.stdin.isatty() and sys.stdout.isatty()
    # Lines are UTF-8 whatever the locale, as Kafka's reader reads them.
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline=None)
    failure: CommandError | None = None
    try:
        while True:
            if prompt:
                sys.stdout.write(">")
                sys.stdout.flush()
            line = stdin.readline()
            if not line:
                break
            key, value, headers = reader.parse(line.rstrip("\r\n"))
            future = producer.send(args.topic, key=key, value=value, headers=headers or None)
            future.add_errback(_log_send_error, args.topic, key, value)
            if args.sync:
                try:
                    future.get()
                except KafkaError:
                    pass  # already reported by the errback
    except CommandError as e:
        failure = e
    except KeyboardInterrupt:
        pass
    finally:
        producer.close()
    if failure is not None:
        raise failure
    return 0


def _log_send_error(error, topic: str, key: bytes | None, value: bytes | None) -> None:
    key_text = "null" if key is None else key.decode("utf-8", "replace")
    size = -1 if value is None else len(value)
    print(
        f"Error when sending message to topic {topic} with key: {key_text}, value: {size} bytes "
        f"with error: {common.describe_client_error(error)}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    return common.run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())

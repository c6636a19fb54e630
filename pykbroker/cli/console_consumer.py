"""kafka-console-consumer: print records to standard output (Apache Kafka's ConsoleConsumer).

    kafka-console-consumer --topic t --from-beginning --bootstrap-server localhost:9092 \
        --property print.key=true --max-messages 10

Formatter properties are Kafka's DefaultMessageFormatter's: print.timestamp, print.key,
print.offset, print.partition, print.headers, print.value, key.separator, line.separator,
headers.separator, null.literal. With --group the consumer joins that consumer group (and
commits its offsets); without one it reads the topic's partitions directly, committing nothing,
which is what Kafka's tool does with its throw-away group. When it stops it prints
`Processed a total of N messages` on stderr.
"""

from __future__ import annotations

import re
import signal
import sys
import time

from . import common
from .common import ToolParser, UsageError

DESCRIPTION = "This tool helps to read data from Kafka topics and outputs it to standard output."
EARLIEST, LATEST = -2, -1


def build_parser() -> ToolParser:
    p = ToolParser("kafka-console-consumer", DESCRIPTION)
    common.add_bootstrap_server(p)
    p.add_argument("--topic", metavar="<String: topic>", help="The topic to consume from.")
    p.add_argument(
        "--include",
        metavar="<String: Java regex (String)>",
        help="Regular expression specifying list of topics to include for consumption.",
    )
    p.add_argument(
        "--partition",
        type=int,
        metavar="<Integer: partition>",
        help="The partition to consume from. Consumption starts from the end of the "
        "partition unless '--offset' is specified.",
    )
    p.add_argument(
        "--offset",
        metavar="<String: consume offset>",
        help="The offset to consume from (a non-negative number), or 'earliest' which "
        "means from beginning, or 'latest' which means from end (default: latest)",
    )
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="If the consumer does not already have an established offset to consume "
        "from, start with the earliest message present in the log rather than the "
        "latest message.",
    )
    p.add_argument(
        "--max-messages",
        type=int,
        metavar="<Integer: num_messages>",
        help="The maximum number of messages to consume before exiting. If not set, "
        "consumption is continual.",
    )
    p.add_argument(
        "--timeout-ms",
        type=int,
        metavar="<Long: timeout_ms>",
        help="If specified, exit if no message is available for consumption for the "
        "specified interval.",
    )
    p.add_argument(
        "--group",
        metavar="<String: consumer group id>",
        help="The consumer group id of the consumer.",
    )
    p.add_argument(
        "--property",
        "--formatter-property",
        dest="property",
        action="append",
        default=[],
        metavar="<String: prop>",
        help="The properties to initialize the message formatter. Default properties "
        "include:\n print.timestamp=true|false\n print.key=true|false\n "
        "print.offset=true|false\n print.partition=true|false\n "
        "print.headers=true|false\n print.value=true|false\n "
        "key.separator=<key.separator>\n line.separator=<line.separator>\n "
        "headers.separator=<headers.separator>\n null.literal=<null.literal>",
    )
    p.add_argument(
        "--formatter-config",
        metavar="<String: config file>",
        help="Config properties file to initialize the message formatter. Note that "
        "--property takes precedence over this config.",
    )
    p.add_argument(
        "--formatter",
        metavar="<String: class>",
        help="The name of a class to use for formatting kafka messages for display. "
        "Only the default formatter is available.",
    )
    p.add_argument(
        "--consumer-property",
        "--command-property",
        dest="consumer_property",
        action="append",
        default=[],
        metavar="<String: consumer_prop>",
        help="Consumer config properties in the form key=value.",
    )
    p.add_argument(
        "--consumer.config",
        dest="consumer_config",
        metavar="<String: config file>",
        help="Consumer config properties file. Note that --consumer-property takes "
        "precedence over this config.",
    )
    p.add_argument(
        "--isolation-level",
        default="read_uncommitted",
        metavar="<String>",
        help="Set to read_committed in order to filter out transactional messages "
        "which are not committed. Set to read_uncommitted to read all messages. "
        "(default: read_uncommitted)",
    )
    p.add_argument("--skip-message-on-error", action="store_true",
                   help="If there is an error when processing a message, skip it instead of "
                   "halt.")  # fmt: skip
    return p


class MessageFormatter:
    """Kafka's DefaultMessageFormatter, writing bytes."""

    def __init__(self, props: dict[str, str]):
        flag = lambda k, d: props[k].strip().lower() == "true" if k in props else d  # noqa: E731
        self.print_timestamp = flag("print.timestamp", False)
        self.print_key = flag("print.key", False)
        self.print_offset = flag("print.offset", False)
        self.print_partition = flag("print.partition", False)
        self.print_headers = flag("print.headers", False)
        self.print_value = flag("print.value", True)
        text = lambda k, d: props.get(k, d).encode("utf-8")  # noqa: E731
        self.key_separator = text("key.separator", "\t")
        self.line_separator = text("line.separator", "\n")
        self.headers_separator = text("headers.separator", ",")
        self.null_literal = text("null.literal", "null")

    def format(self, record) -> bytes:
        fields: list[bytes] = []
        if self.print_timestamp:
            kind = {0: "CreateTime", 1: "LogAppendTime"}.get(record.timestamp_type)
            fields.append(f"{kind}:{record.timestamp}".encode() if kind else b"NO_TIMESTAMP")
        if self.print_partition:
            fields.append(f"Partition:{record.partition}".encode())
        if self.print_offset:
            fields.append(f"Offset:{record.offset}".encode())
        if self.print_headers:
            headers = list(record.headers or [])
            if not headers:
                fields.append(b"NO_HEADERS")
            else:
                fields.append(self.headers_separator.join(
                    k.encode("utf-8") + b":" + self._bytes(v) for k, v in headers
                ))  # fmt: skip
        if self.print_key:
            fields.append(self._bytes(record.key))
        if self.print_value:
            fields.append(self._bytes(record.value))
        if not fields:
            return b""
        return self.key_separator.join(fields) + self.line_separator

    def _bytes(self, value: bytes | None) -> bytes:
        return self.null_literal if value is None else bytes(value)


def parse_offset(args) -> int:
    text = args.offset
    if text is None:
        return EARLIEST if args.from_beginning else LATEST
    if text.lower() == "earliest":
        return EARLIEST
    if text.lower() == "latest":
        return LATEST
    if re.fullmatch(r"[0-9]+", text):
        return int(text)
    raise UsageError(
        f"The provided offset value '{text}' is incorrect. Valid values are 'earliest', 'latest', "
        "or a non-negative long."
    )


def check_args(args) -> None:
    if (args.topic is None) == (args.include is None):
        raise UsageError("Exactly one of the following arguments is required: [topic], [include]")
    if args.partition is not None:
        if args.topic is None:
            raise UsageError("The topic is required when partition is specified.")
        if args.from_beginning and args.offset is not None:
            raise UsageError("Options from-beginning and offset cannot be specified together.")
        if args.group:
            raise UsageError("Options group and partition cannot be specified together.")
    elif args.offset is not None:
        raise UsageError("The partition is required when offset is specified.")
    if not args.bootstrap_server:
        raise UsageError('Missing required argument "[bootstrap-server]"')
    if args.formatter and not args.formatter.endswith("DefaultMessageFormatter"):
        raise UsageError(f"Formatter {args.formatter} is not available; only the default one is")
    if args.isolation_level not in ("read_committed", "read_uncommitted"):
        raise UsageError(f"Invalid isolation level {args.isolation_level}")


def consumer_config(args) -> dict:
    from kafka import KafkaConsumer

    config = {
        "client_id": "console-consumer",
        "group_id": args.group,
        "enable_auto_commit": args.group is not None,
        "auto_offset_reset": "earliest" if args.from_beginning else "latest",
        "isolation_level": args.isolation_level,
    }
    props = common.client_properties(
        args.consumer_config or args.command_config,
        common.parse_key_value_args(args.consumer_property, "consumer property"),
    )
    if "group.id" in props and args.group and props["group.id"] != args.group:
        raise UsageError(
            "The group ids provided in different places (directly using '--group', via "
            "'--consumer-property', or via '--consumer.config') do not match. Detected group ids: "
            f"'{args.group}', '{props['group.id']}'"
        )
    config.update(common.client_kwargs(props, KafkaConsumer.DEFAULT_CONFIG))
    return config


def start(consumer, args) -> None:
    """Subscribe (with a group) or assign partitions and seek (without one)."""
    from kafka import TopicPartition

    if args.partition is not None:
        tps = [TopicPartition(args.topic, args.partition)]
        offset = parse_offset(args)
    elif consumer.config["group_id"] is not None:
        if args.topic is not None:
            consumer.subscribe([args.topic])
        else:
            consumer.subscribe(pattern=_java_regex(args.include))
        return
    else:
        if args.topic is not None:
            topics = [args.topic]
        else:
            pattern = re.compile(_java_regex(args.include))
            topics = sorted(t for t in consumer.topics() if pattern.fullmatch(t))
        tps = [TopicPartition(t, p) for t in topics for p in sorted(_partitions(consumer, t))]
        offset = EARLIEST if args.from_beginning else LATEST
    consumer.assign(tps)
    if offset == EARLIEST:
        consumer.seek_to_beginning(*tps)
    elif offset == LATEST:
        consumer.seek_to_end(*tps)
    else:
        for tp in tps:
            consumer.seek(tp, offset)


def _java_regex(text: str) -> str:
    return text.strip().replace(",", "|").replace(" ", "").strip("\"'")


def _partitions(consumer, topic: str) -> set[int]:
    """The topic's partitions, waiting for metadata (a missing topic may be auto-created)."""
    deadline = time.monotonic() + 30
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return parts
        if time.monotonic() > deadline:
            raise common.ExecutionError(f"Topic {topic} not present in metadata after 30000 ms.")
        time.sleep(0.1)


class Counter:
    value = 0


def consume(consumer, formatter: MessageFormatter, args, out, counter: Counter) -> None:
    count = 0
    limit = args.max_messages if args.max_messages is not None and args.max_messages >= 0 else None
    timeout = args.timeout_ms if args.timeout_ms is not None and args.timeout_ms >= 0 else None
    last = time.monotonic()
    from kafka.errors import CorruptRecordError

    while limit is None or count < limit:
        wait_ms = 1000 if timeout is None else max(min(timeout, 1000), 1)
        try:
            batch = consumer.poll(
                timeout_ms=wait_ms, max_records=None if limit is None else limit - count
            )
        except CorruptRecordError as e:  # Kafka's ConsoleConsumer stops there, as here
            print(f"ERROR Error processing message, terminating consumer process: {e}",
                  file=sys.stderr)  # fmt: skip
            return
        records = [r for tp_records in batch.values() for r in tp_records]
        if not records:
            if timeout is not None and (time.monotonic() - last) * 1000 >= timeout:
                break
            continue
        last = time.monotonic()
        for record in records:
            count += 1
            counter.value = count
            try:
                out.write(formatter.format(record))
            except Exception:
                if not args.skip_message_on_error:
                    raise
            out.flush()


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(args)
    parse_offset(args)
    props = common.client_properties(args.formatter_config)
    props.update(common.parse_key_value_args(args.property))
    formatter = MessageFormatter(props)
    config = consumer_config(args)
    common.quiet_client_logging()
    common.bound_record_decompression()
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=common.bootstrap_servers(args.bootstrap_server), **config
        )
    except KafkaError as e:
        raise common.ExecutionError(
            f"Unable to connect to {args.bootstrap_server}: {common.describe_client_error(e)}"
        ) from None
    counter = Counter()
    out = sys.stdout.buffer
    interrupted = False
    try:
        start(consumer, args)
        consume(consumer, formatter, args, out, counter)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            consumer.close()
        finally:
            print(f"Processed a total of {counter.value} messages", file=sys.stderr)
    return 130 if interrupted else 0


def main(argv: list[str] | None = None) -> int:
    return common.run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())

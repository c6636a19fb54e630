"""kafka-console-share-consumer: read a topic as a member of a share group and print the records
(Apache Kafka's ConsoleShareConsumer, KIP-932).

    kafka-console-share-consumer --bootstrap-server localhost:9092 --topic T [--group G] \\
        [--max-messages N] [--timeout-ms MS] [--reject|--release] [--property print.key=true]

Each record printed is acknowledged ACCEPT (or REJECT / RELEASE with --reject / --release) on
the next ShareFetch, and the rest with a final ShareAcknowledge when the tool stops. kafka-python
has no share consumer, so this is a small one over protocol.codec: ShareGroupHeartbeat to the
group coordinator, ShareFetch to each partition's leader.
"""

from __future__ import annotations

import base64
import signal
import socket
import sys
import time
import uuid
from types import SimpleNamespace

from protocol import codec
from protocol import records as rb
from protocol.apis import ApiKey
from protocol.framing import FrameReader

from . import common
from .common import ToolParser
from .console_consumer import MessageFormatter

DESCRIPTION = "This tool helps to read data from Kafka topics using share groups and outputs it to standard output."  # fmt: skip
ACCEPT, RELEASE, REJECT = 1, 2, 3


def build_parser() -> ToolParser:
    p = ToolParser("kafka-console-share-consumer", DESCRIPTION)
    common.add_bootstrap_server(p)
    p.add_argument("--topic", metavar="<String: topic>", help="The topic to consume from.")
    p.add_argument("--group", default="console-share-consumer", metavar="<String: share group id>",
                   help="The share group id of the consumer. (default: console-share-consumer)")  # fmt: skip
    p.add_argument("--max-messages", dest="max_messages", type=int, metavar="<Integer: num_messages>",
                   help="The maximum number of messages to consume before exiting. If not set, "
                   "consumption is continual.")  # fmt: skip
    p.add_argument("--timeout-ms", dest="timeout_ms", type=int, metavar="<Integer: timeout_ms>",
                   help="If specified, exit if no message is available for consumption for the "
                   "specified interval.")  # fmt: skip
    p.add_argument("--reject", action="store_true", help="If specified, messages are rejected "
                   "as they are consumed.")  # fmt: skip
    p.add_argument("--release", action="store_true", help="If specified, messages are released "
                   "as they are consumed.")  # fmt: skip
    p.add_argument("--property", "--formatter-property", dest="property", action="append",
                   default=[], metavar="<String: prop>",
                   help="The properties to initialize the message formatter. Default "
                   "properties include:\n print.timestamp=true|false\n print.key=true|false\n "
                   "print.offset=true|false\n print.partition=true|false\n "
                   "print.headers=true|false\n print.value=true|false\n "
                   "key.separator=<key.separator>\n line.separator=<line.separator>\n "
                   "headers.separator=<headers.separator>\n null.literal=<null.literal>")  # fmt: skip
    p.add_argument("--consumer-property", "--command-property", dest="consumer_property",
                   action="append", default=[], metavar="<String: consumer_prop>",
                   help="Consumer config properties in the form key=value.")  # fmt: skip
    return p


class Connection:
    """One socket to a broker, one request at a time."""

    def __init__(self, host: str, port: int, client_id: str):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.reader = FrameReader(1 << 30)
        self.client_id = client_id
        self.correlation_id = 0

    def request(self, api_key: int, version: int, body: dict):
        self.correlation_id += 1
        frame = codec.encode_request(api_key, version, self.correlation_id, self.client_id, body)
        self.sock.sendall(frame)
        while not self.reader.frames:
            data = self.sock.recv(1 << 20)
            if not data:
                raise common.ExecutionError("The broker closed the connection.")
            self.reader.feed(data)
        response = self.reader.frames.popleft()
        offset = 4 + (1 if codec.response_is_flexible(api_key, version) else 0)
        return codec.decode_response(api_key, version, response, offset)

    def close(self) -> None:
        self.sock.close()


class ShareConsumer:
    def __init__(self, bootstrap: list[str], group: str, topic: str, client_id: str):
        self.group, self.topic, self.client_id = group, topic, client_id
        # Kafka's clients make their member id: a random Uuid, as 22 base64 characters.
        self.member_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        host, port = bootstrap[0].rsplit(":", 1)
        self.bootstrap = Connection(host, int(port), client_id)
        self.brokers: dict[int, tuple[str, int]] = {}
        self.connections: dict[int, Connection] = {}
        self.epochs: dict[int, int] = {}  # share session epoch per leader
        self.member_epoch = 0
        self.heartbeat_ms = 5000
        self.next_heartbeat = 0.0
        self.partitions: dict[int, int] = {}  # partition -> leader
        self.topic_id = None
        self.pending: dict[int, list[tuple[int, int]]] = {}  # partition -> [(offset, type)]
        r = self.bootstrap.request(ApiKey.FIND_COORDINATOR, 3, {"key": group, "key_type": 0})
        common.check(r.error_code, r.error_message)
        self.brokers[r.node_id] = (r.host, r.port)
        self.coordinator = r.node_id
        self._metadata()

    def _metadata(self) -> None:
        r = self.bootstrap.request(ApiKey.METADATA, 12, {
            "topics": [{"name": self.topic, "topic_id": None}], "allow_auto_topic_creation": False,
            "include_topic_authorized_operations": False})  # fmt: skip
        for b in r.brokers:
            self.brokers[b.node_id] = (b.host, b.port)
        [t] = r.topics
        if t.error_code:
            common.check(t.error_code, f"The topic {self.topic} doesn't exist or has an error")
        self.topic_id = t.topic_id
        self.partitions = {p.partition_index: p.leader_id for p in t.partitions}

    def _conn(self, node: int) -> Connection:
        if node not in self.connections:
            host, port = self.brokers[node]
            self.connections[node] = Connection(host, port, self.client_id)
        return self.connections[node]

    def heartbeat(self, leave: bool = False) -> None:
        body = {"group_id": self.group, "member_id": self.member_id,
                "member_epoch": -1 if leave else self.member_epoch, "rack_id": None,
                "subscribed_topic_names": [self.topic] if self.member_epoch == 0 else None}  # fmt: skip
        r = self._conn(self.coordinator).request(ApiKey.SHARE_GROUP_HEARTBEAT, 1, body)
        if leave:
            return
        common.check(r.error_code, r.error_message)
        self.member_epoch = r.member_epoch
        self.heartbeat_ms = r.heartbeat_interval_ms
        self.next_heartbeat = time.monotonic() + self.heartbeat_ms / 1000

    def _acks(self, partitions) -> list[dict]:
        out = []
        for p in partitions:
            batches = [{"first_offset": o, "last_offset": o, "acknowledge_types": [t]}
                       for o, t in self.pending.pop(p, [])]  # fmt: skip
            out.append({"partition_index": p, "acknowledgement_batches": batches})
        return out

    def poll(self, max_wait_ms: int, max_records: int) -> list:
        if time.monotonic() >= self.next_heartbeat:
            self.heartbeat()
        records = []
        by_leader: dict[int, list[int]] = {}
        for p, leader in sorted(self.partitions.items()):
            by_leader.setdefault(leader, []).append(p)
        wait = max_wait_ms if len(by_leader) == 1 else 0
        for leader, parts in by_leader.items():
            epoch = self.epochs.get(leader, 0)
            topics = [{"topic_id": self.topic_id, "partitions": self._acks(parts) if epoch else
                       [{"partition_index": p, "acknowledgement_batches": []} for p in parts]}]  # fmt: skip
            r = self._conn(leader).request(ApiKey.SHARE_FETCH, 1, {
                "group_id": self.group, "member_id": self.member_id, "share_session_epoch": epoch,
                "max_wait_ms": wait, "min_bytes": 1, "max_bytes": 50 << 20,
                "max_records": max_records, "batch_size": max_records, "topics": topics,
                "forgotten_topics_data": []})  # fmt: skip
            if r.error_code:
                self.epochs.pop(leader, None)  # start a new share session
                continue
            self.epochs[leader] = epoch + 1
            for t in r.responses:
                for part in t.partitions:
                    records += self._records(part)
        return records

    def _records(self, part) -> list:
        wanted: dict[int, int] = {}
        for a in part.acquired_records:
            for o in range(a.first_offset, a.last_offset + 1):
                wanted[o] = a.delivery_count
        if not wanted or not part.records:
            return []
        data = bytes(part.records)
        out = []
        for pos, header in rb.scan_batches(data):
            if header.is_control or header.last_offset < min(wanted):
                continue
            for rec in rb.decode_records(data, pos):
                if rec.offset in wanted:
                    out.append(SimpleNamespace(
                        partition=part.partition_index, offset=rec.offset,
                        timestamp=rec.timestamp, key=rec.key, value=rec.value,
                        headers=rec.headers, delivery_count=wanted[rec.offset],
                        timestamp_type=1 if header.is_log_append_time else 0,
                    ))  # fmt: skip
        got = {r.offset for r in out}
        for o in wanted:  # acquired offsets with no record (gaps): acknowledged as GAP
            if o not in got:
                self.pending.setdefault(part.partition_index, []).append((o, 0))
        return out

    def acknowledge(self, record, kind: int) -> None:
        self.pending.setdefault(record.partition, []).append((record.offset, kind))

    def close(self) -> None:
        try:
            by_leader: dict[int, list[int]] = {}
            for p, leader in self.partitions.items():
                by_leader.setdefault(leader, []).append(p)
            for leader, parts in by_leader.items():
                if leader in self.epochs:
                    self._conn(leader).request(ApiKey.SHARE_ACKNOWLEDGE, 1, {
                        "group_id": self.group, "member_id": self.member_id,
                        "share_session_epoch": -1,
                        "topics": [{"topic_id": self.topic_id, "partitions": self._acks(parts)}]})  # fmt: skip
            self.heartbeat(leave=True)
        finally:
            for c in [self.bootstrap, *self.connections.values()]:
                c.close()


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.topic:
        raise common.UsageError('Missing required argument "[topic]"')
    if args.reject and args.release:
        raise common.UsageError("At most one of --reject and --release may be specified.")
    props = common.parse_key_value_args(args.property)
    consumer_props = common.parse_key_value_args(args.consumer_property)
    formatter = MessageFormatter(props)
    kind = REJECT if args.reject else RELEASE if args.release else ACCEPT

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    consumer = ShareConsumer(common.bootstrap_servers(args.bootstrap_server), args.group,
                             args.topic, consumer_props.get("client.id", "console-share-consumer"))  # fmt: skip
    count, interrupted = 0, False
    limit = args.max_messages if args.max_messages is not None and args.max_messages >= 0 else None
    out = sys.stdout.buffer
    last = time.monotonic()
    try:
        while limit is None or count < limit:
            wait = 500 if args.timeout_ms is None else max(min(args.timeout_ms, 500), 1)
            records = consumer.poll(wait, 500 if limit is None else max(limit - count, 1))
            if not records:
                if (
                    args.timeout_ms is not None
                    and (time.monotonic() - last) * 1000 >= args.timeout_ms
                ):
                    break
                continue
            last = time.monotonic()
            for record in records:
                if limit is not None and count >= limit:
                    consumer.acknowledge(record, RELEASE)  # not shown: someone else's
                    continue
                count += 1
                out.write(formatter.format(record))
                consumer.acknowledge(record, kind)
            out.flush()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            consumer.close()
        finally:
            print(f"Processed a total of {count} messages", file=sys.stderr)
    return 130 if interrupted else 0


def main(argv: list[str] | None = None) -> int:
    return common.run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())

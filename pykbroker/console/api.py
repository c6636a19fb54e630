"""The console's JSON endpoints.

Reads come from the broker's own state (cluster metadata, the partitions' Logs, the metrics
counters); changes go through the Kafka API handlers (kafka_api.InProcessClient), so they are
validated and stored exactly as an admin client's would be. Errors are answered with an HTTP
status and the Kafka error's name: {"error": "TOPIC_ALREADY_EXISTS", "message": "..."}.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from protocol import records as rb
from protocol.apis import ApiKey
from protocol.errors import ErrorCode, KafkaError
from pykbroker.acl.authorizer import CLUSTER_NAME
from pykbroker.acl.authorizer import AclOperation as Op
from pykbroker.acl.authorizer import ResourceType as RT

from .http import EventStream, HttpError, Request, Response, Router, json_response
from .kafka_api import InProcessClient, KafkaApiError, check
from .sampler import MetricsSampler

if TYPE_CHECKING:
    from pykbroker.broker import Broker

# Bounds of one message-browser read, and of what a key/value/header shows.
DEFAULT_RECORDS, MAX_RECORDS = 50, 500
DEFAULT_READ_BYTES, MAX_READ_BYTES = 1 << 20, 4 << 20
MAX_FIELD_BYTES = 64 * 1024
# One batch is always returned whole (as by a Fetch), up to this; larger ones are refused.
MAX_BATCH_BYTES = 16 << 20
# A live tail sends at most TAIL_RECORDS per event and an event per TAIL_INTERVAL_S; behind by
# more, it skips ahead to the newest records (a tail shows what arrives, not a backlog).
TAIL_RECORDS, TAIL_BYTES, TAIL_INTERVAL_S = 100, 512 * 1024, 0.25
MAX_TAILS = 16
KEEPALIVE_S = 15.0
MAX_GROUPS_LISTED = 1000

TOPIC_RESOURCE = 2
SET, DELETE = 0, 1
EARLIEST, LATEST = -2, -1
CONFIG_SOURCES = {
    1: "DYNAMIC_TOPIC_CONFIG", 2: "DYNAMIC_BROKER_CONFIG", 3: "DYNAMIC_DEFAULT_BROKER_CONFIG",
    4: "STATIC_BROKER_CONFIG", 5: "DEFAULT_CONFIG", 6: "DYNAMIC_BROKER_LOGGER_CONFIG",
}  # fmt: skip
NOT_FOUND = {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.GROUP_ID_NOT_FOUND,
             ErrorCode.UNKNOWN_TOPIC_ID}  # fmt: skip
CONFLICT = {ErrorCode.TOPIC_ALREADY_EXISTS, ErrorCode.NON_EMPTY_GROUP}
FORBIDDEN = {
    ErrorCode.TOPIC_DELETION_DISABLED, ErrorCode.TOPIC_AUTHORIZATION_FAILED,
    ErrorCode.GROUP_AUTHORIZATION_FAILED, ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
}  # fmt: skip
UNAVAILABLE = {
    ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.NOT_CONTROLLER,
    ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.KAFKA_STORAGE_ERROR, ErrorCode.REQUEST_TIMED_OUT,
}  # fmt: skip


def http_status(code: int) -> int:
    if code in NOT_FOUND:
        return 404
    if code in CONFLICT:
        return 409
    if code in UNAVAILABLE:
        return 503
    if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.NOT_COORDINATOR):
        return 421  # another broker has it: open that broker's console
    if code in FORBIDDEN:
        return 403
    if code == ErrorCode.UNKNOWN_SERVER_ERROR:
        return 500
    return 400


def kafka_error(code: int, message: str | None) -> HttpError:
    name = ErrorCode(code).name if code in ErrorCode._value2member_map_ else str(code)
    return HttpError(http_status(code), name, message or name)


def translate_error(e: Exception) -> HttpError | None:
    """A Kafka error raised by a handler (check()) answered as every other Kafka error is."""
    return kafka_error(e.code, e.message) if isinstance(e, KafkaApiError) else None


def _int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.arg(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "INVALID_REQUEST", f"{name} must be an integer, not {raw!r}") from None
    if not lo <= value <= hi:
        raise HttpError(400, "INVALID_REQUEST", f"{name} must be between {lo} and {hi}")
    return value


def _field(body: dict, name: str, kind: type, default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise HttpError(400, "INVALID_REQUEST", f"{name} must be a {kind.__name__}")
    return value


def _b64(data: bytes | None) -> tuple[str | None, int, bool]:
    if data is None:
        return None, -1, False
    shown = data[:MAX_FIELD_BYTES]
    return base64.b64encode(shown).decode(), len(data), len(shown) < len(data)


def _record_json(r: rb.Record, timestamp_type: int) -> dict:
    key, key_size, key_cut = _b64(r.key)
    value, value_size, value_cut = _b64(r.value)
    return {
        "offset": r.offset,
        "timestamp": r.timestamp,
        "timestamp_type": "LogAppendTime" if timestamp_type else "CreateTime",
        "key": key,
        "key_size": key_size,
        "value": value,
        "value_size": value_size,
        "truncated": key_cut or value_cut,
        "headers": [[k, _b64(v)[0]] for k, v in r.headers[:64]],
    }


def decode_region(data: bytes, offset: int, limit: int) -> tuple[list[dict], int]:
    """Records at or after `offset` from whole batches in `data` (at most `limit`), and the
    offset to read next. Runs in a thread: decompression and decoding stay off the loop."""
    out: list[dict] = []
    next_offset = offset
    for pos, header in rb.scan_batches(data):
        if header.last_offset < offset:
            continue
        if header.is_control:  # transaction markers: nothing to show
            next_offset = header.next_offset
            continue
        for r in rb.decode_records(data, pos):
            if r.offset < offset:
                continue
            if len(out) >= limit:
                return out, next_offset
            out.append(_record_json(r, header.is_log_append_time))
            next_offset = r.offset + 1
        next_offset = max(next_offset, header.next_offset)
    return out, next_offset


class ConsoleApi:
    def __init__(self, broker: Broker):
        self.broker = broker
        self.client = InProcessClient(broker)
        self.sampler = MetricsSampler(broker)
        self.authentication = "NONE"  # console.authentication.method in effect (auth.py)
        self.tails = 0
        # The console's own threads for file reads and record decoding: neither waiting behind
        # the broker's background work in the default executor (a rolled segment's fsync takes
        # seconds) nor taking its threads.
        self.executor = ThreadPoolExecutor(2, thread_name_prefix="console")

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def routes(self, router: Router) -> None:
        add = router.add
        add("GET", "/api/cluster", self.cluster)
        add("GET", "/api/topics", self.topics)
        add("POST", "/api/topics", self.create_topic)
        add("GET", "/api/topics/{topic}", self.topic)
        add("DELETE", "/api/topics/{topic}", self.delete_topic)
        add("PATCH", "/api/topics/{topic}/configs", self.alter_configs)
        add("POST", "/api/topics/{topic}/partitions", self.add_partitions)
        add("GET", "/api/topics/{topic}/messages", self.messages)
        add("GET", "/api/topics/{topic}/tail", self.tail)
        add("GET", "/api/groups", self.groups)
        add("GET", "/api/groups/{group}", self.group)
        add("POST", "/api/groups/{group}/reset-offsets", self.reset_offsets)
        add("GET", "/api/metrics", self.metrics)

    async def call(self, request: Request, api_key: int, version: int, body: dict) -> Any:
        """The Kafka request an admin client would send, as the console user's principal."""
        try:
            return await self.client.call(api_key, version, body, request.session)
        except KafkaApiError as e:
            raise kafka_error(e.code, e.message) from None

    def check_writable(self, request: Request) -> None:
        if self.broker.config.get("console.read.only"):
            raise HttpError(403, "CLUSTER_AUTHORIZATION_FAILED",
                            "The console is read-only (console.read.only=true).")  # fmt: skip
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            raise HttpError(403, "CLUSTER_AUTHORIZATION_FAILED",
                            "Changes are accepted from the console's own page only.")  # fmt: skip

    # --- authorization: as the equivalent Kafka request of the console user's principal ------

    def allowed(self, request: Request, op: int, resource_type: int, name: str) -> bool:
        authorizer = self.broker.authorizer
        if authorizer is None:
            return True
        session = request.session
        principal, host = (str(session.principal), session.client_host) if session else (
            "User:ANONYMOUS", request.peer)  # fmt: skip
        return authorizer.authorize(principal, host, op, resource_type, name)

    def visible(self, request: Request, topics) -> set[str]:
        """The topics Metadata would list to this principal: those it may DESCRIBE."""
        if self.broker.authorizer is None:
            return set(topics)
        return {t for t in topics if self.allowed(request, Op.DESCRIBE, RT.TOPIC, t)}

    def require_topic(self, request: Request, op: int, name: str) -> None:
        """Kafka's answer to a request on a topic the principal may not `op`, whether or not
        it exists (so its existence is not disclosed)."""
        if not self.allowed(request, op, RT.TOPIC, name):
            raise HttpError(403, "TOPIC_AUTHORIZATION_FAILED",
                            f"Not authorized to access topics: [{name}]")  # fmt: skip

    # --- brokers ------------------------------------------------------------------------------

    async def cluster(self, request: Request) -> Response:
        broker = self.broker
        md = broker.metadata
        live = set(md.live_broker_ids())
        visible = self.visible(request, md.topics)
        led: dict[int, int] = {}
        under: dict[int, int] = {}
        hosted: dict[int, int] = {}  # partitions each broker is a replica of
        offline = 0
        for name, info in md.topics.items():
            if name not in visible:
                continue
            for state in info.partitions:
                for r in state.replicas:
                    hosted[r] = hosted.get(r, 0) + 1
                if state.leader < 0 or state.leader not in live:
                    offline += 1
                    continue
                led[state.leader] = led.get(state.leader, 0) + 1
                if len(state.isr) < len(state.replicas):
                    under[state.leader] = under.get(state.leader, 0) + 1
        brokers = []
        for b in sorted(md.brokers(), key=lambda b: b.node_id):
            brokers.append({
                "node_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack,
                "alive": b.node_id in live, "this": b.node_id == broker.node_id,
                "controller": b.node_id == md.controller_id,
                "leader_partitions": led.get(b.node_id, 0),
                "under_replicated_partitions": under.get(b.node_id, 0),
                "replica_partitions": hosted.get(b.node_id, 0),
                "endpoints": {k: f"{h}:{p}" for k, (h, p) in (b.endpoints or {}).items()},
            })  # fmt: skip
        # Registered brokers are the live ones (as in Kafka's metadata); a broker that is gone
        # still shows as a replica in the partitions' assignments.
        known = {b["node_id"] for b in brokers}
        for node_id in sorted(set(hosted) - known):
            brokers.append({
                "node_id": node_id, "host": None, "port": None, "rack": None, "alive": False,
                "this": False, "controller": False, "leader_partitions": 0,
                "under_replicated_partitions": 0, "replica_partitions": hosted[node_id],
                "endpoints": {},
            })  # fmt: skip
        rm = broker.replica_manager
        # What DescribeLogDirs (and the broker's connection count) needs: DESCRIBE on the cluster.
        describe_cluster = self.allowed(request, Op.DESCRIBE, RT.CLUSTER, CLUSTER_NAME)
        session = request.session
        return json_response({
            "cluster_id": md.cluster_id,
            "controller_id": md.controller_id,
            "node_id": broker.node_id,
            "mode": "zookeeper" if broker.config.get("zookeeper.connect") else "single-node",
            "version": _version(),
            "uptime_ms": round((time.monotonic() - broker.started_at) * 1000),
            "connections": len(broker.connections) if describe_cluster else None,
            "topics": len(visible),
            "partitions": sum(len(md.topics[t].partitions) for t in visible),
            "offline_partitions": offline,
            "local_partitions": sum(1 for t, _ in rm.partitions if t in visible),
            "log_dirs": [{"path": d, "size": s} for d, s in self._log_dir_sizes().items()]
            if describe_cluster else None,
            "read_only": broker.config.get("console.read.only"),
            "authentication": self.authentication,
            "principal": str(session.principal) if session else None,
            "brokers": brokers,
        })  # fmt: skip

    def _log_dir_sizes(self) -> dict[str, int]:
        lm = self.broker.log_manager
        sizes = dict.fromkeys(lm.log_dirs, 0)
        for log in lm.logs.values():
            for d in sizes:
                if log.dir.startswith(d + "/"):
                    sizes[d] += log.size
        return sizes

    # --- topics -------------------------------------------------------------------------------

    async def topics(self, request: Request) -> Response:
        md = self.broker.metadata
        rm = self.broker.replica_manager
        live = set(md.live_broker_ids())
        rates = self.sampler.topic_rates()
        out = []
        for name in sorted(self.visible(request, md.topics)):
            info = md.topics[name]
            size = messages = 0
            under = offline = 0
            for index, state in enumerate(info.partitions):
                if state.leader < 0 or state.leader not in live:
                    offline += 1
                elif len(state.isr) < len(state.replicas):
                    under += 1
                p = rm.partitions.get((name, index))
                if p is not None:
                    size += p.log.size
                    messages += max(p.log.high_watermark - p.log.log_start_offset, 0)
            bytes_in, bytes_out, messages_in = rates.get(name, (0.0, 0.0, 0.0))
            out.append({
                "name": name, "internal": info.internal, "partitions": len(info.partitions),
                "replication_factor": info.replication_factor, "size": size,
                "messages": messages, "under_replicated": under, "offline": offline,
                "configs": len(info.configs)
                if self.allowed(request, Op.DESCRIBE_CONFIGS, RT.TOPIC, name) else None,
                "bytes_in_per_sec": bytes_in,
                "bytes_out_per_sec": bytes_out, "messages_in_per_sec": messages_in,
            })  # fmt: skip
        return json_response({"topics": out})

    def _topic_info(self, name: str):
        info = self.broker.metadata.topic(name)
        if info is None:
            raise HttpError(
                404, "UNKNOWN_TOPIC_OR_PARTITION", f"The topic '{name}' does not exist."
            )
        return info

    async def topic(self, request: Request) -> Response:
        name = request.params["topic"]
        self.require_topic(request, Op.DESCRIBE, name)
        info = self._topic_info(name)
        rm = self.broker.replica_manager
        partitions = []
        for index, state in enumerate(info.partitions):
            entry = {
                "partition": index, "leader": state.leader, "leader_epoch": state.leader_epoch,
                "replicas": state.replicas, "isr": state.isr,
                "offline_replicas": [r for r in state.replicas
                                     if r not in self.broker.metadata.live_broker_ids()],
                "local": False,
            }  # fmt: skip
            p = rm.partitions.get((name, index))
            if p is not None:
                log = p.log
                entry.update(
                    local=True, size=log.size, segments=len(log.segments),
                    log_start_offset=log.log_start_offset, high_watermark=log.high_watermark,
                    log_end_offset=log.log_end_offset,
                )  # fmt: skip
            partitions.append(entry)
        r = await self.call(request, ApiKey.DESCRIBE_CONFIGS, 4, {
            "resources": [{"resource_type": TOPIC_RESOURCE, "resource_name": name,
                           "configuration_keys": None}],
            "include_synonyms": False, "include_documentation": True,
        })  # fmt: skip
        result = r.results[0]
        configs = None  # DESCRIBE_CONFIGS refused: the topic without its configs
        if result.error_code != ErrorCode.TOPIC_AUTHORIZATION_FAILED:
            check(result.error_code, result.error_message)
            configs = [
                {"name": c.name, "value": c.value, "source": CONFIG_SOURCES.get(c.config_source, "UNKNOWN"),
                 "read_only": c.read_only, "sensitive": c.is_sensitive, "doc": c.documentation}
                for c in result.configs
            ]  # fmt: skip
        return json_response({
            "name": name, "topic_id": str(info.topic_id), "internal": info.internal,
            "replication_factor": info.replication_factor, "partitions": partitions,
            "configs": configs,
        })  # fmt: skip

    async def create_topic(self, request: Request) -> Response:
        self.check_writable(request)
        body = request.json()
        name = _field(body, "name", str)
        if not name:
            raise HttpError(400, "INVALID_REQUEST", "name is required")
        configs = _field(body, "configs", dict, {})
        if not all(isinstance(v, str | int | float | bool) for v in configs.values()):
            raise HttpError(400, "INVALID_REQUEST", "config values must be strings")
        r = await self.call(request, ApiKey.CREATE_TOPICS, 7, {
            "topics": [{
                "name": name,
                "num_partitions": _field(body, "partitions", int, -1),
                "replication_factor": _field(body, "replication_factor", int, -1),
                "assignments": [],
                "configs": [{"name": k, "value": _config_str(v)} for k, v in configs.items()],
            }],
            "timeout_ms": 30000, "validate_only": bool(body.get("validate_only")),
        })  # fmt: skip
        t = r.topics[0]
        if t.error_code:
            raise kafka_error(t.error_code, t.error_message)
        return json_response({"name": t.name, "topic_id": str(t.topic_id),
                              "partitions": t.num_partitions,
                              "replication_factor": t.replication_factor}, 201)  # fmt: skip

    async def delete_topic(self, request: Request) -> Response:
        self.check_writable(request)
        name = request.params["topic"]
        r = await self.call(
            request, ApiKey.DELETE_TOPICS, 5, {"topic_names": [name], "timeout_ms": 30000}
        )
        t = r.responses[0]
        if t.error_code:
            raise kafka_error(t.error_code, t.error_message)
        return json_response({"name": name, "deleted": True})

    async def alter_configs(self, request: Request) -> Response:
        """{"set": {key: value}, "delete": [key]} as one IncrementalAlterConfigs."""
        self.check_writable(request)
        body = request.json()
        to_set = _field(body, "set", dict, {})
        to_delete = _field(body, "delete", list, [])
        if not all(isinstance(k, str) for k in to_delete):
            raise HttpError(400, "INVALID_REQUEST", "delete must list config names")
        ops = [{"name": k, "config_operation": SET, "value": _config_str(v)}
               for k, v in to_set.items()]  # fmt: skip
        ops += [{"name": k, "config_operation": DELETE, "value": None} for k in to_delete]
        r = await self.call(request, ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {
            "resources": [{"resource_type": TOPIC_RESOURCE,
                           "resource_name": request.params["topic"], "configs": ops}],
            "validate_only": bool(body.get("validate_only")),
        })  # fmt: skip
        res = r.responses[0]
        if res.error_code:
            raise kafka_error(res.error_code, res.error_message)
        return await self._topic_after_change(request)

    async def _topic_after_change(self, request: Request) -> Response:
        """The changed topic, or only its name for a principal allowed the change (ALTER_CONFIGS,
        ALTER) but not to DESCRIBE it."""
        name = request.params["topic"]
        if not self.allowed(request, Op.DESCRIBE, RT.TOPIC, name):
            return json_response({"name": name})
        return await self.topic(request)

    async def add_partitions(self, request: Request) -> Response:
        self.check_writable(request)
        count = _field(request.json(), "count", int)
        if count is None:
            raise HttpError(400, "INVALID_REQUEST", "count is required")
        r = await self.call(request, ApiKey.CREATE_PARTITIONS, 3, {
            "topics": [{"name": request.params["topic"], "count": count, "assignments": None}],
            "timeout_ms": 30000, "validate_only": False,
        })  # fmt: skip
        res = r.results[0]
        if res.error_code:
            raise kafka_error(res.error_code, res.error_message)
        return await self._topic_after_change(request)

    # --- messages -----------------------------------------------------------------------------

    def _partition(self, request: Request):
        """The partition a Fetch would read: READ on the topic first, as Kafka checks it."""
        name = request.params["topic"]
        self.require_topic(request, Op.READ, name)
        info = self._topic_info(name)
        index = _int(request, "partition", 0, 0, len(info.partitions) - 1)
        try:
            return self.broker.replica_manager.get(name, index)
        except KafkaError as e:
            raise kafka_error(e.code, e.message) from None

    async def _offset_for_timestamp(self, request: Request, p, timestamp: int) -> int:
        r = await self.call(request, ApiKey.LIST_OFFSETS, 7, {
            "replica_id": -1, "isolation_level": 0,
            "topics": [{"name": p.topic, "partitions": [
                {"partition_index": p.index, "current_leader_epoch": -1, "timestamp": timestamp}]}],
        })  # fmt: skip
        res = r.topics[0].partitions[0]
        check(res.error_code)
        return res.offset if res.offset >= 0 else p.log.high_watermark

    async def read(self, p, offset: int, limit: int, max_bytes: int) -> tuple[list[dict], int]:
        """Up to `limit` records from `offset` below the high watermark, reading at most about
        `max_bytes` (whole batches; one batch even if larger, as a Fetch returns)."""
        log = p.log
        loop = asyncio.get_running_loop()
        out: list[dict] = []
        read = 0
        while len(out) < limit and read < max_bytes:
            hw = log.high_watermark
            offset = max(offset, log.log_start_offset)
            if offset >= hw:
                break
            try:
                region = log.read(offset, max_bytes - read, hw, min_one=True)
            except KafkaError as e:
                raise kafka_error(e.code, e.message) from None
            if region is None:
                break
            if region.length > max(max_bytes, MAX_BATCH_BYTES):
                raise HttpError(400, "MESSAGE_TOO_LARGE",
                                f"The batch at offset {offset} of {p.topic}-{p.index} is "
                                f"{region.length} bytes, more than the console reads at once.")  # fmt: skip
            read += region.length
            try:
                data = await loop.run_in_executor(self.executor, region.read)
            except OSError as e:  # the log dir failed, or retention removed the segment
                raise HttpError(
                    503, "KAFKA_STORAGE_ERROR", f"Cannot read {p.topic}-{p.index}: {e}"
                ) from None
            try:
                found, after = await loop.run_in_executor(
                    self.executor, decode_region, data, offset, limit - len(out)
                )
            except KafkaError as e:
                raise kafka_error(e.code, e.message) from None
            except Exception as e:  # a batch that cannot be decoded must not stop the page
                raise HttpError(500, "CORRUPT_MESSAGE", f"Cannot decode records: {e!r}") from None
            out += found
            if after <= offset:
                break
            offset = after
        return out, offset

    async def messages(self, request: Request) -> Response:
        p = self._partition(request)
        log = p.log
        limit = _int(request, "limit", DEFAULT_RECORDS, 1, MAX_RECORDS)
        max_bytes = _int(request, "max_bytes", DEFAULT_READ_BYTES, 1024, MAX_READ_BYTES)
        offset = _int(request, "offset", None, -(1 << 62), 1 << 62)
        timestamp = _int(request, "timestamp", None, 0, 1 << 62)
        if timestamp is not None:
            offset = await self._offset_for_timestamp(request, p, timestamp)
        elif offset is None or offset < 0:  # the newest `limit` records
            offset = max(log.high_watermark - limit, log.log_start_offset)
        records, next_offset = await self.read(p, offset, limit, max_bytes)
        return json_response({
            "topic": p.topic, "partition": p.index, "log_start_offset": log.log_start_offset,
            "high_watermark": log.high_watermark, "start_offset": offset,
            "next_offset": next_offset, "records": records,
        })  # fmt: skip

    async def tail(self, request: Request) -> EventStream:
        p = self._partition(request)
        offset = _int(request, "offset", None, 0, 1 << 62)
        if self.tails >= MAX_TAILS:
            raise HttpError(503, "TOO_MANY_TAILS", f"At most {MAX_TAILS} live tails at a time.")
        if offset is None:
            # "Newest" is fixed when the request arrives, not when the stream's generator first
            # runs: records produced once the browser sees the stream open must show.
            offset = p.log.high_watermark
        self.tails += 1
        return EventStream(self._tail_events(request, p.topic, p.index, offset))

    async def _tail_events(self, request: Request, topic: str, index: int, offset: int | None):
        rm = self.broker.replica_manager
        loop = asyncio.get_running_loop()
        try:
            yield b"retry: 2000\n\n"
            while True:
                if not self.allowed(request, Op.READ, RT.TOPIC, topic):  # each read, as a Fetch
                    yield _event("error", {"error": "TOPIC_AUTHORIZATION_FAILED",
                                           "message": f"Not authorized to access topics: [{topic}]"})  # fmt: skip
                    return
                p = rm.partitions.get((topic, index))
                if p is None:
                    yield _event("error", {"error": "UNKNOWN_TOPIC_OR_PARTITION",
                                           "message": f"{topic}-{index} is gone."})  # fmt: skip
                    return
                hw = p.log.high_watermark
                if offset is None:
                    offset = hw
                skipped = 0
                if hw - offset > TAIL_RECORDS:
                    skipped = hw - TAIL_RECORDS - offset
                    offset = hw - TAIL_RECORDS
                if offset < hw:
                    try:
                        found, offset = await self.read(p, offset, TAIL_RECORDS, TAIL_BYTES)
                    except HttpError as e:
                        yield _event("error", {"error": e.error, "message": e.message})
                        return
                    yield _event("records", {"records": found, "next_offset": offset,
                                             "high_watermark": hw, "skipped": skipped})  # fmt: skip
                    await asyncio.sleep(TAIL_INTERVAL_S)  # coalesce a busy topic's appends
                    continue
                fut = loop.create_future()
                watched = rm.add_waiter([(topic, index)], fut)
                try:
                    await asyncio.wait((fut,), timeout=KEEPALIVE_S)
                finally:
                    for part in watched:
                        part.waiters.discard(fut)
                if not fut.done():
                    yield b": keep-alive\n\n"
        finally:
            self.tails -= 1

    # --- groups -------------------------------------------------------------------------------

    async def _describe_groups(self, request: Request, group_ids: list[str]) -> list:
        if not group_ids:
            return []
        r = await self.call(request, ApiKey.DESCRIBE_GROUPS, 5, {
            "groups": group_ids, "include_authorized_operations": False,
        })  # fmt: skip
        return r.groups

    async def _committed(
        self, request: Request, group_ids: list[str]
    ) -> dict[str, dict[tuple[str, int], int]]:
        """Committed offsets, read from the group coordinator as OffsetFetch does (without
        encoding a response: a page of 100 groups would spend most of its time there)."""
        coordinator = self.broker.group_coordinator
        if coordinator is None or not coordinator.active:
            raise kafka_error(ErrorCode.COORDINATOR_NOT_AVAILABLE, None)
        out = {}
        for group_id in group_ids:
            error, offsets = coordinator.fetch_offsets(group_id, None)
            if error:
                raise kafka_error(error, f"Offsets of group '{group_id}': {ErrorCode(error).name}")
            out[group_id] = {tp: om.offset for tp, om in offsets.items()
                             if om is not None and om.offset >= 0}  # fmt: skip
        if self.broker.authorizer is not None:  # OffsetFetch leaves out undescribable topics
            topics = self.visible(request, {t for c in out.values() for t, _ in c})
            out = {g: {tp: o for tp, o in c.items() if tp[0] in topics} for g, c in out.items()}
        return out

    def _end_offset(self, topic: str, index: int) -> int | None:
        p = self.broker.replica_manager.partitions.get((topic, index))
        return p.log.high_watermark if p is not None else None

    async def groups(self, request: Request) -> Response:
        r = await self.call(request, ApiKey.LIST_GROUPS, 4, {"states_filter": []})
        check(r.error_code)
        listed = sorted(r.groups, key=lambda g: g.group_id)[:MAX_GROUPS_LISTED]
        ids = [g.group_id for g in listed]
        described = {g.group_id: g for g in await self._describe_groups(request, ids)}
        committed = await self._committed(request, ids)
        out = []
        for g in listed:
            d = described.get(g.group_id)
            lag = 0
            topics = set()
            for (topic, index), offset in committed.get(g.group_id, {}).items():
                topics.add(topic)
                end = self._end_offset(topic, index)
                if end is not None:
                    lag += max(end - offset, 0)
            out.append({
                "group_id": g.group_id, "state": g.group_state,
                "protocol_type": g.protocol_type, "protocol": d.protocol_data if d else "",
                "members": len(d.members) if d else 0, "topics": sorted(topics), "lag": lag,
            })  # fmt: skip
        return json_response({"groups": out, "truncated": len(r.groups) > len(listed)})

    async def group(self, request: Request) -> Response:
        group_id = request.params["group"]
        d = (await self._describe_groups(request, [group_id]))[0]
        check(d.error_code)
        committed = (await self._committed(request, [group_id])).get(group_id, {})
        members = []
        owner: dict[tuple[str, int], str] = {}
        for m in d.members:
            assigned = _consumer_assignment(m.member_assignment)
            for tp in assigned:
                owner[tp] = m.member_id
            members.append({
                "member_id": m.member_id, "group_instance_id": m.group_instance_id,
                "client_id": m.client_id, "client_host": m.client_host,
                "assignment": [{"topic": t, "partition": p} for t, p in assigned],
            })  # fmt: skip
        if d.group_state == "Dead" and not committed:
            raise HttpError(
                404, "GROUP_ID_NOT_FOUND", f"Consumer group '{group_id}' does not exist."
            )
        offsets = []
        shown = set(committed) | set(owner)
        topics = self.visible(request, {t for t, _ in shown})
        for tp in sorted(tp for tp in shown if tp[0] in topics):
            end = self._end_offset(*tp)
            current = committed.get(tp)
            offsets.append({
                "topic": tp[0], "partition": tp[1], "current_offset": current,
                "log_end_offset": end,
                "lag": max(end - current, 0) if end is not None and current is not None else None,
                "member_id": owner.get(tp),
            })  # fmt: skip
        return json_response({
            "group_id": group_id, "state": d.group_state, "protocol_type": d.protocol_type,
            "protocol": d.protocol_data, "members": members, "offsets": offsets,
        })  # fmt: skip

    async def reset_offsets(self, request: Request) -> Response:
        """{"topic": t (all the group's topics when absent), "partition": p (optional),
        "to": "earliest" | "latest" | "offset" | "timestamp", "value": n}, as
        kafka-consumer-groups --reset-offsets --execute does: only for an inactive group."""
        self.check_writable(request)
        group_id = request.params["group"]
        body = request.json()
        to = _field(body, "to", str, "")
        if to not in ("earliest", "latest", "offset", "timestamp"):
            raise HttpError(400, "INVALID_REQUEST",
                            "to must be one of earliest, latest, offset, timestamp")  # fmt: skip
        value = _field(body, "value", int)
        if to in ("offset", "timestamp") and (value is None or value < 0):
            raise HttpError(400, "INVALID_REQUEST", f"value (>= 0) is required with to={to}")
        d = (await self._describe_groups(request, [group_id]))[0]
        check(d.error_code)
        if d.group_state not in ("Empty", "Dead"):
            raise HttpError(
                409, "NON_EMPTY_GROUP",
                f"Assignments can only be reset if the group '{group_id}' is inactive, but the "
                f"current state is {d.group_state}.",
            )  # fmt: skip
        partitions = self._reset_partitions(
            request, group_id, body, await self._committed(request, [group_id])
        )
        earliest = await self._list_offsets(request, partitions, EARLIEST)
        latest = await self._list_offsets(request, partitions, LATEST)
        if to == "earliest":
            plan = earliest
        elif to == "latest":
            plan = latest
        elif to == "timestamp":
            found = await self._list_offsets(request, partitions, value)
            plan = {tp: o if o >= 0 else latest[tp] for tp, o in found.items()}
        else:  # as Kafka's tool: an offset out of range moves to the nearest end
            plan = {tp: min(max(value, earliest[tp]), latest[tp]) for tp in partitions}
        await self._commit(request, group_id, plan)
        return json_response({
            "group_id": group_id,
            "offsets": [{"topic": t, "partition": p, "offset": o} for (t, p), o in sorted(plan.items())],
        })  # fmt: skip

    def _reset_partitions(
        self, request: Request, group_id: str, body: dict, committed
    ) -> list[tuple[str, int]]:
        topic = _field(body, "topic", str)
        partition = _field(body, "partition", int)
        if topic is None:
            partitions = sorted(committed.get(group_id, {}))
            if not partitions:
                raise HttpError(400, "INVALID_REQUEST",
                                f"Group '{group_id}' has no committed offsets; name a topic.")  # fmt: skip
            return partitions
        self.require_topic(request, Op.DESCRIBE, topic)
        info = self._topic_info(topic)
        if partition is None:
            return [(topic, i) for i in range(len(info.partitions))]
        if not 0 <= partition < len(info.partitions):
            raise HttpError(404, "UNKNOWN_TOPIC_OR_PARTITION",
                            f"Topic '{topic}' has no partition {partition}.")  # fmt: skip
        return [(topic, partition)]

    async def _list_offsets(
        self, request: Request, partitions, timestamp: int
    ) -> dict[tuple[str, int], int]:
        by_topic: dict[str, list[int]] = {}
        for t, p in partitions:
            by_topic.setdefault(t, []).append(p)
        r = await self.call(request, ApiKey.LIST_OFFSETS, 7, {
            "replica_id": -1, "isolation_level": 0,
            "topics": [{"name": t, "partitions": [
                {"partition_index": p, "current_leader_epoch": -1, "timestamp": timestamp}
                for p in ps]} for t, ps in by_topic.items()],
        })  # fmt: skip
        out = {}
        for t in r.topics:
            for p in t.partitions:
                check(p.error_code, f"{t.name}-{p.partition_index}: {ErrorCode(p.error_code).name}")
                out[(t.name, p.partition_index)] = p.offset
        return out

    async def _commit(
        self, request: Request, group_id: str, plan: dict[tuple[str, int], int]
    ) -> None:
        by_topic: dict[str, list[dict]] = {}
        for (t, p), offset in sorted(plan.items()):
            by_topic.setdefault(t, []).append({
                "partition_index": p, "committed_offset": offset,
                "committed_leader_epoch": -1, "committed_metadata": "",
            })  # fmt: skip
        r = await self.call(request, ApiKey.OFFSET_COMMIT, 8, {
            "group_id": group_id, "generation_id_or_member_epoch": -1, "member_id": "",
            "group_instance_id": None,
            "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
        })  # fmt: skip
        for t in r.topics:
            for p in t.partitions:
                check(p.error_code)

    # --- metrics ------------------------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        topic = request.arg("topic") or None
        if topic is not None:
            self.require_topic(request, Op.DESCRIBE, topic)
        window = _int(request, "window", 120, 2, self.sampler.capacity)
        visible = None
        if self.broker.authorizer is not None:
            visible = lambda t: self.allowed(request, Op.DESCRIBE, RT.TOPIC, t)  # noqa: E731
        return json_response(self.sampler.series(window, topic, visible))


def _config_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _consumer_assignment(data: bytes | None) -> list[tuple[str, int]]:
    """The partitions in a consumer-protocol assignment (version, [topic, [partition]], user
    data); empty for other protocols or anything that does not parse."""
    if not data or len(data) < 6:
        return []
    try:
        pos = 2
        n = int.from_bytes(data[pos : pos + 4], "big", signed=True)
        pos += 4
        out = []
        for _ in range(max(n, 0)):
            size = int.from_bytes(data[pos : pos + 2], "big", signed=True)
            topic = bytes(data[pos + 2 : pos + 2 + size]).decode()
            pos += 2 + size
            count = int.from_bytes(data[pos : pos + 4], "big", signed=True)
            pos += 4
            for _ in range(max(count, 0)):
                out.append((topic, int.from_bytes(data[pos : pos + 4], "big", signed=True)))
                pos += 4
            if pos > len(data):
                return []
        return out
    except (UnicodeDecodeError, ValueError):
        return []


def _version() -> str:
    from pykbroker.metrics import _version as version

    return version()

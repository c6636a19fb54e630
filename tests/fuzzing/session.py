"""A whole fuzz pass: set up topics and canary data, run the cases, check the canary, summarise.

Before the run a real client (confluent-kafka) produces canary records to a topic the fuzzer
never names; after it, they must read back byte for byte (keys, values, headers, order).
The advertised APIs and versions come from a live ApiVersions response.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

from helpers import RawClient

from protocol.apis import ApiKey

from .cases import CaseFactory
from .known import exclusion
from .runner import Fuzzer, Options, Stats, Target
from .schema import Pools

FUZZ_TOPICS = {"fuzz-0": 3, "fuzz-1": 1, "fuzz-compact": 1}


@dataclass
class Canary:
    topic: str
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]


def advertised_apis(port: int) -> dict[int, tuple[int, int]]:
    client = RawClient(port)
    try:
        body = {"client_software_name": "fuzz", "client_software_version": "1"}
        resp = client.request(ApiKey.API_VERSIONS, 3, body)
        assert resp.error_code == 0, resp
        return {a.api_key: (a.min_version, a.max_version) for a in resp.api_keys}
    finally:
        client.close()


def create_topics(port: int, topics: dict[str, tuple[int, dict[str, str]]]) -> dict[str, bytes]:
    """Create the topics (name -> (partitions, configs)); return their topic ids."""
    client = RawClient(port)
    try:
        body = {
            "topics": [
                {"name": name, "num_partitions": n, "replication_factor": 1, "assignments": [],
                 "configs": [{"name": k, "value": v} for k, v in configs.items()]}
                for name, (n, configs) in topics.items()
            ],
            "timeout_ms": 30000, "validate_only": False,
        }  # fmt: skip
        resp = client.request(ApiKey.CREATE_TOPICS, 5, body)
        for t in resp.topics:
            assert t.error_code in (0, 36), (t.name, t.error_code, t.error_message)
        meta = client.request(
            ApiKey.METADATA, 12,
            {"topics": [{"name": n, "topic_id": None} for n in topics],
             "allow_auto_topic_creation": False, "include_topic_authorized_operations": False},
        )  # fmt: skip
        return {t.name: _uuid_bytes(t.topic_id) for t in meta.topics if t.error_code == 0}
    finally:
        client.close()


def _uuid_bytes(value) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return getattr(value, "bytes", bytes(16))


def produce_canary(bootstrap: str, topic: str, seed: int, count: int = 300) -> Canary:
    from confluent_kafka import Producer

    rng = random.Random(f"canary:{seed}")
    records = []
    for i in range(count):
        key = None if i % 7 == 0 else rng.randbytes(rng.randint(0, 32))
        value = rng.randbytes(rng.randint(0, 2000))
        headers = [("h", rng.randbytes(4))] if i % 3 == 0 else []
        records.append((key, value, headers))
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "compression.type": "lz4",
                         "linger.ms": 5})  # fmt: skip
    failures = []
    for key, value, headers in records:
        producer.produce(topic, value=value, key=key, headers=headers or None, partition=0,
                         on_delivery=lambda err, msg: err and failures.append(err))  # fmt: skip
    assert producer.flush(30) == 0 and not failures, failures
    return Canary(topic, records)


def read_canary(bootstrap: str, canary: Canary, timeout: float = 30) -> list[str]:
    """What differs between the canary as produced and as read back now (empty: identical)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "fuzz-canary-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.assign([TopicPartition(canary.topic, 0, 0)])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < len(canary.records) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                return [f"consumer error: {msg.error()}"]
            got.append((msg.key(), msg.value() or b"", list(msg.headers() or [])))
        _low, high = consumer.get_watermark_offsets(TopicPartition(canary.topic, 0), timeout=10)
    finally:
        consumer.close()
    problems = []
    if high != len(canary.records):
        problems.append(f"high watermark {high}, produced {len(canary.records)}")
    if len(got) != len(canary.records):
        problems.append(f"read {len(got)} of {len(canary.records)} records")
    for i, (want, have) in enumerate(zip(canary.records, got, strict=False)):
        if (want[0], want[1], want[2]) != have:
            problems.append(f"record {i} differs")
            break
    return problems


def list_offsets_after(port: int, partitions: dict[str, int]) -> list[str]:
    """ListOffsets by timestamp on every fuzzed partition: none may be poisoned by what it took.

    Looking up a timestamp reads the batches (and decompresses compressed ones) in a segment,
    which is where an accepted corrupt batch shows (issue 11 item 2).
    """
    problems = []
    client = RawClient(port)
    try:
        for topic, count in partitions.items():
            for p in range(count):
                for ts in (0, int(time.time() * 1000) - 3_600_000):
                    body = {"replica_id": -1, "isolation_level": 0, "topics": [
                        {"name": topic, "partitions": [{"partition_index": p,
                         "current_leader_epoch": -1, "timestamp": ts}]}]}  # fmt: skip
                    try:
                        resp = client.request(ApiKey.LIST_OFFSETS, 7, body)
                    except OSError as e:
                        resp, reason = None, repr(e)
                    else:
                        reason = "connection closed"
                    if resp is None:
                        problems.append(f"ListOffsets {topic}-{p} timestamp {ts}: {reason}")
                        client.close()
                        client = RawClient(port)
    finally:
        client.close()
    return problems


def prepare(port: int, seed: int) -> tuple[Pools, dict[int, tuple[int, int]], Canary]:
    apis = advertised_apis(port)
    canary_topic = f"canary-{random.Random(seed).getrandbits(48):012x}"
    topics = {name: (n, {}) for name, n in FUZZ_TOPICS.items()}
    topics["fuzz-compact"] = (1, {"cleanup.policy": "compact"})
    topics[Pools.compacted] = (1, {"cleanup.policy": "compact"})
    topics[canary_topic] = (1, {"retention.ms": "-1", "retention.bytes": "-1"})
    ids = create_topics(port, topics)
    # Names that do not exist yet, so CreateTopics creates (and DeleteTopics deletes) them.
    # Neither the canary nor the compacted topic is named, by name or by id (a DeleteTopics by
    # topic id would otherwise let a later produce auto-create it as a delete topic).
    unnamed = {canary_topic, Pools.compacted}
    pools = Pools(topics=[*FUZZ_TOPICS, "fuzz-new-0", "fuzz-new-1"],
                  topic_ids={t: i for t, i in ids.items() if t not in unnamed})  # fmt: skip
    canary = produce_canary(f"127.0.0.1:{port}", canary_topic, seed)
    return pools, apis, canary


def fuzz(target: Target, seed: int, options: Options, *, exclude_known: bool = True,
         ) -> tuple[Stats, list[str], CaseFactory]:  # fmt: skip
    """Prepare, run the cases, read the canary back: (stats, canary problems, factory)."""
    pools, apis, canary = prepare(target.port, seed)
    factory = CaseFactory(seed, pools, apis, exclusion if exclude_known else None)
    stats = run_cases(target, factory, options)
    if stats.aborted:
        return stats, ["not read: the run was aborted"], factory
    problems = read_canary(f"{target.host}:{target.port}", canary)
    problems += list_offsets_after(target.port, FUZZ_TOPICS)
    return stats, problems, factory


def run_cases(target: Target, factory: CaseFactory, options: Options) -> Stats:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(Fuzzer(target, factory, options).run())


def summary(stats: Stats, problems: list[str], factory: CaseFactory, seed: int) -> dict:
    advertised = [f"{ApiKey(k).name} v{v}" for k, v in factory.versions]
    fields = sum(len(v) for v in stats.fields_seen.values())
    return {
        "seed": seed,
        "frames": stats.frames,
        "seconds": round(stats.elapsed, 2),
        "frames_per_second": round(stats.frames / stats.elapsed, 1) if stats.elapsed else None,
        "broker_cpu_s": round(stats.broker_cpu, 1),
        "fuzzer_cpu_s": round(stats.fuzzer_cpu, 1),
        "by_strategy": dict(stats.by_kind),
        "worker_seconds_by_strategy": {k: round(v, 1) for k, v in stats.kind_seconds.items()},
        "worker_seconds_by_api": {k: round(v, 1) for k, v in stats.api_seconds.most_common()},
        "by_api_version": dict(sorted(stats.by_api.items())),
        "advertised_not_covered": [a for a in advertised if a not in stats.by_api],
        "boundary_fields_covered": f"{len(stats.fields_mutated)} of {fields} (api, version, field)",
        "boundary_fields_missed": sorted(
            f"{ApiKey(k).name} v{v} {name}"
            for (k, v), names in stats.fields_seen.items()
            for name in names
            if ((k, v), name) not in stats.fields_mutated
        ),
        "responses_parsed": sum(stats.responses.values()),
        "connections": stats.connections,
        "closed_by_broker": dict(stats.closed.most_common()),
        "abandoned_long_waits": dict(stats.abandoned.most_common()),
        "faults": dict(stats.faults),
        "errors": stats.errors,
        "slowest_response_s": round(stats.slowest[0], 4),
        "slowest_case": stats.slowest[1],
        "rss_start_mib": round(stats.rss_start / 2**20, 1),
        "rss_max_mib": round(stats.rss_max / 2**20, 1),
        "rss_jumps": stats.rss_jumps,
        "probe_max_s": round(stats.probe_max, 4),
        "probes": stats.probes,
        "event_loop_lag_max_s": stats.loop_lag_max,
        "event_loop_stalls": stats.stalls,
        "after_run_problems": problems,
        "excluded_known_findings": factory.exclude is not None,
    }


def write_summary(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")

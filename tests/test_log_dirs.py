"""Several log dirs on one broker (a subprocess, log.dirs=a,b): new partitions go to the dir
holding the fewest (Kafka's choice), DescribeLogDirs shows each dir, and AlterReplicaLogDirs
moves a partition's log to the other dir while an acks=all producer writes to it; every
acknowledged record is read back once, at its offset, before and after a restart;
kafka-reassign-partitions moves another with "log_dirs" and verifies the move."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from cluster_helpers import AcksAllProducer, assert_acked_once, read_all, wait_until
from helpers import BrokerProcess, RawClient

from protocol.apis import ApiKey

TOPIC = "spread"
PARTITIONS = 4
# Kafka's error codes
NONE, UNKNOWN_TOPIC_OR_PARTITION, LOG_DIR_NOT_FOUND = 0, 3, 57


def describe(port: int) -> dict[str, dict[int, tuple[bool, int]]]:
    """log dir -> partition of TOPIC -> (is the future replica, offset lag)."""
    client = RawClient(port)
    try:
        r = client.request(ApiKey.DESCRIBE_LOG_DIRS, 4, {"topics": None})
    finally:
        client.close()
    assert r.error_code == 0
    return {
        res.log_dir: {p.partition_index: (p.is_future_key, p.offset_lag)
                      for t in res.topics if t.name == TOPIC for p in t.partitions}
        for res in r.results
    }  # fmt: skip


def alter(port: int, path: str, topic: str, partitions: list[int]) -> dict[int, int]:
    client = RawClient(port)
    try:
        body = {"dirs": [{"path": path, "topics": [{"name": topic, "partitions": partitions}]}]}
        r = client.request(ApiKey.ALTER_REPLICA_LOG_DIRS, 2, body)
    finally:
        client.close()
    return {p.partition_index: p.error_code for t in r.results for p in t.partitions}


def node_id(port: int) -> int:
    client = RawClient(port)
    try:
        body = {"topics": [], "allow_auto_topic_creation": False,
                "include_cluster_authorized_operations": False,
                "include_topic_authorized_operations": False}  # fmt: skip
        return client.request(ApiKey.METADATA, 9, body).brokers[0].node_id
    finally:
        client.close()


def tool(*args: str, bootstrap: BrokerProcess) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "kafka-reassign-partitions"),
         "--bootstrap-server", bootstrap.bootstrap_servers, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_several_log_dirs_and_moving_a_replica(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    broker = BrokerProcess(str(tmp_path / "unused"), {"log.dirs": f"{a},{b}"}).start()
    try:
        client = RawClient(broker.port)
        try:
            body = {"topics": [{"name": TOPIC, "num_partitions": PARTITIONS,
                                "replication_factor": 1, "assignments": [], "configs": []}],
                    "timeout_ms": 10000, "validate_only": False}  # fmt: skip
            assert client.request(ApiKey.CREATE_TOPICS, 5, body).topics[0].error_code == 0
        finally:
            client.close()
        dirs = describe(broker.port)
        assert set(dirs) == {a, b}
        # Each new partition went to the dir with the fewest: two and two.
        assert sorted(len(parts) for parts in dirs.values()) == [2, 2]
        source = next(d for d, parts in dirs.items() if 0 in parts)
        dest = b if source == a else a

        with AcksAllProducer(broker.bootstrap_servers, TOPIC, PARTITIONS) as producer:
            wait_until(lambda: len(producer.acked) >= 600, what="first acks")
            assert alter(broker.port, dest, TOPIC, [0]) == {0: NONE}
            wait_until(lambda: (d := describe(broker.port)) and 0 in d[dest]
                       and d[dest][0] == (False, 0) and 0 not in d[source],
                       what="partition 0 moved")  # fmt: skip
            acks = len(producer.acked)
            wait_until(lambda: len(producer.acked) > acks + 200, what="acks after the move")
        assert producer.errors == [] and producer.remaining == 0
        assert not os.path.exists(os.path.join(source, f"{TOPIC}-0"))
        assert os.path.exists(os.path.join(dest, f"{TOPIC}-0"))
        assert_acked_once(producer, read_all(broker.bootstrap_servers, TOPIC, PARTITIONS))
        assert broker.events("replica_moved")

        # Kafka's errors: a path that is no log dir, a partition this broker doesn't have.
        assert alter(broker.port, str(tmp_path / "elsewhere"), TOPIC, [1]) == {1: LOG_DIR_NOT_FOUND}
        assert alter(broker.port, dest, "nope", [0]) == {0: UNKNOWN_TOPIC_OR_PARTITION}
        # Already there: nothing to do.
        assert alter(broker.port, dest, TOPIC, [0]) == {0: NONE}

        # kafka-reassign-partitions with log_dirs: the same replica, another dir.
        node = node_id(broker.port)
        where = {d: parts for d, parts in describe(broker.port).items()}
        other = b if 1 in where[a] else a
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": TOPIC, "partition": 1, "replicas": [node], "log_dirs": [other]}]}))  # fmt: skip
        r = tool("--execute", "--reassignment-json-file", str(plan), bootstrap=broker)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines()[-2:] == [
            f"Successfully started partition reassignment for {TOPIC}-1",
            f"Successfully started moving log directory to {other} for replica {TOPIC}-1 "
            f"with broker {node} ",
        ]

        def verified():
            r = tool("--verify", "--reassignment-json-file", str(plan), bootstrap=broker)
            assert r.returncode == 0, r.stdout + r.stderr
            return "completed successfully" in r.stdout and r.stdout

        assert wait_until(verified, what="log dir move verified").splitlines() == [
            "Status of partition reassignment:",
            f"Reassignment of partition {TOPIC}-1 is completed.",
            f"Reassignment of replica {node}-{TOPIC}-1 completed successfully.",
            f"Clearing broker-level throttles on broker {node}",
            f"Clearing topic-level throttles on topic {TOPIC}",
        ]
        assert 1 in describe(broker.port)[other]

        assert broker.terminate() == 0
        broker.start()
        assert 0 in describe(broker.port)[dest]
        assert_acked_once(producer, read_all(broker.bootstrap_servers, TOPIC, PARTITIONS))
    finally:
        broker.kill()


def future_dirs(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith("-future"))


def test_log_dir_move_survives_sigkill_and_resumes(tmp_path):
    """A replica moving between log dirs (throttled with --replica-alter-log-dirs-throttle so it
    is still copying) is SIGKILLed: its `<topic>-<partition>.<id>-future` dir survives, and on
    restart the copy resumes from where it stood (Kafka's ReplicaAlterLogDirsThread), shown as
    the future replica in DescribeLogDirs, and completes with every record in place."""
    from confluent_kafka import Producer

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    # Throttle windows of 1 s x 2 (Kafka: 11), so the copy is rate-bound from the start.
    broker = BrokerProcess(str(tmp_path / "unused"), {
        "log.dirs": f"{a},{b}", "replication.quota.window.num": "2"}).start()  # fmt: skip
    try:
        client = RawClient(broker.port)
        try:
            body = {"topics": [{"name": TOPIC, "num_partitions": 1, "replication_factor": 1,
                                "assignments": [], "configs": []}],
                    "timeout_ms": 10000, "validate_only": False}  # fmt: skip
            assert client.request(ApiKey.CREATE_TOPICS, 5, body).topics[0].error_code == 0
        finally:
            client.close()
        source = next(d for d, parts in describe(broker.port).items() if 0 in parts)
        dest = b if source == a else a
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "acks": "all",
                             "batch.size": 65536, "broker.address.family": "v4"})  # fmt: skip
        # 1 KiB each, 5000 (about 4.9 MiB): more offsets than the last step copies at once (1000)
        values = [os.urandom(1024) for _ in range(5000)]
        for v in values:
            producer.produce(TOPIC, value=v, partition=0)
            producer.poll(0)
        assert producer.flush(30) == 0
        node = node_id(broker.port)
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": TOPIC, "partition": 0, "replicas": [node], "log_dirs": [dest]}]}))  # fmt: skip
        r = tool("--execute", "--reassignment-json-file", str(plan),
                 "--replica-alter-log-dirs-throttle", "1048576", bootstrap=broker)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        # Kafka's order: the warning, the throttle, then the moves.
        assert r.stdout.splitlines()[-4:] == [
            "Warning: You must run --verify periodically, until the reassignment completes, "
            "to ensure the throttle is removed.",
            "The replica-alter-dir throttle limit was set to 1048576 B/s",
            f"Successfully started partition reassignment for {TOPIC}-0",
            f"Successfully started moving log directory to {dest} for replica {TOPIC}-0 "
            f"with broker {node} ",
        ]
        # Mid-move: the future replica in the destination, behind the current one.
        d = wait_until(lambda: (d := describe(broker.port)) and d[dest].get(0, (0, 0))[0]
                       and d[dest][0][1] < 4500 and d, what="a copy under way")  # fmt: skip
        assert d[source][0] == (False, 0) and d[dest][0][0] is True
        futures = future_dirs(dest)
        assert len(futures) == 1 and futures[0].startswith(f"{TOPIC}-0.")
        broker.kill()
        assert future_dirs(dest) == futures  # a crash keeps it

        broker.start()
        resumed = wait_until(lambda: broker.events("replica_move_resumed"), what="resumed")
        assert resumed[-1]["dest"] == dest and resumed[-1]["future_log_end_offset"] > 0
        # Still throttled (the config survives), so still moving: the future replica shows.
        assert describe(broker.port)[dest][0][0] is True
        wait_until(lambda: (d := describe(broker.port)) and d[dest].get(0) == (False, 0)
                   and 0 not in d[source], timeout=30, what="the move done")  # fmt: skip
        assert future_dirs(dest) == [] and os.path.exists(os.path.join(dest, f"{TOPIC}-0"))
        r = tool("--verify", "--reassignment-json-file", str(plan), bootstrap=broker)
        assert f"Reassignment of replica {node}-{TOPIC}-0 completed successfully." in r.stdout
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "check",
                             "enable.auto.commit": False, "broker.address.family": "v4"})  # fmt: skip
        try:
            consumer.assign([TopicPartition(TOPIC, 0, 0)])
            got: list[tuple[int, bytes]] = []
            deadline = time.monotonic() + 30
            while len(got) < len(values) and time.monotonic() < deadline:
                for m in consumer.consume(500, 1.0):
                    if not m.error():
                        got.append((m.offset(), m.value()))
        finally:
            consumer.close()
        assert got == list(enumerate(values))
    finally:
        broker.kill()


def test_a_partition_found_in_two_log_dirs_keeps_one(tmp_path):
    """A crash inside a move's swap (the copy renamed into place in its new dir, the old dir
    not yet retired) leaves the partition in two log dirs; the next start keeps one copy, the
    longer, and deletes the other (Kafka refuses to start instead)."""
    from protocol import records as rb
    from pykbroker.config import BrokerConfig, LogConfig
    from pykbroker.storage.log_manager import LogManager

    a, b = tmp_path / "a", tmp_path / "b"
    manager = LogManager(BrokerConfig({"log.dirs": f"{a},{b}"}))
    config = LogConfig(manager.config.topic_defaults(), {})
    manager.load_logs(lambda topic: config)
    lg = manager.get_or_create("t", 0, config)
    for i in range(10):
        lg.append_as_leader(memoryview(rb.build_batch([rb.Record(0, 1_000, None, b"v%d" % i)])))
    home = os.path.dirname(lg.dir)
    manager.shutdown()
    other = str(b) if home == str(a) else str(a)
    shutil.copytree(os.path.join(home, "t-0"), os.path.join(other, "t-0"))
    # The copy in `home` gets one more batch: the longer one, whichever dir is read first.
    alone = LogManager(BrokerConfig({"log.dirs": home}))
    alone.load_logs(lambda topic: config)
    alone.logs[("t", 0)].append_as_leader(
        memoryview(rb.build_batch([rb.Record(0, 1_000, None, b"v10")]))
    )
    alone.shutdown()
    both = LogManager(BrokerConfig({"log.dirs": f"{a},{b}"}))
    both.load_logs(lambda topic: config)
    kept = both.logs[("t", 0)]
    assert kept.log_end_offset == 11 and os.path.dirname(kept.dir) == home
    assert not os.path.exists(os.path.join(other, "t-0"))
    assert not [n for n in os.listdir(other) if n.startswith("t-0")]
    both.shutdown()

"""Leader elections and partition reassignments on a real cluster (a private ZooKeeper and three
brokers), driven with Kafka's tools (kafka-leader-election, kafka-reassign-partitions), raw
ElectLeaders / AlterPartitionReassignments / ListPartitionReassignments frames, and the
ZooKeeper-mode znodes (/admin/reassign_partitions, /admin/preferred_replica_election).

Kafka's semantics checked: a reassignment's replicas are the union of old and new while the
new ones catch up (adding/removing reported), the old ones leave only once the new ones are in
the ISR, a cancel goes back to the original replicas; no acknowledged acks=all record is lost
while a producer runs throughout. unclean.leader.election.enable (default false) keeps a
partition offline rather than elect an out-of-sync replica, unless the topic allows it or an
UNCLEAN election is asked for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cluster_helpers import AcksAllProducer, Cluster, assert_acked_once, read_all, wait_until
from helpers import RawClient
from kazoo.client import KazooClient
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey

missing = zookeeper_missing()
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

BIN = os.path.dirname(sys.executable)
# Kafka's error codes
NONE, UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICATION_FACTOR, INVALID_REPLICA_ASSIGNMENT = (
    0,
    3,
    38,
    39,
)
NOT_CONTROLLER, NO_REASSIGNMENT_IN_PROGRESS, ELECTION_NOT_NEEDED = 41, 85, 84
PREFERRED_LEADER_NOT_AVAILABLE = 80


THROTTLE_FETCH = 256 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # No automatic preferred-leader rebalance: the tests decide when leaders move.
    # Throttle windows of 1 s x 2 (Kafka: 11) and 256 KiB per partition per fetch (Kafka:
    # 1 MiB) so a throttled copy of a few MB is rate-bound within seconds, not after a burst.
    c = Cluster(str(tmp_path_factory.mktemp("reassign-cluster")),
                overrides={"auto.leader.rebalance.enable": "false",
                           "replication.quota.window.num": "2",
                           "replica.fetch.max.bytes": str(THROTTLE_FETCH)}).start()  # fmt: skip
    yield c
    c.stop()


@pytest.fixture
def zk(cluster):
    client = KazooClient(hosts=f"{cluster.zk.connect}/pykbroker")
    client.start(10)
    yield client
    client.stop()
    client.close()


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, name), *args], capture_output=True, text=True,
                          timeout=90)  # fmt: skip


def create(cluster: Cluster, name: str, assignment: list[list[int]], **configs: str) -> None:
    client = RawClient(cluster.brokers[next(iter(cluster.brokers))].port)
    try:
        body = {
            "topics": [{"name": name, "num_partitions": -1, "replication_factor": -1,
                        "assignments": [{"partition_index": i, "broker_ids": r}
                                        for i, r in enumerate(assignment)],
                        "configs": [{"name": k.replace("_", "."), "value": v}
                                    for k, v in configs.items()]}],
            "timeout_ms": 10000, "validate_only": False,
        }  # fmt: skip
        assert client.request(ApiKey.CREATE_TOPICS, 5, body).topics[0].error_code == 0
    finally:
        client.close()
    wait_until(lambda: (parts := cluster.agreed_partitions(name)) and
               all(len(p[3]) == len(p[2]) for p in parts.values()), what=f"{name} in sync")  # fmt: skip


def controller_request(cluster: Cluster, api: int, version: int, body: dict):
    controller = cluster.metadata(next(iter(cluster.brokers))).controller_id
    client = RawClient(cluster.brokers[controller].port)
    try:
        return client.request(api, version, body)
    finally:
        client.close()


def leader(cluster: Cluster, topic: str, p: int = 0) -> int:
    return cluster.agreed_partitions(topic)[p][0]


def test_preferred_leader_election(cluster, tmp_path):
    create(cluster, "elect", [[1, 2, 3], [2, 3, 1]])
    # Reordering the replicas (same set) makes 3 the preferred replica; leadership stays.
    path = tmp_path / "order.json"
    path.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "elect", "partition": 0, "replicas": [3, 1, 2]}]}))  # fmt: skip
    r = tool("kafka-reassign-partitions", "--bootstrap-server", cluster.bootstrap(),
             "--execute", "--reassignment-json-file", str(path))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "Successfully started partition reassignment for elect-0"
    wait_until(lambda: cluster.agreed_partitions("elect")[0][2] == [3, 1, 2], what="reordered")
    assert leader(cluster, "elect") == 1

    r = tool("kafka-leader-election", "--bootstrap-server", cluster.bootstrap(),
             "--election-type", "preferred", "--topic", "elect", "--partition", "0")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "Successfully completed leader election (PREFERRED) for partitions elect-0\n"
    # Answered once ZooKeeper holds it: every broker reports the new leader soon after.
    wait_until(lambda: leader(cluster, "elect") == 3, what="3 leads elect-0")

    spec = tmp_path / "elect.json"
    spec.write_text(json.dumps({"partitions": [{"topic": "elect", "partition": 0},
                                               {"topic": "elect", "partition": 1}]}))  # fmt: skip
    r = tool("kafka-leader-election", "--bootstrap-server", cluster.bootstrap(),
             "--election-type", "PREFERRED", "--path-to-json-file", str(spec))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "Valid replica already elected for partitions elect-0, elect-1"
    ]

    r = tool("kafka-leader-election", "--bootstrap-server", cluster.bootstrap(),
             "--election-type", "PREFERRED", "--topic", "nope", "--partition", "0")  # fmt: skip
    assert r.returncode == 1
    assert r.stdout.startswith("Error completing leader election (PREFERRED) for partition: "
                               "nope-0: org.apache.kafka.common.errors."
                               "UnknownTopicOrPartitionException")  # fmt: skip

    # confluent-kafka's AdminClient.elect_leaders: nothing to elect, per partition.
    from confluent_kafka import ElectionType, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(), "broker.address.family": "v4"})
    done = admin.elect_leaders(ElectionType.PREFERRED,
                               [TopicPartition("elect", 0), TopicPartition("elect", 1)])  # fmt: skip
    results = done.result(30)
    assert sorted((tp.partition, e.name()) for tp, e in results.items()) == [
        (0, "ELECTION_NOT_NEEDED"), (1, "ELECTION_NOT_NEEDED")]  # fmt: skip

    # Raw ElectLeaders: a broker that isn't the controller says so, per partition.
    controller = cluster.metadata(1).controller_id
    other = next(b for b in cluster.brokers if b != controller)
    client = RawClient(cluster.brokers[other].port)
    try:
        body = {"election_type": 0, "timeout_ms": 5000,
                "topic_partitions": [{"topic": "elect", "partitions": [0]}]}  # fmt: skip
        r = client.request(ApiKey.ELECT_LEADERS, 2, body)
        assert r.replica_election_results[0].partition_result[0].error_code == NOT_CONTROLLER
    finally:
        client.close()


def test_reassignment_under_an_acks_all_producer(cluster, tmp_path):
    topic = "moving"
    create(cluster, topic, [[1, 2], [2, 3], [3, 1]], min_insync_replicas="2")
    # confluent-kafka and kafka-python produce throughout.
    with AcksAllProducer(cluster.bootstrap(), topic, 3) as producer, \
            AcksAllProducer(cluster.bootstrap(), topic, 3, "kafka-python") as other:  # fmt: skip
        wait_until(lambda: len(producer.acked) >= 300 and len(other.acked) >= 100,
                   what="first acks")  # fmt: skip
        gen = tmp_path / "topics.json"
        gen.write_text(json.dumps({"version": 1, "topics": [{"topic": topic}]}))
        r = tool("kafka-reassign-partitions", "--bootstrap-server", cluster.bootstrap(),
                 "--generate", "--topics-to-move-json-file", str(gen), "--broker-list", "1,2,3")  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "Current partition replica assignment"
        assert json.loads(lines[1]) == {"version": 1, "partitions": [
            {"topic": topic, "partition": p, "replicas": r, "log_dirs": ["any", "any"]}
            for p, r in enumerate([[1, 2], [2, 3], [3, 1]])]}  # fmt: skip
        assert lines[2:4] == ["", "Proposed partition reassignment configuration"]
        proposed = json.loads(lines[4])["partitions"]
        assert sorted(len(set(p["replicas"])) for p in proposed) == [2, 2, 2]

        # Every partition moves to RF 3 with a new first replica: each gains a replica and
        # partition 0 loses broker 1's leadership-preference.
        target = {0: [2, 3, 1], 1: [1, 2, 3], 2: [3, 2]}
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": topic, "partition": p, "replicas": r} for p, r in target.items()]}))  # fmt: skip
        r = tool("kafka-reassign-partitions", "--bootstrap-server", cluster.bootstrap(),
                 "--execute", "--reassignment-json-file", str(plan), "--throttle", "50000000")  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout.splitlines()
        assert out[:2] == ["Current partition replica assignment", ""]
        assert json.loads(out[2])["partitions"][0]["replicas"] == [1, 2]
        assert out[3:5] == [
            "",
            "Save this to use as the --reassignment-json-file option during rollback",
        ]
        assert "The inter-broker throttle limit was set to 50000000 B/s" in out
        assert (
            out[-1]
            == f"Successfully started partition reassignments for {topic}-0,{topic}-1,{topic}-2"
        )

        def verified():
            r = tool("kafka-reassign-partitions", "--bootstrap-server", cluster.bootstrap(),
                     "--verify", "--reassignment-json-file", str(plan))  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr
            return "still in progress" not in r.stdout and r.stdout

        out = wait_until(verified, timeout=60, what="reassignment completed").splitlines()
        assert out[:4] == ["Status of partition reassignment:"] + [
            f"Reassignment of partition {topic}-{p} is completed." for p in range(3)]  # fmt: skip
        assert out[5:] == ["Clearing broker-level throttles on brokers 1,2,3",
                           f"Clearing topic-level throttles on topic {topic}"]  # fmt: skip
        parts = wait_until(lambda: (v := cluster.agreed_partitions(topic))
                           and all(sorted(v[p][3]) == sorted(target[p]) for p in target) and v,
                           what="ISRs are the targets")  # fmt: skip
        assert {p: v[2] for p, v in parts.items()} == target
        acks, others = len(producer.acked), len(other.acked)
        wait_until(lambda: len(producer.acked) > acks + 100 and len(other.acked) > others + 50,
                   what="acks after the move")  # fmt: skip
    assert producer.errors == [] and producer.remaining == 0
    assert other.errors == [] and other.remaining == 0
    records = read_all(cluster.bootstrap(), topic, 3)
    assert_acked_once(producer, records)
    assert_acked_once(other, records)
    # Broker 1 no longer holds partition 2: its replica's log went.
    assert not os.path.exists(os.path.join(cluster.brokers[1].data_dir, f"{topic}-2"))
    print(f"reassignment under load: {len(producer.acked)} + {len(other.acked)} acks",
          file=sys.stderr)  # fmt: skip


def test_reassignment_in_progress_is_listed_and_cancelled(cluster, tmp_path, zk):
    topic = "cancel"
    controller = cluster.metadata(1).controller_id
    s = max(b for b in cluster.brokers if b != controller)  # to be paused: not the controller
    a, b = sorted(set(cluster.brokers) - {s})
    create(cluster, topic, [[a, b]])
    stopped = cluster.brokers[s]
    # Paused, it stays registered (for the session timeout, 3 s) but can't catch up. Raw
    # frames to the controller here: a tool may pick the paused broker for its metadata.
    os.kill(stopped.proc.pid, signal.SIGSTOP)
    try:
        body = {"timeout_ms": 10000, "topics": [{"name": topic, "partitions": [
            {"partition_index": 0, "replicas": [a, b, s]}]}]}  # fmt: skip
        r = controller_request(cluster, ApiKey.ALTER_PARTITION_REASSIGNMENTS, 0, body)
        assert r.error_code == 0 and r.responses[0].partitions[0].error_code == NONE
        r = controller_request(cluster, ApiKey.LIST_PARTITION_REASSIGNMENTS, 0,
                               {"timeout_ms": 10000, "topics": None})  # fmt: skip
        listed = [(t.name, p.partition_index, list(p.replicas), list(p.adding_replicas),
                   list(p.removing_replicas)) for t in r.topics for p in t.partitions]  # fmt: skip
        assert listed == [(topic, 0, [a, b, s], [s], [])]
        # The topic znode carries it, in Kafka's format.
        znode = json.loads(zk.get(f"/brokers/topics/{topic}")[0])
        assert znode["partitions"]["0"] == [a, b, s] and znode["adding_replicas"] == {"0": [s]}
        body["topics"][0]["partitions"][0]["replicas"] = None  # cancel
        r = controller_request(cluster, ApiKey.ALTER_PARTITION_REASSIGNMENTS, 0, body)
        assert r.responses[0].partitions[0].error_code == NONE
    finally:
        os.kill(stopped.proc.pid, signal.SIGCONT)
    wait_until(
        lambda: cluster.agreed_partitions(topic)[0][2] == [a, b], what="back to the original"
    )
    body = {"timeout_ms": 10000, "topics": [{"name": topic, "partitions": [
        {"partition_index": 0, "replicas": None}, {"partition_index": 7, "replicas": [1]}]}]}  # fmt: skip
    r = controller_request(cluster, ApiKey.ALTER_PARTITION_REASSIGNMENTS, 0, body)
    codes = {p.partition_index: p.error_code for p in r.responses[0].partitions}
    assert codes == {0: NO_REASSIGNMENT_IN_PROGRESS, 7: UNKNOWN_TOPIC_OR_PARTITION}
    body = {"timeout_ms": 10000, "topics": [{"name": topic, "partitions": [
        {"partition_index": 0, "replicas": [a, a]}]}]}  # fmt: skip
    r = controller_request(cluster, ApiKey.ALTER_PARTITION_REASSIGNMENTS, 0, body)
    assert r.responses[0].partitions[0].error_code == INVALID_REPLICA_ASSIGNMENT
    # v1 (KIP-860): a move changing the replica count is refused when not allowed.
    body = {"timeout_ms": 10000, "allow_replication_factor_change": False, "topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "replicas": [a]}]}]}  # fmt: skip
    r = controller_request(cluster, ApiKey.ALTER_PARTITION_REASSIGNMENTS, 1, body)
    assert r.responses[0].partitions[0].error_code == INVALID_REPLICATION_FACTOR
    r = tool("kafka-reassign-partitions", "--bootstrap-server", cluster.bootstrap(), "--list")
    assert r.stdout == "No partition reassignments found.\n"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": [a, b, s]}]}))  # fmt: skip
    r = tool("kafka-reassign-partitions", "--bootstrap-server", cluster.bootstrap(), "--cancel",
             "--reassignment-json-file", str(plan), "--preserve-throttles")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == ("None of the specified partition reassignments are active.\n"
                        "None of the specified partition moves are active.")  # fmt: skip
    wait_until(lambda: len(cluster.live_ids()) == 3, what="the paused broker back")


def test_zookeeper_mode_admin_znodes(cluster, zk):
    """Kafka's ZooKeeper-mode requests: /admin/reassign_partitions is carried out and deleted
    when done; /admin/preferred_replica_election elects and is deleted."""
    topic = "znodes"
    create(cluster, topic, [[1, 2]])
    zk.create("/admin/reassign_partitions", json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": [2, 3]}]}).encode())  # fmt: skip
    wait_until(lambda: zk.exists("/admin/reassign_partitions") is None, what="znode deleted")
    parts = wait_until(lambda: (v := cluster.agreed_partitions(topic)) and v[0][2] == [2, 3] and v,
                       what="moved to [2, 3]")  # fmt: skip
    assert sorted(parts[0][3]) == [2, 3] and parts[0][0] in (2, 3)
    if parts[0][0] != 2:
        zk.create("/admin/preferred_replica_election", json.dumps({"version": 1, "partitions": [
            {"topic": topic, "partition": 0}]}).encode())  # fmt: skip
        wait_until(lambda: zk.exists("/admin/preferred_replica_election") is None, what="deleted")
        wait_until(lambda: leader(cluster, topic) == 2, what="preferred leader 2")


def fill(cluster: Cluster, topic: str, nbytes: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all",
                         "batch.size": 65536, "linger.ms": 5, "compression.type": "none",
                         "broker.address.family": "v4"})  # fmt: skip
    value = os.urandom(10240)  # incompressible, 10 KiB
    for _ in range(nbytes // len(value)):
        producer.produce(topic, value=value, partition=0)
        producer.poll(0)
    assert producer.flush(30) == 0


def reassignments(cluster: Cluster) -> set[str]:
    r = controller_request(cluster, ApiKey.LIST_PARTITION_REASSIGNMENTS, 0,
                           {"timeout_ms": 10000, "topics": None})  # fmt: skip
    return {t.name for t in r.topics}


def test_throttled_reassignment_is_rate_bound(cluster, tmp_path, zk):
    """kafka-reassign-partitions --throttle: the moving replicas are marked in the topic's
    leader/follower.replication.throttled.replicas and the rate set on the brokers; the copy
    then runs at that rate (Kafka's ReplicationQuotaManager, leader and follower side), while
    a topic moved at the same time without a throttle, between the same brokers, is not held
    back. --verify clears the throttle once the move is done."""
    rate = 1024 * 1024  # B/s
    size = 6 * 1024 * 1024
    create(cluster, "throttled", [[1]])
    create(cluster, "unthrottled", [[1]])
    fill(cluster, "throttled", size)
    fill(cluster, "unthrottled", size)
    plan = tmp_path / "throttled.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "throttled", "partition": 0, "replicas": [2]}]}))  # fmt: skip
    free = tmp_path / "unthrottled.json"
    free.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "unthrottled", "partition": 0, "replicas": [2]}]}))  # fmt: skip
    r = tool("kafka-reassign-partitions", "--bootstrap-server", cluster.bootstrap(),
             "--execute", "--reassignment-json-file", str(plan), "--throttle", str(rate))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    started = time.monotonic()  # the copy began inside the tool: a shorter span than the real one
    assert f"The inter-broker throttle limit was set to {rate} B/s" in r.stdout
    # Kafka's format: sources on the leader side, destinations on the follower side.
    configs = json.loads(zk.get("/config/topics/throttled")[0])["config"]
    assert configs["leader.replication.throttled.replicas"] == "0:1"
    assert configs["follower.replication.throttled.replicas"] == "0:2"
    for b in (1, 2):
        broker = json.loads(zk.get(f"/config/brokers/{b}")[0])["config"]
        assert broker["leader.replication.throttled.rate"] == str(rate)
        assert broker["follower.replication.throttled.rate"] == str(rate)
    r = tool("kafka-reassign-partitions", "--bootstrap-server", cluster.bootstrap(), "--execute",
             "--additional", "--reassignment-json-file", str(free))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: "unthrottled" not in reassignments(cluster), timeout=60,
               what="the unthrottled move done")  # fmt: skip
    # Not held back: the unthrottled move finishes on its own (usually while the throttled one
    # still copies; on starved cores the order is not guaranteed, so it is checked only then).
    if "throttled" in reassignments(cluster):
        r = tool("kafka-reassign-partitions", "--bootstrap-server", cluster.bootstrap(),
                 "--verify", "--reassignment-json-file", str(plan))  # fmt: skip
        assert r.stdout == ("Status of partition reassignment:\n"
                            "Reassignment of partition throttled-0 is still in progress.\n\n")  # fmt: skip
    assert "leader.replication.throttled.replicas" in json.loads(
        zk.get("/config/topics/throttled")[0])["config"]  # fmt: skip
    wait_until(lambda: "throttled" not in reassignments(cluster), timeout=60,
               what="the throttled move done")  # fmt: skip
    took = time.monotonic() - started
    # The bound: a fetch goes out only while the rate over the last window (1-2 s) is within
    # `rate`, and brings at most one partition's fetch size (plus one batch past it), so each
    # 1 s window moves at most rate + THROTTLE_FETCH + a 64 KiB batch; less one window for
    # the start. 6 MiB at 1 MiB/s: >= 3.8 s (about 6 s expected; unthrottled well under 1 s).
    bound = size / (rate + THROTTLE_FETCH + 65536) - 1
    assert took >= bound, f"{size} bytes at {rate} B/s moved in {took:.2f} s (< {bound:.2f} s)"
    r = tool("kafka-reassign-partitions", "--bootstrap-server", cluster.bootstrap(),
             "--verify", "--reassignment-json-file", str(plan))  # fmt: skip
    assert r.stdout.splitlines() == [
        "Status of partition reassignment:",
        "Reassignment of partition throttled-0 is completed.",
        "",
        "Clearing broker-level throttles on brokers 1,2,3",
        "Clearing topic-level throttles on topic throttled",
    ]
    configs = json.loads(zk.get("/config/topics/throttled")[0])["config"]
    assert not any("throttled" in k for k in configs), configs
    for b in (1, 2, 3):
        node = zk.exists(f"/config/brokers/{b}") and zk.get(f"/config/brokers/{b}")[0]
        assert not node or not any("throttled" in k for k in json.loads(node)["config"])
    # Every record arrived (the new replica is the only one now).
    ends = [p for p in cluster.agreed_partitions("throttled").values()]
    assert ends[0][2] == [2]
    print(f"throttled reassignment: {size} B at {rate} B/s in {took:.2f} s (bound {bound:.2f} s)",
          file=sys.stderr)  # fmt: skip


def test_in_sync_followers_are_not_throttled(cluster):
    """Kafka's shouldLeaderThrottle: the leader holds back only replicas outside the ISR. With
    every replica of a topic throttled on the leader side at 1 B/s, acks=all writes to it go
    as fast as to an unthrottled topic on the same brokers: its follower is in sync."""
    from confluent_kafka import Producer

    create(cluster, "insync", [[1, 2]], leader_replication_throttled_replicas="*",
           min_insync_replicas="2")  # fmt: skip
    create(cluster, "insync-control", [[1, 2]], min_insync_replicas="2")
    configs = os.path.join(BIN, "kafka-configs")
    r = subprocess.run([configs, "--bootstrap-server", cluster.bootstrap(), "--alter",
                        "--entity-type", "brokers", "--entity-name", "1", "--add-config",
                        "leader.replication.throttled.rate=1"], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all",
                         "batch.size": 65536, "broker.address.family": "v4"})  # fmt: skip

    def rounds(topic: str) -> float:
        """Ten rounds of 320 KiB, each acknowledged before the next: more than one follower
        fetch (256 KiB here) each, so a throttled follower would wait out the quota's window
        (1-2 s) in every round."""
        started = time.monotonic()
        for _ in range(10):
            for _ in range(320):
                producer.produce(topic, value=os.urandom(1024), partition=0)
            assert producer.flush(30) == 0
        return time.monotonic() - started

    try:
        control = rounds("insync-control")
        throttled = rounds("insync")
        # Throttled as Kafka would throttle a follower outside the ISR, this takes >= 10 s
        # more (one quota window per round); unthrottled, about the control's time.
        assert throttled < control + 5, (throttled, control)
        assert sorted(cluster.agreed_partitions("insync")[0][3]) == [1, 2]
    finally:
        r = subprocess.run([configs, "--bootstrap-server", cluster.bootstrap(), "--alter",
                            "--entity-type", "brokers", "--entity-name", "1", "--delete-config",
                            "leader.replication.throttled.rate"], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
    print(f"in-sync follower, leader throttle 1 B/s: {throttled:.2f} s, control {control:.2f} s",
          file=sys.stderr)  # fmt: skip


def test_unclean_leader_election(cluster):
    """Replicas [3, 2]: broker 2 falls out of the ISR, then 3 dies. With
    unclean.leader.election.enable=false (Kafka's default) the partition stays offline while 2
    is up; an UNCLEAN election (the tool) or the topic config brings 2 in as leader."""
    create(cluster, "unclean-tool", [[3, 2]])
    create(cluster, "unclean-config", [[3, 2]])
    cluster.kill(2)
    for t in ("unclean-tool", "unclean-config"):
        wait_until(lambda t=t: cluster.agreed_partitions(t)[0][3] == [3], what="ISR [3]")
    cluster.kill(3)
    for t in ("unclean-tool", "unclean-config"):
        wait_until(lambda t=t: cluster.agreed_partitions(t)[0][0] == -1, what="offline")
    cluster.start_broker(2)
    wait_until(lambda: 2 in cluster.live_ids(), what="broker 2 registered")
    # The controller has seen broker 2 (registered, not in sync): still offline, ISR [3].
    view = cluster.partitions("unclean-tool", 2)[0]
    assert view[0] == -1 and view[3] == [3], view
    r = tool("kafka-leader-election", "--bootstrap-server", cluster.bootstrap(),
             "--election-type", "UNCLEAN", "--topic", "unclean-tool", "--partition", "0")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        r.stdout
        == "Successfully completed leader election (UNCLEAN) for partitions unclean-tool-0\n"
    )
    wait_until(lambda: cluster.partitions("unclean-tool", 2)[0][0] == 2, what="2 leads")
    assert cluster.partitions("unclean-config", 2)[0][0] == -1
    r = tool("kafka-configs", "--bootstrap-server", cluster.bootstrap(), "--alter", "--entity-type",
             "topics", "--entity-name", "unclean-config", "--add-config",
             "unclean.leader.election.enable=true")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: cluster.partitions("unclean-config", 2)[0][0] == 2, what="config elects 2")
    cluster.start_broker(3)
    for t in ("unclean-tool", "unclean-config"):
        wait_until(lambda t=t: sorted(cluster.agreed_partitions(t)[0][3]) == [2, 3],
                   what="3 back in sync")  # fmt: skip

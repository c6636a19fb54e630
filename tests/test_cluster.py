"""Replication across three brokers coordinated by ZooKeeper (guide sections 5, 6 and 10).

One cluster (a private ZooKeeper and three broker processes) serves the whole module; tests that
kill a broker start it again before they end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from cluster_helpers import Cluster, wait_until
from helpers import RawClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import NotEnoughReplicasError, TopicAlreadyExistsError
from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey

missing = zookeeper_missing()
if missing:
    print(f"\nSKIPPING cluster tests: {missing}", file=sys.stderr)
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

KAFKA_TOPICS = os.path.join(os.path.dirname(sys.executable), "kafka-topics")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("cluster"))).start()
    yield c
    c.stop()


def create_topic(cluster: Cluster, name: str, partitions: int, rf: int, configs=None) -> dict:
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap())
    try:
        admin.create_topics([NewTopic(name, partitions, rf, topic_configs=configs or {})])
    except TopicAlreadyExistsError:
        pass  # created a moment ago (e.g. by kafka-topics) and not yet seen by every broker
    finally:
        admin.close()
    return wait_for_topic(cluster, name, partitions, rf)


def wait_for_topic(cluster: Cluster, name: str, partitions: int, rf: int) -> dict:
    return wait_until(
        lambda: (
            (parts := cluster.agreed_partitions(name))
            and len(parts) == partitions
            and all(leader >= 0 and len(isr) == rf for leader, _, _, isr, _ in parts.values())
            and parts
        ),
        what=f"{name}: leaders and full ISRs on every broker",
    )


def ensure_high_traffic(cluster: Cluster) -> dict:
    """The guide's topic, whether an earlier test (or the CLI) created it or not."""
    if any(cluster.partitions("high_traffic", i) for i in cluster.brokers):
        return wait_for_topic(cluster, "high_traffic", 4, 2)
    return create_topic(cluster, "high_traffic", 4, 2)


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=20000,
    )  # fmt: skip
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    seen = []
    try:
        for msg in consumer:
            seen.append((msg.partition, msg.offset, msg.value))
            if len(seen) >= expected:
                break
    finally:
        consumer.close()
    return seen


def test_high_traffic_topic_across_three_brokers(cluster):
    """The guide's `--partitions 4 --replication-factor 2`, spread over three brokers."""
    if os.path.exists(KAFKA_TOPICS):
        out = subprocess.run(
            [KAFKA_TOPICS, "--create", "--topic", "high_traffic", "--bootstrap-server",
             cluster.bootstrap(), "--partitions", "4", "--replication-factor", "2"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    parts = ensure_high_traffic(cluster)
    assert sorted(parts) == [0, 1, 2, 3]
    for leader, epoch, replicas, isr, offline in parts.values():
        assert len(replicas) == 2 and len(set(replicas)) == 2
        assert leader == replicas[0]  # the preferred replica leads a new topic
        assert sorted(isr) == sorted(replicas)
        assert offline == []
        assert epoch >= 0
    assert len({leader for leader, *_ in parts.values()}) == 3  # leadership spread out
    md = cluster.metadata(1)
    assert md.controller_id in (1, 2, 3)
    assert all(cluster.metadata(i).controller_id == md.controller_id for i in cluster.brokers)
    if os.path.exists(KAFKA_TOPICS):
        out = subprocess.run(
            [KAFKA_TOPICS, "--describe", "--topic", "high_traffic", "--bootstrap-server",
             cluster.bootstrap()], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "ReplicationFactor: 2" in out.stdout
        assert out.stdout.count("Isr:") == 4


def test_followers_fetch_in_sessions(cluster):
    """Followers fetch in incremental fetch sessions (KIP-227), as Kafka's do: every leader
    keeps a session for each broker following it, and replication (acks=all) goes on
    through the incremental fetches that follow."""
    create_topic(cluster, "sessions", 3, 3)
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all")
    for i in range(30):
        producer.send("sessions", f"s-{i}".encode(), partition=i % 3)
    producer.flush()
    producer.close()
    for node, b in cluster.brokers.items():
        followers = {e["replica_id"] for e in b.events("fetch_session_created")}
        assert followers >= set(cluster.brokers) - {node}, (node, followers)
    seen = consume_all(cluster.bootstrap(), "sessions", 3, 30)
    assert sorted(v for _, _, v in seen) == sorted(f"s-{i}".encode() for i in range(30))


def test_acknowledged_records_survive_leader_kill(cluster):
    """acks=all from kafka-python and confluent-kafka; SIGKILL a leader; nothing acknowledged is
    lost; the ISR shrinks, and grows back once the broker returns and catches up."""
    from confluent_kafka import Producer

    parts = ensure_high_traffic(cluster)
    acked: set[tuple[int, int, bytes]] = set()

    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all", linger_ms=5)
    futures = [producer.send("high_traffic", f"kp-{i}".encode()) for i in range(300)]
    producer.flush()
    for i, f in enumerate(futures):
        md = f.get(timeout=30)
        acked.add((md.partition, md.offset, f"kp-{i}".encode()))
    producer.close()

    def on_delivery(err, msg):
        if err is None:
            acked.add((msg.partition(), msg.offset(), msg.value()))

    cp = Producer(
        {"bootstrap.servers": cluster.bootstrap(), "acks": "all", "linger.ms": 5, "log_level": 2}
    )
    for i in range(300):
        cp.produce("high_traffic", f"ck-{i}".encode(), on_delivery=on_delivery)
    assert cp.flush(30) == 0
    assert len(acked) == 600

    victim = parts[0][0]  # the leader of partition 0
    led = {p for p, (leader, *_rest) in parts.items() if leader == victim}
    followed = {p for p, (leader, _, replicas, *_r) in parts.items() if victim in replicas} - led
    cluster.kill(victim)

    def failed_over():
        view = cluster.agreed_partitions("high_traffic")
        if not view:
            return None
        for p, (leader, epoch, replicas, isr, offline) in view.items():
            if victim in replicas and (victim in isr or offline != [victim]):
                return None
            if leader in (-1, victim):
                return None
            if p in led and epoch <= parts[p][1]:
                return None
        return view

    view = wait_until(failed_over, what=f"failover away from broker {victim}")
    for p in led:
        assert view[p][0] != victim and view[p][3] == [view[p][0]]
    for p in followed:
        assert view[p][0] == parts[p][0] and view[p][3] == [parts[p][0]]

    # Still writable with acks=all (min.insync.replicas=1) while the broker is away.
    cp = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "log_level": 2})
    for i in range(100):
        cp.produce("high_traffic", f"during-{i}".encode(), on_delivery=on_delivery)
    assert cp.flush(30) == 0
    assert len(acked) == 700

    seen = consume_all(cluster.bootstrap(), "high_traffic", 4, len(acked))
    assert acked <= set(seen), f"lost: {sorted(acked - set(seen))[:5]}"

    cluster.start_broker(victim)
    view = wait_until(
        lambda: (
            (v := cluster.agreed_partitions("high_traffic"))
            and all(sorted(isr) == sorted(replicas) for _, _, replicas, isr, _ in v.values())
            and v
        ),
        what=f"broker {victim} back in every ISR",
    )
    assert all(offline == [] for *_, offline in view.values())
    # The controller's preferred replica election gives the returning broker its partitions back.
    wait_until(
        lambda: all(
            leader == replicas[0]
            for leader, _, replicas, _, _ in cluster.agreed_partitions("high_traffic").values()
        ),
        what="preferred replicas leading again",
    )


def test_restarted_replica_serves_everything_as_leader(cluster):
    """After catching up, the returning broker holds every acknowledged record: make it the
    only replica left and read them all from it."""
    create_topic(cluster, "handover", 1, 2)
    first_leader, _, replicas, _, _ = cluster.agreed_partitions("handover")[0]
    other = next(r for r in replicas if r != first_leader)
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all")
    for i in range(200):
        producer.send("handover", f"v{i}".encode(), partition=0)
    producer.flush()
    producer.close()

    cluster.kill(other)
    wait_until(lambda: cluster.agreed_partitions("handover")[0][3] == [first_leader],
               what="ISR without the follower")  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all")
    for i in range(200, 300):
        producer.send("handover", f"v{i}".encode(), partition=0)
    producer.flush()
    producer.close()
    cluster.start_broker(other)
    wait_until(lambda: sorted(cluster.agreed_partitions("handover")[0][3]) == sorted(replicas),
               what="follower back in the ISR")  # fmt: skip

    cluster.kill(first_leader)
    wait_until(lambda: cluster.agreed_partitions("handover")[0][0] == other,
               what="the caught-up follower leading")  # fmt: skip
    seen = consume_all(cluster.bootstrap(), "handover", 1, 300)
    assert [v for _, _, v in seen] == [f"v{i}".encode() for i in range(300)]
    assert [o for _, o, _ in seen] == list(range(300))
    cluster.start_broker(first_leader)
    wait_until(lambda: len(cluster.agreed_partitions("handover")[0][3]) == 2,
               what="both replicas in sync again")  # fmt: skip


def test_min_insync_replicas_refuses_acks_all(cluster):
    """min.insync.replicas=2 with one of two replicas down: acks=all gets NOT_ENOUGH_REPLICAS,
    acks=1 still works; once the replica is back, acks=all works again."""
    parts = create_topic(cluster, "strict", 1, 2, {"min.insync.replicas": "2"})
    leader, _, replicas, _, _ = parts[0]
    follower = next(r for r in replicas if r != leader)
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all", retries=0)
    producer.send("strict", b"before").get(timeout=30)

    cluster.kill(follower)
    wait_until(lambda: cluster.agreed_partitions("strict")[0][3] == [leader],
               what="ISR shrunk to the leader")  # fmt: skip
    with pytest.raises(NotEnoughReplicasError):
        producer.send("strict", b"refused").get(timeout=30)
    producer.close()
    one = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks=1)
    one.send("strict", b"acks=1").get(timeout=30)
    one.close()

    cluster.start_broker(follower)
    wait_until(lambda: len(cluster.agreed_partitions("strict")[0][3]) == 2,
               what="ISR back to two")  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all", retries=0)
    producer.send("strict", b"after").get(timeout=30)
    producer.close()


def test_topic_deletion_reaches_every_broker(cluster):
    create_topic(cluster, "doomed", 3, 3)
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap())
    admin.delete_topics(["doomed"])
    admin.close()
    wait_until(lambda: all(not cluster.partitions("doomed", i) for i in cluster.brokers),
               what="topic gone from every broker's metadata")  # fmt: skip
    wait_until(
        lambda: (
            not any(
                name.startswith("doomed-") and not name.endswith("-delete")
                for i in cluster.brokers
                for name in os.listdir(cluster.brokers[i].data_dir)
            )
        ),
        what="every replica's log deleted",
    )
    # The name is free again once the controller has finished.
    wait_until(lambda: _create_ok(cluster, "doomed"), what="topic created again")


def _create_ok(cluster: Cluster, name: str) -> bool:
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap())
    try:
        admin.create_topics([NewTopic(name, 1, 3)])
        return True
    finally:
        admin.close()


def test_broker_restarted_at_once_is_noticed(cluster):
    """SIGKILL and restart right away: the new process waits for ZooKeeper to expire the old
    session, the controller sees a new broker epoch and moves leadership off it, and it rejoins
    as a follower with its data intact."""
    parts = create_topic(cluster, "bounce", 1, 2)
    leader, epoch, replicas, _, _ = parts[0]
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all")
    for i in range(50):
        producer.send("bounce", f"b{i}".encode())
    producer.flush()
    producer.close()
    # The old session must outlive the restart for this test's path, but on a starved machine
    # the new process can take longer than the 3 s session to start. So a session of the
    # test's own takes over the registration (same data) as the old one expires, and holds it
    # until the restarted broker has seen it: to the broker, the same as a slow expiry.
    zk = KazooClient(hosts=f"{cluster.zk.connect}/pykbroker")
    zk.start()
    try:
        path = f"/brokers/ids/{leader}"
        registration, _ = zk.get(path)
        cluster.kill(leader)

        def take_over() -> bool:
            try:
                zk.create(path, registration, ephemeral=True)
                return True
            except NodeExistsError:
                return False

        wait_until(take_over, what="the killed broker's session to expire")
        # start_broker returns once the broker is registered, which waits for the znode.
        starting = threading.Thread(target=cluster.start_broker, args=(leader,), daemon=True)
        starting.start()
        wait_until(
            lambda: cluster.history[-1].events("broker_id_registered_by_old_session"),
            what="the restarted broker waiting for the old registration to go",
        )
    finally:
        zk.stop()
        zk.close()
    starting.join(60)
    assert leader in cluster.brokers, "the restarted broker never registered"
    view = wait_until(
        lambda: (
            (v := cluster.agreed_partitions("bounce")[0])[1] > epoch
            and sorted(v[3]) == sorted(replicas)
            and v
        ),
        what="a new leader epoch and a full ISR after the bounce",
    )
    seen = consume_all(cluster.bootstrap(), "bounce", 1, 50)
    assert [v for _, _, v in seen] == [f"b{i}".encode() for i in range(50)]
    assert view[0] in replicas


def test_paused_broker_loses_its_session_and_comes_back(cluster):
    """A broker frozen past its ZooKeeper session (SIGSTOP) is replaced as leader; on SIGCONT
    it gets a new session, registers again, learns it is a follower and catches up."""
    import signal

    parts = create_topic(cluster, "zombie", 1, 2)
    leader, epoch, replicas, _, _ = parts[0]
    other = next(r for r in replicas if r != leader)
    frozen = cluster.brokers[leader]
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(
            lambda: cluster.partitions("zombie", other)[0][0] == other,
            what="the other replica leading",
        )
        producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(leader), acks="all")
        for i in range(20):
            producer.send("zombie", f"z{i}".encode())
        producer.flush()
        producer.close()
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    wait_until(
        lambda: (v := cluster.agreed_partitions("zombie")) and sorted(v[0][3]) == sorted(replicas),
        what="the paused broker back in the ISR",
    )
    assert frozen.events("zookeeper_session_renewed")
    seen = consume_all(cluster.bootstrap(), "zombie", 1, 20)
    assert [v for _, _, v in seen] == [f"z{i}".encode() for i in range(20)]


def test_diverged_replica_truncates_by_leader_epoch(cluster):
    """Unclean election makes an out-of-sync replica leader; the old leader's extra records
    (acks=1, never replicated) are cut off when it returns (OffsetsForLeaderEpoch), and its log
    becomes the new leader's exactly: it later serves the same records as leader."""
    import signal

    parts = create_topic(cluster, "diverge", 1, 2, {"unclean.leader.election.enable": "true"})
    leader, _, replicas, _, _ = parts[0]
    other = next(r for r in replicas if r != leader)
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all")
    for i in range(10):
        producer.send("diverge", f"common-{i}".encode())
    producer.flush()
    producer.close()

    frozen = cluster.brokers[other]
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: cluster.partitions("diverge", leader)[0][3] == [leader],
                   what="ISR shrunk to the leader")  # fmt: skip
        lonely = KafkaProducer(bootstrap_servers=cluster.bootstrap(other), acks=1)
        for i in range(5):
            lonely.send("diverge", f"lost-{i}".encode())
        lonely.flush()
        lonely.close()
        cluster.kill(leader)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: cluster.partitions("diverge", other)[0][0] == other,
               what="unclean election of the stale replica")  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all")
    for i in range(3):
        producer.send("diverge", f"new-{i}".encode())
    producer.flush()
    producer.close()
    expected = [f"common-{i}".encode() for i in range(10)] + [f"new-{i}".encode() for i in range(3)]

    cluster.start_broker(leader)
    wait_until(lambda: sorted(cluster.agreed_partitions("diverge")[0][3]) == sorted(replicas),
               what="the old leader back in the ISR")  # fmt: skip
    assert cluster.brokers[leader].events("follower_truncating")
    cluster.kill(other)
    wait_until(lambda: cluster.partitions("diverge", leader)[0][0] == leader,
               what="the old leader leading again")  # fmt: skip
    seen = consume_all(cluster.bootstrap(), "diverge", 1, len(expected))
    assert [v for _, _, v in seen] == expected
    assert [o for _, o, _ in seen] == list(range(len(expected)))
    cluster.start_broker(other)
    wait_until(lambda: len(cluster.agreed_partitions("diverge")[0][3]) == 2,
               what="both replicas in sync")  # fmt: skip


def test_whole_cluster_restart(cluster):
    """Every broker shut down cleanly (SIGTERM), then started again: the same leaders' data, all
    partitions led and fully in sync, and still writable with acks=all."""
    create_topic(cluster, "restart", 3, 3)
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all")
    sent = [f"s{i}".encode() for i in range(90)]
    for v in sent:
        producer.send("restart", v)
    producer.flush()
    producer.close()
    ids = sorted(cluster.brokers)
    for node_id in ids:
        assert cluster.terminate(node_id) == 0
    for node_id in ids:
        cluster.start_broker(node_id)
    view = wait_for_topic(cluster, "restart", 3, 3)
    assert all(leader >= 0 for leader, *_ in view.values())
    seen = consume_all(cluster.bootstrap(), "restart", 3, len(sent))
    assert sorted(v for _, _, v in seen) == sorted(sent)
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all", retries=5)
    producer.send("restart", b"after").get(timeout=30)
    producer.close()


def test_batches_larger_than_replica_fetch_max_bytes_replicate(cluster):
    """A 2 MB record (topic max.message.bytes raised) still reaches the follower, whose fetches
    ask for replica.fetch.max.bytes = 1 MiB per partition: the first batch always comes whole."""
    create_topic(cluster, "big", 2, 2, {"max.message.bytes": "3000000"})
    producer = KafkaProducer(
        bootstrap_servers=cluster.bootstrap(), acks="all", max_request_size=3_000_000
    )
    big = b"x" * 2_000_000
    for p in (0, 1):
        producer.send("big", big, partition=p).get(timeout=30)  # acks=all: the follower has it
    producer.close()


def test_confluent_consumer_follows_a_leader_change(cluster):
    """librdkafka reading through a failover: it validates its position with the new leader
    (OffsetsForLeaderEpoch, KIP-320) and goes on with no gap and no repeat."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    parts = create_topic(cluster, "follow", 1, 3)
    leader = parts[0][0]
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "log_level": 2})
    for i in range(50):
        producer.produce("follow", f"f{i}".encode())
    assert producer.flush(30) == 0
    consumer = Consumer({
        "bootstrap.servers": cluster.bootstrap(), "group.id": "follow-test",
        "enable.auto.commit": False, "log_level": 2,
    })  # fmt: skip
    consumer.assign([TopicPartition("follow", 0, 0)])
    got = []

    def read_until(n: int) -> None:
        def more():
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append((msg.offset(), msg.value()))
            return len(got) >= n

        wait_until(more, what=f"{n} records consumed")

    try:
        read_until(50)
        cluster.kill(leader)
        wait_until(lambda: cluster.agreed_partitions("follow")[0][0] not in (-1, leader),
                   what="a new leader")  # fmt: skip
        for i in range(50, 100):
            producer.produce("follow", f"f{i}".encode())
        assert producer.flush(30) == 0
        read_until(100)
    finally:
        consumer.close()
    assert got == [(i, f"f{i}".encode()) for i in range(100)]
    cluster.start_broker(leader)
    wait_until(lambda: len(cluster.agreed_partitions("follow")[0][3]) == 3,
               what="all three replicas in sync")  # fmt: skip


def test_topic_znode_without_topic_id_keeps_its_logs(cluster):
    """A topic znode without topic_id (older Kafka tools) is the same topic, never a new one:
    the brokers keep its logs and one of them writes an id back, as Kafka's controller does."""
    create_topic(cluster, "legacy_id", 1, 3)
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all")
    for i in range(10):
        producer.send("legacy_id", f"v{i}".encode(), partition=0)
    producer.flush()
    producer.close()
    zk = KazooClient(hosts=f"{cluster.zk.connect}/pykbroker")
    zk.start()
    try:
        path = "/brokers/topics/legacy_id"
        data, _ = zk.get(path)
        znode = json.loads(data)
        original = znode.pop("topic_id")
        znode["version"] = 1
        zk.set(path, json.dumps(znode).encode())
        restored = wait_until(
            lambda: json.loads(zk.get(path)[0]).get("topic_id"), what="topic_id written back"
        )
    finally:
        zk.stop()
        zk.close()
    assert restored == original  # the brokers' id, not a fresh one
    seen = consume_all(cluster.bootstrap(), "legacy_id", 1, 10)
    assert [v for _, _, v in seen] == [f"v{i}".encode() for i in range(10)]
    for i in cluster.brokers:
        assert os.path.isdir(os.path.join(cluster.brokers[i].data_dir, "legacy_id-0"))


def test_finalized_features_live_in_zookeeper(cluster):
    """Feature levels are kept in /feature as Kafka's ZooKeeper mode keeps them (FeatureZNode
    version 2: max levels, status 1 = enabled), its znode version the epoch; a change made
    through one broker is advertised by all."""

    def levels(node_id: int) -> tuple[int, dict[str, int]]:
        c = RawClient(cluster.brokers[node_id].port)
        try:
            r = c.request(ApiKey.API_VERSIONS, 4, {"client_software_name": "t",
                                                   "client_software_version": "1"})  # fmt: skip
        finally:
            c.close()
        return r.finalized_features_epoch, {
            f.name: f.max_version_level for f in r.finalized_features
        }

    zk = KazooClient(hosts=f"{cluster.zk.connect}/pykbroker")
    zk.start()
    try:
        data, stat = zk.get("/feature")
        assert json.loads(data) == {"version": 2, "status": 1, "features": {
            "group.version": {"max_version_level": 1},
            "transaction.version": {"max_version_level": 2}}}  # fmt: skip
        first = next(iter(cluster.brokers))
        r = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "kafka-features"), "--bootstrap-server",
             cluster.brokers[first].bootstrap_servers, "upgrade", "--feature", "share.version=1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (r.returncode, r.stdout) == (0, "share.version was upgraded to 1.\n")
        want = (
            stat.version + 1,
            {"group.version": 1, "share.version": 1, "transaction.version": 2},
        )
        for node_id in cluster.brokers:
            wait_until(lambda n=node_id: levels(n) == want, what=f"broker {node_id}'s features")
        assert json.loads(zk.get("/feature")[0])["features"]["share.version"] == {
            "max_version_level": 1}  # fmt: skip
        r = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "kafka-features"), "--bootstrap-server",
             cluster.bootstrap(), "disable", "--feature", "share.version"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (r.returncode, r.stdout) == (0, "share.version was disabled.\n")
    finally:
        zk.stop()
        zk.close()


def test_fetch_by_topic_id_across_brokers(cluster):
    """Fetch v16 (KIP-951): a broker that holds no replica of the partition answers
    NOT_LEADER_OR_FOLLOWER with the current leader, its epoch and its endpoint, so the consumer
    goes there without a Metadata round trip. Fetch v18 (KIP-1166): a follower whose known high
    watermark is behind the leader's is answered at once, not held for max_wait_ms."""
    parts = create_topic(cluster, "by_id", 1, 2)
    leader, epoch, replicas = parts[0][0], parts[0][1], parts[0][2]
    c = RawClient(cluster.brokers[leader].port)
    try:
        md = c.request(ApiKey.METADATA, 12, {
            "topics": [{"name": "by_id", "topic_id": None}], "allow_auto_topic_creation": False,
            "include_topic_authorized_operations": False})  # fmt: skip
    finally:
        c.close()
    topic_id = md.topics[0].topic_id
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all")
    producer.send("by_id", b"v0", partition=0)
    producer.flush()
    producer.close()

    def fetch(node_id: int, version: int, replica: int = -1, hw: int | None = None,
              max_wait_ms: int = 0):  # fmt: skip
        partition = {"partition": 0, "current_leader_epoch": -1, "fetch_offset": 1,
                     "last_fetched_epoch": -1, "log_start_offset": -1,
                     "partition_max_bytes": 1 << 20}  # fmt: skip
        if hw is not None:
            partition["high_watermark"] = hw
        body = {"max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": 1 << 20,
                "isolation_level": 0, "session_id": 0, "session_epoch": -1,
                "topics": [{"topic_id": topic_id, "partitions": [partition]}],
                "forgotten_topics_data": [], "rack_id": "",
                "replica_state": {"replica_id": replica, "replica_epoch": -1}}  # fmt: skip
        c = RawClient(cluster.brokers[node_id].port)
        try:
            started = time.monotonic()
            r = c.request(ApiKey.FETCH, version, body)
            return r, time.monotonic() - started
        finally:
            c.close()

    other = next(i for i in cluster.brokers if i not in replicas)
    r, _ = fetch(other, 16)
    p = r.responses[0].partitions[0]
    assert p.error_code == 6  # NOT_LEADER_OR_FOLLOWER
    assert (p.current_leader.leader_id, p.current_leader.leader_epoch) == (leader, epoch)
    assert [(e.node_id, e.port) for e in r.node_endpoints] == [(leader, cluster.ports[leader])]

    follower = next(i for i in replicas if i != leader)  # at the leader's end of log
    r, took = fetch(leader, 18, replica=follower, hw=0, max_wait_ms=10000)
    p = r.responses[0].partitions[0]
    assert (p.error_code, p.high_watermark) == (0, 1) and took < 5

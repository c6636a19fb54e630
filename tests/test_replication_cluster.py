"""Replication bugs from issue 12 on a real cluster (a private ZooKeeper and three brokers):
topic configs that every broker agrees on when a CreateTopics races a Metadata auto-create, and a
follower that stops within a bound on SIGTERM while its leader epochs churn."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest
from cluster_helpers import Cluster, wait_until
from helpers import RawClient
from kazoo.client import KazooClient
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey
from protocol.errors import ErrorCode

missing = zookeeper_missing()
if missing:
    print(f"\nSKIPPING cluster tests: {missing}", file=sys.stderr)
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

# The issue asks for 50 creation races; PYKBROKER_RACE_ROUNDS can ask for more (a long run).
RACE_ROUNDS = int(os.environ.get("PYKBROKER_RACE_ROUNDS", "50"))
TOPIC_CONFIG = 2  # ConfigResource.Type TOPIC


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("repl-cluster"))).start()
    yield c
    c.stop()


def create_topics(client: RawClient, name: str, configs: dict[str, str]):
    body = {
        "topics": [{"name": name, "num_partitions": 1, "replication_factor": 3, "assignments": [],
                    "configs": [{"name": k, "value": v} for k, v in configs.items()]}],
        "timeout_ms": 30000, "validate_only": False,
    }  # fmt: skip
    return client.request(ApiKey.CREATE_TOPICS, 5, body).topics[0]


def metadata_auto_create(client: RawClient, name: str):
    body = {"topics": [{"name": name}], "allow_auto_topic_creation": True,
            "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False}  # fmt: skip
    return client.request(ApiKey.METADATA, 9, body).topics[0]


def min_isr(client: RawClient, name: str) -> str | None:
    """min.insync.replicas of a topic as one broker describes it (None: topic unknown there)."""
    body = {"resources": [{"resource_type": TOPIC_CONFIG, "resource_name": name,
                           "configuration_keys": ["min.insync.replicas"]}],
            "include_synonyms": False}  # fmt: skip
    r = client.request(ApiKey.DESCRIBE_CONFIGS, 1, body).results[0]
    if r.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
        return None
    assert r.error_code == 0, r
    return r.configs[0].value


def test_create_with_config_racing_an_auto_create_agrees_everywhere(cluster):
    """CreateTopics min.insync.replicas=2 via broker 1 while a Metadata request auto-creates the
    same name via broker 2. Whichever wins, every broker describes the same min ISR: 2 if the
    CreateTopics succeeded, the default (1) if it lost (TOPIC_ALREADY_EXISTS)."""
    clients = {i: RawClient(cluster.brokers[i].port) for i in (1, 2, 3)}
    outcomes = {"created": 0, "already_exists": 0}
    try:
        for n in range(RACE_ROUNDS):
            name = f"race-{n}"
            start = threading.Barrier(2)
            answers: dict[str, object] = {}

            def create(name=name, start=start, answers=answers):
                start.wait()
                answers["create"] = create_topics(clients[1], name, {"min.insync.replicas": "2"})

            def auto_create(name=name, start=start, answers=answers, n=n):
                start.wait()
                # Skew the race by 0-40 ms from round to round, so that each side wins some
                # (not a wait for anything: either order must end in agreement).
                time.sleep((n % 9) * 0.005)
                answers["metadata"] = metadata_auto_create(clients[2], name)

            threads = [threading.Thread(target=create), threading.Thread(target=auto_create)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            created = answers["create"].error_code
            assert created in (0, ErrorCode.TOPIC_ALREADY_EXISTS), answers["create"]
            outcomes["created" if created == 0 else "already_exists"] += 1
            expected = "2" if created == 0 else "1"
            # Both answered after ZooKeeper held the topic: brokers 1 and 2 know it now.
            assert min_isr(clients[1], name) == expected, name
            assert min_isr(clients[2], name) == expected, name
            # Broker 3 learns it by a watch; the first thing it says must be right too.
            seen = wait_until(lambda name=name: min_isr(clients[3], name), what=f"{name} on 3")
            assert seen == expected, name
    finally:
        for c in clients.values():
            c.close()
    print(f"\nconfig race, {RACE_ROUNDS} rounds: {outcomes}", file=sys.stderr)


def test_sigterm_stops_a_follower_while_its_leader_epochs_churn(cluster):
    """Broker 3 follows partitions whose leader epoch keeps being bumped (same leader, as an
    A -> B -> A the watches missed would look), so its fetchers restart and meet
    FENCED_LEADER_EPOCH; on SIGTERM it still stops every fetcher and exits within seconds."""
    name = "sigterm-churn"
    client = RawClient(cluster.brokers[1].port)
    try:
        assert create_topics(client, name, {}).error_code == 0
    finally:
        client.close()
    wait_until(
        lambda: (
            (parts := cluster.agreed_partitions(name))
            and all(p[0] >= 0 and len(p[3]) == 3 for p in parts.values())
        ),
        what="leader and full ISR",
    )
    leader = cluster.partitions(name, 1)[0][0]
    follower = next(i for i in (3, 2) if i != leader)
    b = cluster.brokers[follower]
    wait_until(lambda: b.events("became_follower"), what="a follower")

    zk = KazooClient(hosts=f"{cluster.zk.connect}/pykbroker")
    zk.start(10)
    stop = threading.Event()
    bumps = []

    def churn():
        path = f"/brokers/topics/{name}/partitions/0/state"
        while not stop.is_set():
            data, stat = zk.get(path)
            state = json.loads(data)
            state["leader_epoch"] += 1
            try:
                zk.set(path, json.dumps(state).encode(), stat.version)
                bumps.append(state["leader_epoch"])
            except Exception:
                pass  # the controller wrote meanwhile
            time.sleep(0.02)

    t = threading.Thread(target=churn, daemon=True)
    t.start()
    try:
        wait_until(lambda: len(bumps) >= 10, what="epoch bumps")
        started = time.monotonic()
        rc = _terminate(cluster, follower, 15)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        t.join(5)
        zk.stop()
        zk.close()
    assert rc == 0
    assert b.events("broker_stopped")
    assert not b.events("replica_fetchers_not_stopped")
    print(f"\nSIGTERM of a churning follower: exited in {elapsed:.2f} s", file=sys.stderr)


def _terminate(cluster: Cluster, node_id: int, timeout: float) -> int:
    """SIGTERM, and the exit code, which must come within `timeout` seconds."""
    return cluster.brokers.pop(node_id).terminate(timeout)

"""docker-compose.yml's `cluster` profile (ZooKeeper plus three brokers) and the two listeners it
relies on, exercised without a Docker engine (there is none here).

- Structure: the profile's services, each broker's environment mapped through pykbroker's own
  KAFKA_* mapping (`env_to_config`), its own volume, the published external port.
- Listeners: a broker with two listeners answers Metadata, DescribeCluster and FindCoordinator
  with the addresses of the listener the client connected to (as Kafka does); the start-up
  checks of `listener.security.protocol.map`, `advertised.listeners` and
  `inter.broker.listener.name`.
- The three broker services started locally, each with the environment its service would get,
  through docker/entrypoint.sh as the image runs it, against a local ZooKeeper. Only what can't
  exist outside Docker is changed: the ZooKeeper address, the hostnames brokerN (127.0.0.1), and
  each port (one machine, so every broker needs its own). Clients outside use the EXTERNAL
  listener; replication runs over PLAINTEXT.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import RawClient
from image_helpers import import_test_extra, load_compose
from zookeeper_server import ZooKeeperServer, zookeeper_missing

from protocol.apis import ApiKey
from pykbroker.cli.broker import env_to_config
from pykbroker.config import BrokerConfig, ConfigError

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
CLUSTER = ["broker1", "broker2", "broker3"]


def compose() -> dict:
    """docker-compose.yml as Compose reads it with no variables set (their defaults)."""
    import_test_extra("yaml", "PyYAML")
    return load_compose()


# --- structure --------------------------------------------------------------------------------


def test_cluster_profile_services():
    services = compose()["services"]
    profiled = sorted(n for n, s in services.items() if "cluster" in s.get("profiles", []))
    assert profiled == ["broker1", "broker2", "broker3", "zookeeper"]
    zk = services["zookeeper"]
    assert zk["image"].split(":")[0] == "zookeeper"  # the official image
    assert zk["healthcheck"]["test"][:2] == ["CMD", "zkServer.sh"]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_cluster_broker_service(n):
    doc = compose()
    service = doc["services"][f"broker{n}"]
    for key, value in doc["x-pykbroker"].items():
        assert service[key] == value  # built from the shared block
    assert service["hostname"] == f"broker{n}"
    assert service["depends_on"] == {"zookeeper": {"condition": "service_healthy"}}
    config = BrokerConfig(env_to_config(service["environment"]))
    assert not config.unknown
    assert config.node_id == n and config.is_set("broker.id")
    assert config.get("zookeeper.connect") == "zookeeper:2181"
    assert config.get("default.replication.factor") == 3
    assert config.get("offsets.topic.replication.factor") == 3
    assert config.get("min.insync.replicas") == 2
    assert config.listeners == [("PLAINTEXT", "0.0.0.0", 9092), ("EXTERNAL", "0.0.0.0", 19091 + n)]
    endpoints = config.advertised_endpoints([("0.0.0.0", 9092), ("0.0.0.0", 19091 + n)])
    assert endpoints == {"PLAINTEXT": (f"broker{n}", 9092), "EXTERNAL": ("localhost", 19091 + n)}
    assert config.inter_broker_listener_name() == "PLAINTEXT"
    # The external listener is published on the port it advertises; metrics on their own.
    assert f"0.0.0.0:{19091 + n}:{19091 + n}" in service["ports"]
    assert f"0.0.0.0:{9404 + n}:9404" in service["ports"]
    # Its own data volume, declared, where the image keeps its data.
    (volume,) = service["volumes"]
    name, _, target = volume.partition(":")
    assert target == "/var/lib/pykbroker" and name == f"broker{n}-data" and name in doc["volumes"]


def test_cluster_ports_and_volumes_do_not_collide():
    services = compose()["services"]
    published = [p.split(":")[1] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published))
    # Each volume written by one service (the secure profile's one-shot reads its broker's).
    volumes = [v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
               if not v.endswith(":ro")]  # fmt: skip
    assert len(volumes) == len(set(volumes))


# --- listeners --------------------------------------------------------------------------------

TWO_LISTENERS = {
    "listeners": "PLAINTEXT://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
    "advertised.listeners": "PLAINTEXT://127.0.0.1:0,EXTERNAL://localhost:0",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT",
    "inter.broker.listener.name": "PLAINTEXT",
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "1",
}


def _metadata(port: int) -> list[tuple[int, str, int]]:
    client = RawClient(port)
    try:
        md = client.request(ApiKey.METADATA, 9, {
            "topics": [], "allow_auto_topic_creation": False,
            "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False,
        })  # fmt: skip
        dc = client.request(ApiKey.DESCRIBE_CLUSTER, 0,
                            {"include_cluster_authorized_operations": False})  # fmt: skip
    finally:
        client.close()
    brokers = [(b.node_id, b.host, b.port) for b in md.brokers]
    assert brokers == [(b.broker_id, b.host, b.port) for b in dc.brokers]
    return brokers


def test_each_listener_advertises_its_own_address(make_broker):
    from kafka import KafkaConsumer, KafkaProducer

    b = make_broker(TWO_LISTENERS)
    (_, internal), (_, external) = b.broker.bound
    assert internal != external
    assert _metadata(internal) == [(1, "127.0.0.1", internal)]
    assert _metadata(external) == [(1, "localhost", external)]
    # A group member that came in on EXTERNAL is sent to the coordinator's EXTERNAL address.
    for port, host in ((internal, "127.0.0.1"), (external, "localhost")):
        client = RawClient(port)
        try:
            r = client.request(ApiKey.FIND_COORDINATOR, 3, {"key": "g", "key_type": 0})
        finally:
            client.close()
        assert (r.error_code, r.host, r.port) == (0, host, port)
    # And a client bootstrapped on either listener stays on it.
    producer = KafkaProducer(bootstrap_servers=f"localhost:{external}")
    producer.send("both", b"hello").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer("both", bootstrap_servers=f"127.0.0.1:{internal}", group_id="g",
                             auto_offset_reset="earliest", consumer_timeout_ms=20000)  # fmt: skip
    assert next(consumer).value == b"hello"
    consumer.close()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"listeners": "PLAINTEXT://:9092,INTERNAL://:9093"},
         "No security protocol defined for listener INTERNAL"),
        ({"listeners": "PLAINTEXT://:9092,TLS://:9093", "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,TLS:SSH"},
         "Listener TLS: unknown security protocol SSH"),
        ({"listeners": "PLAINTEXT://:9092,PLAINTEXT://:9093"}, "different name"),
        ({"listeners": "PLAINTEXT://:9092", "advertised.listeners": "EXTERNAL://h:9092"},
         "equal to or a subset of the ones defined in listeners"),
        ({"listeners": "A://:9092,B://:9093", "listener.security.protocol.map": "A:PLAINTEXT,B:PLAINTEXT",
          "advertised.listeners": "A://h:9092", "inter.broker.listener.name": "B"},
         "inter.broker.listener.name must be a listener name defined in advertised.listeners"),
        ({"listeners": "A://:9092", "listener.security.protocol.map": "A"},
         "Invalid listener.security.protocol.map"),
    ],
)  # fmt: skip
def test_listener_config_errors(overrides, error):
    config = BrokerConfig(overrides)
    with pytest.raises(ConfigError, match=error):
        config.advertised_endpoints([("0.0.0.0", 9092 + i) for i in range(len(config.listeners))])


def test_inter_broker_listener_defaults():
    named = BrokerConfig({"listeners": "EXTERNAL://:1,PLAINTEXT://:2",
                          "listener.security.protocol.map": "EXTERNAL:PLAINTEXT,PLAINTEXT:PLAINTEXT"})  # fmt: skip
    assert named.inter_broker_listener_name() == "PLAINTEXT"
    first = BrokerConfig({"listeners": "A://:1,B://:2"})
    assert first.inter_broker_listener_name() == "A"
    # No advertised.listeners: the bound addresses, a wildcard host made this machine's name.
    ends = BrokerConfig({"listeners": "PLAINTEXT://127.0.0.1:0"}).advertised_endpoints(
        [("127.0.0.1", 40001)]
    )
    assert ends == {"PLAINTEXT": ("127.0.0.1", 40001)}
    ends = BrokerConfig({"listeners": "PLAINTEXT://0.0.0.0:9092"}).advertised_endpoints(
        [("0.0.0.0", 9092)]
    )
    assert ends == {"PLAINTEXT": (socket.getfqdn(), 9092)}


# --- the three services, started locally ------------------------------------------------------

zk_missing = zookeeper_missing()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_environment(service_env: dict[str, str], zk: str, ports: dict[int, int]) -> dict:
    """A service's environment made runnable on this machine: ZooKeeper's address, the brokerN
    hostnames (127.0.0.1) and every port (`ports`: container port -> local port) replaced."""
    env = {}
    for key, value in service_env.items():
        value = value.replace("zookeeper:2181", zk)
        for n in (1, 2, 3):
            value = value.replace(f"broker{n}:", "127.0.0.1:")
        if key in ("KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"):
            value = ",".join(
                f"{uri.rsplit(':', 1)[0]}:{ports[int(uri.rsplit(':', 1)[1])]}"
                for uri in value.split(",")
            )
            value = value.replace("0.0.0.0", "127.0.0.1")
        env[key] = value
    env["KAFKA_METRICS_PORT"] = ""  # empty: default (off); three brokers share this machine
    env["KAFKA_CONSOLE_PORT"] = ""
    return env


class ServiceBroker:
    """docker/entrypoint.sh run with a service's environment, as the image would run it."""

    def __init__(self, name: str, env: dict[str, str], config: Path):
        from test_docker import BIN

        self.name = name
        self.proc = subprocess.Popen(
            ["sh", str(ENTRYPOINT)],
            env={"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                 "PYKBROKER_LOG_FORMAT": "json", "PYKBROKER_CONFIG": str(config), **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[dict] = []
        self.started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"event": "raw", "line": line.rstrip()})
            if self.lines[-1].get("event") == "broker_started":
                self.started.set()
        self.started.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.mark.skipif(zk_missing is not None, reason=zk_missing or "")
def test_cluster_services_run_with_their_environment(tmp_path):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from test_docker import _image_like_config

    doc = compose()
    zk = ZooKeeperServer(str(tmp_path)).start()
    brokers: list[ServiceBroker] = []
    try:
        external: dict[int, int] = {}
        internal: dict[int, int] = {}
        for n, name in enumerate(CLUSTER, start=1):
            service_env = doc["services"][name]["environment"]
            ext_port = 19091 + n
            ports = {9092: _free_port(), ext_port: _free_port()}
            internal[n], external[n] = ports[9092], ports[ext_port]
            work = tmp_path / name
            work.mkdir()
            env = local_environment(service_env, zk.connect, ports)
            env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] = "0"  # a test's group forms at once
            brokers.append(ServiceBroker(name, env, _image_like_config(work)))
        for b in brokers:
            assert b.started.wait(60) and b.proc.poll() is None, (b.name, b.lines[-5:])

        # Every broker registered; clients are told each broker's address on their listener.
        def brokers_seen(port: int) -> list:
            return sorted(_metadata(port))

        from cluster_helpers import wait_until

        wait_until(lambda: len(brokers_seen(external[1])) == 3, what="three brokers registered")
        assert brokers_seen(external[2]) == [(n, "localhost", external[n]) for n in (1, 2, 3)]
        assert brokers_seen(internal[3]) == [(n, "127.0.0.1", internal[n]) for n in (1, 2, 3)]

        # From outside: the default replication factor (3) and min.insync.replicas (2) apply,
        # replication runs over PLAINTEXT, and acks=all is answered.
        bootstrap = ",".join(f"localhost:{external[n]}" for n in (1, 2, 3))
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("orders", 3, -1)])
        admin.close()

        def in_sync():
            client = RawClient(external[1])
            try:
                md = client.request(ApiKey.METADATA, 9, {
                    "topics": [{"name": "orders"}], "allow_auto_topic_creation": False,
                    "include_cluster_authorized_operations": False,
                    "include_topic_authorized_operations": False,
                })  # fmt: skip
            finally:
                client.close()
            parts = md.topics[0].partitions
            return len(parts) == 3 and all(len(p.isr_nodes) == 3 for p in parts)

        wait_until(in_sync, what="orders replicated to three brokers")
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        for i in range(30):
            producer.send("orders", f"o{i}".encode(), partition=i % 3)
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=f"localhost:{external[3]}",
                                 auto_offset_reset="earliest", consumer_timeout_ms=20000)  # fmt: skip
        consumer.assign([TopicPartition("orders", p) for p in range(3)])
        got = []
        for m in consumer:
            got.append(m.value)
            if len(got) == 30:
                break
        consumer.close()
        got.sort()
        assert got == sorted(f"o{i}".encode() for i in range(30))
        for b in brokers:
            assert b.proc.poll() is None, (b.name, b.lines[-5:])
        # Registered in Kafka's format: every listener, and host/port of the inter-broker one
        # (PLAINTEXT), which is where the other brokers' replica fetchers connect.
        from kazoo.client import KazooClient

        from pykbroker.cluster import zk as Z

        kz = KazooClient(hosts=zk.connect)
        kz.start(timeout=30)
        try:
            for n in (1, 2, 3):
                data, _ = kz.get(f"/brokers/ids/{n}")
                node = json.loads(data)
                assert node["endpoints"] == [f"PLAINTEXT://127.0.0.1:{internal[n]}",
                                             f"EXTERNAL://localhost:{external[n]}"]  # fmt: skip
                assert node["listener_security_protocol_map"] == {
                    "PLAINTEXT": "PLAINTEXT", "EXTERNAL": "PLAINTEXT"}  # fmt: skip
                assert (node["host"], node["port"]) == ("127.0.0.1", internal[n])
                assert Z.decode_broker(data, "PLAINTEXT")[:2] == ("127.0.0.1", internal[n])
        finally:
            kz.stop()
            kz.close()
    finally:
        for b in brokers:
            b.kill()
        zk.stop()


def test_bad_listener_config_is_one_line_at_start_up(tmp_path):
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "pykbroker", "--override", f"log.dir={tmp_path}",
         "--override", "listeners=PLAINTEXT://127.0.0.1:0,EXTERNAL://127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == "pykbroker: No security protocol defined for listener EXTERNAL"

"""A three-broker cluster for tests: a private ZooKeeper plus brokers in subprocesses."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from helpers import BrokerProcess, RawClient
from ports import restartable_port
from zookeeper_server import ZooKeeperServer

from protocol.apis import ApiKey

# Short ZooKeeper sessions so a killed broker is noticed in ~3 s (Kafka's default is 18 s).
CLUSTER_OVERRIDES = {
    "zookeeper.session.timeout.ms": "3000",
    "replica.lag.time.max.ms": "10000",
    "replica.fetch.backoff.ms": "200",
    "offsets.topic.replication.factor": "3",
    # Kafka's defaults, stated: brokers start from config/server.properties, which keeps one
    # replica of __transaction_state as a single development broker needs.
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "leader.imbalance.check.interval.seconds": "1",
}


def wait_until(cond: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll cond() until it returns something truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as e:  # a broker restarting, a connection refused: try again
            last_error = e
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error!r})")


GROUP, TRANSACTION = 0, 1  # FindCoordinator key types


def find_coordinator(port: int, key: str, key_type: int = GROUP) -> int | None:
    """The coordinator of a group or transactional id as one broker answers FindCoordinator
    (None: not available)."""
    client = RawClient(port)
    try:
        r = client.request(ApiKey.FIND_COORDINATOR, 3, {"key": key, "key_type": key_type})
        return r.node_id if r.error_code == 0 else None
    finally:
        client.close()


class Cluster:
    def __init__(self, work_dir: str, size: int = 3, overrides: dict[str, str] | None = None,
                 properties: str | None = None,
                 broker_overrides: dict[int, dict[str, str]] | None = None,
                 client: Callable[[int], RawClient] = RawClient):  # fmt: skip
        """`client(port)`: how the helpers below talk to a broker (a secured listener needs
        a client that does TLS/SASL first)."""
        self.work_dir = work_dir
        self.client = client
        self.properties = properties  # as BrokerProcess: None for config/server.properties
        self.zk = ZooKeeperServer(work_dir)
        self.size = size
        self.overrides = {**CLUSTER_OVERRIDES, **(overrides or {})}
        self.broker_overrides = broker_overrides or {}  # node id -> its own keys (broker.rack)
        self.brokers: dict[int, BrokerProcess] = {}
        self.ports: dict[int, int] = {}
        self.history: list[BrokerProcess] = []  # every process started, for their logs

    def start(self) -> Cluster:
        self.zk.start()
        for node_id in range(1, self.size + 1):
            self.start_broker(node_id)
        wait_until(lambda: len(self.live_ids()) == self.size, what="all brokers registered")
        return self

    def start_broker(self, node_id: int) -> BrokerProcess:
        overrides = {
            "node.id": str(node_id),
            "zookeeper.connect": f"{self.zk.connect}/pykbroker",
            **self.overrides,
            **self.broker_overrides.get(node_id, {}),
        }
        b = BrokerProcess(
            os.path.join(self.work_dir, f"broker{node_id}"), overrides,
            self.ports.get(node_id) or restartable_port(),  # a restart comes back on it
            self.properties,
        )  # fmt: skip
        self.history.append(b)
        b.start()
        self.ports[node_id] = b.port
        self.brokers[node_id] = b
        return b

    def kill(self, node_id: int) -> None:
        self.brokers.pop(node_id).kill()

    def terminate(self, node_id: int) -> int:
        """SIGTERM: a clean shutdown; returns the exit code."""
        return self.brokers.pop(node_id).terminate()

    def stop(self) -> None:
        for b in self.brokers.values():
            b.kill()
        self.brokers.clear()
        self.zk.stop()
        # Each process's structured log, for a post-mortem of a failed run.
        for n, b in enumerate(self.history):
            name = f"broker{b.overrides['node.id']}-run{n}.jsonl"
            with open(os.path.join(self.work_dir, name), "w") as f:
                f.writelines(json.dumps(e) + "\n" for e in b.lines)

    def bootstrap(self, *exclude: int) -> str:
        return ",".join(b.bootstrap_servers for i, b in self.brokers.items() if i not in exclude)

    def metadata(self, node_id: int, topics: list[str] | None = None):
        """A Metadata v9 response straight from one broker."""
        client = self.client(self.brokers[node_id].port)
        try:
            body = {
                "topics": None if topics is None else [{"name": t} for t in topics],
                "allow_auto_topic_creation": False,
                "include_cluster_authorized_operations": False,
                "include_topic_authorized_operations": False,
            }
            return client.request(ApiKey.METADATA, 9, body)
        finally:
            client.close()

    def live_ids(self, node_id: int | None = None) -> list[int]:
        node_id = node_id if node_id is not None else next(iter(self.brokers))
        return sorted(b.node_id for b in self.metadata(node_id).brokers)

    def partitions(self, topic: str, node_id: int) -> dict[int, tuple[int, int, list, list, list]]:
        """partition -> (leader, leader_epoch, replicas, isr, offline) as one broker sees it."""
        md = self.metadata(node_id, [topic])
        t = md.topics[0]
        if t.error_code != 0:
            return {}
        return {
            p.partition_index: (
                p.leader_id, p.leader_epoch, list(p.replica_nodes), list(p.isr_nodes),
                list(p.offline_replicas),
            )
            for p in t.partitions
        }  # fmt: skip

    def agreed_partitions(self, topic: str) -> dict | None:
        """The partitions of a topic if every live broker reports the same, else None."""
        views = [self.partitions(topic, i) for i in self.brokers]
        if not views[0] or any(v != views[0] for v in views[1:]):
            return None
        return views[0]


class AcksAllProducer:
    """An idempotent acks=all producer sending steadily from its own thread: confluent-kafka,
    or kafka-python (`library="kafka-python"`, values prefixed k instead of v)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, library: str = "confluent"):
        self.topic, self.partitions = topic, partitions
        self.library = library
        if library == "kafka-python":
            from kafka import KafkaProducer

            self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                          enable_idempotence=True, linger_ms=2,
                                          reconnect_backoff_ms=50, retry_backoff_ms=50)  # fmt: skip
        else:
            from confluent_kafka import Producer

            self.producer = Producer({
                "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                "linger.ms": 2, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200,
                "broker.address.family": "v4", "log_level": 2,
            })  # fmt: skip
        self.acked: dict[bytes, tuple[int, int]] = {}  # value -> (partition, offset)
        # value -> time.time() when handed to the client / when its ack was seen: the window
        # in which the leader acknowledged it (wall clock: comparable with ZooKeeper's mtimes)
        self.sent_at: dict[bytes, float] = {}
        self.acked_at: dict[bytes, float] = {}
        self.errors: list = []
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run_kafka_python if library == "kafka-python" else self._run,
            daemon=True,
        )

    def _run_kafka_python(self) -> None:
        while not self.stop.is_set():
            v = b"k%06d" % self.sent
            future = self.producer.send(self.topic, value=v, partition=self.sent % self.partitions)
            future.add_callback(
                lambda md, v=v: self.acked.__setitem__(v, (md.partition, md.offset))
            )
            future.add_errback(self.errors.append)
            self.sent += 1
            time.sleep(0.003)
        try:
            self.producer.flush(timeout=30)
            self.remaining = 0
        except Exception as e:  # noqa: BLE001 - a flush timeout: records left unacknowledged
            self.remaining = self.sent - len(self.acked) - len(self.errors)
            self.errors.append(e)
        self.producer.close(timeout=5)

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            self.acked_at[msg.value()] = time.time()
            self.acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            self.errors.append(err)

    def _run(self) -> None:
        while not self.stop.is_set():
            v = b"v%06d" % self.sent
            self.sent_at[v] = time.time()
            self.producer.produce(self.topic, value=v, partition=self.sent % self.partitions,
                                  on_delivery=self._on_delivery)  # fmt: skip
            self.sent += 1
            self.producer.poll(0.003)  # ~300 records a second
        self.remaining = self.producer.flush(30)

    def __enter__(self) -> AcksAllProducer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(40)


def read_all(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int, bytes]]:
    """Every record of the topic, (partition, offset, value), read up to each end offset."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "rolling-check",
                         "enable.auto.commit": False, "broker.address.family": "v4",
                         "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        # A leader moving back to its preferred replica answers NOT_LEADER once: ask again.
        ends = {
            p: wait_until(
                lambda p=p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10),
                what="end offsets",
            )[1]
            for p in range(partitions)
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: list[tuple[int, int, bytes]] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 30
        while len(done) < partitions:
            assert time.monotonic() < deadline, f"read only {len(out)} records"
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            out.append((msg.partition(), msg.offset(), msg.value()))
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        return out
    finally:
        consumer.close()


def assert_acked_once(producer: AcksAllProducer, records: list[tuple[int, int, bytes]]) -> None:
    """Every acknowledged record is in the log once, at its acknowledged offset."""
    by_value: dict[bytes, list[tuple[int, int]]] = {}
    for p, offset, v in records:
        by_value.setdefault(v, []).append((p, offset))
    for v, where in producer.acked.items():
        assert by_value.get(v) == [where], v

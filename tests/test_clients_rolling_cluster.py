"""Every client library through a reassignment and a rolling restart (issue 12): on a private
ZooKeeper and three brokers, kafka-python, aiokafka, confluent-kafka, kcat and kafkajs each
produce (idempotent, acks=all) to a topic of their own and consume it at the same time, while
kafka-reassign-partitions moves every partition to another pair of brokers and then each broker
in turn is SIGTERMed (controlled shutdown) and restarted. Each producer and consumer must make
progress after each step, and at the end every acknowledged record is read back: by the
client's own consumer, and once, at its acknowledged offset, by a check reader (kcat reports
no offsets: each line it acknowledged is found exactly once)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from cluster_helpers import AcksAllProducer, Cluster, read_all, wait_until
from helpers import RawClient
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey

missing = zookeeper_missing()
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

PARTITIONS = 2
START = {0: [1, 2], 1: [2, 3]}
TARGET = {0: [3, 1], 1: [1, 2]}  # each partition gains a broker and loses one
KAFKAJS_DIR = Path(__file__).resolve().parent.parent / "compat-tests" / "kafkajs"
BIN = os.path.dirname(sys.executable)


class Consumer:
    """A consumer of one library reading both partitions from the start, in its own thread."""

    def __init__(self, library: str, bootstrap: str, topic: str):
        self.library, self.bootstrap, self.topic = library, bootstrap, topic
        self.got: list[tuple[int, int, bytes]] = []
        self.errors: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def values(self) -> set[bytes]:
        return {v for _, _, v in list(self.got)}

    def _run(self) -> None:
        try:
            if self.library == "kafka-python":
                from kafka import KafkaConsumer, TopicPartition

                c = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                  auto_offset_reset="earliest", group_id=None)  # fmt: skip
                c.assign([TopicPartition(self.topic, p) for p in range(PARTITIONS)])
                while not self.stop.is_set():
                    # >= 1 s polls (kafka-python 3.0.12's rejoin bug needs no group here, but
                    # short polls gain nothing)
                    for tp, msgs in c.poll(timeout_ms=1000).items():
                        self.got.extend((tp.partition, m.offset, m.value) for m in msgs)
                c.close()
            elif self.library == "confluent-kafka":
                from confluent_kafka import Consumer as CConsumer
                from confluent_kafka import TopicPartition

                c = CConsumer({"bootstrap.servers": self.bootstrap, "group.id": "rolling-cc",
                               "enable.auto.commit": False, "broker.address.family": "v4"})  # fmt: skip
                c.assign([TopicPartition(self.topic, p, 0) for p in range(PARTITIONS)])
                while not self.stop.is_set():
                    for m in c.consume(500, 0.5):
                        if not m.error():
                            self.got.append((m.partition(), m.offset(), m.value()))
                c.close()
            else:  # aiokafka
                asyncio.run(self._aiokafka())
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)

    async def _aiokafka(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest")  # fmt: skip
        await c.start()
        try:
            c.assign([TopicPartition(self.topic, p) for p in range(PARTITIONS)])
            await c.seek_to_beginning()
            while not self.stop.is_set():
                for tp, msgs in (await c.getmany(timeout_ms=500)).items():
                    self.got.extend((tp.partition, m.offset, m.value) for m in msgs)
        finally:
            await c.stop()


class AioProducer:
    """aiokafka: an idempotent acks=all producer in its own thread and loop."""

    def __init__(self, bootstrap: str, topic: str):
        self.bootstrap, self.topic = bootstrap, topic
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.errors: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                             request_timeout_ms=30000, retry_backoff_ms=100)  # fmt: skip
        await p.start()
        try:
            n = 0
            while not self.stop.is_set():
                v = b"a%06d" % n
                try:
                    md = await p.send_and_wait(self.topic, v, partition=n % PARTITIONS)
                    self.acked[v] = (md.partition, md.offset)
                except Exception as e:  # noqa: BLE001 - reported by the test
                    self.errors.append(e)
                n += 1
                await asyncio.sleep(0.005)  # a steady rate, not a sync
        finally:
            await p.stop()


class KcatClient:
    """kcat: `kcat -P` (idempotent, acks=all) fed a line at a time, `kcat -C -J` reading.
    kcat reports no offsets; exit 0 with no "Delivery failed" means every line was acked."""

    def __init__(self, bootstrap: str, topic: str):
        self.errfile = tempfile.TemporaryFile()  # noqa: SIM115 - a pipe nobody reads could fill
        rdkafka = ["-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=5",
                   "-X", "message.timeout.ms=60000", "-X", "broker.address.family=v4"]  # fmt: skip
        self.producer = subprocess.Popen(
            ["kcat", "-b", bootstrap, "-P", "-t", topic, *rdkafka],
            stdin=subprocess.PIPE, stderr=self.errfile,
        )  # fmt: skip
        self.reader = subprocess.Popen(
            ["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-J", "-u",
             "-X", "broker.address.family=v4"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.got: list[tuple[int, int, bytes]] = []
        self.sent = 0
        self.stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.reader.stdout:
            rec = json.loads(line)
            self.got.append((rec["partition"], rec["offset"], rec["payload"].encode()))

    def _write(self) -> None:
        while not self.stop.is_set():
            self.producer.stdin.write(b"c%06d\n" % self.sent)
            self.producer.stdin.flush()
            self.sent += 1
            time.sleep(0.005)  # a steady rate, not a sync

    def finish(self) -> tuple[int, str]:
        self.stop.set()
        self.thread.join(10)
        self.producer.stdin.close()
        code = self.producer.wait(90)
        self.errfile.seek(0)
        return code, self.errfile.read().decode(errors="replace")

    def close(self) -> None:
        for proc in (self.producer, self.reader):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class KafkajsClient:
    """kafkajs (tests/clients_rolling.js): producer and group consumer in one node process."""

    def __init__(self, bootstrap: str, topic: str):
        env = {**os.environ, "NODE_PATH": str(KAFKAJS_DIR / "node_modules")}
        script = Path(__file__).with_name("clients_rolling.js")
        self.proc = subprocess.Popen(["node", str(script), bootstrap, topic], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.got: list[tuple[int, int, bytes]] = []
        self.errors: list[str] = []
        self.sent: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "ACK":
                v, p, o = rest.split(" ")
                self.acked[v.encode()] = (int(p), int(o))
            elif kind == "GOT":
                v, p, o = rest.split(" ")
                self.got.append((int(p), int(o), v.encode()))
            elif kind == "SENT":
                self.sent = int(rest)
            else:  # ERR, FATAL
                self.errors.append(line.strip())

    def finish(self) -> None:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        wait_until(lambda: self.sent is not None, what="kafkajs producer stopped")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def create(cluster: Cluster, topic: str) -> None:
    client = RawClient(cluster.brokers[1].port)
    try:
        body = {"topics": [{"name": topic, "num_partitions": -1, "replication_factor": -1,
                            "assignments": [{"partition_index": p, "broker_ids": r}
                                            for p, r in START.items()],
                            "configs": []}], "timeout_ms": 10000, "validate_only": False}  # fmt: skip
        assert client.request(ApiKey.CREATE_TOPICS, 5, body).topics[0].error_code == 0
    finally:
        client.close()


def all_in_sync(cluster: Cluster, topics: list[str], assignment: dict[int, list[int]]) -> None:
    def ok():
        for t in topics:
            parts = cluster.agreed_partitions(t)
            if not parts or any(parts[p][2] != r or sorted(parts[p][3]) != sorted(r)
                                or parts[p][0] < 0 for p, r in assignment.items()):  # fmt: skip
                return False
        return True

    wait_until(ok, timeout=40, what=f"{topics} led and in sync on {assignment}")


def test_every_client_through_a_reassignment_and_a_rolling_restart(tmp_path):
    if shutil.which("kcat") is None:
        pytest.fail("kcat is not installed (Debian package kcat; compat-tests/bootstrap.sh)")
    if not (KAFKAJS_DIR / "node_modules" / "kafkajs").exists() or shutil.which("node") is None:
        pytest.fail("kafkajs is not installed (npm ci in compat-tests/kafkajs)")
    began = time.monotonic()
    cluster = Cluster(str(tmp_path / "cluster")).start()
    clients: dict[str, object] = {}
    consumers: dict[str, Consumer] = {}
    try:
        names = ["kafka-python", "aiokafka", "confluent-kafka", "kcat", "kafkajs"]
        topics = {n: f"rolling-{n}" for n in names}
        for t in topics.values():
            create(cluster, t)
        all_in_sync(cluster, list(topics.values()), START)
        bootstrap = cluster.bootstrap()
        clients["kafka-python"] = AcksAllProducer(bootstrap, topics["kafka-python"], PARTITIONS,
                                                  "kafka-python").__enter__()  # fmt: skip
        clients["confluent-kafka"] = AcksAllProducer(bootstrap, topics["confluent-kafka"],
                                                     PARTITIONS).__enter__()  # fmt: skip
        clients["aiokafka"] = AioProducer(bootstrap, topics["aiokafka"])
        clients["kcat"] = KcatClient(bootstrap, topics["kcat"])
        clients["kafkajs"] = KafkajsClient(bootstrap, topics["kafkajs"])
        for n in ("kafka-python", "aiokafka", "confluent-kafka"):
            consumers[n] = Consumer(n, bootstrap, topics[n])

        def read(n: str) -> list:
            return consumers[n].got if n in consumers else clients[n].got

        def progress(step: str) -> None:
            """Every producer acked more and every consumer read more than before `step`."""
            acked = {n: len(c.acked) for n, c in clients.items() if hasattr(c, "acked")}
            got = {n: len(read(n)) for n in names}
            wait_until(lambda: all(len(clients[n].acked) > acked[n] + 20 for n in acked)
                       and all(len(read(n)) > got[n] + 20 for n in names),
                       timeout=40, what=f"every client producing and consuming after {step}")  # fmt: skip
            print(f"{time.monotonic() - began:.1f} s {step}: acked {[len(c.acked) for c in clients.values() if hasattr(c, 'acked')]}"
                  f", read {[len(read(n)) for n in names]}", file=sys.stderr)  # fmt: skip

        progress("start")
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": t, "partition": p, "replicas": r}
            for t in topics.values() for p, r in TARGET.items()]}))  # fmt: skip
        r = subprocess.run([os.path.join(BIN, "kafka-reassign-partitions"), "--bootstrap-server",
                            bootstrap, "--execute", "--reassignment-json-file", str(plan)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        all_in_sync(cluster, list(topics.values()), TARGET)
        progress("reassignment")
        for b in (1, 2, 3):
            assert cluster.terminate(b) == 0  # controlled shutdown
            cluster.start_broker(b)
            wait_until(lambda: len(cluster.live_ids()) == 3, what=f"broker {b} back")
            all_in_sync(cluster, list(topics.values()), TARGET)
            progress(f"restart of broker {b}")

        # Stop producing; every producer's acknowledged records, read back.
        for n in ("kafka-python", "confluent-kafka"):
            clients[n].__exit__(None, None, None)
            assert clients[n].errors == [] and clients[n].remaining == 0, (n, clients[n].errors)
        clients["aiokafka"].stop.set()
        clients["aiokafka"].thread.join(40)
        assert clients["aiokafka"].errors == []
        code, err = clients["kcat"].finish()
        assert code == 0 and "Delivery failed" not in err, err[-500:]
        clients["kafkajs"].finish()
        assert clients["kafkajs"].errors == []
        acked = {n: set(clients[n].acked) for n in names if n != "kcat"}
        acked["kcat"] = {b"c%06d" % i for i in range(clients["kcat"].sent)}
        for n in names:  # by the client's own consumer
            wait_until(lambda n=n: acked[n] <= {v for _, _, v in list(read(n))}, timeout=40,
                       what=f"{n}'s consumer read every acknowledged record")  # fmt: skip
        for n in names:  # once each, at its acknowledged offset
            records = read_all(cluster.bootstrap(), topics[n], PARTITIONS)
            where: dict[bytes, list[tuple[int, int]]] = {}
            for p, offset, v in records:
                where.setdefault(v, []).append((p, offset))
            if n == "kcat":
                assert all(len(where.get(v, [])) == 1 for v in acked[n]), n
                assert set(where) == acked[n]
            else:
                for v, at in clients[n].acked.items():
                    assert where.get(v) == [at], (n, v, where.get(v), at)
        print(
            f"{time.monotonic() - began:.1f} s rolling: acked {[(n, len(acked[n])) for n in names]}",
            file=sys.stderr,
        )
    finally:
        for c in consumers.values():
            c.stop.set()
        for c in consumers.values():
            c.thread.join(10)
        for n, c in clients.items():
            if n in ("kafka-python", "confluent-kafka", "aiokafka"):
                c.stop.set()
            else:
                c.close()
        cluster.stop()

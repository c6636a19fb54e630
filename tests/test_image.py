"""The Dockerfile and docker-compose.yml, built and run for real with podman and runc.

How the images are made where no registry is reachable (a debootstrap'ed stand-in for the base,
podman's settings here) is in tests/image_helpers.py. Containers publish their ports on
127.0.0.1 only, on ports picked free here; clients reach them there.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from pathlib import Path

import pytest
from image_helpers import (
    ROOT,
    Podman,
    free_port,
    image_builds,
    load_compose,
    podman_compose,
    podman_missing,
    wait_until,
)

# Cold, the first test waits for the images (debootstrap, two builds): minutes, not seconds.
pytestmark = pytest.mark.timeout(900)

CLEAN_SHUTDOWN = ".kafka_cleanshutdown"  # the marker Kafka's LogManager leaves on a clean stop
STATIC_BROKER_CONFIG = 4  # DescribeConfigs' source for a broker's own configuration
BROKER_UID = 1000  # the Dockerfile's USER


@pytest.fixture(scope="module")
def images():
    reason = podman_missing()
    if reason:
        pytest.skip(reason)
    images = image_builds()
    yield images
    images.podman.close()
    if images.podman.timings:  # what was built rather than reused, and how long it took
        print(f"\nimage builds (s): {images.podman.timings}")


@pytest.fixture(scope="module")
def podman(images):
    return images.podman


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_healthy(podman: Podman, container: str, timeout: float = 90) -> None:
    """The image's HEALTHCHECK, run by podman (no systemd here to schedule it)."""

    def healthy() -> bool:
        state = podman.run("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
        assert state == "running", f"{container} is {state}: {logs(podman, container)[-2000:]}"
        return podman.run("healthcheck", "run", container, check=False).returncode == 0

    wait_until(healthy, timeout=timeout, what=f"{container} healthy", interval=0.5)


def logs(podman: Podman, container: str) -> str:
    out = podman.run("logs", container, check=False)
    return out.stdout + out.stderr


def events(podman: Podman, container: str, name: str) -> list[dict]:
    found = []
    for line in logs(podman, container).splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def run_broker(podman: Podman, image: str, name: str, port: int, *options: str) -> None:
    podman.run(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:9092",
        "-e", f"KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://localhost:{port}", *options, image,
    )  # fmt: skip


def remove(podman: Podman, *containers: str, grace: int = 10) -> None:
    for c in containers:
        # -v: the anonymous volume the image's VOLUME gave a container run without -v goes too.
        podman.run("rm", "-f", "-v", "-t", str(grace), c, check=False)


def produce(bootstrap: str, topic: str, values: list[bytes], **config) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **config)
    for value in values:
        producer.send(topic, value)
    producer.flush(30)
    producer.close()


def consume(bootstrap: str, topic: str, partitions: int, expected: int) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    got: list[bytes] = []

    def all_read() -> bool:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(r.value for r in records)
        return len(got) >= expected

    try:
        wait_until(all_read, timeout=60, what=f"{expected} records from {topic}")
    finally:
        consumer.close()
    return got


# --- the image, with podman run ---------------------------------------------------------------


def test_image_serves_clients_as_non_root_with_env_config_and_healthcheck(podman, images):
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    name, port, metrics = unique("pykbroker-test"), free_port(), free_port()
    run_broker(
        podman, images.app, name, port, "-p", f"127.0.0.1:{metrics}:9404",
        "-e", "KAFKA_NUM_PARTITIONS=3", "-e", "KAFKA_LOG_RETENTION_MS=3600000",
        "-e", "KAFKA_CFG_LOG_SEGMENT_BYTES=1048576",
    )  # fmt: skip
    try:
        wait_healthy(podman, name)
        health = podman.run("inspect", "--format", "{{.State.Health.Status}}", name)
        assert health.stdout.strip() == "healthy"

        # The broker is the container's PID 1 (exec all the way down), running as user 1000.
        pid = podman.run("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
        status = Path(f"/proc/{pid}/status").read_text()
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert uids == [str(BROKER_UID)] * 4
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert any(part.endswith(b"pykbroker") for part in cmdline), cmdline
        assert podman.run("exec", name, "id", "-u").stdout.strip() == str(BROKER_UID)
        # The wheel installed in the image carries the shipped config/server.properties (what a
        # bare `pykbroker` starts from), byte for byte.
        shipped = podman.run("exec", name, "python", "-c",
                             "from pykbroker.config import SHIPPED_PROPERTIES as p; "
                             "print(open(p).read(), end='')").stdout  # fmt: skip
        assert shipped == (Path(__file__).parent.parent / "config/server.properties").read_text()

        # KAFKA_* variables are the broker's static configuration, as in Kafka's images.
        bootstrap = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        resource = ConfigResource(ResourceType.BROKER, "1")
        configs = admin.describe_configs([resource])[resource].result(timeout=30)
        for key, value in [("num.partitions", "3"), ("log.retention.ms", "3600000"),
                           ("log.segment.bytes", "1048576"),
                           ("advertised.listeners", f"PLAINTEXT://localhost:{port}")]:  # fmt: skip
            assert (configs[key].value, configs[key].source) == (value, STATIC_BROKER_CONFIG), key
        produce(bootstrap, "from-image", [b"v%d" % i for i in range(30)])
        topic = admin.list_topics("from-image", timeout=30).topics["from-image"]
        assert len(topic.partitions) == 3  # auto-created with KAFKA_NUM_PARTITIONS
        assert sorted(consume(bootstrap, "from-image", 3, 30)) == sorted(
            b"v%d" % i for i in range(30)
        )

        # Prometheus metrics on the image's metrics.port.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert 'kafka_server_broker_topic_messages_in_total{topic="from-image"} 30.0' in text
        del admin  # closed before its broker goes
    finally:
        remove(podman, name)


def test_image_healthcheck_fails_without_a_broker(podman, images):
    """The HEALTHCHECK is a real round trip: a container of the image running something else
    (the entrypoint runs any command it is given) is unhealthy."""
    name = unique("pykbroker-test")
    podman.run("run", "-d", "--name", name, images.app, "sleep", "60")
    try:
        out = podman.run("healthcheck", "run", name, check=False)
        assert out.returncode == 1 and "unhealthy" in out.stdout, out
    finally:
        remove(podman, name, grace=0)


def test_image_keeps_data_in_its_volume_and_stops_cleanly_on_sigterm(podman, images):
    volume, port = unique("pykbroker-test-data"), free_port()
    first, second = unique("pykbroker-test"), unique("pykbroker-test")
    podman.run("volume", "create", volume)
    try:
        run_broker(podman, images.app, first, port, "-v", f"{volume}:/var/lib/pykbroker")
        wait_healthy(podman, first)
        bootstrap = f"127.0.0.1:{port}"
        values = [b"kept-%d" % i for i in range(50)]
        produce(bootstrap, "kept", values)

        # podman stop sends the image's STOPSIGNAL (SIGTERM) to PID 1, the broker itself.
        podman.run("stop", "-t", "30", first)
        state = podman.run("inspect", "--format", "{{.State.ExitCode}}", first).stdout.strip()
        assert state == "0", logs(podman, first)[-2000:]
        assert events(podman, first, "shutdown_requested") and events(
            podman, first, "broker_stopped"
        )
        mountpoint = podman.run("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
        data = Path(mountpoint.stdout.strip()) / "data"
        assert (data / CLEAN_SHUTDOWN).exists()
        assert data.stat().st_uid == BROKER_UID  # written by the non-root user
        remove(podman, first)

        # A new container on the same volume has every record, and knows the stop was clean.
        run_broker(podman, images.app, second, port, "-v", f"{volume}:/var/lib/pykbroker")
        wait_healthy(podman, second)
        (loaded,) = events(podman, second, "logs_loaded")
        assert loaded["clean_shutdown"] is True and loaded["partitions"] == 1
        assert consume(bootstrap, "kept", 1, 50) == values
    finally:
        remove(podman, first, second)
        podman.run("volume", "rm", "-f", volume, check=False)


# --- docker-compose.yml, with podman-compose --------------------------------------------------


class Compose:
    """podman-compose on the repository's docker-compose.yml, as its own project, with ports
    published on 127.0.0.1 at free ports and images the tests built."""

    def __init__(self, podman: Podman, environ: dict[str, str]):
        self.podman = podman
        self.project = unique("pykbroker-test").replace("-", "")
        self.env = {**podman.env, "PYKBROKER_BIND": "127.0.0.1", **environ}
        # Every published port the file lets us choose: a free one, never the defaults.
        text = (ROOT / "docker-compose.yml").read_text()
        for name in set(re.findall(r"\$\{(\w+_PORT)\b", text)):
            self.env.setdefault(name, str(free_port()))
        self.doc = load_compose(self.env)
        published = [p for s in self.doc["services"].values() for p in s.get("ports", [])]
        assert all(p.startswith("127.0.0.1:") for p in published), published

    def port(self, name: str) -> int:
        return int(self.env[name])

    def __call__(self, *args: str, timeout: float = 300) -> str:
        import subprocess

        out = subprocess.run(
            [podman_compose(), "-f", str(ROOT / "docker-compose.yml"), "-p", self.project, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert out.returncode == 0, f"podman-compose {' '.join(args)}:\n{out.stderr[-3000:]}"
        return out.stdout

    def container(self, service: str) -> str:
        out = self.podman.run(
            "ps", "-a", "--format", "{{.Names}}",
            "--filter", f"label=io.podman.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        )  # fmt: skip
        (name,) = out.stdout.split()
        return name

    def down(self) -> None:
        try:
            self("--profile", "cluster", "--profile", "secure", "down", "-v", "-t", "30")
        except AssertionError:
            pass  # what's left is removed by name below
        out = self.podman.run(
            "ps", "-a", "-q", "--filter", f"label=io.podman.compose.project={self.project}",
            check=False,
        )  # fmt: skip
        for container in out.stdout.split():
            self.podman.run("rm", "-f", container, check=False)


def test_compose_single_broker(podman, images):
    compose = Compose(podman, {"PYKBROKER_IMAGE": images.app})
    port, console = compose.port("PYKBROKER_PORT"), compose.port("PYKBROKER_CONSOLE_PORT")
    try:
        compose("up", "-d")
        started = podman.run(
            "ps", "-q", "--filter", f"label=io.podman.compose.project={compose.project}"
        ).stdout.split()
        assert len(started) == 1  # `broker` only: the others are in the `cluster` profile
        broker = compose.container("broker")
        wait_healthy(podman, broker)
        bootstrap = f"127.0.0.1:{port}"
        values = [b"compose-%d" % i for i in range(20)]
        produce(bootstrap, "compose", values)  # auto-created (KAFKA_AUTO_CREATE_TOPICS_ENABLE)
        assert consume(bootstrap, "compose", 1, 20) == values  # 1 partition: KAFKA_NUM_PARTITIONS
        # The web console, on in the compose file, sees the topic.
        with urllib.request.urlopen(f"http://127.0.0.1:{console}/", timeout=10) as r:
            assert "<title>pykbroker console</title>" in r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{console}/api/topics", timeout=10) as r:
            assert '"compose"' in r.read().decode()

        # down keeps the named volume; up again finds the data, stopped cleanly.
        compose("down", "-t", "30")
        compose("up", "-d")
        broker = compose.container("broker")
        wait_healthy(podman, broker)
        assert events(podman, broker, "logs_loaded")[0]["clean_shutdown"] is True
        assert consume(bootstrap, "compose", 1, 20) == values
    finally:
        compose.down()


def test_compose_cluster_profile_survives_a_broker_stop(podman, images):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    environ = {"PYKBROKER_IMAGE": images.app, "ZOOKEEPER_IMAGE": images.zookeeper()}
    compose = Compose(podman, environ)
    ports = {n: compose.port(f"PYKBROKER_BROKER{n}_PORT") for n in (1, 2, 3)}
    try:
        compose("--profile", "cluster", "up", "-d", "zookeeper", "broker1", "broker2", "broker3")
        for service in ("zookeeper", "broker1", "broker2", "broker3"):
            wait_healthy(podman, compose.container(service), timeout=120)
        bootstrap = ",".join(f"127.0.0.1:{ports[n]}" for n in (1, 2, 3))
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)

        def partition() -> dict:
            (topic,) = admin.describe_topics(["orders"])
            return topic["partitions"][0]

        def registered() -> bool:
            return len(admin.describe_cluster()["brokers"]) == 3

        wait_until(registered, what="three brokers registered")
        # The cluster's defaults: replication factor 3, min.insync.replicas 2.
        admin.create_topics([NewTopic("orders", 1, -1)])
        wait_until(lambda: len(partition()["isr_nodes"]) == 3, what="ISR of three")
        assert sorted(partition()["replica_nodes"]) == [1, 2, 3]

        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=20)
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        consumer.assign([TopicPartition("orders", 0)])
        got: list[bytes] = []

        def read(count: int) -> bool:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
            return len(got) >= count

        before = [b"before-%d" % i for i in range(20)]
        for v in before:
            producer.send("orders", v).get(30)
        wait_until(lambda: read(20), what="records before the stop")

        # Stop the leader (SIGTERM, as `docker compose stop` sends): another broker of the ISR
        # takes over, and acks=all still succeeds with two in sync (min.insync.replicas=2).
        leader = partition()["leader_id"]
        compose("--profile", "cluster", "stop", f"broker{leader}")
        wait_until(lambda: partition()["leader_id"] not in (leader, -1), what="a new leader")
        assert len(partition()["isr_nodes"]) == 2
        after = [b"after-%d" % i for i in range(20)]
        for v in after:
            producer.send("orders", v).get(30)
        wait_until(lambda: read(40), what="records after the stop")
        assert got == before + after

        # The stopped broker comes back and catches up into the ISR.
        compose("--profile", "cluster", "start", f"broker{leader}")
        wait_until(
            lambda: len(partition()["isr_nodes"]) == 3, timeout=90, what="ISR of three again"
        )
        producer.close()
        consumer.close()
        admin.close()
    finally:
        compose.down()


def test_compose_secure_profile(podman, images, tmp_path):
    """The `secure` profile: a SASL_SSL-only broker with ACLs on, certificates made at its first
    start (no key in the repository, the CA's key gone), and the one-shot secure-init giving
    alice a SCRAM-SHA-512 credential and produce/consume ACLs on app-* (README's settings)."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    compose = Compose(podman, {"PYKBROKER_IMAGE": images.app})
    port = compose.port("PYKBROKER_SECURE_PORT")
    try:
        compose("--profile", "secure", "up", "-d", "broker-secure", "secure-init")
        broker = compose.container("broker-secure")
        wait_healthy(podman, broker)  # the image's health check, over TLS on this listener
        init = compose.container("secure-init")
        code = podman.run("wait", init, timeout=150).stdout.strip()
        assert code == "0", logs(podman, init)[-3000:]
        ca = tmp_path / "ca.crt"
        ca.write_text(podman.run("exec", broker, "cat", "certs/ca.crt").stdout)
        listing = podman.run("exec", broker, "ls", "-l", "certs").stdout
        assert sorted(line.split()[-1] for line in listing.splitlines()[1:]) == [
            "broker.pem", "ca.crt"]  # fmt: skip
        assert "-rw-------" in next(ln for ln in listing.splitlines() if ln.endswith("broker.pem"))

        alice = {"bootstrap.servers": f"localhost:{port}", "security.protocol": "SASL_SSL",
                 "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice",
                 "sasl.password": "alice-secret", "ssl.ca.location": str(ca)}  # fmt: skip
        admin = AdminClient(alice)
        admin.create_topics([NewTopic("app-orders", 1, 1)])["app-orders"].result(30)
        with pytest.raises(KafkaException) as denied:  # CREATE only on the app- prefix
            admin.create_topics([NewTopic("payroll", 1, 1)])["payroll"].result(30)
        assert denied.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        producer = Producer(alice)
        for i in range(10):
            producer.produce("app-orders", b"order-%d" % i)
        assert producer.flush(30) == 0
        consumer = Consumer({**alice, "group.id": "app-readers", "auto.offset.reset": "earliest"})
        consumer.subscribe(["app-orders"])
        got: list[bytes] = []

        def read() -> bool:
            for m in consumer.consume(10, timeout=1.0):
                assert m.error() is None, m.error()
                got.append(m.value())
            return len(got) >= 10

        wait_until(read, timeout=60, what="alice's records")
        assert got == [b"order-%d" % i for i in range(10)]
        consumer.close()
        # A group outside app-*: GROUP_AUTHORIZATION_FAILED.
        other = Consumer({**alice, "group.id": "others", "auto.offset.reset": "earliest"})
        other.subscribe(["app-orders"])
        errors: list = []
        wait_until(lambda: errors.extend(m.error() for m in other.consume(1, timeout=1.0)
                                         if m.error()) or errors, timeout=30, what="denied group")  # fmt: skip
        assert errors[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
        other.close()
        # A wrong password is refused: librdkafka reports the broker's SASL_AUTHENTICATION_FAILED
        # as an authentication error.
        errors = []
        wrong = AdminClient({**alice, "sasl.password": "nope", "error_cb": errors.append})

        def refused() -> bool:
            wrong.poll(0.5)  # serves error_cb
            return KafkaError._AUTHENTICATION in [e.code() for e in errors]

        wait_until(refused, timeout=30, what="the wrong password refused")
    finally:
        compose.down()


def test_compose_environment_defaults_are_the_documented_ones():
    """Without variables the compose file is what its comments and the README say: the single
    broker on 9092 (metrics 9404, console 9021), the cluster on 19092-19094 (metrics 9405-9407,
    consoles 9022-9024), the images pykbroker:latest and zookeeper:3.9."""
    doc = load_compose({})
    services = doc["services"]
    assert services["broker"]["image"] == "pykbroker:latest"
    assert services["zookeeper"]["image"] == "zookeeper:3.9"
    assert services["broker"]["ports"] == [
        "0.0.0.0:9092:9092", "0.0.0.0:9404:9404", "0.0.0.0:9021:9021"
    ]  # fmt: skip
    assert services["broker-secure"]["ports"] == ["0.0.0.0:9093:9093"]
    for n in (1, 2, 3):
        assert services[f"broker{n}"]["ports"] == [
            f"0.0.0.0:{19091 + n}:{19091 + n}", f"0.0.0.0:{9404 + n}:9404",
            f"0.0.0.0:{9021 + n}:9021",
        ]  # fmt: skip

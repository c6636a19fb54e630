"""The shipped config/server.properties and `pykbroker --print-config`.

Every way of starting a broker starts from config/server.properties unless given another file:
`pykbroker` itself, EmbeddedBroker and the pytest fixtures (the Docker image's assembly is
checked in tests/test_docker.py). Its values are the development ones of Apache Kafka's own
config/server.properties. `--print-config` is driven as a user runs it, and must agree line for
line with `kafka-configs --describe --all` against a broker started the same way.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cli_helpers import tool
from cluster_helpers import wait_until
from helpers import BrokerProcess

from pykbroker.config import load_properties

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "server.properties"
PYKBROKER = os.path.join(os.path.dirname(sys.executable), "pykbroker")

# What Kafka's config/server.properties sets for a development broker (values from Kafka's file),
# plus the minimum session timeout, which Kafka's file leaves at 6000 (see the file's comment).
KAFKA_DEV_VALUES = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "num.partitions": "1",
    "log.retention.hours": "168",
    "log.segment.bytes": "1073741824",
    "log.retention.check.interval.ms": "300000",
    "socket.request.max.bytes": "104857600",
    "group.min.session.timeout.ms": "1000",
}
LINE = re.compile(r"  (?P<name>[a-z0-9._]+)=(?P<value>.*?) sensitive=(?:true|false) "
                  r"source=(?P<source>\S+) synonyms=\{(?P<synonyms>.*)\}")  # fmt: skip


def print_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYKBROKER, "--print-config", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def entries(stdout: str) -> dict[str, dict[str, str]]:
    out = {}
    for line in stdout.splitlines()[1:]:
        m = LINE.fullmatch(line)
        assert m, line
        assert m["name"] not in out, f"{m['name']} twice"
        out[m["name"]] = m.groupdict()
    return out


def test_shipped_file_has_kafkas_development_values_and_no_unknown_keys():
    props = load_properties(str(SHIPPED))
    assert {k: props.get(k) for k in KAFKA_DEV_VALUES} == KAFKA_DEV_VALUES
    assert "log.dirs" not in props  # our persistent default, ~/.local/share/pykbroker/data
    # Commented the way Kafka's is: section banners and a comment above each setting.
    text = SHIPPED.read_text()
    assert "############################# Group Coordinator Settings" in text
    for block in text.split("\n\n"):  # a setting, or a few together, below their comment
        lines = block.strip().splitlines()
        if any(not line.startswith("#") for line in lines):
            assert lines[0].startswith("#"), f"no comment above {lines[0]!r}"


def test_print_config_defaults_and_file(tmp_path):
    result = print_config(env={"XDG_DATA_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "All configs for broker 1 are:"
    assert f"# file: {SHIPPED}" in result.stderr.splitlines()
    assert f"# dynamic: none ({tmp_path}/pykbroker/data holds no" in result.stderr
    assert "ignored" not in result.stderr  # no unknown or deprecated key in the shipped file
    got = entries(result.stdout)
    delay = got["group.initial.rebalance.delay.ms"]
    assert (delay["value"], delay["source"]) == ("0", "file")
    assert delay["synonyms"] == (
        "STATIC_BROKER_CONFIG:group.initial.rebalance.delay.ms=0, "
        "DEFAULT_CONFIG:group.initial.rebalance.delay.ms=3000"
    )
    session = got["group.min.session.timeout.ms"]
    assert (session["value"], session["source"]) == ("1000", "file")
    assert "DEFAULT_CONFIG:group.min.session.timeout.ms=6000" in session["synonyms"]
    # Kafka's defaults for what the file leaves alone, the data dir among them.
    for name, value in (("auto.create.topics.enable", "true"), ("message.max.bytes", "1048588"),
                        ("log.dir", f"{tmp_path}/pykbroker/data"), ("log.dirs", "null")):  # fmt: skip
        assert (got[name]["value"], got[name]["source"]) == (value, "default"), name
    # Synonyms: the hours the file sets stand for log.retention.ms too.
    hours = got["log.retention.hours"]
    assert hours["synonyms"] == (
        "STATIC_BROKER_CONFIG:log.retention.hours=168, DEFAULT_CONFIG:log.retention.hours=168"
    )


def test_print_config_file_env_and_override(tmp_path):
    props = tmp_path / "my.properties"
    props.write_text("num.partitions=3\nlog.retention.ms=1000\nmessage.max.bytes=2000000\n"
                     "log.message.format.version=2.8\nno.such.key=1\n")  # fmt: skip
    result = print_config(
        str(props), "--from-env", "--override", "message.max.bytes=3000000",
        env={"KAFKA_LOG_SEGMENT_BYTES": "2000000", "KAFKA_NUM_PARTITIONS": "4"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"# file: {props}" in result.stderr.splitlines()
    assert "# unknown_config_ignored: key=no.such.key" in result.stderr.splitlines()
    assert "# deprecated_config_ignored: key=log.message.format.version value=2.8" in result.stderr
    got = entries(result.stdout)
    assert {
        k: (got[k]["value"], got[k]["source"])
        for k in (
            "num.partitions",
            "log.segment.bytes",
            "message.max.bytes",
            "log.retention.ms",
            "group.initial.rebalance.delay.ms",
        )
    } == {  # fmt: skip
        "num.partitions": ("4", "env"),
        "log.segment.bytes": ("2000000", "env"),
        "message.max.bytes": ("3000000", "override"),
        "log.retention.ms": ("1000", "file"),
        # Another file replaces the shipped one entirely, as in Kafka.
        "group.initial.rebalance.delay.ms": ("3000", "default"),
    }
    # /dev/null: Kafka's built-in defaults alone.
    got = entries(print_config("/dev/null").stdout)
    assert {v["source"] for v in got.values()} == {"default"}
    # A bad value is refused as the broker refuses it.
    bad = print_config("--override", "num.partitions=0")
    assert bad.returncode == 2
    assert (
        "Invalid value 0 for configuration num.partitions: Value must be at least 1" in bad.stderr
    )


def test_print_config_matches_kafka_configs_describe_all_with_dynamic_configs(tmp_path):
    """Dynamic broker configs stored by a single broker are read from its log dir, and the
    whole listing equals what `kafka-configs --describe --all` gets from that broker."""
    data = str(tmp_path / "data")
    overrides = ["--override", f"log.dir={data}", "--override", "num.partitions=2"]
    broker = BrokerProcess(data, {"num.partitions": "2"}).start()
    try:
        for entity, config in ((["--entity-name", "1"], "log.retention.ms=86400000"),
                               (["--entity-default"], "log.segment.bytes=2000000")):  # fmt: skip
            r = tool("kafka-configs", "--bootstrap-server", "localhost:9092", "--alter",
                     "--entity-type", "brokers", *entity, "--add-config", config,
                     port=broker.port)  # fmt: skip
            assert r.returncode == 0, r.stderr
        described = tool("kafka-configs", "--bootstrap-server", "localhost:9092", "--describe",
                         "--all", "--entity-type", "brokers", "--entity-name", "1",
                         port=broker.port)  # fmt: skip
        assert described.returncode == 0, described.stderr
        listeners = "listeners=PLAINTEXT://127.0.0.1:0"
        printed = print_config(*overrides, "--override", listeners)
    finally:
        broker.terminate()
    assert printed.returncode == 0, printed.stderr
    assert f"# dynamic: read from {data}/topics.json" in printed.stderr
    got = entries(printed.stdout)
    assert got["log.retention.ms"]["source"] == "dynamic-broker"
    assert got["log.retention.ms"]["value"] == "86400000"
    assert got["log.segment.bytes"]["source"] == "dynamic-default"
    assert got["num.partitions"]["source"] == "override"
    without_source = [re.sub(r" source=\S+", "", line) for line in printed.stdout.splitlines()]
    assert without_source == described.stdout.splitlines()


def test_print_config_with_zookeeper_says_dynamic_configs_are_not_read():
    result = print_config("--override", "zookeeper.connect=127.0.0.1:1/kafka")
    assert result.returncode == 0, result.stderr
    assert "# dynamic: kept in ZooKeeper (127.0.0.1:1/kafka), not read here" in result.stderr
    assert entries(result.stdout)["zookeeper.connect"]["source"] == "override"


# --- brokers start from it ----------------------------------------------------------------------


def test_four_kafka_python_consumers_with_3s_sessions_join(tmp_path):
    """The issue's finding, with real clients, against a bare `pykbroker` (its own process, so
    the consumers' threads have this one to themselves): four kafka-python consumers asking
    for a 3 s session join one group (Kafka's code defaults refuse them with
    INVALID_SESSION_TIMEOUT)."""
    broker = BrokerProcess(str(tmp_path / "data")).start()
    try:
        _four_join(broker)
    finally:
        broker.terminate()


def _four_join(broker) -> None:
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics([NewTopic("four", 4, 1)])
    admin.close()
    assigned: dict[int, int] = {}
    stop = threading.Event()

    def member(i: int) -> None:
        # Each consumer polls on its own thread, as an application's would, so heartbeats keep
        # its 3 s session alive however busy the machine is.
        consumer = KafkaConsumer("four", bootstrap_servers=broker.bootstrap_servers,
                                 group_id="g", session_timeout_ms=3000,
                                 heartbeat_interval_ms=1000)  # fmt: skip
        try:
            while not stop.is_set():
                # Not shorter: kafka-python 3.0.12 orphans a metadata-triggered rejoin whose
                # SyncGroup outlives one poll() (see compat-tests' drv_kafka_python GROUP_POLL_MS).
                consumer.poll(2000)
                assigned[i] = len(consumer.assignment())
        finally:
            consumer.close()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: sorted(assigned.values()) == [1, 1, 1, 1], 60, "four members assigned")
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def test_plugin_fixture_starts_from_the_shipped_file(kafka_broker):
    config = kafka_broker.config
    assert config.get("group.initial.rebalance.delay.ms") == 0
    assert config.source("group.min.session.timeout.ms") == "STATIC_BROKER_CONFIG"


@pytest.mark.parametrize("properties", [None, "dev/null"])
def test_embedded_broker_with_another_file_or_none(tmp_path, properties):
    from pykbroker.embedded import EmbeddedBroker

    path = None if properties is None else "/" + properties
    with EmbeddedBroker(data_dir=str(tmp_path / "d"), properties=path) as b:
        assert b.config.get("group.initial.rebalance.delay.ms") == 3000
        assert b.config.get("group.min.session.timeout.ms") == 6000
    mine = tmp_path / "mine.properties"
    mine.write_text("num.partitions=5\nlog.dirs=/nonexistent\nlisteners=PLAINTEXT://0.0.0.0:9092\n")
    with EmbeddedBroker(data_dir=str(tmp_path / "e"), properties=mine) as b:
        # Its own data dir and loopback listener, the file's other keys.
        assert b.config.get("num.partitions") == 5
        assert b.config.log_dirs == [str(tmp_path / "e")]
        assert b.bootstrap_servers.startswith("127.0.0.1:")


def test_make_broker_starts_from_the_shipped_file_with_the_console(tmp_path):
    """`make broker`, as the README starts one (on an ephemeral port and a temporary data dir):
    clients see the shipped file's values (DescribeConfigs: static broker config), the console
    answers, and an aiokafka consumer subscribed by pattern, the issue's first finding, gets its
    record."""
    import asyncio
    import json as jsonlib
    import signal
    import urllib.request

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

    broker = BrokerProcess(str(tmp_path / "data"))
    args = " ".join(f"--override {k}={v}" for k, v in broker.overrides.items())
    broker.proc = subprocess.Popen(
        ["make", "-s", "-C", str(ROOT), "broker", "CONSOLE_PORT=0", f"ARGS={args}"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True,
        env={**os.environ, "PYKBROKER_LOG_FORMAT": "json"},
    )  # fmt: skip
    threading.Thread(target=broker._read_logs, args=(broker.proc,), daemon=True).start()
    try:
        assert broker._started.wait(60), broker.lines[-5:]
        started = broker.events("broker_started")[0]
        res = ConfigResource(ConfigResource.Type.BROKER, "1")
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        got = admin.describe_configs([res])[res].result(20)
        for name in ("group.initial.rebalance.delay.ms", "group.min.session.timeout.ms"):
            entry = got[name]
            assert (entry.value, entry.source) == (
                KAFKA_DEV_VALUES[name],
                ConfigSource.STATIC_BROKER_CONFIG.value,
            ), name
        url = f"http://127.0.0.1:{started['console_port']}/api/cluster"
        with urllib.request.urlopen(url, timeout=20) as r:
            assert jsonlib.load(r)["node_id"] == 1

        async def pattern_consumer() -> bytes:
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
            await producer.start()
            await producer.send_and_wait("events-1", b"first")
            await producer.stop()
            consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers,
                                        group_id="by-pattern", auto_offset_reset="earliest")  # fmt: skip
            consumer.subscribe(pattern="^events-.*")
            await consumer.start()
            try:
                return (await asyncio.wait_for(consumer.getone(), 30)).value
            finally:
                await consumer.stop()

        assert asyncio.run(pattern_consumer()) == b"first"
    finally:
        os.killpg(broker.proc.pid, signal.SIGTERM)
        broker.proc.wait(30)

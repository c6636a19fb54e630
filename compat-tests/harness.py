"""The matrix's machinery: a broker subprocess, the ApiVersions probe, clients, and the runner.

Used by `run.py` (the full matrix, `make compat`) and by tests/test_compat_quick.py (the quick
subset inside `make test`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from features import BY_NAME, FEATURES, GROUPS, Feature, missing_apis

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DRIVERS = HERE / "drivers"
KAFKAJS = HERE / "kafkajs"

PASS, FAIL, NOT_BUILT, UNAVAILABLE, NA = "pass", "fail", "not built", "unavailable", "n/a"

# Broker settings for the matrix: a fresh data dir, an ephemeral port, and no initial rebalance
# delay (Kafka's test setups do the same, so group features don't idle for 3 s each).
BROKER_OVERRIDES = {"group.initial.rebalance.delay.ms": "0"}


class BrokerProcess:
    """`python -m pykbroker` on 127.0.0.1 and an ephemeral port, logs to a file."""

    def __init__(self, overrides: dict[str, str] | None = None, repo: Path | None = None):
        # `repo`: run the broker from another checkout (e.g. a branch's worktree) instead.
        self.repo = Path(repo) if repo else None
        self.data_dir = tempfile.mkdtemp(prefix="pykbroker-compat-")
        self.log_path = Path(self.data_dir) / "broker.log"
        self.overrides = {
            "listeners": "PLAINTEXT://127.0.0.1:0",
            "log.dir": str(Path(self.data_dir) / "data"),
            **BROKER_OVERRIDES,
            **(overrides or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> BrokerProcess:
        args = [sys.executable, "-m", "pykbroker"]
        for k, v in self.overrides.items():
            args += ["--override", f"{k}={v}"]
        env = {**os.environ, "PYKBROKER_LOG_FORMAT": "json"}
        if self.repo:
            env["PYTHONPATH"] = str(self.repo)
        log = open(self.log_path, "w")  # noqa: SIM115  (kept open for the broker's lifetime)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env,
                                     cwd=self.repo or REPO)  # fmt: skip
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            for line in self.log_path.read_text().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "broker_started":
                    self.port = int(event["listeners"][0].rsplit(":", 1)[1])
                    return self
            time.sleep(0.05)  # polling a log file for the start line; not a synchronization
        self.stop()
        raise RuntimeError(f"broker did not start:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def api_versions(host: str, port: int) -> dict[int, tuple[int, int]]:
    """The broker's ApiVersions (v0, hand-encoded so the probe depends on nothing of ours)."""
    body = struct.pack(">hhi", 18, 0, 1) + struct.pack(">h", 6) + b"compat"
    data = round_trip(host, port, body)
    correlation_id, error_code, n = struct.unpack_from(">ihi", data, 0)
    if error_code != 0:
        raise RuntimeError(f"ApiVersions error {error_code}")
    served = {}
    for i in range(n):
        key, lo, hi = struct.unpack_from(">hhh", data, 10 + 6 * i)
        served[key] = (lo, hi)
    return served


def round_trip(host: str, port: int, body: bytes) -> bytes:
    """Send one hand-encoded request (header and body) and return the response frame."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(s, 4))[0]
        return _recv_exact(s, size)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def capabilities() -> set[str]:
    """Broker capabilities that are not APIs. Multi-broker needs a cluster mode (ZooKeeper)."""
    caps: set[str] = set()
    try:
        from pykbroker.config import BROKER_CONFIGS

        if "zookeeper.connect" in BROKER_CONFIGS:
            caps.add("multi-broker")
    except ImportError:
        pass
    return caps


CAPABILITY_GAP = {"multi-broker": "the broker has no cluster mode (zookeeper.connect)"}


# ---- clients -----------------------------------------------------------------------------


@dataclass
class Client:
    name: str
    command: list[str]
    version: str | None = None  # None: unavailable
    why_unavailable: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    # Features the client library has no way to do (n/a), with the reason.
    unsupported: dict[str, str] = field(default_factory=dict)
    # APIs a feature needs with this client beyond the feature's own list.
    extra_needs: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.version is not None


KAFKAJS_READERS = {
    "produce_consume",
    "compression.gzip",
    "compression.snappy",
    "compression.lz4",
    "compression.zstd",
    "ordering",
    "idempotent",
    "transactions",
    "large_messages",
}


def _py_version(module: str, attr: str = "__version__") -> str | None:
    out = subprocess.run([sys.executable, "-c", f"import {module} as m; print(m.{attr})"],
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip() if out.returncode == 0 else None


def discover_clients(names: list[str] | None = None) -> list[Client]:
    py = [sys.executable, "-u"]
    clients = []
    want = names or ["kafka-python", "aiokafka", "confluent-kafka", "kcat", "kafkajs"]
    for name in want:
        if name == "kafka-python":
            c = Client(name, py + [str(DRIVERS / "drv_kafka_python.py")], _py_version("kafka"))
        elif name == "aiokafka":
            c = Client(name, py + [str(DRIVERS / "drv_aiokafka.py")], _py_version("aiokafka"))
        elif name == "confluent-kafka":
            v = _py_version("confluent_kafka")
            lib = _py_version("confluent_kafka", "libversion()[0]")
            c = Client(name, py + [str(DRIVERS / "drv_confluent.py")], v)
            if lib:
                c.extra["librdkafka"] = lib
        elif name == "kcat":
            c = Client(name, py + [str(DRIVERS / "drv_kcat.py")])
            exe = shutil.which("kcat") or shutil.which("kafkacat")
            if exe:
                out = subprocess.run([exe, "-V"], capture_output=True, text=True).stdout
                m = re.search(r"Version (\S+).*librdkafka (\S+)", out)
                c.version = m.group(1) if m else "?"
                if m:
                    c.extra["librdkafka"] = m.group(2)
            else:
                c.why_unavailable = "kcat not on PATH (apt-get install kcat)"
            c.unsupported = {
                f: "kcat has no admin commands" for f in ("admin.topics", "admin.configs")
            }
        elif name == "kafkajs":
            c = Client(name, ["node", str(KAFKAJS / "driver.js")])
            pkg = KAFKAJS / "node_modules" / "kafkajs" / "package.json"
            if not shutil.which("node"):
                c.why_unavailable = "node not on PATH"
            elif not pkg.exists():
                c.why_unavailable = "kafkajs not installed (npm ci in compat-tests/kafkajs)"
            else:
                c.version = json.loads(pkg.read_text())["version"]
                c.extra["node"] = subprocess.run(["node", "--version"], capture_output=True,
                                                 text=True).stdout.strip()  # fmt: skip
            # kafkajs has no assign(): it reads records only as a consumer group member.
            c.extra_needs = {f.name: GROUPS for f in FEATURES if f.name in KAFKAJS_READERS}
        else:
            raise ValueError(f"unknown client {name}")
        if c.version is None and not c.why_unavailable:
            c.why_unavailable = f"{name} is not installed"
        clients.append(c)
    return clients


# ---- running -----------------------------------------------------------------------------


@dataclass
class Cell:
    client: str
    feature: str
    status: str
    detail: str = ""
    seconds: float = 0.0


def prefix_for(client: str, feature: str) -> str:
    # Only '.' and '-' so no two topic names collide once '.' and '_' are equated (as Kafka does).
    return f"compat.{client}.{feature}".replace("_", "-")


def create_topics(bootstrap: str, specs: dict[str, tuple[int, dict[str, str]]],
                  replication_factor: int = 1) -> None:  # fmt: skip
    """The harness's own topics for the features (kafka-python's admin client, CreateTopics)."""
    if not specs:
        return
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-harness")
    try:
        new = [NewTopic(name, num_partitions=n, replication_factor=replication_factor,
                        topic_configs=cfg) for name, (n, cfg) in specs.items()]  # fmt: skip
        for i in range(0, len(new), 50):
            admin.create_topics(new[i : i + 50], timeout_ms=30000)
    finally:
        admin.close()


def run_driver(client: Client, feature: Feature, bootstrap: str, log_dir: Path,
               env: dict[str, str] | None = None) -> Cell:  # fmt: skip
    prefix = prefix_for(client.name, feature.name)
    cmd = client.command + [feature.name, "--bootstrap", bootstrap, "--prefix", prefix]
    log_file = log_dir / f"{client.name}.{feature.name}.log"
    start = time.monotonic()
    with open(log_file, "w") as err:
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                  timeout=feature.timeout, cwd=HERE,
                                  env={**os.environ, **(env or {})})  # fmt: skip
        except subprocess.TimeoutExpired:
            return Cell(client.name, feature.name, FAIL, f"timed out after {feature.timeout:.0f}s",
                        time.monotonic() - start)  # fmt: skip
    elapsed = time.monotonic() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            return Cell(client.name, feature.name, result["status"], result.get("detail", ""),
                        elapsed)  # fmt: skip
    tail = log_file.read_text().strip().splitlines()[-3:]
    return Cell(client.name, feature.name, FAIL,
                f"driver exited {proc.returncode} without a result: {' | '.join(tail)}", elapsed)  # fmt: skip


@dataclass
class Matrix:
    clients: list[Client]
    features: list[Feature]
    cells: dict[tuple[str, str], Cell]
    served: dict[int, tuple[int, int]]
    broker_note: str = ""


def run_matrix(clients: list[Client], features: list[Feature], jobs: int = 3,
               progress=None, log_dir: Path | None = None,
               broker_repo: Path | None = None) -> Matrix:  # fmt: skip
    """Start a broker, run every (client, feature) cell, and return the results."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="compat-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[str, str], Cell] = {}
    caps = capabilities()
    with BrokerProcess(repo=broker_repo) as broker:
        served = api_versions("127.0.0.1", broker.port)
        todo: list[tuple[Client, Feature]] = []
        on_cluster: list[tuple[Client, Feature]] = []
        topics: dict[str, tuple[int, dict[str, str]]] = {}
        for f in features:
            for c in clients:
                lacking = missing_apis(f, served, c.extra_needs.get(f.name, []))
                if not c.available:
                    cells[(c.name, f.name)] = Cell(c.name, f.name, UNAVAILABLE, c.why_unavailable)
                elif f.name in c.unsupported:
                    cells[(c.name, f.name)] = Cell(c.name, f.name, NA, c.unsupported[f.name])
                elif f.needs_capability and f.needs_capability not in caps:
                    gap = CAPABILITY_GAP[f.needs_capability]
                    cells[(c.name, f.name)] = Cell(c.name, f.name, NOT_BUILT, gap)
                elif lacking:
                    cells[(c.name, f.name)] = Cell(c.name, f.name, NOT_BUILT,
                                                   "broker does not serve " + ", ".join(lacking))  # fmt: skip
                elif f.needs_capability == "multi-broker":
                    why = cluster_unavailable()
                    if why:
                        cells[(c.name, f.name)] = Cell(c.name, f.name, UNAVAILABLE, why)
                    else:
                        on_cluster.append((c, f))
                else:
                    todo.append((c, f))
                    for suffix, spec in f.topics.items():
                        topics[f"{prefix_for(c.name, f.name)}.{suffix}"] = spec
                if progress and (c.name, f.name) in cells:
                    progress(cells[(c.name, f.name)])
        create_topics(broker.bootstrap, topics)
        lock = threading.Lock()

        def one(cf: tuple[Client, Feature]) -> None:
            c, f = cf
            if not broker.alive():
                cell = Cell(c.name, f.name, FAIL, "broker is not running")
            else:
                cell = run_driver(c, f, broker.bootstrap, log_dir)
                if cell.status == FAIL and not broker.alive():
                    cell.detail += " (the broker died)"
            with lock:
                cells[(c.name, f.name)] = cell
                if progress:
                    progress(cell)

        # Slow features first, so the pool's tail is short.
        todo.sort(key=lambda cf: -cf[1].timeout)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, todo))
        note = "" if broker.alive() else "broker died during the run:\n" + broker.log_tail()
    if on_cluster:
        note += run_on_cluster(on_cluster, cells, progress, log_dir, broker_repo)
    return Matrix(clients, features, cells, served, note)


def cluster_unavailable() -> str | None:
    """Why the matrix can't start a cluster here (None if it can)."""
    from cluster import unavailable_reason

    why = unavailable_reason()
    return f"no cluster: {why}" if why else None


def run_on_cluster(todo: list[tuple[Client, Feature]], cells: dict, progress, log_dir: Path,
                   broker_repo: Path | None) -> str:  # fmt: skip
    """Cells that need three brokers, one at a time (a failover cell kills a broker): after each,
    the harness restarts what was killed and waits until every replica is in sync again."""
    from cluster import ClusterProcess

    def record(cell: Cell) -> None:
        cells[(cell.client, cell.feature)] = cell
        if progress:
            progress(cell)

    note = ""
    try:
        with ClusterProcess(repo=broker_repo) as cluster:
            for f in {f.name: f for _, f in todo}.values():
                specs = {f"{prefix_for(c.name, f.name)}.{suffix}": spec
                         for c, g in todo if g is f for suffix, spec in f.topics.items()}  # fmt: skip
                create_topics(cluster.bootstrap, specs, f.replication_factor)
            for n, (c, f) in enumerate(todo):
                topics = [f"{prefix_for(c.name, f.name)}.{s}" for s in f.topics]
                try:
                    cluster.heal(topics)
                except RuntimeError as e:
                    for c2, f2 in todo[n:]:
                        record(Cell(c2.name, f2.name, FAIL, "the cluster did not recover"))
                    return f"cluster did not recover:\n{e}"
                cell = run_driver(c, f, cluster.bootstrap, log_dir, cluster.environment())
                restarted = cluster.heal(topics) if cluster.alive() else []
                if cell.status == PASS and restarted:
                    cell.detail += (
                        f"; broker {', '.join(map(str, restarted))} restarted and in sync"
                    )
                record(cell)
    except (RuntimeError, OSError) as e:
        for c, f in todo:
            if (c.name, f.name) not in cells:
                record(Cell(c.name, f.name, FAIL, f"cluster failed: {str(e).splitlines()[0]}"))
        note = f"cluster failed:\n{e}"
    return note


def select_features(names: list[str] | None = None, core_only: bool = False) -> list[Feature]:
    if names:
        return [BY_NAME[n] for n in names]
    return [f for f in FEATURES if f.core or not core_only]

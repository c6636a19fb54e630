"""The matrix's cluster: a private ZooKeeper plus three pykbroker processes on 127.0.0.1.

Used for the failover column and for the seed guide's multi-broker sections. ZooKeeper is
Debian's `zookeeper` package, started by tests/zookeeper_server.py (the cluster tests' helper);
`make compat` installs it when missing and root (scripts/ensure-zookeeper.sh). Without it the
cells that need a cluster are `unavailable`, with the reason.

A failover driver SIGKILLs a broker itself: it gets the brokers' ids, ports and pids in the
environment variable COMPAT_CLUSTER (JSON). After each cell the harness restarts whatever was
killed, on the same port and data, and waits until every replica is back in sync.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

import cluster_helpers  # noqa: E402
from harness import round_trip  # noqa: E402
from ports import restartable_port  # noqa: E402
from zookeeper_server import ZooKeeperServer, zookeeper_missing  # noqa: E402

# The test suite's cluster settings (a short ZooKeeper session so a killed broker is noticed in
# ~3 s, an immediate preferred-leader check so a restarted broker gets its partitions back
# before the next cell), and groups that form at once.
CLUSTER_OVERRIDES = {**cluster_helpers.CLUSTER_OVERRIDES, "group.initial.rebalance.delay.ms": "0"}


def unavailable_reason() -> str | None:
    """Why no cluster can be started here (None if one can)."""
    return zookeeper_missing()


class ClusterBroker:
    """One `python -m pykbroker` of the cluster: fixed port and data dir, so it can come back."""

    def __init__(self, node_id: int, work: Path, zk_connect: str, overrides: dict[str, str],
                 repo: Path | None):  # fmt: skip
        self.node_id = node_id
        self.port = restartable_port()  # it comes back on this port after a SIGKILL
        self.data_dir = work / f"broker{node_id}"
        self.repo = repo
        self.overrides = {
            "node.id": str(node_id),
            "zookeeper.connect": zk_connect,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "log.dir": str(self.data_dir / "data"),
            **overrides,
        }
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"broker-run{self.runs}.log"

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.runs += 1
        args = [sys.executable, "-m", "pykbroker"]
        for k, v in self.overrides.items():
            args += ["--override", f"{k}={v}"]
        env = {**os.environ, "PYKBROKER_LOG_FORMAT": "json"}
        if self.repo:
            env["PYTHONPATH"] = str(self.repo)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env,
                                         cwd=self.repo or REPO)  # fmt: skip
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            if '"broker_started"' in self.log_path.read_text():
                return
            time.sleep(0.05)  # polling a log file for the start line; not a synchronization
        self.kill()
        raise RuntimeError(f"broker {self.node_id} did not start:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""


class ClusterProcess:
    """ZooKeeper and `size` brokers; `with ClusterProcess() as c:` starts and removes them."""

    def __init__(self, size: int = 3, overrides: dict[str, str] | None = None,
                 repo: str | Path | None = None):  # fmt: skip
        self.work = Path(tempfile.mkdtemp(prefix="pykbroker-compat-cluster-"))
        self.zk = ZooKeeperServer(str(self.work))
        self.repo = Path(repo) if repo else None
        self.size = size
        self.overrides = {**CLUSTER_OVERRIDES, **(overrides or {})}
        self.brokers: dict[int, ClusterBroker] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ClusterProcess:
        self.zk.start()
        connect = f"{self.zk.connect}/pykbroker"
        for node_id in range(1, self.size + 1):
            self.brokers[node_id] = ClusterBroker(node_id, self.work, connect, self.overrides,
                                                  self.repo)  # fmt: skip
        for b in self.brokers.values():
            b.start()
        self.wait_for(lambda: self.live_ids() == sorted(self.brokers), 60, "all brokers registered")
        return self

    def stop(self) -> None:
        for b in self.brokers.values():
            b.kill()
        self.zk.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> ClusterProcess:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what drivers see -----------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers.values())

    def first_port(self) -> int:
        return self.brokers[min(self.brokers)].port

    def environment(self) -> dict[str, str]:
        """COMPAT_CLUSTER for a failover driver: node id -> port and pid."""
        desc = {str(i): {"port": b.port, "pid": b.proc.pid if b.alive() else None}
                for i, b in self.brokers.items()}  # fmt: skip
        return {"COMPAT_CLUSTER": json.dumps({"brokers": desc})}

    # --- state ----------------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.zk.proc is not None and self.zk.proc.poll() is None

    def metadata(self, topics: list[str] | None = None, node_id: int | None = None):
        """(brokers, {topic: {partition: (leader, replicas, isr)}}) from one live broker."""
        ids = [node_id] if node_id else [i for i, b in self.brokers.items() if b.alive()]
        last: Exception | None = None
        for i in ids:
            try:
                return metadata_v1(self.brokers[i].port, topics)
            except OSError as e:
                last = e
        raise ConnectionError(f"no broker answered Metadata: {last}")

    def live_ids(self) -> list[int]:
        return sorted(self.metadata([])[0])

    def in_sync(self, topics: list[str], preferred: bool = False) -> bool:
        """Every live broker registered, each topic's partitions led and fully in sync, and
        every broker agreeing about it; with `preferred`, each led by its preferred replica
        (so no leadership moves back while a failover cell runs)."""
        alive = [i for i, b in self.brokers.items() if b.alive()]
        views = []
        for i in alive:
            brokers, parts = self.metadata(topics, i)
            if sorted(brokers) != sorted(self.brokers):
                return False
            for t in topics:
                if not parts.get(t):
                    return False
                for leader, replicas, isr in parts[t].values():
                    if leader < 0 or sorted(isr) != sorted(replicas):
                        return False
                    if preferred and leader != replicas[0]:
                        return False
            views.append(parts)
        return all(v == views[0] for v in views)

    def heal(self, topics: list[str], timeout: float = 90) -> list[int]:
        """Restart every broker that is down and wait until `topics` are fully in sync again,
        led by their preferred replicas. Returns the ids that were restarted."""
        restarted = [i for i, b in self.brokers.items() if not b.alive()]
        for i in restarted:
            self.brokers[i].start()
        self.wait_for(lambda: self.in_sync(topics, preferred=True), timeout,
                      f"brokers {sorted(self.brokers)} back and {topics} in sync")  # fmt: skip
        return restarted

    def wait_for(self, cond, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < end:
            try:
                if cond():
                    return
            except (OSError, ValueError) as e:  # a broker starting or stopping: ask again
                last = e
            time.sleep(0.1)  # a poll interval against a deadline, not a synchronization
        raise RuntimeError(f"timed out waiting for {what} (last error: {last!r})\n"
                           + self.log_tails())  # fmt: skip

    def log_tails(self) -> str:
        return "\n".join(f"--- broker {i}:\n{b.log_tail(8)}" for i, b in self.brokers.items())


# --- a Metadata v1 probe (hand-encoded, like harness.api_versions) ----------------------------


def metadata_v1(port: int, topics: list[str] | None, host: str = "127.0.0.1"):
    """Brokers {id: (host, port)} and {topic: {partition: (leader, replicas, isr)}}."""
    body = struct.pack(">hhi", 3, 1, 7) + struct.pack(">h", 6) + b"compat"
    if topics is None:
        body += struct.pack(">i", -1)
    else:
        body += struct.pack(">i", len(topics))
        for t in topics:
            body += struct.pack(">h", len(t)) + t.encode()
    r = _Reader(round_trip(host, port, body))
    r.i32()  # correlation id
    brokers = {}
    for _ in range(r.i32()):
        node, h, p, _rack = r.i32(), r.string(), r.i32(), r.string()
        brokers[node] = (h, p)
    r.i32()  # controller id
    out: dict[str, dict[int, tuple[int, list[int], list[int]]]] = {}
    for _ in range(r.i32()):
        error, name, _internal = r.i16(), r.string(), r.i8()
        parts = {}
        for _ in range(r.i32()):
            _perr, index, leader = r.i16(), r.i32(), r.i32()
            replicas = [r.i32() for _ in range(r.i32())]
            isr = [r.i32() for _ in range(r.i32())]
            parts[index] = (leader, replicas, isr)
        if error == 0:
            out[name] = parts
    return brokers, out


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def _take(self, fmt: str):
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def i8(self) -> int:
        return self._take(">b")

    def i16(self) -> int:
        return self._take(">h")

    def i32(self) -> int:
        return self._take(">i")

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s

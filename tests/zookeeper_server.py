"""A private ZooKeeper server for cluster tests (Debian's `zookeeper` package, run by hand).

`make test` installs the package when it is missing (scripts/ensure-zookeeper.sh); without it,
or without Java, the cluster tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from ports import restartable_port

ZOOKEEPER_JAR = os.environ.get("PYKBROKER_ZOOKEEPER_JAR", "/usr/share/java/zookeeper.jar")


def zookeeper_missing() -> str | None:
    """Why a ZooKeeper server can't be started here (None if it can). As root (CI) `make test`
    installs it (scripts/ensure-zookeeper.sh), so there a missing ZooKeeper is a failure of
    the cluster tests, not a reason to skip them."""
    if os.geteuid() == 0:
        return None
    if shutil.which("java") is None:
        return "java not found (ZooKeeper needs a JRE: apt-get install default-jre-headless)"
    if not os.path.exists(ZOOKEEPER_JAR):
        return (
            f"ZooKeeper not installed ({ZOOKEEPER_JAR} missing): apt-get install zookeeper, "
            "or set PYKBROKER_ZOOKEEPER_JAR"
        )
    return None


class ZooKeeperServer:
    """A standalone ZooKeeper on 127.0.0.1 and a free port, data in a temp dir."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self.port = restartable_port()  # kept across a stop and start
        self.proc: subprocess.Popen | None = None

    @property
    def connect(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ZooKeeperServer:
        data = os.path.join(self.work_dir, "zk-data")
        os.makedirs(data, exist_ok=True)
        cfg = os.path.join(self.work_dir, "zoo.cfg")
        with open(cfg, "w") as f:
            f.write(
                "tickTime=500\n"
                f"dataDir={data}\n"
                f"clientPort={self.port}\n"
                "clientPortAddress=127.0.0.1\n"
                "maxClientCnxns=0\n"
                "admin.enableServer=false\n"
                "minSessionTimeout=1000\n"
                "maxSessionTimeout=300000\n"  # tests/test_cli_cluster.py asks for 180 s
                "4lw.commands.whitelist=ruok,srvr\n"
            )
        self.log_path = os.path.join(self.work_dir, "zookeeper.log")
        with open(self.log_path, "w") as log:
            self.proc = self._spawn(cfg, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(self.log_path) as f:
                    raise RuntimeError(f"ZooKeeper exited: {f.read()[-2000:]}")
            if self._ruok():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("ZooKeeper did not start")

    @staticmethod
    def _spawn(cfg: str, log) -> subprocess.Popen:
        return subprocess.Popen(
            [
                "java",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-cp",
                f"/etc/zookeeper/conf:{ZOOKEEPER_JAR}",
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                cfg,
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def _ruok(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"ruok")
                return s.recv(4) == b"imok"
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

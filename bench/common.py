"""Shared pieces of the benchmarks: the broker process, RSS/CPU probes, machine facts, stats."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MB = 1_000_000  # figures are in MB/s (10^6 bytes), like Kafka's own perf tools


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def wait_port(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.002)  # polling for the listener to appear: the thing being measured
    return False


class Broker:
    """`python -m pykbroker` as a separate process (so broker and client use different cores),
    on 127.0.0.1:PORT with its own temporary log dir."""

    def __init__(self, overrides: dict[str, str] | None = None, data_dir: str | None = None,
                 port: int | None = None):  # fmt: skip
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="pykbroker-bench-")
        self.port = port or free_port()
        self.overrides = {"listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                          "log.dir": str(Path(self.data_dir) / "data"), **(overrides or {})}  # fmt: skip
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(self.data_dir) / "broker.log"
        self.ready_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 120) -> Broker:
        args = [sys.executable, "-m", "pykbroker"]
        for k, v in self.overrides.items():
            args += ["--override", f"{k}={v}"]
        env = {**os.environ, "PYKBROKER_LOG_FORMAT": "json"}
        with open(self.log_path, "a") as log:
            t0 = time.monotonic()
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env,
                                         cwd=REPO)  # fmt: skip
        if not wait_port(self.port, t0 + timeout) or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError(f"broker did not start:\n{self.log_tail()}")
        self.ready_seconds = time.monotonic() - t0
        return self

    def events(self, name: str) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == name:
                out.append(e)
        return out

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def rss(self) -> int | None:
        return rss_bytes(self.proc.pid) if self.proc else None

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid) if self.proc else None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def cleanup(self) -> None:
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


class ExternalBroker:
    """A broker someone else started (e.g. under a profiler): `--bootstrap` and `--broker-pid`."""

    def __init__(self, bootstrap: str, pid: int | None):
        self.bootstrap = bootstrap
        self.port = int(bootstrap.rsplit(":", 1)[1])
        self._pid = pid

    def rss(self) -> int | None:
        return rss_bytes(self._pid) if self._pid else None

    def cpu(self) -> float | None:
        return cpu_seconds(self._pid) if self._pid else None

    def __enter__(self) -> ExternalBroker:
        return self

    def __exit__(self, *exc) -> None:
        pass


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError):
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": mem,
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}  # fmt: skip


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    out["pykbroker"] = rev or "?"
    for name, mod in (("confluent-kafka", "confluent_kafka"), ("kafka-python", "kafka"),
                      ("aiokafka", "aiokafka"), ("uvloop", "uvloop")):  # fmt: skip
        try:
            out[name] = __import__(mod).__version__
        except Exception:
            out[name] = "not installed"
    try:
        import confluent_kafka

        out["librdkafka"] = confluent_kafka.libversion()[0]
    except Exception:
        pass
    return out


@dataclass
class Figure:
    """One measured figure, printed as soon as it exists and kept for RESULTS.md."""

    section: str
    name: str
    values: dict[str, float | str | None]
    notes: dict[str, str] = field(default_factory=dict)


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1024 / 1024:.1f} MiB"


def fmt_rate(bps: float | None) -> str:
    return "?" if bps is None else f"{bps / MB:,.1f} MB/s"

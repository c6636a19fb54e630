"""Test helpers: a broker in a subprocess (for SIGTERM/SIGKILL tests) and raw protocol calls."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading

from protocol import codec
from protocol.framing import FrameReader

KAFKA_DEFAULTS = "/dev/null"  # a properties file setting nothing: Kafka's built-in defaults


class BrokerProcess:
    """`python -m pykbroker` in a subprocess on an ephemeral port; JSON logs collected."""

    def __init__(self, data_dir: str, overrides: dict[str, str] | None = None, port: int = 0,
                 properties: str | None = None):  # fmt: skip
        """`properties`: the file it starts from; None for the shipped config/server.properties
        (as a bare `pykbroker`), KAFKA_DEFAULTS for Kafka's built-in defaults alone."""
        self.data_dir = data_dir
        self.properties = properties
        self.overrides = {
            "log.dir": data_dir,
            "listeners": f"PLAINTEXT://127.0.0.1:{port}",
            **(overrides or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.lines: list[dict] = []
        self.port: int | None = None
        self._started = threading.Event()

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30, nofile: int | None = None) -> BrokerProcess:
        """`nofile`: a hard open-file limit for the broker process (it raises its soft limit
        to the hard one at start)."""
        args = [sys.executable, "-m", "pykbroker"]
        if self.properties is not None:
            args.append(self.properties)
        for k, v in self.overrides.items():
            args += ["--override", f"{k}={v}"]
        env = {**os.environ, "PYKBROKER_LOG_FORMAT": "json"}
        self._started.clear()

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
            preexec_fn=limit if nofile else None,
        )  # fmt: skip
        threading.Thread(target=self._read_logs, args=(self.proc,), daemon=True).start()
        if not self._started.wait(timeout):
            self.kill()
            raise RuntimeError(f"broker did not start: {self.lines[-5:]}")
        return self

    def _read_logs(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "line": line.rstrip()}
            self.lines.append(event)
            if event.get("event") == "broker_started":
                self.port = int(event["listeners"][0].rsplit(":", 1)[1])
                self._started.set()

    def rss(self) -> int:
        """The broker process's resident memory, in bytes."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def events(self, name: str) -> list[dict]:
        return [e for e in self.lines if e.get("event") == name]

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class RawClient:
    """A bare socket speaking the wire protocol through `protocol.codec` (for bad-input tests)."""

    def __init__(self, port: int, host: str = "127.0.0.1", client_id: str = "raw-test"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.client_id = client_id
        self.reader = FrameReader(1 << 30)
        self.correlation_id = 0

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self) -> bytearray | None:
        """The next response frame, or None if the broker closed the connection."""
        while not self.reader.frames:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return None
            if not data:
                return None
            self.reader.feed(data)
        return self.reader.frames.popleft()

    def request(self, api_key: int, version: int, body: dict):
        self.correlation_id += 1
        self.send_raw(
            codec.encode_request(api_key, version, self.correlation_id, self.client_id, body)
        )
        frame = self.recv_frame()
        if frame is None:
            return None
        offset = 4 + (1 if codec.response_is_flexible(api_key, version) else 0)
        assert int.from_bytes(frame[:4], "big") == self.correlation_id
        return codec.decode_response(api_key, version, frame, offset)

    def close(self) -> None:
        self.sock.close()

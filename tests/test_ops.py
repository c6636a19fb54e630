"""Operating a broker: health check, clean shutdown on SIGTERM, structured logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

from helpers import BrokerProcess
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from ports import restartable_port

from pykbroker.cli.broker import main
from pykbroker.storage.log_manager import CLEAN_SHUTDOWN_FILE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- pykbroker healthcheck ----------------------------------------------------------------------


def test_healthcheck_live_broker(broker):
    out = subprocess.run(
        [sys.executable, "-m", "pykbroker", "healthcheck", "--bootstrap-server",
         broker.bootstrap_servers],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"OK: {broker.bootstrap_servers} answered ApiVersions")


def test_healthcheck_target_from_config(broker, capsys):
    # No --bootstrap-server: the first listener of the configuration, as in the container.
    assert main(["healthcheck", "--override", f"listeners=PLAINTEXT://:{broker.port}"]) == 0
    assert capsys.readouterr().out.startswith(f"OK: 127.0.0.1:{broker.port}")


def test_healthcheck_dead_port(capsys):
    port = free_port()  # bound and released: nothing listens there
    assert main(["healthcheck", "--bootstrap-server", f"127.0.0.1:{port}"]) == 1
    assert capsys.readouterr().err.startswith(f"UNHEALTHY: 127.0.0.1:{port}")


def test_healthcheck_silent_or_wrong_server(capsys):
    """Something listens but is not a Kafka broker: a silent one times out, a chatty one fails."""
    for reply in (None, b"HTTP/1.1 400 Bad Request\r\n\r\n"):
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            accepted: list[socket.socket] = []

            def serve(reply=reply, server=server, accepted=accepted):
                conn, _ = server.accept()
                accepted.append(conn)
                conn.recv(1024)
                if reply is not None:
                    conn.sendall(reply)
                    conn.close()

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            args = ["healthcheck", "--bootstrap-server", f"127.0.0.1:{port}", "--timeout", "1"]
            assert main(args) == 1
            t.join(10)
            for conn in accepted:
                conn.close()
        assert "UNHEALTHY" in capsys.readouterr().err


def test_healthcheck_bad_usage(capsys):
    assert main(["healthcheck", "--bootstrap-server", "nohostport"]) == 2


# --- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_flushes_and_writes_clean_shutdown_marker(tmp_path):
    data = str(tmp_path / "data")
    port = restartable_port()
    broker = BrokerProcess(data, port=port).start()
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=0)
        for i in range(50):
            producer.send("durable", value=b"record-%03d" % i)
        producer.flush()
        producer.close()
        assert not os.path.exists(os.path.join(data, CLEAN_SHUTDOWN_FILE))  # removed at start
        assert broker.terminate() == 0
    finally:
        broker.kill()
    assert broker.events("shutdown_requested")
    assert broker.events("logs_closed")[0]["partitions"] == 1
    assert os.path.exists(os.path.join(data, CLEAN_SHUTDOWN_FILE))
    segment = os.path.join(data, "durable-0", "00000000000000000000.log")
    assert os.path.getsize(segment) > 50 * len(b"record-000")

    again = BrokerProcess(data, port=port).start()
    try:
        (loaded,) = again.events("logs_loaded")
        assert loaded["clean_shutdown"] is True  # no recovery needed
        consumer = KafkaConsumer(
            bootstrap_servers=again.bootstrap_servers, consumer_timeout_ms=5000
        )
        consumer.assign([TopicPartition("durable", 0)])
        consumer.seek_to_beginning()
        values = [m.value for m in consumer]
        consumer.close()
        assert values == [b"record-%03d" % i for i in range(50)]
    finally:
        again.terminate()


# --- logs ----------------------------------------------------------------------------------------


def run_broker_logging(tmp_path, level: str | None) -> list[str]:
    """Start a broker with stderr on a pipe (not a TTY, as in a container), make one request,
    stop it, and return its stderr lines. PYKBROKER_LOG_FORMAT is deliberately unset."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYKBROKER_")}
    if level:
        env["PYKBROKER_LOG_LEVEL"] = level
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pykbroker", "--override", f"log.dir={tmp_path / level_dir(level)}",
         "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    lines: list[str] = []
    started = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "broker_started" in line:
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(30) and proc.poll() is None, lines
        assert main(["healthcheck", "--bootstrap-server", f"127.0.0.1:{port}"]) == 0
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    return lines


def level_dir(level: str | None) -> str:
    return f"data-{level or 'default'}"


def test_logs_are_json_when_not_a_tty_and_requests_only_at_debug(tmp_path):
    info = [json.loads(line) for line in run_broker_logging(tmp_path, None)]  # every line JSON
    events = [e["event"] for e in info]
    assert "broker_started" in events and "broker_stopped" in events
    assert all(e["level"] != "debug" for e in info)
    assert "request_completed" not in events
    assert all("timestamp" in e for e in info)

    debug = [json.loads(line) for line in run_broker_logging(tmp_path, "DEBUG")]
    requests = [e for e in debug if e["event"] == "request_completed"]
    assert requests and all(e["level"] == "debug" for e in requests)
    assert requests[0]["api"] == "ApiVersions" and requests[0]["api_version"] == 3
    assert requests[0]["correlation_id"] == 1

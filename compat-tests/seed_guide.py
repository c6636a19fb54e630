"""Every code sample and command of the seed guide, verbatim, against a three-broker cluster.

The samples are kept here as they appear in `shared/seed-kafka-guide.txt` (each is checked to
occur in the guide verbatim, so a change of the guide shows up as a failure). Only
`localhost:9092` is replaced by the port of one broker (broker 1) of the matrix's cluster
(compat-tests/cluster.py: ZooKeeper and three pykbroker processes), so section 5's
`--replication-factor 2` has the brokers it needs and sections 6 and 8 describe real leaders,
replicas and ISRs. Without ZooKeeper the guide runs against one broker and sections 5, 6 and 8
are `unavailable`, with the reason.

Order: the guide's, except that section 2's `kafka-topics --create` runs before section 1's
producer (which would otherwise auto-create the topic and make `--create` fail, as it does on
Apache Kafka). Section 9's fragments run with section 1's producer and section 4's consumer set
up before them, the consumer subscribed to system_logs. Kafka's CLI tools must be on PATH in the
venv (`.venv/bin/kafka-topics`...).

    .venv/bin/python compat-tests/seed_guide.py
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster  # noqa: E402
import harness  # noqa: E402

SECTION_1 = """from kafka import KafkaProducer
import json

# Create a Kafka producer
producer = KafkaProducer(bootstrap_servers='localhost:9092',
                         value_serializer=lambda v: json.dumps(v).encode('utf-8'))

# Send a message to a Kafka topic
message = {'event': 'page_view', 'user': 'userA', 'timestamp': '2024-09-15T12:00:00Z'}
producer.send('user_activity', value=message)
producer.flush()
"""

SECTION_4 = """from kafka import KafkaConsumer
import json

# Create a consumer to subscribe to a topic
consumer = KafkaConsumer('user_activity', 
                         bootstrap_servers='localhost:9092',
                         auto_offset_reset='earliest',
                         value_deserializer=lambda m: json.loads(m.decode('utf-8')))

# Read messages from the topic
for message in consumer:
    print(f"Received message: {message.value}")
"""  # noqa: W291  (the guide's trailing space, kept verbatim)

SECTION_9_PRODUCER = """# Producer sends message
producer.send('system_logs', value={'log_level': 'ERROR', 'message': 'Database failure'})
"""

SECTION_9_CONSUMER = """# Consumer processes the message
for message in consumer:
    print(f"Log: {message.value}")
"""

CMD_2 = "kafka-topics --create --topic user_activity --bootstrap-server localhost:9092 --partitions 1 --replication-factor 1"
CMD_3 = "kafka-configs --describe --entity-type topics --entity-name user_activity --bootstrap-server localhost:9092"
CMD_5 = "kafka-topics --create --topic high_traffic --bootstrap-server localhost:9092 --partitions 4 --replication-factor 2"
CMD_6 = "kafka-topics --describe --topic high_traffic --bootstrap-server localhost:9092"
CMD_11 = "kafka-configs --alter --entity-type topics --entity-name system_logs --add-config 'cleanup.policy=compact' --bootstrap-server localhost:9092"

EXPECT_4 = (
    "Received message: {'event': 'page_view', 'user': 'userA', 'timestamp': '2024-09-15T12:00:00Z'}"
)
EXPECT_9 = "Log: {'log_level': 'ERROR', 'message': 'Database failure'}"


@dataclass
class Step:
    section: str
    what: str
    status: str
    detail: str = ""
    output: str = ""  # the command's stdout


def guide_path() -> Path | None:
    for p in (harness.REPO.parent / "shared" / "seed-kafka-guide.txt",
              Path("/work/shared/seed-kafka-guide.txt")):  # fmt: skip
        if p.exists():
            return p
    return None


def _on_port(text: str, port: int) -> str:
    return text.replace("localhost:9092", f"localhost:{port}")


def _python(code: str, port: int, timeout: float = 60) -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-c", _on_port(code, port)], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    out = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, (out[-1] if out else f"exit {proc.returncode}")


def _first_line(code: str, port: int, timeout: float = 30) -> str:
    """Run a consumer loop that never ends by itself; return its first printed line."""
    proc = subprocess.Popen([sys.executable, "-u", "-c", _on_port(code, port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        return proc.stdout.readline().rstrip("\n")
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()


def _venv_bin() -> str:
    return str(Path(sys.executable).parent)


def _command(cmd: str, port: int) -> Step:
    tool = shlex.split(cmd)[0]
    if shutil.which(tool, path=_venv_bin()) is None:
        return Step("", cmd, harness.NOT_BUILT, f"`{tool}` is not on PATH in the venv")
    env = {**os.environ, "PATH": _venv_bin() + os.pathsep + os.environ.get("PATH", "")}
    try:
        proc = subprocess.run(_on_port(cmd, port), shell=True, capture_output=True, text=True,
                              env=env, timeout=60)  # fmt: skip
    except subprocess.TimeoutExpired:
        return Step("", cmd, harness.FAIL, "timed out after 60 s")
    out = " / ".join(line.strip() for line in (proc.stdout + proc.stderr).strip().splitlines()[:6])
    status = harness.PASS if proc.returncode == 0 else harness.FAIL
    return Step("", cmd, status, f"exit {proc.returncode}: {out}", proc.stdout)


def run_all(broker_repo: str | None = None) -> list[Step]:
    """Run the guide on a fresh cluster (or, without ZooKeeper, on one broker)."""
    why = cluster.unavailable_reason()
    if why is None:
        with cluster.ClusterProcess(repo=broker_repo) as c:
            return _run(c.first_port(), c, None)
    with harness.BrokerProcess(repo=broker_repo) as broker:
        return _run(broker.port, None, f"no cluster: {why}")


def describes_replicas(step: Step, brokers: set[int]) -> Step:
    """Section 6/8's describe must show 4 partitions, each with a live leader and 2 replicas, all
    in sync."""
    if step.status != harness.PASS:
        return step
    lines = [line for line in step.output.splitlines() if line.strip()]
    head = lines[0] if lines else ""
    rows = [dict(re.findall(r"(Partition|Leader|Replicas|Isr): (\S+)", line)) for line in lines[1:]]
    problems = []
    if "PartitionCount: 4" not in head or "ReplicationFactor: 2" not in head:
        problems.append(f"header {head!r}")
    if sorted(r.get("Partition", "") for r in rows) != ["0", "1", "2", "3"]:
        problems.append(f"{len(rows)} partition lines")
    for r in rows:
        replicas = r.get("Replicas", "").split(",")
        if len(set(replicas)) != 2 or not {int(x) for x in replicas if x.isdigit()} <= brokers:
            problems.append(f"partition {r.get('Partition')}: replicas {r.get('Replicas')}")
        elif r.get("Leader") not in replicas or set(r.get("Isr", "").split(",")) != set(replicas):
            problems.append(f"partition {r.get('Partition')}: leader {r.get('Leader')}, "
                            f"isr {r.get('Isr')}")  # fmt: skip
    if problems:
        step.status, step.detail = harness.FAIL, "; ".join(problems) + ". " + step.detail
    else:
        leaders = sorted({r["Leader"] for r in rows})
        step.detail = (f"4 partitions, 2 replicas each, all in sync, led by brokers "
                       f"{','.join(leaders)}. " + step.detail)  # fmt: skip
    return step


def _run(port: int, c: cluster.ClusterProcess | None, no_cluster: str | None) -> list[Step]:
    steps: list[Step] = []
    path = guide_path()
    guide = path.read_text() if path else None

    def verbatim(text: str) -> bool:
        return guide is None or text.strip() in guide

    def add(section: str, step: Step, *texts: str) -> None:
        step.section = section
        if not all(verbatim(t) for t in texts):
            step.status, step.detail = harness.FAIL, "sample no longer matches the guide's text"
        steps.append(step)

    add("2", _command(CMD_2, port), CMD_2)
    ok, last = _python(SECTION_1, port)
    add("1", Step("", "KafkaProducer sends to user_activity", harness.PASS if ok else harness.FAIL,
                  "" if ok else last), SECTION_1)  # fmt: skip
    add("3", _command(CMD_3, port), CMD_3)
    line = _first_line(SECTION_4, port)
    add("4", Step("", "KafkaConsumer reads user_activity",
                  harness.PASS if line == EXPECT_4 else harness.FAIL, f"printed {line!r}"),
        SECTION_4)  # fmt: skip
    if c is None:
        # As on Apache Kafka, replication factor 2 needs two brokers: not run on one.
        add("5", Step("", CMD_5, harness.UNAVAILABLE, no_cluster or ""), CMD_5)
        for section in ("6", "8"):
            add(section, Step("", CMD_6, harness.UNAVAILABLE, "high_traffic needs section 5"),
                CMD_6)  # fmt: skip
    else:
        create = _command(CMD_5, port)
        add("5", create, CMD_5)
        if create.status == harness.PASS:
            # As a reader would, wait until the new topic's replicas are in sync before looking.
            try:
                c.wait_for(lambda: c.in_sync(["high_traffic"]), 30, "high_traffic in sync")
            except RuntimeError as e:
                create.status, create.detail = harness.FAIL, str(e).splitlines()[0]
        brokers = set(c.brokers)
        for section in ("6", "8"):
            add(section, describes_replicas(_command(CMD_6, port), brokers), CMD_6)
    producer = SECTION_1.split("# Send")[0] + SECTION_9_PRODUCER
    ok, last = _python(producer, port)
    add("9", Step("", "producer.send('system_logs', ...) (section 1's producer)",
                  harness.PASS if ok else harness.FAIL, "" if ok else last),
        SECTION_9_PRODUCER)  # fmt: skip
    consumer = SECTION_4.split("# Read")[0].replace("'user_activity'", "'system_logs'")
    line = _first_line(consumer + SECTION_9_CONSUMER, port)
    add("9", Step("", "for message in consumer: print(f\"Log: ...\") (section 4's consumer)",
                  harness.PASS if line == EXPECT_9 else harness.FAIL, f"printed {line!r}"),
        SECTION_9_CONSUMER)  # fmt: skip
    add("11", _command(CMD_11, port), CMD_11)
    if guide is None:
        steps.append(Step("-", "guide file", harness.NA, "shared/seed-kafka-guide.txt not found; "
                          "samples not compared with it"))  # fmt: skip
    return steps


def table(steps: list[Step], markdown: bool) -> str:
    if markdown:
        lines = ["| § | sample or command | result | output |", "|---|---|---|---|"]
        for s in steps:
            what = s.what.replace("|", "\\|")
            detail = s.detail.replace("|", "\\|")
            lines.append(f"| {s.section} | `{what}` | {s.status} | {detail} |")
        return "\n".join(lines)
    return "\n".join(f"  §{s.section:3} {s.status:10} {s.what[:80]}\n"
                     f"       {s.detail[:150]}" for s in steps)  # fmt: skip


if __name__ == "__main__":
    result = run_all()
    print(table(result, markdown=False))
    sys.exit(1 if any(s.status == harness.FAIL for s in result) else 0)

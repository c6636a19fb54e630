"""kafka-consumer-groups --reset-offsets by time and from a file (--to-datetime, --by-duration,
--from-file, and --export feeding --from-file), run as installed console scripts against a real
broker."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from cli_helpers import tool
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

FAST = {"group.initial.rebalance.delay.ms": 0}
# Records i = 0..9 of each partition of `orders` carry BASE + i minutes.
BASE = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
MINUTE, HOUR = 60_000, 3_600_000
HEADER = ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]


def groups(*args: str, port: int):
    return tool("kafka-consumer-groups", "--bootstrap-server", "localhost:9092", *args, port=port)


def table(stdout: str) -> list[list[str]]:
    """The reset table: the header line and the rows under it, split on whitespace."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("GROUP"))
    return [line.split() for line in lines[start:] if line.strip()]


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit as a consumer that read up to `offsets` does (a simple, assign()-mode commit)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    consumer.assign([TopicPartition(t, p) for t, p in offsets])
    consumer.commit(
        {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
    )
    consumer.close()


def fetched(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets, by OffsetFetch."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}


def described(port: int, group: str, topic: str = "orders") -> dict[str, str]:
    """PARTITION -> CURRENT-OFFSET of `topic` as --describe prints them."""
    out = groups("--describe", "--group", group, port=port).stdout
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("GROUP"))
    rows = [line.split() for line in lines[start + 1 :] if line.strip()]
    return {row[2]: row[3] for row in rows if row[1] == topic}


@pytest.fixture
def setup(make_broker):
    """`orders`: 3 partitions of 10 records each, record i at BASE + i minutes; `recent`: one
    partition, record i at now - (10 - i) hours. Group `audit` has committed the log end of
    both (it read everything), group `billing` that of `orders`."""
    b = make_broker(FAST)
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
    admin.create_topics([NewTopic("orders", 3, 1), NewTopic("recent", 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers)
    now = int(time.time() * 1000)
    for i in range(10):
        for p in range(3):
            producer.send("orders", value=b"o", partition=p, timestamp_ms=BASE + i * MINUTE)
        producer.send("recent", value=b"r", partition=0, timestamp_ms=now - (10 - i) * HOUR)
    producer.flush()
    producer.close()
    ends = {("orders", p): 10 for p in range(3)}
    commit(b.bootstrap_servers, "audit", {**ends, ("recent", 0): 10})
    commit(b.bootstrap_servers, "billing", ends)
    return b


def test_to_datetime(setup):
    b = setup
    # A dry run prints the plan and changes nothing; no zone means UTC, as in Kafka.
    r = groups("--reset-offsets", "--group", "audit", "--topic", "orders",
               "--to-datetime", "2024-01-01T00:05:00.000", "--dry-run", port=b.port)  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")
    assert table(r.stdout) == [HEADER] + [["audit", "orders", str(p), "5"] for p in range(3)]
    assert described(b.port, "audit") == {"0": "10", "1": "10", "2": "10"}

    # Zone offsets in Kafka's accepted forms; a time between two records picks the later one.
    r = groups("--reset-offsets", "--group", "audit", "--topic", "orders:0",
               "--to-datetime", "2024-01-01T01:03:30.000+01:00", "--execute", port=b.port)  # fmt: skip
    assert table(r.stdout)[1:] == [["audit", "orders", "0", "4"]]
    r = groups("--reset-offsets", "--group", "audit", "--topic", "orders:1",
               "--to-datetime", "2023-12-31T22:07:00.000-0200", "--execute", port=b.port)  # fmt: skip
    assert table(r.stdout)[1:] == [["audit", "orders", "1", "7"]]
    # Before the first record: offset 0. After the last: the log end, with Kafka's notice.
    r = groups("--reset-offsets", "--group", "audit", "--topic", "orders:2",
               "--to-datetime", "2023-06-01T00:00:00.000Z", "--execute", port=b.port)  # fmt: skip
    assert table(r.stdout)[1:] == [["audit", "orders", "2", "0"]]
    assert described(b.port, "audit") == {"0": "4", "1": "7", "2": "0"}
    assert fetched(b.bootstrap_servers, "audit") == {
        ("orders", 0): 4, ("orders", 1): 7, ("orders", 2): 0, ("recent", 0): 10,
    }  # fmt: skip

    r = groups("--reset-offsets", "--group", "audit", "--topic", "orders:2",
               "--to-datetime", "2030-01-01T00:00:00.000", "--execute", port=b.port)  # fmt: skip
    assert r.stdout.startswith(
        "\nWarn: Partition 2 from topic orders is empty. Falling back to latest known offset.\n"
    )
    assert table(r.stdout)[1:] == [["audit", "orders", "2", "10"]]
    assert fetched(b.bootstrap_servers, "audit")[("orders", 2)] == 10

    # Kafka's errors for datetimes it can't read; nothing changes.
    r = groups("--reset-offsets", "--group", "audit", "--topic", "orders",
               "--to-datetime", "2024-01-01", "--execute", port=b.port)  # fmt: skip
    assert r.returncode == 1
    assert r.stdout == (
        "\nError: Executing consumer group command failed due to java.text.ParseException: "
        "Error parsing timestamp. It does not contain a 'T' according to ISO8601 format\n"
    )
    r = groups("--reset-offsets", "--group", "audit", "--topic", "orders",
               "--to-datetime", "2024-01-01T00:05:00", "--execute", port=b.port)  # fmt: skip
    assert r.returncode == 1
    assert r.stdout == (
        "\nError: Executing consumer group command failed due to java.text.ParseException: "
        'Unparseable date: "2024-01-01T00:05:00Z"\n'
    )
    assert described(b.port, "audit") == {"0": "4", "1": "7", "2": "10"}


def test_by_duration(setup):
    b = setup
    # now - 5h30m lies between the records at now - 6h and now - 5h: offset 5.
    r = groups("--reset-offsets", "--group", "audit", "--topic", "recent",
               "--by-duration", "PT5H30M", "--dry-run", port=b.port)  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")
    assert table(r.stdout) == [HEADER, ["audit", "recent", "0", "5"]]
    assert fetched(b.bootstrap_servers, "audit")[("recent", 0)] == 10

    r = groups("--reset-offsets", "--group", "audit", "--topic", "recent",
               "--by-duration", "P1D", "--execute", port=b.port)  # fmt: skip
    assert table(r.stdout)[1:] == [["audit", "recent", "0", "0"]]
    assert fetched(b.bootstrap_servers, "audit")[("recent", 0)] == 0

    # Lower case as java.time.Duration accepts it; nothing as recent as 30 minutes: log end.
    r = groups("--reset-offsets", "--group", "audit", "--topic", "recent",
               "--by-duration", "pt30m", "--execute", port=b.port)  # fmt: skip
    assert "Warn: Partition 0 from topic recent is empty. Falling back to latest known " \
        "offset." in r.stdout  # fmt: skip
    assert table(r.stdout)[1:] == [["audit", "recent", "0", "10"]]
    assert described(b.port, "audit", "recent") == {"0": "10"}

    for bad in ("5h", "PT", "P1DT"):
        r = groups("--reset-offsets", "--group", "audit", "--topic", "recent",
                   "--by-duration", bad, "--execute", port=b.port)  # fmt: skip
        assert r.returncode == 1
        assert r.stdout == (
            "\nError: Executing consumer group command failed due to Text cannot be parsed to "
            "a Duration\n"
        )
    assert fetched(b.bootstrap_servers, "audit")[("recent", 0)] == 10


def test_export_round_trips_into_from_file(setup, tmp_path):
    b = setup
    # One group: topic,partition,offset lines, then the empty line of Kafka's println.
    r = groups("--reset-offsets", "--group", "audit", "--topic", "orders", "--to-datetime",
               "2024-01-01T00:06:00.000", "--dry-run", "--export", port=b.port)  # fmt: skip
    assert (r.returncode, r.stdout) == (0, "orders,0,6\norders,1,6\norders,2,6\n\n")
    plan = tmp_path / "audit.csv"
    plan.write_text(r.stdout)
    assert fetched(b.bootstrap_servers, "audit")[("orders", 0)] == 10

    # --from-file needs no scope; a dry run first, then --execute.
    r = groups("--reset-offsets", "--group", "audit", "--from-file", str(plan), "--dry-run",
               port=b.port)  # fmt: skip
    assert table(r.stdout) == [HEADER] + [["audit", "orders", str(p), "6"] for p in range(3)]
    assert fetched(b.bootstrap_servers, "audit")[("orders", 0)] == 10
    r = groups("--reset-offsets", "--group", "audit", "--from-file", str(plan), "--execute",
               port=b.port)  # fmt: skip
    assert table(r.stdout) == [HEADER] + [["audit", "orders", str(p), "6"] for p in range(3)]
    assert fetched(b.bootstrap_servers, "audit") == {
        ("orders", 0): 6, ("orders", 1): 6, ("orders", 2): 6, ("recent", 0): 10,
    }  # fmt: skip

    # Several groups: group,topic,partition,offset lines, read back for each group.
    r = groups("--reset-offsets", "--group", "audit", "--group", "billing", "--topic",
               "orders:0,1", "--shift-by", "-3", "--dry-run", "--export", port=b.port)  # fmt: skip
    assert r.stdout == (
        "audit,orders,0,3\naudit,orders,1,3\nbilling,orders,0,7\nbilling,orders,1,7\n\n"
    )
    both = tmp_path / "both.csv"
    both.write_text(r.stdout)
    r = groups("--reset-offsets", "--group", "audit", "--group", "billing", "--from-file",
               str(both), "--execute", port=b.port)  # fmt: skip
    assert sorted(table(r.stdout)[1:]) == [
        ["audit", "orders", "0", "3"], ["audit", "orders", "1", "3"],
        ["billing", "orders", "0", "7"], ["billing", "orders", "1", "7"],
    ]  # fmt: skip
    assert described(b.port, "audit") == {"0": "3", "1": "3", "2": "6"}
    assert described(b.port, "billing") == {"0": "7", "1": "7", "2": "10"}

    # One group from a several-group file takes its own lines; a group the file lacks gets
    # Kafka's error (and only the table's header).
    r = groups("--reset-offsets", "--group", "billing", "--from-file", str(both), "--dry-run",
               port=b.port)  # fmt: skip
    assert table(r.stdout)[1:] == [["billing", "orders", "0", "7"], ["billing", "orders", "1", "7"]]
    r = groups("--reset-offsets", "--group", "nobody", "--from-file", str(both), "--execute",
               port=b.port)  # fmt: skip
    assert r.stdout.startswith("\nError: No reset plan for group nobody found.\n")
    assert table(r.stdout) == [HEADER]
    assert fetched(b.bootstrap_servers, "nobody") == {}


def test_from_file_checks(setup, tmp_path):
    b = setup

    def reset(lines: str, *extra: str):
        path = tmp_path / "plan.csv"
        path.write_text(lines)
        return groups("--reset-offsets", "--group", "billing", "--from-file", str(path),
                      "--execute", *extra, port=b.port)  # fmt: skip

    # Offsets beyond the log are brought back within it, with Kafka's warning (as --to-offset).
    r = reset("orders,0,99\norders,1,4\n")
    assert table(r.stdout)[1:] == [
        ["billing", "orders", "0", "10"],
        ["billing", "orders", "1", "4"],
    ]
    assert "New offset (99) is higher than latest offset for topic partition orders-0" in r.stderr
    # A --topic scope is checked but the file decides (as in Kafka).
    r = reset("orders,2,1\n", "--topic", "orders:0")
    assert table(r.stdout)[1:] == [["billing", "orders", "2", "1"]]
    assert described(b.port, "billing") == {"0": "10", "1": "4", "2": "1"}

    r = reset("orders,7,1\n")
    assert r.returncode == 1
    assert r.stdout == (
        '\nError: Executing consumer group command failed due to The partitions "orders-7" do '
        "not exist\n"
    )
    r = reset("orders,zero,1\n")
    assert r.returncode == 1
    assert "Invalid line 1 in reset plan file" in r.stdout
    missing = tmp_path / "missing.csv"
    r = groups("--reset-offsets", "--group", "billing", "--from-file", str(missing),
               "--execute", port=b.port)  # fmt: skip
    assert r.stdout == (
        "\nError: Executing consumer group command failed due to "
        f"java.nio.file.NoSuchFileException: {missing}\n"
    )
    assert described(b.port, "billing") == {"0": "10", "1": "4", "2": "1"}


def test_reset_usage_errors():
    """Kafka's checks of the reset options, made before any connection."""

    def usage(*args: str) -> str:
        r = groups("--reset-offsets", "--group", "g", *args, port=1)
        assert (r.returncode, r.stdout) == (1, "")
        return r.stderr.strip()

    assert usage("--topic", "t", "--to-datetime", "2024-01-01T00:00:00.000", "--to-earliest") \
        == 'Option "[to-datetime]" can\'t be used with option "[to-earliest]"'  # fmt: skip
    assert usage("--topic", "t", "--by-duration", "P1D", "--from-file", "x.csv") \
        == 'Option "[by-duration]" can\'t be used with option "[from-file]"'  # fmt: skip
    assert usage("--from-file", "x.csv", "--to-offset", "3") \
        == 'Option "[to-offset]" can\'t be used with option "[from-file]"'  # fmt: skip
    assert usage("--topic", "t", "--to-latest", "--execute", "--dry-run") \
        == "Option [reset-offsets] only accepts one of [execute] and [dry-run]"  # fmt: skip
    assert usage("--to-datetime", "2024-01-01T00:00:00.000") \
        == "One of the reset scopes should be defined: --all-topics, --topic."  # fmt: skip
    assert usage("--by-duration", "P1D") \
        == "One of the reset scopes should be defined: --all-topics, --topic."  # fmt: skip
    assert usage("--topic", "t") == (
        "Option '[reset-offsets]' requires one of the following scenarios: [[to-offset], "
        "[shift-by], [to-datetime], [by-duration], [to-earliest], [to-latest], [to-current], "
        "[from-file]]"
    )

    r = tool("kafka-consumer-groups", "--help", port=1)
    for line in ("--to-datetime <String: datetime>", "--by-duration <String: duration>",
                 "--from-file <String: path to CSV file>"):  # fmt: skip
        assert line in r.stdout

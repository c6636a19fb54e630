"""kafka-consumer-groups, run as an installed console script against a real broker."""

from __future__ import annotations

import time

import pytest
from cli_helpers import tool
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

FAST = {"group.initial.rebalance.delay.ms": 0}
COLUMNS = ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
           "CONSUMER-ID", "HOST", "CLIENT-ID"]  # fmt: skip


def groups(*args: str, port: int):
    return tool("kafka-consumer-groups", "--bootstrap-server", "localhost:9092", *args, port=port)


def rows(stdout: str, header: str) -> list[list[str]]:
    """The table under the header line starting with `header`, split on whitespace."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    return [line.split() for line in lines[start:] if line.strip()]


@pytest.fixture
def setup(make_broker):
    """A 4-partition topic with 10 records per partition and an active group that has
    committed 10, 10, 10 and 0 (it read partitions 0-2)."""
    b = make_broker(FAST)
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
    admin.create_topics([NewTopic("orders", 4, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers)
    for i in range(40):
        producer.send("orders", value=b"x", partition=i % 4)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(
        "orders", bootstrap_servers=b.bootstrap_servers, group_id="billing", client_id="biller",
        auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=10,
    )  # fmt: skip
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 30 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=2000, max_records=30 - seen).values():
            seen += len(records)
    assert seen == 30
    consumer.commit()
    yield b, consumer
    consumer.close()


def test_describe_list_members_state(setup):
    b, consumer = setup
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
    [member_id] = [m["member_id"] for m in admin.describe_groups(["billing"])["billing"]["members"]]
    admin.close()
    r = groups("--describe", "--group", "billing", port=b.port)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("\nGROUP ")
    table = rows(r.stdout, "GROUP")
    assert table[0] == COLUMNS
    partitions = sorted(table[1:], key=lambda row: int(row[2]))
    assert [row[:3] for row in partitions] == [["billing", "orders", str(p)] for p in range(4)]
    assert sorted(row[3] for row in partitions) == ["0", "10", "10", "10"]  # CURRENT-OFFSET
    for row in partitions:
        assert row[4] == "10" and int(row[5]) == 10 - int(row[3])  # LOG-END-OFFSET, LAG
    assert {tuple(row[6:]) for row in partitions} == {(member_id, "/127.0.0.1", "biller")}
    # Kafka's column widths: the group column is at least 15 wide, PARTITION 10.
    header = r.stdout.splitlines()[1]
    assert header.index("TOPIC") == 16 and header.index("CURRENT-OFFSET") == 16 + 16 + 11

    r = groups("--list", port=b.port)
    assert (r.returncode, r.stdout) == (0, "billing\n")
    r = groups("--list", "--state", "stable", port=b.port)
    assert rows(r.stdout, "GROUP") == [["GROUP", "STATE"], ["billing", "Stable"]]

    r = groups("--describe", "--group", "billing", "--members", "--verbose", port=b.port)
    assert rows(r.stdout, "GROUP") == [
        ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"],
        ["billing", member_id, "/127.0.0.1", "biller", "4", "orders(0,1,2,3)"],
    ]
    r = groups("--describe", "--group", "billing", "--state", port=b.port)
    assert rows(r.stdout, "GROUP") == [
        ["GROUP", "COORDINATOR", "(ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"],
        ["billing", f"127.0.0.1:{b.port}", "(1)", "range", "Stable", "1"],
    ]

    # An active group's offsets can't be reset, nor can the group be deleted.
    r = groups("--reset-offsets", "--group", "billing", "--topic", "orders", "--to-earliest",
               "--execute", port=b.port)  # fmt: skip
    assert "Assignments can only be reset if the group 'billing' is inactive, but the current " \
        "state is Stable." in r.stdout  # fmt: skip
    r = groups("--delete", "--group", "billing", port=b.port)
    assert "* Group 'billing' could not be deleted due to: " \
        "org.apache.kafka.common.errors.GroupNotEmptyException" in r.stdout  # fmt: skip


def test_reset_offsets_and_delete(setup):
    b, consumer = setup
    consumer.close()
    r = groups("--describe", "--group", "billing", port=b.port)
    assert "Consumer group 'billing' has no active members." in r.stderr
    assert {tuple(row[6:]) for row in rows(r.stdout, "GROUP")[1:]} == {("-", "-", "-")}

    # Without --execute nothing changes (a dry run, with Kafka's warning).
    r = groups("--reset-offsets", "--group", "billing", "--topic", "orders", "--to-earliest",
               port=b.port)  # fmt: skip
    assert r.stderr.startswith(
        "WARN: No action will be performed as the --execute option is missing."
    )
    assert rows(r.stdout, "GROUP") == [["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]] + [
        ["billing", "orders", str(p), "0"] for p in range(4)
    ]

    def committed() -> dict[str, str]:
        out = groups("--describe", "--group", "billing", port=b.port).stdout
        return {row[2]: row[3] for row in rows(out, "GROUP")[1:]}

    assert sorted(committed().values()) == ["0", "10", "10", "10"]
    r = groups("--reset-offsets", "--group", "billing", "--topic", "orders:1,2", "--to-offset",
               "4", "--execute", port=b.port)  # fmt: skip
    assert rows(r.stdout, "GROUP")[1:] == [
        ["billing", "orders", "1", "4"],
        ["billing", "orders", "2", "4"],
    ]
    r = groups("--reset-offsets", "--group", "billing", "--topic", "orders:0", "--to-latest",
               "--execute", port=b.port)  # fmt: skip
    r = groups("--reset-offsets", "--group", "billing", "--topic", "orders:3", "--to-earliest",
               "--execute", port=b.port)  # fmt: skip
    assert committed() == {"0": "10", "1": "4", "2": "4", "3": "0"}

    r = groups("--delete", "--group", "billing", port=b.port)
    assert r.stdout == "Deletion of requested consumer groups ('billing') was successful.\n"
    r = groups("--describe", "--group", "billing", port=b.port)
    assert r.stdout == "\nError: Consumer group 'billing' does not exist.\n"
    assert groups("--list", port=b.port).stdout == ""


def test_usage_errors(make_broker):
    b = make_broker(FAST)
    r = groups("--describe", port=b.port)
    assert r.returncode == 1 and "[all-groups], [group]" in r.stderr
    r = groups("--list", "--describe", port=b.port)
    assert r.returncode == 1 and "exactly one action" in r.stderr
    r = groups("--reset-offsets", "--group", "g", "--to-earliest", port=b.port)
    assert r.returncode == 1 and "--all-topics, --topic" in r.stderr

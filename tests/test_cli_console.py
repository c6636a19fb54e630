"""kafka-console-producer -> kafka-console-consumer round trips, with keys, headers, offsets."""

from __future__ import annotations

from cli_helpers import tool
from kafka import KafkaConsumer, TopicPartition

BS = ("--bootstrap-server", "localhost:9092")


def produce(broker, topic, text, *props):
    args = ["--topic", topic, *BS]
    for p in props:
        args += ["--property", p]
    r = tool("kafka-console-producer", *args, port=broker.port, stdin=text)
    assert r.returncode == 0, r
    return r


def consume(broker, topic, *args):
    return tool("kafka-console-consumer", "--topic", topic, *BS, *args, port=broker.port)


def read_all(broker, topic, n):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=10000)  # fmt: skip
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    records = []
    for record in consumer:
        records.append(record)
        if len(records) == n:
            break
    consumer.close()
    return records


def test_round_trip_with_keys(broker):
    produce(broker, "users", "alice:signed up\nbob:logged in\nalice:a:b:c\n",
            "parse.key=true", "key.separator=:")  # fmt: skip
    records = read_all(broker, "users", 3)
    assert [(r.key, r.value) for r in records] == [
        (b"alice", b"signed up"), (b"bob", b"logged in"), (b"alice", b"a:b:c")
    ]  # fmt: skip
    r = consume(broker, "users", "--from-beginning", "--max-messages", "3",
                "--property", "print.key=true", "--property", "key.separator=|")  # fmt: skip
    assert r.returncode == 0, r
    assert r.stdout == "alice|signed up\nbob|logged in\nalice|a:b:c\n"
    assert r.stderr.strip() == "Processed a total of 3 messages"
    # Values only by default; the default key separator is a tab.
    r = consume(broker, "users", "--from-beginning", "--max-messages", "2")
    assert r.stdout == "signed up\nlogged in\n"
    r = consume(broker, "users", "--from-beginning", "--max-messages", "1",
                "--property", "print.key=true")  # fmt: skip
    assert r.stdout == "alice\tsigned up\n"


def test_headers_partition_offset_timestamp(broker):
    produce(broker, "h", "src:web,trace:7\tk1\tv1\nsrc:app\tk2\tv2\n",
            "parse.headers=true", "parse.key=true")  # fmt: skip
    records = read_all(broker, "h", 2)
    assert records[0].headers == [("src", b"web"), ("trace", b"7")]
    r = consume(broker, "h", "--partition", "0", "--offset", "1", "--max-messages", "1",
                *[x for p in ("print.key=true", "print.headers=true", "print.offset=true",
                              "print.partition=true", "print.timestamp=true")
                  for x in ("--property", p)])  # fmt: skip
    assert r.returncode == 0, r
    assert (
        r.stdout == f"CreateTime:{records[1].timestamp}\tPartition:0\tOffset:1\tsrc:app\tk2\tv2\n"
    )
    r = consume(broker, "h", "--partition", "0", "--offset", "earliest", "--max-messages", "2",
                "--property", "print.value=false", "--property", "print.offset=true")  # fmt: skip
    assert r.stdout == "Offset:0\nOffset:1\n"


def test_null_marker_and_timeout(broker):
    produce(broker, "n", "k1:\nk1:NULL\n", "parse.key=true", "key.separator=:", "null.marker=NULL")
    records = read_all(broker, "n", 2)
    assert [(r.key, r.value) for r in records] == [(b"k1", b""), (b"k1", None)]
    # Nothing new arrives after the end: --timeout-ms ends the consumer, which reports its count.
    r = consume(broker, "n", "--timeout-ms", "300")
    assert r.returncode == 0 and r.stdout == ""
    assert r.stderr.strip() == "Processed a total of 0 messages"
    r = consume(broker, "n", "--from-beginning", "--timeout-ms", "500",
                "--property", "print.key=true", "--property", "null.literal=<null>")  # fmt: skip
    assert r.stdout == "k1\t\nk1\t<null>\n"
    assert r.stderr.strip() == "Processed a total of 2 messages"


def test_producer_errors(broker):
    r = tool("kafka-console-producer", "--topic", "e", *BS, "--property", "parse.key=true",
             port=broker.port, stdin="good\tline\nno separator here\n")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip() == "No key separator found on line number 2: 'no separator here'"
    # The line before the bad one was sent.
    assert [x.value for x in read_all(broker, "e", 1)] == [b"line"]
    r = tool("kafka-console-producer", *BS, port=broker.port, stdin="")
    assert r.returncode == 1 and 'Missing required argument "[topic]"' in r.stderr
    r = tool("kafka-console-consumer", *BS, port=broker.port)
    assert r.returncode == 1 and "[topic], [include]" in r.stderr
    r = tool("kafka-console-consumer", "--topic", "e", "--offset", "3", *BS, port=broker.port)
    assert r.stderr.strip() == "The partition is required when offset is specified."
    for name in ("kafka-console-producer", "kafka-console-consumer"):
        r = tool(name, "--help", port=broker.port)
        assert r.returncode == 0 and "--bootstrap-server" in r.stdout


def test_consumer_group(broker):
    produce(broker, "g", "a\nb\nc\n")
    r = consume(broker, "g", "--group", "cg", "--from-beginning", "--max-messages", "2")
    assert r.stdout == "a\nb\n"
    # The group committed its position: the next run continues where the first stopped.
    r = consume(broker, "g", "--group", "cg", "--from-beginning", "--max-messages", "1")
    assert r.stdout == "c\n"


def test_include_pattern_reads_every_matching_partition(broker):
    tool(
        "kafka-topics", "--create", "--topic", "logs.a", "--partitions", "2", *BS, port=broker.port
    )
    produce(broker, "logs.a", "a1\na2\na3\n")
    produce(broker, "logs.b", "b1\n")
    produce(broker, "other", "o1\n")
    r = tool("kafka-console-consumer", "--include", "logs\\..*", "--from-beginning",
             "--timeout-ms", "500", *BS, port=broker.port)  # fmt: skip
    assert r.returncode == 0, r
    assert sorted(r.lines) == ["a1", "a2", "a3", "b1"]
    assert r.stderr.strip() == "Processed a total of 4 messages"

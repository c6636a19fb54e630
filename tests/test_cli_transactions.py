"""kafka-transactions (list, describe, describe-producers, find-hanging, abort) and the
DescribeProducers API behind it, against a hanging transaction made by hand."""

from __future__ import annotations

import time

import pytest
from cli_helpers import tool
from helpers import RawClient
from test_transactions_protocol import Txn, create, latest

from protocol.apis import ApiKey


@pytest.fixture
def b(make_broker):
    # Without verification a transactional batch can reach a partition its transaction never
    # added: the coordinator won't end it there -- a hanging transaction, as KIP-664 describes.
    return make_broker({"transaction.partition.verification.enable": "false"})


@pytest.fixture
def c(b):
    client = RawClient(b.port)
    yield client
    client.close()


def txns(b, *args):
    return tool("kafka-transactions", "--bootstrap-server", "localhost:9092", *args, port=b.port)


def table(lines: list[str]) -> list[list[str]]:
    """Kafka's ToolsUtils.prettyPrintTable: every cell padded to its column's widest, each
    followed by a tab. Checks the padding, returns the cells."""
    rows = [line.split("\t") for line in lines]
    for row in rows:
        assert row[-1] == ""  # a tab after the last cell too
    cells = [[cell.rstrip(" ") for cell in row[:-1]] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for row in rows:
        assert [len(cell) for cell in row[:-1]] == widths
    return cells


def hang(c) -> Txn:
    """A transaction open in t-0 that its coordinator doesn't know (never added there)."""
    create(c, "t", 2)
    good = Txn(c, "good")
    good.init()
    assert good.add(("t", 1)) == [0]
    assert good.produce("t", 1, [b"ok"]).error_code == 0
    bad = Txn(c, "bad")
    bad.init()
    assert bad.produce("t", 0, [b"a", b"b"]).error_code == 0
    return bad


def test_describe_producers_api(c):
    bad = hang(c)
    r = c.request(ApiKey.DESCRIBE_PRODUCERS, 0, {"topics": [
        {"name": "t", "partition_indexes": [0, 1, 7]}, {"name": "nope", "partition_indexes": [0]},
        {"name": "bad name!", "partition_indexes": [0]}]})  # fmt: skip
    t, nope, invalid = r.topics
    p0, p1, p7 = t.partitions
    assert p0.error_code == 0
    [a] = p0.active_producers
    assert (a.producer_id, a.producer_epoch, a.last_sequence, a.coordinator_epoch,
            a.current_txn_start_offset) == (bad.pid, 0, 1, -1, 0)  # fmt: skip
    assert abs(a.last_timestamp - time.time() * 1000) < 60_000
    [g] = p1.active_producers
    assert g.current_txn_start_offset == 0 and g.last_sequence == 0
    assert (p7.error_code, p7.error_message) == (3, None)  # UNKNOWN_TOPIC_OR_PARTITION
    assert [(p.error_code, p.error_message) for p in nope.partitions] == [
        (3, "This server does not host this topic-partition.")]  # fmt: skip
    assert invalid.partitions[0].error_code == 17  # INVALID_TOPIC_EXCEPTION


def test_list_describe_find_hanging_and_abort(b, c):
    bad = hang(c)
    r = txns(b, "list")
    assert r.returncode == 0
    assert sorted(table(r.lines)[1:]) == [
        ["bad", "1", str(bad.pid), "Empty"], ["good", "1", str(bad.pid - 1), "Ongoing"]]  # fmt: skip
    assert table(r.lines)[0] == ["TransactionalId", "Coordinator", "ProducerId", "TransactionState"]

    r = txns(b, "describe", "--transactional-id", "good")
    header, row = table(r.lines)
    assert header == ["CoordinatorId", "TransactionalId", "ProducerId", "ProducerEpoch",
                      "TransactionState", "TransactionTimeoutMs", "CurrentTransactionStartTimeMs",
                      "TransactionDurationMs", "TopicPartitions"]  # fmt: skip
    assert row[:6] + row[8:] == ["1", "good", str(bad.pid - 1), "0", "Ongoing", "60000", "t-1"]
    r = txns(b, "describe", "--transactional-id", "nope")
    assert (r.returncode, r.stderr) == (1, (
        "Failed to describe transaction state of transactional-id `nope`: The transactionalId "
        "could not be found.. Enable debug logging for additional detail.\n"))  # fmt: skip

    r = txns(b, "describe-producers", "--topic", "t", "--partition", "0")
    header, row = table(r.lines)
    assert header == ["ProducerId", "ProducerEpoch", "LatestCoordinatorEpoch", "LastSequence",
                      "LastTimestamp", "CurrentTransactionStartOffset"]  # fmt: skip
    assert row[:4] + row[5:] == [str(bad.pid), "0", "-1", "1", "0"]

    r = txns(b, "find-hanging", "--topic", "t", "--max-transaction-timeout", "0")
    header, *rows = table(r.lines)
    assert header == ["Topic", "Partition", "ProducerId", "ProducerEpoch", "CoordinatorEpoch",
                      "StartOffset", "LastTimestamp", "Duration(min)"]  # fmt: skip
    # good's open transaction includes t-1: its coordinator will end it, so it isn't hanging.
    assert [row[:6] + row[7:] for row in rows] == [["t", "0", str(bad.pid), "0", "-1", "0", "0"]]
    r = txns(b, "find-hanging")
    assert (r.returncode, r.stderr) == (1, "The `find-hanging` command requires either --topic "
                                           "or --broker-id to limit the scope of the search\n")  # fmt: skip

    r = txns(b, "abort", "--topic", "t", "--partition", "0", "--start-offset", "5")
    assert (r.returncode, r.stderr) == (
        1,
        "Could not find any open transactions starting at offset 5 on partition t-0\n",
    )
    assert latest(c, "t", 0) == 0  # the hanging transaction holds the LSO back
    r = txns(b, "abort", "--topic", "t", "--partition", "0", "--start-offset", "0")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert latest(c, "t", 0) == 3  # two records and the abort marker
    r = txns(b, "find-hanging", "--broker-id", "1", "--max-transaction-timeout", "0")
    assert len(table(r.lines)) == 1  # the header alone
    r = txns(b, "describe-producers", "--topic", "t", "--partition", "0")
    assert table(r.lines)[1][5] == "None"

"""Transactions v2 (KIP-890 part 2) on the wire, spoken as Kafka 4.x's Java producer does once
the broker finalizes transaction.version 2: no AddPartitionsToTxn (Produce v12 adds the
partition), no AddOffsetsToTxn (TxnOffsetCommit v5 adds the group's partition), EndTxn v5 bumps
the epoch on every commit and abort and answers the new one. Raw frames, so every epoch and
error code is checked as Kafka defines it. (No Python client speaks v2 yet: librdkafka 2.16.1
sends EndTxn v1 and AddPartitionsToTxn v0 even to a broker that offers v5.)"""

from __future__ import annotations

import pytest
from helpers import RawClient
from storage_helpers import wait_for
from test_transactions import read_all
from test_transactions_protocol import FAST, Txn, create, describe, fetch, values_of
from wire import values_batch

from protocol.apis import ApiKey
from protocol.errors import ErrorCode

# Kafka's error codes, written down.
INVALID_TXN_STATE = 48
TRANSACTION_ABORTABLE = 120


@pytest.fixture
def b(make_broker):
    return make_broker(FAST)


@pytest.fixture
def c(b):
    client = RawClient(b.port)
    yield client
    client.close()


class TxnV2(Txn):
    """A transactions-v2 producer: InitProducerId v5, Produce v12, EndTxn v5."""

    def init(self, version: int = 5, pid: int = -1, epoch: int = -1):
        return super().init(version, pid, epoch)

    def produce(self, topic: str, partition: int, values: list[bytes], epoch: int | None = None,
                txn_id: str | None = "same", version: int = 12):  # fmt: skip
        return super().produce(topic, partition, values, epoch, txn_id, version)

    def produce_by_id(self, tid, partition: int, values: list[bytes]):
        """Produce v13 (topic ids), as a Kafka 4.1 producer of transactions v2 sends it."""
        seq = self.seq.get((tid, partition), 0)
        batch = values_batch(values, producer_id=self.pid, producer_epoch=self.epoch,
                             base_sequence=seq, transactional=True)  # fmt: skip
        body = {"transactional_id": self.txn_id, "acks": -1, "timeout_ms": 10000,
                "topic_data": [{"topic_id": tid, "partition_data": [
                    {"index": partition, "records": bytes(batch)}]}]}  # fmt: skip
        r = self.c.request(ApiKey.PRODUCE, 13, body).responses[0].partition_responses[0]
        if r.error_code == 0:
            self.seq[(tid, partition)] = seq + len(values)
        return r

    def end_v5(self, commit: bool, epoch: int | None = None):
        """EndTxn v5; on success the producer goes on with the answered id and epoch, its
        sequences starting again at 0 (as the Java producer's resetSequenceNumbers)."""
        r = self.c.request(ApiKey.END_TXN, 5, {
            "transactional_id": self.txn_id, "producer_id": self.pid,
            "producer_epoch": self.epoch if epoch is None else epoch, "committed": commit,
        })  # fmt: skip
        if r.error_code == 0 and epoch is None:
            self.pid, self.epoch = r.producer_id, r.producer_epoch
            self.seq.clear()
        return r

    def commit_offsets(self, group: str, topic: str, offset: int, version: int = 5) -> int:
        r = self.c.request(ApiKey.TXN_OFFSET_COMMIT, version, {
            "transactional_id": self.txn_id, "group_id": group, "producer_id": self.pid,
            "producer_epoch": self.epoch, "generation_id": -1, "member_id": "",
            "group_instance_id": None,
            "topics": [{"name": topic, "partitions": [{
                "partition_index": 0, "committed_offset": offset, "committed_leader_epoch": -1,
                "committed_metadata": ""}]}],
        })  # fmt: skip
        return r.topics[0].partitions[0].error_code


def test_unadded_partition_is_transaction_abortable_from_produce_v11(c):
    """Kafka 4's verification answers a partition missing from the transaction with
    TRANSACTION_ABORTABLE to clients that know it (Produce v11+), INVALID_TXN_STATE below."""
    create(c, "t7")
    tx = TxnV2(c, "v2-verify")
    tx.init(version=4)
    assert tx.add(("t7", 0)) == [0]
    assert tx.produce("t7", 1, [b"x"], version=11).error_code == TRANSACTION_ABORTABLE
    assert tx.produce("t7", 1, [b"x"], version=10).error_code == INVALID_TXN_STATE
    assert tx.produce("t7", 0, [b"ok"], version=11).error_code == 0


def completed(c, txn_id: str, state: str) -> None:
    wait_for(lambda: describe(c, txn_id).transaction_state == state, what=state)


def test_every_commit_and_abort_bumps_the_epoch(b, c):
    create(c, "t2")
    tx = TxnV2(c, "v2-life")
    r = tx.init()
    assert (r.error_code, r.producer_epoch) == (0, 0)
    pid = tx.pid
    # Produce v12 adds the partitions: no AddPartitionsToTxn.
    assert tx.produce("t2", 0, [b"c0", b"c1"]).error_code == 0
    assert tx.produce("t2", 1, [b"c2"]).error_code == 0
    d = describe(c, "v2-life")
    assert d.transaction_state == "Ongoing"
    assert [(t.topic, sorted(t.partitions)) for t in d.topics] == [("t2", [0, 1])]
    r = tx.end_v5(commit=True)
    # KIP-890: the epoch goes up by one on each EndTxn, same producer id.
    assert (r.error_code, r.producer_id, r.producer_epoch) == (0, pid, 1)
    # The next transaction, at the new epoch, its sequences from 0 again.
    assert tx.produce("t2", 0, [b"a0"]).error_code == 0
    r = tx.end_v5(commit=False)
    assert (r.error_code, r.producer_id, r.producer_epoch) == (0, pid, 2)
    completed(c, "v2-life", "CompleteAbort")
    assert tx.produce("t2", 1, [b"c3"]).error_code == 0
    assert tx.end_v5(commit=True).producer_epoch == 3
    completed(c, "v2-life", "CompleteCommit")
    # The markers carry the bumped epochs; read_committed sees exactly the committed records
    # (partition 0: c0 c1, COMMIT, a0, ABORT; partition 1: c2, COMMIT, c3, COMMIT -- only
    # partitions written to join a v2 transaction, so the abort left partition 1 alone).
    p0 = fetch(c, "t2", 0)
    assert (p0.high_watermark, p0.last_stable_offset) == (5, 5)
    assert [(a.producer_id, a.first_offset) for a in p0.aborted_transactions] == [(pid, 3)]
    p1 = fetch(c, "t2", 1)
    assert (p1.high_watermark, p1.last_stable_offset) == (4, 4)
    committed = read_all(b.bootstrap_servers, "t2", 4, committed=True)
    assert sorted(committed) == [b"c0", b"c1", b"c2", b"c3"]


def test_produce_v13_by_topic_id_adds_the_partition(c):
    from test_topic_ids import topic_id

    create(c, "t9")
    tid = topic_id(c, "t9")
    tx = TxnV2(c, "v2-ids")
    tx.init()
    assert tx.produce_by_id(tid, 1, [b"by-id"]).error_code == 0
    d = describe(c, "v2-ids")
    assert [(t.topic, sorted(t.partitions)) for t in d.topics] == [("t9", [1])]
    assert tx.end_v5(commit=True).error_code == 0
    completed(c, "v2-ids", "CompleteCommit")
    assert values_of(fetch(c, "t9", 1).records) == [b"by-id"]


def test_end_txn_retries_and_empty_aborts(c):
    create(c, "t3")
    tx = TxnV2(c, "v2-retry")
    tx.init()
    # Nothing to commit in Empty; an abort needs no partitions with v2 and still bumps.
    assert tx.end_v5(commit=True).error_code == ErrorCode.INVALID_TXN_STATE
    r = tx.end_v5(commit=False)
    assert (r.error_code, r.producer_epoch) == (0, 1)
    completed(c, "v2-retry", "CompleteAbort")
    assert tx.produce("t3", 0, [b"x"]).error_code == 0
    old = tx.epoch
    r = tx.end_v5(commit=True)
    assert (r.error_code, r.producer_epoch) == (0, old + 1)
    completed(c, "v2-retry", "CompleteCommit")
    # The same EndTxn again (its answer was lost): the epoch it sent + 1 is the coordinator's,
    # so it is a retry, answered with the same id and epoch and no further bump.
    r = tx.end_v5(commit=True, epoch=old)
    assert (r.error_code, r.producer_id, r.producer_epoch) == (0, tx.pid, old + 1)
    assert tx.end_v5(commit=False, epoch=old).error_code == ErrorCode.INVALID_TXN_STATE
    # Two epochs behind: fenced (v5 knows PRODUCER_FENCED).
    assert tx.end_v5(commit=True, epoch=old - 1).error_code == ErrorCode.PRODUCER_FENCED
    assert describe(c, "v2-retry").producer_epoch == old + 1


def test_zombie_of_the_previous_transaction_is_fenced(c):
    create(c, "t4")
    tx = TxnV2(c, "v2-zombie")
    tx.init()
    assert tx.produce("t4", 0, [b"kept"]).error_code == 0
    zombie_epoch = tx.epoch
    assert tx.end_v5(commit=True).error_code == 0
    completed(c, "v2-zombie", "CompleteCommit")
    # A batch of the finished transaction arriving late, or a retry of it: the COMMIT marker
    # carried the bumped epoch, so the old one is stale (Kafka's defence against duplicates
    # landing in the next transaction).
    late = tx.produce("t4", 0, [b"late"], epoch=zombie_epoch)
    assert late.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    # Old clients' verification refuses it too.
    assert tx.produce("t4", 0, [b"late"], epoch=zombie_epoch, version=11).error_code == (
        ErrorCode.INVALID_PRODUCER_EPOCH
    )
    # Another instance fences the producer; everything it sends afterwards is refused.
    other = TxnV2(c, "v2-zombie")
    r = other.init()
    assert (r.error_code, r.producer_epoch) == (0, tx.epoch + 1)
    assert tx.produce("t4", 1, [b"z"]).error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    assert tx.end_v5(commit=False).error_code == ErrorCode.PRODUCER_FENCED
    assert other.produce("t4", 1, [b"fresh"]).error_code == 0
    assert other.end_v5(commit=True).error_code == 0
    completed(c, "v2-zombie", "CompleteCommit")
    assert values_of(fetch(c, "t4", 0).records) == [b"kept"]
    assert values_of(fetch(c, "t4", 1).records) == [b"fresh"]


def test_ongoing_v2_transaction_fenced_by_new_instance_bumps_twice(c):
    create(c, "t5")
    tx = TxnV2(c, "v2-fence")
    tx.init()
    assert tx.produce("t5", 0, [b"open"]).error_code == 0
    other = TxnV2(c, "v2-fence")
    # The open transaction is aborted first: its epoch fenced (+1), and the v2 abort bumps
    # it once more (+1), as Kafka's coordinator does; the retry of InitProducerId adds one.
    assert other.init().error_code == ErrorCode.CONCURRENT_TRANSACTIONS
    r = wait_for(lambda: (r := other.init()).error_code == 0 and r, what="init after abort")
    assert (r.producer_id, r.producer_epoch) == (tx.pid, tx.epoch + 3)
    assert tx.end_v5(commit=True).error_code == ErrorCode.PRODUCER_FENCED
    p = fetch(c, "t5", 0)
    assert [(a.producer_id, a.first_offset) for a in p.aborted_transactions] == [(tx.pid, 0)]


def test_txn_offset_commit_v5_adds_the_group_partition(c):
    create(c, "in2")
    tx = TxnV2(c, "v2-offsets")
    tx.init()

    def fetched(group: str) -> tuple[int, int]:
        r = c.request(ApiKey.OFFSET_FETCH, 7, {
            "group_id": group, "topics": [{"name": "in2", "partition_indexes": [0]}],
            "require_stable": True,
        })  # fmt: skip
        p = r.topics[0].partitions[0]
        return p.error_code, p.committed_offset

    # Below v5 without AddOffsetsToTxn the group's partition is not in the transaction:
    # TRANSACTION_ABORTABLE from v4 (KIP-890), INVALID_TXN_STATE before.
    assert tx.commit_offsets("g2", "in2", 5, version=4) == TRANSACTION_ABORTABLE
    assert tx.commit_offsets("g2", "in2", 5, version=3) == INVALID_TXN_STATE
    # v5: added for the producer (no AddOffsetsToTxn), pending until the commit.
    assert tx.commit_offsets("g2", "in2", 5) == 0
    assert fetched("g2") == (ErrorCode.UNSTABLE_OFFSET_COMMIT, -1)
    assert tx.end_v5(commit=True).error_code == 0
    wait_for(lambda: fetched("g2") == (0, 5), what="the committed offset")
    completed(c, "v2-offsets", "CompleteCommit")
    assert tx.commit_offsets("g2", "in2", 9) == 0
    assert tx.end_v5(commit=False).error_code == 0
    completed(c, "v2-offsets", "CompleteAbort")
    assert fetched("g2") == (0, 5)


def test_v2_state_survives_a_restart(make_broker, tmp_path):
    data = str(tmp_path / "kept")
    b = make_broker(FAST, data_dir=data)
    c = RawClient(b.port)
    try:
        create(c, "t6")
        tx = TxnV2(c, "v2-restart")
        tx.init()
        assert tx.produce("t6", 0, [b"open"]).error_code == 0
    finally:
        c.close()
    b.stop()
    b = make_broker(FAST, data_dir=data)
    c = RawClient(b.port)
    try:
        # The state log (value version 1) kept the client's transaction version 2, so fencing
        # the reloaded open transaction bumps twice, as before the restart.
        other = TxnV2(c, "v2-restart")
        r = wait_for(lambda: (r := other.init()).error_code == 0 and r, what="init after abort")
        assert (r.producer_id, r.producer_epoch) == (tx.pid, tx.epoch + 3)
    finally:
        c.close()


def test_state_log_value_v1_bytes():
    """A v2 transaction's state is written as Kafka's TransactionLogValue version 1 (flexible;
    PreviousProducerId, NextProducerId, ClientTransactionVersion are tagged fields 0-2, left
    out at their defaults), byte for byte as the schema lays it out, and read back."""
    from pykbroker.coordinator.txn_log import TxnRecord, TxnState, parse_value, value_bytes

    rec = TxnRecord(7, 3, 60000, TxnState.ONGOING, frozenset({("t", 0)}), 5, 4, client_tv=2)
    expected = (
        bytes.fromhex("0001")  # version 1
        + (7).to_bytes(8, "big") + (3).to_bytes(2, "big") + (60000).to_bytes(4, "big")
        + bytes([1])  # Ongoing
        + bytes([2, 2]) + b"t" + bytes([2]) + (0).to_bytes(4, "big") + bytes([0])
        + (5).to_bytes(8, "big") + (4).to_bytes(8, "big")
        + bytes([1, 2, 2]) + (2).to_bytes(2, "big")  # one tagged field: tag 2, 2 bytes
    )  # fmt: skip
    assert value_bytes(rec) == expected
    assert parse_value(expected) == rec
    # Clients of version 0/1 keep version 0, which every Kafka reads.
    v0 = TxnRecord(7, 3, 60000, TxnState.EMPTY, frozenset(), 5, -1)
    assert value_bytes(v0)[:2] == bytes.fromhex("0000")
    assert parse_value(value_bytes(v0)) == v0


def test_epoch_overflow_moves_to_a_new_producer_id(b, c):
    """EndTxn v5 at the last usable epoch (32766): the markers take 32767 and the producer
    goes on with a new producer id at epoch 0, which the answer carries; the same EndTxn
    retried with the old id and epoch is recognised (Kafka's retryOnOverflow)."""
    create(c, "t8")
    tx = TxnV2(c, "v2-overflow")
    tx.init()
    old_pid = tx.pid

    def exhaust():  # 32,766 bumps would take minutes: start the id at its last usable epoch
        md = b.broker.transaction_coordinator.txns["v2-overflow"]
        md.producer_epoch = md.last_producer_epoch = 32766

    b.call(exhaust)
    tx.epoch = 32766
    assert tx.produce("t8", 0, [b"last"]).error_code == 0
    r = tx.end_v5(commit=True)
    assert r.error_code == 0 and r.producer_id != old_pid and r.producer_epoch == 0
    completed(c, "v2-overflow", "CompleteCommit")
    d = describe(c, "v2-overflow")
    assert (d.producer_id, d.producer_epoch) == (tx.pid, 0)
    retry = c.request(ApiKey.END_TXN, 5, {"transactional_id": "v2-overflow",
                                          "producer_id": old_pid, "producer_epoch": 32766,
                                          "committed": True})  # fmt: skip
    assert (retry.error_code, retry.producer_id, retry.producer_epoch) == (0, tx.pid, 0)
    assert tx.produce("t8", 0, [b"next"]).error_code == 0
    assert tx.end_v5(commit=True).producer_epoch == 1
    completed(c, "v2-overflow", "CompleteCommit")
    assert values_of(fetch(c, "t8", 0).records) == [b"last", b"next"]

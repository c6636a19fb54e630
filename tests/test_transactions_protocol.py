"""Transactions on the wire: the coordinator's state machine and error codes, transactional
produce verification, markers, the LSO and aborted transactions of read_committed fetches,
transactional offset commits, timeouts and expiry. Raw requests, so every error code is seen
exactly as a client sees it."""

from __future__ import annotations

import pytest
from helpers import RawClient
from storage_helpers import broker_log, wait_for
from wire import fetch_body, partition_response, produce_body, values_batch

from protocol.apis import ApiKey
from protocol.errors import ErrorCode

FAST = {
    "transaction.state.log.num.partitions": "3",
    "offsets.topic.num.partitions": "3",
    "num.partitions": "2",
}


@pytest.fixture
def b(make_broker):
    return make_broker(FAST)


@pytest.fixture
def c(b):
    client = RawClient(b.port)
    yield client
    client.close()


class Txn:
    """A transactional producer spoken by hand: ids, epochs and sequences are ours to choose."""

    def __init__(self, client: RawClient, txn_id: str, timeout_ms: int = 60000):
        self.c = client
        self.txn_id = txn_id
        self.timeout_ms = timeout_ms
        self.pid = self.epoch = -1
        self.seq: dict[tuple[str, int], int] = {}

    def init(self, version: int = 4, pid: int = -1, epoch: int = -1):
        r = self.c.request(ApiKey.INIT_PRODUCER_ID, version, {
            "transactional_id": self.txn_id, "transaction_timeout_ms": self.timeout_ms,
            "producer_id": pid, "producer_epoch": epoch,
        })  # fmt: skip
        if r.error_code == 0:
            self.pid, self.epoch = r.producer_id, r.producer_epoch
            self.seq.clear()
        return r

    def add(self, *tps: tuple[str, int], version: int = 3, epoch: int | None = None) -> list[int]:
        by_topic: dict[str, list[int]] = {}
        for t, p in tps:
            by_topic.setdefault(t, []).append(p)
        r = self.c.request(ApiKey.ADD_PARTITIONS_TO_TXN, version, {
            "v3_and_below_transactional_id": self.txn_id, "v3_and_below_producer_id": self.pid,
            "v3_and_below_producer_epoch": self.epoch if epoch is None else epoch,
            "v3_and_below_topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
        })  # fmt: skip
        return [p.partition_error_code for t in r.results_by_topic_v3_and_below
                for p in t.results_by_partition]  # fmt: skip

    def produce(self, topic: str, partition: int, values: list[bytes], epoch: int | None = None,
                txn_id: str | None = "same", version: int = 9):  # fmt: skip
        seq = self.seq.get((topic, partition), 0)
        batch = values_batch(values, producer_id=self.pid,
                             producer_epoch=self.epoch if epoch is None else epoch,
                             base_sequence=seq, transactional=True)  # fmt: skip
        body = produce_body(topic, batch, partition,
                            transactional_id=self.txn_id if txn_id == "same" else txn_id)  # fmt: skip
        r = partition_response(self.c.request(ApiKey.PRODUCE, version, body))
        if r.error_code == 0:
            self.seq[(topic, partition)] = seq + len(values)
        return r

    def end(self, commit: bool, version: int = 3, epoch: int | None = None) -> int:
        return self.c.request(ApiKey.END_TXN, version, {
            "transactional_id": self.txn_id, "producer_id": self.pid,
            "producer_epoch": self.epoch if epoch is None else epoch, "committed": commit,
        }).error_code  # fmt: skip


def describe(c: RawClient, txn_id: str):
    r = c.request(ApiKey.DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": [txn_id]})
    return r.transaction_states[0]


def fetch(c: RawClient, topic: str, partition: int = 0, offset: int = 0, committed: bool = True):
    body = fetch_body([(topic, partition, offset)])
    body["isolation_level"] = 1 if committed else 0
    r = c.request(ApiKey.FETCH, 11, body)
    return r.responses[0].partitions[0]


def values_of(records) -> list[bytes]:
    from protocol import records as rb

    out = []
    for pos, header in rb.scan_batches(records or b""):
        if not header.is_control:
            out.extend(r.value for r in rb.decode_records(records, pos))
    return out


def latest(c: RawClient, topic: str, partition: int = 0, committed: bool = True) -> int:
    r = c.request(ApiKey.LIST_OFFSETS, 5, {
        "replica_id": -1, "isolation_level": 1 if committed else 0,
        "topics": [{"name": topic, "partitions": [{
            "partition_index": partition, "current_leader_epoch": -1, "timestamp": -1}]}],
    })  # fmt: skip
    return r.topics[0].partitions[0].offset


def create(c: RawClient, topic: str, partitions: int = 2) -> None:
    r = c.request(ApiKey.CREATE_TOPICS, 5, {
        "topics": [{"name": topic, "num_partitions": partitions, "replication_factor": 1,
                    "assignments": [], "configs": []}],
        "timeout_ms": 10000, "validate_only": False,
    })  # fmt: skip
    assert r.topics[0].error_code == 0


# --- the transaction's life ------------------------------------------------------------------


def test_abort_then_commit_lso_and_aborted_transactions(c):
    create(c, "t")
    tx = Txn(c, "life")
    r = tx.init()
    assert (r.error_code, r.producer_epoch) == (0, 0)
    assert describe(c, "life").transaction_state == "Empty"
    assert tx.add(("t", 0), ("t", 1)) == [0, 0]
    d = describe(c, "life")
    assert d.transaction_state == "Ongoing"
    assert [(t.topic, sorted(t.partitions)) for t in d.topics] == [("t", [0, 1])]
    assert tx.produce("t", 0, [b"a0", b"a1"]).error_code == 0
    # An open transaction: read_committed stops at its first offset (the LSO).
    p = fetch(c, "t")
    assert (p.high_watermark, p.last_stable_offset, values_of(p.records)) == (2, 0, [])
    assert values_of(fetch(c, "t", committed=False).records) == [b"a0", b"a1"]
    assert (latest(c, "t"), latest(c, "t", committed=False)) == (0, 2)
    assert tx.end(commit=False) == 0
    wait_for(lambda: describe(c, "life").transaction_state == "CompleteAbort", what="abort")
    # The ABORT marker (offset 2) ends it: the records are returned with the aborted
    # transaction, for the client to drop them.
    p = fetch(c, "t")
    assert p.last_stable_offset == 3 and values_of(p.records) == [b"a0", b"a1"]
    assert [(a.producer_id, a.first_offset) for a in p.aborted_transactions] == [(tx.pid, 0)]
    # Partition 1 was added but never written: it gets a marker too, and an empty abort.
    p1 = fetch(c, "t", 1)
    assert (p1.high_watermark, p1.last_stable_offset) == (1, 1)
    # A committed transaction: visible, no aborted transaction overlapping it.
    assert tx.add(("t", 0)) == [0]
    assert tx.produce("t", 0, [b"c0"]).error_code == 0
    assert tx.end(commit=True) == 0
    wait_for(lambda: describe(c, "life").transaction_state == "CompleteCommit", what="commit")
    p = fetch(c, "t", offset=3)
    assert values_of(p.records) == [b"c0"] and not p.aborted_transactions
    assert latest(c, "t") == 5
    # Retrying the EndTxn that completed is fine; the opposite outcome is not.
    assert tx.end(commit=True) == 0
    assert tx.end(commit=False) == ErrorCode.INVALID_TXN_STATE


def test_transactional_produce_is_verified(c):
    create(c, "v")
    tx = Txn(c, "verify")
    tx.init()
    tx.add(("v", 0))
    # Not added to the transaction: refused, as Kafka's partition verification does.
    assert tx.produce("v", 1, [b"x"]).error_code == ErrorCode.INVALID_TXN_STATE
    # Transactional records need a transactional id.
    assert tx.produce("v", 0, [b"x"], txn_id=None).error_code == (
        ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    )
    assert tx.produce("v", 0, [b"ok"]).error_code == 0
    # A non-transactional write by a producer with a transaction open here.
    batch = values_batch([b"plain"], producer_id=tx.pid, producer_epoch=tx.epoch, base_sequence=1)
    r = partition_response(c.request(ApiKey.PRODUCE, 9, produce_body("v", batch, 0)))
    assert r.error_code == ErrorCode.INVALID_TXN_STATE
    # Clients may not write control batches themselves.
    marker = values_batch([b"m"], producer_id=tx.pid, producer_epoch=tx.epoch, control=True,
                          transactional=True)  # fmt: skip
    r = partition_response(
        c.request(ApiKey.PRODUCE, 9, produce_body("v", marker, 0, transactional_id="verify"))
    )
    assert r.error_code == ErrorCode.INVALID_RECORD
    assert tx.end(commit=True) == 0


def test_coordinator_errors(c):
    create(c, "e")
    tx = Txn(c, "errors")
    r = tx.init(pid=-1)
    assert r.error_code == 0
    too_long = Txn(c, "too-long", timeout_ms=900001)
    assert too_long.init().error_code == ErrorCode.INVALID_TRANSACTION_TIMEOUT
    assert tx.end(commit=True) == ErrorCode.INVALID_TXN_STATE  # Empty: nothing to end
    assert tx.add(("e", 0), ("nope", 0)) == [
        ErrorCode.OPERATION_NOT_ATTEMPTED, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ]  # fmt: skip
    other = Txn(c, "unknown-id")
    other.pid, other.epoch = tx.pid, tx.epoch
    assert other.add(("e", 0)) == [ErrorCode.INVALID_PRODUCER_ID_MAPPING]
    assert other.end(commit=False) == ErrorCode.INVALID_PRODUCER_ID_MAPPING
    # A wrong epoch: PRODUCER_FENCED from v2, INVALID_PRODUCER_EPOCH for older versions.
    assert tx.add(("e", 0), epoch=tx.epoch + 5) == [ErrorCode.PRODUCER_FENCED]
    assert tx.add(("e", 0), version=1, epoch=tx.epoch + 5) == [ErrorCode.INVALID_PRODUCER_EPOCH]
    assert tx.end(True, version=1, epoch=tx.epoch + 5) == ErrorCode.INVALID_PRODUCER_EPOCH
    r = c.request(ApiKey.ADD_OFFSETS_TO_TXN, 3, {
        "transactional_id": "errors", "producer_id": tx.pid, "producer_epoch": tx.epoch,
        "group_id": "",
    })  # fmt: skip
    assert r.error_code == ErrorCode.INVALID_GROUP_ID
    r = c.request(ApiKey.DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": ["never-seen", ""]})
    assert [s.error_code for s in r.transaction_states] == [
        ErrorCode.TRANSACTIONAL_ID_NOT_FOUND, ErrorCode.INVALID_REQUEST,
    ]  # fmt: skip


def test_new_instance_fences_and_aborts_the_open_transaction(c):
    create(c, "f")
    old = Txn(c, "fence")
    old.init()
    old.add(("f", 0))
    assert old.produce("f", 0, [b"zombie"]).error_code == 0
    new = Txn(c, "fence")
    # The open transaction is aborted first (with a bumped epoch); the caller retries.
    assert new.init().error_code == ErrorCode.CONCURRENT_TRANSACTIONS
    r = wait_for(lambda: (r := new.init()).error_code == 0 and r, what="init after abort")
    assert (r.producer_id, r.producer_epoch) == (old.pid, old.epoch + 2)
    p = fetch(c, "f")
    assert [(a.producer_id, a.first_offset) for a in p.aborted_transactions] == [(old.pid, 0)]
    # The zombie is fenced everywhere.
    assert old.produce("f", 0, [b"late"]).error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    assert old.add(("f", 1)) == [ErrorCode.PRODUCER_FENCED]
    assert old.end(commit=True) == ErrorCode.PRODUCER_FENCED
    assert new.add(("f", 0)) == [0]
    assert new.produce("f", 0, [b"fresh"]).error_code == 0
    assert new.end(commit=True) == 0
    wait_for(lambda: latest(c, "f") == 4, what="the LSO past the commit marker")
    assert values_of(fetch(c, "f").records) == [b"zombie", b"fresh"]


def test_kip360_epoch_bump_by_a_known_producer(c):
    tx = Txn(c, "bump")
    tx.init()
    pid, epoch = tx.pid, tx.epoch
    r = tx.init(version=4, pid=pid, epoch=epoch)
    assert (r.error_code, r.producer_id, r.producer_epoch) == (0, pid, epoch + 1)
    # The same call again (its answer was lost): the same epoch, no second bump.
    r = Txn(c, "bump").init(version=4, pid=pid, epoch=epoch)
    assert (r.error_code, r.producer_epoch) == (0, epoch + 1)
    # An epoch that is neither current nor the previous one is a fenced producer.
    assert Txn(c, "bump").init(version=4, pid=pid, epoch=epoch + 7).error_code == (
        ErrorCode.PRODUCER_FENCED
    )
    assert Txn(c, "bump").init(version=3, pid=pid, epoch=epoch + 7).error_code == (
        ErrorCode.INVALID_PRODUCER_EPOCH
    )
    assert Txn(c, "bump").init(version=4, pid=pid + 100, epoch=0).error_code == (
        ErrorCode.PRODUCER_FENCED
    )


def test_transactional_offset_commit(c):
    create(c, "in")
    tx = Txn(c, "offsets")
    tx.init()

    def add_offsets(group: str) -> int:
        return c.request(ApiKey.ADD_OFFSETS_TO_TXN, 3, {
            "transactional_id": "offsets", "producer_id": tx.pid, "producer_epoch": tx.epoch,
            "group_id": group,
        }).error_code  # fmt: skip

    def txn_commit(group: str, offset: int, version: int = 3) -> int:
        r = c.request(ApiKey.TXN_OFFSET_COMMIT, version, {
            "transactional_id": "offsets", "group_id": group, "producer_id": tx.pid,
            "producer_epoch": tx.epoch, "generation_id": -1, "member_id": "",
            "group_instance_id": None,
            "topics": [{"name": "in", "partitions": [{
                "partition_index": 0, "committed_offset": offset, "committed_leader_epoch": -1,
                "committed_metadata": ""}]}],
        })  # fmt: skip
        return r.topics[0].partitions[0].error_code

    def fetched(group: str, stable: bool = False) -> tuple[int, int]:
        r = c.request(ApiKey.OFFSET_FETCH, 7, {
            "group_id": group, "topics": [{"name": "in", "partition_indexes": [0]}],
            "require_stable": stable,
        })  # fmt: skip
        p = r.topics[0].partitions[0]
        return p.error_code, p.committed_offset

    # Without AddOffsetsToTxn the group's partition isn't in the transaction.
    assert txn_commit("g", 5) == ErrorCode.INVALID_TXN_STATE
    assert add_offsets("g") == 0
    assert txn_commit("g", 5) == 0
    # Pending until the transaction ends: invisible, and "unstable" to require_stable fetches.
    assert fetched("g") == (0, -1)
    assert fetched("g", stable=True) == (ErrorCode.UNSTABLE_OFFSET_COMMIT, -1)
    assert tx.end(commit=True) == 0
    wait_for(lambda: fetched("g", stable=True) == (0, 5), what="the committed offset")
    wait_for(lambda: describe(c, "offsets").transaction_state == "CompleteCommit", what="commit")
    assert add_offsets("g") == 0
    assert txn_commit("g", 9) == 0
    assert tx.end(commit=False) == 0
    wait_for(lambda: describe(c, "offsets").transaction_state == "CompleteAbort", what="abort")
    assert fetched("g", stable=True) == (0, 5)
    # A fenced producer's offsets are refused.
    Txn(c, "offsets").init()
    assert txn_commit("g", 11) == ErrorCode.INVALID_PRODUCER_EPOCH


def test_list_transactions(c):
    create(c, "l")
    open_ = Txn(c, "open-one")
    open_.init()
    open_.add(("l", 0))
    Txn(c, "idle-one").init()
    r = c.request(ApiKey.LIST_TRANSACTIONS, 1, {
        "state_filters": [], "producer_id_filters": [], "duration_filter": -1,
    })  # fmt: skip
    assert sorted((s.transactional_id, s.transaction_state) for s in r.transaction_states) == [
        ("idle-one", "Empty"), ("open-one", "Ongoing"),
    ]  # fmt: skip
    r = c.request(ApiKey.LIST_TRANSACTIONS, 0, {
        "state_filters": ["Ongoing", "Bogus"], "producer_id_filters": [],
    })  # fmt: skip
    assert [s.transactional_id for s in r.transaction_states] == ["open-one"]
    assert list(r.unknown_state_filters) == ["Bogus"]


def test_timeout_aborts_and_idle_ids_expire(make_broker):
    b = make_broker({
        **FAST, "transaction.abort.timed.out.transaction.cleanup.interval.ms": "100",
        "transaction.remove.expired.transaction.cleanup.interval.ms": "100",
        "transactional.id.expiration.ms": "1500",
    })  # fmt: skip
    c = RawClient(b.port)
    try:
        create(c, "to")
        tx = Txn(c, "abandoned", timeout_ms=500)
        tx.init()
        tx.add(("to", 0))
        assert tx.produce("to", 0, [b"lost"]).error_code == 0
        assert latest(c, "to") == 0
        # Past its timeout the coordinator aborts it, bumping the epoch (the producer is fenced).
        wait_for(lambda: describe(c, "abandoned").transaction_state == "CompleteAbort",
                 what="the timed-out transaction aborted")  # fmt: skip
        assert describe(c, "abandoned").producer_epoch == tx.epoch + 1
        assert latest(c, "to") == 2
        assert tx.end(commit=True) == ErrorCode.PRODUCER_FENCED
        # Idle for transactional.id.expiration.ms: forgotten (a tombstone in the log).
        wait_for(
            lambda: describe(c, "abandoned").error_code == ErrorCode.TRANSACTIONAL_ID_NOT_FOUND,
            what="the transactional id expired",
        )  # fmt: skip
        log = broker_log(b, "__transaction_state", b.call(
            lambda: b.broker.transaction_coordinator.partition_for("abandoned")))  # fmt: skip
        assert log.log_end_offset >= 5  # Empty, Ongoing, PrepareAbort, CompleteAbort, tombstone
    finally:
        c.close()


def test_write_txn_markers_and_coordinator_fencing(c):
    create(c, "w", 1)
    tx = Txn(c, "markers")
    tx.init()
    tx.add(("w", 0))
    assert tx.produce("w", 0, [b"x"]).error_code == 0

    def markers(coordinator_epoch: int, commit: bool, partition: int = 0) -> int:
        r = c.request(ApiKey.WRITE_TXN_MARKERS, 1, {"markers": [{
            "producer_id": tx.pid, "producer_epoch": tx.epoch, "transaction_result": commit,
            "topics": [{"name": "w", "partition_indexes": [partition]}],
            "coordinator_epoch": coordinator_epoch,
        }]})  # fmt: skip
        return r.markers[0].topics[0].partitions[0].error_code

    assert markers(5, commit=False) == 0  # a coordinator of epoch 5 aborts it
    p = fetch(c, "w")
    assert p.last_stable_offset == 2
    assert [(a.producer_id, a.first_offset) for a in p.aborted_transactions] == [(tx.pid, 0)]
    # A coordinator with an older epoch has lost its partition: its markers are refused.
    assert markers(3, commit=True) == ErrorCode.TRANSACTION_COORDINATOR_FENCED
    assert markers(5, commit=False, partition=9) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_list_transactions_v2_pattern(c):
    """v2's transactional_id_pattern (KIP-1152): ids the regular expression matches as a whole;
    a pattern that doesn't compile is INVALID_REGULAR_EXPRESSION (Kafka's error 128)."""
    create(c, "lp")
    for txn_id in ("orders-1", "orders-22", "payments-1"):
        Txn(c, txn_id).init()
    body = {"state_filters": [], "producer_id_filters": [], "duration_filter": -1}
    r = c.request(ApiKey.LIST_TRANSACTIONS, 2, {**body, "transactional_id_pattern": "orders-.*"})
    assert sorted(s.transactional_id for s in r.transaction_states) == ["orders-1", "orders-22"]
    r = c.request(ApiKey.LIST_TRANSACTIONS, 2, {**body, "transactional_id_pattern": "orders"})
    assert r.error_code == 0 and list(r.transaction_states) == []  # not a substring search
    r = c.request(ApiKey.LIST_TRANSACTIONS, 2, {**body, "transactional_id_pattern": "(orders"})
    assert r.error_code == 128 and list(r.transaction_states) == []
    r = c.request(ApiKey.LIST_TRANSACTIONS, 2, {**body, "transactional_id_pattern": None})
    assert len(r.transaction_states) == 3

"""Transaction state and markers across broker restarts: after SIGTERM (the `.txnindex` files
are read back) and after SIGKILL (with the `.txnindex` files gone, recovery rebuilds them from
the ABORT markers); the coordinator reloads `__transaction_state`, so an open transaction is
still open, and a new producer instance fences and aborts it."""

from __future__ import annotations

import glob
import os

import pytest
from helpers import BrokerProcess, RawClient
from storage_helpers import wait_for
from test_transactions_protocol import FAST, Txn, create, describe, fetch, latest, values_of

from protocol.errors import ErrorCode


def setup_transactions(c: RawClient) -> Txn:
    """t-0: a committed transaction (offsets 0-1, marker 2), an aborted one (3-4, marker 5),
    and an open one (6-7)."""
    create(c, "t", 1)
    tx = Txn(c, "restart")
    tx.init()
    for commit, values in ((True, [b"c0", b"c1"]), (False, [b"a0", b"a1"])):
        assert tx.add(("t", 0)) == [0]
        assert tx.produce("t", 0, values).error_code == 0
        assert tx.end(commit) == 0
        state = "CompleteCommit" if commit else "CompleteAbort"
        wait_for(lambda s=state: describe(c, "restart").transaction_state == s, what=state)
    assert tx.add(("t", 0)) == [0]
    assert tx.produce("t", 0, [b"open0", b"open1"]).error_code == 0
    return tx


def check_after_restart(c: RawClient, tx: Txn) -> None:
    tx.c = c  # the old producer, on a new connection
    assert describe(c, "restart").transaction_state == "Ongoing"
    p = fetch(c, "t")
    assert (p.high_watermark, p.last_stable_offset) == (8, 6)
    assert values_of(p.records) == [b"c0", b"c1", b"a0", b"a1"]
    assert [(a.producer_id, a.first_offset) for a in p.aborted_transactions] == [(tx.pid, 3)]
    # A new instance fences the old epoch; the open transaction is aborted.
    new = Txn(c, "restart")
    assert new.init().error_code == ErrorCode.CONCURRENT_TRANSACTIONS  # aborting it first
    wait_for(lambda: new.init().error_code == 0, what="the new instance initialized")
    assert new.epoch == tx.epoch + 2
    assert tx.produce("t", 0, [b"zombie"]).error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    assert new.add(("t", 0)) == [0]
    assert new.produce("t", 0, [b"final"]).error_code == 0
    assert new.end(commit=True) == 0
    wait_for(lambda: latest(c, "t") == 11, what="the LSO past the last marker")
    p = fetch(c, "t")
    assert [(a.producer_id, a.first_offset) for a in p.aborted_transactions] == [
        (tx.pid, 3), (tx.pid, 6),
    ]  # fmt: skip
    kept = {b"c0", b"c1", b"final"}
    aborted = {b"a0", b"a1", b"open0", b"open1"}
    assert set(values_of(p.records)) == kept | aborted  # the client drops the aborted ones


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_transactions_survive_restart(tmp_path, how):
    bp = BrokerProcess(str(tmp_path / "data"), FAST).start()
    try:
        c = RawClient(bp.port)
        tx = setup_transactions(c)
        c.close()
        if how == "sigterm":
            assert bp.terminate() == 0
        else:
            bp.kill()
            # Lose the transaction index too: recovery rebuilds it from the markers.
            doomed = glob.glob(os.path.join(str(tmp_path / "data"), "t-0", "*.txnindex"))
            assert doomed
            for path in doomed:
                os.unlink(path)
        bp.start()
        c = RawClient(bp.port)
        check_after_restart(c, tx)
        c.close()
        assert glob.glob(os.path.join(str(tmp_path / "data"), "t-0", "*.txnindex"))
    finally:
        bp.kill()


def test_prepared_commit_is_completed_after_restart(tmp_path):
    """A commit whose markers can't be written yet (the partition's ISR is below
    min.insync.replicas) stays PrepareCommit, survives a SIGKILL, and completes once the
    partition accepts the marker."""
    from storage_helpers import set_topic_configs
    from wire import partition_response, produce_body, values_batch

    from protocol.apis import ApiKey

    bp = BrokerProcess(str(tmp_path / "data"), FAST).start()
    try:
        c = RawClient(bp.port)
        r = c.request(ApiKey.CREATE_TOPICS, 5, {
            "topics": [{"name": "m", "num_partitions": 1, "replication_factor": 1,
                        "assignments": [],
                        "configs": [{"name": "min.insync.replicas", "value": "2"}]}],
            "timeout_ms": 10000, "validate_only": False,
        })  # fmt: skip
        assert r.topics[0].error_code == 0
        tx = Txn(c, "prepared")
        tx.init()
        assert tx.add(("m", 0)) == [0]
        batch = values_batch([b"v"], producer_id=tx.pid, producer_epoch=tx.epoch,
                             base_sequence=0, transactional=True)  # fmt: skip
        body = produce_body("m", batch, 0, acks=1, transactional_id="prepared")
        assert partition_response(c.request(ApiKey.PRODUCE, 9, body)).error_code == 0
        assert tx.end(commit=True) == 0
        assert describe(c, "prepared").transaction_state == "PrepareCommit"
        c.close()
        bp.kill()
        bp.start()
        c = RawClient(bp.port)
        assert describe(c, "prepared").transaction_state == "PrepareCommit"
        assert latest(c, "m") == 0
        set_topic_configs(bp, "m", {"min.insync.replicas": "1"})
        wait_for(lambda: describe(c, "prepared").transaction_state == "CompleteCommit",
                 what="the markers written after the restart")  # fmt: skip
        assert latest(c, "m") == 2
        assert values_of(fetch(c, "m").records) == [b"v"]
        c.close()
    finally:
        bp.kill()

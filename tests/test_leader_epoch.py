"""LeaderEpochCache: Kafka's endOffsetFor rules, assignment, truncation, the checkpoint file."""

from __future__ import annotations

from pykbroker.cluster.leader_epoch import CHECKPOINT_FILE, LeaderEpochCache


def make(entries, directory=None) -> LeaderEpochCache:
    cache = LeaderEpochCache(directory)
    for epoch, offset in entries:
        cache.assign(epoch, offset)
    return cache


def test_end_offset_for():
    cache = make([(0, 0), (2, 10), (5, 40)])
    leo = 55
    assert cache.end_offset_for(5, leo) == (5, 55)  # the latest epoch ends at the LEO
    assert cache.end_offset_for(2, leo) == (2, 40)
    assert cache.end_offset_for(3, leo) == (2, 40)  # unknown epoch: the largest one below it
    assert cache.end_offset_for(0, leo) == (0, 10)
    assert cache.end_offset_for(6, leo) == (-1, -1)  # newer than anything known
    assert cache.end_offset_for(-1, leo) == (-1, -1)
    assert make([(3, 7)]).end_offset_for(1, 9) == (1, 7)  # older than the first epoch
    assert make([]).end_offset_for(0, 9) == (-1, -1)


def test_assign_ignores_old_epochs_and_drops_empty_ones():
    cache = make([(1, 0), (2, 10)])
    assert not cache.assign(2, 12)
    assert not cache.assign(1, 20)
    assert cache.assign(4, 10)  # epoch 2 never had a record: it goes
    assert (cache.epochs, cache.offsets) == ([1, 4], [0, 10])


def test_truncate_from_end():
    cache = make([(0, 0), (2, 10), (5, 40)])
    cache.truncate_from_end(40)
    assert cache.epochs == [0, 2]
    cache.truncate_from_end(11)
    assert cache.epochs == [0, 2]
    cache.truncate_from_end(10)
    assert cache.epochs == [0]


def test_checkpoint_round_trip_and_rebuild(tmp_path):
    d = str(tmp_path)
    make([(0, 0), (3, 25)], d)
    assert (tmp_path / CHECKPOINT_FILE).read_text() == "0\n2\n0 0\n3 25\n"
    loaded = LeaderEpochCache.load(d, 30)
    assert (loaded.epochs, loaded.offsets) == ([0, 3], [0, 25])
    assert LeaderEpochCache.load(d, 20).epochs == [0]  # past the LEO: gone
    (tmp_path / CHECKPOINT_FILE).unlink()
    batches = [(0, 0), (0, 5), (2, 9), (2, 12), (7, 20)]
    rebuilt = LeaderEpochCache.load(d, 25, scan=lambda: iter(batches))
    assert (rebuilt.epochs, rebuilt.offsets) == ([0, 2, 7], [0, 9, 20])
    assert (tmp_path / CHECKPOINT_FILE).exists()


def test_offsets_for_leader_epoch_on_a_single_broker(broker):
    from helpers import RawClient
    from kafka import KafkaProducer

    from protocol.apis import ApiKey
    from protocol.errors import ErrorCode

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    for i in range(3):
        producer.send("epochs", f"r{i}".encode(), partition=0).get(timeout=10)
    producer.close()
    client = RawClient(broker.port)

    def ask(leader_epoch: int, current: int = -1):
        body = {"replica_id": -1, "topics": [{"topic": "epochs", "partitions": [
            {"partition": 0, "current_leader_epoch": current, "leader_epoch": leader_epoch}]}]}  # fmt: skip
        p = client.request(ApiKey.OFFSET_FOR_LEADER_EPOCH, 4, body).topics[0].partitions[0]
        return p.error_code, p.leader_epoch, p.end_offset

    try:
        assert ask(0) == (0, 0, 3)
        assert ask(1) == (0, -1, -1)
        assert ask(0, current=0) == (0, 0, 3)
        assert ask(0, current=5)[0] == ErrorCode.UNKNOWN_LEADER_EPOCH
    finally:
        client.close()

"""Running out of file descriptors is the process's shortage, not the disk's: a CreateTopics of
more partitions than the descriptors left fails for those partitions, and every other partition
of the log dir keeps taking writes (fuzz finding F8: EMFILE used to take the whole dir offline).
The broker also lifts its soft open-file limit to the hard one at start, so only a hard limit
this low gets here."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from helpers import BrokerProcess
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaStorageError

NOFILE = 160  # hard limit for the broker: room for a small topic, not for 100 partitions


def produce(bootstrap: str, topic: str, n: int) -> list:
    errors: list = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(n):
        p.produce(topic, f"v{i}".encode(), on_delivery=lambda err, _m: err and errors.append(err))
    assert p.flush(30) == 0
    return errors


@pytest.fixture
def starved_broker(tmp_path):
    b = BrokerProcess(str(tmp_path / "data"), {"num.partitions": "1"}).start(nofile=NOFILE)
    yield b
    b.kill()


def test_out_of_descriptors_fails_the_request_not_the_log_dir(starved_broker):
    bootstrap = starved_broker.bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics([NewTopic("small", 1, 1)])
        assert produce(bootstrap, "small", 10) == []
        # 100 partitions x 3 descriptors cannot fit under 160: some partitions fail.
        with pytest.raises(KafkaStorageError):
            admin.create_topics([NewTopic("big", 100, 1)])
        assert starved_broker.events("storage_operation_failed")
        assert not starved_broker.events("log_dir_offline")
        # The dir is still online: the healthy topic keeps taking writes.
        assert produce(bootstrap, "small", 10) == []
    finally:
        admin.close()
    assert starved_broker.proc.poll() is None

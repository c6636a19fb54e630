"""A metadata write that fails at the end of a batch (one CreateTopics, one write) takes back
the batch's changes, so memory never promises topics that a restart would forget."""

from __future__ import annotations

import os

import pytest

from protocol.errors import ErrorCode, KafkaError
from pykbroker.cluster.metadata import LocalMetadata


def test_a_failed_batch_write_takes_its_topics_back(tmp_path):
    md = LocalMetadata(str(tmp_path), 1, ("127.0.0.1", 9092))
    md.create_topic("kept", [[1]], {})
    # The next write of topics.json fails: its directory is gone (any OSError would do).
    md._topics_path = os.path.join(tmp_path, "gone", "topics.json")
    with pytest.raises(KafkaError) as raised, md.batch():
        md.create_topic("a", [[1], [1]], {})
        md.create_topic("b", [[1]], {})
        md.add_partitions("kept", [[1]])
        assert {"a", "b"} <= set(md.topics)  # not written yet: the batch writes once, at exit
    assert raised.value.code == ErrorCode.KAFKA_STORAGE_ERROR
    assert set(md.topics) == {"kept"}
    assert len(md.topics["kept"].partitions) == 1

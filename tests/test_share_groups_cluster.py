"""Share groups on a three-broker cluster: the share-partition's state lives with its share
coordinator (the leader of its __share_group_state partition), which here is another broker
than the partition's leader, so every read and write of the state crosses the broker channel
(ReadShareGroupState, InitializeShareGroupState, WriteShareGroupState)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cluster_helpers import Cluster, find_coordinator, wait_until
from zookeeper_server import zookeeper_missing

missing = zookeeper_missing()
if missing:
    print(f"\nSKIPPING cluster share group tests: {missing}", file=sys.stderr)
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")

from test_share_groups import AckLog, set_group_configs, setup_topic, share_consumer  # noqa: E402

SHARE_KEY = 2  # FindCoordinator key type of the share coordinator
OVERRIDES = {
    "group.share.enable": "true",
    "offsets.topic.num.partitions": "3",
    "share.coordinator.state.topic.num.partitions": "3",
}


def test_share_state_follows_its_coordinator_on_another_broker(tmp_path):
    cluster = Cluster(str(tmp_path), overrides=OVERRIDES).start()
    try:
        bootstrap = cluster.bootstrap()
        port = cluster.brokers[1].port
        n = 200
        setup_topic(bootstrap, "cq", [b"%d" % i for i in range(n)], "probe")
        wait_until(lambda: (p := cluster.agreed_partitions("cq")) and p[0][0] > 0, what="leader")
        leader = cluster.agreed_partitions("cq")[0][0]
        topic_id = cluster.metadata(1, ["cq"]).topics[0].topic_id
        # A group whose share coordinator for cq-0 is not cq-0's leader: the leader's acks
        # succeed only if its writes reach that other broker.
        wait_until(lambda: find_coordinator(port, f"probe:{topic_id}:0", SHARE_KEY),
                   what="__share_group_state leaders")  # fmt: skip
        group = next(
            g for g in (f"sg{i}" for i in range(100))
            if find_coordinator(port, f"{g}:{topic_id}:0", SHARE_KEY) not in (None, leader)
        )  # fmt: skip
        set_group_configs(bootstrap, group, **{"share.auto.offset.reset": "earliest"})
        ack_log = AckLog()
        c = share_consumer(bootstrap, group, "cq")
        c.set_acknowledgement_commit_callback(ack_log.callback)
        try:

            def consume():
                msgs = [m for m in c.poll(1.0) if m.error() is None]
                for m in msgs:
                    c.acknowledge(m)
                if msgs:
                    c.commit_sync()
                return len(set(ack_log.acked)) >= n or None

            wait_until(consume, timeout=60, what="every record acknowledged")
        finally:
            c.close()
        assert sorted(ack_log.acked) == list(range(n))
        out = subprocess.run(
            [sys.executable, "-m", "pykbroker.cli.share_groups", "--bootstrap-server", bootstrap,
             "--describe", "--group", group, "--offsets"],
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        assert out.split("\n")[2].split() == [group, "cq", "0", str(n)]
    finally:
        cluster.stop()

"""Client quotas in a ZooKeeper cluster: Kafka's znodes (/config/users/<user>,
/config/users/<user>/clients/<client>, /config/clients/<client>, {"version":1,"config":{...}})
and change notifications (/config/changes/config_change_<seq> = {"version":2,"entity_path":
...}), seen by every broker; a user's znode shared with SCRAM credentials, neither writer
dropping the other's keys."""

from __future__ import annotations

import json

import pytest
from cluster_helpers import Cluster, wait_until
from helpers import RawClient
from test_quotas_api import alter, describe, entries
from zookeeper_server import zookeeper_missing

from protocol.apis import ApiKey

missing = zookeeper_missing()
METADATA = {"topics": [], "allow_auto_topic_creation": False,
            "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False}  # fmt: skip


@pytest.mark.skipif(missing is not None, reason=missing or "")
def test_quotas_in_zookeeper(tmp_path):
    from kazoo.client import KazooClient

    cluster = Cluster(str(tmp_path), size=2).start()
    zk = KazooClient(hosts=f"{cluster.zk.connect}/pykbroker")
    zk.start()
    c1, c2 = RawClient(cluster.ports[1]), RawClient(cluster.ports[2], client_id="other")
    try:
        assert alter(c1, {"user": "alice"}, {"producer_byte_rate": 1024}).error_code == 0
        assert alter(c1, {"user": "al ice*", "client-id": None},
                     {"request_percentage": 50}).error_code == 0  # fmt: skip
        data, _ = zk.get("/config/users/alice")
        assert json.loads(data) == {"version": 1, "config": {"producer_byte_rate": "1024"}}
        data, _ = zk.get("/config/users/al%20ice%2A/clients/<default>")
        assert json.loads(data) == {"version": 1, "config": {"request_percentage": "50.0"}}
        notes = [json.loads(zk.get(f"/config/changes/{n}")[0])
                 for n in sorted(zk.get_children("/config/changes"))]  # fmt: skip
        assert {"version": 2, "entity_path": "users/alice"} in notes
        assert {"version": 2, "entity_path": "users/al%20ice%2A/clients/<default>"} in notes

        expected = {(("user", "alice"),): {"producer_byte_rate": 1024.0},
                    (("client-id", None), ("user", "al ice*")): {"request_percentage": 50.0}}  # fmt: skip
        wait_until(lambda: entries(describe(c2, [])) == expected, 20, "broker 2 sees them")

        # A SCRAM credential in alice's znode (as Kafka's tools write it) survives quota
        # changes made on either broker, and quotas survive its changes.
        scram = "salt=c2FsdA==,stored_key=a2V5,server_key=a2V5,iterations=4096"
        data, stat = zk.get("/config/users/alice")
        config = json.loads(data)["config"] | {"SCRAM-SHA-256": scram}
        zk.set("/config/users/alice", json.dumps({"version": 1, "config": config}).encode(),
               stat.version)  # fmt: skip
        assert alter(c2, {"user": "alice"}, {"consumer_byte_rate": 2048}).error_code == 0
        assert json.loads(zk.get("/config/users/alice")[0])["config"] == {
            "producer_byte_rate": "1024",
            "consumer_byte_rate": "2048",
            "SCRAM-SHA-256": scram,
        }
        assert (
            alter(
                c1, {"user": "alice"}, {"producer_byte_rate": None, "consumer_byte_rate": None}
            ).error_code
            == 0
        )
        assert json.loads(zk.get("/config/users/alice")[0])["config"] == {"SCRAM-SHA-256": scram}
        wait_until(lambda: (("user", "alice"),) not in entries(describe(c2, [])), 20, "removed")

        # Written straight into ZooKeeper the way Kafka's own tooling does: config then notice.
        zk.create("/config/clients/other", b'{"version":1,"config":{"request_percentage":"0.0001"}}',
                  makepath=True)  # fmt: skip
        zk.create("/config/changes/config_change_",
                  b'{"version":2,"entity_path":"clients/other"}', sequence=True)  # fmt: skip
        wait_until(lambda: c2.request(ApiKey.METADATA, 9, METADATA).throttle_time_ms > 0, 20,
                   "broker 2 throttles client-id other")  # fmt: skip
    finally:
        c1.close()
        c2.close()
        zk.stop()
        cluster.stop()

"""Start and stop a broker's cluster membership (when `zookeeper.connect` is set).

Order, as Kafka's ZooKeeper-mode KafkaServer: connect to ZooKeeper, agree on the cluster id,
load the logs (HWs from their checkpoints), read the cluster's metadata and watch it, open the
partitions this broker replicates, register /brokers/ids/N, act on leadership, and only then
stand for controller.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from kazoo.handlers.threading import KazooTimeoutError

from .controller import Controller
from .replica_fetcher import ReplicaFetcherManager
from .replica_manager import ReplicaManager
from .zk import ZkClient
from .zk_metadata import ZkMetadata

if TYPE_CHECKING:
    from pykbroker.broker import Broker

log = structlog.get_logger(__name__)


async def start_cluster(broker: Broker, advertised: tuple[str, int], listener_name: str,
                        endpoints: dict[str, tuple[str, int]] | None = None) -> None:  # fmt: skip
    config = broker.config
    loop = asyncio.get_running_loop()
    session_ms = config.get("zookeeper.session.timeout.ms")
    connect_ms = config.get("zookeeper.connection.timeout.ms") or session_ms
    zk = ZkClient(config.get("zookeeper.connect"), session_ms, loop)
    try:
        await zk.start(connect_ms / 1000)
    except KazooTimeoutError:
        raise ConnectionError(
            f"Timed out waiting for a ZooKeeper connection to {zk.connect} ({connect_ms} ms)"
        ) from None
    metadata = ZkMetadata(
        zk, broker.log_manager.data_dir, broker.node_id, advertised, config.get("broker.rack"),
        config.get("cluster.id"), listener_name,
    )  # fmt: skip
    metadata.broker.endpoints = endpoints
    broker.metadata = metadata
    zk.session_listeners.append(metadata.session_state_changed)
    await metadata.start()
    broker.apply_dynamic_configs()
    metadata.on_broker_configs = broker.apply_dynamic_configs
    broker.log_manager.load_logs(broker.log_config_for)
    rm = ReplicaManager(broker.node_id, broker.log_manager, broker.log_config_for, metadata, config)
    rm.restore_high_watermarks()
    rm.fetchers = ReplicaFetcherManager(broker.node_id, metadata, config, broker.inter_broker)
    broker.replica_manager = rm
    metadata.replica_manager = rm
    rm.delete_stray_logs()
    for topic in list(metadata.topics.values()):
        rm.ensure_partitions(topic)
    await metadata.register_broker()
    rm.make_ready()
    rm.start_background(loop)
    controller = Controller(
        metadata, lambda t: broker.log_config_for(t)["unclean.leader.election.enable"], config
    )
    broker.controller = controller
    controller.start()


async def stop_cluster(broker: Broker) -> None:
    """Stop fetching, checkpoint HWs, and close the ZooKeeper session (our ephemeral znodes go
    at once, so the controller moves leadership without waiting for a session timeout)."""
    rm = broker.replica_manager
    if rm is not None:
        rm.stopping = True  # from here on, state changes seen by watches start nothing
        if rm.fetchers is not None:
            await rm.fetchers.shutdown()
    controller = getattr(broker, "controller", None)
    if controller is not None:
        await controller.stop()
    if rm is not None:
        await rm.stop_background()
        rm.checkpoint_high_watermarks()
    metadata = broker.metadata
    if isinstance(metadata, ZkMetadata):
        await metadata.stop()
        await metadata.zk.stop()

"""Controlled shutdown (Kafka's ControlledShutdown, ZooKeeper mode).

A broker stopping on SIGTERM (controlled.shutdown.enable) first has the controller move the
leadership of every partition it leads to an in-sync follower and take it out of the ISRs of
the partitions it follows, so producers see a leader change instead of a dead leader.

Kafka's broker sends a ControlledShutdown request to the controller, which elects new leaders
among the ISR minus the shutting-down broker (ControlledShutdownLeaderSelector), shrinks ISRs,
and answers with the partitions the broker still leads; the broker retries
(controlled.shutdown.max.retries, controlled.shutdown.retry.backoff.ms), then stops anyway.
Here the request is an ephemeral znode, /controlled_shutdown/<id> holding the broker epoch (the
czxid of its /brokers/ids/<id> registration): pykbroker's brokers and controller talk only
through ZooKeeper (brokers act on the state znodes they watch, there is no LeaderAndIsr), so the
controller's level-triggered pass takes shutting-down brokers as one more input, and the answer
is in the state znodes the broker already watches. The znode goes with the broker's session,
and a controller elected meanwhile reads it, where Kafka's broker would have to ask again.

The decisions are plain functions here and in controller.decide_state; the broker side is a
thin loop around them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog
from kazoo.exceptions import KazooException

from . import zk as Z

if TYPE_CHECKING:
    from pykbroker.broker import Broker

    from .metadata import PartitionState

log = structlog.get_logger(__name__)

CONTROLLED_SHUTDOWN = "/controlled_shutdown"
POLL_S = 0.05  # how often the stopping broker looks at its cached partition states


def request_path(node_id: int) -> str:
    return f"{CONTROLLED_SHUTDOWN}/{node_id}"


def encode_request(broker_epoch: int) -> bytes:
    return json.dumps({"version": 1, "broker_epoch": broker_epoch}).encode()


def decode_request(data: bytes | None) -> int | None:
    """The broker epoch a request names (None: unreadable)."""
    try:
        return int(json.loads(data)["broker_epoch"])
    except (TypeError, ValueError, KeyError):
        return None


def shutting_down_brokers(requests: dict[int, int | None], live_epochs: dict[int, int],
                          live: Iterable[int]) -> set[int]:  # fmt: skip
    """Live brokers in controlled shutdown: their request names their current registration
    (Kafka's broker epoch check; a request left from before a restart counts for nothing)."""
    live = set(live)
    return {b for b, epoch in requests.items() if b in live and live_epochs.get(b) == epoch}


def remaining_partitions(states: Iterable[tuple[str, int, PartitionState]], node_id: int,
                         live: Iterable[int]) -> list[tuple[str, int]]:  # fmt: skip
    """What the controller has still to move before `node_id` may stop: partitions it leads
    that another live replica could take over (Kafka answers every replicated partition it
    leads; one whose other replicas are all down can't move until one starts, so waiting for
    it only delays the stop), and partitions it is in the ISR of under another live leader."""
    live = set(live)
    out = []
    for topic, index, st in states:
        if st.leader == node_id:
            if any(r != node_id and r in live for r in st.replicas):
                out.append((topic, index))
        elif node_id in st.isr and st.leader in live:
            out.append((topic, index))
    return out


def _states(md) -> list[tuple[str, int, PartitionState]]:
    return [
        (name, index, st)
        for name, info in md.topics.items()
        for index, st in enumerate(info.partitions)
    ]


async def controlled_shutdown(broker: Broker) -> bool:
    """The stopping broker's side: stop following (Kafka's StopReplica), ask, and wait for the
    moves; True when nothing remains. Bounded by retries x backoff (at most 15 s)."""
    md = broker.metadata
    zk = getattr(md, "zk", None)
    if zk is None:  # stopped before it joined the cluster
        return False
    node_id = broker.node_id
    config = broker.config
    retries = config.get("controlled.shutdown.max.retries")
    backoff_s = config.get("controlled.shutdown.retry.backoff.ms") / 1000
    rm = broker.replica_manager
    if rm is not None and rm.fetchers is not None:
        # A follower that keeps fetching would be added back to the ISR by its leader.
        await rm.fetchers.shutdown()
    if not zk.connected.is_set():  # no controller can hear us: don't wait for one
        log.warning("controlled_shutdown_failed", node_id=node_id, error="no ZooKeeper connection")
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(retries * max(backoff_s, POLL_S), 15.0)
    try:
        await asyncio.wait_for(_request(zk, node_id), max(deadline - loop.time(), 0.1))
    except (TimeoutError, KazooException) as e:
        log.warning("controlled_shutdown_failed", node_id=node_id, error=repr(e))
        return False
    log.info("controlled_shutdown_requested", node_id=node_id)
    left: list[tuple[str, int]] = []
    for attempt in range(1, retries + 1):
        attempt_end = min(loop.time() + backoff_s, deadline)
        while True:
            left = remaining_partitions(_states(md), node_id, md.live_broker_ids())
            if not left:
                log.info("controlled_shutdown_succeeded", node_id=node_id, attempts=attempt)
                return True
            if loop.time() >= attempt_end:
                break
            await asyncio.sleep(POLL_S)
        log.info("controlled_shutdown_remaining", node_id=node_id, attempt=attempt,
                 partitions=[f"{t}-{i}" for t, i in left[:20]], count=len(left))  # fmt: skip
        if loop.time() >= deadline:
            break
    log.warning(
        "controlled_shutdown_failed", node_id=node_id, remaining=len(left),
        reason="Proceeding to do an unclean shutdown as all the controlled shutdown attempts failed",
    )  # fmt: skip
    return False


async def _request(zk: Z.ZkClient, node_id: int) -> None:
    await zk.ensure_path(CONTROLLED_SHUTDOWN)
    _data, stat = await zk.get(Z.broker_path(node_id))
    data = encode_request(stat.czxid)
    try:
        await zk.create(request_path(node_id), data, ephemeral=True)
    except Z.NodeExistsError:  # ours from an attempt cut short, or a dying old session's
        await zk.set(request_path(node_id), data)

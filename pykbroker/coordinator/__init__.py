"""Coordinators: the group coordinator and the transaction coordinator."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pykbroker.broker import Broker


async def start_coordinators(broker: Broker) -> None:
    """Load coordinator state from the internal topics; called once storage is open."""
    from .group_coordinator import GroupCoordinator
    from .transaction_coordinator import TransactionCoordinator

    group_coordinator = GroupCoordinator(broker)
    group_coordinator.startup()
    broker.group_coordinator = group_coordinator
    transaction_coordinator = TransactionCoordinator(broker)
    transaction_coordinator.startup()
    broker.transaction_coordinator = transaction_coordinator
    from . import group_configs
    from .share_fetch import SharePartitionManager
    from .share_group import ShareGroupCoordinator
    from .share_state import Persister, ShareCoordinator

    broker.share_group_configs.update(group_configs.load(broker.log_manager.data_dir))
    broker.share_coordinator = ShareCoordinator(broker)
    broker.share_persister = Persister(broker)
    broker.share_coordinator.startup()
    broker.share_groups = ShareGroupCoordinator(broker)
    broker.share_groups.startup({key[0] for key in broker.share_coordinator.states})
    broker.share_partitions = SharePartitionManager(broker)
    broker.share_groups.member_expired_listeners.append(broker.share_partitions.on_member_expired)


async def stop_coordinators(broker: Broker) -> None:
    """Stop coordinator timers before storage closes."""
    if broker.share_groups is not None:
        broker.share_groups.shutdown()
        broker.share_persister.close()
    if getattr(broker, "transaction_coordinator", None) is not None:
        broker.transaction_coordinator.shutdown()
    if broker.group_coordinator is not None:
        broker.group_coordinator.shutdown()

"""Authorization: Kafka's ACL authorizer (authorizer.py, sans-io), where ACLs are stored
(store.py), and the checks handlers make (checks.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from .authorizer import AclAuthorizer, parse_super_users

if TYPE_CHECKING:
    from pykbroker.broker import Broker
    from pykbroker.config import BrokerConfig

log = structlog.get_logger(__name__)


def make_authorizer(config: BrokerConfig) -> AclAuthorizer | None:
    """The authorizer `authorizer.class.name` asks for, or None. Handlers check
    `broker.authorizer`, so without one authorization costs one attribute test per request.
    It exists from the broker's construction, not ready until its store is read: a request
    that comes earlier fails and its connection closes (clients reconnect), never answered
    from an empty set of ACLs."""
    if not config.get("authorizer.class.name"):
        return None
    return AclAuthorizer(
        parse_super_users(config.get("super.users")),
        config.get("allow.everyone.if.no.acl.found"),
        ready=False,
    )


async def start_acl_store(broker: Broker) -> None:
    """Load the ACLs (ZooKeeper in a cluster, else the data dir) and keep them current."""
    authorizer = broker.authorizer
    if authorizer is None:
        return
    if broker.config.get("zookeeper.connect"):
        from .store import ZkAclStore

        store = ZkAclStore(authorizer, broker.metadata)
    else:
        from .store import FileAclStore

        store = FileAclStore(authorizer, broker.log_manager.data_dir)
    await store.start()
    broker.acl_store = store
    authorizer.ready = True
    log.info("authorizer_started", acls=authorizer.count,
             super_users=sorted(authorizer.super_users))  # fmt: skip

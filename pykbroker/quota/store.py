"""Where client quota configs live: ZooKeeper in a cluster, the single-node metadata otherwise.

ZooKeeper layout is Kafka's: `/config/users/<user>`, `/config/users/<user>/clients/<client>`,
`/config/clients/<client>`, `/config/ips/<ip>` holding `{"version":1,"config":{...}}`, and a
change notification `/config/changes/config_change_<seq>` = `{"version":2,"entity_path":...}`
after each write, which every broker watches (as Kafka's ZkConfigManager does) to re-read the
entity. A user's znode also holds SCRAM credentials (written by the SCRAM code): writes here
replace only the quota keys, read-modify-write with the znode's version, retried on a race.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import structlog

from protocol.errors import ErrorCode, KafkaError

from .entities import keys_for, path_entity, quota_configs

log = structlog.get_logger(__name__)

CONFIG = "/config"
CHANGES = "/config/changes"
CHANGE_PREFIX = "config_change_"
CHANGE_EXPIRATION_MS = 15 * 60 * 1000  # ZkConfigManager's changeExpirationMs


class LocalQuotaStore:
    """A single broker: the configs live in its metadata file (topics.json)."""

    def __init__(self, metadata, on_change: Callable[[], None]):
        self.metadata = metadata
        self.on_change = on_change

    @property
    def configs(self) -> dict[str, dict[str, str]]:
        return self.metadata.client_quotas

    async def start(self) -> None:
        pass

    async def alter(self, changes: dict[str, dict[str, str]]) -> None:
        self.metadata.set_client_quotas(changes)
        self.on_change()


class ZkQuotaStore:
    def __init__(self, metadata, on_change: Callable[[], None]):
        self.metadata = metadata  # ZkMetadata: its client, retry loop and task spawner
        self.zk = metadata.zk
        self.on_change = on_change
        self.configs: dict[str, dict[str, str]] = {}
        self._last_change = -1  # sequence number of the last notification processed
        self._watcher = None

    async def start(self) -> None:
        await self.zk.ensure_path(CHANGES)
        children = await self.zk.get_children(CHANGES)
        self._last_change = max((_seq(c) for c in children), default=-1)
        for path in await self._all_entity_paths():
            await self._read(path)
        self._watcher = self.zk.watcher(
            lambda _e: self.metadata._spawn(self.metadata.retrying(self._changes), CHANGES)
        )
        await self._changes()
        self.on_change()

    async def _all_entity_paths(self) -> list[str]:
        paths = []
        for kind in ("users", "clients", "ips"):
            for name in await self._children(f"{CONFIG}/{kind}"):
                paths.append(f"{kind}/{name}")
                if kind == "users":
                    for client in await self._children(f"{CONFIG}/users/{name}/clients"):
                        paths.append(f"users/{name}/clients/{client}")
        return paths

    async def _children(self, path: str) -> list[str]:
        from pykbroker.cluster import zk as Z

        try:
            return await self.zk.get_children(path)
        except Z.NoNodeError:
            return []

    async def _read(self, path: str) -> None:
        from pykbroker.cluster import zk as Z

        if path_entity(path) is None:
            return  # topics/..., brokers/...: not ours
        try:
            data, _ = await self.zk.get(f"{CONFIG}/{path}")
            values = quota_configs(path, Z.decode_config(data))
        except Z.NoNodeError:
            values = {}
        if values:
            self.configs[path] = values
        else:
            self.configs.pop(path, None)

    async def _changes(self) -> None:
        """New change notifications: re-read the entities they name; purge expired ones."""
        from pykbroker.cluster import zk as Z

        children = await self.zk.get_children(CHANGES, watch=self._watcher)
        changed = False
        now_ms = int(time.time() * 1000)
        for child in sorted(children, key=_seq):
            seq = _seq(child)
            node = f"{CHANGES}/{child}"
            try:
                data, stat = await self.zk.get(node)
            except Z.NoNodeError:
                continue
            if seq > self._last_change:
                self._last_change = seq
                try:
                    entity_path = json.loads(data)["entity_path"]
                except (ValueError, KeyError, TypeError):
                    log.warning("config_change_unreadable", znode=node)
                    continue
                if path_entity(entity_path) is not None:
                    await self._read(entity_path)
                    changed = True
            if now_ms - stat.ctime > CHANGE_EXPIRATION_MS:
                try:
                    await self.zk.delete(node)
                except Z.NoNodeError:
                    pass
        if changed:
            self.on_change()

    async def alter(self, changes: dict[str, dict[str, str]]) -> None:
        from pykbroker.cluster import zk as Z

        for path, values in changes.items():
            try:
                await self._write(path, values)
                await self.zk.create(
                    f"{CHANGES}/{CHANGE_PREFIX}",
                    json.dumps({"version": 2, "entity_path": path}).encode(),
                    sequence=True, makepath=True,
                )  # fmt: skip
            except Z.TRANSIENT_ERRORS as e:
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, f"ZooKeeper: {e!r}") from None
            if values:
                self.configs[path] = dict(values)
            else:
                self.configs.pop(path, None)
        self.on_change()

    async def _write(self, path: str, values: dict[str, str]) -> None:
        """Replace the quota keys of an entity's znode, keeping every other key (SCRAM
        credentials): a conditional write of what was read, again if someone wrote between."""
        from pykbroker.cluster import zk as Z

        znode = f"{CONFIG}/{path}"
        ours = keys_for(path)
        for _ in range(100):
            try:
                data, stat = await self.zk.get(znode)
                current, version = Z.decode_config(data), stat.version
            except Z.NoNodeError:
                current, version = {}, None
            merged = {k: v for k, v in current.items() if k not in ours}
            merged.update(values)
            try:
                if version is None:
                    await self.zk.create(znode, Z.encode_config(merged), makepath=True)
                else:
                    await self.zk.set(znode, Z.encode_config(merged), version)
                return
            except (Z.BadVersionError, Z.NodeExistsError, Z.NoNodeError):
                await asyncio.sleep(0)
        raise KafkaError(ErrorCode.UNKNOWN_SERVER_ERROR, f"{znode} kept changing under us")


def _seq(name: str) -> int:
    try:
        return int(name[len(CHANGE_PREFIX) :])
    except ValueError:
        return -1

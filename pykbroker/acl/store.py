"""Where ACLs live: ZooKeeper in Kafka's layout (a cluster), or a file in the broker's data dir.

ZooKeeper, as Kafka's AclAuthorizer keeps them (so Kafka's own tools read ours and we read
theirs): one znode per resource pattern,
    /kafka-acl/<Type>/<name>                       LITERAL patterns (`*` included)
    /kafka-acl-extended/prefixed/<Type>/<name>     PREFIXED patterns
holding {"version":1,"acls":[{"principal":"User:alice","permissionType":"Allow",
"operation":"Read","host":"*"}]}, updated by conditional writes. Every change also creates a
sequential `acl_changes_` znode under /kafka-acl-changes ("Topic:name") or
/kafka-acl-extended-changes (a JSON naming the pattern); every broker watches both and re-reads
the patterns named, so each broker's authorizer follows the others' changes.

A single broker keeps `<data dir>/acls.json`, rewritten atomically on every change.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable

import structlog

from pykbroker.storage.files import atomic_write

from .authorizer import (
    AccessControlEntry,
    AclAuthorizer,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)

log = structlog.get_logger(__name__)

LITERAL_ROOT = "/kafka-acl"
PREFIXED_ROOT = "/kafka-acl-extended/prefixed"
LITERAL_CHANGES = "/kafka-acl-changes"
EXTENDED_CHANGES = "/kafka-acl-extended-changes"
CHANGE_PREFIX = "acl_changes_"
CHANGE_EXPIRY_S = 15 * 60  # Kafka's ZkNodeChangeNotificationListener.changeExpirationMs

# Kafka's SecurityUtils names: UPPER_SNAKE enum names in CamelCase (TRANSACTIONAL_ID ->
# TransactionalId, DESCRIBE_CONFIGS -> DescribeConfigs).


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def from_camel(enum, text: str):
    key = text.replace("_", "").upper()
    for member in enum:
        if member.name.replace("_", "") == key:
            return member
    raise ValueError(f"unknown {enum.__name__}: {text!r}")


RESOURCE_TYPES = (
    ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER, ResourceType.TRANSACTIONAL_ID,
    ResourceType.DELEGATION_TOKEN, ResourceType.USER,
)  # fmt: skip


def resource_path(pattern: ResourcePattern) -> str:
    root = LITERAL_ROOT if pattern.pattern_type == PatternType.LITERAL else PREFIXED_ROOT
    return f"{root}/{camel(pattern.resource_type.name)}/{pattern.name}"


def encode_acls(entries: Iterable[AccessControlEntry]) -> bytes:
    acls = [
        {"principal": e.principal, "permissionType": camel(e.permission_type.name),
         "operation": camel(e.operation.name), "host": e.host}
        for e in sorted(entries, key=lambda e: (e.principal, e.host, e.operation, e.permission_type))
    ]  # fmt: skip
    return json.dumps({"version": 1, "acls": acls}, separators=(",", ":")).encode()


def decode_acls(data: bytes | None) -> list[AccessControlEntry]:
    if not data:
        return []
    out = []
    for a in json.loads(data).get("acls", []):
        out.append(
            AccessControlEntry(
                a["principal"], a.get("host", "*"), from_camel(AclOperation, a["operation"]),
                from_camel(AclPermissionType, a["permissionType"]),
            )
        )  # fmt: skip
    return out


def encode_change(pattern: ResourcePattern) -> tuple[str, bytes]:
    """(change path, znode data) announcing a change to one pattern's ACLs."""
    rtype = camel(pattern.resource_type.name)
    if pattern.pattern_type == PatternType.LITERAL:
        return LITERAL_CHANGES, f"{rtype}:{pattern.name}".encode()
    body = {"version": 1, "resourceType": rtype, "name": pattern.name,
            "patternType": camel(pattern.pattern_type.name)}  # fmt: skip
    return EXTENDED_CHANGES, json.dumps(body, separators=(",", ":")).encode()


def decode_change(path: str, data: bytes) -> ResourcePattern:
    if path == LITERAL_CHANGES:
        rtype, _, name = data.decode().partition(":")
        return ResourcePattern(from_camel(ResourceType, rtype), name, PatternType.LITERAL)
    body = json.loads(data)
    return ResourcePattern(
        from_camel(ResourceType, body["resourceType"]), body["name"],
        from_camel(PatternType, body["patternType"]),
    )  # fmt: skip


def group_by_pattern(bindings: Iterable[AclBinding]) -> dict[ResourcePattern, list]:
    out: dict[ResourcePattern, list] = {}
    for b in bindings:
        out.setdefault(b.pattern, []).append(b.entry)
    return out


class FileAclStore:
    """A single broker's ACLs in `<data dir>/acls.json`."""

    def __init__(self, authorizer: AclAuthorizer, data_dir: str):
        self.authorizer = authorizer
        self.path = os.path.join(data_dir, "acls.json")

    async def start(self) -> None:
        try:
            with open(self.path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return
        for r in state.get("resources", []):
            pattern = ResourcePattern(
                from_camel(ResourceType, r["resourceType"]), r["name"],
                from_camel(PatternType, r["patternType"]),
            )  # fmt: skip
            self.authorizer.set_resource(pattern, decode_acls(json.dumps(r).encode()))

    async def stop(self) -> None:
        pass

    def _save(self) -> None:
        resources = []
        for pattern, entries in group_by_pattern(self.authorizer.bindings()).items():
            r = json.loads(encode_acls(entries))
            r.update(resourceType=camel(pattern.resource_type.name), name=pattern.name,
                     patternType=camel(pattern.pattern_type.name))  # fmt: skip
            resources.append(r)
        atomic_write(self.path, json.dumps({"version": 1, "resources": resources}) + "\n")

    async def add(self, bindings: list[AclBinding]) -> None:
        added = [b for b in bindings if self.authorizer.add(b)]
        self._save_or_undo(lambda: [self.authorizer.remove(b) for b in added])

    async def remove(self, bindings: list[AclBinding]) -> None:
        removed = [b for b in bindings if self.authorizer.remove(b)]
        self._save_or_undo(lambda: [self.authorizer.add(b) for b in removed])

    def _save_or_undo(self, undo) -> None:
        try:
            self._save()
        except OSError:
            undo()  # nothing promised that a restart would forget
            raise


class ZkAclStore:
    """ACLs in ZooKeeper, Kafka's layout; changes from every broker followed by watches."""

    def __init__(self, authorizer: AclAuthorizer, metadata):
        self.authorizer = authorizer
        self.metadata = metadata  # ZkMetadata: its client, retrying() and _spawn()
        self.zk = metadata.zk
        self._seen: dict[str, int] = {LITERAL_CHANGES: -1, EXTENDED_CHANGES: -1}
        self._watchers: dict[str, object] = {}
        self._lock = asyncio.Lock()
        self._last_purge = 0.0

    async def start(self) -> None:
        # Kafka's createAclPaths: every resource type's parent under both roots.
        paths = [LITERAL_CHANGES, EXTENDED_CHANGES] + [
            f"{root}/{camel(rtype.name)}" for root in (LITERAL_ROOT, PREFIXED_ROOT)
            for rtype in RESOURCE_TYPES
        ]  # fmt: skip
        for path in paths:
            await self.metadata.retrying(lambda path=path: self.zk.ensure_path(path))
        for path in (LITERAL_CHANGES, EXTENDED_CHANGES):
            await self.metadata.retrying(lambda path=path: self._read_changes(path, initial=True))
        await self.metadata.retrying(self._load_all)

    async def stop(self) -> None:
        pass

    async def _load_all(self) -> None:
        for root, pattern_type in ((LITERAL_ROOT, PatternType.LITERAL),
                                   (PREFIXED_ROOT, PatternType.PREFIXED)):  # fmt: skip
            for rtype in RESOURCE_TYPES:
                try:
                    names = await self.zk.get_children(f"{root}/{camel(rtype.name)}")
                except _zk().NoNodeError:
                    continue
                for name in names:
                    await self._read_resource(ResourcePattern(rtype, name, pattern_type))

    async def _read_resource(self, pattern: ResourcePattern) -> tuple[list, int]:
        """Re-read one pattern's znode into the authorizer; (entries, znode version or -1)."""
        try:
            data, stat = await self.zk.get(resource_path(pattern))
        except _zk().NoNodeError:
            self.authorizer.set_resource(pattern, [])
            return [], -1
        try:
            entries = decode_acls(data)
        except (ValueError, KeyError) as e:
            log.error("acl_znode_unreadable", path=resource_path(pattern), error=repr(e))
            entries = []
        self.authorizer.set_resource(pattern, entries)
        return entries, stat.version

    def _watcher(self, path: str):
        w = self._watchers.get(path)
        if w is None:
            w = self._watchers[path] = self.zk.watcher(
                lambda _e: self.metadata._spawn(
                    self.metadata.retrying(lambda: self._read_changes(path)), path
                )
            )
        return w

    async def _read_changes(self, path: str, initial: bool = False) -> None:
        children = await self.zk.get_children(path, watch=self._watcher(path))
        seqs = sorted(
            (int(c[len(CHANGE_PREFIX):]), c) for c in children if c.startswith(CHANGE_PREFIX)
        )  # fmt: skip
        if initial:  # everything before now is read with the ACLs themselves
            self._seen[path] = seqs[-1][0] if seqs else -1
            return
        for seq, child in seqs:
            if seq <= self._seen[path]:
                continue
            self._seen[path] = seq
            try:
                data, _ = await self.zk.get(f"{path}/{child}")
                pattern = decode_change(path, data)
            except _zk().NoNodeError:
                continue  # purged meanwhile: its change was for a pattern we read since
            except (ValueError, KeyError) as e:
                log.error("acl_change_unreadable", path=f"{path}/{child}", error=repr(e))
                continue
            await self._read_resource(pattern)

    async def add(self, bindings: list[AclBinding]) -> None:
        await self._update(bindings, adding=True)

    async def remove(self, bindings: list[AclBinding]) -> None:
        await self._update(bindings, adding=False)

    async def _update(self, bindings: list[AclBinding], adding: bool) -> None:
        async with self._lock:
            for pattern, entries in group_by_pattern(bindings).items():
                await self.metadata.retrying(
                    lambda p=pattern, e=entries: self._update_resource(p, e, adding)
                )
            await self._purge_old_changes()

    async def _update_resource(self, pattern: ResourcePattern, change: list, adding: bool) -> None:
        """Read-modify-write one pattern's znode (conditional on its version, as Kafka's
        updateResourceAcls), then announce the change."""
        Z = _zk()
        path = resource_path(pattern)
        while True:
            current, version = await self._read_resource(pattern)
            new = set(current) | set(change) if adding else set(current) - set(change)
            if new == set(current):
                return
            try:
                if not new:
                    await self.zk.delete(path, version)
                elif version < 0:
                    await self.zk.create(path, encode_acls(new), makepath=True)
                else:
                    await self.zk.set(path, encode_acls(new), version)
            except (Z.BadVersionError, Z.NodeExistsError, Z.NoNodeError):
                continue  # another broker wrote it meanwhile: read again
            break
        self.authorizer.set_resource(pattern, new)
        change_path, data = encode_change(pattern)
        await self.zk.create(f"{change_path}/{CHANGE_PREFIX}", data, sequence=True)

    async def _purge_old_changes(self) -> None:
        """Kafka's writers delete change notifications older than 15 minutes (here at most once
        a minute: reading every notification's stat is one round trip each)."""
        if time.monotonic() - self._last_purge < 60:
            return
        self._last_purge = time.monotonic()
        Z = _zk()
        cutoff_ms = (time.time() - CHANGE_EXPIRY_S) * 1000
        for path in (LITERAL_CHANGES, EXTENDED_CHANGES):
            try:
                children = await self.zk.get_children(path)
            except Z.NoNodeError:
                continue
            for child in children:
                try:
                    _, stat = await self.zk.get(f"{path}/{child}")
                    if stat.ctime < cutoff_ms:
                        await self.zk.delete(f"{path}/{child}")
                except Z.NoNodeError:
                    pass


def _zk():
    from pykbroker.cluster import zk

    return zk

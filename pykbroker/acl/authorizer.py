"""Kafka's ACL decision logic (AclAuthorizer / StandardAuthorizer), sans-io.

No I/O here: `AclAuthorizer` holds ACL bindings in memory and answers `authorize(...)`; the
broker feeds it from a store (ZooKeeper or a file, see store.py) and calls it from handlers.

Semantics, as Kafka documents them:
- super users (`super.users`) are allowed everything;
- an ACL applies to a resource when its pattern is LITERAL with the resource's name, LITERAL
  `*` (any name of that type), or PREFIXED with a prefix of the name;
- it applies to a principal when it names that principal or `User:*`, and to a client host
  when its host is that address or `*`;
- any applicable DENY for the operation (or ALL) wins over every ALLOW;
- an ALLOW for the operation, ALL, or an operation implying it (READ/WRITE/DELETE/ALTER imply
  DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS) allows;
- with no ACL at all on the resource (for anyone), `allow.everyone.if.no.acl.found` decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

CLUSTER_NAME = "kafka-cluster"  # the one CLUSTER resource's name
WILDCARD = "*"  # a LITERAL pattern's name matching every resource of its type
WILDCARD_PRINCIPAL = "User:*"
WILDCARD_HOST = "*"


class ResourceType(IntEnum):  # org.apache.kafka.common.resource.ResourceType codes
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(IntEnum):  # org.apache.kafka.common.resource.PatternType codes
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(IntEnum):  # org.apache.kafka.common.acl.AclOperation codes
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class AclPermissionType(IntEnum):  # org.apache.kafka.common.acl.AclPermissionType codes
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


Op = AclOperation
RT = ResourceType

# An ALLOW of any of these operations allows the key operation (ALL always does).
_IMPLIED_BY = {op: frozenset((op, Op.ALL)) for op in Op}
_IMPLIED_BY[Op.DESCRIBE] = frozenset((Op.DESCRIBE, Op.READ, Op.WRITE, Op.DELETE, Op.ALTER, Op.ALL))
_IMPLIED_BY[Op.DESCRIBE_CONFIGS] = frozenset((Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS, Op.ALL))

# The operations each resource type has (Kafka's authorized-operations bitfields use these).
SUPPORTED_OPERATIONS = {
    RT.TOPIC: (Op.READ, Op.WRITE, Op.CREATE, Op.DELETE, Op.ALTER, Op.DESCRIBE,
               Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS),
    RT.GROUP: (Op.READ, Op.DESCRIBE, Op.DELETE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS),
    RT.CLUSTER: (Op.CREATE, Op.CLUSTER_ACTION, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS,
                 Op.IDEMPOTENT_WRITE, Op.ALTER, Op.DESCRIBE),
    RT.TRANSACTIONAL_ID: (Op.DESCRIBE, Op.WRITE),
    RT.DELEGATION_TOKEN: (Op.DESCRIBE,),
    RT.USER: (Op.CREATE_TOKENS, Op.DESCRIBE_TOKENS),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ResourcePattern:
    resource_type: ResourceType
    name: str
    pattern_type: PatternType = PatternType.LITERAL

    def __str__(self) -> str:  # Kafka's ResourcePattern.toString, which kafka-acls prints
        return (
            f"ResourcePattern(resourceType={self.resource_type.name}, name={self.name}, "
            f"patternType={self.pattern_type.name})"
        )


@dataclass(frozen=True, slots=True)
class AccessControlEntry:
    principal: str
    host: str
    operation: AclOperation
    permission_type: AclPermissionType

    def __str__(self) -> str:  # Kafka's AccessControlEntry.toString
        return (
            f"(principal={self.principal}, host={self.host}, operation={self.operation.name}, "
            f"permissionType={self.permission_type.name})"
        )


@dataclass(frozen=True, slots=True)
class AclBinding:
    pattern: ResourcePattern
    entry: AccessControlEntry


@dataclass(frozen=True, slots=True)
class AclBindingFilter:
    """Kafka's AclBindingFilter: None (null) fields and ANY match everything; MATCH patterns
    match the patterns that would apply to the named resource."""

    resource_type: ResourceType = RT.ANY
    name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: AclOperation = Op.ANY
    permission_type: AclPermissionType = AclPermissionType.ANY

    def unknown_field(self) -> str | None:
        """The first UNKNOWN field (a filter with one is invalid), or None."""
        for field in ("resource_type", "pattern_type", "operation", "permission_type"):
            if getattr(self, field) == 0:
                return field
        return None

    def matches(self, b: AclBinding) -> bool:
        p, e = b.pattern, b.entry
        if self.resource_type != RT.ANY and self.resource_type != p.resource_type:
            return False
        pt = self.pattern_type
        if pt not in (PatternType.ANY, PatternType.MATCH) and pt != p.pattern_type:
            return False
        if self.name is not None:
            if pt == PatternType.ANY or pt == p.pattern_type:
                if self.name != p.name:
                    return False
            elif p.pattern_type == PatternType.LITERAL:
                if self.name != p.name and p.name != WILDCARD:
                    return False
            elif not self.name.startswith(p.name):  # MATCH against a PREFIXED pattern
                return False
        return (
            (self.principal is None or self.principal == e.principal)
            and (self.host is None or self.host == e.host)
            and (self.operation == Op.ANY or self.operation == e.operation)
            and (self.permission_type == AclPermissionType.ANY
                 or self.permission_type == e.permission_type)
        )  # fmt: skip


def parse_principal(principal: str) -> tuple[str, str]:
    """'User:alice' -> ('User', 'alice'); ValueError when there is no type (Kafka's
    SecurityUtils.parseKafkaPrincipal)."""
    kind, sep, name = principal.partition(":")
    if not sep or not kind or not name:
        raise ValueError(f"Invalid principal: {principal!r}")
    return kind, name


def parse_super_users(value: str | None) -> frozenset[str]:
    """`super.users`: principals separated by semicolons (`User:alice;User:bob`)."""
    if not value:
        return frozenset()
    return frozenset(p.strip() for p in value.split(";") if p.strip())


class AuthorizerNotReady(RuntimeError):
    """A decision asked for before the ACLs were loaded (the broker is still starting)."""


class AclAuthorizer:
    """The ACLs of one cluster, indexed for authorize(); decisions are cached until the next
    change (a broker asks the same few questions over and over).

    With ready=False every decision raises AuthorizerNotReady until `ready` is set (once the
    store is read): a request that early fails (its connection closes, clients reconnect and
    retry) instead of being refused or allowed from an empty set of ACLs."""

    _CACHE_MAX = 100_000

    def __init__(self, super_users: Iterable[str] = (), allow_if_no_acl: bool = False,
                 ready: bool = True):  # fmt: skip
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self.ready = ready
        # (resource type, name) -> entries, for LITERAL patterns (the wildcard `*` included)
        self._literal: dict[tuple[int, str], set[AccessControlEntry]] = {}
        # resource type -> prefix -> entries, and the prefix lengths in use per type
        self._prefixed: dict[int, dict[str, set[AccessControlEntry]]] = {}
        self._prefix_lengths: dict[int, dict[int, int]] = {}  # type -> {length: prefixes}
        self._cache: dict[tuple, bool] = {}
        self.count = 0

    # --- changes --------------------------------------------------------------------------

    def _entries(self, pattern: ResourcePattern) -> set[AccessControlEntry] | None:
        rt = int(pattern.resource_type)
        if pattern.pattern_type == PatternType.LITERAL:
            return self._literal.get((rt, pattern.name))
        return self._prefixed.get(rt, {}).get(pattern.name)

    def add(self, binding: AclBinding) -> bool:
        """Add one binding; False if it was already there."""
        p = binding.pattern
        rt = int(p.resource_type)
        entries = self._entries(p)
        if entries is None:
            entries = set()
            if p.pattern_type == PatternType.LITERAL:
                self._literal[(rt, p.name)] = entries
            else:
                self._prefixed.setdefault(rt, {})[p.name] = entries
                lengths = self._prefix_lengths.setdefault(rt, {})
                lengths[len(p.name)] = lengths.get(len(p.name), 0) + 1
                self._prefix_lengths[rt] = dict(sorted(lengths.items()))
        elif binding.entry in entries:
            return False
        entries.add(binding.entry)
        self.count += 1
        self._cache.clear()
        return True

    def remove(self, binding: AclBinding) -> bool:
        p = binding.pattern
        entries = self._entries(p)
        if not entries or binding.entry not in entries:
            return False
        entries.discard(binding.entry)
        self.count -= 1
        if not entries:
            rt = int(p.resource_type)
            if p.pattern_type == PatternType.LITERAL:
                del self._literal[(rt, p.name)]
            else:
                del self._prefixed[rt][p.name]
                lengths = self._prefix_lengths[rt]
                lengths[len(p.name)] -= 1
                if not lengths[len(p.name)]:
                    del lengths[len(p.name)]
        self._cache.clear()
        return True

    def set_resource(self, pattern: ResourcePattern, entries: Iterable[AccessControlEntry]) -> None:
        """Replace every entry of one resource pattern (what a store read of one znode gives)."""
        for entry in list(self._entries(pattern) or ()):
            self.remove(AclBinding(pattern, entry))
        for entry in entries:
            self.add(AclBinding(pattern, entry))
        self._cache.clear()

    def resource_entries(self, pattern: ResourcePattern) -> set[AccessControlEntry]:
        return set(self._entries(pattern) or ())

    # --- reads ----------------------------------------------------------------------------

    def bindings(self, flt: AclBindingFilter | None = None) -> list[AclBinding]:
        out = []
        for (rt, name), entries in self._literal.items():
            pattern = ResourcePattern(RT(rt), name, PatternType.LITERAL)
            out += [AclBinding(pattern, e) for e in entries]
        for rt, by_prefix in self._prefixed.items():
            for name, entries in by_prefix.items():
                pattern = ResourcePattern(RT(rt), name, PatternType.PREFIXED)
                out += [AclBinding(pattern, e) for e in entries]
        if flt is not None:
            out = [b for b in out if flt.matches(b)]
        return out

    def _applicable(self, rt: int, name: str) -> list[set[AccessControlEntry]]:
        """The entry sets of every pattern applying to the resource (rt, name)."""
        literal = self._literal
        found = []
        entries = literal.get((rt, name))
        if entries:
            found.append(entries)
        if name != WILDCARD:
            entries = literal.get((rt, WILDCARD))
            if entries:
                found.append(entries)
        lengths = self._prefix_lengths.get(rt)
        if lengths:
            by_prefix = self._prefixed[rt]
            for n in lengths:
                if n > len(name):
                    break
                entries = by_prefix.get(name[:n])
                if entries:
                    found.append(entries)
        return found

    def authorize(self, principal: str, host: str, operation: int, resource_type: int,
                  name: str) -> bool:  # fmt: skip
        key = (principal, host, operation, resource_type, name)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        result = self._decide(principal, host, operation, resource_type, name)
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[key] = result
        return result

    def _decide(self, principal: str, host: str, operation: int, resource_type: int,
                name: str) -> bool:  # fmt: skip
        if not self.ready:  # nothing is cached before then: every question comes here
            raise AuthorizerNotReady("the ACLs are not loaded yet")
        if principal in self.super_users:
            return True
        found = self._applicable(resource_type, name)
        if not found:
            return self.allow_if_no_acl
        allowing = _IMPLIED_BY[operation]
        allowed = False
        for entries in found:
            for e in entries:
                if e.principal != principal and e.principal != WILDCARD_PRINCIPAL:
                    continue
                if e.host != host and e.host != WILDCARD_HOST:
                    continue
                if e.permission_type == AclPermissionType.DENY:
                    if e.operation == operation or e.operation == Op.ALL:
                        return False
                elif e.operation in allowing:
                    allowed = True
        return allowed

    def authorize_any(self, principal: str, host: str, operation: int, resource_type: int) -> bool:
        """Kafka's authorizeByResourceType: may the principal do `operation` on at least one
        resource of the type? True when an ALLOW pattern exists that no DENY pattern covers
        (a DENY on `*`, on the same literal name, or on a prefix of the allowed name)."""
        if not self.ready:
            raise AuthorizerNotReady("the ACLs are not loaded yet")
        if principal in self.super_users:
            return True
        allowing = _IMPLIED_BY[operation]
        allow: list[ResourcePattern] = []
        deny_literal: set[str] = set()
        deny_prefix: list[str] = []
        any_acl = False
        for b in self.bindings(AclBindingFilter(resource_type=RT(resource_type))):
            any_acl = True
            e = b.entry
            if e.principal != principal and e.principal != WILDCARD_PRINCIPAL:
                continue
            if e.host != host and e.host != WILDCARD_HOST:
                continue
            if e.permission_type == AclPermissionType.DENY:
                if e.operation == operation or e.operation == Op.ALL:
                    if b.pattern.pattern_type == PatternType.LITERAL:
                        deny_literal.add(b.pattern.name)
                    else:
                        deny_prefix.append(b.pattern.name)
            elif e.operation in allowing:
                allow.append(b.pattern)
        if not any_acl:
            return self.allow_if_no_acl
        if WILDCARD in deny_literal:
            return False
        for p in allow:
            if any(p.name.startswith(d) for d in deny_prefix):
                continue
            if p.pattern_type == PatternType.LITERAL and p.name in deny_literal:
                continue
            return True
        return False

    def authorized_operations(self, principal: str, host: str, resource_type: int,
                              name: str) -> set[int]:  # fmt: skip
        """Kafka's authorized operations of a resource: the codes of the operations allowed
        (the wire's bitfield)."""
        return {
            int(op)
            for op in SUPPORTED_OPERATIONS.get(RT(resource_type), ())
            if self.authorize(principal, host, op, resource_type, name)
        }


def all_operations(resource_type: int) -> set[int]:
    """Every operation of a resource type (what Kafka reports without an authorizer)."""
    return {int(op) for op in SUPPORTED_OPERATIONS.get(RT(resource_type), ())}

"""Server-side partition assignors of KIP-848 consumer groups: `uniform` and `range`.

Plain functions (no I/O): members' subscriptions and the topics' partition counts in, a target
assignment out. `group.consumer.assignors` lists the ones a group may use (Kafka's names); the
first is the default and a member's ServerAssignor picks another.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

# topic id -> partitions
Assignment = dict[uuid.UUID, frozenset[int]]


@dataclass(frozen=True, slots=True)
class MemberSpec:
    subscribed: frozenset[uuid.UUID]  # topic ids the member subscribes to (that exist)
    rack: str | None = None


def _sorted_topics(topics: Mapping[uuid.UUID, int]) -> list[uuid.UUID]:
    return sorted(topics, key=str)


def uniform(
    members: Mapping[str, MemberSpec],
    topics: Mapping[uuid.UUID, int],
    previous: Mapping[str, Assignment],
) -> dict[str, Assignment]:
    """Kafka's UniformAssignor: every member gets as many partitions as every other member that
    could take them (within one), and partitions stay where they were whenever that allows.

    1. each member keeps the previous partitions it still subscribes to, up to its quota;
    2. unassigned partitions go, one at a time, to the least-loaded member subscribed to them;
    3. partitions move from the most- to the least-loaded eligible member until no move helps.
    """
    if not members:
        return {}
    ids = sorted(members)
    owned: dict[str, set[tuple[uuid.UUID, int]]] = {m: set() for m in ids}
    homogeneous = len({members[m].subscribed for m in ids}) == 1
    total = sum(topics[t] for t in members[ids[0]].subscribed if t in topics) if homogeneous else 0
    quota = -(-total // len(ids)) if homogeneous else None  # ceil: extra slots are first-come
    floor = total // len(ids) if homogeneous else 0
    extra = total - floor * len(ids) if homogeneous else 0
    taken: set[tuple[uuid.UUID, int]] = set()
    for m in ids:
        keep = sorted(
            (t, p)
            for t, parts in previous.get(m, {}).items()
            if t in members[m].subscribed and t in topics
            for p in parts
            if p < topics[t]
        )
        keep = [tp for tp in keep if tp not in taken]
        if quota is not None:
            limit = floor
            if extra and len(keep) > floor:
                limit, extra = quota, extra - 1
            keep = keep[:limit]
        owned[m].update(keep)
        taken.update(keep)
    eligible: dict[uuid.UUID, list[str]] = {}
    for t in _sorted_topics(topics):
        eligible[t] = [m for m in ids if t in members[m].subscribed]
    for t in _sorted_topics(topics):
        candidates = eligible[t]
        if not candidates:
            continue
        for p in range(topics[t]):
            if (t, p) in taken:
                continue
            target = min(candidates, key=lambda m: (len(owned[m]), m))
            owned[target].add((t, p))
            taken.add((t, p))
    _balance(owned, eligible)
    return {m: _to_assignment(owned[m]) for m in ids}


def _balance(owned: dict[str, set[tuple[uuid.UUID, int]]], eligible: dict[uuid.UUID, list[str]]):
    """Move partitions from a member with at least two more than an eligible other one."""
    for _ in range(sum(len(s) for s in owned.values()) + 1):
        moved = False
        for src in sorted(owned, key=lambda m: (-len(owned[m]), m)):
            for tp in sorted(owned[src], key=lambda x: (str(x[0]), x[1]), reverse=True):
                dst = min(eligible[tp[0]], key=lambda m: (len(owned[m]), m))
                if len(owned[dst]) + 1 < len(owned[src]):
                    owned[src].discard(tp)
                    owned[dst].add(tp)
                    moved = True
                    break
            if moved:
                break
        if not moved:
            return


def range_(
    members: Mapping[str, MemberSpec],
    topics: Mapping[uuid.UUID, int],
    previous: Mapping[str, Assignment],
) -> dict[str, Assignment]:
    """Kafka's RangeAssignor, per topic: the subscribed members in member id order each take a
    contiguous range, the first (partitions % members) one partition more, so members with the
    same subscription get the same partition numbers of co-partitioned topics."""
    out: dict[str, dict[uuid.UUID, set[int]]] = {m: {} for m in members}
    for t in _sorted_topics(topics):
        subs = sorted(m for m in members if t in members[m].subscribed)
        if not subs:
            continue
        n = topics[t]
        per, extra = divmod(n, len(subs))
        start = 0
        for i, m in enumerate(subs):
            count = per + (1 if i < extra else 0)
            if count:
                out[m][t] = set(range(start, start + count))
            start += count
    return {m: {t: frozenset(ps) for t, ps in a.items()} for m, a in out.items()}


def _to_assignment(tps: set[tuple[uuid.UUID, int]]) -> Assignment:
    out: dict[uuid.UUID, set[int]] = {}
    for t, p in tps:
        out.setdefault(t, set()).add(p)
    return {t: frozenset(ps) for t, ps in out.items()}


ASSIGNORS = {"uniform": uniform, "range": range_}

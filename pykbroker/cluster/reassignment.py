"""Leader elections on request and partition reassignment (KIP-455), as plain decisions.

The controller (controller.py) is the shell: it reads these answers and writes ZooKeeper.

Reassignment, as Kafka's ZooKeeper-mode controller does it: the topic znode holds, for a
partition being moved, `replicas` = the target followed by the original replicas not in it
(the union: every one of them replicates meanwhile), `adding_replicas` = target - original and
`removing_replicas` = original - target. The adding replicas start following (they see the
topic znode) and the leader takes them into the ISR once caught up. When the whole target is
in the ISR, the controller completes the move in one transaction: the state znode gets a
leader from the target (the current one if it is in the target and serving), the ISR without
the removed replicas and a new leader epoch, and the topic znode gets replicas = target with
nothing adding or removing; the removed replicas then stop and delete their logs. A cancel
(null replicas) is the same move back to the original replicas.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import ErrorCode

PREFERRED, UNCLEAN = 0, 1  # ElectLeaders' election_type
ELECTION_NAMES = {PREFERRED: "PREFERRED", UNCLEAN: "UNCLEAN"}


@dataclass(frozen=True, slots=True)
class Election:
    """An election's outcome for one partition: a new (leader, ISR), or an error."""

    leader: int = -1
    isr: tuple[int, ...] = ()
    error: int = ErrorCode.NONE
    message: str | None = None


def elect(election_type: int, st, serving: set[int], name: str) -> Election:
    """ElectLeaders for one partition (Kafka's PreferredReplicaPartitionLeaderElectionStrategy
    and its unclean election strategy). `serving`: live brokers not shutting down."""
    if election_type == PREFERRED:
        preferred = st.replicas[0] if st.replicas else -1
        if st.leader == preferred:
            return Election(error=ErrorCode.ELECTION_NOT_NEEDED,
                            message=f"Leader is already the preferred replica for {name}")  # fmt: skip
        if preferred not in serving or preferred not in st.isr:
            return Election(
                error=ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE,
                message=f"Failed to elect leader for partition {name} under strategy "
                "PreferredReplicaPartitionLeaderElectionStrategy",
            )
        return Election(preferred, tuple(st.isr))  # the ISR stays as it is
    if election_type == UNCLEAN:
        if st.leader >= 0 and st.leader in serving:
            return Election(error=ErrorCode.ELECTION_NOT_NEEDED,
                            message=f"Partition {name} has a live leader")  # fmt: skip
        in_sync = [r for r in st.replicas if r in st.isr and r in serving]
        if in_sync:
            return Election(in_sync[0], tuple(r for r in st.isr if r in serving))
        online = [r for r in st.replicas if r in serving]
        if online:  # out of sync: what it lacks of the committed log is lost, as asked
            return Election(online[0], (online[0],))
        return Election(
            error=ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE,
            message=f"Failed to elect leader for partition {name} under strategy "
            "UncleanLeaderElectionStrategy",
        )
    return Election(error=ErrorCode.INVALID_REQUEST,
                    message=f"Unknown election type {election_type}")  # fmt: skip


def validate_replicas(replicas: list[int], live: set[int]) -> tuple[int, str] | None:
    """Kafka's checks of a reassignment's target replicas: (error, message) or None."""
    if not replicas:
        return ErrorCode.INVALID_REPLICA_ASSIGNMENT, (
            "Empty replica list specified in partition reassignment."
        )
    if len(set(replicas)) != len(replicas):
        return ErrorCode.INVALID_REPLICA_ASSIGNMENT, (
            f"Duplicate replica ids in partition reassignment replica list: {replicas}"
        )
    if any(r < 0 for r in replicas):
        return (
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            f"Invalid broker id in replica list: {replicas}",
        )
    if not set(replicas) <= live:
        return ErrorCode.INVALID_REPLICA_ASSIGNMENT, (
            f"Replica assignment has brokers that are not alive. Replica list: {replicas}, "
            f"live broker list: {sorted(live)}"
        )
    return None


def original_replicas(st) -> list[int]:
    """The replicas a partition had before its reassignment (all of them if none runs)."""
    return [r for r in st.replicas if r not in st.adding]


def target_replicas(st) -> list[int]:
    return [r for r in st.replicas if r not in st.removing]


def reassign_to(st, target: list[int]) -> tuple[list[int], list[int], list[int]]:
    """(replicas, adding, removing) to write for a move of `st` to `target` (a new target
    replaces one in progress; the original replicas stay the origin, as in Kafka)."""
    origin = original_replicas(st)
    full = list(dict.fromkeys([*target, *origin]))
    return full, [r for r in full if r not in origin], [r for r in full if r not in target]


def cancel(st) -> tuple[list[int], list[int], list[int]]:
    """(replicas, adding, removing) to write to move back to the original replicas."""
    origin = original_replicas(st)
    full = list(dict.fromkeys([*origin, *st.replicas]))
    return full, [], [r for r in full if r not in origin]


def completion(st, serving: set[int]) -> tuple[int, list[int]] | None:
    """A reassignment whose whole target is in the ISR completes: (leader, ISR) for its state
    znode, written with the topic znode's replicas = target. None while it must wait (a
    target replica is still catching up, or no target replica can lead)."""
    if not st.reassigning or st.zk_version < 0:
        return None
    target = target_replicas(st)
    if not target or not all(r in st.isr for r in target):
        return None
    isr = [r for r in st.isr if r in target]
    if st.leader in target and st.leader in serving:
        return st.leader, isr
    candidates = [r for r in target if r in isr and r in serving]
    if not candidates:
        return None
    return candidates[0], isr

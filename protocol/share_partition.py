"""A share-partition (KIP-932): which records of one topic partition a share group has
delivered, to whom, and how they were acknowledged. Sans-io: plain state and functions, time
passed in, so that every transition has a deterministic test (tests/test_share_partition.py).

The share-partition start offset (SPSO) is the first offset not yet finished with; the end
offset (SPEO) is one past the last offset ever acquired. Offsets in [SPSO, SPEO) are in flight,
each with a state and a delivery count; offsets at or past SPEO are available and have never
been delivered; offsets below SPSO are done. At most `max_in_flight`
(`group.share.partition.max.record.locks`) offsets may be in flight: SPEO - SPSO never passes it
through acquisition.

Acquiring a record bumps its delivery count and locks it for one member until `lock_ms`
(`group.share.record.lock.duration.ms`) passes. The member then acknowledges it: ACCEPT (done),
RELEASE (available again), REJECT (archived: never delivered again), or GAP for an offset with
no record. A lock that expires, or a member that goes away, releases the record. A released
record that was delivered `delivery_limit` times (`group.share.delivery.count.limit`) is archived
instead of made available again (a poison record stops there).

Persisted states are Kafka's: AVAILABLE 0, ACKNOWLEDGED 2, ARCHIVED 4 (ACQUIRED 1 is never
written: a lock does not survive the leader, the record is available again with its count).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

AVAILABLE, ACQUIRED, ACKNOWLEDGED, ARCHIVED = 0, 1, 2, 4
GAP, ACCEPT, RELEASE, REJECT = 0, 1, 2, 3
STATE_NAMES = {AVAILABLE: "AVAILABLE", ACQUIRED: "ACQUIRED", ACKNOWLEDGED: "ACKNOWLEDGED",
               ARCHIVED: "ARCHIVED"}  # fmt: skip

# A state batch as persisted: (first offset, last offset, delivery state, delivery count).
StateBatch = tuple[int, int, int, int]


class InvalidRecordState(ValueError):
    """An acknowledgement for an offset this member does not hold (INVALID_RECORD_STATE)."""


class InvalidAcknowledgement(ValueError):
    """A malformed acknowledgement batch (INVALID_REQUEST)."""


@dataclass(slots=True)
class InFlight:
    state: int
    delivery_count: int
    member_id: str | None = None
    deadline_ms: int = 0


class SharePartition:
    def __init__(
        self, start_offset: int, *, max_in_flight: int = 2000, lock_ms: int = 30000,
        delivery_limit: int = 5, state_batches: list[StateBatch] | tuple = (),
        state_epoch: int = 0,
    ) -> None:  # fmt: skip
        self.start_offset = start_offset  # SPSO
        self.end_offset = start_offset  # SPEO
        self.max_in_flight = max_in_flight
        self.lock_ms = lock_ms
        self.delivery_limit = delivery_limit
        self.state_epoch = state_epoch
        self.records: dict[int, InFlight] = {}
        # No offset below this hint is AVAILABLE: fetch_offset scans from here, so a full
        # window of acquired records costs nothing to skip, request after request.
        self._hint = start_offset
        for first, last, state, count in sorted(state_batches):
            for offset in range(max(first, start_offset), last + 1):
                self.records[offset] = InFlight(state if state != ACQUIRED else AVAILABLE, count)
            self.end_offset = max(self.end_offset, last + 1)
        for offset in range(self.start_offset, self.end_offset):  # never persisted: untouched
            self.records.setdefault(offset, InFlight(AVAILABLE, 0))
        self._advance()

    # --- reading ------------------------------------------------------------------------------

    def fetch_offset(self) -> int | None:
        """Where the next acquisition starts reading the log: the first available in-flight
        offset, else SPEO; None while nothing can be acquired (window full, nothing released)."""
        records = self.records
        offset = max(self._hint, self.start_offset)
        while offset < self.end_offset and records[offset].state != AVAILABLE:
            offset += 1
        self._hint = offset
        if offset < self.end_offset:
            return offset
        if self.end_offset - self.start_offset >= self.max_in_flight:
            return None
        return self.end_offset

    def acquire(
        self, member_id: str, batches: list[tuple[int, int, bool]], max_records: int,
        now_ms: int,
    ) -> list[tuple[int, int, int]]:  # fmt: skip
        """Lock records of the log batches read for a fetch (base offset, last offset, skip:
        a control batch or an aborted transaction's, which no one may receive). New records
        are taken a whole batch at a time, as Kafka does, so `max_records` may be passed to
        reach a batch's end. Returns the acquired runs (first, last, delivery count)."""
        acquired: list[tuple[int, int, int]] = []
        taken = 0
        deadline = now_ms + self.lock_ms
        for base, last, skip in batches:
            if taken >= max_records:
                break
            for offset in range(max(base, self.start_offset), last + 1):
                if offset >= self.end_offset:
                    if offset - self.start_offset >= self.max_in_flight:
                        return _runs(acquired)
                    for gap in range(self.end_offset, offset):  # no batch held these offsets
                        self.records[gap] = InFlight(ARCHIVED, 0)
                    self.end_offset = offset + 1
                    rec = self.records[offset] = InFlight(AVAILABLE, 0)
                else:
                    rec = self.records.get(offset)
                    if rec is None or rec.state != AVAILABLE:
                        continue
                    if taken >= max_records:  # re-deliveries stop at the limit exactly
                        break
                if skip:
                    rec.state = ARCHIVED
                    continue
                rec.state = ACQUIRED
                rec.delivery_count += 1
                rec.member_id = member_id
                rec.deadline_ms = deadline
                acquired.append((offset, offset, rec.delivery_count))
                taken += 1
        self._advance()
        return _runs(acquired)

    # --- acknowledging ------------------------------------------------------------------------

    def acknowledge(
        self, member_id: str, batches: list[tuple[int, int, list[int]]]
    ) -> list[StateBatch]:
        """Apply a member's acknowledgements (first, last, types: one type for the whole range
        or one per offset), all or nothing. Returns the changed state batches to persist."""
        for first, last, types in batches:
            if last < first or not types or (len(types) != 1 and len(types) != last - first + 1):
                raise InvalidAcknowledgement(f"bad acknowledgement batch {first}-{last}")
            if any(t not in (GAP, ACCEPT, RELEASE, REJECT) for t in types):
                raise InvalidAcknowledgement(f"unknown acknowledge type in {types}")
            for offset in range(first, last + 1):
                rec = self.records.get(offset)
                if rec is None or rec.state != ACQUIRED or rec.member_id != member_id:
                    raise InvalidRecordState(
                        f"offset {offset} is not acquired by member {member_id}"
                    )
        changed = []
        for first, last, types in batches:
            for i, offset in enumerate(range(first, last + 1)):
                kind = types[0] if len(types) == 1 else types[i]
                rec = self.records[offset]
                if kind == ACCEPT:
                    rec.state = ACKNOWLEDGED
                elif kind == RELEASE:
                    self._release(rec, offset)
                else:  # REJECT, GAP
                    rec.state = ARCHIVED
                rec.member_id = None
                changed.append((offset, offset, rec.state, rec.delivery_count))
        self._advance()
        return _state_runs(changed)

    def release_member(self, member_id: str) -> list[StateBatch]:
        """Release every record a member holds (it left, or its share session closed)."""
        return self._release_where(lambda r: r.member_id == member_id)

    def expire_locks(self, now_ms: int) -> list[StateBatch]:
        """Release the records whose acquisition lock has run out."""
        return self._release_where(lambda r: r.deadline_ms <= now_ms)

    def next_deadline(self) -> int | None:
        deadlines = [r.deadline_ms for r in self.records.values() if r.state == ACQUIRED]
        return min(deadlines) if deadlines else None

    def _release_where(self, match) -> list[StateBatch]:
        changed = []
        for offset, rec in self.records.items():
            if rec.state == ACQUIRED and match(rec):
                self._release(rec, offset)
                rec.member_id = None
                changed.append((offset, offset, rec.state, rec.delivery_count))
        self._advance()
        return _state_runs(sorted(changed))

    def _release(self, rec: InFlight, offset: int) -> None:
        rec.state = ARCHIVED if rec.delivery_count >= self.delivery_limit else AVAILABLE
        if rec.state == AVAILABLE and offset < self._hint:
            self._hint = offset

    # --- moving the start ---------------------------------------------------------------------

    def move_start(self, offset: int) -> None:
        """The log start moved past SPSO (retention, DeleteRecords): those records are gone."""
        if offset <= self.start_offset:
            return
        for o in range(self.start_offset, min(offset, self.end_offset)):
            self.records.pop(o, None)
        self.start_offset = offset
        self.end_offset = max(self.end_offset, offset)
        self._advance()

    def _advance(self) -> None:
        """SPSO moves over every finished offset at the front of the window."""
        records, offset = self.records, self.start_offset
        while offset < self.end_offset and records[offset].state in (ACKNOWLEDGED, ARCHIVED):
            del records[offset]
            offset += 1
        self.start_offset = offset

    # --- persistence --------------------------------------------------------------------------

    def state_batches(self) -> list[StateBatch]:
        """The in-flight window as Kafka persists it (a held lock counts as available)."""
        return _state_runs(
            (o, o, AVAILABLE if r.state == ACQUIRED else r.state, r.delivery_count)
            for o, r in sorted(self.records.items())
        )

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATE_NAMES.values(), 0)
        for r in self.records.values():
            out[STATE_NAMES[r.state]] += 1
        return out


def _runs(acquired: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Adjacent single offsets with one delivery count joined into (first, last, count)."""
    out: list[list[int]] = []
    for first, last, count in acquired:
        if out and out[-1][1] + 1 == first and out[-1][2] == count:
            out[-1][1] = last
        else:
            out.append([first, last, count])
    return [(a, b, c) for a, b, c in out]


def _state_runs(batches) -> list[StateBatch]:
    out: list[list[int]] = []
    for first, last, state, count in batches:
        if out and out[-1][1] + 1 == first and out[-1][2] == state and out[-1][3] == count:
            out[-1][1] = last
        else:
            out.append([first, last, state, count])
    return [(a, b, c, d) for a, b, c, d in out]


def merge_state(
    batches: list[StateBatch], start_offset: int, update: list[StateBatch], new_start: int
) -> tuple[list[StateBatch], int]:
    """The share coordinator's view after a write: `update` overlays `batches` (later wins),
    and nothing below the start offset is kept. new_start -1 leaves the start as it was."""
    start = start_offset if new_start < 0 else new_start
    pieces: list[StateBatch] = []
    cuts = sorted((f, l) for f, l, _, _ in update)  # noqa: E741
    firsts = [f for f, _ in cuts]
    for first, last, state, count in batches:
        lo = first
        i = max(bisect_left(firsts, first) - 1, 0)
        while lo <= last and i < len(cuts):
            cf, cl = cuts[i]
            i += 1
            if cl < lo:
                continue
            if cf > last:
                break
            if cf > lo:
                pieces.append((lo, cf - 1, state, count))
            lo = cl + 1
        if lo <= last:
            pieces.append((lo, last, state, count))
    merged = []
    for first, last, state, count in sorted(pieces + list(update)):
        if last < start:
            continue
        merged.append((max(first, start), last, state, count))
    return _state_runs(merged), start

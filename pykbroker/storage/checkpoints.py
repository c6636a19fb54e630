"""Kafka's offset checkpoint files: `recovery-point-offset-checkpoint` (and the same format for
`replication-offset-checkpoint`, `log-start-offset-checkpoint`): a version line (0), a count
line, then one `topic partition offset` line per partition. Written atomically (files.atomic_write)."""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)

RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"


def format_offsets(offsets: dict[tuple[str, int], int]) -> str:
    lines = "".join(
        f"{topic} {partition} {offset}\n" for (topic, partition), offset in offsets.items()
    )
    return f"0\n{len(offsets)}\n{lines}"


def read_offsets(path: str) -> dict[tuple[str, int], int]:
    """The checkpoint's entries; {} when the file is missing or unreadable (logged)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    try:
        if int(lines[0]) != 0:
            raise ValueError(f"unknown version {lines[0]}")
        count = int(lines[1])
        out = {}
        for line in lines[2 : 2 + count]:
            topic, partition, offset = line.rsplit(" ", 2)
            out[(topic, int(partition))] = int(offset)
        if len(out) != count:
            raise ValueError(f"{len(out)} entries, {count} expected")
        return out
    except (IndexError, ValueError) as e:
        log.warning("bad_offset_checkpoint", path=path, error=str(e))
        return {}

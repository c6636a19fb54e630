"""`partition.metadata`: the topic id a partition directory belongs to (Kafka's
PartitionMetadataFile, KIP-516). Two lines, as Kafka writes them:

    version: 0
    topic_id: <the id, 22 characters of URL-safe base64>

A directory whose id is not its topic's holds the log of an older topic of the same name
(deleted and re-created while this broker was away); it is never served as the new one's.
"""

from __future__ import annotations

import base64
import os
import uuid

import structlog

log = structlog.get_logger(__name__)

PARTITION_METADATA_FILE = "partition.metadata"


def topic_id_str(topic_id: uuid.UUID) -> str:
    """Kafka's Uuid.toString: URL-safe base64 of the 16 bytes, without padding."""
    return base64.urlsafe_b64encode(topic_id.bytes).decode().rstrip("=")


def parse_topic_id(text: str) -> uuid.UUID:
    return uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def read_partition_metadata(directory: str) -> uuid.UUID | None:
    """The recorded topic id; None when there is no file, or one we can't read (a crash while
    writing it: the id is then assigned again, as for a directory that never had one)."""
    path = os.path.join(directory, PARTITION_METADATA_FILE)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        if fields.get("version") != "0":
            raise ValueError(f"unknown version {fields.get('version')!r}")
        return parse_topic_id(fields["topic_id"])
    except (KeyError, ValueError) as e:
        log.warning("bad_partition_metadata", path=path, error=repr(e))
        return None


def write_partition_metadata(directory: str, topic_id: uuid.UUID) -> None:
    """Written through a temp file and a rename (no fsync, as it costs milliseconds per new
    partition): a crash leaves the old file, none, or an unreadable one, and each of those
    just gets the topic's id again at the next start."""
    path = os.path.join(directory, PARTITION_METADATA_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"version: 0\ntopic_id: {topic_id_str(topic_id)}\n")
    os.replace(tmp, path)

"""Group configs (KIP-848/KIP-932): per-group overrides set with IncrementalAlterConfigs on
resource type GROUP (32), `kafka-configs --entity-type groups`.

Kafka keeps them in the metadata log; here they are a small JSON file in the first log dir
(`group-configs.json`, replaced atomically), read at start-up. A key not set takes the broker's
value (the group.share.* key named in BROKER_DEFAULTS) or Kafka's default.
"""

from __future__ import annotations

import json
import os

from pykbroker.config import ConfigKey, at_least, between, one_of
from pykbroker.storage.files import atomic_write

GROUP = 32
FILE_NAME = "group-configs.json"


def _offset_reset(value) -> str | None:
    text = str(value)
    if text in ("latest", "earliest"):
        return None
    if text.startswith("by_duration:"):
        from pykbroker.coordinator.share_fetch import parse_iso_duration_ms

        try:
            parse_iso_duration_ms(text[len("by_duration:") :])
            return None
        except ValueError as e:
            return str(e)
    return "String must be one of (case insensitive): LATEST, EARLIEST, BY_DURATION"


GROUP_CONFIGS = {
    k.name: k
    for k in (
        ConfigKey("share.auto.offset.reset", "string", "latest",
                  "Where a share group starts on a partition it has no state for.", _offset_reset),
        ConfigKey("share.isolation.level", "string", "read_uncommitted",
                  "Whether a share group reads transactional records before they commit.",
                  one_of("read_committed", "read_uncommitted")),
        ConfigKey("share.record.lock.duration.ms", "int", 30000,
                  "How long a record acquired by a share consumer stays locked.",
                  between(1000, 3600000)),
        ConfigKey("share.session.timeout.ms", "int", 45000,
                  "Session timeout of share group members.", at_least(1)),
        ConfigKey("share.heartbeat.interval.ms", "int", 5000,
                  "Heartbeat interval of share group members.", at_least(1)),
    )
}  # fmt: skip
# The broker key whose value a group takes when it sets none.
BROKER_DEFAULTS = {
    "share.record.lock.duration.ms": "group.share.record.lock.duration.ms",
    "share.session.timeout.ms": "group.share.session.timeout.ms",
    "share.heartbeat.interval.ms": "group.share.heartbeat.interval.ms",
}


def load(data_dir: str) -> dict[str, dict[str, str]]:
    try:
        with open(os.path.join(data_dir, FILE_NAME)) as f:
            return {g: dict(c) for g, c in json.load(f).items()}
    except FileNotFoundError:
        return {}


def save(data_dir: str, configs: dict[str, dict[str, str]]) -> None:
    atomic_write(os.path.join(data_dir, FILE_NAME), json.dumps(configs, sort_keys=True))

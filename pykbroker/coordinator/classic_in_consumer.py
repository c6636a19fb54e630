"""Classic members in consumer groups (KIP-848 online upgrade and downgrade)."""

from __future__ import annotations


def convert_classic_group(classic, config, topics):
    return None

"""pykbroker: a Kafka broker in Python that speaks the real Kafka wire protocol.

`pykbroker.EmbeddedBroker` runs one inside this process (see pykbroker/embedded.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pykbroker.embedded import EmbeddedBroker

__all__ = ["EmbeddedBroker"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `pykbroker` (the CLI) and the pytest plugin start quickly.
    if name == "EmbeddedBroker":
        from pykbroker.embedded import EmbeddedBroker

        return EmbeddedBroker
    raise AttributeError(f"module 'pykbroker' has no attribute {name!r}")

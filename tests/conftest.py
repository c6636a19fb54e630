from __future__ import annotations

import pytest

from pykbroker.config import SHIPPED_PROPERTIES
from pykbroker.embedded import EmbeddedBroker
from pykbroker.logs import configure

configure(level="WARNING", fmt="console")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "kafka_defaults: the broker and make_broker fixtures start from Kafka's built-in "
        "defaults alone, not config/server.properties (for outputs that show every static key)",
    )


def _properties(request) -> str | None:
    """config/server.properties, as users' brokers start from, unless the test is marked."""
    return None if request.node.get_closest_marker("kafka_defaults") else SHIPPED_PROPERTIES


@pytest.fixture
def broker(tmp_path, request):
    """A broker in this process (own thread and loop), ephemeral port, fresh data dir."""
    with EmbeddedBroker(data_dir=str(tmp_path / "data"), properties=_properties(request)) as b:
        yield b


@pytest.fixture
def make_broker(tmp_path, request):
    """Factory for brokers with config overrides; all are stopped at the end of the test."""
    started: list[EmbeddedBroker] = []

    def make(overrides: dict | None = None, data_dir: str | None = None) -> EmbeddedBroker:
        b = EmbeddedBroker(
            data_dir=data_dir or str(tmp_path / f"data{len(started)}"), overrides=overrides,
            properties=_properties(request),
        )  # fmt: skip
        b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def pytest_collection_finish(session):
    """The container images tests/test_image.py runs take minutes to make on a fresh machine:
    start making them in the background (at the lowest CPU priority) as the session starts."""
    if any(item.path.name == "test_image.py" for item in session.items):
        from image_helpers import start_background_builds

        start_background_builds()

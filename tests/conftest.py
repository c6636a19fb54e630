from __future__ import annotations

import os

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


# `make test` runs the suite on three xdist workers, a file at a time (--dist loadfile, so a
# module's shared brokers and clusters are made once). The files that take longest go out first,
# so that no worker is left with one of them at the end while the others idle. Measured with
# --durations=0 on 2 cores; the rest keep their collection order.
SLOW_FIRST = (
    "test_cluster.py",
    "test_persistence.py",
    "test_reassignment_cluster.py",
    "test_compat_quick.py",
    "test_disk_full.py",
    "test_cli_topics.py",
    "test_fuzz.py",
    "test_cli_configs.py",
    "test_cli_quotas.py",
    "test_cli_cluster.py",
    "test_admin_cluster.py",
    "test_nemesis_cluster.py",
    "test_cli_console.py",
    "test_replication_sim.py",
    "test_controlled_shutdown.py",
    "test_groups_cli_reset.py",
    "test_transactions_cluster.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest in order


def _wants_images(nodeids) -> bool:
    return any(nodeid.split("::")[0].endswith("test_image.py") for nodeid in nodeids)


def pytest_collection_finish(session):
    """The container images tests/test_image.py runs take minutes to make on a fresh machine:
    start making them in the background (at the lowest CPU priority) as the session starts.
    Under xdist the controller does it (below), once, not each worker."""
    if hasattr(session.config, "workerinput"):
        return
    if _wants_images(item.nodeid for item in session.items):
        from image_helpers import start_background_builds

        start_background_builds()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """xdist's controller: the first worker's collection says whether the images are wanted;
    the worker that runs test_image.py then waits for these builds (image_helpers' file locks)."""
    if _wants_images(ids):
        from image_helpers import start_background_builds

        start_background_builds()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Tell the workers who makes the images in the background (to raise its priority when a
    test needs them)."""
    node.workerinput["image_builder_pid"] = os.getpid()


def pytest_sessionstart(session):
    workerinput = getattr(session.config, "workerinput", None)
    if workerinput and "image_builder_pid" in workerinput:
        import image_helpers

        image_helpers.BUILDER_PID = workerinput["image_builder_pid"]

"""pytest plugin: real Kafka brokers for a test suite, without Docker or a JVM.

Installed with pykbroker (entry point `pytest11`), so the fixtures are there once
`pip install pykbroker` is done:

- `kafka_broker` (function scope): a fresh broker for this test, ephemeral port and temporary
  data directory, stopped and deleted afterwards. Full isolation; start-up is a few tens of ms.
- `kafka_broker_session` (session scope): one broker shared by every test that asks for it.
  Quicker for big suites; topics outlive tests, so give each test its own (`kafka_topic`).
- `kafka_broker_factory` (function scope): `kafka_broker_factory({"num.partitions": 3})`
  starts another broker with config overrides; all are stopped after the test.
- `kafka_topic`: a topic name unique to this test (auto-created on first use by default).

Each yields a `pykbroker.EmbeddedBroker`: `.bootstrap_servers` ("127.0.0.1:PORT") goes straight
to kafka-python, aiokafka or confluent-kafka. The brokers run on their own thread and event loop,
so sync and async tests (pytest-asyncio, anyio) both use them as they are.

Every broker starts from pykbroker's shipped config/server.properties (Kafka's development
values: a group's first rebalance without delay, session timeouts down to 1 s), or from the file
named by the ini option `kafka_broker_properties` (`none` for Kafka's built-in defaults alone).
Configure every broker of a run with the ini option `kafka_broker_overrides` (lines of
key=value), and one test's `kafka_broker` with `@pytest.mark.kafka_config({"key": value})`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pykbroker.embedded import EmbeddedBroker


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "kafka_broker_overrides",
        "pykbroker: config overrides (key=value lines) for every broker the fixtures start",
        type="linelist",
        default=[],
    )
    parser.addini(
        "kafka_broker_properties",
        "pykbroker: the server.properties every broker the fixtures start is read from "
        "(default: pykbroker's shipped one; `none`: Kafka's built-in defaults alone)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kafka_config(overrides): broker config overrides for this test's kafka_broker fixture",
    )


def _ini_overrides(config: pytest.Config) -> dict[str, str]:
    out = {}
    for line in config.getini("kafka_broker_overrides"):
        key, sep, value = line.partition("=")
        if not sep:
            raise pytest.UsageError(f"kafka_broker_overrides: expected key=value, got {line!r}")
        out[key.strip()] = value.strip()
    return out


def _properties(config: pytest.Config) -> str | None:
    from pykbroker.config import SHIPPED_PROPERTIES

    value = (config.getini("kafka_broker_properties") or "").strip()
    if not value:
        return SHIPPED_PROPERTIES
    if value.lower() == "none":
        return None
    return str(config.rootpath / value)


def _start(config: pytest.Config, overrides: dict[str, Any] | None = None) -> EmbeddedBroker:
    from pykbroker.embedded import EmbeddedBroker

    return EmbeddedBroker(
        overrides={**_ini_overrides(config), **(overrides or {})}, properties=_properties(config)
    ).start()


def _stop(broker: EmbeddedBroker) -> None:
    try:
        broker.stop()
    finally:
        broker.cleanup()


@pytest.fixture(scope="session")
def kafka_broker_session(pytestconfig: pytest.Config) -> Iterator[EmbeddedBroker]:
    """One broker for the whole test session (shared state: use unique topic names)."""
    broker = _start(pytestconfig)
    yield broker
    _stop(broker)


@pytest.fixture
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    """A fresh broker for this test: empty, on an ephemeral port, deleted afterwards."""
    overrides: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("kafka_config"))):
        overrides.update(*marker.args, **marker.kwargs)
    broker = _start(request.config, overrides)
    yield broker
    _stop(broker)


@pytest.fixture
def kafka_broker_factory(pytestconfig: pytest.Config):
    """`factory(overrides=None)` starts a broker; every one is stopped after the test."""
    started: list[EmbeddedBroker] = []

    def factory(overrides: dict[str, Any] | None = None) -> EmbeddedBroker:
        broker = _start(pytestconfig, overrides)
        started.append(broker)
        return broker

    yield factory
    for broker in reversed(started):
        _stop(broker)


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test (Kafka's legal characters, well under 249 of them)."""
    base = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name).strip("-.")[:80] or "test"
    return f"{base}-{uuid.uuid4().hex[:8]}"

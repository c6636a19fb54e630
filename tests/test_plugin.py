"""The pytest plugin shipped in the package, used as a user's suite would use it.

The plugin is loaded from its `pytest11` entry point (pykbroker is installed in this venv), so
these tests use its fixtures directly, and run small suites of their own through `pytester`.
"""

from __future__ import annotations

import asyncio

import pytest

pytest_plugins = ["pytester"]

# The inner suites run as a user's would: without this repository's other plugins.
NO_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:asyncio")


# --- the fixtures, used directly ---------------------------------------------------------------


def test_kafka_python(kafka_broker, kafka_topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    producer.send(kafka_topic, key=b"k", value=b"from kafka-python").get(10)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers,
                             consumer_timeout_ms=5000)  # fmt: skip
    consumer.assign([TopicPartition(kafka_topic, 0)])
    consumer.seek_to_beginning()
    message = next(consumer)
    assert (message.key, message.value) == (b"k", b"from kafka-python")
    consumer.close()


async def test_aiokafka(kafka_broker, kafka_topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(kafka_topic, b"from aiokafka", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers)
    await consumer.start()
    try:
        tp = TopicPartition(kafka_topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        message = await asyncio.wait_for(consumer.getone(), 10)
        assert (message.key, message.value) == (b"k", b"from aiokafka")
    finally:
        await consumer.stop()


def test_confluent_kafka(kafka_broker, kafka_topic):
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    producer.produce(kafka_topic, key=b"k", value=b"from confluent-kafka")
    assert producer.flush(10) == 0
    consumer = Consumer({
        "bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": "unused",
        "enable.auto.commit": False,
    })  # fmt: skip
    consumer.assign([TopicPartition(kafka_topic, 0, 0)])
    message = consumer.poll(10)
    consumer.close()
    assert message is not None and message.error() is None
    assert (message.key(), message.value()) == (b"k", b"from confluent-kafka")


def test_session_broker_and_factory(kafka_broker_session, kafka_broker_factory):
    other = kafka_broker_factory({"num.partitions": 4})
    assert other.port != kafka_broker_session.port
    assert other.config.get("num.partitions") == 4


@pytest.mark.kafka_config({"num.partitions": 2})
def test_marker_configures_the_broker(kafka_broker):
    assert kafka_broker.config.get("num.partitions") == 2


# --- the plugin from a user's point of view (pytester) -----------------------------------------

THREE_CLIENTS = """
import asyncio

def test_kafka_python(kafka_broker):
    from kafka import KafkaConsumer, KafkaProducer
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    producer.send("events", b"kp").get(10)
    producer.close()
    consumer = KafkaConsumer("events", bootstrap_servers=kafka_broker.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    assert next(consumer).value == b"kp"
    consumer.close()

def test_aiokafka(kafka_broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def main():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
        await producer.start()
        await producer.send_and_wait("events", b"aio")
        await producer.stop()
        consumer = AIOKafkaConsumer("events", bootstrap_servers=kafka_broker.bootstrap_servers,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            return (await asyncio.wait_for(consumer.getone(), 10)).value
        finally:
            await consumer.stop()

    assert asyncio.run(main()) == b"aio"

def test_confluent_kafka(kafka_broker):
    from confluent_kafka import Consumer, Producer, TopicPartition
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    producer.produce("events", b"ck")
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers,
                         "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition("events", 0, 0)])
    message = consumer.poll(10)
    consumer.close()
    assert message.value() == b"ck"
"""


def test_user_suite_produces_and_consumes_with_three_clients(pytester):
    """Each test gets a fresh broker: every one of them finds "events" empty at first."""
    pytester.makepyfile(test_clients=THREE_CLIENTS)
    result = pytester.runpytest(*NO_PLUGINS)
    result.assert_outcomes(passed=3)


def test_user_suite_scopes_and_cleanup(pytester):
    pytester.makepyfile(
        test_scopes="""
        import os

        seen = {}

        def test_session_1(kafka_broker_session):
            seen["session"] = kafka_broker_session.port

        def test_session_2(kafka_broker_session):
            assert kafka_broker_session.port == seen["session"]  # the same broker

        def test_fresh_1(kafka_broker):
            seen["fresh"] = (kafka_broker.port, kafka_broker.data_dir)
            assert os.path.isdir(kafka_broker.data_dir)
            assert kafka_broker.bootstrap_servers == f"127.0.0.1:{kafka_broker.port}"

        def test_fresh_2(kafka_broker):
            assert kafka_broker.data_dir != seen["fresh"][1]
            assert not os.path.exists(seen["fresh"][1])  # the previous one was cleaned up

        def test_topic_names(kafka_topic, request):
            assert kafka_topic.startswith("test_topic_names-")
        """
    )
    result = pytester.runpytest(*NO_PLUGINS)
    result.assert_outcomes(passed=5)


def test_user_suite_ini_overrides_and_marker(pytester):
    pytester.makeini(
        """
        [pytest]
        kafka_broker_overrides =
            num.partitions=3
            auto.create.topics.enable=false
        """
    )
    pytester.makepyfile(
        test_config="""
        import pytest

        def test_ini(kafka_broker):
            assert kafka_broker.config.get("num.partitions") == 3
            assert kafka_broker.config.get("auto.create.topics.enable") is False

        @pytest.mark.kafka_config({"num.partitions": 6})
        def test_marker_wins(kafka_broker):
            assert kafka_broker.config.get("num.partitions") == 6
            assert kafka_broker.config.get("auto.create.topics.enable") is False
        """
    )
    result = pytester.runpytest(*NO_PLUGINS, "--strict-markers")
    result.assert_outcomes(passed=2)


def test_plugin_is_registered_by_entry_point(pytester):
    result = pytester.runpytest("--fixtures", *NO_PLUGINS)
    # One at a time: pytest orders fixtures by "file:line" as text, so :104 comes before :96.
    for line in ("*fixtures defined from pykbroker.pytest_plugin*",
                 "*kafka_broker_session [[]session scope[]]*", "*kafka_broker --*"):  # fmt: skip
        result.stdout.fnmatch_lines([line])


def test_readme_example_runs(pytester):
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### A real Kafka broker in your test suite", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(example.strip().splitlines()) <= 12
    pytester.makepyfile(test_readme=example)
    result = pytester.runpytest(*NO_PLUGINS)
    result.assert_outcomes(passed=1)

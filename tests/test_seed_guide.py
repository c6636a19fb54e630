"""The guide's kafka-python samples (sections 1, 4 and 9), verbatim but for the port.

Each sample runs as its own Python process against a real broker, as a user would run it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SECTION_1 = """
from kafka import KafkaProducer
import json

# Create a Kafka producer
producer = KafkaProducer(bootstrap_servers='localhost:9092',
                         value_serializer=lambda v: json.dumps(v).encode('utf-8'))

# Send a message to a Kafka topic
message = {'event': 'page_view', 'user': 'userA', 'timestamp': '2024-09-15T12:00:00Z'}
producer.send('user_activity', value=message)
producer.flush()
"""

SECTION_4 = """
from kafka import KafkaConsumer
import json

# Create a consumer to subscribe to a topic
consumer = KafkaConsumer('user_activity', 
                         bootstrap_servers='localhost:9092',
                         auto_offset_reset='earliest',
                         value_deserializer=lambda m: json.loads(m.decode('utf-8')))

# Read messages from the topic
for message in consumer:
    print(f"Received message: {message.value}")
"""

# Section 9 uses the producer of section 1 and a consumer like section 4's, on system_logs.
SECTION_9_PRODUCER = (
    SECTION_1.split("# Send")[0]
    + """
# Producer sends message
producer.send('system_logs', value={'log_level': 'ERROR', 'message': 'Database failure'})
producer.flush()
"""
)

SECTION_9_CONSUMER = (
    SECTION_4.split("# Read")[0].replace("'user_activity'", "'system_logs'")
    + """
# Consumer processes the message
for message in consumer:
    print(f"Log: {message.value}")
"""
)


def _on_port(code: str, port: int) -> str:
    return textwrap.dedent(code).replace("localhost:9092", f"localhost:{port}")


def run_to_completion(code: str, port: int) -> None:
    subprocess.run([sys.executable, "-c", _on_port(code, port)], check=True, timeout=60)


def first_line_of_endless(code: str, port: int) -> str:
    """Run a consumer loop that never ends by itself; return its first printed line."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", _on_port(code, port)], stdout=subprocess.PIPE, text=True
    )
    try:
        return proc.stdout.readline().rstrip("\n")
    finally:
        proc.kill()
        proc.wait()


def test_section_1_producer_then_section_4_consumer(broker):
    run_to_completion(SECTION_1, broker.port)
    line = first_line_of_endless(SECTION_4, broker.port)
    assert line == (
        "Received message: {'event': 'page_view', 'user': 'userA', 'timestamp': '2024-09-15T12:00:00Z'}"
    )


def test_section_9_pipeline(broker):
    run_to_completion(SECTION_9_PRODUCER, broker.port)
    line = first_line_of_endless(SECTION_9_CONSUMER, broker.port)
    assert line == "Log: {'log_level': 'ERROR', 'message': 'Database failure'}"


def test_consumer_started_first_receives_live_message(broker):
    """Section 4's consumer waiting on an empty topic sees a message produced afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", _on_port(SECTION_4, broker.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        run_to_completion(SECTION_1, broker.port)
        assert proc.stdout.readline().startswith("Received message: {'event': 'page_view'")
    finally:
        proc.kill()
        proc.wait()

"""Client quotas against real clients (confluent-kafka / librdkafka), measured over 10 s.

Kafka's arithmetic (ClientQuotaManager's Rate over quota.window.num windows of 1 s): a client
may take quota x the rate's window, which is the time since its first sample but never less
than (quota.window.num - 1) whole windows plus the current one's elapsed part; past that it is
throttled (produce: its connection muted; fetch: empty answers) until its rate is back at the
quota. A greedy client thus gets quota x quota.window.num seconds over its first
quota.window.num seconds (Kafka's default 11 windows: 11 s worth in 11 s, but also nearly 11 s
worth within the first 10 s). These brokers run with quota.window.num=10 so that the quota's
span is the 10 s measured here: quota x 10 s, to within one request. Another client id with no
quota runs at the same time and must see no throttling at all.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from helpers import BrokerProcess, RawClient
from test_quotas_api import alter

QUOTA = 256 * 1024  # bytes/s
SECONDS = 10.0
VALUE = b"v" * 1024


def _create(bootstrap: str, *topics: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        f.result(30)


class Producing(threading.Thread):
    """Produces 1 KiB values as fast as it may for SECONDS from its first send; counts the
    value bytes acknowledged within that span."""

    def __init__(self, bootstrap: str, client_id: str, topic: str):
        super().__init__(daemon=True)
        self.throttles: list[int] = []
        self.acked = 0
        self.first: float | None = None
        self.error: str | None = None
        self.topic = topic
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5,
            "batch.size": 16384, "acks": "all", "queue.buffering.max.kbytes": 1024,
            "throttle_cb": lambda event: self.throttles.append(event.throttle_time),
        })  # fmt: skip

    def _delivered(self, err, msg) -> None:
        now = time.monotonic()
        if err is not None:
            if err.code() != KafkaError._PURGE_QUEUE:
                self.error = str(err)
            return
        if now <= self.first + SECONDS:
            self.acked += len(msg.value())

    def run(self) -> None:
        p = self.producer
        self.first = time.monotonic()
        while time.monotonic() < self.first + SECONDS:
            try:
                p.produce(self.topic, VALUE, on_delivery=self._delivered)
            except BufferError:
                p.poll(0.01)
            p.poll(0)
        p.purge(in_queue=True, in_flight=False)  # what waits in the client's queue past the span
        p.flush(10)
        self.producer = None  # its throttle_cb refers to us: no cycle keeps the client alive


class Consuming(threading.Thread):
    """Reads a partition from its start for SECONDS from its assignment; counts value bytes."""

    def __init__(self, bootstrap: str, client_id: str, topic: str, fetch_bytes: int):
        super().__init__(daemon=True)
        self.throttles: list[int] = []
        self.read = 0
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "client.id": client_id, "group.id": client_id,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "max.partition.fetch.bytes": fetch_bytes, "fetch.max.bytes": max(fetch_bytes, 1 << 20),
            "throttle_cb": lambda event: self.throttles.append(event.throttle_time),
        })  # fmt: skip
        self.topic = topic

    def run(self) -> None:
        c = self.consumer
        c.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])  # no group join to wait for
        first = time.monotonic()
        while time.monotonic() < first + SECONDS:
            msg = c.poll(0.05)
            if msg is not None and not msg.error():
                self.read += len(msg.value())
        c.close()
        self.consumer = None


def test_byte_rate_quotas_hold_and_spare_other_clients(tmp_path):
    broker = BrokerProcess(str(tmp_path / "data"), {"quota.window.num": "10"}).start()
    bs = broker.bootstrap_servers
    try:
        _create(bs, "produced", "prefilled")
        # 6 MB for the consumers, in 16 kB batches (a fetch returns whole batches).
        filler = Producer({"bootstrap.servers": bs, "batch.size": 16384, "linger.ms": 5})
        for _ in range(6 * 1024):
            while True:
                try:
                    filler.produce("prefilled", VALUE)
                    break
                except BufferError:
                    filler.poll(0.01)
        assert filler.flush(60) == 0
        c = RawClient(broker.port)
        assert (
            alter(c, {"client-id": "slow-producer"}, {"producer_byte_rate": QUOTA}).error_code == 0
        )
        assert (
            alter(c, {"client-id": "slow-consumer"}, {"consumer_byte_rate": QUOTA}).error_code == 0
        )
        c.close()

        clients = [
            slow_p := Producing(bs, "slow-producer", "produced"),
            fast_p := Producing(bs, "fast-producer", "produced"),
            slow_c := Consuming(bs, "slow-consumer", "prefilled", 32768),
            fast_c := Consuming(bs, "fast-consumer", "prefilled", 1 << 20),
        ]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
            assert not t.is_alive()
        assert slow_p.error is None and fast_p.error is None
        expected = QUOTA * SECONDS
        # Request overhead (headers, batch and record framing: ~2%) counts against the quota
        # but not in the values counted here, hence the slightly lower centre for producers.
        ratios = (slow_p.acked / expected, slow_c.read / expected)
        print("quota ratios (producer, consumer):", ratios, "fast producer x quota:",
              fast_p.acked / expected, "throttle ms max:", max(slow_p.throttles),
              max(slow_c.throttles))  # fmt: skip
        assert 0.9 <= ratios[0] <= 1.1 and 0.9 <= ratios[1] <= 1.1, ratios
        assert max(slow_p.throttles) > 0 and max(slow_c.throttles) > 0
        # The clients without a quota: never throttled, and far past the quota's rate.
        assert max(fast_p.throttles, default=0) == 0 and max(fast_c.throttles, default=0) == 0
        assert fast_p.acked > 3 * expected
        assert fast_c.read == 6 * 1024 * len(VALUE)
    finally:
        broker.terminate()

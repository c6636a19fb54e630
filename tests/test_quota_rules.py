"""Kafka's quota arithmetic and precedence, without a broker (the sans-io parts).

Numbers from Kafka: Rate.windowSize assumes (samples - 1) whole windows plus the current one's
elapsed part; SampledStat purges samples older than samples x window; QuotaUtils.throttleTime
is (rate - bound) / bound x window; ClientQuotaManager's precedence is documented as
/config/users/<user>/clients/<client-id> first ... /config/clients/<default> last.
"""

from __future__ import annotations

import pytest

from pykbroker.quota.entities import entity_path, java_double, path_entity, sanitize
from pykbroker.quota.manager import ClientQuotaManager
from pykbroker.quota.rate import Rate, throttle_time_ms


def test_rate_window_and_purge():
    r = Rate(11, 1000)
    r.record(1000, 0)
    assert r.window_size_ms(0) == 10_000 and r.measure(0) == 100.0
    assert r.window_size_ms(500) == 10_500
    assert r.window_size_ms(3_200) == 3_200 + 7_000  # 3 whole windows seen, 7 more assumed
    r.record(1000, 10_500)
    assert r.window_size_ms(10_500) == 10_500 and r.measure(10_500) == pytest.approx(2000 / 10.5)
    # At 11 s the first sample is purged: 1000 over 0.5 s seen + 10 windows assumed.
    assert r.measure(11_000) == pytest.approx(1000 / 10.5)


def test_throttle_time():
    r = Rate(11, 1000)
    r.record(120_300, 0)
    assert throttle_time_ms(r, 10_000, 0) == 2030  # (12030 - 10000) / 10000 x 10 s
    assert throttle_time_ms(r, 20_000, 0) == 0
    # A quota of 0 allows nothing: the longest throttle (the measured span), not a division by 0.
    assert throttle_time_ms(r, 0, 0) == 10_000


def test_negative_quota_values_are_refused():
    from protocol.errors import KafkaError
    from pykbroker.quota.entities import apply_ops

    with pytest.raises(KafkaError) as e:
        apply_ops("users/alice", {}, [("producer_byte_rate", -5.0, False)])
    assert e.value.code == 42  # INVALID_REQUEST
    assert apply_ops("users/alice", {}, [("producer_byte_rate", 0.0, False)]) == {
        "producer_byte_rate": "0"}  # fmt: skip


QUOTA_ORDER = [
    ("users/alice/clients/app", 1),
    ("users/alice/clients/<default>", 2),
    ("users/alice", 3),
    ("users/<default>/clients/app", 4),
    ("users/<default>/clients/<default>", 5),
    ("users/<default>", 6),
    ("clients/app", 7),
    ("clients/<default>", 8),
]


def test_precedence_is_kafkas():
    m = ClientQuotaManager("producer_byte_rate")
    configured = {path: {"producer_byte_rate": str(limit)} for path, limit in QUOTA_ORDER}
    for path, limit in QUOTA_ORDER:  # remove the most specific one at a time
        m.set_configs(configured)
        assert m.resolve("alice", "app")[1] == limit, path
        del configured[path]
    m.set_configs(configured)
    assert m.resolve("alice", "app") == (("", "app"), None)


def test_entities_share_a_sensor():
    m = ClientQuotaManager("producer_byte_rate")
    m.set_configs({"users/alice": {"producer_byte_rate": "100"}})
    # A user quota is spent by all of the user's client ids together.
    assert m.resolve("alice", "a")[0] == m.resolve("alice", "b")[0] == ("alice", "")
    assert m.resolve("bob", "a") == (("", "a"), None)
    m.set_configs({"users/<default>/clients/<default>": {"producer_byte_rate": "100"}})
    assert m.resolve("alice", "a") == (("alice", "a"), 100.0)


def test_paths_and_values():
    assert sanitize("user@example.com *~") == "user%40example.com%20%2A%7E"
    entity = (("client-id", "c/1"), ("user", None))
    assert entity_path(entity) == "users/<default>/clients/c%2F1"
    assert path_entity("users/<default>/clients/c%2F1") == entity
    assert [java_double(v) for v in (200, 0.5, 1e7, 12345678.9, 1e-4)] == [
        "200.0", "0.5", "1.0E7", "1.23456789E7", "1.0E-4"]  # fmt: skip


def test_per_client_state_stays_bounded():
    """Clients inventing a new client id (or source address) per request must not grow the
    broker's quota state without bound between the once-a-minute expiry rounds."""
    from pykbroker.quota.connections import ConnectionQuotas

    m = ClientQuotaManager("producer_byte_rate", 11, 1000)
    m.set_configs({"clients/<default>": {"producer_byte_rate": "1000"}})
    for i in range(100_050):
        m.resolve("ANONYMOUS", f"id-{i}")
    assert len(m._resolved) <= 100_000
    q = ConnectionQuotas.__new__(ConnectionQuotas)  # only the ip-rate part is exercised
    q.ip_rates, q.ip_sensors, q.samples, q.window_ms, q.ip_throttled = {"": 1e9}, {}, 11, 1000, 0
    q._now_ms = iter(range(0, 10**9, 1000)).__next__  # one second apart: old ones go idle
    for i in range(20_000):
        q.ip_throttle_ms(f"10.0.{i // 256}.{i % 256}")
    assert len(q.ip_sensors) <= 10_000

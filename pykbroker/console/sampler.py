"""Rates for the console's charts, from the counters the broker already keeps (metrics.py).

Once a second the sampler copies the counters (totals, per topic, per API request stats), and
keeps the last few minutes; a chart is the difference of neighbouring samples. Copying a few
dicts a second costs nothing next to the traffic, and the page opens with history to show.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from pykbroker.metrics import API_NAMES, LATENCY_BUCKETS

INTERVAL_S = 1.0
CAPACITY = 300  # five minutes of samples
TOP_TOPICS = 8
TOP_APIS = 6


@dataclass(slots=True)
class Sample:
    t: float  # wall clock, seconds
    bytes_in: int
    bytes_out: int
    messages_in: int
    topic_bytes_in: dict[str, int]
    topic_bytes_out: dict[str, int]
    topic_messages_in: dict[str, int]
    requests: dict[int, tuple[int, float, tuple[int, ...]]]  # api -> (count, seconds, buckets)


class MetricsSampler:
    def __init__(self, broker):
        self.broker = broker
        self.capacity = CAPACITY
        self.samples: deque[Sample] = deque(maxlen=CAPACITY)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.sample()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL_S)
            self.sample()

    def sample(self) -> None:
        m = self.broker.metrics
        self.samples.append(Sample(
            time.time(), m.bytes_in, m.bytes_out, m.messages_in,
            dict(m.topic_bytes_in), dict(m.topic_bytes_out), dict(m.topic_messages_in),
            {k: (s.count, s.seconds, tuple(s.buckets)) for k, s in m.requests.items()},
        ))  # fmt: skip

    def topic_rates(self) -> dict[str, tuple[float, float, float]]:
        """topic -> (bytes in, bytes out, messages in) per second over the last interval."""
        if len(self.samples) < 2:
            return {}
        a, b = self.samples[-2], self.samples[-1]
        dt = max(b.t - a.t, 1e-3)
        out = {}
        for topic, n in b.topic_bytes_in.items():
            out[topic] = (
                (n - a.topic_bytes_in.get(topic, 0)) / dt,
                (b.topic_bytes_out.get(topic, 0) - a.topic_bytes_out.get(topic, 0)) / dt,
                (b.topic_messages_in.get(topic, 0) - a.topic_messages_in.get(topic, 0)) / dt,
            )
        for topic, n in b.topic_bytes_out.items():
            if topic not in out:
                out[topic] = (0.0, (n - a.topic_bytes_out.get(topic, 0)) / dt, 0.0)
        return out

    def series(self, window: int, topic: str | None, visible=None) -> dict:
        """Per-second rates of the last `window` intervals: totals (or one topic's), the busiest
        topics, and request latency (mean and p99 per interval) of the busiest APIs."""
        samples = list(self.samples)[-(window + 1) :]
        pairs = list(zip(samples, samples[1:], strict=False))
        times = [round(b.t * 1000) for _, b in pairs]

        def rate(get) -> list[float]:
            return [round((get(b) - get(a)) / max(b.t - a.t, 1e-3), 2) for a, b in pairs]

        if topic is None:
            traffic = {
                "bytes_in": rate(lambda s: s.bytes_in),
                "bytes_out": rate(lambda s: s.bytes_out),
                "messages_in": rate(lambda s: s.messages_in),
            }
        else:
            traffic = {
                "bytes_in": rate(lambda s: s.topic_bytes_in.get(topic, 0)),
                "bytes_out": rate(lambda s: s.topic_bytes_out.get(topic, 0)),
                "messages_in": rate(lambda s: s.topic_messages_in.get(topic, 0)),
            }
        return {
            "interval_ms": round(INTERVAL_S * 1000),
            "time": times,
            "topic": topic,
            **traffic,
            "top_topics": self._top_topics(samples, visible),
            "latency": self._latency(pairs),
        }

    def _top_topics(self, samples: list[Sample], visible=None) -> list[dict]:
        """The busiest topics (among those `visible(topic)` allows, when given)."""
        if len(samples) < 2:
            return []
        first, last = samples[0], samples[-1]
        dt = max(last.t - first.t, 1e-3)
        rows = []
        for topic, n in last.topic_bytes_in.items():
            if visible is not None and not visible(topic):
                continue
            rows.append({
                "topic": topic,
                "bytes_in": round((n - first.topic_bytes_in.get(topic, 0)) / dt, 2),
                "bytes_out": round((last.topic_bytes_out.get(topic, 0)
                                    - first.topic_bytes_out.get(topic, 0)) / dt, 2),
                "messages_in": round((last.topic_messages_in.get(topic, 0)
                                      - first.topic_messages_in.get(topic, 0)) / dt, 2),
            })  # fmt: skip
        rows.sort(key=lambda r: (-r["bytes_in"] - r["bytes_out"], r["topic"]))
        return rows[:TOP_TOPICS]

    def _latency(self, pairs) -> dict[str, dict]:
        if not pairs:
            return {}
        first, last = pairs[0][0], pairs[-1][1]
        busiest = sorted(
            last.requests,
            key=lambda k: -(last.requests[k][0] - first.requests.get(k, (0, 0.0, ()))[0]),
        )[:TOP_APIS]
        out = {}
        for api in busiest:
            mean, p99, count = [], [], []
            for a, b in pairs:
                n0, s0, b0 = a.requests.get(api, (0, 0.0, ()))
                n1, s1, b1 = b.requests.get(api, (0, 0.0, ()))
                n = n1 - n0
                count.append(n)
                mean.append(round((s1 - s0) / n * 1000, 3) if n else None)
                p99.append(_quantile_ms(b0, b1, n, 0.99) if n else None)
            out[API_NAMES.get(api, "Unknown")] = {"count": count, "mean_ms": mean, "p99_ms": p99}
        return out


def _quantile_ms(before: tuple[int, ...], after: tuple[int, ...], n: int, q: float) -> float:
    """The upper bound (ms) of the histogram bucket holding the q-quantile of an interval."""
    want = q * n
    running = 0
    for i, count in enumerate(after):
        running += count - (before[i] if i < len(before) else 0)
        if running >= want:
            bound = LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else LATENCY_BUCKETS[-1] * 2
            return bound * 1000
    return LATENCY_BUCKETS[-1] * 2000

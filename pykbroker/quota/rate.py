"""Kafka's windowed Rate (org.apache.kafka.common.metrics.stats.Rate over a SampledStat), sans-io.

A rate keeps `samples` windows of `window_ms` each (quota.window.num=11,
quota.window.size.seconds=1 by default). The measured rate is the sum over the live windows
divided by the elapsed time since the oldest window began, but never by less than
`samples - 1` whole windows, so that a client's first burst is not read as a huge rate.
Time is passed in (milliseconds), so the arithmetic is tested without clocks.
"""

from __future__ import annotations


class Rate:
    __slots__ = ("samples", "window_ms", "_values", "_starts", "_current")

    def __init__(self, samples: int = 11, window_ms: int = 1000):
        self.samples = samples
        self.window_ms = window_ms
        self._values: list[float] = []
        self._starts: list[int] = []  # each sample's lastWindowMs
        self._current = 0

    def record(self, value: float, now_ms: int) -> None:
        if not self._values:
            self._values.append(0.0)
            self._starts.append(now_ms)
        i = self._current
        if now_ms - self._starts[i] >= self.window_ms:  # Sample.isComplete: advance
            i = self._current = (i + 1) % self.samples
            if i >= len(self._values):
                self._values.append(0.0)
                self._starts.append(now_ms)
            else:
                self._values[i] = 0.0
                self._starts[i] = now_ms
        self._values[i] += value

    def _purge(self, now_ms: int) -> None:
        expire = self.samples * self.window_ms
        starts = self._starts
        for i, start in enumerate(starts):
            if now_ms - start >= expire:
                self._values[i] = 0.0
                starts[i] = now_ms

    def window_size_ms(self, now_ms: int) -> int:
        """Rate.windowSize: the elapsed time the rate is computed over (after purging)."""
        if not self._values:
            self._values.append(0.0)
            self._starts.append(now_ms)
        self._purge(now_ms)
        elapsed = now_ms - min(self._starts)
        full = elapsed // self.window_ms
        if full < self.samples - 1:
            elapsed += (self.samples - 1 - full) * self.window_ms
        return elapsed

    def last_ms(self) -> int:
        """When the newest sample began (about the last record)."""
        return max(self._starts, default=0)

    def measure(self, now_ms: int) -> float:
        """Units per second."""
        size = self.window_size_ms(now_ms)  # purges first, as Rate.measure does
        return sum(self._values) / (size / 1000.0)


def throttle_time_ms(rate: Rate, bound: float, now_ms: int) -> int:
    """QuotaUtils.throttleTime: how long until the rate is back at the bound if nothing more is
    recorded; 0 when the measured rate is within it."""
    value = rate.measure(now_ms)
    if value <= bound:
        return 0
    if bound <= 0:  # a quota of 0: nothing is allowed; Java's division gives Infinity, capped
        return rate.window_size_ms(now_ms)
    return int((value - bound) / bound * rate.window_size_ms(now_ms) + 0.5)  # Java's Math.round


class TokenBucket:
    """Kafka's TokenBucket stat (KIP-599), which measures controller_mutation_rate: tokens come
    back at `quota` per second up to a burst of quota x samples x window seconds (11 s worth by
    default); a mutation takes one token per partition, down below zero. The bucket starts
    full (Kafka's starts empty at time 0, so full at its first use)."""

    __slots__ = ("tokens", "_last_ms")

    def __init__(self) -> None:
        self.tokens: float | None = None
        self._last_ms = 0

    def _refill(self, quota: float, burst: float, now_ms: int) -> None:
        if self.tokens is None:
            self.tokens = burst
        else:
            elapsed = max(now_ms - self._last_ms, 0) / 1000.0
            self.tokens = min(burst, self.tokens + quota * elapsed)
        self._last_ms = now_ms

    def measure(self, quota: float, burst: float, now_ms: int) -> float:
        self._refill(quota, burst, now_ms)
        return self.tokens

    def record(self, value: float, quota: float, burst: float, now_ms: int) -> None:
        self._refill(quota, burst, now_ms)
        self.tokens = min(burst, self.tokens - value)

    def last_ms(self) -> int:
        return self._last_ms

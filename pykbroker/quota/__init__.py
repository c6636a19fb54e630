"""Client quotas and connection limits (issue 13): Kafka's ClientQuotaManager, its throttling
(KIP-219: answer at once with throttle_time_ms, then mute the channel) and ConnectionQuotas."""

from __future__ import annotations

import asyncio
import time

from .entities import CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE
from .manager import ClientQuotaManager, ControllerMutationQuotaManager

ANONYMOUS = "ANONYMOUS"  # KafkaPrincipal.ANONYMOUS's name: every unauthenticated client
SENSOR_EXPIRATION_MS = 3600 * 1000
_SECONDS_TO_PERCENT = 100.0  # seconds of handler time -> percent of one thread


def principal_name(conn) -> str:
    """The user name quotas apply to: the connection's principal's name (User:alice -> alice;
    ANONYMOUS on PLAINTEXT and before authentication), as Kafka's session.sanitizedUser."""
    session = getattr(conn, "session", None)
    return ANONYMOUS if session is None else session.principal.name


class QuotaManagers:
    """The broker's three client quota managers and the stored quota configs."""

    def __init__(self, config) -> None:
        samples = config.get("quota.window.num")
        window_ms = config.get("quota.window.size.seconds") * 1000
        self.produce = ClientQuotaManager(PRODUCER_BYTE_RATE, samples, window_ms)
        self.fetch = ClientQuotaManager(CONSUMER_BYTE_RATE, samples, window_ms)
        # ClientRequestQuotaManager bounds its throttle time to one window.
        self.request = ClientQuotaManager(REQUEST_PERCENTAGE, samples, window_ms, window_ms)
        self.controller_mutation = ControllerMutationQuotaManager(samples, window_ms)
        self.configs: dict[str, dict[str, str]] = {}  # entity path -> quota configs

    def set_configs(self, configs: dict[str, dict[str, str]]) -> None:
        self.configs = {path: dict(values) for path, values in configs.items() if values}
        for manager in self.managers():
            manager.set_configs(self.configs)

    def managers(self) -> tuple[ClientQuotaManager, ...]:
        return (self.produce, self.fetch, self.request, self.controller_mutation)

    async def expire_sensors_loop(self) -> None:
        """Kafka's InactiveSensorExpirationTimeSeconds (an hour), checked once a minute."""
        while True:
            await asyncio.sleep(60)
            now = self.now_ms()
            for manager in self.managers():
                manager.expire(now, SENSOR_EXPIRATION_MS)

    @staticmethod
    def now_ms() -> int:
        return int(time.monotonic() * 1000)

    def request_throttle_ms(self, conn, client_id: str | None, seconds: float) -> int:
        """Record handler time against request_percentage; the throttle time it calls for."""
        return self.request.record_and_get_throttle_ms(
            principal_name(conn), client_id or "", seconds * _SECONDS_TO_PERCENT, self.now_ms()
        )

    def produce_throttle_ms(self, ctx, acks: int) -> int:
        """KafkaApis.handleProduceRequest: the request's bytes against producer_byte_rate and
        (unless acks=0) its handler time against request_percentage; the larger throttle."""
        user, client, now = (
            principal_name(ctx.connection),
            ctx.header.client_id or "",
            self.now_ms(),
        )
        throttle = 0
        if self.produce.enabled:
            throttle = self.produce.record_and_get_throttle_ms(user, client, ctx.size, now)
        if ctx.started and acks != 0:
            busy = ctx.handler_seconds() * _SECONDS_TO_PERCENT
            throttle = max(
                throttle, self.request.record_and_get_throttle_ms(user, client, busy, now)
            )
        ctx.throttle_ms = throttle
        return throttle

    def fetch_max_bytes(self, ctx, max_bytes: int) -> int:
        """A consumer never asks for more than its quota allows in one window span (Kafka caps
        fetch.max.bytes with getMaxValueInQuotaWindow, so one fetch can't throttle for long)."""
        cap = self.fetch.max_value_in_window(principal_name(ctx.connection),
                                             ctx.header.client_id or "")  # fmt: skip
        return max_bytes if cap is None else min(max_bytes, int(cap))

    def fetch_throttle_ms(self, ctx, response_size: int, busy_s: float) -> int:
        """KafkaApis.handleFetchRequest: the response's bytes against consumer_byte_rate and the
        handler time against request_percentage. When throttled, the bytes are taken back:
        the consumer gets an empty response instead."""
        user, client, now = (
            principal_name(ctx.connection),
            ctx.header.client_id or "",
            self.now_ms(),
        )
        throttle = 0
        if ctx.started:
            throttle = self.request.record_and_get_throttle_ms(
                user, client, busy_s * _SECONDS_TO_PERCENT, now
            )
        if self.fetch.enabled:
            bandwidth = self.fetch.record_and_get_throttle_ms(user, client, response_size, now)
            if bandwidth or throttle:
                self.fetch.unrecord(user, client, response_size, now)
            throttle = max(throttle, bandwidth)
        ctx.throttle_ms = throttle
        return throttle


THROTTLING_QUOTA_EXCEEDED_MESSAGE = "The throttling quota has been exceeded."  # Kafka's Errors


class ControllerMutation:
    """One CreateTopics / CreatePartitions / DeleteTopics request's controller_mutation_rate
    quota, Kafka's ControllerMutationQuota: strict for the versions that know
    THROTTLING_QUOTA_EXCEEDED (CreateTopics v6+, CreatePartitions v3+, DeleteTopics v5+) --
    a topic is refused while the client's tokens are below zero, and a topic admitted takes
    all its partitions even past zero -- permissive for older ones: everything is done and
    recorded, and the response is throttled for the tokens owed."""

    __slots__ = ("manager", "user", "client_id", "strict", "throttle_ms")

    def __init__(self, quotas: QuotaManagers, ctx, strict_from: int):
        self.manager = quotas.controller_mutation
        self.user = principal_name(ctx.connection)
        self.client_id = ctx.header.client_id or ""
        self.strict = ctx.api_version >= strict_from
        self.throttle_ms = 0

    @classmethod
    def of(cls, ctx, strict_from: int) -> ControllerMutation | None:
        """The request's quota, or None when its client has none (the common case: cheap)."""
        quotas = ctx.broker.quotas
        if not quotas.controller_mutation.enabled:
            return None
        q = cls(quotas, ctx, strict_from)
        return q if q.manager.limited(q.user, q.client_id) else None

    def admit(self, partitions: int) -> bool:
        """Record a mutation of `partitions` partitions; False if strict mode refuses it
        (the topic then gets THROTTLING_QUOTA_EXCEEDED)."""
        now = QuotaManagers.now_ms()
        if self.strict:
            throttle = self.manager.check(self.user, self.client_id, now)
            if throttle:
                self.throttle_ms = throttle
                return False
        throttle = self.manager.record_mutation(self.user, self.client_id, partitions, now,
                                                self.strict)  # fmt: skip
        if throttle:
            self.throttle_ms = throttle
        return True

    def finish(self, ctx, response: dict) -> dict:
        """Kafka's sendResponseMaybeThrottleWithControllerQuota: the larger of this quota's
        throttle and the request quota's, in the response and on the channel."""
        throttle = self.throttle_ms
        if ctx.started:
            throttle = max(throttle, ctx.broker.quotas.request_throttle_ms(
                ctx.connection, ctx.header.client_id, ctx.handler_seconds()))  # fmt: skip
        ctx.throttle_ms = throttle
        response["throttle_time_ms"] = throttle
        return response

"""Client quotas (Kafka's ClientQuotaManager with its DefaultQuotaCallback), sans-io.

One manager per quota type: produce (producer_byte_rate, request bytes), fetch
(consumer_byte_rate, response bytes) and request (request_percentage, handler time as a
percentage of one thread). A client -- its user principal and client id -- is measured by the
sensor of the most specific entity that has a quota of that type, in Kafka's order:

    /config/users/<user>/clients/<client-id>   /config/users/<default>/clients/<client-id>
    /config/users/<user>/clients/<default>     /config/users/<default>/clients/<default>
    /config/users/<user>                       /config/users/<default>
                                               /config/clients/<client-id>
                                               /config/clients/<default>

(left column before right). Clients sharing an entity share its sensor: a user quota is spent
by all of that user's client ids together. While no quota of a type is configured, that
type's manager costs one attribute check per request.
"""

from __future__ import annotations

from .entities import CLIENT_ID, USER, path_entity
from .rate import Rate, TokenBucket, throttle_time_ms

_DEF = None  # the default entity's name
_UNSET = object()


class ClientQuotaManager:
    def __init__(self, key: str, samples: int = 11, window_ms: int = 1000,
                 max_throttle_ms: int | None = None):  # fmt: skip
        self.key = key
        self.samples = samples
        self.window_ms = window_ms
        self.max_throttle_ms = max_throttle_ms  # request quotas: one window (Kafka's bound)
        # (user, client-id) -> limit; each part absent (_UNSET), default (None) or a name.
        self.overrides: dict[tuple, float] = {}
        self.enabled = False
        self._resolved: dict[tuple[str, str], tuple[tuple[str, str], float | None]] = {}
        self.sensors: dict[tuple[str, str], Rate] = {}
        self.throttle_ms_total: dict[tuple[str, str], int] = {}

    # --- configuration ------------------------------------------------------------------------

    def set_configs(self, configs: dict[str, dict[str, str]]) -> None:
        """Take every entity's stored configs ({entity path: {key: value}})."""
        overrides: dict[tuple, float] = {}
        for path, values in configs.items():
            raw = values.get(self.key)
            entity = path_entity(path)
            if raw is None or entity is None:
                continue
            d = dict(entity)
            if USER not in d and CLIENT_ID not in d:
                continue  # an ip entity
            try:
                limit = float(raw)
            except ValueError:
                continue
            overrides[(d.get(USER, _UNSET), d.get(CLIENT_ID, _UNSET))] = limit
        self.overrides = overrides
        self.enabled = bool(overrides)
        self._resolved.clear()
        # Sensors whose entity lost its quota are dropped; others keep their history.
        if not self.enabled:
            self.sensors.clear()

    # --- resolution (DefaultQuotaCallback) ---------------------------------------------------

    def resolve(self, user: str, client_id: str) -> tuple[tuple[str, str], float | None]:
        """(metric tags (user, client-id), limit or None) for a client: the entity whose
        sensor measures it, and its quota."""
        key = (user, client_id)
        found = self._resolved.get(key)
        if found is None:
            if len(self._resolved) >= 100_000:  # a client inventing client ids: bounded
                self._resolved.clear()
            tags = self._metric_tags(user, client_id)
            found = self._resolved[key] = (tags, self._limit(*tags))
        return found

    def _metric_tags(self, user: str, client_id: str) -> tuple[str, str]:
        o = self.overrides
        if (user, client_id) in o or (user, _DEF) in o:
            return (user, client_id)
        if (user, _UNSET) in o:
            return (user, "")
        if (_DEF, client_id) in o or (_DEF, _DEF) in o:
            return (user, client_id)
        if (_DEF, _UNSET) in o:
            return (user, "")
        return ("", client_id)

    def _limit(self, user: str, client_id: str) -> float | None:
        o = self.overrides
        if user and client_id:
            for k in ((user, client_id), (user, _DEF), (_DEF, client_id), (_DEF, _DEF)):
                if k in o:
                    return o[k]
        elif user:
            for k in ((user, _UNSET), (_DEF, _UNSET)):
                if k in o:
                    return o[k]
        elif client_id:
            for k in ((_UNSET, client_id), (_UNSET, _DEF)):
                if k in o:
                    return o[k]
        return None

    # --- measuring -------------------------------------------------------------------------------

    def _sensor(self, tags: tuple[str, str]) -> Rate:
        rate = self.sensors.get(tags)
        if rate is None:
            rate = self.sensors[tags] = Rate(self.samples, self.window_ms)
        return rate

    def record_and_get_throttle_ms(self, user: str, client_id: str, value: float,
                                   now_ms: int) -> int:  # fmt: skip
        """Record `value` for the client; the time (ms) it must wait for its rate to be back
        within its quota (0: within it)."""
        tags, limit = self.resolve(user, client_id)
        if limit is None:
            return 0
        rate = self._sensor(tags)
        rate.record(value, now_ms)
        throttle = throttle_time_ms(rate, limit, now_ms)
        if self.max_throttle_ms is not None and throttle > self.max_throttle_ms:
            throttle = self.max_throttle_ms
        if throttle:
            self.throttle_ms_total[tags] = self.throttle_ms_total.get(tags, 0) + throttle
        return throttle

    def unrecord(self, user: str, client_id: str, value: float, now_ms: int) -> None:
        """Take back a recorded value (a throttled fetch sends no records)."""
        tags, limit = self.resolve(user, client_id)
        if limit is not None:
            self._sensor(tags).record(-value, now_ms)

    def record(self, user: str, client_id: str, value: float, now_ms: int) -> None:
        tags, limit = self.resolve(user, client_id)
        if limit is not None:
            self._sensor(tags).record(value, now_ms)

    def max_value_in_window(self, user: str, client_id: str) -> float | None:
        """The most a client may take at once without certain throttling: its quota times
        (quota.window.num - 1) windows (Kafka caps a consumer's fetch size with it)."""
        _, limit = self.resolve(user, client_id)
        if limit is None:
            return None
        return limit * (self.samples - 1) * self.window_ms / 1000

    def expire(self, now_ms: int, idle_ms: int) -> None:
        """Drop the sensors of clients silent for idle_ms (Kafka expires them after an hour),
        and forget resolved clients when there are many."""
        for tags, rate in list(self.sensors.items()):
            if now_ms - rate.last_ms() > idle_ms:
                del self.sensors[tags]
                self.throttle_ms_total.pop(tags, None)
        if len(self._resolved) > 100_000:
            self._resolved.clear()

    def rate(self, tags: tuple[str, str], now_ms: int) -> float:
        rate = self.sensors.get(tags)
        return 0.0 if rate is None else rate.measure(now_ms)


class ControllerMutationQuotaManager(ClientQuotaManager):
    """controller_mutation_rate (KIP-599): partitions created (CreateTopics, CreatePartitions)
    or deleted (DeleteTopics) per second, resolved per user / client id as the other quotas,
    each entity measured by a TokenBucket. Over quota means no tokens left (below zero); the
    throttle time is how long the bucket takes to come back to zero (Kafka's
    ControllerMutationQuotaManager.throttleTimeMs: -tokens / quota seconds)."""

    def __init__(self, samples: int = 11, window_ms: int = 1000):
        from .entities import CONTROLLER_MUTATION_RATE

        super().__init__(CONTROLLER_MUTATION_RATE, samples, window_ms)
        self.sensors: dict[tuple[str, str], TokenBucket] = {}  # type: ignore[assignment]

    def _bucket(self, tags: tuple[str, str]) -> TokenBucket:
        bucket = self.sensors.get(tags)
        if bucket is None:
            bucket = self.sensors[tags] = TokenBucket()
        return bucket

    def _burst(self, limit: float) -> float:
        return limit * self.samples * self.window_ms / 1000

    def _throttle(self, tags, tokens: float, limit: float) -> int:
        if tokens >= 0:
            return 0
        if limit <= 0:  # a quota of 0: never any token; wait one full burst span, as a bound
            throttle = self.samples * self.window_ms
        else:
            throttle = int(-tokens / limit * 1000 + 0.5)  # Java's Math.round
        self.throttle_ms_total[tags] = self.throttle_ms_total.get(tags, 0) + throttle
        return throttle

    def limited(self, user: str, client_id: str) -> bool:
        return self.enabled and self.resolve(user, client_id)[1] is not None

    def check(self, user: str, client_id: str, now_ms: int) -> int:
        """Strict mode, before a mutation (Sensor.checkQuotas): the throttle time if the
        client's tokens are already below zero (the mutation is refused), else 0."""
        tags, limit = self.resolve(user, client_id)
        if limit is None:
            return 0
        return self._throttle(tags, self._bucket(tags).measure(limit, self._burst(limit), now_ms),
                              limit)  # fmt: skip

    def record_mutation(self, user: str, client_id: str, permits: float, now_ms: int,
                        strict: bool) -> int:  # fmt: skip
        """Take `permits` tokens. Permissive mode (older request versions): the throttle time
        the bucket then calls for (0 if it still has tokens). Strict mode checked before: 0."""
        tags, limit = self.resolve(user, client_id)
        if limit is None:
            return 0
        bucket = self._bucket(tags)
        bucket.record(permits, limit, self._burst(limit), now_ms)
        return 0 if strict else self._throttle(tags, bucket.tokens, limit)

    def rate(self, tags: tuple[str, str], now_ms: int) -> float:
        """The tokens left (Kafka's metric of this sensor is the bucket's tokens)."""
        bucket = self.sensors.get(tags)
        _, limit = self.resolve(*tags)
        if bucket is None or limit is None:
            return 0.0
        return bucket.measure(limit, self._burst(limit), now_ms)

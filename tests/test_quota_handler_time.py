"""request_percentage counts request handler time as Kafka does (the time a request handler
thread spends on the request): for an async handler, each of its steps on the event loop,
never the time it spends awaiting (replicas, a long poll, the transaction coordinator)."""

from __future__ import annotations

import asyncio
from time import perf_counter

from pykbroker.broker import RequestContext, _TimedSteps


def _burn(seconds: float) -> None:
    end = perf_counter() + seconds
    while perf_counter() < end:
        pass


def test_async_handler_time_is_its_steps_not_its_waits():
    ctx = RequestContext(None, None, None)  # only the timing fields are used
    seen_inside: list[float] = []

    async def handler():
        _burn(0.05)
        await asyncio.sleep(0.5)  # waiting: not handler time
        _burn(0.05)
        seen_inside.append(ctx.handler_seconds())  # the running step counts so far
        await asyncio.sleep(0)
        return "done"

    async def main():
        ctx.started = ctx.step_started = perf_counter()
        coro = handler()  # what dispatch_request gets back from an async handler
        ctx.busy, ctx.step_started = perf_counter() - ctx.started, 0.0
        return await _TimedSteps(coro, ctx)

    t0 = perf_counter()
    assert asyncio.run(main()) == "done"
    wall = perf_counter() - t0
    assert wall >= 0.6
    # Two 50 ms steps of work: about 0.1 s, not the 0.6 s of wall time (the old count took
    # the time before the first await only: about 0).
    assert 0.1 <= ctx.handler_seconds() < 0.35, ctx.handler_seconds()
    assert 0.1 <= seen_inside[0] <= ctx.handler_seconds()


def test_errors_and_cancellation_reach_the_handler():
    ctx = RequestContext(None, None, None)
    cleaned: list[str] = []

    async def handler():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise

    async def handler_wrapper():
        return await _TimedSteps(handler(), ctx)

    async def run_and_cancel():
        task = asyncio.ensure_future(handler_wrapper())
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"

    assert asyncio.run(run_and_cancel()) == "cancelled"
    assert cleaned == ["cancelled"]

    async def failing():
        await asyncio.sleep(0)
        raise ValueError("bad")

    async def run_failing():
        try:
            await _TimedSteps(failing(), ctx)
        except ValueError as e:
            return str(e)

    assert asyncio.run(run_failing()) == "bad"


def test_a_long_poll_is_not_handler_time_end_to_end(broker):
    """Through the broker's dispatch: a Fetch that waits 1.5 s for data records its passes over
    the log, a few milliseconds, against request_percentage, not the 1.5 s."""
    from helpers import RawClient
    from test_quotas_api import _create_topic, alter
    from wire import fetch

    c = RawClient(broker.port, client_id="poller")
    try:
        # A quota never reached: every request's handler time is recorded, nothing throttled.
        assert alter(c, {"client-id": "poller"}, {"request_percentage": 100000}).error_code == 0
        _create_topic(c, "idle")

        def recorded() -> float:  # percent-seconds: handler seconds x 100
            sensors = broker.broker.quotas.request.sensors
            return sum(sum(rate._values) for rate in sensors.values())

        before = broker.call(recorded)
        t0 = perf_counter()
        r = fetch(c, [("idle", 0, 0)], max_wait_ms=1500)
        assert perf_counter() - t0 >= 1.4 and r.error_code == 0
        counted = (broker.call(recorded) - before) / 100
        assert 0 < counted < 0.3, counted
    finally:
        c.close()

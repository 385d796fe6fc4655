"""Redis-shared GCRA limiter against the real Redis: same semantics as the local one, shared.

Deterministic tests run the Lua script on a :class:`FakeClock`'s time (``time_source``);
the two-process test uses the production path (real clock, Redis server time).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from cauce.core.resilience import (
    FakeClock,
    LocalRateLimiter,
    RateLimitedError,
    RateLimiter,
)
from cauce.core.resilience.ratelimit_redis import (
    RedisRateLimiter,
    connect_redis,
)

from .redis_support import wait_until

LimiterFactory = Callable[..., RedisRateLimiter]


@pytest.fixture
def make_limiter(redis: Redis, prefix: str, clock: FakeClock) -> LimiterFactory:
    """Build Redis limiters for upstream ``crm`` that run on the fake clock's time."""

    def build(**kwargs: Any) -> RedisRateLimiter:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("time_source", kwargs["clock"].now)
        kwargs.setdefault("redis", redis)
        return RedisRateLimiter("crm", key_prefix=prefix, **kwargs)

    return build


def test_redis_limiter_implements_the_port(make_limiter: LimiterFactory) -> None:
    """The Redis limiter is usable wherever the RateLimiter port is expected."""
    limiter: RateLimiter = make_limiter(rate=1.0)
    assert callable(limiter.acquire)
    assert callable(limiter.drain)


async def test_burst_passes_then_calls_are_spaced_at_the_rate(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    """A burst of 3 passes at once; the next calls wait one emission interval each."""
    limiter = make_limiter(rate=10.0, burst=3)
    assert [await limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limiter.acquire() == pytest.approx(0.1)
    assert await limiter.acquire() == pytest.approx(0.1)
    assert clock.now() == pytest.approx(0.2)


async def test_capacity_recovers_while_idle(make_limiter: LimiterFactory, clock: FakeClock) -> None:
    """After a quiet second at 3/s with burst 3, a full burst (and no more) is available."""
    limiter = make_limiter(rate=3.0, burst=3)
    for _ in range(3):
        await limiter.acquire()
    clock.advance(1.0)
    for _ in range(3):
        assert await limiter.acquire(max_wait=0.0) == 0.0
    with pytest.raises(RateLimitedError):
        await limiter.acquire(max_wait=0.0)


async def test_too_long_a_wait_is_rejected_without_using_capacity(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    """A wait longer than max_wait raises RateLimitedError and reserves nothing in Redis."""
    limiter = make_limiter(rate=1.0, burst=1)
    await limiter.acquire()
    with pytest.raises(RateLimitedError) as info:
        await limiter.acquire(max_wait=0.5)
    assert info.value.retry_after == pytest.approx(1.0)
    assert info.value.upstream == "crm"
    assert clock.now() == 0.0
    assert await limiter.acquire() == pytest.approx(1.0)  # not 2.0: nothing was reserved


async def test_two_limiters_share_one_quota(make_limiter: LimiterFactory) -> None:
    """Capacity one instance used is gone for another instance of the same upstream."""
    first, second = make_limiter(rate=10.0, burst=2), make_limiter(rate=10.0, burst=2)
    assert await first.acquire() == 0.0
    assert await second.acquire() == 0.0
    with pytest.raises(RateLimitedError) as info:
        await first.acquire(max_wait=0.0)
    assert info.value.retry_after == pytest.approx(0.1)


async def test_drain_in_one_limiter_pauses_the_other(
    make_limiter: LimiterFactory, clock: FakeClock
) -> None:
    """After a drain(5) elsewhere, nobody is admitted before t=5, then at the steady rate."""
    throttled, other = make_limiter(rate=100.0, burst=100), make_limiter(rate=100.0, burst=100)
    await throttled.drain(5.0)
    assert await other.acquire() == pytest.approx(5.0)
    assert await other.acquire() == pytest.approx(0.01)  # no burst right after a 429
    assert clock.now() == pytest.approx(5.01)


async def test_drain_also_holds_callers_already_waiting_elsewhere(
    make_limiter: LimiterFactory,
) -> None:
    """A caller asleep on a reservation made before another process's drain waits it out."""
    clock = FakeClock(auto_advance=False)
    waiting, throttled = make_limiter(rate=1.0, clock=clock), make_limiter(rate=1.0, clock=clock)
    await waiting.acquire()
    waiter = asyncio.create_task(waiting.acquire())
    await wait_until(lambda: clock.pending_timers == 1)
    clock.advance(0.5)
    await throttled.drain(3.0)  # paused until t=3.5
    clock.advance(0.5)  # the waiter's original slot (t=1.0) arrives
    await wait_until(lambda: clock.pending_timers == 1)  # it queued again
    assert not waiter.done()
    clock.advance(2.5)
    assert await asyncio.wait_for(waiter, 30.0) == pytest.approx(3.5)  # a Redis round trip


async def test_cancelled_waiter_gives_its_slot_back(make_limiter: LimiterFactory) -> None:
    """A caller cancelled while waiting returns its reserved slot to the next caller."""
    clock = FakeClock(auto_advance=False)
    limiter = make_limiter(rate=1.0, clock=clock)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await wait_until(lambda: clock.pending_timers == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await limiter.aclose()  # the give-back runs in the background
    clock.advance(1.0)
    assert await limiter.acquire(max_wait=0.0) == 0.0


async def test_state_expires_once_it_no_longer_matters(
    make_limiter: LimiterFactory, redis: Redis
) -> None:
    """The key lives one second past its TAT or its pause, so idle upstreams cost nothing."""
    limiter = make_limiter(rate=10.0, burst=3)
    await limiter.acquire()
    assert 1000 < await redis.pttl(limiter.key) <= 1100
    await limiter.drain(60.0)
    assert 60_900 < await redis.pttl(limiter.key) <= 61_200


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0.0, 3.0)),
        st.tuples(st.just("acquire"), st.one_of(st.none(), st.floats(0.0, 2.0))),
        st.tuples(st.just("drain"), st.floats(-1.0, 3.0)),
    ),
    max_size=25,
)


async def _replay(
    limiter: RateLimiter, clock: FakeClock, ops: list[tuple[str, float | None]]
) -> list[tuple[str, float]]:
    """Apply ``ops`` in turn; record each acquire's outcome and the time after every op."""
    trace: list[tuple[str, float]] = []
    for op, value in ops:
        if op == "advance":
            assert value is not None
            clock.advance(value)
        elif op == "drain":
            assert value is not None
            await limiter.drain(value)
        else:
            try:
                trace.append(("waited", await limiter.acquire(value)))
            except RateLimitedError as exc:
                trace.append(("rejected", exc.retry_after or 0.0))
        trace.append(("now", clock.now()))
    return trace


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rate=st.floats(0.5, 50.0), burst=st.integers(1, 5), ops=_OPS)
def test_decisions_match_the_local_limiter(
    redis_url: str, rate: float, burst: int, ops: list[tuple[str, float | None]]
) -> None:
    """Any sequence of acquires, drains and idle time gets the local GCRA's exact answers."""

    async def run() -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        local_clock, shared_clock = FakeClock(), FakeClock()
        local = LocalRateLimiter("crm", rate=rate, burst=burst, clock=local_clock)
        client = connect_redis(redis_url)
        shared = RedisRateLimiter(
            "crm",
            rate=rate,
            burst=burst,
            clock=shared_clock,
            time_source=shared_clock.now,
            redis=client,
            key_prefix=f"cauce:test:{uuid.uuid4().hex}:",
        )
        try:
            return await _replay(local, local_clock, ops), await _replay(shared, shared_clock, ops)
        finally:
            await client.delete(shared.key)
            await client.aclose()

    expected, actual = asyncio.run(run())
    assert [kind for kind, _ in actual] == [kind for kind, _ in expected]
    assert [value for _, value in actual] == pytest.approx(
        [value for _, value in expected], rel=1e-9, abs=1e-9
    )

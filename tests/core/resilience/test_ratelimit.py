"""Local GCRA rate limiter: burst, steady rate, bounded waits, and drain after a 429."""

from __future__ import annotations

import asyncio

import pytest

from cauce.core.resilience import (
    FakeClock,
    LocalRateLimiter,
    RateLimitedError,
    RateLimiter,
    RateLimitPolicy,
    RecordingEvents,
    RetryPolicy,
    UpstreamThrottledError,
)

from .conftest import PipelineFactory
from .helpers import AlwaysFails, settle


def test_local_limiter_implements_the_port(clock: FakeClock) -> None:
    """The in-process limiter satisfies the RateLimiter port a Redis one will implement."""
    limiter: RateLimiter = LocalRateLimiter("crm", rate=1.0, clock=clock)
    assert hasattr(limiter, "acquire")
    assert hasattr(limiter, "drain")


async def test_burst_passes_then_calls_are_spaced_at_the_rate(clock: FakeClock) -> None:
    """A burst of 3 passes at once; the next calls wait one emission interval each."""
    limiter = LocalRateLimiter("crm", rate=10.0, burst=3, clock=clock)
    assert [await limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limiter.acquire() == pytest.approx(0.1)
    assert await limiter.acquire() == pytest.approx(0.1)
    assert clock.now() == pytest.approx(0.2)


async def test_capacity_recovers_while_idle(clock: FakeClock) -> None:
    """After a quiet second at 3/s with burst 3, a full burst is available again."""
    limiter = LocalRateLimiter("crm", rate=3.0, burst=3, clock=clock)
    for _ in range(3):
        await limiter.acquire()
    clock.advance(1.0)
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]


async def test_too_long_a_wait_is_rejected_without_using_capacity(clock: FakeClock) -> None:
    """A wait longer than max_wait raises RateLimitedError and does not reserve a slot."""
    limiter = LocalRateLimiter("crm", rate=1.0, burst=1, clock=clock)
    await limiter.acquire()
    with pytest.raises(RateLimitedError) as info:
        await limiter.acquire(max_wait=0.5)
    assert info.value.retry_after == pytest.approx(1.0)
    assert clock.now() == 0.0
    assert await limiter.acquire() == pytest.approx(1.0)  # not 2.0: nothing was reserved


async def test_drain_pauses_every_acquirer() -> None:
    """After drain(5) nobody is admitted before t=5, then calls resume at the steady rate."""
    clock = FakeClock(auto_advance=False)
    limiter = LocalRateLimiter("crm", rate=100.0, burst=100, clock=clock)
    await limiter.drain(5.0)
    admitted: list[float] = []

    async def acquire() -> None:
        await limiter.acquire()
        admitted.append(clock.now())

    tasks = [asyncio.create_task(acquire()) for _ in range(3)]
    await settle()
    clock.advance(4.99)
    await settle()
    assert admitted == []
    for _ in range(3):
        clock.advance(0.01)
        await settle()
    await asyncio.gather(*tasks)
    # One at the end of the pause, then one per 10 ms: no burst right after a 429.
    assert admitted == [pytest.approx(5.0), pytest.approx(5.01), pytest.approx(5.02)]


async def test_drain_also_holds_callers_already_waiting() -> None:
    """A caller asleep on a reservation made before the drain waits until the drain ends."""
    clock = FakeClock(auto_advance=False)
    limiter = LocalRateLimiter("crm", rate=1.0, burst=1, clock=clock)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    clock.advance(0.5)
    await limiter.drain(3.0)  # paused until t=3.5
    clock.advance(0.5)  # the waiter's original slot (t=1.0) arrives
    await settle()
    assert not waiter.done()
    clock.advance(2.5)
    await settle()
    assert waiter.done()
    assert waiter.result() == pytest.approx(3.5)


async def test_cancelled_waiter_gives_its_slot_back() -> None:
    """A caller cancelled while waiting returns its reserved slot to the next caller."""
    clock = FakeClock(auto_advance=False)
    limiter = LocalRateLimiter("crm", rate=1.0, burst=1, clock=clock)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    clock.advance(1.0)
    assert limiter.try_acquire()


async def test_upstream_429_drains_the_limiter_for_everyone(
    make_pipeline: PipelineFactory, clock: FakeClock, events: RecordingEvents
) -> None:
    """A 429 with Retry-After 4 makes the next, unrelated call wait until t=4."""
    pipeline = make_pipeline(
        retry=RetryPolicy(max_attempts=1),
        rate_limit=RateLimitPolicy(enabled=True, rate=100.0, burst=100, max_wait=10.0),
    )
    throttled = AlwaysFails(lambda: UpstreamThrottledError("429", retry_after=4.0))
    with pytest.raises(UpstreamThrottledError):
        await pipeline.execute(throttled)
    started: list[float] = []

    async def other_call() -> str:
        started.append(clock.now())
        return "ok"

    assert await pipeline.execute(other_call) == "ok"
    assert started == [pytest.approx(4.0)]
    assert events.of("ratelimit_drain") == [("ratelimit_drain", "crm", 4.0)]
    assert events.of("ratelimit_wait")[0][2] == pytest.approx(4.0)


async def test_pipeline_rejects_when_the_wait_exceeds_policy(
    make_pipeline: PipelineFactory, clock: FakeClock, events: RecordingEvents
) -> None:
    """A call that would wait longer than the policy's max_wait fails with RateLimitedError."""
    pipeline = make_pipeline(
        rate_limit=RateLimitPolicy(enabled=True, rate=1.0, burst=1, max_wait=0.5),
    )

    async def call() -> str:
        return "ok"

    assert await pipeline.execute(call) == "ok"
    with pytest.raises(RateLimitedError):
        await pipeline.execute(call)
    assert clock.now() == 0.0
    assert len(events.of("ratelimit_rejected")) == 1
    assert events.of("attempt") == [("attempt", "crm", 1)]

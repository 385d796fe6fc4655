"""CoalescingClock: asyncio.timeout semantics with one loop timer for many deadlines."""

from __future__ import annotations

import asyncio
import time

import pytest

from cauce.core.http import CoalescingClock

RESOLUTION = 0.01
# Loop scheduling on a shared machine adds latency of its own; never early is exact.
SLACK = 0.05


async def test_slow_body_times_out_never_early_and_within_resolution() -> None:
    """A body past its deadline gets TimeoutError no earlier than the deadline."""
    clock = CoalescingClock(RESOLUTION)
    started = clock.now()
    scope = clock.timeout_at(started + 0.05)
    with pytest.raises(TimeoutError):
        async with scope:
            await asyncio.sleep(1.0)
    elapsed = clock.now() - started
    assert scope.expired()
    assert 0.05 <= elapsed < 0.05 + RESOLUTION + SLACK


async def test_fast_body_is_untouched_and_its_deadline_is_dropped_later() -> None:
    """A body that finishes first is not cancelled; its stale deadline is purged when due."""
    clock = CoalescingClock(RESOLUTION)
    scope = clock.timeout_at(clock.now() + 0.03)
    async with scope:
        await asyncio.sleep(0)
    assert not scope.expired()
    assert clock.pending == 1
    await asyncio.sleep(0.03 + RESOLUTION + SLACK)
    assert clock.pending == 0


async def test_outside_cancellation_stays_a_cancellation() -> None:
    """Cancelling the task from outside surfaces as CancelledError, not TimeoutError."""
    clock = CoalescingClock(RESOLUTION)
    scope = clock.timeout_at(clock.now() + 10.0)

    async def body() -> None:
        async with scope:
            await asyncio.sleep(10.0)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not scope.expired()


async def test_deadline_already_past_cancels_at_the_first_await() -> None:
    """A deadline in the past times out the body at its first suspension."""
    clock = CoalescingClock(RESOLUTION)
    reached: list[str] = []

    async def body() -> None:
        async with clock.timeout_at(clock.now() - 1.0):
            reached.append("before")
            await asyncio.sleep(1.0)
            reached.append("after")

    with pytest.raises(TimeoutError):
        await body()
    assert reached == ["before"]


async def test_many_staggered_deadlines_each_fire_in_their_own_time() -> None:
    """Forty concurrent scopes with deadlines 10-400 ms each expire at their own deadline."""
    clock = CoalescingClock(RESOLUTION)
    start = clock.now()

    async def one(index: int) -> float:
        deadline = start + 0.01 * (index + 1)
        try:
            async with clock.timeout_at(deadline):
                await asyncio.sleep(5.0)
        except TimeoutError:
            return clock.now() - deadline
        raise AssertionError("did not time out")

    lateness = await asyncio.gather(*(one(i) for i in range(40)))
    assert min(lateness) >= 0.0
    assert max(lateness) < RESOLUTION + SLACK


async def test_an_earlier_deadline_rearms_the_single_timer() -> None:
    """A deadline earlier than every pending one still fires on time."""
    clock = CoalescingClock(RESOLUTION)
    slow = asyncio.create_task(asyncio.sleep(0))
    async with clock.timeout_at(clock.now() + 30.0):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with clock.timeout_at(clock.now() + 0.02):
                await asyncio.sleep(1.0)
        assert time.monotonic() - started < 0.02 + RESOLUTION + SLACK
    await slow


def test_a_new_event_loop_starts_clean() -> None:
    """The same clock keeps working when used from a second event loop."""
    clock = CoalescingClock(RESOLUTION)

    async def run() -> None:
        with pytest.raises(TimeoutError):
            async with clock.timeout_at(clock.now() + 0.02):
                await asyncio.sleep(1.0)
        async with clock.timeout_at(clock.now() + 60.0):
            await asyncio.sleep(0)

    asyncio.run(run())
    asyncio.run(run())


def test_resolution_must_be_positive() -> None:
    """A zero resolution is refused."""
    with pytest.raises(ValueError):
        CoalescingClock(0)

"""The injectable clocks: fake time, fake timeouts, and the real clock's asyncio timeout."""

from __future__ import annotations

import asyncio

import pytest

from cauce.core.resilience import FakeClock, RealClock

from .helpers import settle


async def test_fake_sleep_jumps_time_and_records_the_delay(clock: FakeClock) -> None:
    """An auto-advancing fake sleep moves time by exactly the delay and records it."""
    await clock.sleep(2.5)
    await clock.sleep(-1.0)
    assert clock.now() == 2.5
    assert clock.sleeps == [2.5, 0.0]


async def test_fake_timeout_fires_at_its_fake_deadline(clock: FakeClock) -> None:
    """A body sleeping past a fake deadline gets TimeoutError with time stopped at the deadline."""
    scope = clock.timeout_at(1.0)
    with pytest.raises(TimeoutError):
        async with scope:
            await clock.sleep(5.0)
    assert scope.expired()
    assert clock.now() == 1.0


async def test_fake_timeout_does_not_fire_when_body_finishes_first(clock: FakeClock) -> None:
    """A body that finishes before the deadline is untouched and leaves no timer behind."""
    scope = clock.timeout_at(1.0)
    async with scope:
        await clock.sleep(0.5)
    await clock.sleep(2.0)
    assert not scope.expired()
    assert clock.pending_timers == 0


async def test_fake_timeout_already_past_cancels_at_first_await(clock: FakeClock) -> None:
    """A deadline already in the past times the body out at its first await."""
    await clock.sleep(3.0)
    with pytest.raises(TimeoutError):
        async with clock.timeout_at(1.0):
            await asyncio.sleep(0)


async def test_manual_clock_sleep_blocks_until_advanced() -> None:
    """With auto_advance off a sleep resumes only once advance() reaches its wake-up time."""
    clock = FakeClock(auto_advance=False)
    sleeper = asyncio.create_task(clock.sleep(3.0))
    await settle()
    clock.advance(2.0)
    await settle()
    assert not sleeper.done()
    clock.advance(1.0)
    await settle()
    assert sleeper.done()
    assert clock.now() == 3.0


async def test_manual_clock_timeout_interrupts_a_blocked_task() -> None:
    """advance() past a deadline times out a task blocked on something other than the clock."""
    clock = FakeClock(auto_advance=False)
    never = asyncio.Event()

    async def wait_forever() -> None:
        async with clock.timeout_at(1.0):
            await never.wait()

    task = asyncio.create_task(wait_forever())
    await settle()
    clock.advance(1.0)
    with pytest.raises(TimeoutError):
        await task


async def test_outside_cancellation_is_not_reported_as_timeout() -> None:
    """Cancelling a task inside a fake timeout scope propagates CancelledError, not TimeoutError."""
    clock = FakeClock(auto_advance=False)
    never = asyncio.Event()

    async def wait_forever() -> None:
        async with clock.timeout_at(10.0):
            await never.wait()

    task = asyncio.create_task(wait_forever())
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_advance_refuses_to_go_back() -> None:
    """Time on the fake clock never moves backwards."""
    with pytest.raises(ValueError):
        FakeClock().advance(-1.0)


async def test_real_clock_timeout_interrupts_a_sleep() -> None:
    """The real clock's scope is asyncio's timeout: it cuts a long sleep after a few ms."""
    clock = RealClock()
    start = clock.now()
    scope = clock.timeout_at(start + 0.005)
    with pytest.raises(TimeoutError):
        async with scope:
            await clock.sleep(5.0)
    assert scope.expired()
    assert clock.now() - start < 1.0

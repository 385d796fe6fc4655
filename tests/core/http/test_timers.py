"""CoalescingClock: asyncio.timeout semantics with one loop timer for many deadlines.

Each test runs on an event loop whose clock moves only when the loop would otherwise
wait (and by a microsecond each turn, as real time always moves on): every loop timer
fires exactly at its time, so "never early, at most `resolution` late" is checked on
the clock's own arithmetic. On real time, a loaded machine woke a timer over 60 ms late.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from cauce.core.http import CoalescingClock, timers

RESOLUTION = 0.01
TURN = 1e-6  # virtual seconds each turn of the loop takes
# Time the loop's own turns add between a timer and the code it wakes (a few TURNs).
SLACK = 0.001

Run = Callable[[Coroutine[Any, Any, None]], None]


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: where it would sleep until its next timer, it
    moves its clock to that timer instead."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        """The virtual time."""
        return self.now


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout is None:  # I/O to handle, or nothing scheduled to jump to
            self._loop.now += TURN
            return ready or super().select(None)
        self._loop.now += max(timeout, TURN)
        return []


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run a coroutine on a fresh virtual-time loop, which the clock under test reads."""
    virtual = SimpleNamespace(monotonic=lambda: asyncio.get_running_loop().time())
    monkeypatch.setattr(timers, "time", virtual)

    def run(main: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            runner.run(main)

    return run


def test_slow_body_times_out_never_early_and_within_resolution(run: Run) -> None:
    """A body past its deadline gets TimeoutError no earlier than the deadline."""

    async def main() -> None:
        clock = CoalescingClock(RESOLUTION)
        started = clock.now()
        scope = clock.timeout_at(started + 0.05)
        with pytest.raises(TimeoutError):
            async with scope:
                await asyncio.sleep(1.0)
        elapsed = clock.now() - started
        assert scope.expired()
        assert 0.05 <= elapsed < 0.05 + RESOLUTION + SLACK

    run(main())


def test_fast_body_is_untouched_and_its_deadline_is_dropped_later(run: Run) -> None:
    """A body that finishes first is not cancelled; its stale deadline is purged when due."""

    async def main() -> None:
        clock = CoalescingClock(RESOLUTION)
        scope = clock.timeout_at(clock.now() + 0.03)
        async with scope:
            await asyncio.sleep(0)
        assert not scope.expired()
        assert clock.pending == 1
        await asyncio.sleep(0.03 + RESOLUTION + SLACK)
        assert clock.pending == 0

    run(main())


def test_outside_cancellation_stays_a_cancellation(run: Run) -> None:
    """Cancelling the task from outside surfaces as CancelledError, not TimeoutError."""

    async def main() -> None:
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

    run(main())


def test_deadline_already_past_cancels_at_the_first_await(run: Run) -> None:
    """A deadline in the past times out the body at its first suspension."""

    async def main() -> None:
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

    run(main())


def test_many_staggered_deadlines_each_fire_in_their_own_time(run: Run) -> None:
    """Forty concurrent scopes with deadlines 10-400 ms each expire at their own deadline."""

    async def main() -> None:
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

    run(main())


def test_an_earlier_deadline_rearms_the_single_timer(run: Run) -> None:
    """A deadline earlier than every pending one still fires on time."""

    async def main() -> None:
        clock = CoalescingClock(RESOLUTION)
        slow = asyncio.create_task(asyncio.sleep(0))
        async with clock.timeout_at(clock.now() + 30.0):
            started = clock.now()
            with pytest.raises(TimeoutError):
                async with clock.timeout_at(clock.now() + 0.02):
                    await asyncio.sleep(1.0)
            assert clock.now() - started < 0.02 + RESOLUTION + SLACK
        await slow

    run(main())


def test_a_new_event_loop_starts_clean(run: Run) -> None:
    """The same clock keeps working when used from a second event loop."""
    clock = CoalescingClock(RESOLUTION)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with clock.timeout_at(clock.now() + 0.02):
                await asyncio.sleep(1.0)
        async with clock.timeout_at(clock.now() + 60.0):
            await asyncio.sleep(0)

    run(main())
    run(main())


def test_resolution_must_be_positive() -> None:
    """A zero resolution is refused."""
    with pytest.raises(ValueError):
        CoalescingClock(0)

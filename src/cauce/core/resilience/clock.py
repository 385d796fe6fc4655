"""Injectable time and randomness for the resilience guards.

Every guard reads time through a :class:`Clock` and draws jitter from a
:class:`RandomSource`, so tests can run policies that span minutes in microseconds
and get the same answer on every run. Timeouts are part of the clock too: a deadline
measured on a fake clock must also *fire* on that fake clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

__all__ = ["Clock", "FakeClock", "RandomSource", "RealClock", "TimeoutScope"]


class TimeoutScope(Protocol):
    """An async context manager that cancels its body at a deadline (like ``asyncio.Timeout``).

    On expiry the body's cancellation surfaces as ``TimeoutError`` and :meth:`expired`
    returns True, which lets callers tell their own timer from a ``TimeoutError`` the
    wrapped code raised by itself.
    """

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...

    def expired(self) -> bool:
        """Return True if the deadline fired."""
        ...


class Clock(Protocol):
    """Monotonic time, sleeping and deadlines, all on the same time line."""

    def now(self) -> float:
        """Return monotonic seconds (an arbitrary origin; only differences matter)."""
        ...

    async def sleep(self, delay: float) -> None:
        """Suspend the current task for ``delay`` seconds of this clock's time."""
        ...

    def timeout_at(self, when: float) -> TimeoutScope:
        """Return a scope that cancels its body when :meth:`now` reaches ``when``."""
        ...


class RandomSource(Protocol):
    """The one method of :class:`random.Random` the guards use (for jitter)."""

    def random(self) -> float:
        """Return a float in [0.0, 1.0)."""
        ...


class RealClock:
    """The process's monotonic clock and asyncio's own sleep and timeout."""

    __slots__ = ()

    def now(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, delay: float) -> None:
        """Sleep with ``asyncio.sleep``."""
        await asyncio.sleep(delay)

    def timeout_at(self, when: float) -> TimeoutScope:
        """Return ``asyncio.timeout`` for the remaining time.

        A relative delay is used because the event loop's clock (uvloop's, for one)
        need not share an origin with ``time.monotonic``.
        """
        return asyncio.timeout(when - time.monotonic())


class _Timer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A deterministic clock for tests: time moves only through :meth:`sleep` or :meth:`advance`.

    With ``auto_advance=True`` (the default) ``sleep(d)`` jumps time forward by ``d``
    at once, firing any timers due on the way, then yields to the loop once. Tasks that
    sleep concurrently therefore overlap only approximately (time jumps to whoever sleeps
    first); that is enough for policies, and tests that need exact interleavings use
    ``auto_advance=False``, where ``sleep`` blocks until a test calls :meth:`advance`.
    Every requested delay is recorded in :attr:`sleeps`.
    """

    def __init__(self, start: float = 0.0, *, auto_advance: bool = True) -> None:
        self._now = start
        self._auto_advance = auto_advance
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self.sleeps: list[float] = []

    def now(self) -> float:
        """Return the fake time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers (sleepers, timeouts) in time order."""
        if seconds < 0 or math.isnan(seconds):
            raise ValueError("time only moves forward")
        self._run_until(self._now + seconds)

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` fake seconds (see the class docstring for the two modes)."""
        delay = max(0.0, delay)
        self.sleeps.append(delay)
        target = self._now + delay
        if self._auto_advance:
            task = asyncio.current_task()
            self._run_until(target, task)
            # One real yield, so cancellations (our own timeout firing included) surface
            # here exactly as they would at a real await.
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_at(target, wake)
        try:
            await future
        finally:
            timer.cancel()

    def timeout_at(self, when: float) -> TimeoutScope:
        """Return a scope that cancels its body when fake time reaches ``when``."""
        return _FakeTimeout(self, when)

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        """Run ``callback`` when fake time reaches ``when``; return a cancellable handle."""
        timer = _Timer(callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    @property
    def pending_timers(self) -> int:
        """Number of timers not yet fired or cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def _run_until(self, target: float, task: asyncio.Task[object] | None = None) -> None:
        baseline = task.cancelling() if task is not None else 0
        timers = self._timers
        while timers and timers[0][0] <= target:
            when, _, timer = heapq.heappop(timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
            # The sleeper's own deadline fired: stop the clock there, as a real sleep
            # would have been interrupted at that instant.
            if task is not None and task.cancelling() > baseline:
                return
        self._now = max(self._now, target)


class _FakeTimeout:
    """``asyncio.Timeout`` semantics driven by a :class:`FakeClock`."""

    __slots__ = ("_cancelling", "_clock", "_exited", "_expired", "_task", "_timer", "_when")

    def __init__(self, clock: FakeClock, when: float) -> None:
        self._clock = clock
        self._when = when
        self._expired = False
        self._exited = False
        self._task: asyncio.Task[object] | None = None
        self._timer: _Timer | None = None
        self._cancelling = 0

    def expired(self) -> bool:
        return self._expired

    async def __aenter__(self) -> _FakeTimeout:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("timeout_at() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self._when <= self._clock.now():
            # Already past: cancel at the body's first await, like asyncio.timeout(0).
            asyncio.get_running_loop().call_soon(self._fire)
        else:
            self._timer = self._clock.call_at(self._when, self._fire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._exited = True
        if self._timer is not None:
            self._timer.cancel()
        if self._expired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
        return None

    def _fire(self) -> None:
        if self._exited or self._expired or self._task is None or self._task.done():
            return
        self._expired = True
        self._task.cancel()

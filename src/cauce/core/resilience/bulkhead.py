"""Bulkhead: a cap on concurrent calls to one upstream, with a bounded, timed queue.

``asyncio.Semaphore`` caps concurrency but queues without limit and without a timeout,
so a slow upstream would pile up every task of the process behind it. Here a caller
gets a slot at once if one is free, otherwise waits in a FIFO queue of at most
``max_waiting`` callers for at most ``max_wait`` seconds, else gets
:class:`BulkheadFullError`.

A released slot is handed straight to the first waiter (the in-flight count does not
drop and rise again), so a newcomer can never overtake the queue and the limit holds at
every instant. A waiter that times out or is cancelled at the moment it was handed a
slot passes the slot on instead of leaking it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from cauce.core.resilience.clock import Clock
from cauce.core.resilience.errors import BulkheadFullError

__all__ = ["Bulkhead"]


class Bulkhead:
    """Concurrency limit + bounded waiting queue for one upstream."""

    __slots__ = ("_clock", "_in_flight", "_max_concurrent", "_max_waiting", "_waiters", "name")

    def __init__(
        self, name: str, *, max_concurrent: int, max_waiting: int = 0, clock: Clock
    ) -> None:
        if max_concurrent < 1 or max_waiting < 0:
            raise ValueError("max_concurrent must be >= 1 and max_waiting >= 0")
        self.name = name
        self._max_concurrent = max_concurrent
        self._max_waiting = max_waiting
        self._clock = clock
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_flight(self) -> int:
        """Slots currently held."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Callers currently queued for a slot."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is queued; never waits."""
        if self._in_flight < self._max_concurrent and not self._waiters:
            self._in_flight += 1
            return True
        return False

    async def acquire(self, max_wait: float) -> None:
        """Take a slot, queueing up to ``max_wait`` seconds; else raise BulkheadFullError."""
        if self.try_acquire():
            return
        if len(self._waiters) >= self._max_waiting or max_wait <= 0:
            raise BulkheadFullError(self.name, reason="full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with self._clock.timeout_at(self._clock.now() + max_wait):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # release() handed us the slot just as we gave up: pass it on.
                self.release()
            else:
                waiter.cancel()
                self._discard(waiter)
            if isinstance(exc, TimeoutError):
                raise BulkheadFullError(self.name, reason="timeout") from None
            raise

    def release(self) -> None:
        """Return a slot: hand it to the first live waiter, or free it."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_flight -= 1

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        # O(max_waiting), only on the timeout/cancel path.
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

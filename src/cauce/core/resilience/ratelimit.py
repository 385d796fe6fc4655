"""Rate limiting: the :class:`RateLimiter` port and an in-process GCRA implementation.

The port is deliberately small (``acquire`` and ``drain``, both async) so that the
Redis-backed limiter shared by every process
(:class:`~cauce.core.resilience.ratelimit_redis.RedisRateLimiter`, same algorithm, one
Lua script) implements it without the pipeline changing.

:class:`LocalRateLimiter` is the Generic Cell Rate Algorithm: one float, the
*theoretical arrival time* (TAT), replaces a token bucket's refill arithmetic. With
emission interval ``T = 1/rate`` and tolerance ``tau = (burst - 1) * T`` a request at
``now`` conforms when ``TAT - tau <= now``, and pushes ``TAT`` by ``T``. A request that
does not conform *reserves* the next slot and sleeps until it, so waiters are served in
arrival order and nobody can overtake them.

``drain(s)`` is for a 429: it moves TAT so that nothing conforms before ``now + s``,
and calls then resume at the steady rate (no burst right after the upstream pushed
back). Callers already asleep on an earlier reservation notice the drain when they
wake and queue again behind it.
"""

from __future__ import annotations

import math
from typing import Protocol

from cauce.core.resilience.clock import Clock
from cauce.core.resilience.errors import RateLimitedError

__all__ = ["LocalRateLimiter", "RateLimiter"]


class RateLimiter(Protocol):
    """Admission at a steady rate, shared by every caller of one upstream."""

    async def acquire(self, max_wait: float | None = None) -> float:
        """Wait for permission to send one request; return the seconds waited.

        Raises :class:`RateLimitedError` (without consuming capacity) if permission
        would take longer than ``max_wait`` seconds (``None``: wait as long as needed).
        """
        ...

    async def drain(self, for_seconds: float) -> None:
        """Grant nothing for the next ``for_seconds`` (the upstream said to back off).

        Callers already waiting on a slot wait until the pause ends too; afterwards
        calls resume at the steady rate, without a burst. A shared limiter pauses every
        process that shares it (a 429's ``Retry-After``, HubSpot's ``DAILY`` limit).
        """
        ...


class LocalRateLimiter:
    """GCRA limiter for one process (see the module docstring)."""

    __slots__ = ("_clock", "_interval", "_paused_until", "_tat", "_tolerance", "name")

    def __init__(self, name: str, *, rate: float, burst: int = 1, clock: Clock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.name = name
        self._clock = clock
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._tat = -math.inf
        self._paused_until = -math.inf

    async def acquire(self, max_wait: float | None = None) -> float:
        """Admit one request, sleeping on a reserved slot if needed; return seconds waited."""
        now = self._clock.now()
        tat = self._tat if self._tat > now else now
        if tat - self._tolerance <= now:
            self._tat = tat + self._interval
            return 0.0
        return await self._wait(now, math.inf if max_wait is None else max_wait)

    def try_acquire(self) -> bool:
        """Admit one request only if that needs no wait."""
        now = self._clock.now()
        tat = self._tat if self._tat > now else now
        if tat - self._tolerance <= now:
            self._tat = tat + self._interval
            return True
        return False

    async def drain(self, for_seconds: float) -> None:
        """Admit nothing before ``now + for_seconds``, then resume at the steady rate."""
        until = self._clock.now() + max(0.0, for_seconds)
        if until > self._paused_until:
            self._paused_until = until
        # TAT - tau == until: the first call conforms exactly at ``until``.
        self._tat = max(self._tat, until + self._tolerance)

    async def _wait(self, started: float, max_wait: float) -> float:
        clock = self._clock
        now = started
        while True:
            tat = self._tat if self._tat > now else now
            wait = tat - self._tolerance - now
            if wait <= 0:
                self._tat = tat + self._interval
                return now - started
            if (now - started) + wait > max_wait:
                raise RateLimitedError(self.name, retry_after=wait)
            reserved = tat + self._interval
            self._tat = reserved
            try:
                await clock.sleep(wait)
            except BaseException:
                # Cancelled while waiting: give the slot back if nobody queued behind it.
                if self._tat == reserved:
                    self._tat = reserved - self._interval
                raise
            now = clock.now()
            if self._paused_until <= now:
                return now - started
            # A drain arrived while we slept; our reservation predates it. Queue again.

"""Sliding windows of call outcomes for the circuit breaker (Resilience4j's two kinds).

Both keep running totals so that recording an outcome and reading the failure and
slow-call rates are O(1): the breaker does this on every call.
"""

from __future__ import annotations

import math
from typing import Protocol

__all__ = ["CountWindow", "SlidingWindow", "TimeWindow"]

_SEEN = 1
_FAILED = 2
_SLOW = 4


class SlidingWindow(Protocol):
    """Aggregated outcomes of the recent calls."""

    total: int
    failed: int
    slow: int

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Add one outcome observed at ``now`` and age out what left the window."""
        ...

    def refresh(self, now: float) -> None:
        """Age out what left the window by ``now`` (totals then describe ``now``)."""
        ...

    def reset(self) -> None:
        """Forget every outcome."""
        ...


class CountWindow:
    """The last ``size`` calls, in a ring buffer of outcome bit sets."""

    __slots__ = ("_pos", "_ring", "_size", "failed", "slow", "total")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._size = size
        self._ring = [0] * size
        self._pos = 0
        self.total = 0
        self.failed = 0
        self.slow = 0

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Overwrite the oldest outcome with this one."""
        pos = self._pos
        old = self._ring[pos]
        if old:
            self.total -= 1
            if old & _FAILED:
                self.failed -= 1
            if old & _SLOW:
                self.slow -= 1
        code = _SEEN
        self.total += 1
        if failed:
            code |= _FAILED
            self.failed += 1
        if slow:
            code |= _SLOW
            self.slow += 1
        self._ring[pos] = code
        pos += 1
        self._pos = 0 if pos == self._size else pos

    def refresh(self, now: float) -> None:
        """Nothing ages out of a count window."""

    def reset(self) -> None:
        """Forget every outcome."""
        self._ring = [0] * self._size
        self._pos = 0
        self.total = self.failed = self.slow = 0


class TimeWindow:
    """The calls of the last ``seconds`` whole seconds, one bucket per second.

    A call at time ``t`` lands in bucket ``floor(t)``; at time ``now`` the window holds
    buckets ``floor(now) - seconds + 1`` through ``floor(now)``.
    """

    __slots__ = ("_failed", "_head", "_size", "_slow", "_total", "failed", "slow", "total")

    def __init__(self, seconds: int) -> None:
        if seconds < 1:
            raise ValueError("seconds must be >= 1")
        self._size = seconds
        self._total = [0] * seconds
        self._failed = [0] * seconds
        self._slow = [0] * seconds
        self._head: int | None = None
        self.total = 0
        self.failed = 0
        self.slow = 0

    def refresh(self, now: float) -> None:
        """Drop the buckets older than the window."""
        second = math.floor(now)
        head = self._head
        if head is None or second - head >= self._size:
            self._clear()
            self._head = second
            return
        if second <= head:
            # Time never goes back on a monotonic clock; if it seems to, keep counting
            # into the newest bucket rather than corrupting older ones.
            return
        size = self._size
        for sec in range(head + 1, second + 1):
            i = sec % size
            self.total -= self._total[i]
            self.failed -= self._failed[i]
            self.slow -= self._slow[i]
            self._total[i] = self._failed[i] = self._slow[i] = 0
        self._head = second

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Count one outcome in the current second's bucket."""
        self.refresh(now)
        assert self._head is not None
        i = self._head % self._size
        self._total[i] += 1
        self.total += 1
        if failed:
            self._failed[i] += 1
            self.failed += 1
        if slow:
            self._slow[i] += 1
            self.slow += 1

    def reset(self) -> None:
        """Forget every outcome."""
        self._clear()
        self._head = None

    def _clear(self) -> None:
        size = self._size
        self._total = [0] * size
        self._failed = [0] * size
        self._slow = [0] * size
        self.total = self.failed = self.slow = 0

"""Retry budget (Finagle's ``RetryBudget``, Envoy's retry budgets).

Per-call attempt limits do not stop a retry storm: when an upstream fails for
everybody, ``max_attempts = 3`` triples its load exactly when it can least take it.
A budget caps retries at a share of the traffic instead: over the last
``window_seconds``, a retry is allowed only while

    retries + 1 <= ratio * requests + min_retries_per_second * window_seconds

where ``requests`` counts calls (first attempts), not retries. The floor keeps retries
possible for low-traffic upstreams, where the ratio alone would allow none.

Counters live in one bucket per second, so both operations are O(1) amortised.
"""

from __future__ import annotations

import math

__all__ = ["RetryBudget"]


class RetryBudget:
    """A sliding-window budget of retries, shared by every call of one upstream."""

    __slots__ = (
        "_floor",
        "_head",
        "_ratio",
        "_requests",
        "_retries",
        "_size",
        "requests",
        "retries",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_retries_per_second: float = 1.0,
        window_seconds: int = 10,
    ) -> None:
        if ratio < 0 or min_retries_per_second < 0 or window_seconds < 1:
            raise ValueError("ratio and floor must be >= 0, window_seconds >= 1")
        self._ratio = ratio
        self._floor = min_retries_per_second * window_seconds
        self._size = window_seconds
        self._requests = [0] * window_seconds
        self._retries = [0] * window_seconds
        self._head: int | None = None
        self.requests = 0
        self.retries = 0

    def record_request(self, now: float) -> None:
        """Count one call (its first attempt)."""
        i = self._refresh(now)
        self._requests[i] += 1
        self.requests += 1

    def try_acquire_retry(self, now: float) -> bool:
        """Spend one retry if the budget allows it; return whether it did."""
        i = self._refresh(now)
        if self.retries + 1 > self._ratio * self.requests + self._floor:
            return False
        self._retries[i] += 1
        self.retries += 1
        return True

    def _refresh(self, now: float) -> int:
        second = math.floor(now)
        head = self._head
        size = self._size
        if head is None or second - head >= size:
            self._requests = [0] * size
            self._retries = [0] * size
            self.requests = self.retries = 0
            self._head = second
            return second % size
        if second > head:
            for sec in range(head + 1, second + 1):
                i = sec % size
                self.requests -= self._requests[i]
                self.retries -= self._retries[i]
                self._requests[i] = self._retries[i] = 0
            self._head = second
            return second % size
        return head % size

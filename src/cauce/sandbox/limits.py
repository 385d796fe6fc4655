"""The account's request limits: a rolling window and a daily cap, on an injectable clock.

HubSpot counts requests per private app in a *rolling* 10-second window (not fixed
buckets), and separately per day (midnight to midnight in the account's time zone). Here
a "day" is a fixed interval of ``day_seconds`` counted from the limiter's creation, so a
test can live through a reset in a second.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LimitDecision", "RequestLimiter"]


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """What the limiter says about one request, and the header values to send with it."""

    policy: str | None
    """``None`` if allowed, else ``"TEN_SECONDLY_ROLLING"`` or ``"DAILY"``."""
    window_max: int
    window_remaining: int
    interval_ms: int
    daily_max: int
    daily_remaining: int

    def headers(self) -> dict[str, str]:
        """HubSpot's ``X-HubSpot-RateLimit-*`` headers for this answer."""
        headers = {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(self.interval_ms),
            "X-HubSpot-RateLimit-Max": str(self.window_max),
            "X-HubSpot-RateLimit-Remaining": str(self.window_remaining),
        }
        if self.daily_max:
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_max)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(self.daily_remaining)
        return headers


class RequestLimiter:
    """A rolling-window counter plus a daily counter; not thread-safe (one event loop)."""

    def __init__(
        self,
        *,
        limit: int,
        window_seconds: float,
        daily_limit: int,
        day_seconds: float,
        clock: Callable[[], float],
        count_rejected: bool = False,
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._daily_limit = daily_limit
        self._day_seconds = day_seconds
        self._clock = clock
        self._count_rejected = count_rejected
        self._hits: deque[float] = deque()
        self._origin = clock()
        self._day_index = 0
        self._day_count = 0

    def reset(self) -> None:
        """Forget every counted request and start a new day now."""
        self._hits.clear()
        self._origin = self._clock()
        self._day_index = 0
        self._day_count = 0

    def seconds_until_day_reset(self) -> float:
        """Time left in the current "day"."""
        elapsed = self._clock() - self._origin
        return self._day_seconds - (elapsed % self._day_seconds)

    def _roll(self, now: float) -> None:
        cutoff = now - self._window
        hits = self._hits
        while hits and hits[0] <= cutoff:
            hits.popleft()
        day = math.floor((now - self._origin) / self._day_seconds)
        if day != self._day_index:
            self._day_index = day
            self._day_count = 0

    def acquire(self) -> LimitDecision:
        """Count one request if the limits allow it, and say which limit refused it if not."""
        now = self._clock()
        self._roll(now)
        policy: str | None = None
        if self._daily_limit and self._day_count >= self._daily_limit:
            policy = "DAILY"
        elif len(self._hits) >= self._limit:
            policy = "TEN_SECONDLY_ROLLING"
        if policy is None or self._count_rejected:
            self._hits.append(now)
            self._day_count += 1
        return self._decision(policy)

    def peek(self) -> LimitDecision:
        """The current header values without counting a request."""
        self._roll(self._clock())
        return self._decision(None)

    def _decision(self, policy: str | None) -> LimitDecision:
        return LimitDecision(
            policy=policy,
            window_max=self._limit,
            window_remaining=max(0, self._limit - len(self._hits)),
            interval_ms=round(self._window * 1000),
            daily_max=self._daily_limit,
            daily_remaining=max(0, self._daily_limit - self._day_count),
        )

    def seconds_until_slot(self) -> float:
        """How long until the rolling window frees a slot (0 if one is free now)."""
        now = self._clock()
        self._roll(now)
        if len(self._hits) < self._limit:
            return 0.0
        return max(0.0, self._hits[0] + self._window - now)

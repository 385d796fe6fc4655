"""Retry policies and backoff: exponential with full jitter, capped (AWS's advice)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from cauce.core.jobs.ports import PermanentJobError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a task retries.

    `retry_on` lists the exception types that may retry (default: any `Exception`);
    `fail_on` lists those that fail at once (checked first; `PermanentJobError` always).
    """

    max_attempts: int = 5
    base_seconds: float = 2.0
    cap_seconds: float = 600.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    fail_on: tuple[type[BaseException], ...] = field(default=())
    max_postponements: int = 1000

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_seconds < 0 or self.cap_seconds < self.base_seconds:
            raise ValueError("need 0 <= base_seconds <= cap_seconds")

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether `exc` may be retried at all (the budget is checked separately)."""
        if isinstance(exc, PermanentJobError) or (self.fail_on and isinstance(exc, self.fail_on)):
            return False
        return isinstance(exc, self.retry_on)

    def ceiling(self, attempt: int) -> float:
        """The largest wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempt - 1)))

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, ceiling(attempt)]."""
        return rng.uniform(0.0, self.ceiling(attempt))


DEFAULT_POLICY = RetryPolicy()

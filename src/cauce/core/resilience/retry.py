"""Retry classification and capped exponential backoff with jitter.

The retry *loop* lives in the pipeline (it has to interleave with the deadline, the
budget and the breaker); this module holds the decisions: which errors are worth another
attempt and how long to wait before it. Backoff follows the AWS architecture blog's
"Exponential Backoff And Jitter": *full jitter* spreads retries uniformly below a capped
exponential, *decorrelated jitter* grows from the previous delay instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from cauce.core.resilience.clock import RandomSource
from cauce.core.resilience.errors import DeadlineExceeded, RejectedError, RetryableError

__all__ = [
    "JitterKind",
    "RetryStrategy",
    "decorrelated_jitter",
    "default_is_retryable",
    "full_jitter",
]

JitterKind = Literal["full", "decorrelated"]

# 2.0 ** 1024 overflows a float; past ~60 doublings every sane cap is reached anyway.
_MAX_EXPONENT = 1000


def full_jitter(retry: int, base: float, cap: float, rng: RandomSource) -> float:
    """Return a delay uniform in ``[0, min(cap, base * 2**retry))``; ``retry`` is 0-based."""
    return rng.random() * min(cap, base * 2.0 ** min(retry, _MAX_EXPONENT))


def decorrelated_jitter(previous: float, base: float, cap: float, rng: RandomSource) -> float:
    """Return ``min(cap, uniform(base, 3 * previous))`` (start with ``previous = base``)."""
    high = max(base, previous * 3.0)
    return min(cap, base + rng.random() * (high - base))


def default_is_retryable(error: BaseException) -> bool:
    """Retry transient upstream failures, never local decisions.

    :class:`RetryableError` (429/5xx from ``core.http``, attempt timeouts), connection
    errors and timeouts raised by the call are transient. The total deadline, an open
    circuit, a full bulkhead and the local rate limiter are not: retrying them in-call
    only burns the deadline, so they fail fast and the job layer retries later.
    """
    if isinstance(error, DeadlineExceeded | RejectedError):
        return False
    return isinstance(error, RetryableError | ConnectionError | TimeoutError)


class RetryStrategy:
    """How many attempts, which errors, and how long to wait between attempts."""

    __slots__ = ("base", "cap", "is_retryable", "jitter", "max_attempts", "rng")

    def __init__(
        self,
        *,
        rng: RandomSource,
        max_attempts: int = 3,
        base: float = 0.2,
        cap: float = 10.0,
        jitter: JitterKind = "full",
        is_retryable: Callable[[BaseException], bool] = default_is_retryable,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.max_attempts = max_attempts
        self.base = base
        self.cap = cap
        self.jitter: JitterKind = jitter
        self.rng = rng
        self.is_retryable = is_retryable

    def backoff(self, retry: int, previous: float) -> float:
        """Return the delay before retry number ``retry`` (0-based).

        ``previous`` is the last delay returned for this call (0.0 before the first),
        which only decorrelated jitter uses.
        """
        if self.jitter == "full":
            return full_jitter(retry, self.base, self.cap, self.rng)
        return decorrelated_jitter(previous or self.base, self.base, self.cap, self.rng)

    def delay_for(self, error: BaseException, retry: int, previous: float) -> float:
        """Return the wait before retrying after ``error``: max(backoff, its retry_after)."""
        delay = self.backoff(retry, previous)
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > delay:
            return float(retry_after)
        return delay

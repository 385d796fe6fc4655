"""Errors raised by, and understood by, the resilience guards.

Two families:

- **Upstream errors the guards classify** — :class:`RetryableError` (and its 429 flavour
  :class:`UpstreamThrottledError`) is what ``core.http`` raises for 429/5xx/connection
  failures; ``retry_after`` carries the upstream's ``Retry-After`` in seconds.
- **Local decisions** — :class:`ResilienceError` subclasses: a guard refused or cut the
  call. Rejections (:class:`RejectedError`) say nothing about the upstream's health, so
  the circuit breaker ignores them and the retry policy does not retry them: an open
  circuit or a full bulkhead is a reason to fail fast, and the job layer retries later.

Every one is a :class:`~cauce.core.errors.CauceError`, so one that escapes to the API
renders as problem+json with a stable ``code``: 502 when the upstream answered badly,
503 when it (or our guard in front of it) is unavailable, 504 when time ran out. The
detail never carries the upstream's own text, which can echo personal data.
"""

from __future__ import annotations

from typing import Literal

from cauce.core.errors import BadGateway, ServiceUnavailable

__all__ = [
    "AttemptTimeout",
    "BulkheadFullError",
    "CircuitOpenError",
    "DeadlineExceeded",
    "RateLimitedError",
    "RejectedError",
    "ResilienceError",
    "RetryableError",
    "UpstreamThrottledError",
]


class RetryableError(BadGateway):
    """A transient upstream failure: the same request may succeed if sent again.

    ``retry_after`` (seconds) is the upstream's own hint; the retry policy waits at
    least that long, or gives up when that would pass the call's deadline.
    """

    code = "upstream_error"
    title = "Upstream failed (transient)"

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message or None)
        self.retry_after = retry_after


class UpstreamThrottledError(RetryableError):
    """The upstream said "too many requests" (HTTP 429): every caller should pause.

    The pipeline drains its rate limiter for ``retry_after`` seconds when it sees one.
    """

    status_code = 503
    code = "upstream_throttled"
    title = "Upstream is throttling requests"


class ResilienceError(ServiceUnavailable):
    """Base of every error a guard raises on its own behalf."""

    code = "upstream_unavailable"
    title = "Upstream unavailable"
    retry_after: float | None = None


class DeadlineExceeded(ResilienceError, TimeoutError):
    """The call's total deadline (all attempts and waits) passed. Never retried."""

    status_code = 504
    code = "upstream_deadline_exceeded"
    title = "Upstream call exceeded its deadline"


class AttemptTimeout(RetryableError, ResilienceError, TimeoutError):
    """One attempt took longer than the per-attempt timeout. Retryable."""

    status_code = 504
    code = "upstream_timeout"
    title = "Upstream timed out"


class RejectedError(ResilienceError):
    """A guard refused to start the call; the upstream was not contacted."""

    code = "upstream_call_rejected"
    title = "Upstream call rejected by a local guard"

    def __init__(self, message: str, *, upstream: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.upstream = upstream
        self.retry_after = retry_after


class CircuitOpenError(RejectedError):
    """The circuit breaker is open (or half-open with every probe slot taken).

    ``retry_after`` is the time left before the breaker lets probes through, when known.
    """

    code = "upstream_circuit_open"
    title = "Upstream circuit is open"

    def __init__(
        self, upstream: str, *, half_open: bool = False, retry_after: float | None = None
    ) -> None:
        state = "half-open" if half_open else "open"
        super().__init__(
            f"circuit for {upstream!r} is {state}", upstream=upstream, retry_after=retry_after
        )
        self.half_open = half_open


class BulkheadFullError(RejectedError):
    """No concurrency slot: the queue was full (``reason="full"``) or the wait ran out."""

    code = "upstream_busy"
    title = "Too many concurrent calls to the upstream"

    def __init__(self, upstream: str, *, reason: Literal["full", "timeout"]) -> None:
        super().__init__(
            f"bulkhead for {upstream!r} rejected the call ({reason})", upstream=upstream
        )
        self.reason: Literal["full", "timeout"] = reason


class RateLimitedError(RejectedError):
    """The local rate limiter would make the call wait longer than allowed.

    ``retry_after`` is how long the call would have had to wait.
    """

    code = "upstream_rate_limited"
    title = "Upstream rate limit reached"

    def __init__(self, upstream: str, *, retry_after: float) -> None:
        super().__init__(
            f"rate limit for {upstream!r} needs a {retry_after:.3f}s wait",
            upstream=upstream,
            retry_after=retry_after,
        )
